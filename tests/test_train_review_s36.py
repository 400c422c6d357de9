"""Defects found in the second review of the training engine (s36): each test failed before its fix."""

from __future__ import annotations

import math
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from meta_study.train import TensorSplit, load_imagefolder, load_parquet, smoke_config
from meta_study.train.data import _TASKS, Task, register_task
from meta_study.train.trial import _ds_tasks

torch.set_num_threads(1)


def _save(path: Path, value: int, size: int = 8, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.full((size, size, 3), value, np.uint8))
    (im.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else im.convert(mode)).save(path)


def _png(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_imagefolder_reads_only_regular_visible_image_files(tmp_path: Path) -> None:
    # a macOS zip leaves ._x.png (AppleDouble) beside every image and a __MACOSX/ folder at the
    # root: they were counted as images (and __MACOSX as a class), and the first batch that
    # held one crashed pre-training with PIL's UnidentifiedImageError; a folder named x.png too
    for c, v in (("a", 40), ("b", 200)):
        for i in range(3):
            _save(tmp_path / c / f"{i}.png", v)
    (tmp_path / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 100)
    (tmp_path / "b" / "dir.png").mkdir()
    (tmp_path / "b" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "b" / ".ipynb_checkpoints" / "0-checkpoint.png").write_bytes(b"not an image")
    (tmp_path / "__MACOSX" / "a").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "a" / "pipe.png")   # opening it would block forever
    t = load_imagefolder(tmp_path, img_size=8, test_fraction=1 / 3)
    assert t.num_classes == 2
    assert len(t.train) + len(t.test) == 6
    for split in (t.train, t.test):
        x = split.images(np.arange(len(split)))
        assert x.shape[0] == len(split)


def test_16_bit_grayscale_pngs_keep_their_contrast(tmp_path: Path) -> None:
    # PIL's convert("RGB") clips a 16-bit image at 255: a 0..65535 ramp came out 99.6% white
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    t = load_parquet(pa.table({"image": [buf.getvalue()] * 4, "label": [0, 1, 0, 1]}),
                     pa.table({"image": [buf.getvalue()] * 2, "label": [0, 1]}), name="x", img_size=16)
    px = t.train.pixels(np.array([0]))[0, 0].numpy().astype(int)
    expect = np.round(ramp / 257.0).astype(int)
    assert np.abs(px - expect).max() <= 1, (px.min(), px.max(), (px == 255).mean())


def test_mixed_image_modes_decode_to_the_same_rgb(tmp_path: Path) -> None:
    # L, RGBA, P, CMYK and 16-bit images in one folder all give (3, S, S) uint8 of the same grey
    for i, mode in enumerate(("RGB", "L", "RGBA", "P", "CMYK", "I;16")):
        p = tmp_path / "train" / "a" / f"{i}.{'jpg' if mode == 'CMYK' else 'png'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        if mode == "I;16":
            Image.fromarray(np.full((8, 8), 128 * 257, np.uint16)).save(p)
        else:
            _save(p, 128, mode=mode)
        _save(tmp_path / "test" / "a" / f"{i}.png", 128)
    t = load_imagefolder(tmp_path, img_size=8)
    px = t.train.pixels(np.arange(len(t.train))).numpy().astype(int)
    assert px.shape == (6, 3, 8, 8)
    assert np.abs(px - 128).max() <= 2, px.reshape(6, -1).max(1)


def test_a_holdout_that_leaves_a_class_without_train_examples_is_refused(tmp_path: Path) -> None:
    # a random 20% holdout put the only image of a class in test: the model never saw the class
    # and its accuracy was capped, without a word
    for i in range(9):
        _save(tmp_path / "many" / f"{i}.png", 50)
    _save(tmp_path / "rare" / "0.png", 200)
    outcomes = set()
    for seed in range(12):
        try:
            t = load_imagefolder(tmp_path, img_size=8, seed=seed, test_fraction=0.2)
        except ValueError as e:
            assert "rare" in str(e) and str(tmp_path) in str(e) and "\n" not in str(e)
            outcomes.add("refused")
        else:
            assert set(t.train.labels.tolist()) == {0, 1}
            outcomes.add("kept")
    assert outcomes == {"refused", "kept"}
    labels = ["many"] * 9 + ["rare"]
    outcomes = set()
    for seed in range(12):
        try:
            load_parquet(pa.table({"image": [_png(10 * i) for i in range(10)], "label": labels}), name="x",
                         img_size=8, seed=seed)
        except ValueError as e:
            assert "rare" in str(e) and "\n" not in str(e)
            outcomes.add("refused")
        else:
            outcomes.add("kept")
    assert outcomes == {"refused", "kept"}


def test_null_labels_or_images_in_a_table_are_refused_in_words() -> None:
    # a null label crashed in sorted() ('<' not supported between NoneType and int); a null
    # image at the first batch that held it ('NoneType' object has no attribute 'read')
    imgs = [_png(10 * i) for i in range(10)]
    with pytest.raises(ValueError, match=r"label.*1 null") as e:
        load_parquet(pa.table({"image": imgs, "label": [0, 1, 0, 1, None, 0, 1, 0, 1, 0]}), name="x", img_size=8)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"image.*1 null"):
        load_parquet(pa.table({"image": imgs[:9] + [None], "label": [0, 1] * 5}), name="x", img_size=8)
    with pytest.raises(ValueError, match=r"label.*1 null"):
        load_parquet(pa.table({"image": imgs, "label": [0, 1] * 5}),
                     pa.table({"image": imgs[:2], "label": ["a", None]}).cast(
                         pa.schema([("image", pa.binary()), ("label", pa.string())])), name="x", img_size=8)


def test_hugging_face_image_structs_holding_a_path_instead_of_bytes_are_read(tmp_path: Path) -> None:
    # datasets' Image feature keeps {"bytes": None, "path": ...} for local files it did not embed
    paths = []
    for i in range(6):
        _save(tmp_path / f"{i}.png", 40 * i)
        paths.append(str(tmp_path / f"{i}.png"))
    col = pa.array([{"bytes": None, "path": p} for p in paths],
                   pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    t = load_parquet(pa.table({"image": col, "label": [0, 1] * 3}), pa.table({"image": col, "label": [0, 1] * 3}),
                     name="x", img_size=8)
    px = t.train.pixels(np.arange(6)).numpy()
    assert [int(v) for v in px[:, 0, 0, 0]] == [40 * i for i in range(6)]


def test_a_ds_task_with_a_test_class_missing_from_train_fails_before_pre_training() -> None:
    # the shots check counted only the classes present in train: a class with 0 train examples
    # (and test examples) passed, and its few-shot accuracy was capped without a word
    g = torch.Generator().manual_seed(0)
    train = TensorSplit(torch.randint(0, 255, (40, 3, 16, 16), dtype=torch.uint8, generator=g),
                        np.repeat(np.arange(2), 20))
    test = TensorSplit(torch.randint(0, 255, (9, 3, 16, 16), dtype=torch.uint8, generator=g), np.arange(9) % 3)

    @register_task("s36_missing_class")
    def _factory(img_size: int = 16, seed: int = 0) -> Task:
        return Task("s36_missing_class", 3, img_size, train, test)

    try:
        cfg = smoke_config(ds_tasks=("s36_missing_class",), shots=(1, 5))
        with pytest.raises(ValueError, match=r"s36_missing_class.*class 2.*0 train examples"):
            _ds_tasks(cfg)
    finally:
        _TASKS.pop("s36_missing_class", None)   # other tests iterate the registry


def test_negative_or_fractional_synthetic_sizes_are_refused_by_name() -> None:
    # n_train=-5 failed in torch ("Trying to create tensor with negative dimension -5")
    from meta_study.train import get_task

    for name, kw, key in (("synth_us", {"n_train": -5}, "n_train=-5"), ("synth_us", {"n_test": -3}, "n_test=-3"),
                          ("synth_us", {"n_train": 10.5}, "n_train=10.5"),
                          ("synth_us", {"n_triples": 12.5}, "n_triples=12.5"),
                          ("synth_shape", {"n_train_per_class": -1}, "n_train_per_class=-1"),
                          ("synth_shape", {"n_test": -3}, "n_test=-3")):
        with pytest.raises(ValueError, match=rf"{name}: {key}: must be a whole number >= 0"):
            get_task(name, img_size=8, **kw)
    # whole floats (Tune's quniform) count as integers: n_triples=12.0 failed in np.linspace
    t = get_task("synth_us", img_size=8, n_train=48.0, n_test=24.0, n_triples=12.0)
    assert (t.num_classes, len(t.train), len(t.test)) == (24, 48, 24) and isinstance(t.num_classes, int)
    t = get_task("synth_shape", img_size=8, n_train_per_class=2.0, n_test=12.0)
    assert (len(t.train), len(t.test)) == (12, 12)


def test_pretraining_on_an_empty_train_split_is_refused_in_words() -> None:
    # n_train=0 crashed in plan_steps with ZeroDivisionError
    from meta_study.train import TrainConfig, create_model, get_task, pretrain

    task = get_task("synth_us", img_size=16, n_train=0, n_test=8, n_triples=2)
    model, info = create_model("vit_tiny_cpu", num_classes=task.num_classes, img_size=16)
    with pytest.raises(ValueError, match="US task synth_us: its train split holds no examples"):
        pretrain(model, info, task, TrainConfig(steps=1, batch_size=8, device="cpu"))


def test_a_ds_task_with_no_train_examples_fails_before_pre_training() -> None:
    # n_train_per_class=0 passed the shots check (no class to count) and crashed after
    # pre-training in np.concatenate ("need at least one array to concatenate")
    with pytest.raises(ValueError, match=r"DS task synth_shape: class 0, 1, 2, 3, 4 has 0 train examples"):
        _ds_tasks(smoke_config(ds_tasks=("synth_shape",), shots=(1,),
                               ds_task_kwargs={"n_train_per_class": 0, "n_test": 12}))


def test_a_model_whose_last_update_diverged_is_not_reported_at_chance() -> None:
    # the loss of every step was finite (the last one is measured before the last update), but
    # the last update made every logit NaN: US top-1 0.25 (chance of 4 classes) was reported
    from meta_study.train import TrainConfig, create_model, evaluate, get_task, pretrain, resolve_runtime
    from meta_study.train.loop import DivergedError

    task = get_task("synth_us", img_size=16, n_train=64, n_test=48, n_triples=2)
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=task.num_classes, img_size=16)
    with pytest.raises(DivergedError, match=r"step 1 of 1.*not finite"):
        pretrain(model, info, task, TrainConfig(steps=1, batch_size=16, lr=1e20, grad_clip=0, device="cpu"))
    # evaluate itself: NaN outputs (e.g. a BatchNorm's running variance gone inf) are no accuracy
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=task.num_classes, img_size=16)
    rt = resolve_runtime(TrainConfig(device="cpu"), "vit")
    assert 0 <= evaluate(model, task.test, rt) <= 1
    with torch.no_grad():
        model.get_classifier().bias[1] = float("nan")
    with pytest.raises(DivergedError, match=r"48 of 48 examples"):
        evaluate(model, task.test, rt)


def _tiny(**kw):
    return smoke_config(steps=2, batch_size=32, diagnostics=False, ds_tasks=("synth_shape",), shots=(1,),
                        fewshot_seeds=1, us_task_kwargs={"n_train": 128, "n_test": 48, "n_triples": 2},
                        ds_task_kwargs={"n_train_per_class": 2, "n_test": 24}, **kw)


def test_l2_sweep_metric_keys_are_exact_and_valid_mlflow_names() -> None:
    # f"{l2:g}" wrote 2**20 as "1.04858e+06": '+' is not allowed in an MLflow metric name (the
    # trial's whole log_batch is refused), and 2**20 and 2**20 + 1 shared one key (one overwrote
    # the other)
    import re

    from meta_study.train import run_trial

    m = run_trial(_tiny(l2_sweep=(2.0**20, 2.0**20 + 1, 1.0, 2.0**-10))).metrics()
    keys = sorted(k for k in m if k.startswith("diag/l2sweep/"))
    assert len(keys) == 5, keys      # l2 = 2**10 and the four extra values
    assert all(re.fullmatch(r"[/\w.\- :]*", k) for k in keys), keys
    assert "diag/l2sweep/synth_shape/1shot/l2_1/top1" in m         # keys that were exact stay the same
    assert "diag/l2sweep/synth_shape/1shot/l2_1048576/top1" in m
    assert "diag/l2sweep/synth_shape/1shot/l2_1048577/top1" in m
    assert "diag/l2sweep/synth_shape/1shot/l2_0.0009765625/top1" in m


@pytest.mark.parametrize("sweep", [(-1.0,), (float("nan"),), (float("inf"),), ("big",)])
def test_an_l2_sweep_value_that_is_no_regularizer_is_refused(sweep) -> None:
    # l2 was checked, l2_sweep not: a negative value solved (X^T X - |l2| I) w = X^T y
    from meta_study.train import TrainConfig

    with pytest.raises(ValueError, match=r"l2_sweep=.*must be numbers >= 0"):
        TrainConfig(l2_sweep=sweep)


def test_an_imagefolder_given_as_dot_is_named_after_the_directory(tmp_path: Path, monkeypatch) -> None:
    # Path(".").name is "": the task was named "", its metric key us//top1
    for c, v in (("a", 40), ("b", 200)):
        for i in range(2):
            _save(tmp_path / "pets" / "train" / c / f"{i}.png", v)
            _save(tmp_path / "pets" / "test" / c / f"{i}.png", v)
    monkeypatch.chdir(tmp_path / "pets" / "train")
    assert load_imagefolder("..", img_size=8).name == "pets"
    monkeypatch.chdir(tmp_path / "pets")
    assert load_imagefolder(".", img_size=8).name == "pets"


class _CountingSplit(TensorSplit):
    """A real in-memory split that counts the batches read from it."""

    reads = 0

    def images(self, idx: np.ndarray) -> torch.Tensor:
        type(self).reads += 1
        return super().images(idx)


def test_a_diverged_run_without_reports_stops_soon_instead_of_training_to_the_end() -> None:
    # the divergence check ran only at reports: with eval_every=0 a run whose loss was NaN from
    # step 2 trained all its steps (here 400; hours on a real run) before saying so
    from meta_study.train import TrainConfig, create_model, get_task, pretrain
    from meta_study.train.loop import DIVERGENCE_CHECK_STEPS, DivergedError

    task = get_task("synth_us", img_size=8, n_train=64, n_test=16, n_triples=2)
    px = task.train.pixels(np.arange(len(task.train)))
    counting = _CountingSplit(px, task.train.labels.copy())
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=task.num_classes, img_size=8, patch_size=4)
    steps = 4 * DIVERGENCE_CHECK_STEPS
    with pytest.raises(DivergedError, match=rf"from step 2 of {steps}"):
        pretrain(model, info, Task(task.name, task.num_classes, 8, counting, task.test),
                 TrainConfig(steps=steps, batch_size=4, lr=1e30, grad_clip=0, device="cpu"))
    assert _CountingSplit.reads == DIVERGENCE_CHECK_STEPS


def test_a_missing_image_or_label_column_is_named_with_the_columns_there(tmp_path: Path) -> None:
    # Hugging Face's CIFAR-10 has "img", CIFAR-100 "fine_label": a Parquet file failed with a
    # 6-line pyarrow dump (__fragment_index, __batch_index, ...), a table with a KeyError
    import pyarrow.parquet as pq

    t = pa.table({"img": [_png(10 * i) for i in range(10)], "fine_label": [0, 1] * 5})
    pq.write_table(t, tmp_path / "train.parquet")
    for src, where in ((str(tmp_path / "train.parquet"), str(tmp_path / "train.parquet")), (t, "a table of 10 rows")):
        with pytest.raises(ValueError) as e:
            load_parquet(src, name="x", img_size=8)
        msg = str(e.value)
        assert "\n" not in msg and where in msg and "'image'" in msg and "img, fine_label" in msg, msg
        assert "image_column=" in msg
    task = load_parquet(str(tmp_path / "train.parquet"), name="x", img_size=8, image_column="img",
                        label_column="fine_label")
    assert len(task.train) + len(task.test) == 10


def test_an_undecodable_image_is_named_by_its_row_or_path(tmp_path: Path) -> None:
    # a corrupt row failed mid-run with "cannot identify image file <_io.BytesIO object at 0x7f...>"
    imgs = [_png(10 * i) for i in range(6)]
    imgs[4] = b"\x89PNG\r\n\x1a\n truncated"
    t = load_parquet(pa.table({"image": imgs, "label": [0, 1] * 3}), pa.table({"image": imgs[:2], "label": [0, 1]}),
                     name="x", img_size=8)
    with pytest.raises(ValueError, match=r"a table of 6 rows, row 4: the image cannot be decoded") as e:
        t.train.pixels(np.arange(6))
    assert "\n" not in str(e.value)
    # held out: the row of the source table, not the index in the split
    t = load_parquet(pa.table({"image": imgs, "label": [0, 1] * 3}), name="x", img_size=8, test_fraction=0.5)
    split = t.train if 4 in getattr(t.train, "rows") else t.test
    with pytest.raises(ValueError, match=r"a table of 6 rows, row 4: the image cannot be decoded"):
        split.pixels(np.arange(len(split)))
    for c in "ab":
        _save(tmp_path / "train" / c / "0.png", 9)
        _save(tmp_path / "test" / c / "0.png", 9)
    (tmp_path / "train" / "b" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    t = load_imagefolder(tmp_path, img_size=8)
    with pytest.raises(ValueError, match=r"1\.jpg.*cannot be decoded"):
        t.train.pixels(np.arange(len(t.train)))


def test_a_single_value_for_a_list_setting_is_taken_as_a_list_of_one() -> None:
    # shots=5 and l2_sweep=1.0 raised TypeError ('int' object is not iterable); ds_tasks="synth_shape"
    # was iterated letter by letter ("unknown task 's'"); betas=0.9 a TypeError too
    from meta_study.train import TrainConfig

    c = TrainConfig(shots=5, l2_sweep=1.0, ds_tasks="synth_shape")
    assert (c.shots, c.l2_sweep, c.ds_tasks) == ((5,), (1.0,), ("synth_shape",))
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert TrainConfig(shots=5.0).shots == (5,)
    with pytest.raises(ValueError, match=r"betas=0\.9: must be two numbers in \[0, 1\)"):
        TrainConfig(betas=0.9)
    with pytest.raises(ValueError, match=r"shots=\(2\.5,\): must be one or more whole shot counts"):
        TrainConfig(shots=2.5)


def test_a_class_folder_without_images_is_refused_by_name(tmp_path: Path) -> None:
    # an empty class folder (an interrupted copy) was dropped without a word: a 3-class dataset
    # trained and reported as a 2-class one (torchvision's ImageFolder refuses it)
    for c in "ab":
        _save(tmp_path / "train" / c / "0.png", 9)
        _save(tmp_path / "test" / c / "0.png", 9)
    (tmp_path / "train" / "c").mkdir()
    (tmp_path / "train" / "c" / "notes.txt").write_text("todo")
    with pytest.raises(ValueError, match=r"train: class folder c holds no images") as e:
        load_imagefolder(tmp_path, img_size=8)
    assert "\n" not in str(e.value)


def test_a_diverged_fine_tune_is_left_out_not_the_whole_trial(capfd) -> None:
    # evaluate raising DivergedError made a fine-tune at a huge lr fail the whole trial after its
    # pre-training and probes (before that: the fine-tune's chance accuracy was logged)
    from meta_study.train import run_trial

    r = run_trial(_tiny(finetune=True, finetune_steps=2, finetune_examples=24, finetune_lr=1e20, grad_clip=0,
                        seed=1))
    assert r.finetune_accuracy == {}
    assert math.isfinite(r.us_accuracy) and r.fewshot
    assert "fine-tune of synth_shape diverged" in capfd.readouterr().err


def test_a_resumed_run_reports_the_final_loss_of_the_straight_run(tmp_path) -> None:
    # the checkpoint held no loss history: a run resumed at step 10 of 20 averaged its final
    # epoch's loss over steps 11-20 alone (5.481 where the straight run reported 5.499)
    import shutil

    from meta_study.train import run_trial

    from meta_study.train import smoke_config

    cfg = smoke_config(steps=20, eval_every=10, batch_size=16, seed=2, diagnostics=False, ds_tasks=("synth_shape",),
                       shots=(1,), fewshot_seeds=1, us_task_kwargs={"n_train": 640, "n_test": 48, "n_triples": 2},
                       ds_task_kwargs={"n_train_per_class": 2, "n_test": 24})
    kept = tmp_path / "at10"

    def keep(step, metrics, saved):
        if step == 10 and saved is not None:
            shutil.copytree(saved, kept)

    straight = run_trial(cfg, on_report=keep, checkpoint_dir=str(tmp_path / "ck"))
    resumed = run_trial(cfg, resume_from=str(kept), checkpoint_dir=str(tmp_path / "ck2"))
    a, b = straight.metrics()["train/final_loss"], resumed.metrics()["train/final_loss"]
    assert straight.pretrain.plan.steps_per_epoch > 10       # the last epoch spans the resume
    assert math.isclose(a, b, rel_tol=1e-6), (a, b)


def test_model_kwargs_the_trial_sets_itself_are_refused_in_words() -> None:
    # model_kwargs={"img_size": 64} failed every trial with "create_model() got multiple values
    # for keyword argument 'img_size'"
    from meta_study.train import TrainConfig

    for key, says in (("img_size", "set by img_size="), ("num_classes", "set by the task"),
                      ("in_chans", "set by the task"), ("pretrained", "built from scratch")):
        with pytest.raises(ValueError, match=rf"model_kwargs {key}=.*{says}"):
            TrainConfig(model_kwargs={key: 1})
    TrainConfig(model_kwargs={"patch_size": 8})       # a timm override stays allowed
