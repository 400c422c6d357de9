"""Review (session 49) of the command line: work options without a ceiling (``--trials 1000000``
ran until killed), "no rows match the selection" that did not name the value that matched nothing,
a library ``RefitConfig`` whose selection options stopped at the headline fits (another options
fingerprint than the CLI's for the same tables), and a broken pipe that exited 1 as a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import REPO, committed_store, make_rows, one_error_line, run_cli  # noqa: E402

from meta_study import cli as cli_mod  # noqa: E402
from meta_study.analysis.fitting import FitOptions  # noqa: E402
from meta_study.analysis.groups import Selection, no_match, unknown_selection  # noqa: E402
from meta_study.analysis.selection import SelectionOptions  # noqa: E402
from meta_study.refit import RefitConfig  # noqa: E402
from meta_study.store import Store  # noqa: E402
from meta_study.validation import validate  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def store(tmp_path):
    return committed_store(tmp_path / "st", runs=12, tasks=("a", "b"))


# --------------------------------------------------------------------------------------------
# 1. --trials / --samples / --workers / --sizes have a ceiling
# --------------------------------------------------------------------------------------------

# ``--ds-task nope`` matches nothing: without a ceiling the command got as far as saying so (and
# with a selection that matched, ran the draws until killed); the ceiling is refused first.
@pytest.mark.parametrize("args, flag, ceiling", [
    (("sensitivity", "--trials", "100000", "--serial"), "--trials", "10,000"),
    (("bootstrap", "--samples", "1000000", "--serial"), "--samples", "100,000"),
    (("bootstrap", "--workers", "100000"), "--workers", "1,024"),
    (("sensitivity", "--workers", "40000"), "--workers", "1,024"),
    (("report", "--trials", "100000", "--serial"), "--trials", "10,000"),
    (("report", "--samples", "10000000", "--serial"), "--samples", "100,000"),
    (("sensitivity", "--sizes", "10,100000000", "--bootstrap", "--serial"), "--sizes", "1,000,000"),
])
def test_work_options_above_their_ceiling_are_refused_in_one_line(store, tmp_path, args, flag, ceiling):
    cmd, *rest = args
    r = run_cli(cmd, store.uri, "--out", str(tmp_path / "o"), "--ds-task", "nope", *rest, subprocess_=False)
    line = one_error_line(r, flag, ceiling, "the most it takes")
    assert "no rows match" not in line, line
    assert not (tmp_path / "o").exists()


def test_refit_work_options_above_their_ceiling_are_refused(tmp_path):
    # no store there: refused before it is looked for (without a ceiling: "no such store")
    for flag, value in (("--trials", "100000"), ("--samples", "1000000"), ("--workers", "5000")):
        r = run_cli("refit", "--store", str(tmp_path / "nostore"), "--out", str(tmp_path / "r"), "--tracking-uri", "none", flag, value,
                    subprocess_=False)
        one_error_line(r, flag, "the most it takes")
        assert not (tmp_path / "r").exists()


def test_the_ceilings_themselves_are_accepted_and_the_floors_say_what_they_said():
    assert cli_mod.TRIALS.convert(str(cli_mod.MAX_TRIALS), None, None) == cli_mod.MAX_TRIALS
    assert cli_mod.SAMPLES.convert(cli_mod.MAX_SAMPLES, None, None) == cli_mod.MAX_SAMPLES
    assert cli_mod.WORKERS.convert("1", None, None) == 1 and cli_mod.WORKERS.convert("1024", None, None) == 1024
    assert cli_mod._parse_sizes(f"10,{cli_mod.MAX_SIZE}") == (10, cli_mod.MAX_SIZE)


def test_floors_are_still_the_librarys(store, tmp_path):
    r = run_cli("sensitivity", store.uri, "--out", str(tmp_path / "o"), "--trials", "0", "--serial")
    one_error_line(r, "--trials", "0 is less than 1, the fewest it takes")
    r = run_cli("bootstrap", store.uri, "--out", str(tmp_path / "o"), "--workers", "0", subprocess_=False)
    one_error_line(r, "--workers", "0")


# --------------------------------------------------------------------------------------------
# 2. "no rows match the selection" names the values that match nothing, and the closest names
# --------------------------------------------------------------------------------------------

def test_no_match_names_the_value_that_matched_nothing_and_the_closest_name(store):
    msg = no_match("st", store, Selection(ds_task=("A",)))
    assert msg == "st: no rows match the selection: --ds-task A is not in the store (did you mean a? it has a, b)", msg
    msg = no_match("st", store, Selection(ds_task=("nope", "bb")))
    assert "--ds-task nope, bb are not in the store (did you mean b for bb? it has a, b)" in msg, msg
    # two options, each naming its own value
    msg = no_match("st", store, Selection(us_task=("upp",), shots=(7,)))
    assert "--us-task upp is not in the store (did you mean up? it has up); --shots 7 is not in the store (it has 5)" \
        in msg, msg


def test_no_match_says_when_values_are_in_the_store_but_not_together(tmp_path):
    s = Store(str(tmp_path / "st"))
    rows = make_rows(6, us_task="up", ds_tasks=("a",))
    rows2 = make_rows(6, us_task="up2", ds_tasks=("b",), run_prefix="q")
    s.commit(validate(rows).table)
    s.commit(validate(rows2).table)
    msg = no_match("st", s, Selection(us_task=("up",), ds_task=("b",)))
    assert msg == ("st: no rows match the selection: no group has --us-task up with --ds-task b (each is in the "
                   "store, not together)"), msg
    # and the CLI says the same, in one line
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--us-task", "up", "--ds-task", "b")
    one_error_line(r, "no group has --us-task up with --ds-task b")


def test_no_match_of_a_task_probed_layer_wise_only_says_so(tmp_path):
    """DS task b probed at layer 3 only, a at the pre-logits layer: ``--ds-task b`` said "the store
    has a, b", naming the very task given."""
    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(6, ds_tasks=("a",))).table)
    s.commit(validate(make_rows(6, ds_tasks=("b",), run_prefix="q").assign(representation_layer=3)).table)
    msg = no_match("st", s, Selection(ds_task=("b",)))
    assert "every row is a probe of an intermediate layer (3)" in msg, msg


def test_no_match_of_an_empty_store(tmp_path):
    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(3)).table)
    s.commit(delete_runs=[("src", f"r{i}") for i in range(3)])
    assert no_match("st", s, Selection(ds_task=("a",))) == "st: no rows match the selection (the store is empty)"


def test_the_cli_and_unknown_values_name_the_closest_name(store, tmp_path):
    r = run_cli("fit", store.uri, "--out", str(tmp_path / "o"), "--ds-task", "A")
    one_error_line(r, "no rows match the selection: --ds-task A is not in the store (did you mean a? it has a, b)")
    r = run_cli("fit", store.uri, "--out", str(tmp_path / "o"), "--ds-task", "a", "--ds-task", "bb")
    one_error_line(r, "--ds-task bb: no such value in the store (it has a, b); did you mean b?")
    msg = unknown_selection("st", store, Selection(ds_task=("a", "zzz")))
    assert msg is not None and msg.endswith("(it has a, b)"), msg   # nothing near: no hint
    from meta_study.analysis.groups import closest_values

    assert closest_values(["ImageNet-A"], ["imagenet-a", "imagenet-r"]) == "did you mean imagenet-a?"


# --------------------------------------------------------------------------------------------
# 3. A library RefitConfig with selection options: the same options and fingerprint as the CLI's
# --------------------------------------------------------------------------------------------

def test_a_library_refit_config_with_selection_options_matches_the_clis(store, tmp_path, monkeypatch):
    import meta_study.refit as refit_mod

    seen = []

    def capture(cfg, **kw):
        seen.append(cfg)
        raise RuntimeError("captured")

    monkeypatch.setattr(refit_mod, "refit", capture)
    run_cli("refit", "--store", store.uri, "--out", str(tmp_path / "r"), "--tracking-uri", "none", "--serial",
            "--tolerance", "5", subprocess_=False)
    assert len(seen) == 1
    cli_cfg = seen[0]
    fit = FitOptions(selection=SelectionOptions(tolerance=0.05))
    assert cli_cfg.fit == fit
    lib = RefitConfig(store=store.uri, out=str(tmp_path / "r"), fit=fit)
    assert lib.sensitivity.fit == fit and lib.bootstrap.fit == fit
    assert lib.sensitivity == cli_cfg.sensitivity and lib.bootstrap == cli_cfg.bootstrap
    assert lib.options_fingerprint() == cli_cfg.options_fingerprint()


def test_a_part_with_other_fitting_options_is_still_refused(tmp_path):
    from meta_study.analysis.sensitivity import SensitivityOptions

    with pytest.raises(ValueError, match="sensitivity.fit differs from fit: loss"):
        RefitConfig(store="st", out=str(tmp_path / "r"), fit=FitOptions(selection=SelectionOptions(tolerance=0.05)),
                    sensitivity=SensitivityOptions(fit=FitOptions(loss="huber")))


# --------------------------------------------------------------------------------------------
# 4. A broken pipe (`meta-study ... | head -1`) ends quietly, exit 141
# --------------------------------------------------------------------------------------------

def _closed_pipe_run(*args: str) -> tuple[int, str]:
    """``meta-study ARGS`` writing to a pipe whose reader is already gone: every write is EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "meta_study.cli", *args], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=120, cwd=REPO)
    finally:
        os.close(w)
    return p.returncode, p.stderr


@pytest.mark.parametrize("args", [("--help",), ("store", "info", "{st}")])
def test_a_broken_pipe_exits_quietly_with_141(store, args):
    rc, err = _closed_pipe_run(*(a.format(st=store.uri) for a in args))
    assert rc == cli_mod.EXIT_BROKEN_PIPE == 141 and err == "", (rc, err)
