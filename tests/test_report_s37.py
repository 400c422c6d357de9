"""Review of the report, its figures, the analysis scripts and the demo as a first-hour reader
meets them (session 37)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, committed_store


def _page_text(page: Path) -> str:
    """The page's words, as a reader sees them (tags, scripts and styles out; one space apart)."""
    import html

    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def test_the_per_task_section_says_when_only_some_groups_have_a_figure(tmp_path):
    """With more groups than --max-group-figures, "Per task" showed the first figures and said
    nothing of the others (the hover view beside it says "60 of N groups are drawn (the first with models to draw)";
    the CLI says it in its output, the page a reader opens later did not)."""
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.report import render_report

    a = analyze(committed_store(tmp_path / "st", runs=30, tasks=("a", "b", "c")), options=AnalysisOptions(),
                use_ray=False)
    ResultsDir(tmp_path / "rep").write(a, Selection(), max_group_figures=1)
    text = _page_text(Path(render_report(a, tmp_path / "rep")))
    assert len(list((tmp_path / "rep" / "figures" / "groups").glob("*.png"))) == 1
    per_task = text.split("Per task", 1)[1]
    assert re.search(r"Figures of 1 of 3 groups", per_task), per_task[:400]
    # all drawn: no such note
    ResultsDir(tmp_path / "rep2").write(a, Selection())
    text = _page_text(Path(render_report(a, tmp_path / "rep2")))
    assert "Figures of" not in text.split("Per task", 1)[1]


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / name), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.mark.slow(20)
def test_fig1_grid_refuses_a_negative_figure_count_and_says_when_it_draws_fewer(tmp_path):
    """`fig1_grid.py --max-group-figures -1` drew every group's figure but the last one, without a
    word (a Python slice [:-1]; the CLI's --max-group-figures refuses it), and a cap below the
    number of groups left the rest without a figure silently (the CLI says so)."""
    store = committed_store(tmp_path / "st", runs=30, tasks=("a", "b", "c"))
    r = _script("fig1_grid.py", store.uri, "--out", str(tmp_path / "neg"), "--max-group-figures", "-1")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and "--max-group-figures" in lines[-1] and "-1" in lines[-1], r.stderr
    assert not (tmp_path / "neg").exists()
    r = _script("fig1_grid.py", store.uri, "--out", str(tmp_path / "one"), "--max-group-figures", "1")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "one" / "figures" / "groups").glob("*.png"))) == 1
    assert "per-group figures for the first 1 of 3 groups" in r.stdout, r.stdout


@pytest.mark.slow(15)
def test_a_second_demo_does_not_resume_a_sweep_that_ran_to_its_end(tmp_path, monkeypatch):
    """A second `meta-study demo` resumed its finished sweep: Ray and Tune started, restored 18
    finished trials and trained nothing (27 s of the rerun's 2 minutes). A sweep whose parent run
    is FINISHED with every trial finished is used as it is; one left unfinished (a Ctrl-C: its
    parent KILLED), with an errored trial, or of another search space still goes to the runner."""
    from mlflow.entities import Metric

    from meta_study import demo
    from meta_study.mlflow_client import get_or_create_experiment, mlflow_client, safe_uri
    from meta_study.tune import runner
    from meta_study.tune.state import Session, StateDir, SweepRecord

    wd = tmp_path / "demo"
    exp_dir = wd / "ray" / "demo"
    exp_dir.mkdir(parents=True)
    tracking = f"sqlite:///{wd / 'mlflow.db'}"
    client = mlflow_client(tracking)
    exp = get_or_create_experiment(client, tracking, demo.EXPERIMENT)
    calls = []

    def sweep_ran(spec, options):     # what the runner returns for a resumed sweep, noted
        calls.append(options)
        return runner.SweepResult(name="demo", experiment_dir=str(exp_dir), tracking_uri=tracking, parent_run_id="p",
                                  trials=18, finished=18, errored=0, early_stopped=0, seconds=1.0, resumed=True)

    monkeypatch.setattr(runner, "run_sweep", sweep_ran)
    # started with --serial, as the demos below are run (one started without it is refused in the
    # demo's words before the runner: tests/test_s49_demo.py)
    options = runner.SweepOptions(smoke=True, tracking_uri=tracking, experiment=demo.EXPERIMENT,
                                  storage_path=str(wd / "ray"), name="demo", max_concurrent=1)
    settings = runner.sweep_settings(demo._sweep_spec(), options)

    def sweep(status: str, finished: int, errored: int = 0, space: str | None = None) -> None:
        run = client.create_run(exp)
        counts = {"trials": 18, "finished": finished, "errored": errored, "early_stopped": 0, "eval_failed": 0}
        client.log_batch(run.info.run_id, metrics=[Metric(f"sweep/{k}", v, 0, 0) for k, v in counts.items()])
        client.set_terminated(run.info.run_id, status=status)
        rec = SweepRecord(sweep="demo", experiment=demo.EXPERIMENT, experiment_id=exp, parent_run_id=run.info.run_id,
                          tracking_uri=safe_uri(tracking), settings={**settings, **({runner.SPACE_KEY: space}
                                                                                  if space else {})},
                          sessions=(Session(started="2026-12-05T00:00:00+00:00", code="c", git_sha="g",
                                            researcher="r"),))
        StateDir(str(exp_dir)).write_record(rec)

    sweep("FINISHED", 18)
    assert demo._train(wd, tracking, serial=True) == 18 and calls == []
    for unfinished in (dict(status="KILLED", finished=12), dict(status="FAILED", finished=17, errored=1),
                       dict(status="FINISHED", finished=18, space="another-space")):
        sweep(**unfinished)
        assert demo._train(wd, tracking, serial=True) == 18
        assert len(calls) == 1 and calls.pop().resume, unfinished


def test_the_hover_view_of_a_group_at_100_percent_has_no_tick_past_100():
    """A DS task every model solves (all at 100%) drew its hover view's DS axis from 99.4% to
    100.6%, and one every model fails from -0.6% to 0.6%: accuracies no model can have."""
    import pandas as pd

    from meta_study.report import _points_svg

    row = {"us_task": "up", "ds_task": "easy", "eval_protocol": "fewshot", "shots": 5, "holdout_threshold": 0.95,
           "trusted": True, "best_us": float("nan"), "horizon_us": float("nan")}
    for ds, inside in ((1.0, lambda v: 99 <= v <= 100), (0.0, lambda v: 0 <= v <= 1)):
        pts = pd.DataFrame({"run_id": ["m0", "m1", "m2"], "model_name": [None] * 3, "us_accuracy": [0.3, 0.6, 0.9],
                            "ds_accuracy": [ds] * 3})
        svg = _points_svg(row, pts)
        ticks = [float(t) for t in re.findall(r"class=tk text-anchor=end>([^<]*)<", svg)]
        assert ticks and all(inside(t) for t in ticks), ticks
        assert "nan" not in svg and "inf" not in svg


def test_the_sensitivity_text_says_when_the_figure_pools_the_tasks(tmp_path):
    """Beyond 12 DS tasks Fig. 3 draws one row, the median over them; the page above it still said
    "Per DS task (the paper's Fig. 3)" (the testbed has 202 tasks)."""
    from meta_study.analysis.figures import SENS_TASKS_MAX
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.analysis.sensitivity import SensitivityOptions
    from meta_study.report import render_report

    def page(tasks: tuple[str, ...], name: str) -> str:
        a = analyze(committed_store(tmp_path / f"st-{name}", runs=30, tasks=tasks),
                    options=AnalysisOptions(sensitivity=SensitivityOptions(trials=1, sizes=(10,))), use_ray=False)
        ResultsDir(tmp_path / name).write(a, Selection(), max_group_figures=0)
        text = _page_text(Path(render_report(a, tmp_path / name)))
        return text.split("Sample-size sensitivity", 1)[1][:400]

    many = page(tuple(f"t{i:02d}" for i in range(SENS_TASKS_MAX + 1)), "many")
    assert "Per DS task" not in many and f"median over the {SENS_TASKS_MAX + 1} " in many, many
    few = page(("a", "b"), "few")
    assert few.lstrip().startswith("Per DS task"), few


@pytest.mark.slow(10)
def test_fig6_says_when_the_selection_matches_nothing(tmp_path):
    """`fig6_layerwise.py --ds-task typo` said "no layer-wise probe rows (representation_layer is
    null everywhere)": a claim about rows it had not read, where the selection matched none."""
    store = committed_store(tmp_path / "st", runs=5, tasks=("a",))
    r = _script("fig6_layerwise.py", store.uri, "--out", str(tmp_path / "o"), "--ds-task", "typo")
    assert r.returncode == 2 and r.stderr.strip().endswith("no rows match the selection: --ds-task typo is not in the store (it has a)"), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    r = _script("fig6_layerwise.py", store.uri, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "representation_layer is null everywhere" in r.stderr, r.stderr


def test_a_report_of_one_group_says_one_group(tmp_path):
    """`meta-study report --ds-task imagenetv2` opened with "1 groups, 1 with a trusted answer"."""
    from meta_study.analysis.results import AnalysisOptions, analyze
    from meta_study.report import render_report

    a = analyze(committed_store(tmp_path / "st", runs=30, tasks=("a",)), options=AnalysisOptions(), use_ray=False)
    text = _page_text(Path(render_report(a, tmp_path / "rep")))
    assert re.search(r"Answers 1 group, [01] with a trusted answer\.", text), text[:300]


@pytest.mark.slow(30)
def test_a_command_on_a_ray_of_its_own_prints_no_ray_start_line(tmp_path):
    # `meta-study sensitivity` (report, bootstrap, demo --synthetic) printed Ray's own "Started a
    # local Ray instance." among its lines; Ray's warnings and the command's output stay
    from conftest import run_cli

    s = committed_store(tmp_path / "st", runs=12)
    r = run_cli("sensitivity", s.uri, "--out", str(tmp_path / "o"), "--workers", "1", "--trials", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Started a local Ray instance" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert (tmp_path / "o").is_dir()
