"""Tasks: the procedural suite (registry, determinism, difference between tasks) and loaders for data on disk."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from meta_study.train import (DS_TASKS, StepBatches, fraction_indices, get_task, list_tasks, load_imagefolder,
                              load_parquet, register_task)
from meta_study.train.synth import HELD_OUT_TRIPLES, US_TRIPLES, is_held_out

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust
SMALL = {"synth_us": dict(n_train=480, n_test=240)}  # every class of the 240-way task, twice / once


def small(name: str, seed: int = 0, img_size: int = 16, **kw):
    sizes = SMALL.get(name, dict(n_train_per_class=6, n_test=60))
    return get_task(name, img_size=img_size, seed=seed, **{**sizes, **kw})


@pytest.mark.parametrize("name", list_tasks("synth_*"))
def test_every_task(name: str) -> None:
    t = small(name)
    assert t.name == name and t.img_size == 16 and t.num_classes >= 6
    for split in (t.train, t.test):
        idx = np.arange(min(64, len(split)))
        x = split.images(idx)
        assert x.shape == (len(idx), 3, 16, 16) and x.dtype == torch.float32
        assert -1.0 <= float(x.min()) < float(x.max()) <= 1.0
        assert split.labels.min() >= 0 and split.labels.max() < t.num_classes
    assert set(np.unique(t.train.labels)) == set(range(t.num_classes))  # balanced: every class present
    again = small(name)
    torch.testing.assert_close(again.train.images(np.arange(20)), t.train.images(np.arange(20)), rtol=0, atol=0)
    np.testing.assert_array_equal(again.test.labels, t.test.labels)
    assert not torch.equal(small(name, seed=1).train.images(np.arange(20)), t.train.images(np.arange(20)))
    assert not torch.equal(t.train.images(np.arange(20)), t.test.images(np.arange(20)))


def test_image_depends_only_on_its_index() -> None:
    t = small("synth_count", cache_mb=0)  # no cache: render every time
    idx = np.array([5, 17, 3, 30])
    batch = t.train.images(idx)
    for j, i in enumerate(idx):
        torch.testing.assert_close(t.train.images(np.array([i]))[0], batch[j], rtol=0, atol=0)
    cached = small("synth_count")
    torch.testing.assert_close(cached.train.images(idx), batch, rtol=0, atol=0)
    torch.testing.assert_close(cached.train.images(idx), batch, rtol=0, atol=0)  # second read hits the cache


def test_tasks_differ() -> None:
    images = {n: small(n).train.images(np.arange(32)) for n in ("synth_us", *DS_TASKS)}
    names = list(images)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert (images[names[a]] - images[names[b]]).abs().mean() > 0.05, (names[a], names[b])
    classes = {n: small(n).num_classes for n in names}
    assert classes == {"synth_us": 240, "synth_combo": 24, "synth_shape": 6, "synth_texture": 6, "synth_count": 6,
                       "synth_xpos": 8, "synth_orient": 8}


def test_upstream_never_shows_held_out_combinations() -> None:
    assert len(US_TRIPLES) == 120 and len(HELD_OUT_TRIPLES) == 24
    assert not {tuple(t) for t in US_TRIPLES} & {tuple(t) for t in HELD_OUT_TRIPLES}
    for i in range(3):  # every attribute value is still seen upstream
        assert set(US_TRIPLES[:, i]) == set(HELD_OUT_TRIPLES[:, i])
    us = small("synth_us").train
    sc, triples = us.scenes, US_TRIPLES[us.labels // 2]
    objects = sc.active[:, 2:]  # slots 0-1 hold clutter blobs
    np.testing.assert_array_equal(objects.sum(1), us.labels % 2 + 1)  # layout: single or pair
    for k in (2, 3):
        on = sc.active[:, k]
        np.testing.assert_array_equal(sc.shape[on, k], triples[on, 0])
        np.testing.assert_array_equal(sc.texture[on, k], triples[on, 1])
    combo = small("synth_combo").train
    assert all(is_held_out(*HELD_OUT_TRIPLES[y]) for y in combo.labels)


def test_label_semantics() -> None:
    xpos = small("synth_xpos").train
    cx = xpos.scenes.cx[:, 0]
    assert np.all(np.diff([cx[xpos.labels == b].mean() for b in range(8)]) > 0)  # bins ordered left to right
    count = small("synth_count").train
    np.testing.assert_array_equal(count.scenes.active.sum(1), count.labels + 1)
    orient = small("synth_orient").train
    assert np.all((orient.scenes.theta[:, 0] // (np.pi / 8)).astype(int) == orient.labels)


def test_fraction_indices_are_nested_and_deterministic() -> None:
    a, b = fraction_indices(1000, 0.1), fraction_indices(1000, 0.5)
    assert len(a) == 100 and len(b) == 500 and set(a) <= set(b)
    np.testing.assert_array_equal(a, fraction_indices(1000, 0.1))
    with pytest.raises(ValueError):
        fraction_indices(10, 0.0)


def test_step_batches_cover_each_epoch_once() -> None:
    t = small("synth_shape")
    sb = StepBatches(t.train, np.arange(30), batch_size=8, seed=3)
    assert sb.steps_per_epoch == 3
    epoch0 = np.concatenate([sb.batch_indices(s) for s in range(3)])
    epoch1 = np.concatenate([sb.batch_indices(s) for s in range(3, 6)])
    assert len(set(epoch0)) == 24 and not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(StepBatches(t.train, np.arange(30), 8, 3).batch_indices(4), sb.batch_indices(4))
    x, y = sb[1]
    assert x.shape == (8, 3, 16, 16) and torch.equal(y, torch.as_tensor(t.train.labels[sb.batch_indices(1)]))


def test_register_task_by_name() -> None:
    @register_task("tmp_task_for_test")
    def _tmp(img_size: int = 8, seed: int = 0):
        return small("synth_shape", img_size=img_size, seed=seed)

    assert "tmp_task_for_test" in list_tasks()
    assert get_task("tmp_task_for_test", img_size=8).img_size == 8
    with pytest.raises(KeyError, match="unknown task"):
        get_task("no_such_task")


# --------------------------------------------------------------------------------------------
# Data on disk
# --------------------------------------------------------------------------------------------


def _png(colour: tuple[int, int, int], size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _write_folder(root: Path, split: str, per_class: int) -> None:
    for name, rgb in COLOURS.items():
        d = root / split / name
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"{i}.png").write_bytes(_png(rgb, 10 + i))


def _check_colour_task(t, n_train: int, n_test: int) -> None:
    assert t.num_classes == 3 and t.img_size == 8
    assert len(t.train) == n_train and len(t.test) == n_test
    x = t.train.images(np.arange(len(t.train)))
    assert x.shape == (n_train, 3, 8, 8)
    # class k is a solid image whose brightest channel is the class's colour
    dominant = x.mean((2, 3)).argmax(1).numpy()
    np.testing.assert_array_equal(dominant, np.array([0, 1, 2])[[["red", "green", "blue"].index(c) for c in
                                                                  np.array(sorted(COLOURS))[t.train.labels]]])


def test_imagefolder(tmp_path: Path) -> None:
    _write_folder(tmp_path, "train", 4)
    _write_folder(tmp_path, "val", 2)
    _check_colour_task(load_imagefolder(tmp_path, name="colours", img_size=8), 12, 6)


def test_imagefolder_without_test_dir(tmp_path: Path) -> None:
    _write_folder(tmp_path, "train", 5)
    t = load_imagefolder(tmp_path / "train", name="c", img_size=8, test_fraction=0.2)
    _check_colour_task(t, 12, 3)


def _table(per_class: int, struct: bool) -> pa.Table:
    names = [n for n in sorted(COLOURS) for _ in range(per_class)]
    data = [_png(COLOURS[n]) for n in names]
    hf_image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # Hugging Face `Image` feature
    img = pa.array([{"bytes": b, "path": None} for b in data], hf_image) if struct else pa.array(data, pa.binary())
    return pa.table({"image": img, "label": names})


@pytest.mark.parametrize("struct", [False, True], ids=["bytes", "hf_image_struct"])
def test_parquet(tmp_path: Path, struct: bool) -> None:
    pq.write_table(_table(4, struct), tmp_path / "train.parquet")
    pq.write_table(_table(2, struct), tmp_path / "test.parquet")
    _check_colour_task(load_parquet(tmp_path / "train.parquet", tmp_path / "test.parquet", name="c", img_size=8), 12, 6)


def test_arrow_ipc_and_int_labels(tmp_path: Path) -> None:
    t = _table(4, False)
    ids = [sorted(COLOURS).index(v) for v in t.column("label").to_pylist()]
    t = t.set_column(1, "label", pa.array(ids, pa.int64()))
    with pa.OSFile(str(tmp_path / "data.arrow"), "wb") as f, pa.ipc.new_stream(f, t.schema) as w:
        w.write_table(t)
    task = load_parquet(tmp_path / "data.arrow", name="c", img_size=8, test_fraction=0.25)
    _check_colour_task(task, 9, 3)


def test_imagefolder_split_folders_in_any_case_are_never_classes(tmp_path: Path) -> None:
    # Fruits-360: root/Training/<class>, root/Test/<class> became a 2-class task "Training vs Test"
    _write_folder(tmp_path / "a", "Training", 4)
    _write_folder(tmp_path / "a", "Test", 2)
    _check_colour_task(load_imagefolder(tmp_path / "a", name="c", img_size=8), 12, 6)
    _write_folder(tmp_path / "b", "Train_set", 4)
    _write_folder(tmp_path / "b", "Validation", 2)
    with pytest.raises(ValueError, match="folders Validation look like splits, not classes"):
        load_imagefolder(tmp_path / "b", name="c", img_size=8)
    _check_colour_task(load_imagefolder(tmp_path / "b", name="c", img_size=8, train_dir="Train_set"), 12, 6)
    with pytest.raises(FileNotFoundError, match="no such test directory"):
        load_imagefolder(tmp_path / "a", name="c", img_size=8, test_dir="holdout")


def test_negative_int_labels_are_refused(tmp_path: Path) -> None:
    t = _table(4, False)
    t = t.set_column(1, "label", pa.array([-1] * t.num_rows, pa.int64()))
    pq.write_table(t, tmp_path / "test.parquet")
    pq.write_table(_table(4, False), tmp_path / "train.parquet")
    with pytest.raises(ValueError, match="label -1: class ids must be >= 0"):
        load_parquet(tmp_path / "test.parquet", name="c", img_size=8)


@pytest.mark.parametrize("folder", ["valid", "Testing", "eval"])
def test_imagefolder_takes_every_test_folder_name_it_knows_as_the_test_split(tmp_path: Path, folder: str) -> None:
    """Kaggle's train/ + valid/: valid/ was named a split (never a class) but not used as one, and
    20% of train was held out in its place (9 train images of 12, 3 test, instead of 12 and 6)."""
    _write_folder(tmp_path, "train", 4)
    _write_folder(tmp_path, folder, 2)
    _check_colour_task(load_imagefolder(tmp_path, name="colours", img_size=8), 12, 6)


def test_no_steps_and_no_epochs_is_refused() -> None:
    """steps=0 means "count epochs"; with epochs=0 too, one step was trained (the planner's floor)
    and the run was logged as 0 epochs."""
    from meta_study.train.loop import TrainConfig

    with pytest.raises(ValueError, match=r"epochs=0\.?0?: must be > 0 when steps is 0"):
        TrainConfig(steps=0, epochs=0)
    TrainConfig(steps=5, epochs=0)          # a step count: epochs unused
    TrainConfig(steps=0, epochs=0.5)


def test_int_test_labels_the_train_table_lacks_are_refused(tmp_path: Path) -> None:
    """Integer labels: a test class missing from train (a train table filtered to 2 classes,
    its test table not) made a 3-class head whose third class was never trained, and every test
    image of it counted as a miss, unsaid. Class names were refused so already."""
    t = _table(4, False)
    ids = pa.array([sorted(COLOURS).index(v) for v in t.column("label").to_pylist()], pa.int64())
    t = t.set_column(1, "label", ids)
    pq.write_table(t.filter(pc.less(ids, 2)), tmp_path / "train.parquet")
    pq.write_table(t, tmp_path / "test.parquet")
    with pytest.raises(ValueError, match=r"test.parquet: labels \[2\] not among the train classes"):
        load_parquet(tmp_path / "train.parquet", tmp_path / "test.parquet", name="c", img_size=8)
    # the train table may hold classes the test table lacks
    task = load_parquet(tmp_path / "test.parquet", tmp_path / "train.parquet", name="c", img_size=8)
    assert task.num_classes == 3


def test_a_hugging_face_save_to_disk_directory_is_read(tmp_path: Path) -> None:
    """``Dataset.save_to_disk(dir)`` writes ``data-0000K-of-0000N.arrow`` (Arrow streams) beside
    ``state.json`` and ``dataset_info.json``: the directory was read as a Parquet dataset and
    failed on its first file."""
    t = _table(4, True)
    d = tmp_path / "hf_train"
    d.mkdir()
    for k, part in enumerate((t.slice(0, 6), t.slice(6))):
        with pa.OSFile(str(d / f"data-0000{k}-of-00002.arrow"), "wb") as f, pa.ipc.new_stream(f, part.schema) as w:
            w.write_table(part)
    (d / "state.json").write_text('{"_data_files": [{"filename": "data-00000-of-00002.arrow"}]}')
    (d / "dataset_info.json").write_text("{}")
    task = load_parquet(d, name="c", img_size=8, test_fraction=0.25)
    _check_colour_task(task, 9, 3)
