"""A trial stops at once on a node that cannot see the sweep's storage (trial.check_sweep_storage).

The driver probes every node before a sweep (preflight.check_storage_on_nodes), but a node that
joins later (an autoscaler's) is not probed: each trial of a sweep therefore checks that its node
sees the sweep record the driver wrote into the storage. Here with a real Tune run on a private
Ray: the same trial function errors in one line where the record is missing (what such a node
sees), and runs where it is there. tests/test_multinode.py has the real second node.
"""

from __future__ import annotations

import pytest

from meta_study.tune.state import RECORD, StateDir
from meta_study.tune.trial import TrialHooks


def _fit(storage: str, name: str) -> list:
    from ray import tune

    def trial(config: dict) -> None:    # nested: pickled by value (this test module is not on the workers' path)
        from meta_study.tune.trial import TrialHooks, run_with_machinery

        run_with_machinery(config, lambda cfg, hooks: {"final": 1.0, "seen": 1.0}, TrialHooks(sweep_storage=True))

    tuner = tune.Tuner(trial, run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                                        failure_config=tune.FailureConfig(max_failures=0)),
                       tune_config=tune.TuneConfig(num_samples=1))
    return list(tuner.fit())


@pytest.mark.slow(30)
def test_a_trial_that_cannot_see_the_sweep_record_stops_in_one_line(local_ray, tmp_path):
    storage = str(tmp_path / "storage")
    [missing] = _fit(storage, "no-record")
    assert missing.error is not None
    text = str(missing.error)
    assert "StorageNotShared" in type(missing.error).__name__ or "StorageNotShared" in text, text
    assert "cannot see this sweep's storage" in text and f"no-record/meta_study/{RECORD}" in text, text
    assert "s3://BUCKET/PATH" in text, text
    assert not (missing.metrics or {}).get("final")          # the body never ran

    StateDir(f"{storage}/with-record").write_bytes(RECORD, b"{}")   # what the runner writes before any trial
    [ok] = _fit(storage, "with-record")
    assert ok.error is None, ok.error
    assert ok.metrics["final"] == 1.0 and ok.metrics["seen"] == 1.0


def test_a_trial_outside_a_sweep_is_not_checked():
    """Without Tune's storage context (a plain call), or without ``sweep_storage``, nothing is
    checked: the trial function stays usable on its own."""
    from meta_study.tune.trial import check_sweep_storage

    check_sweep_storage()                 # no Tune context: returns
    assert TrialHooks().sweep_storage is False
