"""Real datasets on disk as tasks: ImageFolder directories and Parquet / Arrow tables of encoded images.

Both return the same :class:`~meta_study.train.data.Task` as the procedural suite. Images
are decoded with PIL per batch, turned as their EXIF orientation says (a phone photo is stored
sideways), converted to RGB (16-bit and 0..1 float images scaled, see :func:`_to_8bit`) and
resized to ``img_size`` x ``img_size`` (bilinear, aspect ratio not kept: big_vision's few-shot
``resize``), then cached as uint8 when the split fits in ``cache_mb``. No augmentation is applied.

To name a dataset in a sweep config, register it::

    register_task("pets")(lambda img_size=224, seed=0: load_imagefolder("/data/pets", name="pets",
                                                                        img_size=img_size, seed=seed))
"""

from __future__ import annotations

import glob
import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch

from .data import CachedSplit, Task

if TYPE_CHECKING:
    from PIL import Image

#: torchvision's ImageFolder extensions and more: GTSRB ships .ppm images, the ORL faces .pgm (both were
#: skipped: "no images in class subdirectories")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
                  ".pnm")
#: Test folder names, the first present wins: Kaggle's train/ + valid/ layout held out 20% of
#: train instead (valid/ was named a split but never used).
TEST_DIRS = ("test", "testing", "val", "valid", "validation", "eval", "evaluation")
#: Folder names of a split, matched case-insensitively: a root whose folders are named so holds
#: splits, not classes (Fruits-360's Training/ and Test/ became a 2-class task).
TRAIN_DIRS = ("train", "training")
SPLIT_NAMES = frozenset(TRAIN_DIRS + TEST_DIRS)
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class EncodedSplit(CachedSplit):
    """Images stored encoded: file paths or raw bytes (PNG, JPEG, ...), decoded per batch.

    Decoding costs ~0.1-1 ms per small image on one core; with ``num_workers`` > 0 the training
    loop decodes in DataLoader workers.
    """

    def __init__(self, sources: Sequence[str | bytes], labels: np.ndarray, img_size: int, cache_mb: float = 1024.0,
                 rows: Sequence[int] | None = None, where: str = "the table"):
        super().__init__(len(sources), (3, img_size, img_size), cache_mb)
        self.sources = list(sources)
        # how a decoding error names an encoded image: its row in ``where`` (the source table)
        self.rows, self.where = (np.arange(len(self.sources)) if rows is None else np.asarray(rows)), where
        self.labels = np.asarray(labels, dtype=np.int64)
        self.img_size = img_size

    def _decode(self, src: str | bytes) -> np.ndarray:
        from PIL import Image, ImageOps

        with Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src) as im:
            # as viewed: a phone photo stores its pixels sideways with an EXIF orientation tag
            try:
                ImageOps.exif_transpose(im, in_place=True)   # in place: no copy of a large photo
            except Exception:   # noqa: BLE001 - an unreadable EXIF block: no orientation to apply
                pass
            im = _to_8bit(im).convert("RGB").resize((self.img_size, self.img_size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)

    def _produce(self, idx: np.ndarray) -> torch.Tensor:
        arr = np.stack([self._decode_named(int(i)) for i in idx])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def _decode_named(self, i: int) -> np.ndarray:
        """Example ``i`` decoded; an image PIL cannot read is a ValueError naming its file or row
        (a table's error named a BytesIO object at some address)."""
        src = self.sources[i]
        what = f"{self.where}, row {int(self.rows[i])}" if isinstance(src, (bytes, bytearray)) else str(src)
        try:
            return self._decode(src)
        except UnscaledImageError as e:   # decoded, but its values have no known 8-bit scale
            raise ValueError(f"{what}: {e}") from e
        except Exception as e:   # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError, ...
            # PIL names an encoded row by its buffer: "cannot identify image file <_io.BytesIO
            # object at 0x7f...>", an address that means nothing to anyone
            why = _BUFFER_REPR.sub("of these bytes", str(e).splitlines()[0] if str(e) else "")
            raise ValueError(f"{what}: the image cannot be decoded ({type(e).__name__}: {why})") from e


#: Formats whose mode-I images hold 16-bit samples (0..65535), scaled like I;16 (:func:`_to_8bit`).
SIXTEEN_BIT_I_FORMATS = frozenset({"PNG", "PPM"})


class UnscaledImageError(ValueError):
    """An image whose pixel values have no known 8-bit scale (see :func:`_to_8bit`)."""


def _to_8bit(im: "Image.Image") -> "Image.Image":
    """A 16-bit grayscale image (PNG / TIFF, modes I;16, I;16B, ...; a 16-bit PGM, or a PNG read
    by an older Pillow, in mode I) as 8-bit L, scaled by 1/257; a float one (mode F, e.g. a float
    TIFF) with values in [0, 1] scaled by 255; other images as they are. PIL's convert("RGB") clips at 255 and casts floats: a 0..65535 ramp came out 99.6%
    white, a 0..1 float one black.

    Raises:
        UnscaledImageError: a float image with values outside [0, 1] (beyond half an 8-bit step)
            or not finite, or a 32-bit integer one (mode I: a 32-bit TIFF) with values
            outside [0, 255]: no known scale, and PIL's clipping turned them white.
    """
    from PIL import Image

    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise UnscaledImageError("a float (mode F) image with values that are not finite (NaN or inf)")
        tol = 0.5 / 255.0   # rounding or resampling overshoot of a 0..1 image
        if a.size and (a.min() < -tol or a.max() > 1 + tol):
            raise UnscaledImageError(f"a float (mode F) image with values in [{a.min():g}, {a.max():g}]: no "
                                     "known scale (floats are read as 0..1); save it as 8- or 16-bit integers")
        return Image.fromarray((a.clip(0, 1) * 255.0).round().astype(np.uint8))
    if im.mode == "I" and im.format in SIXTEEN_BIT_I_FORMATS:
        # 16-bit data in a 32-bit mode: a PGM with maxval > 255 (PIL scales it to 0..65535), and a
        # 16-bit grayscale PNG read by an older Pillow (newer ones give I;16). Refused as "no known
        # scale" when any pixel passed 255, though its scale is the format's
        a = np.asarray(im).astype(np.float64)
        return Image.fromarray((a.clip(0, 65535) / 257.0).round().astype(np.uint8))
    if im.mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 255):
            raise UnscaledImageError(f"a 32-bit integer (mode I) image with values in [{a.min()}, {a.max()}]: no "
                                     "known scale (0..255 is read as 8-bit); save it as 8- or 16-bit integers")
        return im
    if not im.mode.startswith("I;16"):
        return im
    a = np.asarray(im).astype(np.float64)
    return Image.fromarray((a.clip(0, 65535) / 257.0).round().astype(np.uint8))


def _train_lacks(where: object, labels: np.ndarray, test_labels: np.ndarray, classes: Sequence[object]) -> None:
    """Refuse a held-out split that took every example of a class: the model never trains on it,
    and its test examples cap the accuracy without a word.

    Raises:
        ValueError: naming ``where`` (the data's path) and the classes.
    """
    missing = sorted(set(test_labels.tolist()) - set(labels.tolist()))
    if missing:
        names = [str(classes[i]) for i in missing]   # the label values, as the data holds them
        raise ValueError(f"{where}: the held-out test split took every example of class(es) "
                         f"{', '.join(names[:5])}, leaving none to train on; add examples, give a test split "
                         "or another seed / test_fraction")


def _disjoint(where: str, what: str, train: Sequence[str], test: Sequence[str], same: bool = False) -> None:
    """Refuse a test split that reads some of the train split's files (the same path given twice,
    overlapping globs, test_dir naming the train folder): its examples were trained on, and the
    accuracy measured on them reported as held-out without a word.

    Raises:
        ValueError: naming ``where`` (the test split), how many and one of them.
    """
    te = set(map(os.path.realpath, test))
    shared = sorted(set(map(os.path.realpath, train)) & te)
    if same or shared:
        n = "the test table is the train table" if same and not shared else \
            f"every {what} of the test split is in the train split too" if len(shared) == len(te) else \
            f"{len(shared)} of the test split's {len(te)} {what}s are in the train split too"
        raise ValueError(f"{where}: {n}{f' (e.g. {shared[0]})' if shared else ''}: its examples would be trained "
                         "on; give disjoint train and test data")


def _check_cache_mb(where: object, cache_mb: object) -> None:
    """Refuse a cache size that is not a number of MB >= 0, naming ``where`` (the data's path):
    cache_mb="512" (a YAML string in ds_task_kwargs) failed in CachedSplit with "'<=' not supported
    between instances of 'int' and 'str'", naming neither the dataset nor the key."""
    if isinstance(cache_mb, bool) or not isinstance(cache_mb, (int, float, np.integer, np.floating)) \
            or not cache_mb >= 0:
        raise ValueError(f"{where}: cache_mb={cache_mb!r}: must be a number of MB >= 0 (0: decode every batch)")


def _split_off(n: int, test_fraction: float, seed: int, where: object) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (train, test) indices: a fixed random ``test_fraction`` goes to test.

    Raises:
        ValueError: either side would be empty (named by ``where``, the data's path): an empty
            test split reported US accuracy 0.0 and broke the few-shot probe.
    """
    if not (isinstance(test_fraction, (int, float)) and 0 <= test_fraction <= 1):   # NaN: int(round(nan)) failed
        raise ValueError(f"{where}: test_fraction={test_fraction!r}: must be a number in (0, 1)")
    perm = np.random.default_rng([seed, 0x5E11]).permutation(n)
    k = int(round(test_fraction * n))
    if not 0 < k < n:
        raise ValueError(f"{where}: test_fraction={test_fraction:g} of {n} images holds out "
                         f"{'none' if k <= 0 else 'all of them'}; give a test split or another test_fraction")
    return np.sort(perm[k:]), np.sort(perm[:k])


def _label_ids(names: Sequence[object], classes: Sequence[object] | None) -> tuple[np.ndarray, list[object]]:
    """Integer labels: each value's index in ``classes`` (default: the values' sorted set).

    Integer labels are numbered so too: ids 0..K-1 keep their values, and sparse ones (0, 1,
    999999) no longer make a 1,000,000-way head (its parameters inflated the model-size axis).

    Raises:
        ValueError: values not among ``classes`` (a test label the train split lacks).
    """
    values = list(names)
    classes = sorted(set(values)) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = set(values) - set(index)
    if unknown:
        shown = sorted(unknown) if all(isinstance(v, (int, np.integer)) for v in unknown) \
            else sorted(map(str, unknown))
        raise ValueError(f"labels {shown[:5]} not among the train classes")
    return np.array([index[v] for v in values], dtype=np.int64), classes


def _scan_folder(root: Path) -> tuple[list[str], list[str]]:
    """(paths, class names) of ``root/<class>/**/<image>``, sorted; ValueError for a class folder
    without images (when others have some)."""
    paths, names, empty, zero = [], [], [], []
    for cls in sorted(d.name for d in root.iterdir() if d.is_dir() and not _skipped(d.name)):
        found = len(paths)
        for p in sorted((root / cls).rglob("*")):
            # regular files only (a folder named x.png, a FIFO that blocks on open), and no hidden
            # ones: macOS's ._x.png beside every image, .ipynb_checkpoints/; each was decoded at
            # its first batch and crashed pre-training
            if p.suffix.lower() in IMAGE_SUFFIXES and not any(_skipped(part) for part in p.relative_to(root / cls).parts):
                size = _file_size(p)
                if size is None:
                    continue
                if size == 0:
                    zero.append(str(p))
                paths.append(str(p))
                names.append(cls)
        if len(paths) == found:
            empty.append(cls)
    if zero:
        # an interrupted copy or download: it failed at the first batch that held it, for a DS
        # task only after the whole pre-training
        raise ValueError(f"{root}: {len(zero)} image file(s) are empty (0 bytes), e.g. {zero[0]}; re-copy or "
                         "remove them")
    if empty and paths:   # no images at all: the callers' own error
        # an interrupted copy: the class was dropped without a word, a 3-class dataset trained as
        # a 2-class one (torchvision's ImageFolder refuses it too)
        raise ValueError(f"{root}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty[:5])} "
                         f"hold{'' if len(empty) > 1 else 's'} no images ({', '.join(IMAGE_SUFFIXES)}); fill or "
                         "remove it")
    return paths, names


def _file_size(p: Path) -> int | None:
    """Size in bytes of ``p`` if it is a regular file (symlinks followed), else None."""
    try:
        st = p.stat()
    except OSError:   # a dangling symlink, a file removed meanwhile
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _skipped(name: str) -> bool:
    """A hidden file or folder, or the __MACOSX folder a macOS zip adds: never a class or an image."""
    return name.startswith(".") or name == "__MACOSX"


def _subdir(root: Path, given: str | None, defaults: Sequence[str], what: str) -> Path | None:
    """``root/given`` (an error if missing), else the first of ``defaults`` present in any case."""
    if given is not None:
        if not (root / given).is_dir():
            raise FileNotFoundError(f"{root / given}: no such {what} directory")
        return root / given
    by_name = {d.name.lower(): d for d in sorted(root.iterdir()) if d.is_dir()} if root.is_dir() else {}
    return next((by_name[d] for d in defaults if d in by_name), None)


def load_imagefolder(root: str | os.PathLike, *, name: str | None = None, img_size: int = 224, seed: int = 0,
                     train_dir: str | None = None, test_dir: str | None = None, test_fraction: float = 0.2,
                     cache_mb: float = 1024.0) -> Task:
    """A task from ``root/train/<class>/*.png`` and ``root/test/<class>/...`` (torchvision layout).

    Args:
        root: the dataset directory.
        name: task name (default: the directory's name).
        img_size: images are resized to this square.
        seed: which examples go to test when there is no test directory.
        train_dir: the training subdirectory (an error if missing); default the first of
            train/training in any case, and without one ``root`` itself holds the class folders
            (an error if some of them are named like splits: test, val, ...).
        test_dir: the test subdirectory (an error if missing); default the first of
            test/testing/val/valid/validation/eval/evaluation, in any case, that exists beside
            the training one; a ValueError when it shares images with train (test_dir=train_dir).
            Without one, a stratification-free random ``test_fraction`` of train is held out.
        test_fraction: used only without a test directory.
        cache_mb: keep decoded images in memory when a split fits.

    Returns:
        A :class:`Task`; classes are the sorted train class-folder names.
    """
    root = Path(root)
    _check_cache_mb(root, cache_mb)
    tr_root = _subdir(root, train_dir, TRAIN_DIRS, "train") or root
    te_root = _subdir(root, test_dir, TEST_DIRS, "test")
    if tr_root == root:
        splits = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name.lower() in SPLIT_NAMES) \
            if root.is_dir() else []
        if splits:
            raise ValueError(f"{root}: folders {', '.join(splits)} look like splits, not classes; name the "
                             "training one (train_dir=...) and the test one (test_dir=...)")
    paths, names = _scan_folder(tr_root)
    if not paths:
        raise FileNotFoundError(f"{tr_root}: no images in class subdirectories")
    labels, classes = _label_ids(names, sorted(set(names)))
    if te_root is not None:
        te_paths, te_names = _scan_folder(te_root)
        if not te_paths:   # Kaggle's test/*.jpg: 0 test images, US accuracy 0.0, a torch.cat error as DS
            raise ValueError(f"{te_root}: no images in class subdirectories (an unlabeled test set?); name a "
                             "labelled test folder with test_dir=..., or move this one aside to hold out "
                             "test_fraction of train")
        tr_real, te_real = os.path.realpath(tr_root), os.path.realpath(te_root)
        if os.path.commonpath([tr_real, te_real]) in (tr_real, te_real):   # one folder holds the other
            _disjoint(str(te_root), "image", paths, te_paths)   # a realpath per image: only then
        try:
            te_labels, _ = _label_ids(te_names, classes)
        except ValueError as e:   # a test class folder the train folder lacks (or holds no images in)
            raise ValueError(f"{te_root}: {e} (the class folders with images in {tr_root})") from None
    else:
        tr, te = _split_off(len(paths), test_fraction, seed, tr_root)
        te_paths, te_labels = [paths[i] for i in te], labels[te]
        paths, labels = [paths[i] for i in tr], labels[tr]
        _train_lacks(tr_root, labels, te_labels, classes)
    return Task(name or root.resolve().name, len(classes), img_size,   # "." has no name of its own
                EncodedSplit(paths, labels, img_size, cache_mb), EncodedSplit(te_paths, te_labels, img_size, cache_mb),
                description=f"ImageFolder {root} ({len(classes)} classes)")


def imagefolder_class_count(root: str | os.PathLike, train_dir: str | None = None) -> int:
    """How many classes :func:`load_imagefolder` would find in ``root``'s training split: its class
    folders listed, not scanned for images (ImageNet-21k: one listing of 21,843 names, not 14M
    files), with the loader's own split folder and skipped names. ValueError where there are none."""
    top = Path(root)
    tr = _subdir(top, train_dir, TRAIN_DIRS, "train") or top
    with os.scandir(tr) as it:   # scandir: the entry's type, no stat per entry (NFS)
        names = [e.name for e in it if e.is_dir()]
    n = sum(1 for name in names if not _skipped(name) and not (tr == top and name.lower() in SPLIT_NAMES))
    if n < 1:
        raise ValueError(f"{tr}: no class folders")
    return n


def parquet_class_count(train: str, label_column: str = "label") -> int:
    """The distinct labels of a Parquet / Arrow training table's ``label_column``, read alone
    (with the loader's own reader: globs, IPC, Hugging Face folders)."""
    import pyarrow.compute as pc

    table, _ = _read_table(train, [label_column])
    return int(pc.count_distinct(table.column(label_column)).as_py())


def _read_table(src: str | os.PathLike | pa.Table, columns: list[str]) -> tuple[pa.Table, list[str]]:
    """A Parquet file/directory/glob, an Arrow IPC (.arrow / .feather) file, or a table; with the
    files it was read from (none for a table)."""
    if isinstance(src, pa.Table):
        _has_columns(src.column_names, columns, _source(src))
        return src.select(columns), []
    s = str(src)
    files = sorted(glob.glob(s)) if any(c in s for c in "*?[") else [s]
    if len(files) == 1 and os.path.isdir(s) and not glob.glob(os.path.join(s, "**", "*.parquet"), recursive=True):
        # a Hugging Face ``save_to_disk`` directory (data-00000-of-00002.arrow, ..., state.json):
        # read as a Parquet dataset it failed on the first .arrow file
        files = _hf_arrow_files(s) or files
    if not files:
        raise FileNotFoundError(f"{s}: no files match")
    if all(f.endswith((".arrow", ".feather", ".ipc")) for f in files):
        _one_split(s, files)
        tables = [_read_ipc(f) for f in files]
        for f, t in zip(files, tables):
            _has_columns(t.column_names, columns, f)
        return pa.concat_tables([t.select(columns) for t in tables]), files
    ds = pads.dataset(files if len(files) > 1 else files[0], format="parquet")
    _one_split(s, ds.files)
    _has_columns(ds.schema.names, columns, s)
    return ds.to_table(columns=columns), list(ds.files)


def _hf_arrow_files(d: str) -> list[str]:
    """The data files of a Hugging Face ``save_to_disk`` directory: its ``*.arrow`` files but the
    ``cache-*.arrow`` ones. ``.map`` / ``.filter`` on a dataset loaded from the directory write
    their results beside its data files (``cache-<fingerprint>[_00000_of_00004].arrow``), rows that
    were read as more examples (each one twice after a map, the filtered-out ones back).

    Raises:
        ValueError: a ``DatasetDict`` directory (``dataset_dict.json``, one folder per split), named:
            read as one table it failed on dataset_dict.json ("Parquet magic bytes not found").
    """
    if os.path.isfile(os.path.join(d, "dataset_dict.json")):
        splits = sorted(e.name for e in os.scandir(d) if e.is_dir() and not _skipped(e.name))
        raise ValueError(f"{d}: a Hugging Face DatasetDict (dataset_dict.json), one folder per split "
                         f"({', '.join(splits)}); give the train split's folder and the test split's (e.g. "
                         f"{os.path.join(d, 'train')} and {os.path.join(d, 'test')})")
    return sorted(f for f in glob.glob(os.path.join(d, "*.arrow")) if not os.path.basename(f).startswith("cache-"))


def _one_split(where: str, files: Sequence[str]) -> None:
    """Refuse files named as different splits (``train-*.parquet`` beside ``test-*.parquet``, or
    ``train/`` beside ``validation/``: a Hugging Face download) read as one table: the test split
    was trained on, or mixed into the held-out one, without a word.

    Raises:
        ValueError: naming ``where`` and the splits found.
    """
    if len(files) < 2:
        return
    base = os.path.commonpath([os.path.abspath(f) for f in files])
    found: dict[str, str] = {}
    for f in files:
        parts = Path(os.path.relpath(os.path.abspath(f), base)).parts
        tokens = [*parts[:-1], parts[-1].replace("_", "-").replace(".", "-").split("-")[0]]
        for t in tokens:
            if t.lower() in SPLIT_NAMES:
                found.setdefault(t.lower(), f)
                break
    if len(found) > 1:
        raise ValueError(f"{where}: its files hold several splits ({', '.join(sorted(found))}: e.g. "
                         f"{', '.join(found[k] for k in sorted(found))}); name each split's files (train=..., test=...)")


def _has_columns(names: Sequence[str], columns: Sequence[str], where: str) -> None:
    """Refuse a table without the image or label column in one line, naming the columns it has
    (pyarrow's error was a multi-line schema dump, or a KeyError)."""
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{where}: no column {missing[0]!r}; its columns are {', '.join(names)} (name the image and "
                         "label columns with image_column=... and label_column=...)")


def _read_ipc(path: str) -> pa.Table:
    # a FIFO named x.arrow blocked in memory_map for good, waiting for a writer
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file (a pipe, a device, a folder?)")
    # the file format (.feather v2) starts with ARROW1; Hugging Face `save_to_disk` writes the
    # stream format. A damaged file is named: pyarrow's error was "Not an Arrow file" alone (a
    # truncated stream, retried as the file format, said so too)
    with pa.memory_map(path) as src:
        is_file_format = src.read(6) == b"ARROW1"
        src.seek(0)
        try:
            return (pa.ipc.open_file(src) if is_file_format else pa.ipc.open_stream(src)).read_all()
        except (pa.ArrowInvalid, OSError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{path}: not a readable Arrow IPC {'file' if is_file_format else 'stream'} "
                             f"(damaged, or another format?): {why}") from None


def _image_bytes(col: pa.ChunkedArray, where: str = "image column") -> list[bytes | str]:
    """Encoded images from a binary column or a struct with a ``bytes`` field (HF ``Image``);
    a struct row whose ``bytes`` is null gives its ``path`` (HF keeps local files it did not
    embed so), decoded from the file.

    Raises:
        ValueError: rows with no image (null) or an empty one (0 bytes), counted, named by
            ``where``: one crashed pre-training at the first batch that held it ('NoneType' object
            has no attribute 'read'), or the probe after it.
    """
    if pa.types.is_struct(col.type):
        paths = [None] * len(col)
        if col.type.get_field_index("path") >= 0:
            paths = pa.chunked_array([c.field("path") for c in col.chunks]).to_pylist()
        null = pa.chunked_array([c.is_null() for c in col.chunks]).to_pylist()   # a null struct
        col = _unviewed(pa.chunked_array([c.field("bytes") for c in col.chunks]))
        if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
            raise TypeError(f"{where} has type {col.type}; expected binary or struct<bytes: binary>")
        out = [None if n else b if b is not None else p for n, b, p in zip(null, col.to_pylist(), paths)]
    else:
        col = _unviewed(col)
        if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
            raise TypeError(f"{where} has type {col.type}; expected binary or struct<bytes: binary>")
        out = col.to_pylist()
    nulls = sum(v is None for v in out)
    if nulls:
        raise ValueError(f"{where}: {nulls} null image(s) of {len(out)} rows (no bytes, no path); drop those rows")
    # b"": a failed download or encode; it failed at the first batch that held it, for a DS task
    # only after the whole pre-training
    blank = [i for i, v in enumerate(out) if isinstance(v, (bytes, bytearray)) and not v]
    if blank:
        raise ValueError(f"{where}: {len(blank)} empty image(s) (0 bytes) of {len(out)} rows, e.g. row {blank[0]}; "
                         "drop those rows")
    return out


def _unviewed(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A ``string_view`` / ``binary_view`` column (polars writes them to Arrow IPC files, pyarrow
    >= 16 reads them) as ``large_string`` / ``large_binary``: string labels were refused as "type
    string_view; class labels must be integers or names (strings)"."""
    t = col.type
    if getattr(pa.types, "is_string_view", lambda _: False)(t):
        return col.cast(pa.large_string())
    if getattr(pa.types, "is_binary_view", lambda _: False)(t):
        return col.cast(pa.large_binary())
    return col


def _labels_of(table: pa.Table, column: str, where: str) -> list[object]:
    """The label column as Python values: ints, bools or strings (a float column of whole
    numbers gives ints, so 2.0 is class 2 as in an integer test table).

    Raises:
        ValueError: naming ``where`` and the column: null labels, counted (they crashed in
            sorted(): '<' not supported between 'NoneType' and 'int'); NaN floats (each became a
            class of its own, NaN != NaN); non-integer or infinite floats (a regression target,
            trained as classes); negative ids (Hugging Face marks unlabelled rows -1); a type
            that is not a number or a string (a list column crashed: unhashable type: 'list').
    """
    col = table.column(column)
    what = f"{where}: label column {column!r}"
    if col.null_count:
        raise ValueError(f"{what} has {col.null_count} null label(s) of {len(col)} rows (unlabelled examples?); "
                         "drop those rows")
    if pa.types.is_dictionary(col.type):   # pandas' category dtype
        col = col.cast(col.type.value_type)
    col = _unviewed(col)
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t)):
        raise ValueError(f"{what} has type {t}; class labels must be integers or names (strings)")
    if pa.types.is_floating(t):
        a = col.to_numpy().astype(np.float64)
        if np.isnan(a).any():
            raise ValueError(f"{what} holds {int(np.isnan(a).sum())} NaN label(s) of {len(a)} rows (missing "
                             "labels?); drop those rows")
        bad = a[~np.isfinite(a) | (a != np.round(a))]
        if len(bad):
            raise ValueError(f"{what} holds values that are not integers (e.g. {bad[0]:g}); class labels must be "
                             "integers or names (is it the label column?)")
        values: list[object] = [int(v) for v in a]
    else:
        values = col.to_pylist()
    if values and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        low = min(values)
        if low < 0:   # Hugging Face's unlabeled test splits: -1; every accuracy 0
            n = sum(v < 0 for v in values)
            raise ValueError(f"{what}, label {low}: class ids must be >= 0 ({n} of {len(values)} rows; an "
                             "unlabeled split?)")
    return values


def load_parquet(train: str | os.PathLike | pa.Table, test: str | os.PathLike | pa.Table | None = None, *,
                 name: str, img_size: int = 224, image_column: str = "image", label_column: str = "label",
                 seed: int = 0, test_fraction: float = 0.2, cache_mb: float = 1024.0) -> Task:
    """A task from Parquet / Arrow tables with an encoded-image column and a label column.

    Args:
        train: Parquet file, directory or glob; ``.arrow`` / ``.feather`` IPC file(s); a Hugging Face
            ``save_to_disk`` directory of one split (its ``cache-*.arrow`` files skipped); or a table.
        test: the same for the test split, sharing no file with train (a ValueError); None holds
            out a random ``test_fraction`` of train.
        name: task name.
        img_size: images are resized to this square.
        image_column: bytes of an encoded image (PNG, JPEG, ...), or a struct with a ``bytes`` field.
        label_column: integer, boolean or string labels (whole-number floats read as integers), numbered
            in sorted order of the train split's values, a numbering the test split shares: ids 0..K-1
            keep their values, sparse ones (0, 1, 999999) become 0..K-1 with a warning.
        seed: which examples go to test when ``test`` is None.
        cache_mb: keep decoded images in memory when a split fits.

    Returns:
        A :class:`Task`.
    """
    _check_cache_mb(_source(train), cache_mb)
    cols = [image_column, label_column]
    tr, tr_files = _read_table(train, cols)
    if tr.num_rows == 0:
        raise ValueError(f"{_source(train)}: no rows in the train table")
    labels, classes = _label_ids(_labels_of(tr, label_column, _source(train)), None)
    images = _image_bytes(tr.column(image_column), f"{_source(train)}: image column {image_column!r}")
    if test is not None:
        te, te_files = _read_table(test, cols)
        _disjoint(_source(test), "file", tr_files, te_files, train is test)
        if te.num_rows == 0:   # an empty test split reported US accuracy 0.0 and broke the few-shot probe
            raise ValueError(f"{_source(test)}: no rows in the test table")
        try:
            te_labels, _ = _label_ids(_labels_of(te, label_column, _source(test)), classes)   # train's mapping
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(_source(test)) else f"{_source(test)}: {e}") from None
        te_images = _image_bytes(te.column(image_column), f"{_source(test)}: image column {image_column!r}")
        te_rows, te_where = None, _source(test)
    else:
        a, b = _split_off(len(images), test_fraction, seed, _source(train))
        te_images, te_labels = [images[i] for i in b], labels[b]
        images, labels = [images[i] for i in a], labels[a]
        _train_lacks(_source(train), labels, te_labels, classes)
        te_rows, te_where = b, _source(train)
    num_classes = len(classes)
    renumbered = _renumbered(classes)
    if renumbered:
        warnings.warn(f"{_source(train)}: {renumbered}", stacklevel=2)
    tr_rows = a if test is None else None
    return Task(name, num_classes, img_size, EncodedSplit(images, labels, img_size, cache_mb, tr_rows, _source(train)),
                EncodedSplit(te_images, te_labels, img_size, cache_mb, te_rows, te_where),
                description=f"table {_source(train)} ({num_classes} classes{'; ' + renumbered if renumbered else ''})")


def _source(src: str | os.PathLike | pa.Table) -> str:
    """How an error names a table's source: its path or glob."""
    return f"a table of {src.num_rows} rows" if isinstance(src, pa.Table) else str(src)


def _renumbered(classes: Sequence[object]) -> str:
    """What numbering integer labels that are not 0..K-1 did, in words; "" when nothing changed."""
    ints = [c for c in classes if isinstance(c, (int, np.integer)) and not isinstance(c, bool)]
    if len(ints) < len(classes) or ints == list(range(len(ints))):
        return ""
    return (f"integer labels {ints[0]}..{ints[-1]} ({len(ints)} distinct) are numbered 0..{len(ints) - 1} in "
            "sorted order (a class's id is its rank)")
