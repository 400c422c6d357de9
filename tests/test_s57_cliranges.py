"""Every range a numeric option of ``meta-study`` enforces is the one its ``--help`` shows.

``--level``, ``--holdout-quantile``, ``--holdout-above``, ``--tolerance``, ``--ds-target``,
``--threshold``, ``--alpha-max``, ``--limit`` and ``--overlap`` refused values outside a range
that their help did not state. Each help's range is read back here, and a value just inside each
end is accepted while one just outside is refused in one line, exit 2. Only the arguments are
checked: every accepted run ends at a later refusal (a selection that matches nothing, an
``--out`` inside the store, no source) before any analysis.
"""

from __future__ import annotations

import re

import click
import pytest

from conftest import committed_store, error_lines, one_error_line, run_cli

#: (command words, option) for every command whose help shows the option.
FIT_OPTIONS = ("--holdout-quantile", "--holdout-above", "--alpha-max")
HEADLINE_OPTIONS = ("--tolerance", "--ds-target")
CASES = ([(("fit",), o) for o in (*FIT_OPTIONS, *HEADLINE_OPTIONS, "--threshold")]
         + [(("sensitivity",), o) for o in FIT_OPTIONS]
         + [(("bootstrap",), o) for o in (*FIT_OPTIONS, "--level")]
         + [(("report",), o) for o in (*FIT_OPTIONS, *HEADLINE_OPTIONS, "--threshold")]
         + [(("refit",), o) for o in (*FIT_OPTIONS, *HEADLINE_OPTIONS, "--threshold")]
         + [(("ingest",), "--overlap"), (("store", "quarantine"), "--limit")])

NUM = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
#: click's words for a range: ``0<x<=1``, ``0.5<=x<=100``, ``x>=0``
RANGE = re.compile(rf"^(?:(?P<lo>{NUM})(?P<lop><=?))?x(?:(?P<hop><=?)(?P<hi>{NUM})|(?P<gop>>=?)(?P<glo>{NUM}))?$")


def _help_of(words: tuple[str, ...], option: str) -> str:
    """The help of ``option`` in ``meta-study WORDS --help``, on one line."""
    r = run_cli(*words, "--help")
    assert r.returncode == 0, r.stderr
    block, inside = [], False
    for line in r.stdout.splitlines():
        if re.match(r"^  -", line):
            inside = line.split()[0].rstrip(",") == option
        if inside:
            block.append(line.strip())
    assert block, f"{option} not in `meta-study {' '.join(words)} --help`"
    return " ".join(" ".join(block).split())


def shown_range(words: tuple[str, ...], option: str) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """(lower end, upper end) of the range the help shows, each (value, open) or None."""
    text = _help_of(words, option)
    extras = re.search(r"\[([^\[\]]*)\]$", text)
    assert extras, f"{option}: no [...] in its help: {text}"
    found = [m for m in (RANGE.match(item.replace(" ", "")) for item in extras.group(1).split(";")) if m]
    assert len(found) == 1, f"{option}: no range in its help: {text}"
    m = found[0]
    if m["gop"]:
        return (float(m["glo"]), m["gop"] == ">"), None
    lo = (float(m["lo"]), m["lop"] == "<") if m["lo"] else None
    hi = (float(m["hi"]), m["hop"] == "<") if m["hi"] else None
    return lo, hi


def edge_values(end: tuple[float, bool], upper: bool, whole: bool) -> tuple[str, str]:
    """(just inside, just outside) an end of a range."""
    value, is_open = end
    step = 1 if whole else 1e-3 * max(1.0, abs(value))
    inward = -step if upper else step
    inside, outside = (value + inward, value) if is_open else (value, value - inward)

    def text(v: float) -> str:
        return str(int(v)) if whole else f"{v:.12g}"
    return text(inside), text(outside)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return committed_store(tmp_path_factory.mktemp("ranges") / "st", runs=6, tasks=("a",))


def _run(words: tuple[str, ...], option: str, value: str, store, tmp_path):
    """The command with ``option value`` and what makes an accepted value end before any work:
    returns (result, the needle of that later refusal, or None where it succeeds)."""
    cmd, out = words[0], str(tmp_path / "out")
    if cmd == "refit":   # in this process: it stops before Ray (--serial) at --out inside the store
        return run_cli("refit", "--store", store.uri, "--out", f"{store.uri}/o", "--serial", option, value,
                       subprocess_=False), "inside the store"
    if cmd == "ingest":
        return run_cli("ingest", "--store", str(tmp_path / "st2"), option, value), "give at least one SOURCE"
    if cmd == "store":
        return run_cli(*words, store.uri, option, value), None
    serial = () if cmd == "fit" else ("--serial",)
    return run_cli(cmd, store.uri, "--out", out, *serial, "--ds-task", "nosuch", option, value), "--ds-task nosuch"


@pytest.mark.parametrize("words,option", CASES, ids=[f"{' '.join(w)} {o}" for w, o in CASES])
def test_the_range_help_shows_is_the_range_enforced(words, option, store, tmp_path):
    cmd = click_option(words, option)
    whole = isinstance(cmd.type, click.types.IntParamType)
    lo, hi = shown_range(words, option)
    assert lo is not None or hi is not None
    for end, upper in ((lo, False), (hi, True)):
        if end is None:
            continue
        inside, outside = edge_values(end, upper, whole)
        r, later = _run(words, option, inside, store, tmp_path)
        if later is None:
            assert r.returncode == 0, (option, inside, r.stderr)
        else:   # past the option: refused only for what comes after it
            assert option not in r.stderr and later in one_error_line(r), (option, inside, r.stderr)
        r, _ = _run(words, option, outside, store, tmp_path)
        line = one_error_line(r, option)
        assert "Traceback" not in r.stderr and len(error_lines(r.stderr)) == 1, line
    assert not (tmp_path / "out").exists()   # a refused option leaves no --out behind


def click_option(words: tuple[str, ...], option: str) -> click.Option:
    from meta_study.cli import cli

    cmd = cli
    for w in words:
        cmd = cmd.commands[w]
    (opt,) = [p for p in cmd.params if isinstance(p, click.Option) and option in p.opts]
    return opt


def test_every_number_option_that_is_no_selection_shows_a_range():
    """Every float option of every command says its range in --help (a new one without it fails
    here); integers are selection values (--shots, --layer: what the store holds) or ranged."""
    from meta_study.cli import cli

    def commands(group, words=()):
        for name, c in group.commands.items():
            yield from commands(c, (*words, name)) if isinstance(c, click.Group) else [((*words, name), c)]

    bare = [f"{' '.join(w)} {p.opts[0]}" for w, c in commands(cli) for p in c.params
            if isinstance(p, click.Option) and not p.hidden
            and isinstance(p.type, (click.types.FloatParamType, click.types.IntParamType))
            and not isinstance(p.type, click.types._NumberRangeBase) and p.name not in ("shots", "layer")]
    assert not bare, bare


def test_the_help_of_tolerance_names_the_floor_it_enforces():
    from meta_study.cli import MIN_TOLERANCE_PT

    text = _help_of(("fit",), "--tolerance")
    assert f"values below {MIN_TOLERANCE_PT:g} look like fractions" in text
    assert shown_range(("fit",), "--tolerance")[0] == (MIN_TOLERANCE_PT, False)


def test_showing_a_range_imports_no_analysis_until_a_commands_help_is_asked():
    """The ranges come from errors.OPTION_RANGES, which the option dataclasses enforce: importing
    the CLI, `meta-study --help` and a command's --help import no analysis."""
    import subprocess
    import sys

    code = ("import sys, meta_study.cli; from click.testing import CliRunner; "
            "CliRunner().invoke(meta_study.cli.cli, ['--help']); "
            "print('meta_study.analysis.fitting' in sys.modules, 'meta_study.analysis.bootstrap' in sys.modules); "
            "out = CliRunner().invoke(meta_study.cli.cli, ['bootstrap', '--help']).output; "
            "print('0<x<1' in ''.join(out.split()), 'meta_study.analysis.bootstrap' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["False", "False", "True", "False"], (r.stdout, r.stderr)


def test_fig1_grid_shows_the_holdout_quantile_range_the_commands_show():
    """The script's argparse help says the range of --holdout-quantile from the same check."""
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run([sys.executable, str(REPO / "analysis" / "fig1_grid.py"), "--help"], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    lo, hi = shown_range(("fit",), "--holdout-quantile")
    words = f"{lo[0]:g}{'<' if lo[1] else '<='}x{'<' if hi[1] else '<='}{hi[0]:g}"
    assert f"(default 0.8; {words})" in text, text


def test_fig3_sensitivity_shows_the_trials_range_the_command_shows_and_ingest_one_overlap_range():
    """The script's --trials help gives `meta-study sensitivity --trials`' range (it gave only the
    default), and SourceOptions refuses --overlap by the range the help shows (two copies before)."""
    import subprocess
    import sys

    from conftest import REPO
    from meta_study.errors import OPTION_RANGES, UserError
    from meta_study.ingest.sources import SourceOptions

    r = subprocess.run([sys.executable, str(REPO / "analysis" / "fig3_sensitivity.py"), "--help"], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lo, hi = shown_range(("sensitivity",), "--trials")
    assert f"{lo[0]:g}<=x<={hi[0]:g}" in "".join(r.stdout.split()), r.stdout
    assert not OPTION_RANGES["overlap_s"].contains(-0.5) and OPTION_RANGES["overlap_s"].contains(0.0)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(UserError, match=r"overlap must be a finite number >= 0 seconds"):
            SourceOptions(overlap_s=bad)
    SourceOptions(overlap_s=0.0)
