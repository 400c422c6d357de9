"""Review (session 38) of the sweep's preflight: trials sized by their model on a cluster."""

from __future__ import annotations

import pytest

from meta_study.errors import UserError


def _node(**res: float) -> dict:
    return {"Alive": True, "NodeID": "n", "Resources": res}


def test_a_cluster_warns_once_for_every_model_size_no_node_holds(capsys):
    """A model-sized sweep (a zoo) on a cluster whose GPU nodes are still to come printed one warning
    line per model size (40 models, 40 lines). One line now: the first size, and how many more."""
    from meta_study.tune.preflight import check_trials_fit

    cpu_only = [_node(CPU=16.0, memory=64 * 2**30)]
    requests = [(f"model_name='m{i}'", {"cpu": 1.0, "gpu": 0.25 * (i + 1)}) for i in range(4)]
    requests.append(("model_name='tiny'", {"cpu": 1.0}))       # fits: never named
    check_trials_fit(requests, cpu_only, sweep="zoo", on_this_machine=False, sized_by_model=True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("warning: sweep zoo (its trials of model_name='m0'): a trial needs 1 CPU, 0.25 GPUs"), err
    assert err[0].endswith("(and 3 more trial sizes that no node can hold)"), err
    # one size: no count
    check_trials_fit(requests[:1], cpu_only, sweep="zoo", on_this_machine=False, sized_by_model=True)
    assert "more trial size" not in capsys.readouterr().err
    # all fit: silent; on a Ray of our own: refused at the first, as before
    check_trials_fit(requests[4:], cpu_only, sweep="zoo", on_this_machine=False, sized_by_model=True)
    assert capsys.readouterr().err == ""
    with pytest.raises(UserError, match=r"sweep zoo \(its trials of model_name='m0'\).*nothing was started"):
        check_trials_fit(requests, cpu_only, sweep="zoo", on_this_machine=True, sized_by_model=True)


@pytest.mark.slow(60)
def test_a_data_parallel_sweep_whose_workers_never_fit_together_is_refused(tmp_path):
    """`--workers-per-trial 2` (1 CPU each) on a 2-CPU Ray of the sweep's own: each worker fit, the
    two never did beside the trial's own 0.1 CPU, and Ray Train retried its worker group every 60 s
    for good. Refused in one line, exit 2, before any trial."""
    import os

    from test_sweeps import sweep

    n = os.cpu_count() or 2      # the sweep's own Ray has this many CPUs: n workers of 1 CPU + 0.1 never fit
    r = sweep("head_wd", "--workers-per-trial", str(n), "--cpus-per-trial", "1", "--storage-path",
              str(tmp_path / "sw"), "--quiet", cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert f"--workers-per-trial {n}: a trial's workers need 1 CPU each beside the trial's own 0.1 CPU" in r.stderr, \
        r.stderr
