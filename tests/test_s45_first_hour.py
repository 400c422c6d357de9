"""A researcher's first hour with the CLI (README's command section on small tables)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli


def _store_with_quarantine(tmp_path: Path, bad: int) -> Path:
    f = tmp_path / "runs.csv"
    rows = ["run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol", "ok,up,0.5,a,0.4,linear"]
    rows += [f"bad{i},up,,a,0.4,linear" for i in range(bad)]          # no US accuracy: quarantined
    f.write_text("\n".join(rows) + "\n")
    st = tmp_path / "st"
    res = run_cli("ingest", str(f), "--store", str(st), "--quiet")
    assert res.returncode == 0 and f"{bad} quarantined" in res.stdout, res.stdout + res.stderr
    return st


def test_quarantine_says_when_it_shows_only_the_first_rows(tmp_path: Path) -> None:
    """``store quarantine`` printed "25 quarantined row(s)" and then 20 of them, with nothing to
    say that 5 were left out or how to see them."""
    st = _store_with_quarantine(tmp_path, 25)
    out = run_cli("store", "quarantine", str(st))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "25 quarantined row(s)"
    assert sum(x.startswith("- [runs] bad") for x in lines) == 20
    assert lines[-1] == "... and 5 more (the first 20 shown; --limit 0 shows all)", lines[-1]
    # the hint works when pasted, and every row is then shown with no such line
    every = run_cli("store", "quarantine", str(st), "--limit", "0").stdout.splitlines()
    assert sum(x.startswith("- [runs] bad") for x in every) == 25
    assert not any(x.startswith("... and") for x in every)
    # all of them fit under the limit: no line either
    few = run_cli("store", "quarantine", str(st), "--limit", "25").stdout.splitlines()
    assert sum(x.startswith("- [runs] bad") for x in few) == 25 and not any(x.startswith("...") for x in few)


def _zoo_store(tmp_path: Path) -> Path:
    """One group (up -> down, linear) of 16 models on a saturating curve."""
    import math

    f = tmp_path / "zoo.csv"
    lines = ["run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol"]
    for i in range(16):
        us = 0.4 + 0.035 * i
        ds = 0.9 - 0.8 * math.exp(-3 * us) + 0.01 * ((i * 7) % 3 - 1)
        lines.append(f"m{i},up,{us:.4f},down,{ds:.4f},linear")
    f.write_text("\n".join(lines) + "\n")
    st = tmp_path / "st"
    assert run_cli("ingest", str(f), "--store", str(st), "--quiet").returncode == 0
    return st


def test_report_takes_sensitivity_sizes_so_it_can_reuse_them(tmp_path: Path) -> None:
    """README's tour: ``sensitivity --sizes 10,30 --out DIR`` then ``report --out DIR``. The
    report refused DIR with "made with other options: --sizes 10,30 (this command: not given);
    give another --out, or the same options to reuse it", and report had no --sizes to give."""
    st, out = _zoo_store(tmp_path), tmp_path / "out"
    sens = run_cli("sensitivity", str(st), "--out", str(out), "--sizes", "5,10", "--trials", "1", "--serial",
                   "--no-figures")
    assert sens.returncode == 0, sens.stdout + sens.stderr
    rep = run_cli("report", str(st), "--out", str(out), "--sizes", "5,10", "--trials", "1", "--samples", "10",
                  "--serial")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "reused sensitivity from" in rep.stdout, rep.stdout
    assert (out / "index.html").is_file()
    # the same words as sensitivity's for a bad value
    bad = run_cli("report", str(st), "--out", str(tmp_path / "o2"), "--sizes", "2", "--serial")
    assert bad.returncode == 2 and "--sizes must be integers >= 3, got '2'" in bad.stderr, bad.stdout + bad.stderr


def test_a_selection_matching_nothing_is_said_before_an_earlier_results_dir_is_compared(tmp_path: Path) -> None:
    """``fit STORE --out DIR --ds-task nope`` into a DIR of earlier results said "DIR/fits.parquet:
    made with another selection ... give another --out, or the same options to reuse it" instead of
    that nothing in the store matches --ds-task nope (what a fresh --out said)."""
    st, out = _zoo_store(tmp_path), tmp_path / "out"
    first = run_cli("fit", str(st), "--out", str(out), "--no-figures")
    assert first.returncode == 0, first.stdout + first.stderr
    for extra in (("--ds-task", "nope"), ("--ds-task", "down", "--shots", "5"), ("--us-task", "nope", "--ds-task", "down")):
        res = run_cli("fit", str(st), "--out", str(out), "--no-figures", *extra)
        assert res.returncode == 2, (extra, res.stdout + res.stderr)
        assert "no rows match the selection" in res.stderr and "made with another selection" not in res.stderr, \
            (extra, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    # a matching selection still reuses the results
    again = run_cli("fit", str(st), "--out", str(out), "--no-figures")
    assert again.returncode == 0 and "reused fits from" in again.stdout, again.stdout + again.stderr
    # and a real difference of selection is still said as one
    other = run_cli("fit", str(st), "--out", str(out), "--no-figures", "--ds-task", "down")
    assert other.returncode == 2 and "made with another selection" in other.stderr, other.stdout + other.stderr
