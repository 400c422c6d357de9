"""Review of the sweep machinery (session 49): the repeats of a grid point are trials of their own,
the summary and the parent run say whether the end-of-sweep check ran, and a count flag's extra
zeros are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

from meta_study.errors import UserError
from meta_study.mlflow_client import mlflow_client
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepResult, SweepSpec, grid, parse_options
from meta_study.tune.trial import config_key
from conftest import REPO

SPEC = SweepSpec(name="s49_rep", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1, lr=2e-3, eval_every=8))


def _tune_configs(spec: SweepSpec, options: SweepOptions, tmp_path: Path) -> list[dict]:
    """The trial configs the sweep's Tuner generates (Tune's own variant generator, no Ray)."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    fixed = runner.fixed_config(spec, options)
    tuner = runner._new_tuner(spec, options, lambda config: None, fixed, "s49", str(tmp_path / "ray"), [])
    local = tuner._local_tuner
    gen = BasicVariantGenerator()
    # Tune's registry sends the trainable to a connected Ray's GCS: a Ray another test of this
    # worker left connected (its token gone with that test's environment) failed this one. Each
    # trial looks the trainable up again as it is made, so the patch covers the whole loop.
    out = []
    with mock.patch("ray.tune.registry._internal_kv_initialized", return_value=False):
        gen.add_configurations({"s49": {"run": lambda c: None, "config": local._param_space,
                                        "num_samples": local._tune_config.num_samples}})
        while (t := gen.next_trial()) is not None:
            out.append(t.config)
    return out


def test_the_repeats_of_a_grid_point_are_trials_with_keys_of_their_own(tmp_path):
    """``--num-samples 3`` on a grid with a fixed seed: three trials of one config key, so a resume
    gave a repeat that had not finished its finished sibling's result (run_with_machinery's
    ``_read_done``): one model twice in MLflow, a repeat never trained. Each repeat now has its own
    key, and the same space gives the same keys again (a repeat lost with the driver's unsaved
    state is generated again as itself, and takes over its own run)."""
    spec = SweepSpec(name="s49_rep", doc="A test sweep.\n", space=lambda o: {"head_wd": grid([0.0, 0.1]), "seed": 0},
                     smoke=SPEC.smoke)
    o = SweepOptions(smoke=True, num_samples=3)
    configs = _tune_configs(spec, o, tmp_path)
    assert len(configs) == 6
    keys = [config_key(c) for c in configs]
    assert len(set(keys)) == 6, configs
    assert sorted(c["head_wd"] for c in configs) == [0.0] * 3 + [0.1] * 3
    assert keys == [config_key(c) for c in _tune_configs(spec, o, tmp_path)]
    # what trains is the TrainConfig: the repeat index is not a field of it, nor an MLflow param
    from meta_study.tune.trial import model_config

    assert all("_repeat" not in model_config(c) for c in configs)
    # one sample: the space and the keys are what they were (sweeps started before keep theirs)
    one = _tune_configs(spec, SweepOptions(smoke=True), tmp_path)
    assert all("_repeat" not in c for c in one) and len(one) == 2


def _sweep(script: Path, args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **kw.pop("env", {})}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, str(script), "--smoke", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)


@pytest.mark.slow(150)
def test_a_resumed_repeat_trains_its_own_model(tmp_path):
    """Two repeats of one grid point (a fixed seed), one at a time; the driver killed as the second
    starts. On ``--resume`` the second re-reported the first's result under its own run (same
    config key): no training history, one model counted twice. Now it trains."""
    script = tmp_path / "s49_rep.py"
    script.write_text(
        "from meta_study.tune.runner import SweepSpec, grid, sweep_main\n"
        "SPEC = SweepSpec(name='s49_rep', doc='A test sweep.\\n', space=lambda o: {'seed': grid([0])},\n"
        "                 smoke=dict(model_name='vit_tiny_cpu', epochs=1, lr=2e-3, eval_every=8))\n"
        "if __name__ == '__main__':\n    sweep_main(SPEC)\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--num-samples", "2", "--max-concurrent", "1", "--quiet", "--storage-path", str(tmp_path / "ray"),
            "--tracking-uri", uri]
    # the writer stops once it has created the second trial's run: the second repeat has just started
    p = _sweep(script, args, tmp_path, env={"META_STUDY_FAILPOINT": "run_created:2"})
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in p.stdout:
            lines.append(line)
            if "failpoint run_created" in line:
                seen.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(600), "".join(lines)[-3000:]
    finally:
        os.killpg(p.pid, signal.SIGKILL)       # the driver, its writer and the Ray it started
        p.wait()
        reader.join(10)
    # (--allow-code-change: the code version hashes meta_study/, which may change under a test run)
    r = _sweep(script, [*args, "--resume", "--allow-code-change"], tmp_path)
    out, _ = r.communicate(timeout=900)
    assert r.returncode == 0, out[-4000:]
    start = out.index('{\n "sweep"')
    s = json.loads(out[start:out.index("}", start) + 1])
    assert s["trials"] == s["finished"] == 2 and s["reconciled"] is True and s["unreconciled"] is None
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name("s49_rep")
    runs = [x for x in client.search_runs([exp.experiment_id])
            if x.data.tags.get("meta_study.role") == "trial"]
    assert sorted(x.info.status for x in runs) == ["FINISHED", "FINISHED"], [(x.data.tags, x.info.status) for x in runs]
    assert len({x.data.tags["config_key"] for x in runs}) == 2
    from meta_study.schema import us_metric_key

    for x in runs:     # trained: the pre-training reports are there, not the final report alone
        history = client.get_metric_history(x.info.run_id, us_metric_key("synth_us"))
        assert len(history) >= 2, (x.data.tags["trial_id"], [(h.step, h.value) for h in history])
    assert client.get_run(s["mlflow_parent_run"]).data.metrics["sweep/unreconciled"] == 0.0


# ---- the end-of-sweep check, said in the summary and on the parent run ---------------------------


class _Callback:
    def __init__(self, sent: bool = True) -> None:
        self.sent = sent

    def flush(self) -> bool:
        return self.sent


def _finish_with(monkeypatch, tmp_path, reconcile, *, sent: bool = True) -> dict:
    from meta_study.tune import finalize

    monkeypatch.setattr(finalize, "evaluate_stopped", lambda *a, **k: finalize.Evaluations(done=(), failed={}))
    monkeypatch.setattr(finalize, "reconcile", reconcile)
    p = SimpleNamespace(tracking=f"sqlite:///{tmp_path}/m.db", state=SimpleNamespace(runs=lambda: {}))
    rec = SimpleNamespace(experiment_id="1", parent_run_id="p1")
    return runner._finish(SPEC, [], _Callback(sent), p, rec, resources=None, hooks=None)


def test_the_parent_run_says_when_the_end_of_sweep_check_did_not_run(tmp_path, monkeypatch):
    """The terminal said that MLflow's runs were not checked against Tune's record; the parent
    run had no metric of it (``sweep/unreconciled``), so a lab looking for sweeps to resume in
    the UI could not find it. 1 when the check failed or could not run (MLflow lacks part of the
    session), 0 when it ran: the latest value is the latest session's."""
    from mlflow.exceptions import MlflowException

    from meta_study.tune.state import SweepRecord

    def down(*a, **k):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/search failed: Connection refused")

    failed = _finish_with(monkeypatch, tmp_path, down)
    ran = _finish_with(monkeypatch, tmp_path, lambda *a, **k: SimpleNamespace(settled=(), orphaned=()))
    unsent = _finish_with(monkeypatch, tmp_path, lambda *a, **k: pytest.fail("not run: MLflow lacks the session"),
                          sent=False)
    assert (failed["reconciled"], ran["reconciled"], unsent["reconciled"]) == (False, True, False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment("s49_unreconciled")
    parent = client.create_run(exp).info.run_id
    rec = SweepRecord(sweep="s", experiment="s49_unreconciled", experiment_id=exp, parent_run_id=parent,
                      tracking_uri=uri, sessions=())
    for out, want in ((failed, 1.0), (ran, 0.0), (unsent, 1.0)):
        status, counts = runner.sweep_end(2, 2, 0, out, unsent=out is unsent)
        runner._end_parent(uri, rec, status, counts)
        assert client.get_run(parent).data.metrics["sweep/unreconciled"] == want
    # a session abandoned before its end ran no check either (an earlier session's 0 stayed)
    runner._abandon(uri, rec, SimpleNamespace(close_interrupted=lambda why: [], flush=lambda: True, dropped=0),
                    RuntimeError("boom"))
    assert client.get_run(parent).data.metrics["sweep/unreconciled"] == 1.0


def test_the_summary_says_whether_the_end_of_sweep_check_ran(monkeypatch, capsys):
    """The JSON summary had no word of it (only a stderr line when it failed): a script reading the
    summary could not tell a checked sweep from one whose runs may still be RUNNING."""
    results = [SweepResult(name="s49", experiment_dir="/x/ray/s49", tracking_uri="sqlite:///x.db", parent_run_id="p",
                           trials=2, finished=2, errored=0, early_stopped=0, seconds=1.0, experiment="s49", **kw)
               for kw in ({"reconciled": True}, {"unreconciled": "MlflowException: down"})]
    monkeypatch.setattr(runner, "parse_options", lambda spec, argv: SweepOptions())
    monkeypatch.setattr(runner, "browse_line", lambda *a: "browse: -")
    got = []
    for res in results:
        monkeypatch.setattr(runner, "run_sweep", lambda spec, options, res=res: res)
        with pytest.raises(SystemExit) as e:
            runner.sweep_main(SPEC, [])
        out = capsys.readouterr().out
        s = json.loads(out[out.index("{"):out.index("}") + 1])
        got.append((e.value.code, s["reconciled"], s["unreconciled"]))
    assert got == [(0, True, None), (1, False, "MlflowException: down")]


# ---- a count flag's extra zeros ---------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, ceiling", [("--num-samples", "200000", "20,000"),
                                                  ("--max-concurrent", "6400000", "20,000"),
                                                  ("--workers-per-trial", "80000", "1,024"),
                                                  ("--max-failures", "20000", "1,000")])
def test_a_count_flag_with_extra_zeros_is_one_line_and_exit_2(flag, value, ceiling, capsys):
    """``--num-samples 200000`` (for 2000) ran until killed, 100x the sweep meant; now refused
    before anything starts, at a ceiling no real sweep reaches, which the line names."""
    with pytest.raises(UserError, match=rf"^{flag} {value}: more than {ceiling}, which no real sweep needs"):
        parse_options(SPEC, ["--smoke", flag, value])
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, ["--smoke", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"s49_rep: {flag} {value}: more than {ceiling}"), err
    # the ceiling itself is taken
    parse_options(SPEC, ["--smoke", flag, ceiling.replace(",", "")])
