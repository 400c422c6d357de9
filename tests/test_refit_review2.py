"""A second review of the refit job and the analysis entry points, for what a lab would hit: a
script that silently replaced another selection's tables, scripts that printed tracebacks where
the commands print one line, and a publish that failed partway reported as a bad input."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

from meta_study.store import Store
from meta_study.validation import validate
from conftest import REPO, committed_store, error_lines, make_rows, one_error_line, quick_refit_config, run_cli


def _script(monkeypatch, capsys, name: str, *args: str) -> tuple[int, str]:
    """Run ``analysis/NAME ARGS`` in this process (~0.1 s instead of ~3 s of start-up): its exit
    code and its stderr. An exception the script lets through fails the test as it is."""
    monkeypatch.setattr(sys, "argv", [f"analysis/{name}", *args])
    capsys.readouterr()
    try:
        runpy.run_path(str(REPO / "analysis" / name), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, want: int, *needles: str) -> str:
    lines = error_lines(err)
    assert code == want and len(lines) == 1 and "Traceback" not in err, (code, err)
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_tables_f1_f2_never_replaces_the_correlations_of_another_selection(tmp_path, monkeypatch, capsys):
    """`meta-study correlations STORE --out D` (every group), then `tables_f1_f2.py STORE --out D
    --ds-task a`: the script wrote F.1/F.2 of task a alone over D's, beside results.json saying
    they were of every group, and the next command reused them as such. It is the correlations
    part of the one pipeline now: another selection is refused in one line, nothing replaced."""
    s = committed_store(tmp_path / "st")
    d = tmp_path / "d"
    r = run_cli("correlations", s.uri, "--out", str(d), "--no-figures")
    assert r.returncode == 0, r.stderr
    f1 = d / "correlations" / "f1_shots_correlation.parquet"
    before = pd.read_parquet(f1)
    assert set(before["ds_task"]) == {"a", "b", "c"}
    code, err = _script(monkeypatch, capsys, "tables_f1_f2.py", s.uri, "--out", str(d), "--ds-task", "a")
    _one_line(code, err, 2, "another selection", "give another --out")
    pd.testing.assert_frame_equal(pd.read_parquet(f1), before)

    # its own directory: the tables, recorded; and no figure of one shot setting per task (its
    # docstring's promise: three panels of one point each said nothing the tables do not)
    own = tmp_path / "own"
    code, err = _script(monkeypatch, capsys, "tables_f1_f2.py", s.uri, "--out", str(own), "--ds-task", "a")
    assert code == 0, err
    assert set(pd.read_parquet(own / "correlations" / "f1_shots_correlation.parquet")["ds_task"]) == {"a"}
    assert not (own / "figures" / "params_vs_shots.png").exists()
    # with several shot settings, the figure is drawn
    s2 = Store(str(tmp_path / "st2"))
    s2.commit(validate(make_rows(20, ds_tasks=("a",), shots=(1, 5, 10))).table)
    code, err = _script(monkeypatch, capsys, "tables_f1_f2.py", s2.uri, "--out", str(tmp_path / "shots"))
    assert code == 0, err
    assert (tmp_path / "shots" / "figures" / "params_vs_shots.png").exists()


def test_the_scripts_say_errors_in_one_line_as_the_commands_do(tmp_path, monkeypatch, capsys):
    """`fig3_sensitivity.py --sizes 10,thirty` printed a ValueError's traceback; an option out of
    its range named the dataclass field (`holdout_quantile must be ...`), not the flag typed; a
    full disk printed an OSError's traceback and left its half-written table behind; and `--out`
    inside the store wrote tables there, which every plain reader of the store then failed on
    (`meta-study fit` refuses it). As `meta-study`: a bad input is one line naming it (exit 2), the
    machine failing one line with the OS's words (exit 1)."""
    import errno

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    code, err = _script(monkeypatch, capsys, "fig3_sensitivity.py", s.uri, "--out", str(tmp_path / "o"), "--serial",
                        "--sizes", "10,thirty")
    _one_line(code, err, 2, "--sizes", "10,thirty")
    code, err = _script(monkeypatch, capsys, "fig1_grid.py", s.uri, "--out", str(tmp_path / "o"),
                        "--holdout-quantile", "7")
    _one_line(code, err, 2, "--holdout-quantile", "got 7")
    code, err = _script(monkeypatch, capsys, "heatmaps_f20_f21.py", s.uri, "--out", str(tmp_path / "st" / "res"))
    _one_line(code, err, 2, "--out", "inside the store")
    assert len(pd.read_parquet(tmp_path / "st")) == 12 and not (tmp_path / "st" / "res").exists()

    def disk_full(table, where, *a, **k):
        Path(where).write_bytes(b"PAR1 half a table")
        raise OSError(errno.ENOSPC, "No space left on device", str(where))
    monkeypatch.setattr("meta_study.analysis.outputs.pq.write_table", disk_full)
    code, err = _script(monkeypatch, capsys, "fig1_grid.py", s.uri, "--out", str(tmp_path / "full"))
    _one_line(code, err, 1, "No space left on device", str(tmp_path / "full" / "fits.parquet"))
    assert not list((tmp_path / "full").rglob("*.tmp-*")) and not (tmp_path / "full" / "fits.parquet").exists()


def test_a_publish_that_fails_partway_exits_1_not_as_a_bad_input(tmp_path, monkeypatch, capsys):
    """The server answered the refit's first request, then failed while the version was being
    published: a machine failure (README: exit 1 when a server failed partway), but the refit
    exited 2, the code of a wrong setting. The line still says the next refit publishes it."""
    from meta_study.cli import main

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    out = tmp_path / "out"
    monkeypatch.setattr("meta_study.refit.check_tracking", lambda cfg: "0")   # the server answered ...

    def gone(*a, **k):
        raise ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end closed connection'))")
    monkeypatch.setattr("meta_study.refit._publish", gone)                   # ... then went away
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["refit", "--store", s.uri, "--out", str(out), "--tracking-uri", "http://127.0.0.1:9", "--serial",
              "--trials", "2", "--samples", "20"])
    err = capsys.readouterr().err
    version = (out / "LATEST").read_text().strip()
    _one_line(int(e.value.code), err, 1, f"refit {version}: publishing to http://127.0.0.1:9 failed",
              "the next refit publishes them")
    assert (out / "refits" / version / "fits.parquet").exists()


def test_a_refit_whose_last_version_lost_a_table_resamples_every_group(tmp_path):
    """The refit reuses the last version's sensitivity and bootstrap rows of the groups that did
    not change. With that version's bootstrap.parquet gone (a disk fault, a hand), the new version
    held the changed group's rows alone, and published them as the whole table; with its
    sensitivity.parquet damaged, the refit ended in pyarrow's traceback. Every group is resampled
    then, and the last version is left as it is."""
    from meta_study.refit import refit

    s = committed_store(tmp_path / "st")
    cfg = quick_refit_config(s, tmp_path / "out")
    v1 = Path(refit(cfg, log=lambda m: None).version_dir)
    (v1 / "bootstrap.parquet").unlink()
    s.commit(validate(make_rows(10, ds_tasks=("b",), seed=9, run_prefix="new")).table)
    r2 = refit(cfg, log=lambda m: None)
    assert [k[1] for k in r2.changed] == ["b"]
    v2 = Path(r2.version_dir)
    for name in ("sensitivity", "bootstrap"):
        assert set(pd.read_parquet(v2 / f"{name}.parquet")["ds_task"]) == {"a", "b", "c"}, name
    (v2 / "sensitivity.parquet").write_bytes(b"PAR1 not a parquet file")
    s.commit(validate(make_rows(10, ds_tasks=("c",), seed=8, run_prefix="more")).table)
    v3 = Path(refit(cfg, log=lambda m: None).version_dir)
    full = Path(refit(quick_refit_config(s, tmp_path / "fresh"), log=lambda m: None).version_dir)
    for name in ("sensitivity", "bootstrap"):   # as a refit with no last version makes them
        pd.testing.assert_frame_equal(pd.read_parquet(v3 / f"{name}.parquet"), pd.read_parquet(full / f"{name}.parquet"))
    assert (v2 / "sensitivity.parquet").read_bytes() == b"PAR1 not a parquet file"


@pytest.mark.parametrize("command", ["sensitivity", "bootstrap", "refit"])
def test_workers_below_one_is_refused_in_one_line(tmp_path, command):
    """`--workers -2` reached ray.init and ended in Ray's ValueError traceback (after the fits, for
    a refit), and `--workers 0` meant every CPU. It is refused before any work, naming the flag."""
    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    where = ["--store", s.uri] if command == "refit" else [s.uri]
    size = ["--samples", "10"] if command == "bootstrap" else ["--trials", "2"]   # valid: only --workers is not
    r = run_cli(command, *where, "--out", str(tmp_path / "out"), "--workers", "-2", *size)
    one_error_line(r, "--workers", "-2")
    assert not (tmp_path / "out").exists()


class _RayThatLosesWork:
    """Enough of the ``ray`` module for :mod:`meta_study.analysis.parallel`, whose every result is
    lost with ``error`` (as a worker killed for memory, or a node taken back, loses it)."""

    def __init__(self, error: Exception) -> None:
        import ray.exceptions

        self.exceptions, self.error = ray.exceptions, error

    def put(self, value):
        return value

    def remote(self, **_resources):
        return lambda fn: type("Task", (), {"remote": staticmethod(lambda *a: object())})

    def cluster_resources(self):
        return {"CPU": 2}

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        raise self.error


def test_work_that_ray_lost_is_one_line_exit_1_and_a_bug_in_a_task_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """A worker that died on Ray (killed for memory, a spot node taken back) ended `meta-study
    sensitivity`, `bootstrap`, `report` and the refit in Ray's traceback. The machine failed, not
    the input: one line, exit 1. An exception of our own code inside a task stays a traceback."""
    import ray.exceptions

    from meta_study.analysis import parallel
    from meta_study.analysis.groups import Selection
    from meta_study.cli import main

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    monkeypatch.setattr(parallel, "init_ray", lambda *a, **k: _RayThatLosesWork(ray.exceptions.WorkerCrashedError()))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["sensitivity", s.uri, "--out", str(tmp_path / "o"), "--trials", "2", "--no-figures"])
    _one_line(int(e.value.code), capsys.readouterr().err, 1, "sensitivity on Ray failed: WorkerCrashedError",
              "--serial")
    assert not (tmp_path / "o" / "sensitivity.parquet").exists()
    bug = ray.exceptions.RayTaskError("task", "Traceback ...", ZeroDivisionError("division by zero"))
    monkeypatch.setattr(parallel, "init_ray", lambda *a, **k: _RayThatLosesWork(bug))
    with pytest.raises(ray.exceptions.RayTaskError):
        parallel.bootstrap_ray(Selection().load(Store(s.uri)))


def test_a_refit_of_a_store_whose_groups_all_left_says_latest_is_of_them(tmp_path):
    """Every run deleted from the store (a source dropped): the refit said "no groups to fit" and
    nothing of OUT/LATEST, which still named the last version's results as if current."""
    from meta_study.refit import refit

    s = committed_store(tmp_path / "st")
    cfg = quick_refit_config(s, tmp_path / "out")
    first = refit(cfg, log=lambda m: None)
    rows = s.read(columns=["source", "run_id"]).to_pandas().drop_duplicates()
    s.commit(None, delete_runs=list(rows.itertuples(index=False, name=None)))
    r = refit(cfg, log=lambda m: None)
    assert r.status == "empty" and "no groups to fit" in r.message, r.message
    assert "LATEST still names the refit of" in r.message and "no longer holds" in r.message, r.message
    assert (tmp_path / "out" / "LATEST").read_text().strip() == Path(first.version_dir).name
    # a first refit of such a store has no LATEST to speak of
    assert "LATEST" not in refit(quick_refit_config(s, tmp_path / "fresh"), log=lambda m: None).message
