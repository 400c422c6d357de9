"""Defects found in review of the training engine (rev_train): each test failed before its fix.

Data-parallel runs on two real ranks are in ``test_train_ddp.py``; here one rank of two is
simulated where the check happens before any collective.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from meta_study.schema import us_metric_key
from meta_study.train import (TensorSplit, TrainConfig, create_model, evaluate, evaluate_checkpoint, get_task,
                              load_imagefolder, load_parquet, pretrain, resolve_runtime, run_trial, smoke_config)

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust


@pytest.fixture(scope="module")
def us16():
    return get_task("synth_us", img_size=16, n_train=600, n_test=64)


def _run(task, cfg: TrainConfig, **kw: Any):
    torch.manual_seed(cfg.seed)
    model, info = create_model(cfg.model_name, num_classes=task.num_classes, img_size=task.img_size,
                               **cfg.model_kwargs)
    return pretrain(model, info, task, cfg, **kw)


def _png(colour: tuple[int, int, int], size: int = 10) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


COLOURS = {"a_red": (255, 0, 0), "b_green": (0, 255, 0), "c_blue": (0, 0, 255), "d_grey": (128, 128, 128)}


def _write_classes(d: Path, per_class: int) -> None:
    for name, rgb in COLOURS.items():
        (d / name).mkdir(parents=True)
        for i in range(per_class):
            (d / name / f"{i}.png").write_bytes(_png(rgb, 8 + i))


# --- 1. a data-parallel batch must split evenly across the ranks ---------------------------------


@pytest.mark.parametrize("batch_size,fraction", [(5, 1.0), (64, 4.5 / 600)], ids=["odd_batch", "capped_by_fraction"])
def test_a_batch_that_does_not_split_across_the_ranks_is_refused(us16, monkeypatch, batch_size: int,
                                                                 fraction: float) -> None:
    """With 2 ranks a batch of 5 was split 3 + 2 and each shard's mean weighted equally (the
    losses drifted 0.22 from the single-process run by step 12); a batch of 1 left rank 1 empty and
    it raised a misleading "diverged". A small data_fraction caps the batch the same way."""
    from meta_study.train import loop

    monkeypatch.setattr(loop, "dist_rank_world", lambda: (0, 2))   # rank 0 of 2; fails before any collective
    cfg = TrainConfig(steps=2, batch_size=batch_size, data_fraction=fraction, us_eval_examples=8)
    with pytest.raises(ValueError, match=r"^batch_size=\d+, after capping at the \d+ examples of the data_fraction="
                                         r"\S+ subset 5, must be a multiple of the 2 data-parallel workers") as e:
        _run(us16, cfg)
    assert f"batch_size={batch_size}" in str(e.value) and "\n" not in str(e.value)


# --- 2. the capped US evaluation is a fixed random subset; the final one is the whole split ------


class _Recording:
    """A split that records the indices every evaluation asks for."""

    def __init__(self, split: Any) -> None:
        self.split, self.labels, self.asked = split, split.labels, []

    def __len__(self) -> int:
        return len(self.split)

    def images(self, idx: np.ndarray) -> torch.Tensor:
        self.asked.append(np.asarray(idx).copy())
        return self.split.images(idx)


def test_capped_us_evaluation_sees_every_class_and_the_final_one_the_whole_split(tmp_path: Path) -> None:
    """On disk the test split is sorted by class: ``us_eval_examples=10`` of 4 classes x 5 saw
    classes 0 and 1 only, and a model that always answers 0 scored 0.5 instead of 0.25."""
    _write_classes(tmp_path / "train", 4)
    _write_classes(tmp_path / "test", 5)
    disk = load_imagefolder(tmp_path, name="colours", img_size=16)
    assert list(disk.test.labels) == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5      # the bias's cause
    task = dataclasses.replace(disk, test=_Recording(disk.test))
    reports: list[dict[str, float]] = []
    r = _run(task, TrainConfig(steps=2, batch_size=4, eval_every=1, us_eval_examples=10),
             on_report=lambda s, m, ck: reports.append(m))
    capped, final = task.test.asked
    assert len(capped) == 10 and set(disk.test.labels[capped]) == {0, 1, 2, 3}
    np.testing.assert_array_equal(np.sort(final), np.arange(20))           # us_accuracy: the whole split
    assert reports[-1][us_metric_key("colours")] == r.us_accuracy
    task.test.asked.clear()
    _run(task, TrainConfig(steps=1, batch_size=4, eval_every=1, us_eval_examples=10, data_seed=0, seed=1),
         on_report=lambda s, m, ck: None)
    assert len(task.test.asked) == 1 and np.array_equal(task.test.asked[0], final)   # the last report: whole


def test_the_capped_subset_is_fixed_by_the_data_seed() -> None:
    from meta_study.train.loop import us_eval_indices

    a, b = us_eval_indices(100, 10, data_seed=0), us_eval_indices(100, 10, data_seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 10 and list(a) == sorted(a) and not np.array_equal(a, np.arange(10))
    assert not np.array_equal(a, us_eval_indices(100, 10, data_seed=1))
    np.testing.assert_array_equal(us_eval_indices(100, 0, data_seed=0), np.arange(100))   # 0: the whole split
    np.testing.assert_array_equal(us_eval_indices(8, 10, data_seed=0), np.arange(8))


# --- 3. an empty test split is refused where it is made; no accuracy of nothing ------------------


def test_an_unlabelled_test_folder_is_refused(tmp_path: Path) -> None:
    """Kaggle's layout: ``test/*.jpg`` with no class folders gave 0 test images, US accuracy 0.0
    and, as a DS task, a raw ``torch.cat(): expected a non-empty list`` traceback."""
    _write_classes(tmp_path / "train", 3)
    (tmp_path / "test").mkdir()
    for i in range(3):
        (tmp_path / "test" / f"{i}.png").write_bytes(_png((9, 9, 9)))
    with pytest.raises(ValueError, match=r"test: no images in class subdirectories \(an unlabeled test set\?\)") as e:
        load_imagefolder(tmp_path, name="kaggle", img_size=8)
    assert str(tmp_path / "test") in str(e.value) and "\n" not in str(e.value)


def test_a_held_out_split_of_no_examples_is_refused(tmp_path: Path) -> None:
    _write_classes(tmp_path / "few", 1)      # 4 images; 0.1 of them rounds to 0
    with pytest.raises(ValueError, match=r"few: test_fraction=0.1 of 4 images holds out none") as e:
        load_imagefolder(tmp_path / "few", img_size=8, test_fraction=0.1)
    assert str(tmp_path / "few") in str(e.value)
    table = pa.table({"image": [_png((1, 2, 3))] * 4, "label": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match=r"holds out none"):
        load_parquet(table, name="t", img_size=8, test_fraction=0.1)


def test_an_empty_parquet_test_table_is_refused(tmp_path: Path) -> None:
    table = pa.table({"image": [_png((1, 2, 3))] * 4, "label": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match=r"empty\.parquet: no rows in the test table"):
        import pyarrow.parquet as pq

        pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
        load_parquet(table, tmp_path / "empty.parquet", name="t", img_size=8)


def test_evaluate_on_an_empty_split_is_an_error_not_zero() -> None:
    model, _ = create_model("vit_tiny_cpu", num_classes=4, img_size=16)
    empty = TensorSplit(torch.zeros((0, 3, 16, 16), dtype=torch.uint8), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="no examples"):
        evaluate(model, empty, resolve_runtime(TrainConfig(device="cpu"), "vit"))


def test_pretraining_on_a_task_without_test_examples_is_refused_before_training() -> None:
    task = get_task("synth_us", img_size=16, n_train=64, n_test=1)
    empty = TensorSplit(torch.zeros((0, 3, 16, 16), dtype=torch.uint8), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="US task synth_us: its test split holds no examples"):
        _run(dataclasses.replace(task, test=empty), TrainConfig(steps=1, batch_size=8))
    from meta_study.train.trial import _ds_tasks

    with pytest.raises(ValueError, match="DS task synth_combo: its test split holds no examples"):
        _ds_tasks(smoke_config(ds_tasks=("synth_combo",), shots=(1,), ds_task_kwargs={"n_train_per_class": 2,
                                                                                      "n_test": 0}))


# --- 4. DataLoader workers take nothing from the global RNG (dropout) ----------------------------

DROPOUT = {"drop_rate": 0.3, "proj_drop_rate": 0.3}


def test_dataloader_workers_and_dropout_give_the_same_run(us16) -> None:
    """Creating the loader's iterator drew its base seed from torch's global RNG, which also
    drives dropout: with workers the run differed from the inline one (5.406 vs 5.485 at step 5)."""
    cfg = TrainConfig(steps=4, batch_size=16, us_eval_examples=16, lr=2e-3, model_kwargs=DROPOUT)
    inline = _run(us16, cfg)
    workers = _run(us16, dataclasses.replace(cfg, num_workers=1))
    np.testing.assert_array_equal(inline.losses, workers.losses)


class _Preempted(Exception):
    pass


def test_resume_with_workers_and_dropout_is_exact(us16, tmp_path: Path) -> None:
    """On resume the loader's draw came after the checkpoint's RNG state was restored, so the
    resumed run was one draw ahead of the uninterrupted one."""
    cfg = TrainConfig(steps=6, batch_size=16, eval_every=3, us_eval_examples=16, lr=2e-3, num_workers=1,
                      model_kwargs=DROPOUT)
    full = _run(us16, cfg)

    def stop_at_3(step: int, m: dict[str, float], ck: str | None) -> None:
        if step == 3:
            raise _Preempted

    with pytest.raises(_Preempted):
        _run(us16, cfg, on_report=stop_at_3, checkpoint_dir=str(tmp_path))
    torch.manual_seed(999)          # a restarted process has other RNG states; the checkpoint restores them
    resumed = _run(us16, cfg, resume_from=str(tmp_path))
    assert resumed.losses[3] == full.losses[3]
    np.testing.assert_array_equal(resumed.losses[3:], full.losses[3:])


# --- 5. resuming checks that the checkpoint is of this run ---------------------------------------


def test_resuming_with_a_changed_run_definition_is_refused(us16, tmp_path: Path) -> None:
    """steps 4 -> 8: the checkpoint's schedule (4 steps) replaced the new one, and steps 5-8 ran at lr 0."""
    cfg = TrainConfig(steps=4, batch_size=16, us_eval_examples=16)
    _run(us16, cfg, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"checkpoint\.pt: saved by a run with steps=4, this config has steps=8") as e:
        _run(us16, dataclasses.replace(cfg, steps=8), resume_from=str(tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"saved by a run with seed=0, this config has seed=1"):
        _run(us16, dataclasses.replace(cfg, seed=1), resume_from=str(tmp_path))
    with pytest.raises(ValueError, match=r"saved by a run with us_task_kwargs=\{\}, this config has us_task_kwargs"):
        _run(us16, dataclasses.replace(cfg, us_task_kwargs={"n_train": 600}), resume_from=str(tmp_path))
    # how often it reports, evaluates or loads data is not the run: resuming with another is fine
    r = _run(us16, dataclasses.replace(cfg, eval_every=2, us_eval_examples=8, num_workers=0), resume_from=str(tmp_path))
    # nothing left to train: every step's loss is the checkpoint's own (restored with it)
    assert np.isfinite(r.losses).all() and 0.0 <= r.us_accuracy <= 1.0


def test_evaluate_checkpoint_of_an_early_stopped_run_still_works(tmp_path: Path) -> None:
    """It cuts ``steps`` at the checkpoint's step on purpose: the one difference it allows."""
    cfg = smoke_config(img_size=16, steps=6, batch_size=16, eval_every=3, diagnostics=False, shots=(1,),
                       fewshot_seeds=1, ds_tasks=("synth_combo",), us_task_kwargs={"n_train": 200, "n_test": 32},
                       ds_task_kwargs={"n_train_per_class": 2, "n_test": 24})

    def stop_at_3(step: int, m: dict[str, float], ck: str | None) -> None:
        if step == 3:
            raise _Preempted

    with pytest.raises(_Preempted):
        run_trial(cfg, on_report=stop_at_3, checkpoint_dir=str(tmp_path))
    r = evaluate_checkpoint(cfg, str(tmp_path))
    assert r.pretrain.plan.total_steps == 3 and np.isfinite(r.pretrain.losses).all()   # the checkpoint's losses
    with pytest.raises(ValueError, match=r"saved by a run with seed=0, this config has seed=2"):
        evaluate_checkpoint(dataclasses.replace(cfg, seed=2), str(tmp_path))


# --- 6. sizing kwargs of the procedural tasks do not reach datasets on disk ----------------------


def test_synthetic_sizing_kwargs_skip_a_dataset_on_disk(tmp_path: Path) -> None:
    """The smoke config's ``ds_task_kwargs={"n_train_per_class": 30, ...}`` went to every DS task:
    ``load_imagefolder() got an unexpected keyword argument 'n_train_per_class'`` in every trial."""
    from meta_study.train.trial import _ds_tasks
    from meta_study.tune.trial import register_datasets

    _write_classes(tmp_path / "train", 3)
    _write_classes(tmp_path / "test", 2)
    register_datasets({"review_disk": f"imagefolder:{tmp_path}"})
    cfg = smoke_config(ds_tasks=("synth_combo", "review_disk"), shots=(1,), ds_task_kwargs={"n_train_per_class": 3,
                                                                                            "n_test": 12})
    combo, disk = _ds_tasks(cfg)
    assert (len(combo.train), len(combo.test)) == (3 * combo.num_classes, 12)    # the kwargs reached synth
    assert (disk.name, len(disk.train), len(disk.test)) == ("review_disk", 12, 8)
    from meta_study.train.trial import _us_task

    us = _us_task(dataclasses.replace(cfg, us_task="review_disk"))               # smoke's us_task_kwargs too
    assert len(us.train) == 12
    # a key no task factory takes is a typo, still refused by name
    with pytest.raises(ValueError, match=r"ds_task_kwargs key 'n_trian_per_class': no task factory takes it"):
        _ds_tasks(dataclasses.replace(cfg, ds_task_kwargs={"n_trian_per_class": 3}))
