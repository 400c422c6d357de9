"""Ingest defects found in review, each stored data that was silently wrong or said something
false: names that differed by spaces only between formats, a few fractions among a task's
percents divided by 100, a second ``results.csv`` that replaced the first's rows, line numbers
off after a quoted line break, a ``;``-separated file, a header name with a trailing space, a
quarantine payload that was not the row as written, and a numpy repr in a reason.

Each test runs ``meta-study ingest`` (or :func:`validate`) on small files and checks the exit
code, the one error line and the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meta_study.store import Store
from meta_study.validation import validate
from conftest import one_error_line, run_cli

H = "run_id,model_name,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol"


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def _ingest(cwd: Path, *args: str, store: str = "st"):
    r = run_cli("ingest", *args, "--store", str(cwd / store), cwd=cwd)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "Aborted" not in out, out
    return r


def _raws(store: Path) -> list[dict]:
    q = Store(str(store)).quarantine().to_pandas()
    return [json.loads(x) for x in q["raw"]]


# --------------------------------------------------------------------------------------------
# 1. Spaces around names: one name in every format
# --------------------------------------------------------------------------------------------

def _same_rows_three_ways(tmp_path: Path) -> None:
    _write(tmp_path / "csv" / "ws.csv", H + '\n  m1  ,  my model  ,imagenet,0.5,  pets  ,0.4,linear\n'
                                            '"  m2  ","  q  ",imagenet,0.5," pets",0.4, linear \n')
    rows = [{"run_id": "  m1  ", "model_name": "  my model  ", "us_task": "imagenet", "us_accuracy": 0.5,
             "ds_task": "  pets  ", "ds_accuracy": 0.4, "eval_protocol": "linear"},
            {"run_id": "  m2  ", "model_name": "  q  ", "us_task": "imagenet", "us_accuracy": 0.5,
             "ds_task": " pets", "ds_accuracy": 0.4, "eval_protocol": " linear "}]
    _write(tmp_path / "jsonl" / "ws.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "pq").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "pq" / "ws.parquet")


@pytest.mark.parametrize("path", ["csv/ws.csv", "jsonl/ws.jsonl", "pq/ws.parquet"])
def test_names_are_stored_without_spaces_at_either_end_in_every_format(tmp_path, path):
    _same_rows_three_ways(tmp_path)
    r = _ingest(tmp_path, path)
    assert r.returncode == 0 and "2 new" in r.stdout, r.stdout + r.stderr
    got = pd.read_parquet(tmp_path / "st").sort_values("run_id")
    assert got["run_id"].tolist() == ["m1", "m2"]
    assert got["model_name"].tolist() == ["my model", "q"]          # inner space kept
    assert set(got["ds_task"]) == {"pets"} and set(got["eval_protocol"]) == {"linear"}


def test_validate_strips_string_values():
    frame = pd.DataFrame({"source": [" s "], "run_id": ["\tr\u00a0"], "us_task": ["u "], "us_accuracy": [0.5],
                          "ds_task": [" d"], "ds_accuracy": [0.4], "eval_protocol": ["linear\n"],
                          "model_name": [" vit b "]})
    v = validate(frame)
    assert v.n_rejected == 0
    row = v.table.to_pylist()[0]
    assert (row["source"], row["run_id"], row["us_task"], row["ds_task"], row["model_name"]) == \
        ("s", "r", "u", "d", "vit b")


# --------------------------------------------------------------------------------------------
# 2. A few fractions among a task's percents
# --------------------------------------------------------------------------------------------

def test_a_lone_fraction_among_percents_is_quarantined_not_divided(tmp_path):
    lines = [f"m{i},resnet_{i},imagenet,{55 + i / 4:.2f},cifar100,{47 + i * 0.6:.2f},linear" for i in range(40)]
    lines[20] = "m20,resnet_20,imagenet,60.00,cifar100,0.6217,linear"
    lines[30] = "m30,resnet_30,imagenet,62.50,cifar100,0.70,linear"
    _write(tmp_path / "p.csv", H + "\n" + "\n".join(lines) + "\n")
    _write(tmp_path / "pct.yaml", "accuracy_unit: percent\n")
    r = _ingest(tmp_path, "p.csv", "--mapping", "pct.yaml")
    assert r.returncode == 0 and "38 new" in r.stdout and "2 quarantined" in r.stdout, r.stdout + r.stderr
    got = pd.read_parquet(tmp_path / "st")
    assert got["ds_accuracy"].min() > 0.4                              # never 0.006217
    q = Store(str(tmp_path / "st")).quarantine().to_pandas().sort_values("run_id")
    assert q["run_id"].tolist() == ["m20", "m30"]
    assert q["reason"].iloc[0] == ("ds_accuracy: 0.6217 in a percent column whose other values for ds_task "
                                   "'cifar100' lie in [47, 70.4]: a fraction? (not stored as 0.006217)")


def test_timm_imagenet_a_near_chance_percent_is_still_stored(tmp_path, timm_dir):
    """ImageNet-A's lowest percents (0.48, 1.12, 1.13, ...) are near-chance models, stored: the
    one row quarantined is the one without an ImageNet row."""
    r = _ingest(tmp_path, str(timm_dir), "--mapping",
                str(Path(__file__).parents[1] / "examples" / "mappings" / "timm_wide.yaml"))
    assert r.returncode == 0 and "7779 new" in r.stdout and "1 quarantined" in r.stdout, r.stdout + r.stderr
    got = pd.read_parquet(tmp_path / "st")
    assert got["ds_accuracy"].min() == pytest.approx(0.0112)
    assert Store(str(tmp_path / "st")).quarantine().to_pandas()["reason"].str.startswith("missing US metric").all()


# --------------------------------------------------------------------------------------------
# 3. Two files of one name, in two calls
# --------------------------------------------------------------------------------------------

def _results(path: Path, runs: range, acc: float) -> Path:
    return _write(path, H + "\n" + "".join(f"m{i},vit,imagenet,0.5,pets,{acc},linear\n" for i in runs))


def test_another_file_of_the_same_name_is_refused_in_a_later_call(tmp_path):
    _results(tmp_path / "a" / "results.csv", range(4), 0.4)
    _results(tmp_path / "b" / "results.csv", range(4), 0.3)
    assert _ingest(tmp_path, "a/results.csv").returncode == 0
    r = _ingest(tmp_path, "b/results.csv")
    line = one_error_line(r, "b/results.csv: FAILED: this store's source 'results' came from",
                          str(tmp_path / "a" / "results.csv"), "Rename this file, or give it its own source")
    assert r.returncode == 2 and "deleted" not in line and "pass --source 'results'" in line
    got = pd.read_parquet(tmp_path / "st")
    assert len(got) == 4 and set(got["ds_accuracy"]) == {0.4}
    # a new export of the same table, saved elsewhere: --source takes it as that source
    r = _ingest(tmp_path, "b/results.csv", "--source", "results")
    assert r.returncode == 0 and "4 updated" in r.stdout, r.stdout + r.stderr
    got = pd.read_parquet(tmp_path / "st")
    assert len(got) == 4 and set(got["ds_accuracy"]) == {0.3} and set(got["source"]) == {"results"}
    one_error_line(_ingest(tmp_path, "a/results.csv", "b/results.csv", "--source", "results"),
                   "ingest: --source 'results' names the rows of one SOURCE; 2 given")


def test_a_file_naming_its_source_is_refused_as_such_in_a_later_call(tmp_path):
    """Two us_ds.csv that name the source `zoo` in a column share a key (zoo/us_ds): the line
    says why, not only "the same name"."""
    for d, acc in (("a", 0.4), ("b", 0.3)):
        _write(tmp_path / d / "us_ds.csv", H + ",source\n" + "".join(
            f"m{i},vit,imagenet,0.5,pets,{acc},linear,zoo\n" for i in range(4)))
    assert _ingest(tmp_path, "a/us_ds.csv").returncode == 0
    line = one_error_line(_ingest(tmp_path, "b/us_ds.csv"), "this store's source 'zoo/us_ds' came from",
                          "another file of the same name that names the source 'zoo' in a column")
    name = line.split("pass --source ", 1)[1].split(" ", 1)[0].strip("'")
    before = pd.read_parquet(tmp_path / "st")
    r = _ingest(tmp_path, "b/us_ds.csv", "--source", name)
    assert r.returncode == 0, r.stdout + r.stderr
    got = pd.read_parquet(tmp_path / "st")
    assert len(got) == 4 and set(got["ds_accuracy"]) == {0.3}, (before, got)


def test_the_same_file_corrected_or_moved_is_ingested_again(tmp_path):
    _results(tmp_path / "a" / "results.csv", range(4), 0.4)
    assert _ingest(tmp_path, "a/results.csv").returncode == 0
    _results(tmp_path / "a" / "results.csv", range(3), 0.45)               # corrected: m3 gone
    r = _ingest(tmp_path, "a/results.csv", "--drop-missing")
    assert r.returncode == 0 and "3 updated" in r.stdout and "1 deleted" in r.stdout, r.stdout + r.stderr
    (tmp_path / "a" / "results.csv").rename(tmp_path / "moved.csv")
    _results(tmp_path / "c" / "results.csv", range(3), 0.45)               # the same content elsewhere
    r = _ingest(tmp_path, "c/results.csv")
    assert r.returncode == 0 and "3 unchanged" in r.stdout, r.stdout + r.stderr


def test_a_state_without_a_comparable_path_refuses_nothing(tmp_path):
    """A state that is not a file's fingerprint (every row quarantined, or written by an older
    version without paths) keeps today's behaviour: the file is read."""
    _results(tmp_path / "b" / "results.csv", range(2), 0.3)
    st = Store(str(tmp_path / "st"))
    import pyarrow as pa
    st.commit(state={"files/results": pa.table({"fingerprint": ["every row quarantined: read it again"]})})
    r = _ingest(tmp_path, "b/results.csv")
    assert r.returncode == 0 and "2 new" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# 4. Line numbers after a quoted line break
# --------------------------------------------------------------------------------------------

MULTI = H + '\nr1,"multi\nline",imagenet,0.5,c,0.4,linear\n\nr2,b,imagenet,0.5,c,1.4,linear\n'


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_quarantine_line_is_the_physical_line(tmp_path, newline):
    _write(tmp_path / "x.csv", MULTI, newline)
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0 and "1 quarantined" in r.stdout, r.stdout + r.stderr
    assert _raws(tmp_path / "st")[0]["_line"] == 5          # header 1, r1 2-3, blank 4, r2 5


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_too_many_fields_names_the_physical_line(tmp_path, newline):
    _write(tmp_path / "x.csv", MULTI + "r3,c,imagenet,0.5,c,0.4,linear,\n", newline)
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 2
    one_error_line(r, "x.csv: FAILED: line 6 has 8 fields but the header has 7")


def test_a_quoted_field_after_a_space_is_one_record_as_pandas_reads_it(tmp_path):
    """`r1, "multi<newline>line"` is one record to pandas (it skips the space after the comma):
    the scanner read two and named line 5 for the bad row on line 6."""
    _write(tmp_path / "x.csv", H + '\nr1, "multi\nline",imagenet,0.5,c,0.4,linear\n\nr2,b,imagenet,0.5,c,0.4,linear\n'
                                   "r3,c,imagenet,0.5,c,0.4,linear,\n")
    r = _ingest(tmp_path, "x.csv")
    one_error_line(r, "x.csv: FAILED: line 6 has 8 fields but the header has 7")


def test_a_rejected_row_is_filed_under_its_trimmed_run_and_source():
    from meta_study.validation import validate

    frame = pd.DataFrame({"source": [" src ", " src "], "run_id": ["r1 ", "r2 "], "us_task": "u",
                          "us_accuracy": [0.5, 0.5], "ds_task": "d", "ds_accuracy": [1.4, 0.4],
                          "eval_protocol": "linear"})
    v = validate(frame)
    assert v.table.column("run_id").to_pylist() == ["r2"]
    assert list(v.rejected["source"]) == ["src"] and list(v.rejected["run_id"]) == ["r1"]


def test_lines_of_a_large_file_read_in_pieces(tmp_path, monkeypatch):
    """The pieces of a large file share one scan: rows of later pieces get their lines too."""
    import meta_study.ingest.files as files
    from meta_study.ingest.files import FileSource
    from meta_study.ingest.pipeline import ingest_sources

    monkeypatch.setattr(files, "CHUNK_ROWS", 3)    # pieces of 3 rows, for a file above 180 bytes
    body = "".join(f'r{i},"m\n{i}",imagenet,0.5,c,{1.4 if i % 4 == 3 else 0.4},linear\n' for i in range(10))
    p = _write(tmp_path / "x.csv", H + "\n" + body)
    [rep] = ingest_sources([FileSource(paths=[str(p)], mapping=None)], Store(str(tmp_path / "st")))
    assert (rep.new, rep.quarantined, rep.commits) == (8, 2, 1)
    assert sorted(x["_line"] for x in _raws(tmp_path / "st")) == [2 + 2 * 3, 2 + 2 * 7]   # two lines a record


# --------------------------------------------------------------------------------------------
# 5, 6. Another separator; a header name with spaces around it
# --------------------------------------------------------------------------------------------

def test_a_semicolon_separated_file_says_so(tmp_path):
    _write(tmp_path / "semi.csv", H.replace(",", ";") + "\nm0;vit;imagenet;0,5591;cifar100;0,4831;linear\n")
    r = _ingest(tmp_path, "semi.csv")
    assert r.returncode == 2
    one_error_line(r, "semi.csv: FAILED: the header is one column", "the file looks ';'-separated")


def test_a_tab_separated_csv_says_so(tmp_path):
    _write(tmp_path / "tabs.csv", H.replace(",", "\t") + "\nm0\tvit\timagenet\t0.5\tc\t0.4\tlinear\n")
    r = _ingest(tmp_path, "tabs.csv")
    assert r.returncode == 2
    one_error_line(r, "tabs.csv: FAILED: the header is one column", "tab-separated; name it .tsv")


@pytest.mark.parametrize("name", ["trail.csv", "trail.jsonl", "trail.parquet"])
def test_header_names_with_spaces_around_them_are_the_names(tmp_path, name):
    cols = ["run_id ", " model_name", "us_task", "us_accuracy ", "ds_task", "ds_accuracy", "eval_protocol", " source "]
    row = ["m0", "vit", "imagenet", 0.55, "cifar100", 0.48, "linear", " mine "]
    if name.endswith(".csv"):
        _write(tmp_path / name, ",".join(cols) + "\n" + ",".join(map(str, row)) + "\n")
    elif name.endswith(".jsonl"):
        _write(tmp_path / name, json.dumps(dict(zip(cols, row))) + "\n")
    else:
        pd.DataFrame([row], columns=cols).to_parquet(tmp_path / name)
    r = _ingest(tmp_path, name)
    assert r.returncode == 0 and "1 new" in r.stdout, r.stdout + r.stderr
    got = pd.read_parquet(tmp_path / "st")
    assert got[["run_id", "source", "us_accuracy"]].values.tolist() == [["m0", "mine", 0.55]]
    assert not got["extra"].iloc[0]                                   # nothing left over as unknown


def test_names_equal_after_stripping_are_a_repeated_column(tmp_path):
    _write(tmp_path / "d.csv", H + ",ds_accuracy \nm0,vit,imagenet,0.5,c,0.4,linear,0.3\n")
    r = _ingest(tmp_path, "d.csv")
    assert r.returncode == 2
    one_error_line(r, "d.csv: FAILED: column 'ds_accuracy' appears twice in the header (columns 6 and 8)")


# --------------------------------------------------------------------------------------------
# 7. The quarantine payload is the row as written
# --------------------------------------------------------------------------------------------

def test_quarantine_payload_keeps_empty_cells_and_spaces(tmp_path):
    _write(tmp_path / "m.csv", H + ",notes\nx1,  spaced  model ,imagenet,,c,0.5,linear,\n"
                                   "x2,m,imagenet,0.6,c,NaN,linear, n \n")
    r = _ingest(tmp_path, "m.csv")
    assert r.returncode == 2 and "all 2 rows quarantined" in r.stdout + r.stderr
    raws = sorted(_raws(tmp_path / "st"), key=lambda x: x["run_id"])
    assert raws[0]["us_accuracy"] == "" and raws[0]["notes"] == ""         # empty, not "nan"
    assert raws[0]["model_name"] == "spaced  model "    # as written, less the spaces after the comma (as pandas)
    assert raws[1]["ds_accuracy"] == "NaN" and raws[1]["notes"] == "n "
    assert [x["_line"] for x in raws] == [2, 3]


# --------------------------------------------------------------------------------------------
# 8. No numpy repr in a reason
# --------------------------------------------------------------------------------------------

def test_a_number_as_a_timestamp_is_shown_as_written(tmp_path):
    rows = [{"run_id": f"r{i}", "us_task": "u", "us_accuracy": 0.5, "ds_task": "d", "ds_accuracy": 0.4,
             "eval_protocol": "linear", "started_at": v} for i, v in enumerate([1.5, 2.0])]
    _write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert _ingest(tmp_path, "t.jsonl").returncode == 2
    reasons = sorted(Store(str(tmp_path / "st")).quarantine().to_pandas()["reason"])
    assert reasons == ["started_at: wrong type (1.5 is not a timestamp)",
                       "started_at: wrong type (2.0 is not a timestamp)"]
    frame = pd.DataFrame(rows[:1]).assign(source="s")
    frame["started_at"] = np.array([1.5])
    frame["shots"] = np.array([True])
    assert validate(frame).rejected["reason"].tolist() == [
        "shots: wrong type (True is not an integer); started_at: wrong type (1.5 is not a timestamp)"]


# --------------------------------------------------------------------------------------------
# 9. A misspelt canonical column is named, not kept in extra in silence
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pieces", [False, True])
def test_a_misspelt_column_is_named(tmp_path, monkeypatch, pieces):
    """``param_cout`` and ``Seed`` went to ``extra`` without a word: every row stored without its
    parameter count and seed. They are stored as before, and the ingest names them."""
    import meta_study.ingest.files as files
    from meta_study.ingest.files import FileSource
    from meta_study.ingest.pipeline import ingest_sources

    if pieces:
        monkeypatch.setattr(files, "CHUNK_ROWS", 1)    # read in pieces: the note comes from the header
    body = "".join(f"r{i},m{i},imagenet,0.{5 + i},c,0.4,linear,{100 + i},1,x\n" for i in range(3))
    p = _write(tmp_path / "x.csv", H + ",param_cout,Seed,my_note\n" + body)
    [rep] = ingest_sources([FileSource(paths=[str(p)], mapping=None)], Store(str(tmp_path / "st")))
    assert rep.new == 3
    assert [n for n in rep.notes if "did you mean" in n] == [
        f"{p}: column(s) 'param_cout' (did you mean 'param_count'?), 'Seed' (did you mean 'seed'?) are not "
        "meta-study columns and were kept in extra; rename them in the file or a mapping (docs/ingest.md) to use them"]
    t = Store(str(tmp_path / "st")).read().to_pandas()
    assert t["param_count"].isna().all() and t["extra"].map(dict).map(lambda d: d["param_cout"]).tolist() == ["100", "101", "102"]


def test_no_note_for_columns_that_are_meant_for_extra(tmp_path):
    _write(tmp_path / "x.csv", H + ",ds_n,notes,my_seed_list\nr0,m,imagenet,0.5,c,0.4,linear,100,a,1\n")
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0 and "did you mean" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_misspelt_column_under_a_mapping_without_extra_is_said_not_stored():
    from meta_study.ingest.files import near_miss_note
    from meta_study.ingest.mapping import IngestMapping

    cols = ["run_id", "Seed", "param_cout"]
    assert near_miss_note("x.csv", cols, IngestMapping(extra="none")) == [
        "x.csv: column(s) 'Seed' (did you mean 'seed'?), 'param_cout' (did you mean 'param_count'?) are not "
        "meta-study columns and were not stored (the mapping keeps no such extra column); rename them in the "
        "file or a mapping (docs/ingest.md) to use them"]
    kept, dropped = near_miss_note("x.csv", cols, IngestMapping(extra=("Seed",)))
    assert "'Seed'" in kept and "kept in extra" in kept and "'param_cout'" in dropped and "not stored" in dropped
