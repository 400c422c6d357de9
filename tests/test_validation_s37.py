"""Review of validation and the ingest pipeline (s37): decisions about a whole input (the day/month
order of its dates, whether a task's accuracies are percents) taken once per file, not once per
piece of a file read in pieces (``CHUNK_ROWS``, 500,000 rows).

Each test failed on the code before its fix; the measured failure is in its docstring.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from meta_study.store import Store
from conftest import one_error_line, run_cli

H = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,started_at"


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in [H, *rows]))
    return path


def _ingest(tmp_path: Path, name: str, store: str = "st"):
    r = run_cli("ingest", name, "--store", str(tmp_path / store), cwd=tmp_path)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r


def _in_pieces(monkeypatch, rows: int = 2) -> None:
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", rows)   # a file above 60 * rows bytes is read in pieces


def _started(store: Path) -> dict[str, str]:
    t = pd.read_parquet(store)
    return {r: ts.date().isoformat() for r, ts in zip(t.run_id, t.started_at)}


def _row(i: int, date: str) -> str:
    return f"r{i},up,0.5,pets,0.4,linear,{date}"


# --------------------------------------------------------------------------------------------
# Dates: one day/month order per file
# --------------------------------------------------------------------------------------------


def test_a_file_read_in_pieces_with_both_date_orders_stores_nothing(tmp_path, monkeypatch):
    """The first piece told day first (13/04), the next month first (04/13): '13/04/2024' was
    stored as April 13 and '03/04/2024' as March 4, two orders in one file (and the last
    '03/04/2024', in a piece of its own, quarantined as ambiguous). Read whole, the file's day/month
    dates are all refused; read in pieces, it must not store them by two orders."""
    _in_pieces(monkeypatch)
    _write(tmp_path / "x.csv", [_row(0, "13/04/2024"), _row(1, "03/04/2024"),
                                _row(2, "04/13/2024"), _row(3, "03/04/2024")])
    line = one_error_line(_ingest(tmp_path, "x.csv"), "x.csv: FAILED: started_at", "day first ('13/04/2024')",
                          "month first ('04/13/2024')", "ISO 8601")
    assert "nothing of this source was stored" in line, line
    assert not Store(str(tmp_path / "st")).exists()


def test_a_later_piece_takes_the_order_an_earlier_piece_told(tmp_path, monkeypatch):
    """'05/06/2024' in the second piece, after '13/04/2024' in the first, was quarantined as
    "ambiguous ... no date read with it has a day above 12": read whole, the file is day first
    and it is June 5."""
    _in_pieces(monkeypatch)
    _write(tmp_path / "x.csv", [_row(0, "13/04/2024"), _row(1, "2024-01-02"),
                                _row(2, "05/06/2024"), _row(3, "2024-01-03")])
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _started(tmp_path / "st") == {"r0": "2024-04-13", "r1": "2024-01-02", "r2": "2024-06-05",
                                         "r3": "2024-01-03"}


def test_an_ambiguous_date_before_the_piece_that_tells_the_order_refuses_the_file(tmp_path, monkeypatch):
    """'03/04/2024' in the first piece, '13/04/2024' only in the second: the first was quarantined
    as "no date read with it has a day above 12", which the file has. Read whole, it is April 3;
    in pieces, the order came too late for it: the file is refused, with what to write."""
    _in_pieces(monkeypatch)
    _write(tmp_path / "x.csv", [_row(0, "03/04/2024"), _row(1, "2024-01-02"),
                                _row(2, "13/04/2024"), _row(3, "2024-01-03")])
    line = one_error_line(_ingest(tmp_path, "x.csv"), "x.csv: FAILED: started_at", "'03/04/2024'",
                          "'13/04/2024'", "ISO 8601")
    assert "nothing of this source was stored" in line, line
    assert not Store(str(tmp_path / "st")).exists()


def test_a_file_read_whole_keeps_its_date_rules(tmp_path):
    """The same files read as one piece: the rules of a whole input, unchanged."""
    _write(tmp_path / "a.csv", [_row(0, "03/04/2024"), _row(1, "13/04/2024")])
    assert _ingest(tmp_path, "a.csv").returncode == 0
    assert _started(tmp_path / "st") == {"r0": "2024-04-03", "r1": "2024-04-13"}


# --------------------------------------------------------------------------------------------
# Percents: a task's unit decided over the whole file
# --------------------------------------------------------------------------------------------

HA = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol"
#: ds_task X is in percent (45, 30) with one near-chance model at 0.5 %; Y is in fractions.
MIXED = ["r0,up,0.5,X,45.0,linear", "r1,up,0.5,X,30.0,linear", "r2,up,0.5,Y,0.4,linear",
         "r3,up,0.5,X,0.5,linear", "r4,up,0.5,Y,0.3,linear"]


def _accuracies(store: Path) -> dict[str, float]:
    t = pd.read_parquet(store)
    return dict(zip(t.run_id, t.ds_accuracy))


def test_a_near_chance_percent_in_a_later_piece_is_not_stored_as_a_fraction(tmp_path, monkeypatch):
    """Read whole, X's 0.5 is quarantined ("0.5 in ds_task 'X', whose values are mostly in (1, 100]
    (2 of 3): a percent?"). Read in pieces, its piece held no other value of X: 0.5 % was stored
    as the accuracy 0.5 (50 %), exit code 0. It takes the decision of the pieces before it now."""
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *MIXED]))
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0 and _accuracies(tmp_path / "st") == {"r2": 0.4, "r4": 0.3}, r.stdout
    _in_pieces(monkeypatch)
    r = _ingest(tmp_path, "x.csv", "pieces")
    assert r.returncode == 0 and _accuracies(tmp_path / "pieces") == {"r2": 0.4, "r4": 0.3}, r.stdout
    reasons = pd.read_parquet(tmp_path / "pieces" / "_quarantine").set_index("run_id").reason
    assert "whose values are mostly in (1, 100] (2 of 3): a percent?" in reasons["r3"], reasons


def test_a_near_chance_percent_before_its_tasks_percents_refuses_the_file(tmp_path, monkeypatch):
    """X's 0.5 in the first piece, its 45 and 30 in the next: 0.5 % was stored as 50 %. Read in
    pieces, the task's unit came too late for it: the file is refused, in one line."""
    rows = ["r0,up,0.5,X,0.5,linear", "r1,up,0.5,X,45.0,linear", "r2,up,0.5,X,30.0,linear",
            "r3,up,0.5,Y,0.3,linear"]
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *rows]))
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0 and _accuracies(tmp_path / "st") == {"r3": 0.3}, r.stdout
    _in_pieces(monkeypatch)
    r = _ingest(tmp_path, "x.csv", "pieces")
    line = one_error_line(r, "x.csv: FAILED: ds_accuracy", "ds_task 'X'", "(2 of 3)", "0.5 % would be stored as 50 %")
    assert "nothing of this source was stored" in line, line
    assert not Store(str(tmp_path / "pieces")).exists()


def test_a_task_decided_percent_in_an_early_piece_and_fractions_overall_is_refused(tmp_path, monkeypatch):
    """The mirror, a guard of the rule above: X's 0.5 beside 45 in the first pieces is refused as a
    percent, though over the whole file X's values are mostly fractions (2 of 5 above 1), and read
    whole it is stored. A task that mixes the two units is refused, not stored by two rules."""
    rows = ["r0,up,0.5,X,45.0,linear", "r1,up,0.5,X,0.5,linear", "r2,up,0.5,X,30.0,linear",
            "r3,up,0.5,X,0.6,linear", "r4,up,0.5,X,0.7,linear"]
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *rows]))
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0 and _accuracies(tmp_path / "st") == {"r1": 0.5, "r3": 0.6, "r4": 0.7}, r.stdout
    _in_pieces(monkeypatch)
    r = _ingest(tmp_path, "x.csv", "pieces")
    one_error_line(r, "x.csv: FAILED: ds_accuracy", "ds_task 'X'", "2 of 5")
    assert not Store(str(tmp_path / "pieces")).exists()


def test_a_fraction_among_percents_in_an_early_piece_is_not_stored_divided(tmp_path, monkeypatch):
    """Declared percent: X's 0.62 in the first piece, its 41 ... 51 in the next ones. Read whole,
    0.62 is quarantined ("a fraction in a percent column?"); read in pieces it was stored as
    0.0062, exit code 0, as nothing of X above 1 had been read yet."""
    rows = ["r0,up,0.5,X,0.62,linear"] + [f"r{i},up,0.5,X,{40 + i},linear" for i in range(1, 12)]
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *rows]))
    (tmp_path / "m.yaml").write_text("units: {ds_accuracy: percent}\n")
    r = run_cli("ingest", "x.csv", "--mapping", "m.yaml", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 0 and "r0" not in _accuracies(tmp_path / "st"), r.stdout + r.stderr
    _in_pieces(monkeypatch)
    r = run_cli("ingest", "x.csv", "--mapping", "m.yaml", "--store", str(tmp_path / "pieces"), cwd=tmp_path)
    line = one_error_line(r, "x.csv: FAILED: ds_accuracy is declared percent", "ds_task 'X' (such as 0.62)",
                          "[41, 51]")
    assert "nothing of this source was stored" in line, line
    assert not Store(str(tmp_path / "pieces")).exists()


# --------------------------------------------------------------------------------------------
# Task names: one spelling per file
# --------------------------------------------------------------------------------------------


def test_a_task_written_two_ways_in_two_pieces_is_not_stored_as_two_tasks(tmp_path, monkeypatch):
    """'CIFAR100' in the first piece, 'cifar100' (4 rows) in the next: read whole, 'CIFAR100' is
    quarantined ("differs only in case from 'cifar100'"); read in pieces each piece had one
    spelling, and both were stored: two tasks, two groups, two fits."""
    rows = ["r0,up,0.5,CIFAR100,0.4,linear"] + [f"r{i},up,0.5,cifar100,0.4,linear" for i in range(1, 5)]
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *rows]))
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0 and set(pd.read_parquet(tmp_path / "st").ds_task) == {"cifar100"}, r.stdout
    _in_pieces(monkeypatch)
    r = _ingest(tmp_path, "x.csv", "pieces")
    tasks = set(pd.read_parquet(tmp_path / "pieces").ds_task) if Store(str(tmp_path / "pieces")).exists() else set()
    assert len(tasks) <= 1, (tasks, r.stdout + r.stderr)
    line = one_error_line(r, "x.csv: FAILED: ds_task: 'CIFAR100' (1 row) differs only in case from 'cifar100' (4 rows)")
    assert "nothing of this source was stored" in line, line


def test_a_later_piece_refuses_a_spelling_that_earlier_pieces_outnumber(tmp_path, monkeypatch):
    """The other order: 'cifar100' in the first pieces, one 'CIFAR100' last. Its piece, read on
    its own, had no other spelling; it takes the counts of the pieces before it now, and is
    quarantined as it is when the file is read whole."""
    rows = [f"r{i},up,0.5,cifar100,0.4,linear" for i in range(4)] + ["r4,up,0.5,CIFAR100,0.4,linear"]
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *rows]))
    _in_pieces(monkeypatch)
    r = _ingest(tmp_path, "x.csv", "pieces")
    assert r.returncode == 0 and set(pd.read_parquet(tmp_path / "pieces").ds_task) == {"cifar100"}, r.stdout
    assert "1 quarantined" in r.stdout and "differs only in case" in r.stdout, r.stdout


# --------------------------------------------------------------------------------------------
# Units of counts
# --------------------------------------------------------------------------------------------


def test_a_count_in_thousands_is_the_integer_it_names(tmp_path):
    """``units: {batch_size: thousands}``: 1.001 thousand was 1000.9999999999999 (float64's
    1.001 * 1000) and its row was quarantined, "batch_size: wrong type (... is not an integer)"."""
    h = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,batch_size"
    (tmp_path / "t.csv").write_text(f"{h}\na,up,0.5,pets,0.4,linear,1.001\nb,up,0.5,pets,0.4,linear,4.096\n"
                                    "c,up,0.5,pets,0.4,linear,1.0015\n")
    (tmp_path / "m.yaml").write_text("units: {batch_size: thousands}\n")
    r = run_cli("ingest", "t.csv", "--mapping", "m.yaml", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    t = pd.read_parquet(tmp_path / "st")
    assert dict(zip(t.run_id, t.batch_size)) == {"a": 1001, "b": 4096}, r.stdout
    assert "1 quarantined" in r.stdout and "batch_size: wrong type (not an integer)" in r.stdout, r.stdout  # 1001.5


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def test_a_date_in_iso_8601_that_does_not_exist_is_named_so():
    """'2024-02-30' was quarantined as "not a timestamp; write it as ISO 8601, e.g.
    2024-04-03T10:00:00Z": it is ISO 8601 already; the day does not exist."""
    from meta_study.validation import validate

    frame = pd.DataFrame({"source": "s", "run_id": ["a", "b", "c"], "us_task": "up", "us_accuracy": 0.5,
                          "ds_task": "pets", "ds_accuracy": 0.5, "eval_protocol": "linear",
                          "started_at": ["2024-02-30", "2024-04-03T25:00:00", "yesterday"]})
    reasons = dict(zip(*validate(frame).rejected[["run_id", "reason"]].T.values))
    assert reasons["a"] == "started_at: wrong type ('2024-02-30' is not a timestamp: no such date or time)", reasons
    assert reasons["b"].endswith("is not a timestamp: no such date or time)"), reasons
    assert reasons["c"].endswith("write it as ISO 8601, e.g. 2024-04-03T10:00:00Z)"), reasons


def test_a_metric_patterns_constants_are_checked_as_the_mappings_are():
    """A metric pattern's ``constants`` were not checked: ``eval_protocl: linear`` (a typo) was
    dropped without a word (rows stored with the protocol 'other'), ``eval_protocol: kfold`` and a
    list value were taken as they were. The mapping's own ``constants`` refuse all three."""
    import pytest

    from meta_study.errors import UserError
    from meta_study.ingest.mapping import parse_mapping

    def refused(constants: dict) -> str:
        with pytest.raises(UserError) as e:
            parse_mapping({"metrics": [{"pattern": "ds/{ds_task}/top1", "constants": constants}]}, "m.yaml")
        return str(e.value)

    assert refused({"eval_protocl": "linear"}) == ("m.yaml: metrics[0].constants: unknown canonical column "
                                                   "'eval_protocl'")
    assert refused({"eval_protocol": "kfold"}).startswith("m.yaml: metrics[0].constants.eval_protocol: unknown "
                                                          "protocol 'kfold'")
    assert refused({"shots": [1, 2]}) == "m.yaml: metrics[0].constants.shots: must be a single value, not list [1, 2]"
    assert refused({"ingested_at": "x"}).endswith("'ingested_at' is filled by the store and cannot be mapped")
    m = parse_mapping({"metrics": [{"pattern": "ds/{ds_task}/top1", "constants": {"eval_protocol": "linear"}}]}, "m")
    assert m.metrics[0].constants == {"eval_protocol": "linear"}


def test_a_percent_columns_fraction_refused_early_that_the_whole_file_keeps_refuses_the_file(tmp_path, monkeypatch):
    """The mirror, a guard of the rule above: X's 0.5 beside 45 and 50 is "a fraction?" in its
    piece, but a later 5 (a near-chance task, in percent) makes it an ordinary 0.5 %, stored read
    whole. Read in pieces, the file is refused rather than stored by two rules."""
    rows = (["r0,up,0.5,X,45,linear", "r1,up,0.5,X,0.5,linear", "r2,up,0.5,X,50,linear"]
            + [f"r{i},up,0.5,X,{5 if i == 12 else 50},linear" for i in range(3, 13)])
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *rows]))
    (tmp_path / "m.yaml").write_text("units: {ds_accuracy: percent}\n")
    r = run_cli("ingest", "x.csv", "--mapping", "m.yaml", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 0 and _accuracies(tmp_path / "st")["r1"] == 0.005, r.stdout + r.stderr
    _in_pieces(monkeypatch)
    r = run_cli("ingest", "x.csv", "--mapping", "m.yaml", "--store", str(tmp_path / "pieces"), cwd=tmp_path)
    one_error_line(r, "x.csv: FAILED: ds_accuracy is declared percent", "1 of its values <= 1 for ds_task 'X'")
    assert not Store(str(tmp_path / "pieces")).exists()


def test_a_fraction_among_percents_of_its_task_written_with_a_space_is_not_stored_divided(tmp_path):
    """'X ' is stored as task 'X' (spaces at either end dropped), but the percent check counted it
    apart: its 0.62 beside X's 41 ... 51 had no percents of its own task, and was stored as 0.0062."""
    rows = ["r0,up,0.5,X ,0.62,linear"] + [f"r{i},up,0.5,X,{40 + i},linear" for i in range(1, 12)]
    (tmp_path / "x.csv").write_text("".join(f"{line}\n" for line in [HA, *rows]))
    (tmp_path / "m.yaml").write_text("units: {ds_accuracy: percent}\n")
    r = run_cli("ingest", "x.csv", "--mapping", "m.yaml", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 0 and "r0" not in _accuracies(tmp_path / "st"), r.stdout + r.stderr
