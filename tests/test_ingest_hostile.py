"""Hostile but plausible ingest inputs (issues 24 and 22): each gives one clear line and its exit
code, or the right rows, and none hangs or prints a traceback.

Each case builds its inputs in a fresh directory and runs ``meta-study ingest`` (and sometimes
``store quarantine``) as a user would, one or more steps; a step names the exit code, a text its
output must hold, and optionally a check of the store. A hang fails the step at its subprocess
timeout (generous for a loaded machine; the whole corpus takes ~22 s at load 4.4 on 2 cores, the longest
case, five steps, 2.3 s).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from meta_study.store import Store
from conftest import run_cli

HEAD = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,shots\n"
GOOD_ROWS = [dict(run_id=f"r{i}", us_task="up", us_accuracy=0.5 + i / 100, ds_task="a", ds_accuracy=0.4 + i / 100,
                  eval_protocol="fewshot", shots=5) for i in range(3)]
BOMB = """\
description:
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
constants: {us_task: *i}
"""


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _csv(path: Path, lines: list[str]) -> None:
    path.write_text(HEAD + "".join(line + "\n" for line in lines))


def _rows(d: Path) -> list[dict]:
    return Store(str(d / "st")).to_pandas().sort_values(["run_id", "ds_task", "shots"]).to_dict("records")


@dataclass
class Step:
    args: list[str]                  # after "meta-study"; "ST" is the store, paths are relative to the case's directory
    rc: int
    needle: str | tuple[str, ...]    # text(s) the step's output (stdout and stderr) must hold
    one_line: bool = False           # an error: exactly one line on stderr, nothing on stdout
    check: Callable[[Path], None] | None = None


@dataclass
class Case:
    name: str
    make: Callable[[Path], None]
    steps: list[Step] = field(default_factory=list)


def _bomb(d: Path) -> None:
    _jsonl(d / "good.jsonl", GOOD_ROWS)
    (d / "m.yaml").write_text(BOMB)


def _binary_mapping(d: Path) -> None:
    _jsonl(d / "good.jsonl", GOOD_ROWS)
    (d / "m.yaml").write_bytes(b"\xff\xfe\x00\x01rename\x80\x81: {}\n")


def _mapping_as_list(d: Path) -> None:
    _jsonl(d / "good.jsonl", GOOD_ROWS)
    (d / "s.yaml").write_text("sources:\n  - uri: good.jsonl\n    mapping: [a.yaml, b.yaml]\n")


def _deep_yaml(d: Path) -> None:
    _jsonl(d / "good.jsonl", GOOD_ROWS)
    (d / "m.yaml").write_text("rename: " + "[" * 50_000 + "]" * 50_000 + "\n")


def _mapping_is_a_device(d: Path) -> None:
    _jsonl(d / "good.jsonl", GOOD_ROWS)
    os.symlink("/dev/zero", d / "m.yaml")


def _metrics_not_a_list(d: Path) -> None:
    _jsonl(d / "good.jsonl", GOOD_ROWS)
    (d / "m.yaml").write_text("metrics: 5\n")


def _special_entries(d: Path) -> None:
    (d / "in").mkdir()
    _jsonl(d / "in" / "ok.jsonl", GOOD_ROWS)
    os.symlink("/dev/zero", d / "in" / "zero.csv")
    os.mkfifo(d / "in" / "pipe.csv")


def _fifo(d: Path) -> None:
    os.mkfifo(d / "pipe.csv")


def _huge_ints(d: Path) -> None:
    base = dict(GOOD_ROWS[0])
    _jsonl(d / "big.jsonl", [{**base, "shots": 2 ** 64}, {**base, "run_id": "r1", "shots": -(2 ** 63) - 1},
                             {**base, "run_id": "r2", "shots": 10 ** 400}, {**base, "run_id": 2 ** 64}])
    _jsonl(d / "good.jsonl", GOOD_ROWS)


def _check_huge_ints(d: Path) -> None:
    ids = sorted(r["run_id"] for r in _rows(d))
    assert ids == ["18446744073709551616", "r0", "r1", "r2"]   # an integer run id, as its exact digits
    q = Store(str(d / "st")).quarantine().to_pandas()
    assert sorted(q["reason"].str.split(" ").str[0]) == ["shots:"] * 3


def _duplicate_header(d: Path) -> None:
    (d / "x.csv").write_text(HEAD.strip() + ",ds_accuracy\nr0,up,0.5,a,0.4,fewshot,5,0.9\n")


def _gz_twin(d: Path) -> None:
    (d / "in").mkdir()
    _csv(d / "in" / "x.csv", ["r0,up,0.5,a,0.4,fewshot,5"])
    (d / "in" / "x.csv.gz").write_bytes(gzip.compress((d / "in" / "x.csv").read_bytes()))


def _gz_alone(d: Path) -> None:
    _csv(d / "x.csv", ["r0,up,0.5,a,0.4,fewshot,5"])
    (d / "x.csv.gz").write_bytes(gzip.compress((d / "x.csv").read_bytes()))
    (d / "x.csv").unlink()


def _stale(d: Path) -> None:
    _csv(d / "x.csv", ["r0,up,0.5,a,0.4,fewshot,1", "r0,up,0.5,b,0.3,fewshot,1", "r1,up,0.6,a,0.5,fewshot,1"])
    _csv(d / "fixed.csv", ["r0,up,0.5,a,0.4,fewshot,10", "r0,up,0.5,b,0.3,fewshot,1"])


def _fix(d: Path) -> None:
    os.replace(d / "fixed.csv", d / "x.csv")


def _check_source_x(d: Path) -> None:
    assert {r["source"] for r in _rows(d)} == {"x"}


def _check_only_r0(d: Path) -> None:
    assert [r["run_id"] for r in _rows(d)] == ["r0"]     # the rows with non-ASCII digits were not read as 10


def _check_stale(d: Path) -> None:
    got = [(r["run_id"], r["ds_task"], r["shots"]) for r in _rows(d)]
    assert got == [("r0", "a", 10), ("r0", "b", 1), ("r1", "a", 1)], got


def _check_dropped(d: Path) -> None:
    got = [(r["run_id"], r["ds_task"], r["shots"]) for r in _rows(d)]
    assert got == [("r0", "a", 10), ("r0", "b", 1)], got


def _long_line(suffix: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        with open(d / f"long.{suffix}", "wb") as f:
            if suffix == "csv":
                f.write(HEAD.encode() + b"r0,up,0.5,a,0.4,fewshot,")
            else:
                f.write(b'{"run_id": "')
            f.write(b"9" * (9 << 20))                          # one 9 MB line: past the 8 MB cap
            f.write(b"\n" if suffix == "csv" else b'"}\n')
    return make


def _dup_keys(d: Path) -> None:
    (d / "dup.jsonl").write_text('{"run_id": "r0", "us_task": "up", "us_accuracy": 0.5, "ds_task": "a", '
                                 '"ds_accuracy": 0.4, "ds_accuracy": 0.9, "eval_protocol": "fewshot", "shots": 5}\n')


def _nested(d: Path) -> None:
    _jsonl(d / "n.jsonl", [{**GOOD_ROWS[0], "cfg": {"a": [1, 2], "b": None}, "flag": True, "n": 3}])


def _check_nested(d: Path) -> None:
    (row,) = _rows(d)
    assert dict(row["extra"]) == {"cfg": '{"a": [1, 2], "b": null}', "flag": "true", "n": "3"}


def _ansi(d: Path) -> None:
    _jsonl(d / "a.jsonl", GOOD_ROWS + [{**GOOD_ROWS[0], "run_id": "\x1b[31mRED\x1b[0m\u202e", "eval_protocol": "kfold"}])


def _braces(d: Path) -> None:
    _jsonl(d / "b.jsonl", GOOD_ROWS)
    (d / "m.yaml").write_text("run_id: '{{lit}}-{run_id}-}}'\n")


def _check_braces(d: Path) -> None:
    assert [r["run_id"] for r in _rows(d)] == ["{lit}-r0-}", "{lit}-r1-}", "{lit}-r2-}"]


def _extra_nope(d: Path) -> None:
    _jsonl(d / "e.jsonl", GOOD_ROWS)
    (d / "m.yaml").write_text("extra: [nope]\n")


def _digits(d: Path) -> None:
    _csv(d / "digits.csv", ["r0,up,0.5,a,0.4,fewshot,5", "r1,up,0.5,a,0.4,fewshot,١٠", "r2,up,0.5,a,0.4,fewshot,１０",
                            "r3,up,٠.٥,a,0.4,fewshot,5"])


def _percent(d: Path) -> None:
    _csv(d / "pct.csv", [f"r{i},up,0.5,a,{v},fewshot,5" for i, v in
                         enumerate([0.48, 0.90, 55, 60, 70, 80, 85, 90, 95, 99])])


def _check_empty(d: Path) -> None:
    assert not (d / "st").exists() or Store(str(d / "st")).to_pandas().empty


def _all_quarantined(d: Path) -> None:
    _csv(d / "proto.csv", [f"r{i},up,0.5,a,0.4,kfold,5" for i in range(5)])
    _jsonl(d / "good.jsonl", GOOD_ROWS)


def _broken_later(d: Path) -> None:
    _csv(d / "x.csv", [f"r{i},up,0.5,a,0.4,fewshot,5" for i in range(3)])


def _break(d: Path) -> None:
    _csv(d / "x.csv", [f"r{i},up,0.5,a,0.4,few-shot,5" for i in range(3)])


def _check_three(d: Path) -> None:
    assert len(_rows(d)) == 3      # a source that failed changed nothing but the quarantine


def _top_reason(d: Path) -> None:
    _csv(d / "mixed.csv", ["r0,up,0.5,a,0.4,fewshot,5", "r1,up,0.5,a,0.4,kfold,5", "r2,up,0.5,a,0.4,kfold,5",
                           "r3,up,0.5,a,NaN,fewshot,5"])


ONE = dict(one_line=True)
CASES = [
    # --- issue 24, item 2: never hang, never a traceback
    Case("yaml_alias_bomb", _bomb, [Step(["ingest", "good.jsonl", "--mapping", "m.yaml", "--store", "ST"], 2,
                                         "m.yaml: cannot read mapping (YAML aliases (*a) are not allowed", **ONE)]),
    Case("binary_mapping", _binary_mapping, [Step(["ingest", "good.jsonl", "--mapping", "m.yaml", "--store", "ST"], 2,
                                                  "m.yaml: cannot read mapping (not UTF-8 text: byte 0)", **ONE)]),
    Case("mapping_as_a_list_in_a_sources_file", _mapping_as_list, [
        Step(["ingest", "--sources-file", "s.yaml", "--store", "ST"], 2,
             "s.yaml: sources[0].mapping: must be the path of a mapping file, not ['a.yaml', 'b.yaml']", **ONE)]),
    Case("yaml_nested_too_deeply", _deep_yaml, [Step(["ingest", "good.jsonl", "--mapping", "m.yaml", "--store", "ST"],
                                                     2, "m.yaml: cannot read mapping (nested too deeply)", **ONE)]),
    Case("mapping_is_dev_zero", _mapping_is_a_device, [
        Step(["ingest", "good.jsonl", "--mapping", "m.yaml", "--store", "ST"], 2,
             "m.yaml: cannot read mapping (not a regular file)", **ONE)]),
    Case("mapping_metrics_not_a_list", _metrics_not_a_list, [
        Step(["ingest", "good.jsonl", "--mapping", "m.yaml", "--store", "ST"], 2, "'metrics' must be a list", **ONE)]),
    Case("dir_with_dev_zero_link_and_fifo", _special_entries, [
        Step(["ingest", "in", "--store", "ST"], 0,
             ("in/ok.jsonl: 3 new", "in/pipe.csv: skipped (a FIFO)", "in/zero.csv: skipped (a character device)"))]),
    Case("fifo_named_directly", _fifo, [Step(["ingest", "pipe.csv", "--store", "ST"], 2,
                                             "pipe.csv: cannot read a FIFO: ingest reads regular files only", **ONE)]),
    Case("jsonl_integers_past_int64", _huge_ints, [
        Step(["ingest", "big.jsonl", "good.jsonl", "--store", "ST"], 0,
             "big.jsonl: 1 new, 0 updated, 0 unchanged, 3 quarantined", check=_check_huge_ints)]),
    # --- issue 24, item 3: no silent wrong data
    Case("csv_duplicate_header", _duplicate_header, [
        Step(["ingest", "x.csv", "--store", "ST"], 2,
             "x.csv: FAILED: column 'ds_accuracy' appears twice in the header (columns 5 and 8)", **ONE)]),
    Case("csv_and_csv_gz_of_one_export", _gz_twin, [
        Step(["ingest", "in", "--store", "ST"], 2, "in/x.csv and in/x.csv.gz: both would be source 'x'", **ONE)]),
    Case("csv_gz_source_name", _gz_alone, [
        Step(["ingest", "x.csv.gz", "--store", "ST"], 0, "1 new", check=_check_source_x)]),
    Case("corrected_key_replaces_the_stale_row", _stale, [
        Step(["ingest", "x.csv", "--store", "ST"], 0, "x.csv: 3 new"),
        Step(["ingest", "x.csv", "--store", "ST"], 0, "x.csv: unchanged since its last ingest", check=_fix),
        # the run's other row, written again beside its corrected one, is unchanged (it was "updated")
        Step(["ingest", "x.csv", "--store", "ST"], 0,
             "x.csv: 1 new, 0 updated, 1 unchanged, 0 quarantined, 1 deleted, 1 stored runs not in the file kept "
             "(--drop-missing removes them)", check=_check_stale),
        Step(["ingest", "x.csv", "--drop-missing", "--store", "ST"], 0,
             "x.csv: 0 new, 0 updated, 2 unchanged, 0 quarantined, 1 deleted (", check=_check_dropped)]),
    # --- issue 24, item 7: smaller
    Case("csv_line_past_8mb", _long_line("csv"), [
        Step(["ingest", "long.csv", "--store", "ST"], 2, "long.csv: FAILED: line 2 is longer than 8 MB", **ONE)]),
    Case("jsonl_line_past_8mb", _long_line("jsonl"), [
        Step(["ingest", "long.jsonl", "--store", "ST"], 2, "long.jsonl:1: line longer than 8 MB", **ONE)]),
    Case("jsonl_duplicate_keys", _dup_keys, [
        Step(["ingest", "dup.jsonl", "--store", "ST"], 2, "dup.jsonl:1: key 'ds_accuracy' appears twice in one object",
             **ONE)]),
    Case("nested_extra_as_json", _nested, [Step(["ingest", "n.jsonl", "--store", "ST"], 0, "1 new",
                                                check=_check_nested)]),
    Case("ansi_run_id_printed_escaped", _ansi, [
        Step(["ingest", "a.jsonl", "--store", "ST"], 0, "3 new"),
        Step(["store", "quarantine", "ST"], 0, "- [a] \\x1b[31mRED\\x1b[0m\\u202e (a.jsonl, ds_task a): eval_protocol: unknown protocol"),
    ]),
    Case("run_id_template_with_literal_braces", _braces, [
        Step(["ingest", "b.jsonl", "--mapping", "m.yaml", "--store", "ST"], 0, "3 new", check=_check_braces)]),
    Case("extra_names_a_missing_column", _extra_nope, [
        Step(["ingest", "e.jsonl", "--mapping", "m.yaml", "--store", "ST"], 2,
             "e.jsonl: FAILED: extra: column(s) 'nope' not in the input", **ONE)]),
    Case("non_ascii_digits", _digits, [
        Step(["ingest", "digits.csv", "--store", "ST"], 0,
             "digits.csv: 1 new, 0 updated, 0 unchanged, 3 quarantined (", check=_check_only_r0)]),
    # --- issue 22, item 4: no silent corruption from units
    Case("percent_column_refused_whole", _percent, [
        Step(["ingest", "pct.csv", "--store", "ST"], 2,
             "pct.csv: FAILED: ds_accuracy is in percent, not a fraction: 8 of 10 values are in (1, 100], so nothing "
             "of this source was stored; but ds_accuracy also has 2 values in (0, 1]", one_line=True, check=_check_empty)]),
    Case("every_row_quarantined_fails", _all_quarantined, [
        Step(["ingest", "proto.csv", "--store", "ST"], 2,
             "proto.csv: FAILED: all 5 rows quarantined, nothing stored; 5 for: eval_protocol: unknown protocol 'kfold'",
             **ONE),
        Step(["ingest", "proto.csv", "good.jsonl", "--store", "ST"], 1, "1 of 2 sources failed")]),
    Case("top_quarantine_reason_in_the_summary", _top_reason, [
        Step(["ingest", "mixed.csv", "--store", "ST"], 0,
             ("mixed.csv: 1 new, 0 updated, 0 unchanged, 3 quarantined (", " s); 3 of 4 rows rejected, 2 of them for: eval_protocol: "
              "unknown protocol 'kfold' (expected one of fewshot, finetune, linear, zeroshot, shift, other)\n"))]),
    Case("a_broken_file_keeps_its_runs_stored_rows", _broken_later, [
        Step(["ingest", "x.csv", "--store", "ST"], 0, "x.csv: 3 new", check=_break),
        Step(["ingest", "x.csv", "--store", "ST"], 2, "x.csv: FAILED: all 3 rows quarantined", check=_check_three),
        Step(["ingest", "x.csv", "--store", "ST"], 2, "x.csv: FAILED: all 3 rows quarantined")]),   # read again
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(tmp_path, case):
    case.make(tmp_path)
    for i, step in enumerate(case.steps):
        args = [str(tmp_path / "st") if a == "ST" else a for a in step.args]
        r = run_cli(*args, cwd=tmp_path, timeout=120)
        out = r.stdout + r.stderr
        where = f"step {i}: {' '.join(step.args)}\n{out}"
        assert "Traceback" not in out and "Aborted" not in out, where
        assert r.returncode == step.rc, where
        for needle in (step.needle,) if isinstance(step.needle, str) else step.needle:
            assert needle in out, where
        if step.one_line:
            lines = [line for line in r.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and not r.stdout.strip(), where
        assert "\x1b" not in out, where      # nothing from the input reaches the terminal raw
        if step.check is not None:
            step.check(tmp_path)



@pytest.mark.parametrize("doc, refused", [
    ({"extra": ["nope"]}, True),            # an MLflow ingest keeps every unnamed param and tag already
    ({"extra": "none"}, True),
    ({"extra": "rest"}, False),              # the default, said out loud
    ({"params": {"my_lr": "lr"}}, False),
])
def test_an_mlflow_mapping_refuses_what_it_would_ignore(doc, refused):
    """`extra` (like `join` and `rename`) means nothing to an MLflow ingest: refused in one line,
    never silently ignored."""
    from meta_study.errors import UserError
    from meta_study.ingest.mapping import parse_mapping
    from meta_study.ingest.mlflow_runs import mlflow_mapping

    m = parse_mapping(doc, "m.yaml")
    if refused:
        with pytest.raises(UserError, match=r"^m.yaml: 'extra' is for file exports; an MLflow ingest keeps every"):
            mlflow_mapping(m)
    else:
        assert mlflow_mapping(m).name == "m.yaml"
