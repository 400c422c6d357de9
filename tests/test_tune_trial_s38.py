"""Review (session 38) of a trial's life, the sweep's state directory and its preflight."""

from __future__ import annotations

import errno
import os

import pytest

from meta_study.errors import UserError


def _node(**res: float) -> dict:
    return {"Alive": True, "NodeID": "n", "Resources": res}


def test_a_new_sweeps_record_is_created_once_on_a_mount_without_hard_links(tmp_path, monkeypatch):
    """create_record hard-links its record into place; a storage path on a mount without hard links
    (gcsfuse, some FUSE and SMB filesystems) made every new sweep an OSError (EPERM) at its start.
    It falls back to an exclusive create: the first driver gets the record, a second one does not."""
    from meta_study.tune import state as st

    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted", dst)

    monkeypatch.setattr(st.os, "link", no_link)
    sd = st.StateDir(str(tmp_path / "sweep"))
    rec = st.SweepRecord(sweep="s", experiment="e", experiment_id="1", parent_run_id="p1", tracking_uri="sqlite:///x")
    assert sd.create_record(rec) is True
    assert sd.read_record() == rec
    assert sd.create_record(st.SweepRecord(**{**rec.__dict__, "parent_run_id": "p2"})) is False
    assert sd.read_record().parent_run_id == "p1"                  # the first driver's, whole
    assert [n for n in os.listdir(tmp_path / "sweep" / "meta_study") if n.startswith(".tmp-")] == []


def test_another_link_error_is_not_taken_for_a_mount_without_hard_links(tmp_path, monkeypatch):
    from meta_study.tune import state as st

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", dst)

    monkeypatch.setattr(st.os, "link", full)
    sd = st.StateDir(str(tmp_path / "sweep"))
    rec = st.SweepRecord(sweep="s", experiment="e", experiment_id="1", parent_run_id="p1", tracking_uri="sqlite:///x")
    with pytest.raises(OSError, match="No space left"):
        sd.create_record(rec)


def test_data_parallel_workers_that_no_machine_holds_together_are_refused(capsys):
    """check_trial_fits checks one worker of a data-parallel trial: --workers-per-trial 2 (1 CPU
    each) on a 2-CPU machine passed, and the sweep waited for good: the trial's own actor takes 0.1
    CPU, the second worker never got its CPU, and Ray Train retried its worker group every 60 s
    without end. Refused in one line on a Ray of our own, a warning on a cluster."""
    from meta_study.tune.preflight import check_workers_fit

    two = [_node(CPU=2.0)]
    with pytest.raises(UserError, match=r"^sweep s: --workers-per-trial 2: a trial's workers need 1 CPU each beside "
                                        r"the trial's own 0.1 CPU, and the Ray nodes hold 1 such worker at once; "
                                        r"nothing was started"):
        check_workers_fit(2, {"cpu": 1.0, "gpu": 0.0}, two, sweep="s", on_this_machine=True)
    check_workers_fit(2, {"cpu": 0.9, "gpu": 0.0}, two, sweep="s", on_this_machine=True)    # what the tests run
    check_workers_fit(1, {"cpu": 2.0}, two, sweep="s", on_this_machine=True)                # one worker: check_trial_fits'
    # GPUs: one each, across nodes (Train spreads workers over nodes)
    gpus = [_node(CPU=8.0, GPU=2.0), _node(CPU=8.0, GPU=2.0)]
    check_workers_fit(4, {"cpu": 1.0, "gpu": 1.0}, gpus, sweep="s", on_this_machine=True)
    with pytest.raises(UserError, match="hold 4 such workers at once"):
        check_workers_fit(8, {"cpu": 1.0, "gpu": 1.0}, gpus, sweep="s", on_this_machine=True)
    assert capsys.readouterr().err == ""
    check_workers_fit(8, {"cpu": 1.0, "gpu": 1.0}, gpus, sweep="s", on_this_machine=False)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: sweep s: --workers-per-trial 8:"), err


@pytest.mark.parametrize("content, says", [
    (b"garbage", "not a readable checkpoint (damaged?): UnpicklingError: Weights only load failed"),
    (None, "not on the sweep's storage (deleted?); nothing to evaluate"),
])
def test_an_early_stopped_trials_damaged_or_missing_checkpoint_is_named_in_its_error(tmp_path, content, says):
    """An early-stopped trial's evaluation of a damaged checkpoint failed with "UnpicklingError: Check
    the documentation of torch.load ..." (what error_line puts in the run's meta_study.eval_error),
    and a missing one with pyarrow's "Path not found: (<pyarrow._fs.LocalFileSystem object at
    0x...>, PATH)". Both now name the checkpoint on the storage and what is wrong, and nothing is
    recorded as evaluated."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from meta_study.tune.finalize import error_line
    from meta_study.tune.trial import EVAL_FILE, evaluate_stopped_trial

    ckpt = tmp_path / "exp" / "trial_1" / "checkpoint_000001"
    if content is not None:
        ckpt.mkdir(parents=True)
        (ckpt / "checkpoint.pt").write_bytes(content)
    with pytest.raises(Exception) as info:
        evaluate_stopped_trial({"model_name": "vit_tiny_cpu"}, Checkpoint(str(ckpt), filesystem=pafs.LocalFileSystem()))
    line = error_line(info.value)
    assert f"checkpoint {ckpt}: {says}" in line, line
    assert "\n" not in line and "pyarrow._fs" not in line and "weights_only" not in line
    assert not (tmp_path / "exp" / "trial_1" / EVAL_FILE).exists()
