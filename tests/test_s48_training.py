"""Review s48 of the training engine: meta_study/train/*.py, meta_study/tune/trial.py."""

from __future__ import annotations

import pytest
import torch

from meta_study.train import create_model, get_task, plan_steps, pretrain, run_trial, smoke_config
from meta_study.train.loop import TrainConfig, TrialConfigError, check_batch_norm_batch

TINY = dict(us_task_kwargs={"n_train": 64, "n_test": 32}, ds_task_kwargs={"n_train_per_class": 2, "n_test": 20},
            ds_tasks=("synth_shape",), shots=(1,), fewshot_seeds=1, diagnostics=False, steps=2)


# --- a BatchNorm model on batches of one example ---------------------------------------------------


def _refused_before_training(**overrides: object) -> str:
    started: list = []
    with pytest.raises(TrialConfigError) as e:
        run_trial(smoke_config(**{**TINY, "model_name": "resnet_tiny_cpu", **overrides}),
                  on_start=lambda c, i: started.append(1))
    assert not started   # refused before pre-training (and before the DS data is built)
    msg = str(e.value)
    assert "\n" not in msg and "Expected more than 1 value" not in msg, msg
    return msg


def test_a_batch_norm_model_on_batches_of_one_is_refused_naming_batch_size() -> None:
    # torch's own "Expected more than 1 value per channel when training, got input size
    # torch.Size([1, 128, 1, 1])" named neither batch_size nor data_fraction
    msg = _refused_before_training(batch_size=1)
    assert msg.startswith("batch_size=1 trains on 1 example per step: the model's BatchNorm layer layer4.0."), msg
    assert "use a batch of 2 or more" in msg


def test_a_data_fraction_of_one_example_is_refused_naming_it() -> None:
    msg = _refused_before_training(data_fraction=1 / 64)
    assert msg.startswith("batch_size=128, capped at the 1 example(s) of the data_fraction=0.015625 subset, "), msg
    assert msg.endswith("(or a larger data_fraction)"), msg


def test_a_fine_tune_on_batches_of_one_is_refused_before_pre_training() -> None:
    # it failed after the whole pre-training and probes, the trial lost
    msg = _refused_before_training(batch_size=8, finetune=True, finetune_batch_size=1, finetune_steps=2)
    assert msg.startswith("DS task synth_shape: finetune_batch_size=1 with finetune_examples=1000 fine-tunes on 1 "
                          "example per step: the model's BatchNorm layer"), msg


def test_pretrain_called_directly_says_it_too() -> None:
    task = get_task("synth_us", img_size=16, n_train=64, n_test=32)
    torch.manual_seed(0)
    model, info = create_model("resnet_tiny_cpu", num_classes=task.num_classes, img_size=16)
    with pytest.raises(ValueError, match=r"^batch_size=1 trains on 1 example per step: the model's BatchNorm"):
        pretrain(model, info, task, TrainConfig(steps=2, batch_size=1, lr=1e-3))


def test_batches_of_one_still_train_where_every_batch_norm_sees_a_map() -> None:
    # at 32 px the last stage is 2x2: torch trains it, so the check must not refuse it
    task = get_task("synth_us", img_size=32, n_train=16, n_test=8)
    torch.manual_seed(0)
    model, info = create_model("resnet_tiny_cpu", num_classes=task.num_classes, img_size=32)
    r = pretrain(model, info, task, TrainConfig(steps=2, batch_size=1, lr=1e-3))
    assert r.plan.batch_size == 1 and model.training


def test_models_without_batch_norm_train_on_batches_of_one() -> None:
    task = get_task("synth_us", img_size=16, n_train=16, n_test=8)
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=task.num_classes, img_size=16)
    assert pretrain(model, info, task, TrainConfig(steps=2, batch_size=1, lr=1e-3)).plan.batch_size == 1


def test_a_data_parallel_share_of_one_is_refused_per_worker() -> None:
    task = get_task("synth_us", img_size=16, n_train=16, n_test=8)
    model, _ = create_model("resnet_tiny_cpu", num_classes=task.num_classes, img_size=16)
    cfg = TrainConfig(steps=2, batch_size=2)
    with pytest.raises(ValueError, match=r"^batch_size=2, shared by 2 data-parallel workers, trains on 1 example "
                                         r"per step per worker: .* use a batch of 2 or more per worker$"):
        check_batch_norm_batch(model, task, cfg, plan_steps(cfg, 16), world=2)
    check_batch_norm_batch(model, task, cfg, plan_steps(cfg, 16), world=1)   # 2 a step: fine
    assert model.training   # the probe's eval-mode forward left the mode as it was


# --- a DS task named twice ------------------------------------------------------------------------


def test_a_ds_task_named_twice_through_the_python_api_is_refused() -> None:
    # the sweep runner refused it (--ds-task, --set ds_tasks); run_trial probed it twice
    with pytest.raises(TrialConfigError, match=r"^ds_tasks: 'synth_shape' given 2 times: give each downstream "
                                               r"task once$"):
        run_trial({**TINY, "ds_tasks": ["synth_shape", "synth_color", "synth_shape"]})


# --- warm-up rounding -----------------------------------------------------------------------------


@pytest.mark.parametrize("steps, fraction, warm", [
    (10, 0.05, 1),     # 0.5: round() gave 0, no warm-up at all
    (50, 0.05, 3),     # 2.5: round() gave 2 (half to even)
    (70, 0.05, 4),     # 3.5
    (90, 0.35, 32),    # 31.499999999999996 in floating point: the half the decimal fraction means
    (25, 0.05, 1),     # 1.25
    (3, 0.01, 1),      # a fraction > 0 gives at least one step
    (10, 0.0, 0),      # none asked
    (1, 0.5, 0),       # a 1-step run has no warm-up
    (4, 1.0, 3),       # capped at steps - 1: the decay keeps a step
])
def test_warm_up_steps_round_half_up_and_are_at_least_one(steps: int, fraction: float, warm: int) -> None:
    assert plan_steps(TrainConfig(steps=steps, warmup_fraction=fraction, batch_size=8), 64).warmup_steps == warm


# --- a trial refused before training is not run again by Tune's retries ----------------------------


def _refused_body(attempts: list):
    def body(cfg: dict, hooks: object) -> dict:
        attempts.append(1)
        raise TrialConfigError("DS task pets: class 2 has 4 train examples, fewer than shots=5")
    return body


def test_a_refused_trial_fails_its_later_attempts_in_the_same_job_at_once(tmp_path, monkeypatch) -> None:
    import pyarrow.fs as pafs

    from meta_study.tune import trial as tt

    fs = pafs.LocalFileSystem()
    monkeypatch.setattr(tt, "_final_marker", lambda: (fs, f"{tmp_path}/trial/{tt.FINAL_FILE}"))
    monkeypatch.setattr(tt, "_job_id", lambda: "01000000")
    attempts: list = []
    with pytest.raises(TrialConfigError, match="^DS task pets: class 2"):
        tt.run_with_machinery({"lr": 1e-3}, _refused_body(attempts))
    assert (tmp_path / "trial" / tt.REFUSED_FILE).exists()
    with pytest.raises(TrialConfigError) as e:
        tt.run_with_machinery({"lr": 1e-3}, _refused_body(attempts))
    assert attempts == [1]   # the retry built nothing
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("DS task pets: class 2 has 4 train examples"), msg
    assert "earlier attempt of this trial" in msg and tt.REFUSED_FILE in msg
    # a --resume is another job: it tries again (the dataset on disk may have been fixed)
    monkeypatch.setattr(tt, "_job_id", lambda: "02000000")
    with pytest.raises(TrialConfigError):
        tt.run_with_machinery({"lr": 1e-3}, _refused_body(attempts))
    assert attempts == [1, 1]


def test_other_value_errors_are_retried_as_before(tmp_path, monkeypatch) -> None:
    import pyarrow.fs as pafs

    from meta_study.tune import trial as tt

    fs = pafs.LocalFileSystem()
    monkeypatch.setattr(tt, "_final_marker", lambda: (fs, f"{tmp_path}/trial/{tt.FINAL_FILE}"))
    calls: list = []

    def body(cfg: dict, hooks: object) -> dict:
        calls.append(1)
        raise ValueError("device='cuda:1': this machine has 1 CUDA device(s)")   # another node may have it

    for _ in range(2):
        with pytest.raises(ValueError):
            tt.run_with_machinery({"lr": 1e-3}, body)
    assert calls == [1, 1] and not (tmp_path / "trial" / tt.REFUSED_FILE).exists()


def test_a_refusal_is_found_inside_a_data_parallel_trials_error() -> None:
    from meta_study.tune.trial import _diverged, _refused

    class WorkerGroupError(RuntimeError):   # Ray Train V2's shape: rank -> the worker's exception
        def __init__(self, failures: dict) -> None:
            super().__init__("Training failed due to worker errors")
            self.worker_failures = failures

    err = WorkerGroupError({1: TrialConfigError("batch_size=2, shared by 2 data-parallel workers, ...")})
    assert _refused(err) == "batch_size=2, shared by 2 data-parallel workers, ..." and _diverged(err) is None
    assert _refused(ValueError("v")) is None


def _fit_refused(storage: str, counter: str) -> list:
    from ray import tune

    def trial(config: dict) -> None:    # nested: pickled by value (this module is not on the workers' path)
        from meta_study.tune.trial import run_with_machinery

        def body(cfg: dict, hooks: object) -> dict:
            from meta_study.train import run_trial

            with open(counter, "a") as f:
                f.write("x")
            run_trial(cfg)   # refused: a DS task named twice
            return {}

        run_with_machinery(config, body)

    space = {**TINY, "ds_tasks": ["synth_shape", "synth_shape"]}
    tuner = tune.Tuner(trial, param_space=space,
                       run_config=tune.RunConfig(name="refused", storage_path=storage, verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=2)),
                       tune_config=tune.TuneConfig(num_samples=1))
    return list(tuner.fit())


@pytest.mark.slow(70)
def test_a_refused_trial_in_a_tune_run_runs_once(local_ray, tmp_path) -> None:
    # each of Tune's max_failures retries built the trial's data again, to be refused the same way
    counter = str(tmp_path / "attempts")
    [res] = _fit_refused(str(tmp_path / "storage"), counter)
    assert res.error is not None and "ds_tasks: 'synth_shape' given 2 times" in str(res.error)
    with open(counter) as f:
        assert f.read() == "x"   # 3 attempts (max_failures=2) ran the engine once
