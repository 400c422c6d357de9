"""Review s43 of ``meta-study ingest`` for file sources (ingest/pipeline.py, validation.py): each
test failed on the code before its fix."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli
from meta_study.store import Store

HEAD = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,shots"


def _rows(store: Path) -> list[tuple]:
    t = Store(str(store)).read(columns=["run_id", "ds_task", "ds_accuracy"])
    return sorted(zip(*(t.column(c).to_pylist() for c in ("run_id", "ds_task", "ds_accuracy"))))


def _ingest(*args: str):
    r = run_cli("ingest", *args, "--quiet")
    return r, r.stdout + r.stderr


def _conflict_files(f: Path) -> tuple[str, str]:
    first = f"{HEAD}\nr1,in1k,0.8,pets,0.9,fewshot,10\nr1,in1k,0.8,cars,0.5,fewshot,10\nr2,in1k,0.7,pets,0.8,fewshot,10\n"
    # r1 on cars given twice, with two values: which one is meant is unknown, so neither is stored
    second = (f"{HEAD}\nr1,in1k,0.8,pets,0.9,fewshot,10\nr1,in1k,0.8,cars,0.6,fewshot,10\n"
              "r2,in1k,0.7,pets,0.8,fewshot,10\nr1,in1k,0.8,cars,0.7,fewshot,10\n")
    return first, second


def test_a_key_now_conflicting_in_the_file_removes_its_stored_row(tmp_path: Path) -> None:
    """A re-ingested file that gives a stored key twice with different values quarantines both
    rows, but the stored row (0.5, a value the file no longer says) stayed, exit 0, where a row
    quarantined for a bad value ('abc') removes its stored version (docs/ingest.md: "the store
    keeps nothing the file no longer says")."""
    f, st = tmp_path / "x.csv", tmp_path / "st"
    first, second = _conflict_files(f)
    f.write_text(first)
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 0 and "3 new" in out, out
    f.write_text(second)
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 0 and "2 quarantined" in out and "1 deleted" in out, out
    assert _rows(st) == [("r1", "pets", 0.9), ("r2", "pets", 0.8)]


def test_a_key_now_conflicting_across_the_pieces_of_a_large_file_removes_its_stored_row(
        tmp_path: Path, monkeypatch) -> None:
    """The same, for a large file read in pieces (the store finds the conflict in the commit): the
    stored 0.5 stayed."""
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)          # pieces of 2 rows, for a file above 120 bytes
    f, st = tmp_path / "big.csv", tmp_path / "st"
    first, second = _conflict_files(f)
    f.write_text(first + "r3,in1k,0.7,pets,0.8,fewshot,10\n")
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 0 and "4 new" in out, out
    f.write_text(second + "r3,in1k,0.7,pets,0.8,fewshot,10\n")
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 0 and "2 quarantined" in out and "1 deleted" in out, out
    assert _rows(st) == [("r1", "pets", 0.9), ("r2", "pets", 0.8), ("r3", "pets", 0.8)]
    # read again, unchanged: nothing more goes
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 0 and _rows(st) == [("r1", "pets", 0.9), ("r2", "pets", 0.8), ("r3", "pets", 0.8)], out


def test_a_row_without_a_source_leaves_the_quarantine_once_its_file_is_fixed(tmp_path: Path) -> None:
    """A blank cell in a file's ``source`` column quarantines the row (source null): once the file was
    fixed and read again, the row stayed listed for good (no read of a run settles (None, run_id)),
    and the quarantine said the fixed file was still wrong. Another file's such rows stay."""
    head = "source,run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol"
    f, g, st = tmp_path / "s.csv", tmp_path / "t.csv", tmp_path / "st"
    f.write_text(f"{head}\nlab,r1,in1k,0.8,pets,0.9,linear\n,r2,in1k,0.7,pets,0.8,linear\n,,in1k,0.7,pets,0.8,linear\n")
    g.write_text(f"{head}\nlab2,r1,in1k,0.8,pets,0.9,linear\n,r2,in1k,0.7,pets,0.6,linear\n")
    r, out = _ingest(str(f), str(g), "--store", str(st))
    assert r.returncode == 0 and len(Store(str(st)).quarantine()) == 3, out
    f.write_text(f"{head}\nlab,r1,in1k,0.8,pets,0.9,linear\nlab,r2,in1k,0.7,pets,0.8,linear\n"
                 "lab,r3,in1k,0.7,pets,0.8,linear\n")
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 0 and "2 new" in out, out
    q = Store(str(st)).quarantine()
    assert len(q) == 1 and '"t.csv"' in q.column("raw")[0].as_py(), q.to_pylist()   # t.csv's row, kept


def test_a_conflicting_row_is_quarantined_as_its_file_wrote_it(tmp_path: Path) -> None:
    """Every quarantined row of a CSV is its cells as written, with ``_file`` and ``_line``
    (docs/ingest.md), but for a key given twice with different values: its payload was the
    canonical row, which names neither the file nor the line to fix."""
    import json

    f, st = tmp_path / "x.csv", tmp_path / "st"
    f.write_text(_conflict_files(f)[1])
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 0 and "2 quarantined" in out, out
    raws = [json.loads(x) for x in Store(str(st)).quarantine().column("raw").to_pylist()]
    assert sorted((q["_file"], q["_line"], q["ds_accuracy"]) for q in raws) == [("x.csv", 3, "0.6"), ("x.csv", 5, "0.7")]


def test_a_whole_param_count_among_counts_in_millions_is_not_stored_as_parameters():
    """timm writes parameters in millions (86.57): without a unit each such value is quarantined
    as no integer, but a whole one among them (22, i.e. 22 million) was stored as 22 parameters."""
    import pandas as pd

    from conftest import make_rows
    from meta_study.validation import validate

    rows = make_rows(4, ds_tasks=("a",)).astype(object)
    rows["param_count"] = ["86.57", "22", "304.33", "5.72"]
    v = validate(rows)
    assert v.table.num_rows == 0, v.table.column("param_count").to_pylist()
    reason = v.rejected["reason"].iloc[1]
    assert reason.startswith("param_count: 22 among values mostly with a fraction (3 of 4, e.g. 86.57)"), reason
    assert "units: {param_count: millions}" in reason, reason
    # guard: counts with one stray fraction keep their whole values
    rows["param_count"] = ["86567656", "22050664", "304.33", "5720000"]
    assert validate(rows).table.column("param_count").to_pylist() == [86567656, 22050664, 5720000]
    assert pd.notna(rows["param_count"]).all()


def test_a_failed_line_keeps_the_column_that_its_file_name_begins_with():
    """A source's error names its input ("PATH: problem"), which the line's label already says, so
    that head was dropped whenever the label began with it: the refusal "ds_task: 'Pets' ... differs
    only in case" of a file ds_task_export.csv lost its column."""
    from meta_study.ingest import SourceReport

    err = "ds_task: 'Pets' (3 rows) differs only in case from 'pets' (5 rows): write it one way"
    assert SourceReport("ds_task_export.csv", error=err).line() == f"ds_task_export.csv: FAILED: {err}"
    # the input's own name is still said once
    assert SourceReport("x.csv", error="x.csv: no rows").line() == "x.csv: FAILED: no rows"
    assert SourceReport("http://h:5000 [exp]", error="http://h:5000: unreachable").line() == \
        "http://h:5000 [exp]: FAILED: unreachable"


def test_whole_param_counts_read_before_a_large_file_shows_its_unit_refuse_it(tmp_path: Path, monkeypatch) -> None:
    """In pieces, the rule follows the pieces read so far (as percents do): a large file whose whole
    counts came before its counts in millions is refused whole, nothing stored; one whose millions
    came first quarantines the later whole values as a file read whole does."""
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)          # pieces of 2 rows, for a file above 120 bytes
    head = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,param_count"

    def body(counts):
        return f"{head}\n" + "".join(f"r{i},in1k,0.8,pets,0.9,linear,{c}\n" for i, c in enumerate(counts))

    f, st = tmp_path / "big.csv", tmp_path / "st"
    f.write_text(body(["22", "30", "86.57", "304.33", "5.72", "1.5"]))
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 2 and "param_count: its values mostly have a fraction (4 of 6)" in out, out
    assert "nothing of this source was stored" in out and not Store(str(st)).exists(), out
    f.write_text(body(["86.57", "304.33", "22", "5.72"]))
    r, out = _ingest(str(f), "--store", str(st))
    assert r.returncode == 2 and "FAILED: all 4 rows quarantined" in out, out


def test_conflicting_rows_of_one_payload_stay_two_entries():
    """Guard of the fix above: rows that share one input payload (an MLflow run's) keep their
    canonical rows as payloads, so two conflicting rows stay two quarantine entries."""
    import pandas as pd

    from meta_study.validation import dedupe_keys, validate

    f = pd.DataFrame({"source": "s", "run_id": ["a", "a"], "us_task": "u", "us_accuracy": 0.5, "ds_task": "d",
                      "ds_accuracy": [0.5, 0.6], "eval_protocol": "linear"})
    _, c = dedupe_keys(validate(f).table, payloads=lambda idx: ["the run"] * len(idx))
    assert len(set(c["raw"])) == 2 and all('"ds_accuracy": 0.' in x for x in c["raw"]), c["raw"].tolist()
