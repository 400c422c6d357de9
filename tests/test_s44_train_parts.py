"""Defects found in the s44 review of the training parts (disk, optim): each test failed before its fix."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from meta_study.train import load_imagefolder, load_parquet
from meta_study.train.disk import EncodedSplit, _to_8bit
from meta_study.train.optim import WarmupLinearDecay, build_schedule

torch.set_num_threads(1)


def _png(value: int = 90) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(b, "PNG")
    return b.getvalue()


# --- 16-bit images in PIL's mode I -----------------------------------------------------------


def test_a_16_bit_pgm_is_scaled_not_refused() -> None:
    # PIL opens a PGM with maxval > 255 in mode I, scaled to 0..65535: it was refused as "a 32-bit
    # integer (mode I) image ... no known scale", though its scale is the format's
    a = np.array([[0, 30000, 65535, 1000]], dtype=">u2").repeat(4, 0)
    pgm = b"P5\n4 4\n65535\n" + a.tobytes()
    assert Image.open(io.BytesIO(pgm)).mode == "I"
    x = EncodedSplit([pgm], [0], 4, 0).pixels(np.array([0]))[0].numpy()
    assert (x == x[0]).all()   # gray: the same in every channel
    assert x[0, 0].tolist() == [0, 117, 255, 4]   # value / 257


def test_a_16_bit_png_read_in_mode_i_is_scaled() -> None:
    # an older Pillow (within the project's pillow>=9.4) opens a 16-bit grayscale PNG in mode I,
    # not I;16: every such PNG with a pixel above 255 was refused
    im = Image.fromarray(np.array([[0, 65535], [32896, 257]], dtype=np.int32), mode="I")
    im.format = "PNG"
    assert np.asarray(_to_8bit(im)).tolist() == [[0, 255], [128, 1]]


def test_a_32_bit_tiff_in_mode_i_is_still_refused() -> None:
    im = Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I")
    im.format = "TIFF"
    with pytest.raises(ValueError, match=r"mode I.*\[0, 70000\]: no known scale"):
        _to_8bit(im)


# --- empty image files refused when the data is loaded, not after pre-training ----------------


def _imagefolder(root: Path) -> None:
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                (root / split / c / f"{i}.png").write_bytes(_png())


def test_an_empty_image_file_of_a_test_split_is_refused_at_load(tmp_path: Path) -> None:
    # it failed at the first batch that held it: for a DS task's test split, in the probe after
    # the whole pre-training
    _imagefolder(tmp_path)
    (tmp_path / "test" / "b" / "1.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"test: 1 image file\(s\) are empty \(0 bytes\), e\.g\. .*b/1\.png; "
                                         r"re-copy or remove them"):
        load_imagefolder(tmp_path, img_size=8)


def test_an_empty_image_file_of_a_train_split_is_refused_at_load(tmp_path: Path) -> None:
    _imagefolder(tmp_path)
    (tmp_path / "train" / "a" / "0.png").write_bytes(b"")
    (tmp_path / "train" / "b" / "0.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train: 2 image file\(s\) are empty \(0 bytes\), e\.g\. .*a/0\.png"):
        load_imagefolder(tmp_path, img_size=8)


def test_image_folders_without_empty_files_still_load(tmp_path: Path) -> None:
    _imagefolder(tmp_path)
    (tmp_path / "train" / "a" / "notes.txt").write_bytes(b"")   # not an image: ignored as before
    task = load_imagefolder(tmp_path, img_size=8)
    assert (len(task.train), len(task.test)) == (4, 4)


def test_an_empty_image_row_of_a_table_is_refused_at_load() -> None:
    train = pa.table({"image": [_png(), _png(), _png(), _png()], "label": [0, 0, 1, 1]})
    test = pa.table({"image": [_png(), b"", _png()], "label": [0, 1, 1]})
    with pytest.raises(ValueError, match=r"a table of 3 rows: image column 'image': 1 empty image\(s\) \(0 bytes\) "
                                         r"of 3 rows, e\.g\. row 1; drop those rows"):
        load_parquet(train, test, name="t", img_size=8)


def test_an_empty_image_in_a_struct_column_is_refused_at_load() -> None:
    img = pa.array([{"bytes": _png(), "path": None}] * 3 + [{"bytes": b"", "path": "x.png"}])
    with pytest.raises(ValueError, match=r"1 empty image\(s\) \(0 bytes\) of 4 rows, e\.g\. row 3"):
        load_parquet(pa.table({"image": img, "label": [0, 1, 0, 1]}), name="t", img_size=8, test_fraction=0.5)


# --- warm-up longer than the run --------------------------------------------------------------


def test_a_warmup_longer_than_the_run_is_refused() -> None:
    # warm-up 100 of 50 steps never reached the peak lr: its last update ran at lr / 2
    with pytest.raises(ValueError, match=r"warmup_steps=100: must be in \[0, total_steps=50\]"):
        WarmupLinearDecay(100, 50)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    with pytest.raises(ValueError, match=r"warmup_steps=-1"):
        build_schedule(opt, 10, -1)


def test_warmups_within_the_run_are_kept() -> None:
    f = WarmupLinearDecay(4, 12)
    assert [f(t) for t in range(13)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375,
                                                       0.25, 0.125, 0.0])
    assert WarmupLinearDecay(5, 5)(4) == 1.0 and WarmupLinearDecay(0, 3)(0) == 1.0
    WarmupLinearDecay(1, 0)   # a run of 0 steps (finetune(steps=0)) makes no update: no error


# --- PPM / PGM image folders (GTSRB) ----------------------------------------------------------


def test_ppm_and_pgm_images_of_an_image_folder_are_read(tmp_path: Path) -> None:
    # GTSRB's class folders hold .ppm images (torchvision's ImageFolder reads them): they were
    # skipped, "no images in class subdirectories"; a folder mixing them with PNGs lost them silently
    for split in ("train", "test"):
        for c, v in (("a", 40), ("b", 200)):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(tmp_path / split / c / "0.ppm")
            Image.fromarray(np.full((8, 8), v, np.uint8)).save(tmp_path / split / c / "1.PGM", "PPM")
    task = load_imagefolder(tmp_path, img_size=8)
    assert (len(task.train), len(task.test)) == (4, 4)
    px = task.train.pixels(np.arange(4)).numpy()
    assert [int(px[i].mean()) for i in range(4)] == [40, 40, 200, 200]
    assert task.train.labels.tolist() == [0, 0, 1, 1]


# --- an undecodable row is named without a buffer address ------------------------------------


def test_an_undecodable_row_is_named_without_a_memory_address() -> None:
    # "row 4: the image cannot be decoded (UnidentifiedImageError: cannot identify image file
    # <_io.BytesIO object at 0x7f3a...>)": the address differs per run and names nothing
    t = load_parquet(pa.table({"image": [_png(), _png(), b"garbage", _png()], "label": [0, 1, 0, 1]}),
                     pa.table({"image": [_png(), _png()], "label": [0, 1]}), name="x", img_size=8)
    with pytest.raises(ValueError, match=r"a table of 4 rows, row 2: the image cannot be decoded "
                                         r"\(UnidentifiedImageError: cannot identify image file of these bytes\)$"):
        t.train.pixels(np.arange(4))
