"""Labels of tables on disk: how label values become class ids and the width of the model head."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from meta_study.train import create_model, load_parquet


def _png(v: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), v, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _write(path: Path, labels: list, typ: pa.DataType | None = None) -> Path:
    pq.write_table(pa.table({"image": [_png(7 * i % 256) for i in range(len(labels))],
                             "label": pa.array(labels, typ)}), path)
    return path


def test_sparse_integer_labels_are_numbered_densely_in_both_splits(tmp_path: Path) -> None:
    """Labels {0, 1, 999999} made a 1,000,000-way head: 65M parameters instead of 71k for the
    model-size axis, and a (N, 1e6) one-hot in the few-shot probe."""
    tr = _write(tmp_path / "train.parquet", [0, 1, 999999] * 2)
    te = _write(tmp_path / "test.parquet", [999999, 0])
    with pytest.warns(UserWarning, match=r"train\.parquet: integer labels 0\.\.999999 \(3 distinct\) are numbered "
                                         r"0\.\.2"):
        t = load_parquet(tr, te, name="x", img_size=8)
    assert t.num_classes == 3
    assert t.train.labels.tolist() == [0, 1, 2] * 2 and t.test.labels.tolist() == [2, 0]  # one mapping
    _, info = create_model("mixer_tiny_cpu", num_classes=t.num_classes, img_size=8)
    _, dense = create_model("mixer_tiny_cpu", num_classes=3, img_size=8)
    assert info.param_count == dense.param_count
    # a held-out split is numbered with the same mapping (it is drawn after numbering)
    with pytest.warns(UserWarning, match="numbered"):
        h = load_parquet(_write(tmp_path / "all.parquet", [10, 30, 20] * 4), name="x", img_size=8, test_fraction=0.25)
    assert h.num_classes == 3 and set(h.train.labels.tolist()) == {0, 1, 2} and h.test.labels.max() <= 2


def test_dense_integer_labels_keep_their_ids_without_a_warning(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = load_parquet(_write(tmp_path / "tr.parquet", [2, 0, 1, 2]), _write(tmp_path / "te.parquet", [1, 2]),
                         name="x", img_size=8)
    assert t.num_classes == 3 and t.train.labels.tolist() == [2, 0, 1, 2] and t.test.labels.tolist() == [1, 2]


def test_a_label_only_in_the_test_split_never_gets_an_index(tmp_path: Path) -> None:
    tr = _write(tmp_path / "train.parquet", [0, 5, 9, 0, 5, 9])
    te = _write(tmp_path / "test.parquet", [0, 7, 9])
    with pytest.raises(ValueError) as e:
        load_parquet(tr, te, name="x", img_size=8)
    assert str(e.value) == f"{te}: labels [7] not among the train classes"


@pytest.mark.parametrize("split", ["train", "test"])
def test_nan_labels_are_refused_naming_the_file_and_column(tmp_path: Path, split: str) -> None:
    """A float label column with NaN: each NaN became a class of its own (NaN != NaN), or the test
    split's NaN was called 'not among the train classes'."""
    good = _write(tmp_path / "good.parquet", [0.0, 1.0] * 3, pa.float64())
    bad = _write(tmp_path / "bad.parquet", [0.0, 1.0, float("nan"), 1.0, float("nan"), 0.0], pa.float64())
    tr, te = (bad, good) if split == "train" else (good, bad)
    with pytest.raises(ValueError) as e:
        load_parquet(tr, te, name="x", img_size=8)
    assert str(e.value) == (f"{bad}: label column 'label' holds 2 NaN label(s) of 6 rows (missing labels?); "
                            "drop those rows")


def test_non_integer_float_labels_are_refused(tmp_path: Path) -> None:
    """1.5 was taken as a class of its own: a regression target or the wrong column, trained as classes."""
    bad = _write(tmp_path / "t.parquet", [0.0, 1.5, 2.0, 0.0, 1.5, 2.0], pa.float64())
    with pytest.raises(ValueError) as e:
        load_parquet(bad, name="x", img_size=8)
    assert str(e.value) == (f"{bad}: label column 'label' holds values that are not integers (e.g. 1.5); class "
                            "labels must be integers or names (is it the label column?)")


def test_whole_float_labels_match_integer_labels_of_the_other_split(tmp_path: Path) -> None:
    """pandas turns an int column with a missing value into floats; once dropped, 2.0 is class 2."""
    t = load_parquet(_write(tmp_path / "tr.parquet", [0.0, 1.0, 2.0] * 2, pa.float64()),
                     _write(tmp_path / "te.parquet", [2, 0]), name="x", img_size=8)
    assert t.num_classes == 3 and t.test.labels.tolist() == [2, 0]


def test_negative_labels_are_refused_naming_the_file(tmp_path: Path) -> None:
    """The train table's -1 (Hugging Face's unlabelled marker) was refused without naming any file."""
    bad = _write(tmp_path / "t.parquet", [0, 1, -1, 0, 1, -1])
    with pytest.raises(ValueError) as e:
        load_parquet(bad, name="x", img_size=8)
    assert str(e.value).startswith(f"{bad}: label column 'label', label -1: class ids must be >= 0")
    assert "\n" not in str(e.value)


def test_boolean_and_string_labels_share_one_sorted_mapping(tmp_path: Path) -> None:
    b = load_parquet(_write(tmp_path / "b.parquet", [True, False] * 3), _write(tmp_path / "bt.parquet", [True]),
                     name="x", img_size=8)
    assert b.num_classes == 2 and b.train.labels.tolist() == [1, 0] * 3 and b.test.labels.tolist() == [1]
    s = load_parquet(_write(tmp_path / "s.parquet", ["dog", "cat", "émeu"] * 2),
                     _write(tmp_path / "st.parquet", ["émeu", "cat"]), name="x", img_size=8)
    assert s.num_classes == 3 and s.train.labels.tolist() == [1, 0, 2] * 2 and s.test.labels.tolist() == [2, 0]


def test_a_label_column_of_lists_is_refused_in_one_line(tmp_path: Path) -> None:
    """A multi-label column (lists) crashed with "unhashable type: 'list'"."""
    bad = _write(tmp_path / "t.parquet", [[0], [1, 2], [0], [1]])
    with pytest.raises(ValueError) as e:
        load_parquet(bad, name="x", img_size=8)
    assert str(e.value).startswith(f"{bad}: label column 'label' has type list<")
    assert str(e.value).endswith("int64>; class labels must be integers or names (strings)")


def test_a_table_task_describes_itself_in_one_line() -> None:
    """``Task.description`` ("one line for docs and logs") of an in-memory table held the table's
    whole repr: its schema and the hex of its images, over several lines."""
    t = load_parquet(pa.table({"image": [_png(i) for i in range(4)], "label": [0, 1] * 2}), name="x", img_size=8,
                     test_fraction=0.5)
    assert t.description == "table a table of 4 rows (2 classes)"


@pytest.mark.parametrize("labels, problem", [(np.array([1, 2, 3] * 2), r"train labels span \[1, 3\], outside "
                                                                       r"\[0, num_classes=3\) \(1-based ids"),
                                             (np.array([0.0, 1.0, 2.0] * 2), "train labels have dtype float64")])
def test_a_task_with_labels_outside_its_classes_is_refused_when_built(labels: np.ndarray, problem: str) -> None:
    """A registered task with 1-based labels crashed pre-training in cross_entropy ("Target 3 is
    out of bounds", a device-side assert on a GPU); float labels were read as class probabilities."""
    import torch

    from meta_study.train import TensorSplit
    from meta_study.train.data import Task

    px = torch.zeros(6, 3, 8, 8, dtype=torch.uint8)
    ok = TensorSplit(px, np.array([0, 1, 2] * 2))
    with pytest.raises(ValueError, match=rf"^task 'mine': {problem}"):
        Task("mine", 3, 8, TensorSplit(px, labels), ok)
    with pytest.raises(ValueError, match=r"^task 'mine': num_classes=0: must be an integer >= 1"):
        Task("mine", 0, 8, ok, ok)
    assert Task("mine", 3, 8, ok, ok).num_classes == 3
