"""Session 45 review of the training engine (loop, models, data, few-shot draws)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_study.train import TensorSplit, Task, fewshot_draw, fewshot_features, fewshot_lsr
from meta_study.train.fewshot import extract_features
from meta_study.train.loop import Runtime

RT = Runtime(torch.device("cpu"), None, False, False)


# --- few-shot draws from a class smaller than the shots ---------------------------------------


def test_a_draw_from_a_class_smaller_than_the_shots_is_refused_naming_it() -> None:
    # class 2 has 3 examples: a 5-shot draw took those 3 without a word, and every seed and every
    # larger shot count got the same 3
    y = np.array([0] * 10 + [1] * 10 + [2] * 3)
    with pytest.raises(ValueError, match=r"class 2 has 3 train examples, fewer than shots=5 \(1 of 3 classes"):
        fewshot_draw(y, 5, seed=0)
    with pytest.raises(ValueError, match=r"^DS task pets: class 2 has 3"):
        fewshot_draw(y, 5, seed=0, task="pets")
    assert np.bincount(y[fewshot_draw(y, 3, seed=0)]).tolist() == [3, 3, 3]


@pytest.mark.parametrize("shots", [0, -1, True, 2.5])
def test_a_draw_of_no_or_a_fractional_number_of_shots_is_refused(shots: object) -> None:
    y = np.repeat(np.arange(3), 10)
    with pytest.raises(ValueError, match=r"shots=.*: must be a whole number of examples per class >= 1"):
        fewshot_draw(y, shots, seed=0)  # type: ignore[arg-type]


def test_a_draw_from_no_labels_is_one_line() -> None:
    with pytest.raises(ValueError, match="no train examples to draw 5-shot examples from"):
        fewshot_draw(np.array([], dtype=np.int64), 5, seed=0)


def test_draws_are_unchanged_where_every_class_is_large_enough() -> None:
    # the same RandomState stream as before the check: stored results stay reproducible
    y = np.repeat(np.arange(4), 30)
    rng, want = np.random.RandomState(7), []
    for c in range(4):
        pool = np.flatnonzero(y == c)
        want.append(pool[rng.permutation(len(pool))[:5]])
    np.testing.assert_array_equal(fewshot_draw(y, 5, seed=7), np.sort(np.concatenate(want)))


def _blobs(n_per_class: list[int], dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    return np.eye(len(n_per_class), dim)[y] * 4 + rng.normal(size=(len(y), dim)), y


def test_fewshot_lsr_refuses_shots_a_class_cannot_give() -> None:
    # its 25-shot result was a mean over 3 "seeds" of one draw of 10 examples of class 1
    x, y = _blobs([30, 10, 30])
    xt, yt = _blobs([20, 20, 20], seed=1)
    with pytest.raises(ValueError, match=r"^DS task t: class 1 has 10 train examples, fewer than shots=25"):
        fewshot_lsr(x, y, xt, yt, 3, task="t", shots=(1, 5, 25))
    assert [r.shots for r in fewshot_lsr(x, y, xt, yt, 3, shots=(1, 5, 10))] == [1, 5, 10]


def test_fewshot_lsr_refuses_a_test_class_with_no_train_examples() -> None:
    # class 2 is in the test split only: the probe never predicts it, and a third of the test
    # examples capped the accuracy at 2/3 without a word
    x, y = _blobs([30, 30])
    xt, yt = _blobs([20, 20, 20], seed=1)
    with pytest.raises(ValueError, match="class 2 has test examples but no train examples"):
        fewshot_lsr(x, y, xt, yt, 3, shots=(5,))


def test_fewshot_lsr_with_no_seeds_is_refused_not_a_nan_accuracy() -> None:
    x, y = _blobs([30, 30])
    with pytest.raises(ValueError, match=r"seeds=\(\): give one or more few-shot draws"):
        fewshot_lsr(x, y, x, y, 2, shots=(5,), seeds=())


class _Flat(torch.nn.Module):
    """A stand-in model: pre-logits are the flattened image."""

    num_features = 3 * 4 * 4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x


def _task(per_class: list[int]) -> Task:
    g = torch.Generator().manual_seed(0)
    y = np.repeat(np.arange(len(per_class)), per_class)
    yt = np.repeat(np.arange(len(per_class)), 5)
    px = lambda n: torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)  # noqa: E731
    return Task("tiny", len(per_class), 4, TensorSplit(px(len(y)), y), TensorSplit(px(len(yt)), yt))


def test_extract_features_refuses_a_small_class_before_embedding_anything() -> None:
    from types import SimpleNamespace

    info = SimpleNamespace(name="flat", num_blocks=0, block_names=())
    with pytest.raises(ValueError, match=r"^DS task tiny: class 1 has 4 train examples, fewer than shots=5"):
        extract_features(_Flat(), info, _task([8, 4]), RT, shots=(1, 5), seeds=(0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"DS task tiny: shots=\(\), seeds=\(0,\): give one or more of each"):
        extract_features(_Flat(), info, _task([8, 8]), RT, shots=(), seeds=(0,))  # type: ignore[arg-type]
    fs = extract_features(_Flat(), info, _task([8, 8]), RT, shots=(1, 5), seeds=(0,))  # type: ignore[arg-type]
    assert [r.shots for r in fewshot_features(fs, shots=(1, 5), seeds=(0,))] == [1, 5]


def test_extract_features_of_a_task_without_test_examples_is_one_line() -> None:
    from types import SimpleNamespace

    t = _task([8, 8])
    empty = Task("tiny", 2, 4, t.train, TensorSplit(torch.zeros((0, 3, 4, 4), dtype=torch.uint8),
                                                      np.zeros(0, dtype=np.int64)))
    info = SimpleNamespace(name="flat", num_blocks=0, block_names=())
    with pytest.raises(ValueError, match="DS task tiny: its test split holds no examples"):
        extract_features(_Flat(), info, empty, RT, shots=(1,), seeds=(0,))  # type: ignore[arg-type]


# --- a registered task is named as it was registered ------------------------------------------


def test_a_task_is_named_as_registered_whatever_its_factory_called_it() -> None:
    # a factory returning load_imagefolder("/data/pets_v2", ...) gave a task named after its
    # directory: its metrics were us/pets_v2/top1 under a config (and a sweep scheduler) naming
    # us/pets/top1, and its DS results reached the store under a name no config held
    from meta_study.train import get_task, register_task
    from meta_study.train.data import _TASKS

    base = _task([8, 8])
    register_task("s45_alias")(lambda img_size=4, seed=0: base)
    register_task("s45_not_a_task")(lambda img_size=4, seed=0: {"name": "x"})
    try:
        t = get_task("s45_alias")
        assert t.name == "s45_alias" and t.train is base.train and t.num_classes == 2
        with pytest.raises(TypeError, match="task 's45_not_a_task': its factory returned a dict, not a Task"):
            get_task("s45_not_a_task")
    finally:
        _TASKS.pop("s45_alias", None)
        _TASKS.pop("s45_not_a_task", None)


# --- evaluate leaves the model in the mode it found it in ---------------------------------------


def test_evaluate_restores_train_mode_when_a_batch_fails() -> None:
    from meta_study.train import evaluate

    class Fails(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("out of memory")
            return self.drop(x.flatten(1)[:, :2])

    model = Fails().train()
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate(model, _task([8, 8]).train, RT, batch_size=4)
    assert model.training and model.drop.training


# --- pretrain refuses a model built for another number of classes --------------------------------


@pytest.mark.parametrize("outputs", [3, 5])
def test_pretrain_refuses_a_head_of_another_number_of_classes(outputs: int) -> None:
    # 3 outputs for 4 classes: "Target 3 is out of bounds" (IndexError) at the first batch holding
    # class 3, a device-side assert on a GPU; 5: trained without a word, a model of another size
    from meta_study.train import TrainConfig, create_model, pretrain

    g = torch.Generator().manual_seed(0)
    split = lambda m: TensorSplit(torch.randint(0, 256, (m, 3, 8, 8), generator=g, dtype=torch.uint8),  # noqa: E731
                                  np.arange(m) % 4)
    task = Task("tiny4", 4, 8, split(16), split(8))
    model, info = create_model("vit_tiny_cpu", num_classes=outputs, img_size=8)
    with pytest.raises(ValueError, match=rf"US task tiny4: 4 classes, but the model's head has {outputs} outputs"):
        pretrain(model, info, task, TrainConfig(img_size=8, batch_size=8, steps=2, device="cpu"))


# --- a run stopped by an exception stops its DataLoader workers ---------------------------------


def test_a_stopped_run_stops_its_dataloader_workers_while_its_exception_lives() -> None:
    # an on_report that raises (preemption, Ctrl-C): the workers, each with its own copy of the
    # split's image cache, ran on for as long as the exception's traceback lived (a notebook
    # keeps the last one)
    import multiprocessing

    from meta_study.train import TrainConfig, create_model, pretrain

    g = torch.Generator().manual_seed(0)
    split = lambda m: TensorSplit(torch.randint(0, 256, (m, 3, 8, 8), generator=g, dtype=torch.uint8),  # noqa: E731
                                  np.arange(m) % 4)
    task = Task("tiny4", 4, 8, split(64), split(8))
    model, info = create_model("vit_tiny_cpu", num_classes=4, img_size=8)
    before = set(multiprocessing.active_children())

    def stop(step: int, metrics: dict, ck: str | None) -> None:
        raise KeyboardInterrupt

    cfg = TrainConfig(img_size=8, batch_size=8, steps=20, eval_every=2, num_workers=2, device="cpu")
    with pytest.raises(KeyboardInterrupt) as excinfo:
        pretrain(model, info, task, cfg, on_report=stop)
    assert excinfo.value.__traceback__ is not None      # the exception and its frames are alive
    assert set(multiprocessing.active_children()) - before == set()
