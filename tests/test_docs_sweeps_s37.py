"""docs/sweeps.md against the code (session 37): ``META_STUDY_TRIAL_LOGS=1`` forwards every
trial's output to the driver, "off by default". The runner read it as ``bool(os.environ.get(...))``,
so ``META_STUDY_TRIAL_LOGS=0`` (what a user writes to turn it off) turned it on: a job log of
gigabytes for a sweep of thousands of trials."""

from __future__ import annotations

import os

import pytest

from meta_study.tune.runner import SweepOptions, SweepSpec, grid, run_sweep

SPEC = SweepSpec(name="trial_logs_t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))


class _Stop(Exception):
    pass


@pytest.mark.slow(15)
@pytest.mark.parametrize("value, forwarded", [("1", True), ("0", False), ("", False)])
def test_trial_logs_flag_is_read_as_on_or_off(tmp_path, monkeypatch, value, forwarded):
    seen = {}

    def fake_start(address=None, **kw):      # stops the sweep before Ray starts
        seen.update(kw)
        raise _Stop

    import meta_study.ray_session as ray_session

    monkeypatch.setattr(ray_session, "start_or_connect", fake_start)
    # what run_sweep sets for Tune (runner.tune_environment) is put back after the test
    for k, v in (("TUNE_GLOBAL_CHECKPOINT_S", "60"), ("RAY_TRAIN_V2_ENABLED", "1"), ("MLFLOW_DISABLE_TELEMETRY", "true")):
        monkeypatch.setenv(k, os.environ.get(k, v))
    monkeypatch.setenv("META_STUDY_TRIAL_LOGS", value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(_Stop):   # stopped where Ray would start: nothing started
        run_sweep(SPEC, SweepOptions(smoke=True, storage_path=str(tmp_path / "ray"), address="local"))
    assert seen["log_to_driver"] is forwarded, (value, seen)
