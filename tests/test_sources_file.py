"""Sources files and mappings: what each entry selects, how it combines with the command's options, and the units an MLflow mapping applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_study.errors import UserError
from meta_study.ingest.sources import SourceOptions, entry_options, load_sources_file


def _load(tmp_path: Path, body: str):
    p = tmp_path / "sources.yaml"
    p.write_text(body)
    return load_sources_file(str(p))


def test_experiment_zero_is_the_default_experiment_not_every_one(tmp_path):
    """``experiments: 0`` (MLflow's Default experiment, by id) read as "no experiments given":
    every experiment of the server was ingested."""
    (e,) = _load(tmp_path, "sources:\n  - uri: http://127.0.0.1:5000\n    experiments: 0\n")
    assert e.experiments == ("0",)
    (e,) = _load(tmp_path, "sources:\n  - uri: http://127.0.0.1:5000\n    experiments: [0, team-*]\n")
    assert e.experiments == ("0", "team-*")
    (e,) = _load(tmp_path, "sources:\n  - uri: http://127.0.0.1:5000\n")
    assert e.experiments == ()
    with pytest.raises(UserError, match=r"sources\[0\]\.experiments: must be a list"):
        _load(tmp_path, "sources:\n  - uri: http://127.0.0.1:5000\n    experiments: {a: 1}\n")


def test_an_entrys_filter_narrows_the_commands_filter_not_replaces_it(tmp_path):
    """``meta-study ingest --sources-file F --filter "params.dataset = 'jft'"``: an entry with a
    ``filter:`` of its own dropped the command's filter for that entry, and ingested every other
    dataset's runs of it."""
    a, b = _load(tmp_path, "sources:\n  - uri: http://127.0.0.1:5000\n    filter: \"params.lr = '0.1'\"\n"
                           "  - uri: http://127.0.0.1:5001\n    experiments: [x]\n    name: bob\n")
    cmd = SourceOptions(filter_string="params.dataset = 'jft'", experiments=("all-*",))
    oa, ob = entry_options(a, cmd), entry_options(b, cmd)
    assert oa.filter_string == "params.dataset = 'jft' and params.lr = '0.1'" and oa.experiments == ("all-*",)
    assert ob.filter_string == "params.dataset = 'jft'" and ob.experiments == ("x",) and ob.source_name == "bob"
    assert entry_options(a, SourceOptions()).filter_string == "params.lr = '0.1'"
    assert entry_options(b, SourceOptions()).filter_string is None


def test_an_mlflow_mappings_accuracy_units_convert_its_metrics():
    """``units: {ds_accuracy: error}`` in an MLflow mapping was ignored (metrics converted only by
    a pattern's unit or accuracy_unit): every DS error rate was stored as an accuracy. Units of
    other columns, which an MLflow ingest never applied (a param in millions stored as a count),
    are refused in one line."""
    from meta_study.ingest.mapping import parse_mapping
    from meta_study.ingest.mlflow_runs import RunExpander, RunRecord, mlflow_mapping

    m = mlflow_mapping(parse_mapping({"name": "x", "units": {"ds_accuracy": "error"}}, "x.yaml"))
    rec = RunRecord("r0", "1", "FINISHED", 1, 2, None, {"us/jft/top1": 0.4, "ds/pets/10shot/top1": 0.3}, {}, {})
    out = RunExpander(m, "s").expand_runs([rec], {"1": "e"})
    assert out.rows["ds_accuracy"].tolist() == [pytest.approx(0.7)] and out.rows["us_accuracy"].tolist() == [0.4]
    with pytest.raises(UserError, match=r"x: units of param_count: an MLflow ingest converts only the accuracy"):
        mlflow_mapping(parse_mapping({"name": "x", "units": {"param_count": "millions"}}, "x.yaml"))
