"""Hundreds of very short trials through the sweep machinery: none may crash.

Tune creates a trial's directory lazily; a trial that finishes within milliseconds used to reach
its completion record first and die with FileNotFoundError (from trial ~200 of 2,000 on, 123 of
the next ~920 trials, measured at the mission's size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import ray
    from ray import tune

    def body(cfg, hooks):
        from meta_study.tune.trial import FINAL_KEY, RESOLVED_KEY
        return {"us/synth_us/top1": 0.5, RESOLVED_KEY: {"seed": cfg["seed"]}, FINAL_KEY: 1.0}

    def trainable(config):
        from meta_study.tune.trial import run_with_machinery
        run_with_machinery(config, body)

    n, storage = int(sys.argv[1]), sys.argv[2]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"seed": tune.grid_search(list(range(n)))},
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(name="many", storage_path=storage, verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=0)))
    grid = tuner.fit()
    errors = [str(r.error).strip().splitlines()[-1][:300] for r in grid if r.error is not None]
    finals = sum(os.path.exists(os.path.join(r.path, "meta_study_final.json")) for r in grid)
    print(json.dumps({"trials": len(grid), "errors": errors, "finals": finals}))
""")


@pytest.mark.slow(60)
def test_hundreds_of_fast_trials_never_crash(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, "300", str(tmp_path / "storage")], env=env,
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["errors"] == [] and out["trials"] == 300, out["errors"][:3]
    assert out["finals"] == 300      # every trial left its completion record (what --resume relies on)
