"""Ingest review (s48): JSON Lines files are checked by their keys before anything is read, a
long table given the wide join mapping is told the shipped mapping that fits it, a source of a
``--sources-file`` is told its entry's ``mapping:`` (not ``--mapping``), and a mapping written in
another order is the same mapping. Each test failed before its fix."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from meta_study.ingest import open_sources
from meta_study.ingest.files import FileSource, RefusedFiles
from meta_study.ingest.mapping import load_mapping, parse_mapping
from meta_study.ingest.sources import SourceOptions
from meta_study.store import Store
from conftest import MAPPINGS, REPO, run_cli

TIMM = REPO / "examples" / "data" / "timm"


def _failed(out: str) -> list[str]:
    return [line for line in out.splitlines() if ": FAILED: " in line]


def _timm_long_jsonl(path: Path, rows: int = 30) -> None:
    """The first rows of the shipped long timm table as JSON Lines (its columns, not meta-study's)."""
    pd.read_csv(TIMM / "timm_us_ds.csv", nrows=rows).to_json(path, orient="records", lines=True)


def _lacks_us_accuracy(path: Path) -> None:
    rows = [{"run_id": f"r{i}", "us_task": "in1k", "us_acc": 0.5, "ds_task": "pets", "ds_accuracy": 0.4,
             "eval_protocol": "linear"} for i in range(3)]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pd.DataFrame(rows).to_csv(path, index=False)


# -- 1. JSON Lines get the early check of their columns ---------------------------------------


def test_jsonl_whose_keys_fit_no_mapping_names_the_shipped_mapping(tmp_path: Path) -> None:
    """A JSON Lines copy of timm's long table without --mapping failed with "(add a mapping with
    --mapping ...)" while the same table as CSV named examples/mappings/timm_long.yaml; its keys
    are now checked before it is read, as a CSV header is."""
    _timm_long_jsonl(tmp_path / "timm.jsonl")
    r = run_cli("ingest", str(tmp_path / "timm.jsonl"), "--store", str(tmp_path / "st"), "--quiet", cwd=REPO)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert "no column for run_id, us_accuracy, ds_accuracy, eval_protocol after mapping" in line
    assert "use --mapping examples/mappings/timm_long.yaml (shipped with meta-study; it fits its columns)" in line


def test_jsonl_and_csv_with_one_problem_fail_in_one_line(tmp_path: Path) -> None:
    """A CSV and a JSONL file lacking the same column: one line for both (the JSONL file had a line
    of its own, found only when it was read), refused before anything is read."""
    d = tmp_path / "in"
    d.mkdir()
    _lacks_us_accuracy(d / "a.csv")
    _lacks_us_accuracy(d / "b.jsonl")
    srcs = open_sources([str(d)], None)
    assert len(srcs) == 1 and isinstance(srcs[0], RefusedFiles), srcs
    assert sorted(Path(p).name for p in srcs[0].paths) == ["a.csv", "b.jsonl"]
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert "(2 files): FAILED: no column for us_accuracy after mapping" in line


def test_jsonl_whose_later_objects_carry_a_column_is_not_refused(tmp_path: Path) -> None:
    """Judged by every object's keys, as reading it does: a first object without eval_protocol is
    one quarantined row, not a refused file."""
    p = tmp_path / "late.jsonl"
    first = {"run_id": "r1", "us_task": "in1k", "us_accuracy": 0.5, "ds_task": "pets", "ds_accuracy": 0.4}
    p.write_text(json.dumps(first) + "\n" + json.dumps({**first, "run_id": "r2", "eval_protocol": "linear"}) + "\n")
    srcs = open_sources([str(p)], None)
    assert [type(s) for s in srcs] == [FileSource]
    r = run_cli("ingest", str(p), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0 and "1 new" in r.stdout and "1 quarantined" in r.stdout, r.stdout + r.stderr


def test_broken_jsonl_is_left_to_its_reading(tmp_path: Path) -> None:
    """A JSONL file that cannot be parsed is not judged by its keys: reading it says what (its line)."""
    p = tmp_path / "bad.jsonl"
    p.write_text('{"run_id": "r1", "us_acc": 1}\n{"run_id": \n')
    r = run_cli("ingest", str(p), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 2
    (line,) = _failed(r.stdout + r.stderr)
    assert "bad.jsonl:2: invalid JSON" in line, line


# -- 2. a long table given the wide join mapping ------------------------------------------------


def test_long_table_given_the_join_mapping_names_the_long_mapping(tmp_path: Path) -> None:
    """``ingest examples/data/timm/timm_us_ds.csv --mapping examples/mappings/timm_wide.yaml`` said
    only that the join's tables were not given; the shipped mapping that fits the file's columns
    is now named too."""
    r = run_cli("ingest", "examples/data/timm/timm_us_ds.csv", "--mapping", "examples/mappings/timm_wide.yaml",
                "--store", str(tmp_path / "st"), "--quiet", cwd=REPO)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert "join table 'results-imagenet.csv' (imagenet) matched no input file" in line
    assert line.endswith("; or use --mapping examples/mappings/timm_long.yaml (shipped with meta-study; it fits "
                         "its columns)"), line


def test_long_table_elsewhere_given_the_join_mapping_names_the_long_mapping(tmp_path: Path) -> None:
    """Away from the join's files (nothing beside it), the line names the fitting mapping alone."""
    _timm_long_jsonl(tmp_path / "timm.jsonl")
    r = run_cli("ingest", str(tmp_path / "timm.jsonl"), "--mapping", str(MAPPINGS / "timm_wide.yaml"),
                "--store", str(tmp_path / "st"), "--quiet", cwd=REPO)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert line.endswith("matched no input file; use --mapping examples/mappings/timm_long.yaml (shipped with "
                         "meta-study; it fits its columns)"), line


# -- 3. a source of a --sources-file is told its entry's mapping: --------------------------------


@dataclass(frozen=True)
class _EntryOptions(SourceOptions):
    """The options of a sources-file entry (``from_sources_file``, which the sources file's entries
    carry to the file sources)."""

    from_sources_file: bool = True


def test_sources_file_entry_is_told_its_mapping_key(tmp_path: Path) -> None:
    """"use --mapping examples/mappings/timm_wide.yaml" named an option a sources file has no
    place for, by a path relative to the working directory where the file's paths are relative
    to itself: an entry is told its ``mapping:`` with the absolute path."""
    (refused,) = open_sources([str(TIMM)], None, _EntryOptions())
    assert isinstance(refused, RefusedFiles)
    assert "--mapping" not in refused.error, refused.error
    assert (f"give its entry in the sources file 'mapping: {MAPPINGS / 'timm_wide.yaml'}' (shipped with meta-study; "
            "it joins 6 of them: results-imagenet-a.csv, results-imagenet-r.csv, results-imagenet-real.csv and 3 more)"
            ) in refused.error
    assert f"'mapping: {MAPPINGS / 'timm_long.yaml'}' (it fits timm_us_ds.csv)" in refused.error


def test_sources_file_entry_without_mapping_is_told_to_add_one(tmp_path: Path) -> None:
    _lacks_us_accuracy(tmp_path / "x.csv")
    (refused,) = open_sources([str(tmp_path / "x.csv")], None, _EntryOptions())
    assert isinstance(refused, RefusedFiles)
    assert refused.error == ("no column for us_accuracy after mapping (add a 'mapping:' to its entry in the sources "
                             "file; see docs/ingest.md)")
    (plain,) = open_sources([str(tmp_path / "x.csv")], None)      # the command line's SOURCE: --mapping
    assert isinstance(plain, RefusedFiles) and "(add a mapping with --mapping; see docs/ingest.md)" in plain.error


def test_sources_file_entry_with_the_join_mapping_is_told_its_mapping_key(tmp_path: Path) -> None:
    (src,) = open_sources([str(TIMM / "timm_us_ds.csv")], load_mapping(str(MAPPINGS / "timm_wide.yaml")),
                          _EntryOptions())
    try:
        list(src.batches(Store(str(tmp_path / "st")), lambda *a: None))
    except Exception as e:  # noqa: BLE001
        msg = str(e)
    else:
        raise AssertionError("the join did not fail")
    assert msg.endswith(f"; or give its entry in the sources file 'mapping: {MAPPINGS / 'timm_long.yaml'}' "
                        "(shipped with meta-study; it fits its columns)"), msg


# -- 4. a mapping in another order is the same mapping -------------------------------------------


_DOC = {"name": "m", "source": "xs", "rename": {"Model": "model_name", "Acc": "ds_accuracy"},
        "constants": {"experiment": "e1", "researcher": "r"}, "units": {"us_accuracy": "percent",
                                                                        "ds_accuracy": "percent"},
        "extra": ["a", "b"]}


def _reordered(doc: dict) -> dict:
    return {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else list(reversed(v))
                if isinstance(v, list) else v) for k, v in reversed(list(doc.items()))}


def test_mapping_fingerprint_does_not_depend_on_the_order_of_its_maps() -> None:
    a, b = parse_mapping(_DOC, "a.yaml"), parse_mapping(_reordered(_DOC), "a.yaml")
    assert a.rename != b.rename or list(a.rename) != list(b.rename)     # written in another order
    assert a.fingerprint() == b.fingerprint()
    # where order means something (the first arch_family rule that matches wins), it still counts
    rules = {"vit": "^vit", "resnet": "res"}
    c = parse_mapping({**_DOC, "arch_family": rules}, "a.yaml")
    d = parse_mapping({**_DOC, "arch_family": dict(reversed(list(rules.items())))}, "a.yaml")
    assert c.fingerprint() != d.fingerprint()
    # a mapping whose maps are in sorted order keeps the fingerprint it had (stores are not read again)
    wide = load_mapping(str(MAPPINGS / "timm_wide.yaml"))
    assert wide.fingerprint() == hashlib.sha256(repr(wide).encode()).hexdigest()[:24]


def test_reordered_mapping_does_not_read_the_file_again(tmp_path: Path) -> None:
    """The same mapping with its entries in another order made the next ingest read the file
    again as if the mapping had changed."""
    pd.DataFrame({"run_id": ["r1", "r2"], "us_task": "in1k", "us_accuracy": [70.0, 80.0], "ds_task": "pets",
                  "Acc": [50.0, 60.0], "eval_protocol": "linear", "Model": ["vit_a", "vit_b"], "a": "x",
                  "b": "y"}).to_csv(tmp_path / "x.csv", index=False)
    import yaml

    (tmp_path / "m1.yaml").write_text(yaml.safe_dump(_DOC, sort_keys=False))
    (tmp_path / "m2.yaml").write_text(yaml.safe_dump(_reordered(_DOC), sort_keys=False))
    st = str(tmp_path / "st")
    first = run_cli("ingest", str(tmp_path / "x.csv"), "--mapping", str(tmp_path / "m1.yaml"), "--store", st,
                    "--quiet")
    assert first.returncode == 0 and "2 new" in first.stdout, first.stdout + first.stderr
    again = run_cli("ingest", str(tmp_path / "x.csv"), "--mapping", str(tmp_path / "m2.yaml"), "--store", st,
                    "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "unchanged since its last ingest (same content, mapping and schema), not read again" in again.stdout


# -- 2b. the mirror: one table of the join given alone ----------------------------------------------


def test_one_table_of_the_join_names_the_join_on_its_directory(tmp_path: Path) -> None:
    """``ingest examples/data/timm/results-imagenet.csv --mapping examples/mappings/timm_long.yaml``
    (or without a mapping) named no mapping: the join fits the file with the tables beside it,
    so the line names it with the directory to give."""
    for extra in (["--mapping", "examples/mappings/timm_long.yaml"], []):
        r = run_cli("ingest", "examples/data/timm/results-imagenet.csv", *extra, "--store", str(tmp_path / "st"),
                    "--quiet", cwd=REPO)
        assert r.returncode == 2, r.stdout + r.stderr
        (line,) = _failed(r.stdout + r.stderr)
        assert line.endswith("; use --mapping examples/mappings/timm_wide.yaml on examples/data/timm (shipped with "
                             "meta-study; it joins this file with the tables beside it); see docs/ingest.md"), line


def test_one_table_of_the_join_alone_elsewhere_names_no_join(tmp_path: Path) -> None:
    """Copied away from the other tables, nothing is beside it: no join is named."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "results-imagenet.csv").write_bytes((TIMM / "results-imagenet.csv").read_bytes())
    r = run_cli("ingest", str(tmp_path / "in" / "results-imagenet.csv"), "--store", str(tmp_path / "st"), "--quiet",
                cwd=REPO)
    assert r.returncode == 2
    (line,) = _failed(r.stdout + r.stderr)
    assert "timm_wide" not in line and line.endswith("(add a mapping with --mapping; see docs/ingest.md)"), line


def test_one_table_of_the_join_in_a_sources_file_entry(tmp_path: Path) -> None:
    (refused,) = open_sources([str(TIMM / "results-imagenet.csv")], None, _EntryOptions())
    assert isinstance(refused, RefusedFiles)
    assert (f"; give its entry in the sources file 'uri: {TIMM}' with 'mapping: {MAPPINGS / 'timm_wide.yaml'}' "
            "(shipped with meta-study; it joins this file with the tables beside it)") in refused.error, refused.error
