"""`meta-study demo`'s first hour (session 51): step [1] says how far its training is, its report
page says it is the demo's, and its held-out check's lines say what they mean.

1. Step [1] printed nothing for the ~200 s its 18 models train on 2 cores: a first-time user
   thought it hung. A Tune callback (``runner.sweep_progress`` / ``progress_callback``) now calls a
   hook from Tune's own loop every 20 s; here on a real Tune run of a real local Ray.
2. The demo's report page was titled "meta-study refit" (the refit job's page).
3. The held-out check's verdict "right within 5 pt, but off by more than the tolerance its
   back-tests were trusted at" named neither number, and its summary restated each line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import committed_store, quick_refit_config
from meta_study import demo
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepProgress, SweepResult, SweepSpec, grid

LINE = re.compile(r"^  \d+ of (\d+) models trained(, \d+ training)?(, \d+ failed)? \(\d+ s\)$")


# 1. progress of the demo's training --------------------------------------------------------------

def test_the_progress_line_says_how_many_of_the_models_are_trained():
    assert demo.progress_line(SweepProgress(finished=7, errored=0, running=2, total=18), 91.6) == \
        "  7 of 18 models trained, 2 training (92 s)"
    assert demo.progress_line(SweepProgress(finished=18, errored=0, running=0, total=18), 203.0) == \
        "  18 of 18 models trained (203 s)"
    assert demo.progress_line(SweepProgress(finished=3, errored=1, running=1, total=18), 40.0) == \
        "  3 of 18 models trained, 1 training, 1 failed (40 s)"


def test_planned_trials_counts_the_demos_18_models_and_nested_grids_times_samples():
    assert runner.planned_trials(demo._sweep_spec(), SweepOptions(smoke=True)) == 18
    spec = SweepSpec(name="s51", doc="", space=lambda o: {"a": grid([1, 2]), "b": {"c": grid([1, 2, 3])}, "d": 4},
                     num_samples=2)
    assert runner.planned_trials(spec, SweepOptions()) == 12
    assert runner.planned_trials(SweepSpec(name="s51o", doc="", space=lambda o: (lambda t: {}), search="optuna",
                                           num_samples=5), SweepOptions()) == 5


@pytest.mark.slow(30)
def test_the_progress_callback_reports_from_a_real_tune_run_and_is_not_restored(local_ray, tmp_path, capfd):
    """Four trivial trials (one fails) on the local Ray: the hook hears counts that only grow and
    end at every trial accounted for; a hook that raises is dropped with one line on stderr, and the
    sweep goes on. Tune pickles the run config for a restore: the restored callback holds no hook
    and a resumed session's callbacks replace it (``session_only``)."""
    from ray import tune

    def trial(config: dict) -> None:        # nested: pickled by value (this module is not on the workers' path)
        if config["x"] == 3:
            raise ValueError("trial 3 fails")
        tune.report({"done": 1.0})

    heard: list[SweepProgress] = []
    failing_calls: list[SweepProgress] = []

    def failing(p: SweepProgress) -> None:
        failing_calls.append(p)
        raise OSError("stdout is gone")

    # every_s=0: a call at every step of Tune's loop, so that this short run is heard more than once
    callbacks = [runner.progress_callback(heard.append, 0.0, 4), runner.progress_callback(failing, 0.0, 4)]
    tuner = tune.Tuner(tune.with_resources(trial, {"cpu": 1}), param_space={"x": grid([1, 2, 3, 4])},
                       run_config=tune.RunConfig(name="s51progress", storage_path=str(tmp_path), verbose=0,
                                                 callbacks=callbacks,
                                                 failure_config=tune.FailureConfig(max_failures=0)))
    results = list(tuner.fit())
    assert sum(r.error is not None for r in results) == 1 and len(results) == 4
    assert heard, "the hook was never called"
    assert [p.finished for p in heard] == sorted(p.finished for p in heard)
    assert heard[-1] == SweepProgress(finished=3, errored=1, running=0, total=4), heard[-1]
    for p in heard:
        assert LINE.match(demo.progress_line(p, 5.0)), demo.progress_line(p, 5.0)
    assert len(failing_calls) == 1
    err = capfd.readouterr().err
    assert "the sweep's progress hook failed (OSError: stdout is gone); no more progress lines" in err, err[-2000:]

    restored = tune.Tuner.restore(str(tmp_path / "s51progress"), trial)
    kept = [c for c in restored._local_tuner.get_run_config().callbacks if getattr(c, "session_only", False)]
    assert len(kept) == 2 and all(c.hook is None for c in kept), kept
    mine = runner.progress_callback(heard.append, 20.0, 4)
    runner._use_callbacks(restored, [mine])
    assert [c for c in restored._local_tuner.get_run_config().callbacks if getattr(c, "session_only", False)] == [mine]


def test_the_demo_trains_inside_a_progress_block_and_prints_its_lines(tmp_path, monkeypatch):
    """The demo's step [1] hands run_sweep a progress hook (runner.sweep_progress) that prints
    its lines; here run_sweep is replaced (the real Tune run is above) by one that calls the hook
    as the callback would."""
    lines: list[str] = []
    seen: list[float] = []

    def run_sweep(spec, options):
        hook, every_s = runner._PROGRESS.get()
        seen.append(every_s)
        hook(SweepProgress(finished=7, errored=0, running=2, total=18))
        hook(SweepProgress(finished=18, errored=0, running=0, total=18))
        return SweepResult(name="demo", experiment_dir=str(tmp_path / "ray" / "demo"), tracking_uri="",
                           parent_run_id="p", trials=18, finished=18, errored=0, early_stopped=0, seconds=1.0)

    monkeypatch.setattr(runner, "run_sweep", run_sweep)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert demo._train(tmp_path, tracking, serial=True, log=lines.append) == 18
    assert seen == [demo.PROGRESS_EVERY_S]
    assert len(lines) == 2 and all(LINE.match(x) for x in lines), lines
    assert lines[0].startswith("  7 of 18 models trained, 2 training (") and lines[1].startswith("  18 of 18 models")
    assert runner._PROGRESS.get() is None          # the block ended with the sweep


# 2. the demo's report page is the demo's -----------------------------------------------------------

@pytest.fixture(scope="module")
def demo_titled_refit(tmp_path_factory):
    from meta_study.refit import refit

    tmp = tmp_path_factory.mktemp("s51refit")
    store = committed_store(tmp / "store", runs=40, tasks=("a",))
    res = refit(quick_refit_config(store, tmp / "out", title=demo.report_title(False)), log=lambda m: None)
    assert res.version_dir, res
    return Path(res.version_dir)


def test_the_demos_report_page_says_it_is_the_demos_and_the_refit_job_keeps_its_title(demo_titled_refit, tmp_path):
    from meta_study.refit import RefitConfig

    html = (demo_titled_refit / "index.html").read_text()
    assert "<title>meta-study demo: report</title>" in html and "<h1>meta-study demo: report</h1>" in html
    assert "meta-study refit" not in html.split("</h1>")[0]
    cfg = demo.refit_config(tmp_path, tmp_path / "store", f"sqlite:///{tmp_path / 'mlflow.db'}", serial=True)
    assert cfg.title == "meta-study demo: report"
    synth = demo.refit_config(tmp_path, tmp_path / "store", f"sqlite:///{tmp_path / 'mlflow.db'}", serial=True,
                              synthetic=True)
    assert synth.title == "meta-study demo --synthetic: report"
    # the title is the page's alone: the same results, the same options fingerprint (no refit again)
    assert cfg.options_fingerprint() == synth.options_fingerprint()
    assert RefitConfig(store="s", out="o").title == "meta-study refit"      # the refit job's page


# 3. the held-out check's words ------------------------------------------------------------------

def test_a_right_answer_beyond_its_trust_tolerance_names_both_numbers():
    assert demo.held_out_verdict(4.0, 9.0, True, 3.0) == (
        "right (within 5 pt), but off by more than its 3 pt trust tolerance; the report flags it held_out")
    assert demo.held_out_verdict(4.0, 9.0, True) == (
        "right (within 5 pt), but off by more than its trust tolerance; the report flags it held_out")
    assert demo.held_out_verdict(1.0, 2.0, False, 3.0) == "right"


def test_the_trust_tolerance_is_read_from_the_refits_record(demo_titled_refit, tmp_path):
    assert demo.trust_tolerance_pt(demo_titled_refit) == 3.0            # FitOptions' default, 0.03
    assert demo.trust_tolerance_pt(tmp_path) is None                    # no refit.json
    (tmp_path / "refit.json").write_text("{not json")
    assert demo.trust_tolerance_pt(tmp_path) is None


def test_the_held_out_summary_says_what_right_and_the_flat_guess_are_once(tmp_path):
    from test_demo import _synthetic_results

    results, fits = _synthetic_results(tmp_path / "r")
    fits = fits.copy()
    fits.loc[fits["headline"].astype(bool), "trusted"] = True
    fits.to_parquet(results / "fits.parquet")
    out = demo.held_out_check(results)
    assert len(out) == 4, out
    for line in out[:3]:
        assert re.search(r": \d+ models above [0-9.]+% US hidden from the fit; at their frontier", line), line
    summary = out[-1]
    assert re.fullmatch(r"(\d) of 3 trusted answers right about the models they did not see \(within 5 pt RMSE, "
                        r"and no worse than the flat guess: no gain past the best DS accuracy the fit saw\); "
                        r"\d of 3 within 5 pt, \d of 3 no worse than the flat guess; \d of 3 flagged held_out in "
                        r"the report", summary), summary
    assert "or off by more than the trust tolerance" not in summary
