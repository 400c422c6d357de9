"""A sources file's entries: what each selects, and how they combine with the command's options."""

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
