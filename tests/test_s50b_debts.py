"""Review s50b (debts left by earlier reviews): the command line's ceilings are the library's, an
answer keeps a "..." of its reason, and ASHA / Optuna refuse a search space they cannot rank."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from meta_study import cli
from meta_study.analysis import bootstrap, sensitivity
from meta_study.analysis.answers import Answer
from meta_study.errors import UserError


# --- the ceilings: one place for each number ---------------------------------------------------


def test_the_cli_ceilings_are_the_librarys_numbers_defined_in_one_place():
    """cli.py restated MAX_TRIALS / MAX_SAMPLES / MAX_SIZE: a change in the library left the
    command line refusing other values than the library (and docs) said. Each is now
    :mod:`meta_study.defaults`' alone, which the option dataclasses and the command line read."""
    import inspect
    import re

    from meta_study import defaults

    assert (cli.MAX_TRIALS, cli.MAX_SAMPLES, cli.MAX_SIZE) == (defaults.MAX_TRIALS, defaults.MAX_SAMPLES,
                                                                defaults.MAX_SIZE)
    assert (sensitivity.MAX_TRIALS, bootstrap.MAX_SAMPLES, sensitivity.MAX_SIZE) == (
        defaults.MAX_TRIALS, defaults.MAX_SAMPLES, defaults.MAX_SIZE)
    for mod in (cli, sensitivity, bootstrap):   # no module but defaults writes a number for them
        assert not re.search(r"^MAX_(TRIALS|SAMPLES|SIZE)\s*=\s*\d", inspect.getsource(mod), re.M), mod
    assert cli.TRIALS.convert(str(defaults.MAX_TRIALS), None, None) == defaults.MAX_TRIALS
    with pytest.raises(click.BadParameter, match=f"{defaults.MAX_TRIALS + 1} is more than {defaults.MAX_TRIALS:,}"):
        cli.TRIALS.convert(str(defaults.MAX_TRIALS + 1), None, None)
    with pytest.raises(click.BadParameter, match=f"is more than {defaults.MAX_SAMPLES:,}"):
        cli.SAMPLES.convert(str(defaults.MAX_SAMPLES + 1), None, None)
    assert cli._parse_sizes(f"10,{defaults.MAX_SIZE}") == (10, defaults.MAX_SIZE)
    with pytest.raises(UserError, match=f"more than {defaults.MAX_SIZE:,} models"):
        cli._parse_sizes(f"10,{defaults.MAX_SIZE + 1}")
    with pytest.raises(ValueError):
        sensitivity.SensitivityOptions(trials=defaults.MAX_TRIALS + 1)
    with pytest.raises(ValueError):
        bootstrap.BootstrapOptions(samples=defaults.MAX_SAMPLES + 1)


def test_the_ceilings_show_in_help_and_cli_still_imports_no_analysis():
    code = ("import sys, meta_study.cli as c; print('meta_study.analysis.sensitivity' in sys.modules, "
            "'meta_study.analysis.bootstrap' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["False", "False"], r.stderr
    from click.testing import CliRunner

    out = CliRunner().invoke(cli.cli, ["sensitivity", "--help"]).output
    assert f"x<={sensitivity.MAX_TRIALS}" in out.replace("\n", " ").replace(" ", "")


# --- Answer.text: only the steps' own period ----------------------------------------------------


def _answer(reason: str, steps: tuple[str, ...] = (), claims: str = "") -> Answer:
    return Answer(trusted=False, word="not trusted", reason=reason, steps=steps, claims=claims, flags=())


def test_an_ellipsis_in_a_reason_or_a_step_is_kept():
    """``text()`` ran ``.replace("..", ".")`` over the whole line: a reason naming a task "a...b"
    (or a message with "...") read "a..b"."""
    a = _answer("no usable fit (DS task a...b: no models)", steps=("best DS seen on a...b: 20.0%",),
                claims="Needs more...")
    assert a.text() == "not trusted (no usable fit (DS task a...b: no models)). best DS seen on a...b: 20.0%. Needs more..."


def test_the_steps_end_with_one_period():
    assert _answer("r", steps=("one", "two")).text() == "not trusted (r). one; two."
    assert _answer("r", steps=("one", "two.")).text() == "not trusted (r). one; two."
    assert _answer("r").text() == "not trusted (r)."


# --- ASHA / Optuna: what they rank trials by holds for every trial ------------------------------


def _spec(space, **kw):
    from meta_study.tune.runner import SweepSpec

    return SweepSpec(name="s50b_t", doc="A test sweep.\n", space=space, smoke=dict(model_name="vit_tiny_cpu", epochs=1),
                     **kw)


def _us_task_by_optuna(trial):
    return {"us_task": trial.suggest_categorical("us_task", ["synth_us", "synth_shape"])}


def _eval_every_by_optuna(trial):
    return {"eval_every": trial.suggest_categorical("eval_every", [10, 30])}


@pytest.mark.slow(30)
@pytest.mark.parametrize("space, kw, match", [
    (lambda o: {"us_task": ["synth_us", "synth_shape"]}, dict(scheduler="asha"), r"searches us_task, and ASHA rank"),
    (lambda o: _us_task_by_optuna, dict(search="optuna"), r"searches us_task, and Optuna rank"),
    (lambda o: _us_task_by_optuna, dict(search="optuna", scheduler="asha"), r"ASHA and Optuna rank .*us/synth_us/top1"),
    (lambda o: {"eval_every": [10, 30]}, dict(scheduler="asha"), r"searches eval_every, and ASHA"),
    (lambda o: _eval_every_by_optuna, dict(search="optuna", scheduler="asha"), r"searches eval_every, and ASHA"),
])
def test_a_space_asha_or_optuna_cannot_rank_is_one_line_before_ray(space, kw, match):
    """A searched us_task: the scheduler's and the searcher's metric is the fixed us_task's
    (us/synth_us/top1), which a trial of another task never reports, and Tune's strict metric
    check failed the sweep at its first report. A searched eval_every under ASHA: its grace fell
    back to 1 step, and a trial's report of its last step met a rung (stopped trained to the end)."""
    from meta_study.tune.runner import check_fixed_config, grid, parse_options

    if isinstance(space(None), dict):
        inner = space(None)
        spec = _spec(lambda o: {k: grid(v) for k, v in inner.items()}, **kw)
    else:
        spec = _spec(space, **kw)
    with pytest.raises(UserError, match=match) as e:
        check_fixed_config(spec, parse_options(spec, ["--smoke"]))
    assert "\n" not in str(e.value)


@pytest.mark.slow(30)
def test_a_searched_us_task_or_eval_every_without_a_ranking_is_still_taken():
    from meta_study.tune.runner import check_fixed_config, grid, parse_options

    spec = _spec(lambda o: {"us_task": grid(["synth_us", "synth_shape"]), "eval_every": grid([10, 30])})
    check_fixed_config(spec, parse_options(spec, ["--smoke"]))


@pytest.mark.slow(30)
def test_asha_over_trials_left_at_the_default_eval_every_is_left_out(capsys):
    """No eval_every in the sweep's config: its trials take TrainConfig's 0 and report only their
    last step, yet ASHA ran with a grace of 1 step and judged each at that report (stopped with only
    its probes left)."""
    from ray.tune.schedulers import ASHAScheduler

    from meta_study.tune.runner import asha_scheduler

    assert asha_scheduler("us/synth_us/top1", {}, sweep="t") is None
    err = capsys.readouterr().err
    assert "eval_every=0 (the default)" in err and err.count("\n") == 1
    sched = asha_scheduler("us/synth_us/top1", {"eval_every": 30.0}, sweep="t")
    assert isinstance(sched, ASHAScheduler) and sched._brackets[0]._rungs[-1][0] == 30
