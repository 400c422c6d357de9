"""Joins of per-task files (s46): the files a join skips are named with the reason, files its
tables do not name are not read, a row without a key value is quarantined, and a renamed column
only the downstream file has is stored. Each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

from meta_study.ingest import ingest_sources, load_mapping, open_sources
from meta_study.store import Store

MAPPING = """\
name: w
join:
  key: [model, img]
  upstream: {file: up.csv, task: up, accuracy: top1}
  downstream:
    - {file: ds.csv, task: ds, accuracy: top1}
rename: {model: model_name, n_shots: shots}
run_id: "{model}@{img}"
accuracy_unit: percent
constants: {eval_protocol: %s}
"""


def _tables(d: Path, up: str = "model,img,top1\na,224,80\nb,224,70\n",
            ds: str = "model,img,top1\na,224,60\nb,224,50\n", protocol: str = "linear") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "up.csv").write_text(up)
    (d / "ds.csv").write_text(ds)
    m = d.parent / "m.yaml"
    m.write_text(MAPPING % protocol)
    return m


def _ingest(store: Path, spec: Path, mapping: Path):
    (rep,) = ingest_sources(open_sources([str(spec)], load_mapping(str(mapping))), Store(str(store)))
    return rep


def test_the_summary_names_the_files_a_join_skipped_and_why(tmp_path: Path) -> None:
    """``3 skipped files`` named none of them and said not why: a user could not tell whether
    data was lost. The line (all that the demo and refit show) names a few, then "and N more"."""
    m = _tables(tmp_path / "in")
    for n in ("a-clean.csv", "b-clean.csv", "c.csv", "d.csv", "long.csv"):
        (tmp_path / "in" / n).write_text("model,img,top1\na,224,1\n")
    rep = _ingest(tmp_path / "st", tmp_path / "in", m)
    line = rep.line()
    assert rep.error is None and rep.new == 2, line
    assert "5 files skipped (no table of mapping 'w' names them): a-clean.csv, b-clean.csv, c.csv and 2 more" in line
    assert "skipped files" not in line and rep.stats == {"skipped_files": 5}
    one = tmp_path / "one"
    _tables(one)
    (one / "long.csv").write_text("x\n1\n")
    line = _ingest(tmp_path / "st1", one, m).line()
    assert line.endswith("; 1 file skipped (no table of mapping 'w' names them): long.csv"), line


def test_a_join_does_not_read_the_files_its_tables_do_not_name(tmp_path: Path) -> None:
    """Every file of the directory was read before the join: a malformed CSV that no table names
    (a header naming a column twice, an empty notes.csv) failed the whole join, nothing stored;
    and editing such a file made the join read everything again."""
    m = _tables(tmp_path / "in")
    (tmp_path / "in" / "notes.csv").write_text("x,x\n1,2\n")
    (tmp_path / "in" / "empty.csv").write_text("")
    rep = _ingest(tmp_path / "st", tmp_path / "in", m)
    assert rep.error is None and rep.new == 2, rep.line()
    assert set(rep.skipped) == {"empty.csv", "notes.csv"}
    (tmp_path / "in" / "notes.csv").write_text("y,y\n3,4\n")
    again = _ingest(tmp_path / "st", tmp_path / "in", m)
    assert again.stats.get("unchanged_files") and "not read again" in again.line(), again.line()


def test_a_join_row_without_a_key_value_is_quarantined(tmp_path: Path) -> None:
    """A row whose key lacked a value met the other table's row without one: stored as run
    ``@224`` with no model name and another row's accuracy; one without ``img`` was said to have
    no upstream row."""
    m = _tables(tmp_path / "in", up="model,img,top1\na,224,80\n,224,75\nb,224,70\n",
                ds='model,img,top1\na,224,60\n,224,55\nb,,50\n"  ",224,40\n')
    rep = _ingest(tmp_path / "st", tmp_path / "in", m)
    assert rep.error is None and rep.new == 1, rep.line()
    df = Store(str(tmp_path / "st")).to_pandas()
    assert df["run_id"].tolist() == ["a@224"]
    reasons = sorted(Store(str(tmp_path / "st")).quarantine().to_pandas()["reason"])
    assert reasons == ["missing join key: no img in ds.csv (model=b, img=None)",
                       "missing join key: no model in ds.csv (model=None, img=224)",
                       "missing join key: no model in ds.csv (model=None, img=224)",
                       "missing join key: no model in up.csv (model=None, img=224)"], reasons


def test_a_renamed_column_only_the_downstream_file_has_is_stored(tmp_path: Path) -> None:
    """``rename: {n_shots: shots}`` with ``n_shots`` in the downstream file only: the column was
    neither stored nor kept in extra; every few-shot row was quarantined for ``shots: missing``
    (and a linear one stored without it)."""
    m = _tables(tmp_path / "in", ds="model,img,top1,n_shots\na,224,60,5\nb,224,50,10\n", protocol="fewshot")
    rep = _ingest(tmp_path / "st", tmp_path / "in", m)
    assert rep.error is None and (rep.new, rep.quarantined) == (2, 0), rep.line()
    df = Store(str(tmp_path / "st")).to_pandas().sort_values("run_id")
    assert df["shots"].tolist() == [5, 10]
    assert df["model_name"].tolist() == ["a", "b"] and df["ds_accuracy"].tolist() == [0.6, 0.5]
    assert not any("n_shots" in str(e) for e in df["extra"])   # stored once, as shots
