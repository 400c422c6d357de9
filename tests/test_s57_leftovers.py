"""Two leftovers of session 56.

``_tails`` (the members' stop-paying and saturation intervals) counted a member with no answer
(NaN) as "never", as when payoff said "never" with NaN; payoff says inf for that now, and NaN is
no vote. And a mapping's ``drop:`` of a column that its ``run_id`` or a join table's ``accuracy``
reads was accepted (the ids built from the dropped column, the accuracies stored all the same),
where ``drop:`` beside ``rename:`` of one column was refused as a mapping saying two things."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import one_error_line, run_cli
from meta_study.analysis.selection import _tails

# ---- _tails: NaN is no answer, not "never" -------------------------------------------------


def test_a_member_with_no_answer_is_no_vote_for_never() -> None:
    # quartiles of [.5, .6, .7, .8, never]: (.6, .8); the five NaN members made it (.725, never)
    vals = np.array([0.5, np.nan, 0.6, 0.7, np.nan, 0.8, math.inf, np.nan, np.nan, np.nan])
    assert _tails(vals, 0.5) == pytest.approx((0.6, 0.8))
    assert _tails(vals, 0.5) == _tails(vals[~np.isnan(vals)], 0.5)
    # one NaN among eleven finite members: the 90% interval of the eleven, not "[0.52-never]"
    finite = np.linspace(0.5, 0.9, 11)
    want = tuple(np.quantile(finite, [0.05, 0.95]))
    assert _tails(np.r_[finite, np.nan], 0.9) == pytest.approx(want)


def test_never_is_still_never_and_no_answer_at_all_is_nan() -> None:
    assert _tails(np.array([0.8] + [math.inf] * 10), 0.9) == (0.8, math.inf)
    assert _tails(np.array([0.8] * 10 + [math.inf, np.nan, np.nan]), 0.9) == (0.8, math.inf)
    assert _tails(np.full(4, math.inf), 0.9) == (math.inf, math.inf)
    for none in (np.full(5, np.nan), np.zeros(0)):
        lo, hi = _tails(none, 0.9)
        assert math.isnan(lo) and math.isnan(hi), (none, lo, hi)


# ---- drop: of a column another key reads -------------------------------------------------

_HEAD = "id,model,size,note,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
_ROWS = "r1,vit,224,a,in,pets,linear,0.8,0.7\nr2,vit,384,b,in,pets,linear,0.82,0.72\n"


def _ingest(tmp_path: Path, doc: dict, store: str = "st"):
    (tmp_path / "a.csv").write_text(_HEAD + _ROWS)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    return run_cli("ingest", "a.csv", "--mapping", "m.yaml", "--store", store, cwd=tmp_path)


@pytest.mark.parametrize("doc, col, said", [
    ({"run_id": "{model}@{size}", "drop": ["id", "size"]}, "size", "is also read by run_id ('{model}@{size}')"),
    ({"run_id": "model", "drop": ["model"]}, "model", "is also read by run_id ('model')"),
    # the template reads the file's columns: {model_name} is the dropped one, not the renamed `model`
    ({"rename": {"model": "model_name"}, "run_id": "{model_name}-{size}", "drop": ["model_name"]},
     "model_name", "is also read by run_id"),
])
def test_drop_of_a_run_id_column_is_one_line(tmp_path: Path, doc: dict, col: str, said: str) -> None:
    if col == "model_name":   # a file with both columns, as drop: frees a name for a rename
        (tmp_path / "a.csv").write_text(_HEAD.replace("note", "model_name") + _ROWS)
        (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
        r = run_cli("ingest", "a.csv", "--mapping", "m.yaml", "--store", "st", cwd=tmp_path)
    else:
        r = _ingest(tmp_path, doc)
    line = one_error_line(r, "m.yaml", f"drop: '{col}'", said, "take it out of run_id")
    assert "error: m.yaml: drop:" in line, line
    assert not (tmp_path / "st").exists()


def test_a_drop_no_key_reads_still_works(tmp_path: Path) -> None:
    r = _ingest(tmp_path, {"run_id": "{model}@{size}", "drop": ["id", "note"]})
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "st").sort_values("run_id")
    assert got["run_id"].tolist() == ["vit@224", "vit@384"]
    assert [dict(e) for e in got["extra"]] == [{"model": "vit", "size": "224"}, {"model": "vit", "size": "384"}]


def _join_files(tmp_path: Path) -> None:
    (tmp_path / "up.csv").write_text("model,rowno,top1\nm1,1,0.5\nm2,2,0.6\n")
    (tmp_path / "ds.csv").write_text("model,rowno,acc\nm1,1,0.4\nm2,2,0.3\n")


def _join_doc(drop: list[str]) -> dict:
    return {"name": "jm", "source": "lab", "run_id": "{model}", "constants": {"eval_protocol": "linear"},
            "join": {"key": ["model", "rowno"], "upstream": {"file": "up.csv", "task": "in1k", "accuracy": "top1"},
                     "downstream": [{"file": "ds.csv", "task": "cifar", "accuracy": "acc"}]}, "drop": drop}


@pytest.mark.parametrize("col, said", [("top1", "is also join.upstream.accuracy (the in1k accuracies)"),
                                       ("acc", "is also join.downstream[0].accuracy (the cifar accuracies)")])
def test_drop_of_a_join_accuracy_column_is_one_line(tmp_path: Path, col: str, said: str) -> None:
    _join_files(tmp_path)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(_join_doc([col])))
    r = run_cli("ingest", "up.csv", "ds.csv", "--mapping", "m.yaml", "--store", "st", cwd=tmp_path)
    one_error_line(r, "m.yaml: ", f"drop: '{col}' {said}", "read the accuracies from another column")
    assert not (tmp_path / "st").exists()


def test_a_join_key_may_be_dropped(tmp_path: Path) -> None:
    """A key pairs the tables' rows; dropping it keeps it out of extra (here a row number)."""
    _join_files(tmp_path)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(_join_doc(["rowno"])))
    r = run_cli("ingest", "up.csv", "ds.csv", "--mapping", "m.yaml", "--store", "st", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "st").sort_values("run_id")
    assert got["run_id"].tolist() == ["m1", "m2"] and got["ds_accuracy"].tolist() == [0.4, 0.3]
    assert all("rowno" not in dict(e or {}) for e in got["extra"]), got["extra"].tolist()
