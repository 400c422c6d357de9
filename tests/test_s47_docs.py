"""The docs against the code (session 47): claims that today's changes had left stale.

- examples/data/README.md counts each table's DS tasks and protocols as its ``us_ds.csv`` has them
  (it called the protocols "groups", while the analysis makes one group per DS task: OpenCLIP's
  "2 groups" are 49 groups in ``fit``);
- the README's exit codes: a command stopped by SIGTERM or SIGHUP exits 128 + the signal's number
  with its own line (the README gave 143 for sweeps only);
- docs/modules.md names the headline's interval rule, and docs/cluster.md the two lines a skipped
  refit says and which failed rounds carry no traceback hint;
- ``refit --help`` says that changed options refit every group, ``ingest --help`` that a file's
  ``source`` column names its source;
- docs/data.md's data fraction: 0.07 of 100 examples is 7.
"""
from __future__ import annotations

import csv
import re
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from meta_study.cli import cli
from meta_study.errors import Terminated

REPO = Path(__file__).resolve().parents[1]


def _help(*args: str) -> str:
    res = CliRunner().invoke(cli, [*args, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def _examples_rows() -> list[tuple[str, int, int]]:
    """(folder, DS tasks, protocols) of each table row of examples/data/README.md but timm's."""
    rows = []
    for line in (REPO / "examples/data/README.md").read_text().splitlines():
        m = re.match(r"\| `(\w+)/` \|.*\| (\d+) tasks, (\d+) (\w+)", line)
        if m and m.group(1) != "timm":
            assert m.group(4) in ("protocol", "protocols"), line
            rows.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


@pytest.mark.parametrize("folder,n_tasks,n_protocols", _examples_rows())
def test_examples_readme_counts_the_tasks_and_protocols_of_each_table(folder: str, n_tasks: int,
                                                                       n_protocols: int) -> None:
    with open(REPO / "examples/data" / folder / "us_ds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len({r["ds_task"] for r in rows}) == n_tasks
    assert len({r["protocol"] for r in rows}) == n_protocols
    # one analysis group per DS task here, as the README now says
    groups = {(r["us_task"], r["ds_task"], r["eval_protocol"], r["shots"]) for r in rows}
    assert len(groups) == n_tasks


def test_examples_readme_lists_every_table() -> None:
    """Every shipped table (a folder with a ``us_ds.csv``) has its row, and no row names a folder
    that is not there."""
    shipped = sorted(p.parent.name for p in (REPO / "examples/data").glob("*/us_ds.csv"))
    assert len(shipped) >= 10
    assert sorted(folder for folder, _, _ in _examples_rows()) == shipped


def test_readme_exit_codes_for_termination_signals() -> None:
    assert Terminated(signal.SIGTERM).code == 143 and Terminated(signal.SIGHUP).code == 129
    text = " ".join((REPO / "README.md").read_text().split())
    assert "`meta-study: terminated by SIGTERM`" in text
    assert "129 for SIGHUP" in text
    assert "143 for a command or sweep stopped by SIGTERM" in text


def test_modules_md_names_the_headline_interval_rule() -> None:
    from meta_study.analysis.headline import INTERVAL_RULE

    line = next(ln for ln in (REPO / "docs/modules.md").read_text().splitlines()
                if ln.startswith("| `meta_study/analysis/headline.py`"))
    assert f"`{INTERVAL_RULE}`" in line and "highest member" in line


def test_cluster_md_quotes_both_skipped_refit_lines_and_the_hint_rule(tmp_path: Path) -> None:
    from meta_study.refit import StoreWriterBusy, round_failure

    text = " ".join((REPO / "docs/cluster.md").read_text().split())
    src = (REPO / "meta_study/refit.py").read_text()
    for said in ("another refit is running on", "another refit is writing to"):
        assert said in src
    assert "refit: locked: another refit is running on STORE" in text
    assert "is writing to OUT" in text
    # a lock wait that ran out carries no traceback hint, as the page now says
    assert "META_STUDY_TRACEBACK" not in round_failure(StoreWriterBusy("the store stayed locked"), str(tmp_path))
    assert "a wait for the store's lock that ran out" in text
    # a first round that waited past the lock goes on (the --every loop's one exception)
    assert "first and not isinstance(e, StoreWriterBusy)" in (REPO / "meta_study/cli.py").read_text()
    assert "only a first round that waited past the store's lock wait" in text


def test_refit_help_says_changed_options_refit_every_group() -> None:
    from meta_study.refit import RefitConfig, why_refitted

    cfg = RefitConfig(store="s", out="o")
    prev = {"options_fingerprint": "other", "options": {}, "time": "T"}
    assert why_refitted(prev, cfg, {"threshold": 0.2}, 0, 0, 0).endswith(": every group refitted")
    assert "every group when the options or the analysis code changed" in _help("refit")


def test_ingest_help_says_a_source_column_names_the_source() -> None:
    assert "default: a file's 'source' column, else its name without its extension" in _help("ingest")


def test_data_md_fraction_example() -> None:
    pytest.importorskip("torch")
    from meta_study.train.data import fraction_indices

    assert len(fraction_indices(100, 0.07)) == 7
    assert "0.07 of 100 is 7 examples" in " ".join((REPO / "docs/data.md").read_text().split())


def test_sensitivity_help_names_every_table_it_writes() -> None:
    src = (REPO / "meta_study/analysis/outputs.py").read_text()
    shown = _help("sensitivity")
    for table in ("sensitivity", "sensitivity_summary", "sensitivity_frontiers"):
        assert f'"{table}"' in src
        assert f"DIR/{table}.parquet" in shown


def test_readme_tour_says_sensitivity_joins_ray_address_first() -> None:
    # the tour sources env.sh (RAY_ADDRESS) two lines before: the analysis then joins that cluster
    line = next(ln for ln in (REPO / "README.md").read_text().splitlines()
                if ln.startswith("meta-study sensitivity STORE"))
    assert "$RAY_ADDRESS" in line
    assert "$RAY_ADDRESS if set" in _help("sensitivity")


def test_cluster_md_refit_output_is_what_refit_prints(capsys: pytest.CaptureFixture[str]) -> None:
    from meta_study.cli import _echo_refit
    from meta_study.refit import RefitConfig, RefitResult, why_refitted, option_params

    page = (REPO / "docs/cluster.md").read_text()
    block = page[page.index("```\nrefit: 3 changed"):].split("```")[1].strip().splitlines()
    cfg = RefitConfig(store="s", out="OUT")
    prev = {"options_fingerprint": cfg.options_fingerprint(), "options": option_params(cfg),
            "time": "2026-12-03T03:17:04+00:00"}
    run = "0123456789abcdef0123456789abcdef"
    res = RefitResult(status="refitted", version_dir="OUT/refits/20261204T031705Z", changed=[("k",)] * 3,
                      unchanged=72, seconds=41.2, message=why_refitted(prev, cfg, option_params(cfg), 3, 0, 0),
                      mlflow_run_id=run,
                      mlflow_url=f"http://127.0.0.1:5000/#/experiments/2/runs/{run}?workflowType=machine_learning")
    _echo_refit(res)
    assert capsys.readouterr().out.splitlines() == block
