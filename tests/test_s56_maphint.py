"""A mapping constant refused on a file with a column of that name said to "rename the column away",
which no mapping could do (``rename:`` takes canonical targets only: ``unknown canonical column``).
The message now names the ``drop:`` key, and following it literally ingests the file with the
constant's value (the public tables each carry an eval_protocol column)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import yaml

from conftest import one_error_line, run_cli
from meta_study.ingest.mapping import IngestMapping, parse_mapping

HELM = Path(__file__).resolve().parents[1] / "examples" / "data" / "helm_classic" / "us_ds.csv"


def _proposed_yaml(line: str) -> str:
    """The YAML the refusal tells the user to add to the mapping, as printed."""
    m = re.search(r"add '([^']+)' to the mapping", line)
    assert m, line
    return m.group(1)


def test_following_the_advice_ingests_the_constant(tmp_path: Path) -> None:
    data = tmp_path / "us_ds.csv"
    shutil.copy(HELM, data)
    own = set(pd.read_csv(data)["eval_protocol"])
    assert own == {"other"}
    mapping = tmp_path / "m.yaml"
    mapping.write_text("constants: {eval_protocol: zeroshot}\n")
    r = run_cli("ingest", str(data), "--mapping", str(mapping), "--store", str(tmp_path / "s1"))
    line = one_error_line(r, "constants.eval_protocol='zeroshot' would overwrite the input's own eval_protocol values")
    mapping.write_text(mapping.read_text() + _proposed_yaml(line) + "\n")   # literally what it says
    r = run_cli("ingest", str(data), "--mapping", str(mapping), "--store", str(tmp_path / "s2"))
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "s2")
    assert len(got) == len(pd.read_csv(data)) and set(got["eval_protocol"]) == {"zeroshot"}
    # the dropped column is no value of a run: not in extra either
    assert not any("eval_protocol" in (e or {}) for e in got["extra"])
    # the same file and mapping again: nothing to write
    r = run_cli("ingest", str(data), "--mapping", str(mapping), "--store", str(tmp_path / "s2"))
    assert r.returncode == 0 and "unchanged since its last ingest" in r.stdout, (r.stdout, r.stderr)


def test_a_renamed_column_is_named_by_its_rename(tmp_path: Path) -> None:
    """Values from a renamed column: the rename is what to take out (``drop:`` of a renamed column
    is refused, and the file has no column of the canonical name to drop)."""
    (tmp_path / "r.csv").write_text("run_id,model_name,proto,us_task,ds_task,us_accuracy,ds_accuracy\n"
                                    "a,vit_b16,shift,in,pets,0.8,0.7\n")
    doc = {"rename": {"proto": "eval_protocol"}, "constants": {"eval_protocol": "zeroshot"}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    r = run_cli("ingest", "r.csv", "--mapping", "m.yaml", "--store", "s1", cwd=tmp_path)
    line = one_error_line(r, "remove the entry rename.proto so that the constant fills every row")
    assert "drop:" not in line, line
    del doc["rename"][re.search(r"remove the entry rename\.(\w+)", line).group(1)]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    r = run_cli("ingest", "r.csv", "--mapping", "m.yaml", "--store", "s2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "s2")
    assert got["eval_protocol"].tolist() == ["zeroshot"] and dict(got["extra"].iloc[0]) == {"proto": "shift"}


def test_drop_leaves_a_plain_column_out_of_extra(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("run_id,model_name,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy,note,junk\n"
                                    "a,vit_b16,in,pets,shift,0.8,0.7,keep,x\n")
    (tmp_path / "m.yaml").write_text("drop: [junk]\n")
    r = run_cli("ingest", "a.csv", "--mapping", "m.yaml", "--store", "st", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "st")
    assert dict(got["extra"].iloc[0]) == {"note": "keep"} and got["eval_protocol"].tolist() == ["shift"]


def test_drop_of_a_column_the_file_lacks_is_one_line(tmp_path: Path) -> None:
    shutil.copy(HELM, tmp_path / "us_ds.csv")
    (tmp_path / "m.yaml").write_text("constants: {eval_protocol: zeroshot}\ndrop: [eval_protocl]\n")
    r = run_cli("ingest", "us_ds.csv", "--mapping", "m.yaml", "--store", "st", cwd=tmp_path)
    one_error_line(r, "drop: column(s) 'eval_protocl' not in the input")


def test_drop_is_checked_where_the_mapping_is_read() -> None:
    for doc, said in (({"drop": "x"}, None), ({"drop": [1]}, "drop: must be a list of file column names"),
                      ({"drop": []}, "drop: must be a list"),
                      ({"drop": ["a"], "rename": {"a": "model_name"}}, "drop: 'a' is also renamed"),
                      ({"drop": ["a"], "extra": ["a"]}, "drop: 'a' is also listed in extra")):
        try:
            m = parse_mapping(doc, "m.yaml")
        except Exception as e:   # a UserError, one line
            assert said is not None and said in str(e), (doc, e)
        else:
            assert said is None and m.drop == ("x",), doc


def test_fingerprint_unchanged_without_drop_and_changed_with_it() -> None:
    # the value before `drop:` existed: a mapping without it is read as unchanged after the upgrade
    # (a new field in the repr had re-read every file and MLflow run once)
    assert IngestMapping(name="m").fingerprint() == IngestMapping(name="m", drop=()).fingerprint()
    assert IngestMapping(name="m").fingerprint() == "1f73ffc8cb69375980838f66"
    assert IngestMapping(name="m", drop=("a",)).fingerprint() != IngestMapping(name="m").fingerprint()
    assert IngestMapping(name="m", drop=("a", "b")).fingerprint() == IngestMapping(name="m", drop=("b", "a")).fingerprint()


def test_an_mlflow_mapping_refuses_drop() -> None:
    """`drop:` names a file's columns: an MLflow mapping with it was read as if it had none (its
    params and tags still kept in extra), without a word."""
    import pytest

    from meta_study.errors import UserError
    from meta_study.ingest.mlflow_runs import mlflow_mapping

    m = parse_mapping({"name": "m", "drop": ["lr"]}, "m.yaml")
    with pytest.raises(UserError, match="'join', 'rename' and 'drop' are for file exports"):
        mlflow_mapping(m)


def test_drop_frees_a_column_name_for_a_rename(tmp_path: Path) -> None:
    """`rename: {name: model_name}` beside `drop: [model_name]` on a file with both columns: the
    renamed column's values are stored (it was refused as 'more than one column maps to
    model_name', and the columns' order decided which one the rows got)."""
    (tmp_path / "a.csv").write_text("run_id,model_name,name,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
                                    "a,old-name,vit_b16,in,pets,shift,0.8,0.7\n")
    (tmp_path / "m.yaml").write_text("rename: {name: model_name}\ndrop: [model_name]\n")
    r = run_cli("ingest", "a.csv", "--mapping", "m.yaml", "--store", "st", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "st")
    assert got["model_name"].tolist() == ["vit_b16"]
    assert "old-name" not in str(got["extra"].iloc[0])
