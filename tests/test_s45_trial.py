"""Review s45 of the trial: meta_study/train/trial.py, meta_study/tune/trial.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_study.train import TensorSplit, smoke_config
from meta_study.train.data import _TASKS, Task, register_task
from meta_study.train.trial import _ds_tasks


def _uneven_task(name: str, per_class: list[int]) -> None:
    g = torch.Generator().manual_seed(0)
    y = np.repeat(np.arange(len(per_class)), per_class)
    yt = np.repeat(np.arange(len(per_class)), 3)
    px = lambda n: torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)  # noqa: E731

    @register_task(name)
    def _factory(img_size: int = 16, seed: int = 0) -> Task:
        return Task(name, len(per_class), img_size, TensorSplit(px(len(y)), y), TensorSplit(px(len(yt)), yt))


def test_a_small_ds_class_is_named_in_one_line_before_pre_training() -> None:
    # the trial's own check said "its smallest class has 4 train examples", naming no class: the
    # user had to count the labels to find which one; fewshot_draw names it, one check for both
    _uneven_task("s45_uneven", [30, 30, 4, 30])
    try:
        with pytest.raises(ValueError) as e:
            _ds_tasks(smoke_config(ds_tasks=("s45_uneven",), shots=(1, 5)))
    finally:
        _TASKS.pop("s45_uneven", None)   # other tests iterate the registry
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("DS task s45_uneven: class 2 has 4 train examples, fewer than shots=5"), msg


def test_ds_classes_with_enough_examples_pass() -> None:
    _uneven_task("s45_even", [5, 6, 5])
    try:
        assert [t.name for t in _ds_tasks(smoke_config(ds_tasks=("s45_even",), shots=(1, 5)))] == ["s45_even"]
    finally:
        _TASKS.pop("s45_even", None)


# --- a diverged trial is not trained again by each retry -----------------------------------------


def _diverging_body(attempts: list):
    def body(cfg: dict, hooks: object) -> dict:
        from meta_study.train.loop import DivergedError

        attempts.append(1)
        raise DivergedError("training diverged: the loss is not finite from step 412 of 3000 (lr 10, grad_clip 1); "
                            "its accuracies would be chance levels")
    return body


def test_a_diverged_trial_fails_its_later_attempts_at_once(tmp_path, monkeypatch) -> None:
    # each retry (max_failures, default 2) and each --resume resumed from the last checkpoint and
    # trained up to eval_every steps (all of them with eval_every=0) to the same NaN
    import pyarrow.fs as pafs

    from meta_study.train.loop import DivergedError
    from meta_study.tune import trial as tt

    fs = pafs.LocalFileSystem()
    monkeypatch.setattr(tt, "_final_marker", lambda: (fs, f"{tmp_path}/trial/{tt.FINAL_FILE}"))
    attempts: list = []
    with pytest.raises(DivergedError, match="^training diverged: the loss is not finite from step 412"):
        tt.run_with_machinery({"lr": 10.0}, _diverging_body(attempts))
    assert (tmp_path / "trial" / tt.DIVERGED_FILE).exists()
    with pytest.raises(DivergedError) as e:
        tt.run_with_machinery({"lr": 10.0}, _diverging_body(attempts))
    assert attempts == [1]   # the second attempt trained nothing
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("training diverged: the loss is not finite from step 412"), msg
    assert "earlier attempt of this trial" in msg and tt.DIVERGED_FILE in msg


def test_other_errors_are_retried_as_before(tmp_path, monkeypatch) -> None:
    import pyarrow.fs as pafs

    from meta_study.tune import trial as tt

    fs = pafs.LocalFileSystem()
    monkeypatch.setattr(tt, "_final_marker", lambda: (fs, f"{tmp_path}/trial/{tt.FINAL_FILE}"))
    calls: list = []

    def body(cfg: dict, hooks: object) -> dict:
        calls.append(1)
        raise OSError("node lost")

    for _ in range(2):
        with pytest.raises(OSError):
            tt.run_with_machinery({"lr": 1e-3}, body)
    assert calls == [1, 1] and not (tmp_path / "trial" / tt.DIVERGED_FILE).exists()


def _fit_diverging(storage: str, counter: str) -> list:
    from ray import tune

    def trial(config: dict) -> None:    # nested: pickled by value (this module is not on the workers' path)
        from meta_study.tune.trial import run_with_machinery

        def body(cfg: dict, hooks: object) -> dict:
            from meta_study.train.loop import DivergedError

            with open(counter, "a") as f:
                f.write("x")
            raise DivergedError("training diverged: the loss is not finite from step 7 of 9 (lr 10, grad_clip 1)")

        run_with_machinery(config, body)

    tuner = tune.Tuner(trial, param_space={"lr": 10.0},
                       run_config=tune.RunConfig(name="diverges", storage_path=storage, verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=2)),
                       tune_config=tune.TuneConfig(num_samples=1))
    return list(tuner.fit())


@pytest.mark.slow(40)
def test_a_diverged_trial_in_a_tune_run_trains_once(local_ray, tmp_path) -> None:
    counter = str(tmp_path / "attempts")
    [res] = _fit_diverging(str(tmp_path / "storage"), counter)
    assert res.error is not None and "training diverged: the loss is not finite from step 7" in str(res.error)
    with open(counter) as f:
        assert f.read() == "x"   # 3 attempts (max_failures=2) ran the body once


def test_a_divergence_is_found_inside_a_data_parallel_trials_error() -> None:
    from meta_study.train.loop import DivergedError
    from meta_study.tune.trial import _diverged

    class WorkerGroupError(RuntimeError):   # Ray Train V2's shape: rank -> the worker's exception
        def __init__(self, failures: dict) -> None:
            super().__init__("Training failed due to worker errors")
            self.worker_failures = failures

    err = WorkerGroupError({0: DivergedError("training diverged: step 3\nmore"), 1: OSError("x")})
    assert _diverged(err) == "training diverged: step 3"
    assert _diverged(WorkerGroupError({0: OSError("x")})) is None and _diverged(ValueError("v")) is None
