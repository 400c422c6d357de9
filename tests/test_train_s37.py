"""Defects found in the third review of the training engine (s37): each test failed before its fix."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from meta_study.train import create_model, load_imagefolder, smoke_config
from meta_study.train.data import _TASKS, TensorSplit, Task, register_task
from meta_study.train.optim import build_optimizer

torch.set_num_threads(1)


def _folder(tmp_path: Path, image: Image.Image, suffix: str, **save: object) -> Path:
    """An ImageFolder with ``image`` as the one train image of class a (class b: a plain PNG)."""
    for c in ("a", "b"):
        for split in ("train", "test"):
            (tmp_path / split / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / split / c / "x.png")
    image.save(tmp_path / "train" / "a" / f"x{suffix}", **save)
    (tmp_path / "train" / "a" / "x.png").unlink()
    return tmp_path


@pytest.mark.parametrize("scale", [1.0, 65535.0])
def test_a_float_tiff_is_scaled_or_refused_not_clipped(tmp_path: Path, scale: float) -> None:
    # PIL's convert("RGB") of a float (mode F) image casts and clips: a 0..1 ramp came out all 0
    # (mean 0.0002 of 255), a 0..65535 one 99.6% white
    ramp = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    root = _folder(tmp_path, Image.fromarray(ramp * np.float32(scale), mode="F"), ".tif")
    task = load_imagefolder(root, img_size=16)
    i = task.train.sources.index(str(root / "train" / "a" / "x.tif"))
    if scale == 1.0:
        px = task.train.pixels(np.array([i]))[0, 0].numpy().astype(float)
        np.testing.assert_allclose(px, ramp * 255, atol=1.01)
    else:
        with pytest.raises(ValueError, match=r"x\.tif: a float \(mode F\) image with values in \[0, 65535\]: no known scale") as e:
            task.train.pixels(np.array([i]))
        assert "\n" not in str(e.value)


def test_a_float_tiff_with_nan_is_refused_naming_it(tmp_path: Path) -> None:
    a = np.zeros((8, 8), np.float32)
    a[2, 3] = np.nan
    root = _folder(tmp_path, Image.fromarray(a, mode="F"), ".tif")
    task = load_imagefolder(root, img_size=8)
    i = task.train.sources.index(str(root / "train" / "a" / "x.tif"))
    with pytest.raises(ValueError, match=r"x\.tif: .*not finite"):
        task.train.pixels(np.array([i]))


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    # a phone photo stores its pixels sideways and says so in EXIF (orientation 6: rotate 90
    # degrees clockwise to view); it was fed to the model sideways
    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :16] = 255   # stored: white left half, black right half
    exif = Image.Exif()
    exif[0x0112] = 6
    root = _folder(tmp_path, Image.fromarray(a), ".jpg", exif=exif, quality=95)
    task = load_imagefolder(root, img_size=16)
    i = task.train.sources.index(str(root / "train" / "a" / "x.jpg"))
    px = task.train.pixels(np.array([i]))[0, 0].numpy().astype(float)
    # as viewed (rotated clockwise): white top half, black bottom half
    assert px[:6].mean() > 200 and px[-6:].mean() < 50, px.mean(1)


@pytest.mark.parametrize("lr, head_lr", [(1e39, None), (float("inf"), None), (float("nan"), None), (1e-3, 1e39)])
def test_an_lr_torch_cannot_hold_is_refused_in_one_line(lr: float, head_lr: float | None) -> None:
    # lr=1e39 (above float32's max) failed inside AdamW's step with 'value cannot be converted to
    # type float without overflow'
    model, _ = create_model("vit_tiny_cpu", num_classes=3, img_size=16, in_chans=3)
    with pytest.raises(ValueError, match=r"(head_)?lr=.*: must be a finite number") as e:
        build_optimizer(model, lr=lr, head_lr=head_lr)
    assert "\n" not in str(e.value)


def test_the_batch_size_trained_with_is_logged(tmp_path: Path) -> None:
    # a batch_size larger than the (data_fraction of the) US train split is capped to it; the
    # trial's params held the capped one but its logged config (MLflow's batch_size param,
    # the first value it gets) the configured one: nothing logged said 40, not 128
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> TensorSplit:
        return TensorSplit(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
                           np.arange(n) % 2)

    register_task("s37_small_us")(lambda img_size=16, seed=0: Task("s37_small_us", 2, 16, split(40), split(20)))
    try:
        cfg = smoke_config(us_task="s37_small_us", steps=2, batch_size=128, diagnostics=False,
                           ds_tasks=("synth_shape",), shots=(1,), fewshot_seeds=1, layerwise=False)
        from meta_study.train.trial import run_trial

        r = run_trial(cfg)
        assert r.params()["batch_size"] == 40
        assert r.metrics()["train/batch_size"] == 40.0
    finally:
        _TASKS.pop("s37_small_us", None)


def test_a_finetune_lr_torch_cannot_hold_is_refused_in_one_line() -> None:
    # finetune_lr=1e39 failed inside SGD's step: 'value cannot be converted to type float without overflow'
    from meta_study.train.optim import SGDW

    model, _ = create_model("vit_tiny_cpu", num_classes=3, img_size=16, in_chans=3)
    with pytest.raises(ValueError, match=r"^lr=1e\+39: must be a finite number"):
        SGDW([{"name": "all", "params": list(model.parameters()), "lr": 1e39, "weight_decay": 0.0}], lr=1e39)


def test_the_probe_at_l2_zero_survives_dead_features() -> None:
    # l2=0 (allowed, e.g. in l2_sweep) with features constant over the draw (dead ReLU units):
    # X^T X has zero eigenvalues, 1 / (0 + 0) made every weight NaN, and the 25-shot accuracy
    # of a separable 4-class task was 0.25 (chance), beside 1.0 at l2 = 1e-3
    from meta_study.train.fewshot import fewshot_lsr

    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 64)) * 3
    y, yt = np.repeat(np.arange(4), 30), np.repeat(np.arange(4), 50)
    x, xt = means[y] + rng.normal(size=(len(y), 64)), means[yt] + rng.normal(size=(len(yt), 64))
    x[:, :8] = xt[:, :8] = 0
    r = fewshot_lsr(x, y, xt, yt, 4, shots=(1, 25), seeds=(0, 1), l2=0.0, l2_sweep=(1e-3,))
    assert [a.accuracy for a in r] == [1.0, 1.0], r
    assert all(np.isfinite(list(a.sweep.values())).all() for a in r)


def test_a_finetune_lr_torch_cannot_hold_is_refused_before_pretraining(monkeypatch: pytest.MonkeyPatch) -> None:
    # finetune_lr=1e39 passed the config check and failed the trial in its fine-tuning, after
    # pre-training and the probes
    from meta_study.train import trial

    def pretrain(*a: object, **k: object) -> None:
        raise AssertionError("pre-trained before the finetune_lr was checked")

    monkeypatch.setattr(trial, "pretrain", pretrain)
    with pytest.raises(ValueError, match=r"^finetune_lr=1e\+39: must be"):   # the config refuses it now
        cfg = smoke_config(steps=1, finetune=True, finetune_lr=1e39, diagnostics=False, ds_tasks=("synth_shape",),
                           shots=(1,), us_task_kwargs={"n_train": 64, "n_test": 16},
                           ds_task_kwargs={"n_train_per_class": 2, "n_test": 12})
        trial.run_trial(cfg)


@pytest.mark.parametrize("top", [200, 63000])
def test_a_32_bit_integer_image_is_kept_in_8_bit_range_or_refused(tmp_path: Path, top: int) -> None:
    # a 16-bit PGM (and a 32-bit TIFF) opens in PIL's mode I: its 0..63000 ramp was clipped
    # at 255 by convert("RGB"), 99.6% white; within 0..255 it is 8-bit data
    ramp = np.linspace(0, top, 16 * 16).round().astype(np.int32).reshape(16, 16)
    root = _folder(tmp_path, Image.fromarray(ramp, mode="I"), ".tif")
    task = load_imagefolder(root, img_size=16)
    i = task.train.sources.index(str(root / "train" / "a" / "x.tif"))
    if top <= 255:
        assert (task.train.pixels(np.array([i]))[0, 0].numpy().astype(int) == ramp).all()
    else:
        with pytest.raises(ValueError, match=r"x\.tif: .*mode I.*\[0, 63000\]"):
            task.train.pixels(np.array([i]))


def test_a_float_image_a_rounding_step_outside_0_1_is_read(tmp_path: Path) -> None:
    a = np.linspace(-1e-4, 1 + 1e-4, 8 * 8, dtype=np.float32).reshape(8, 8)
    root = _folder(tmp_path, Image.fromarray(a, mode="F"), ".tif")
    task = load_imagefolder(root, img_size=8)
    i = task.train.sources.index(str(root / "train" / "a" / "x.tif"))
    px = task.train.pixels(np.array([i]))[0, 0].numpy()
    assert px.min() == 0 and px.max() == 255


def test_a_nan_test_fraction_is_refused_in_one_line(tmp_path: Path) -> None:
    # it failed in int(round(nan * n)): 'cannot convert float NaN to integer', naming nothing
    for c in ("a", "b"):
        for i in range(3):
            (tmp_path / c).mkdir(exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / c / f"{i}.png")
    with pytest.raises(ValueError, match=r"test_fraction=nan: must be a number in \(0, 1\)"):
        load_imagefolder(tmp_path, img_size=8, test_fraction=float("nan"))


def test_non_finite_features_are_refused_not_probed() -> None:
    # a NaN or inf feature made the probe's weights (or scores) NaN: 0.25, chance of 4 classes,
    # was returned as the few-shot accuracy of a separable task
    from meta_study.train.fewshot import FeatureSet, fewshot_features

    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 16)) * 3
    y, yt = np.repeat(np.arange(4), 5), np.repeat(np.arange(4), 10)
    x, xt = means[y] + rng.normal(size=(len(y), 16)), means[yt] + rng.normal(size=(len(yt), 16))
    xt[3, 2] = np.inf
    fs = FeatureSet("t", 4, x, y, np.arange(len(y)), y, xt, yt)
    with pytest.raises(ValueError, match=r"DS task t: 1 of 60 examples have pre-logits features that are not finite"):
        fewshot_features(fs, shots=(5,), seeds=(0,))


def _png_table(n: int) -> pa.Table:
    def png(v: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    return pa.table({"image": [png(10 * i) for i in range(n)], "label": [i % 2 for i in range(n)]})


@pytest.mark.parametrize("layout", ["{split}-00000-of-00001.parquet", "{split}/0000.parquet"])
def test_a_parquet_directory_of_several_splits_is_refused(tmp_path: Path, layout: str) -> None:
    # a Hugging Face download (data/train-*.parquet beside data/test-*.parquet) named as the
    # train table was read whole: 20 train + 10 test rows, 6 of them held out at random, the
    # official test split trained on
    import pyarrow.parquet as pq

    from meta_study.train import load_parquet

    for split, n in (("train", 20), ("test", 10)):
        (tmp_path / layout.format(split=split)).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_png_table(n), tmp_path / layout.format(split=split))
    with pytest.raises(ValueError, match=r"its files hold several splits \(test, train"):
        load_parquet(tmp_path, name="x", img_size=8)
    t = load_parquet(tmp_path / layout.format(split="train"), tmp_path / layout.format(split="test"), name="x",
                     img_size=8)
    assert (len(t.train), len(t.test)) == (20, 10)


def test_a_seed_torch_cannot_take_is_refused_naming_it() -> None:
    # TrainConfig took seed=2**70 (a hash as a seed); the trial failed in torch.manual_seed with
    # 'Overflow when unpacking long long'
    from meta_study.train.trial import run_trial

    with pytest.raises(ValueError, match=r"^seed=1180591620717411303424: must be"):   # the config refuses it now
        cfg = smoke_config(seed=2**70, steps=1, diagnostics=False, ds_tasks=("synth_shape",), shots=(1,),
                           us_task_kwargs={"n_train": 64, "n_test": 16},
                           ds_task_kwargs={"n_train_per_class": 2, "n_test": 12})
        run_trial(cfg)


@pytest.mark.parametrize("kw, want", [({"lr": 1e39}, "lr=1e+39: must be at most"),
                                      ({"finetune_lr": 1e39}, "finetune_lr=1e+39: must be at most"),
                                      ({"head_wd": 1e39}, "head_wd=1e+39: must be at most"),
                                      ({"seed": 2**70}, "below 2**64")])
def test_the_config_refuses_values_torch_cannot_hold_before_any_trial(kw, want):
    # refused when the config is built (the sweep's check before Ray builds one), not inside
    # each trial's first optimizer step or torch.manual_seed
    from meta_study.train.loop import TrainConfig

    with pytest.raises(ValueError, match=re.escape(want)):
        TrainConfig(**kw)


def test_ingest_stores_the_batch_size_trained_with_not_the_configured_one() -> None:
    # a trial's batch_size param is its config (128); with 40 training images it trained at 40
    # and logs train/batch_size=40.0 with its final metrics: the store said 128
    from meta_study.ingest.mlflow_runs import RunExpander, RunRecord, default_mapping
    from meta_study.schema import TRAINED_BATCH_SIZE_KEY

    metrics = {"us/jft/top1": 0.4, "ds/pets/10shot/top1": 0.3}
    recs = [RunRecord("capped", "1", "FINISHED", 1, 2, None, {**metrics, TRAINED_BATCH_SIZE_KEY: 40.0},
                      {"batch_size": "128"}, {}),
            RunRecord("plain", "1", "FINISHED", 1, 2, None, metrics, {"batch_size": "64"}, {})]
    out = RunExpander(default_mapping(), "s").expand_runs(recs, {"1": "e"})
    rows = out.rows.set_index("run_id")
    assert (int(rows.loc["capped", "batch_size"]), int(rows.loc["plain", "batch_size"])) == (40, 64)   # validated later
    assert dict(rows.loc["capped", "extra"]).get("batch_size_configured") == "128", rows.loc["capped", "extra"]
    assert "batch_size_configured" not in dict(rows.loc["plain", "extra"] or [])
