"""Structure rules the code keeps: private names stay in their module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO


def _package_of(rel: Path) -> list[str]:
    """The dotted package a module file belongs to: ``meta_study/store/_store.py`` and
    ``meta_study/store/__init__.py`` -> ``["meta_study", "store"]``."""
    return list(rel.parent.parts)


def _imported_module(rel: Path, node: ast.ImportFrom) -> list[str]:
    """The module a ``from ... import`` names, made absolute (``from ._files`` inside
    ``meta_study/store/`` -> ``meta_study.store._files``)."""
    tail = (node.module or "").split(".") if node.module else []
    if not node.level:
        return tail
    pkg = _package_of(rel)
    return pkg[:len(pkg) - (node.level - 1)] + tail


def _own_private_module(rel: Path, node: ast.ImportFrom, alias: str) -> bool:
    """True for an import from one of the importing package's own private modules
    (``from ._files import _Files`` inside ``meta_study/store/``), or of such a module
    (``from . import _files``): a package's private modules share their names with each other."""
    pkg = _package_of(rel)
    target = _imported_module(rel, node)
    if target[:-1] == pkg and target[-1].startswith("_") and not target[-1].startswith("__"):
        return True
    return target == pkg and (REPO.joinpath(*pkg, f"{alias}.py").exists() or REPO.joinpath(*pkg, alias).is_dir())


def _private_reaches(rel: Path, source: str) -> list[str]:
    """Where a module uses another module's private names: an import of ``_name`` from a module
    that is not one of its own package's private modules, or ``x._f`` (the store's files)
    outside the store package."""
    bad = []
    for node in ast.walk(ast.parse(source, filename=str(rel))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("meta_study")):
            for alias in node.names:
                if (alias.name.startswith("_") and not alias.name.startswith("__")
                        and not _own_private_module(rel, node, alias.name)):
                    bad.append(f"{rel}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
        # another object's private attribute reached through a module-level name, e.g. store._f
        if (isinstance(node, ast.Attribute) and node.attr == "_f" and isinstance(node.value, ast.Name)
                and node.value.id not in ("self", "cls") and _package_of(rel) != ["meta_study", "store"]):
            bad.append(f"{rel}:{node.lineno}: {node.value.id}._f")
    return bad


def test_no_module_imports_another_modules_private_names():
    """`from .refit import _previous` and the like: a module's `_name` is its own business, or its
    package's when the module is private (`meta_study/store/_files.py`)."""
    bad = []
    for path in sorted((REPO / "meta_study").rglob("*.py")):
        bad += _private_reaches(path.relative_to(REPO), path.read_text())
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("where, source, flagged", [
    ("meta_study/cli.py", "from .refit import _previous", True),               # a public module's private name
    ("meta_study/ingest/files.py", "from ..refit import _previous", True),
    ("meta_study/ingest/files.py", "from ..store._files import _Files", True),  # another package's private module
    ("meta_study/ingest/files.py", "from meta_study.store._files import _Files", True),
    ("meta_study/tune/tracking.py", "from ..store import _store", True),       # another package's private module
    ("meta_study/tune/tracking.py", "from .writer import _Pipe", True),          # public sibling's private name
    ("meta_study/cli.py", "s = open_store(x)\ns._f.root", True),
    ("meta_study/store/_store.py", "from ._files import _Files", False),        # its own package's private module
    ("meta_study/store/__init__.py", "from ._files import display_uri", False),
    ("meta_study/store/_merge.py", "from meta_study.store._manifest import _Manifest", False),
    ("meta_study/tune/writer.py", "from ._rest import _RestRuns", False),
    ("meta_study/store/_merge.py", "def f(s):\n    return s._f.root", False),
])
def test_the_private_names_rule_flags_what_it_should(where, source, flagged):
    assert bool(_private_reaches(Path(where), source)) is flagged


def test_commands_that_share_a_results_directory_share_their_defaults():
    """`sensitivity`, `bootstrap` and then `report` into one DIR (the README's tour) reuse each
    other's outputs only if their defaults agree (report's were 5 trials and 200 resamples, so the
    tour, run as written, was refused)."""
    from meta_study.analysis.bootstrap import BootstrapOptions
    from meta_study.analysis.sensitivity import SensitivityOptions
    from meta_study.cli import cli

    def default(command: str, option: str):
        (p,) = [p for p in cli.commands[command].params if p.name == option]
        return p.default

    for command in ("sensitivity", "report", "refit"):
        assert default(command, "trials") == SensitivityOptions().trials, command
    for command in ("report", "refit"):
        assert default(command, "samples") == BootstrapOptions().samples, command
    assert default("bootstrap", "samples") == BootstrapOptions().samples


def test_fit_option_defaults_come_from_one_place():
    """`--holdout-quantile 0.8` was written in three places; the CLI's defaults are the dataclasses'."""
    from meta_study import defaults
    from meta_study.analysis.fitting import FitOptions
    from meta_study.cli import cli

    fo = FitOptions()
    for command in ("fit", "sensitivity", "bootstrap", "report", "refit"):
        params = {p.name: p.default for p in cli.commands[command].params}
        assert params["holdout_quantile"] == fo.holdout_quantile == defaults.HOLDOUT_QUANTILE, command
        assert params["loss"] == fo.loss and params["alpha_max"] == fo.alpha_max, command
        assert params["tolerance"] == 100 * fo.selection.tolerance, command    # points on the command line
    for command in ("report", "refit"):
        params = {p.name: p.default for p in cli.commands[command].params}
        assert params["threshold"] == fo.selection.payoff_threshold, command


def test_the_default_mlflow_mapping_reads_the_keys_schema_defines():
    """The MLflow keys were defined twice (schema.py for the sweeps that log them, the default
    mapping YAML for the ingest that reads them): the YAML must say what schema.py says."""
    import yaml

    from meta_study import schema

    d = yaml.safe_load((REPO / "meta_study" / "data" / "mlflow_default.yaml").read_text())
    patterns = {m["pattern"]: m.get("eval_protocol") for m in d["metrics"]}
    assert patterns == {
        schema.us_metric_key("{us_task}"): None,
        schema.ds_metric_key("{ds_task}", "{shots}"): "fewshot",          # type: ignore[arg-type]
        schema.ds_metric_key("{ds_task}", "{shots}", "{representation_layer}"): "fewshot",  # type: ignore[arg-type]
        schema.finetune_metric_key("{ds_task}"): "finetune",
    }
    # every param a sweep logs fills the column of the same name, and every mapped name is a column
    assert set(d["params"]) == set(schema.PARAM_NAMES) | {"param_count"}
    assert all(k == v for k, v in d["params"].items())
    columns = {c.name for c in schema.COLUMNS}
    assert set(d["params"].values()) <= columns and set(d["tags"].values()) <= columns


def test_the_module_map_names_every_module_and_nothing_else():
    """docs/modules.md is the maintainer's map: it must match the tree."""
    import re

    text = (REPO / "docs" / "modules.md").read_text()
    named = set(re.findall(r"`(meta_study/[\w/]+\.py)`", text))
    tree = {str(p.relative_to(REPO)) for p in (REPO / "meta_study").rglob("*.py")}
    assert not tree - named, f"modules missing from docs/modules.md: {sorted(tree - named)}"
    assert not named - tree, f"docs/modules.md names modules that do not exist: {sorted(named - tree)}"


def test_the_code_passes_ruff():
    """`ruff check` with the project's configuration (pyproject.toml: unused and undefined names,
    pycodestyle's errors that are bugs), so that CI runs the linter through the README's test
    command."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def test_importing_the_sweep_runner_leaves_the_environment_alone():
    """`meta_study.tune.runner` used to set Tune's variables at import; now only planning or
    running a sweep does (runner.tune_environment)."""
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import meta_study.tune.runner; "
            "print(sorted(k for k in os.environ if os.environ.get(k) != before.get(k)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                       env={k: v for k, v in __import__("os").environ.items() if not k.startswith(("TUNE_", "RAY_TRAIN"))})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


#: The floors of the data flow (docs/modules.md): a module imports only from lower floors or from
#: its own package. A sweep logs runs, ingest turns them into the store, the analysis reads it, a
#: report is made from the fits, the refit and the demo chain them, the CLI calls them all.
FLOORS = [
    {"meta_study", "errors", "defaults", "schema"},        # the record: its names and constants
    {"keys", "extras", "failpoints", "dirs"},
    {"validation"},
    {"store", "mlflow_client"},                            # where data and runs live
    {"ray_session"},                                       # where work runs
    {"ingest", "train", "analysis"},                       # data in, models trained, answers out
    {"tune", "explorer"},
    {"report"},
    {"refit"},
    {"demo"},
    {"cli"},
]
#: Plug-ins whose modules are their package's business: outside it, use the package's API.
PLUGINS = ("meta_study.ingest.mlflow_runs", "meta_study.ingest.mlflow_source", "meta_study.ingest.mlflow_sql",
           "meta_study.ingest.files", "meta_study.ingest.mapping")


def _imports(path: Path) -> list[tuple[int, str]]:
    rel = path.relative_to(REPO)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(rel))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("meta_study")):
            out.append((node.lineno, ".".join(_imported_module(rel, node))))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("meta_study")]
    return out


def _part(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "meta_study"


def test_no_import_climbs_a_floor_and_no_plugin_module_is_reached_from_outside():
    floor = {name: i for i, names in enumerate(FLOORS) for name in names}
    bad = []
    for path in sorted((REPO / "meta_study").rglob("*.py")):
        rel = path.relative_to(REPO)
        parts = rel.with_suffix("").parts
        me = _part(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        assert me in floor, f"{rel}: put its package on a floor in FLOORS"
        for line, target in _imports(path):
            them = _part(target)
            if them != me and them in floor and floor[them] >= floor[me]:
                bad.append(f"{rel}:{line}: {me} (floor {floor[me]}) imports {target} (floor {floor[them]})")
            if any(target == p or target.startswith(p + ".") for p in PLUGINS) and me != "ingest":
                bad.append(f"{rel}:{line}: {target} is an ingest plug-in's own module")
    assert not bad, "\n".join(bad)
