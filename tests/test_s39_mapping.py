"""Mapping and sources-file defects of a fresh review (s39): keys given twice in a YAML file, mapping
entries of the wrong type or that contradict each other, a top-level key of a sources file that was
ignored, a param mapped to ``extra`` that was lost, and arch-family rules that never matched. Each
test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from meta_study.errors import UserError
from meta_study.ingest.mapping import infer_arch_family, load_mapping, parse_mapping
from meta_study.ingest.sources import load_sources_file
from meta_study.store import Store
from conftest import run_cli


def _refused(doc: dict, match: str) -> str:
    with pytest.raises(UserError, match=match) as e:
        parse_mapping(doc, "m.yaml")
    assert str(e.value).startswith("m.yaml: ") and "\n" not in str(e.value), e.value
    return str(e.value)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"run_id": ["r0", "r1"], "model_name": "vit_b16", "us_task": "up", "us_accuracy": [0.5, 0.6],
                         "ds_task": "pets", "ds_accuracy": [0.4, 0.5], "eval_protocol": "linear"})


def test_a_key_given_twice_in_a_mapping_or_sources_file_is_refused_not_half_read(tmp_path: Path) -> None:
    """PyYAML keeps the last of a key given twice: a second ``rename:`` block dropped the first
    without a word (its columns went to extra, and a file without the canonical columns they
    named was refused for lacking them), and a second entry list in a sources file dropped the
    first entries' sources."""
    m = tmp_path / "m.yaml"
    m.write_text("rename:\n  top1: us_accuracy\nunits: {us_accuracy: percent}\nrename:\n  model: model_name\n")
    with pytest.raises(UserError, match=r"m\.yaml: cannot read mapping \(key 'rename' given twice in one map, "
                                        r"at lines 1 and 4: one would be ignored\)"):
        load_mapping(str(m))
    m.write_text("rename:\n  top1: us_accuracy\n  top1: ds_accuracy\n")
    with pytest.raises(UserError, match="key 'top1' given twice in one map, at lines 2 and 3"):
        load_mapping(str(m))
    m.write_text("rename: {a: seed, a: seed}\n")   # one line, the same value: still a slip
    with pytest.raises(UserError, match="key 'a' given twice"):
        load_mapping(str(m))
    s = tmp_path / "s.yaml"
    s.write_text("sources:\n  - uri: a.csv\nsources:\n  - uri: b.csv\n")
    with pytest.raises(UserError, match=r"s\.yaml: cannot read sources file \(key 'sources' given twice"):
        load_sources_file(str(s))
    # keys of different maps may repeat, as before
    m.write_text("metrics:\n  - {pattern: 'us/{us_task}/top1', unit: percent}\n"
                 "  - {pattern: 'ds/{ds_task}/top1', unit: percent}\n")
    assert [p.unit for p in load_mapping(str(m)).metrics] == ["percent", "percent"]


def test_entries_of_the_wrong_type_or_shape_are_one_line_not_a_traceback() -> None:
    """A capture named twice was re.error's "redefinition of group name" traceback, a key that is
    not text (``1:``) a TypeError traceback; ``pattern: null`` became the metric key "None", and
    ``file: null`` or ``key: {a: 1}`` of a join a file glob "None" and a column "{'a': 1}"."""
    _refused({"metrics": [{"pattern": "ds/{ds_task}/{ds_task}"}]}, r"metrics\[0\]: \{ds_task\} twice in pattern")
    _refused({1: 2}, "unknown key\\(s\\) 1 ")
    _refused({"metrics": [{"pattern": "ds/{ds_task}", 3: 4}]}, r"metrics\[0\]: unknown key\(s\) 3")
    _refused({"metrics": [{"pattern": None}]}, r"metrics\[0\]\.pattern: must be a metric key pattern")
    join = {"key": "model", "upstream": {"file": "up.csv", "task": "jft", "accuracy": "top1"},
            "downstream": [{"file": "pets.csv", "task": "pets", "accuracy": "top1"}]}
    assert parse_mapping({"join": join}, "m.yaml").join is not None
    _refused({"join": {**join, "upstream": {"file": None, "task": "jft", "accuracy": "top1"}}},
             r"join\.upstream\.file: must be a name, not None")
    _refused({"join": {**join, "downstream": [{"file": "p.csv", "task": "p", "accuracy": ["a"], 5: 1}]}},
             r"join\.downstream\[0\]: unknown key\(s\) 5")
    _refused({"join": {**join, "key": {"a": 1}}}, r"join\.key: must be a column name or a list of them")
    _refused({"join": {**join, "key": []}}, r"join\.key: must be a column name")


def test_an_upstream_patterns_task_message_says_which_constants_count() -> None:
    """``constants: {us_task: jft}`` at the top of a mapping does not name an upstream pattern's
    task; the refusal said the pattern "needs ... a us_task constant" to a mapping that had one."""
    msg = _refused({"constants": {"us_task": "jft"}, "metrics": [{"pattern": "us/top1", "role": "us"}]},
                   r"metrics\[0\]: an upstream pattern needs a \{us_task\} capture")
    assert "metrics[0].constants.us_task" in msg and "the mapping's constants do not name it" in msg, msg
    ok = parse_mapping({"metrics": [{"pattern": "us/top1", "role": "us", "constants": {"us_task": "jft"}}]}, "m.yaml")
    assert ok.metrics[0].constants == {"us_task": "jft"}


def test_a_constant_source_is_the_mappings_source_and_may_not_contradict_it(tmp_path: Path) -> None:
    """``constants: {source: a}`` beside ``source: b`` lost to it without a word; alone, the checks
    of a file's source (two files of one source) did not see it. A blank source quarantined every
    row as "source: missing required field"."""
    m = parse_mapping({"constants": {"source": "lab", "seed": 1}}, "m.yaml")
    assert m.source == "lab" and dict(m.constants) == {"seed": 1}
    assert parse_mapping({"source": "lab", "constants": {"source": "lab"}}, "m.yaml").source == "lab"
    _refused({"source": "b", "constants": {"source": "a"}}, "constants.source 'a' contradicts source 'b'")
    _refused({"source": "  "}, "'source' must be a source name, not '  '")
    _refused({"constants": {"source": ""}}, "constants.source: must be a source name")
    # through the command line: refused in one line; alone, the constant is the rows' source
    _frame().to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "m.yaml").write_text("source: b\nconstants: {source: a}\n")
    r = run_cli("ingest", str(tmp_path / "x.csv"), "--mapping", str(tmp_path / "m.yaml"), "--store", str(tmp_path / "st"))
    assert r.returncode == 2 and "constants.source 'a' contradicts source 'b'" in r.stderr, r.stdout + r.stderr
    (tmp_path / "m.yaml").write_text("constants: {source: a}\n")
    r = run_cli("ingest", str(tmp_path / "x.csv"), "--mapping", str(tmp_path / "m.yaml"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(Store(str(tmp_path / "st")).read(columns=["source"]).column("source").to_pylist()) == {"a"}


def test_a_param_or_tag_mapped_to_extra_is_refused_not_lost() -> None:
    """``params: {note: extra}``: the run's extra map replaced the param's value, so it was in
    neither a column nor extra (every param a mapping does not name is kept in extra already)."""
    _refused({"params": {"note": "extra"}}, r"params\.note: 'extra' is no column for one param")
    _refused({"tags": {"note": "extra"}}, r"tags\.note: 'extra' is no column for one tag")
    _refused({"metrics": ["x/{extra}/{ds_task}"]}, r"metrics\[0\]: \{extra\} is no column")
    # a file's column of JSON objects may still be renamed to extra (it is merged)
    assert parse_mapping({"rename": {"notes": "extra"}}, "m.yaml").rename == {"notes": "extra"}


def test_arch_family_rules_match_whatever_the_case_of_the_rule() -> None:
    """Names are lower-cased before the rules match them, so a user's rule ``'^ViT'`` never
    matched, and every model was "other" without a word."""
    got = infer_arch_family(pd.Series(["ViT_base", "resnet50", None, "mixer_b16"]),
                            {"vit": "^ViT", "resnet": "^ResNet"})
    assert got.tolist() == ["vit", "resnet", None, "other"]


def test_a_sources_files_unknown_top_level_key_or_blank_name_is_refused(tmp_path: Path) -> None:
    """A top-level ``mapping:`` (meant for every entry) was ignored without a word, and every file
    was ingested without it; an entry's ``name: "  "`` quarantined every row (the command line
    refuses ``--source "  "``)."""
    s = tmp_path / "s.yaml"
    s.write_text("mapping: m.yaml\nsources:\n  - uri: x.csv\n")
    with pytest.raises(UserError, match=r"s\.yaml: unknown key\(s\) mapping \(a sources file holds 'sources'"):
        load_sources_file(str(s))
    s.write_text("description: lab runs\nsources:\n  - uri: x.csv\n")
    assert [e.spec for e in load_sources_file(str(s))] == [str(tmp_path / "x.csv")]
    s.write_text("sources:\n  - uri: x.csv\n    name: '  '\n")
    with pytest.raises(UserError, match=r"sources\[0\]\.name: must be a source name, not '  '"):
        load_sources_file(str(s))


def test_a_home_path_in_a_sources_file_is_the_home_directory_quoted_or_not(tmp_path: Path, monkeypatch) -> None:
    """Lead 1 (checked, already right): ``uri: '~/x.csv'`` (quoted) and ``mapping: "~/m.yaml"``
    name the home directory, as the shell reads ``~/x.csv`` on the command line."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = tmp_path / "lab" / "s.yaml"
    s.parent.mkdir()
    s.write_text("sources:\n  - uri: '~/x.csv'\n    mapping: \"~/m.yaml\"\n  - uri: ~/y.csv\n")
    a, b = load_sources_file(str(s))
    assert (a.spec, a.mapping, b.spec) == (str(tmp_path / "home" / "x.csv"), str(tmp_path / "home" / "m.yaml"),
                                           str(tmp_path / "home" / "y.csv"))


def test_a_unit_of_a_constant_column_is_refused_not_ignored(tmp_path: Path) -> None:
    """A constant is a canonical value, never converted: ``constants: {param_count: 86}`` beside
    ``units: {param_count: millions}`` stored 86 parameters without a word."""
    _refused({"constants": {"param_count": 86}, "units": {"param_count": "millions"}},
             r"units\.param_count: param_count is a constant \(86\), which is a canonical value")
    _refused({"constants": {"ds_accuracy": 0.8}, "units": {"ds_accuracy": "percent"}}, r"units\.ds_accuracy: ")
    assert parse_mapping({"constants": {"seed": 1}, "units": {"seed": "count"}}, "m.yaml").units == {"seed": "count"}
    _frame().assign(size=86).to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "m.yaml").write_text("constants: {param_count: 86}\nunits: {param_count: millions}\n")
    r = run_cli("ingest", str(tmp_path / "x.csv"), "--mapping", str(tmp_path / "m.yaml"), "--store", str(tmp_path / "st"))
    assert r.returncode == 2 and "units.param_count: param_count is a constant" in r.stderr, r.stdout + r.stderr


def test_mlflow_keys_of_a_mapping_used_with_a_file_are_refused_not_ignored(tmp_path: Path) -> None:
    """The module says keys that do not apply to a source kind are refused: an MLflow mapping's
    ``rename`` was, but a file's ``params: {learning_rate: lr}`` was ignored without a word (lr
    stayed empty, learning_rate went to extra)."""
    _frame().assign(learning_rate=0.1).to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "m.yaml").write_text("params: {learning_rate: lr}\n")
    r = run_cli("ingest", str(tmp_path / "x.csv"), "--mapping", str(tmp_path / "m.yaml"), "--store", str(tmp_path / "st"))
    assert r.returncode != 0 and "mapping m.yaml: params are for MLflow runs; a file export's columns are mapped " \
        "with 'rename'" in r.stderr + r.stdout, r.stdout + r.stderr
    (tmp_path / "m.yaml").write_text("rename: {learning_rate: lr}\n")
    r = run_cli("ingest", str(tmp_path / "x.csv"), "--mapping", str(tmp_path / "m.yaml"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and Store(str(tmp_path / "st")).read(columns=["lr"]).column("lr").to_pylist() == [0.1] * 2
