"""The CLI says what it did: progress that ends at its total, a result line from sensitivity and
bootstrap, whole summaries in --help, fractions refused as a tolerance in points, the Ray it uses,
outputs git-ignored, and a refit that never reads its own published runs."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from meta_study.cli import bootstrap_lines, cli, progress_bar, sensitivity_lines
from meta_study.validation import validate
from meta_study.store import Store
from conftest import REPO, make_rows, one_error_line, run_cli


def _store(path: Path, runs: int = 30) -> Store:
    s = Store(str(path))
    s.commit(validate(make_rows(runs, ds_tasks=("a", "b"))).table)
    return s


def test_plain_progress_ends_each_operation_at_its_total(capsys):
    now = [0.0]
    with progress_bar(clock=lambda: now[0]) as progress:   # no terminal under pytest: plain lines
        for t, done in ((0, 0), (13, 0), (15, 3), (16, 5)):
            now[0] = t
            progress("sensitivity", done, 5)
        now[0] = 17
        progress("bootstrap", 0, 5)
        now[0] = 30
        progress("bootstrap", 2, 5)
        now[0] = 31
        progress("bootstrap", 4, 5)          # the operation ends without a last update: flushed at exit
        progress("listing experiments", 0, None)
    err = capsys.readouterr().err.splitlines()
    assert err == ["  sensitivity: 0/5 (13 s)", "  sensitivity: 5/5 (16 s)", "  bootstrap: 2/5 (30 s)",
                   "  bootstrap: 4/5 (31 s)"], err
    # an operation done within 2 s prints nothing at all (a quick failure stays one line)
    now[0] = 0.0
    with progress_bar(clock=lambda: now[0]) as progress:
        progress("fits", 0, 3)
        now[0] = 1.5
        progress("fits", 3, 3)
    assert capsys.readouterr().err == ""


def test_help_summaries_are_whole_sentences():
    out = CliRunner().invoke(cli, ["--help"], terminal_width=80).output
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and ln.split()}
    for name in ("bootstrap", "sensitivity"):
        assert not lines[name].rstrip().endswith(("Eq.", "...")), lines[name]
    for name in ("sensitivity", "bootstrap", "refit"):
        text = " ".join(CliRunner().invoke(cli, [name, "--help"]).output.split())
        assert "default: $RAY_ADDRESS if set, else a Ray of its own" in text, text


def test_sensitivity_and_bootstrap_print_a_result_line(tmp_path):
    s = _store(tmp_path / "st")
    r = run_cli("sensitivity", s.uri, "--out", str(tmp_path / "sens"), "--serial", "--trials", "2",
                "--frontiers", "vertices,all", "--no-figures")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("prediction error"))
    result = {ln.split(":")[0].strip(): ln for ln in lines[i + 1:i + 3]}
    assert set(result) == {"vertices", "all"}, lines
    assert all(" pt at n=10, " in ln and re.search(r" pt at n=\d+(\.\.\d+)?$", ln) for ln in result.values()), lines
    r = run_cli("bootstrap", s.uri, "--out", str(tmp_path / "boot"), "--serial", "--samples", "20")
    assert r.returncode == 0, r.stderr
    assert "alpha with its 95% interval:" in r.stdout
    assert "  up -> a (fewshot, 5-shot): vertices " in r.stdout and "; all " in r.stdout, r.stdout


def test_result_lines_say_when_alpha_sits_on_its_bound():
    def row(frontier, est, lo, hi):
        return {"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "frontier": frontier,
                "param": "alpha", "estimate": est, "lo": lo, "hi": hi, "level": 0.95}
    t = pd.DataFrame([row("vertices", 10.0, 10.0, 10.0), row("all", 2.0, 1.5, 10.0), row("bins", 2.0, 1.0, 3.0)])
    line = bootstrap_lines(t, alpha_max=10.0)[1]
    assert line == ("  up -> a (fewshot, 5-shot): vertices 10 [10, 10] at its bound 10; all 2 [1.5, 10] (interval "
                    "reaches its bound 10); bins 2 [1, 3]")
    # the lower bound (a flat law): "vertices 0.001 [0.001, 0.001]" read as a precise alpha; "k = 0"
    # only where the table's k row says so (none here; session 57: the fitter stops there with k > 0 too)
    flat = pd.DataFrame([row("vertices", 1e-3, 1e-3, 1e-3), row("all", 2.0, 1e-3, 3.0)])
    assert bootstrap_lines(flat, alpha_max=10.0)[1] == (
        "  up -> a (fewshot, 5-shot): vertices 0.001 [0.001, 0.001] at its bound 0.001 (a flat law, alpha "
        "not identified); all 2 [0.001, 3] (interval reaches its bound 0.001)")
    sens = pd.DataFrame([{"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                          "frontier": "all", "n": n, "pred_err": e}
                         for n, e in ((10, 0.05), (10, 0.07), (40, 0.02), (40, 0.02))])
    # the largest sample by its size: "at the full sample" was said of --sizes 10,30 of 1,245 points
    assert sensitivity_lines(sens)[1] == "  all: 6.0 pt at n=10, 2.0 pt at n=40"


@pytest.mark.parametrize("value,ok", [("0.03", False), ("0.4", False), ("0.5", True), ("3", True)])
def test_a_tolerance_that_looks_like_a_fraction_is_refused(tmp_path, value, ok):
    s = _store(tmp_path / "st", runs=12)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "fit"), "--tolerance", value, "--no-figures")
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "accuracy points" in r.stderr and f"did you mean {100 * float(value):g}?" in r.stderr


def test_joining_the_cluster_in_ray_address_is_said(tmp_path):
    s = _store(tmp_path / "st", runs=12)
    r = run_cli("bootstrap", s.uri, "--out", str(tmp_path / "boot"), "--samples", "10",
                env={"RAY_ADDRESS": "127.0.0.1:9"}, timeout=120)
    assert r.returncode == 2
    assert "ray: the cluster at 127.0.0.1:9 (from $RAY_ADDRESS; RAY_ADDRESS=local starts a Ray of its own)" in r.stderr
    assert "RAY_ADDRESS 127.0.0.1:9: no Ray cluster (GCS) answers there (connection refused)" in r.stderr


def test_default_output_directories_are_git_ignored():
    for path in ("meta-study-refits/refits/x/index.html", "meta-study-sweeps/ray/x", "meta-study-demo/x"):
        r = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert r.returncode == 0, path


@pytest.mark.slow(40)
def test_a_refit_never_reads_its_own_published_runs(tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from mlflow_server import MlflowServer

    with MlflowServer(tmp_path / "mlflow") as server:    # its own: only this test's experiments
        client = MlflowClient(server.uri)
        exp = client.create_experiment("zoo")
        now = int(time.time() * 1000)
        for i in range(12):
            rid = client.create_run(exp).info.run_id
            us = 0.3 + 0.04 * i
            client.log_batch(rid, metrics=[Metric("us/up/top1", us, now, 0),
                                           Metric("ds/a/5shot/top1", 0.2 + 0.5 * us, now, 0)])
            client.set_terminated(rid)
        store, out = str(tmp_path / "st"), str(tmp_path / "out")
        args = ("refit", "--store", store, "--source", server.uri, "--tracking-uri", server.uri, "--out", out,
                "--serial", "--trials", "2", "--samples", "20")
        first = run_cli(*args)
        assert first.returncode == 0 and "refit: 1 changed" in first.stdout, first.stdout + first.stderr
        second = run_cli(*args)
        assert second.returncode == 0, second.stderr
        ingest_line = next(ln for ln in second.stdout.splitlines() if ln.startswith(server.uri))
        assert "1 refit result run not read" in ingest_line and "without downstream" not in ingest_line, ingest_line
        assert second.stdout.splitlines()[-1].startswith("refit: noop"), second.stdout
        assert len(Store(store).to_pandas()) == 12


def test_results_are_never_written_into_the_store(tmp_path):
    """`fit STORE --out STORE` wrote fits.parquet, points and results.json into the store root:
    a plain pandas.read_parquet(STORE) then failed on fits.csv and `store check` found untracked files."""
    s = _store(tmp_path / "st", runs=12)
    before = sorted(p.relative_to(s.uri) for p in Path(s.uri).rglob("*"))
    for cmd, out, opts in (("fit", s.uri, ("--no-figures",)), ("fit", str(Path(s.uri) / "new-dir"), ("--no-figures",)),
                           ("correlations", s.uri, ()), ("report", str(Path(s.uri) / "_meta"), ("--serial",))):
        r = run_cli(cmd, s.uri, "--out", out, *opts)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (cmd, r.stderr)
        assert f"--out {out}: is " in r.stderr and "the store" in r.stderr, r.stderr
    assert sorted(p.relative_to(s.uri) for p in Path(s.uri).rglob("*")) == before   # nothing created in it
    assert len(pd.read_parquet(s.uri)) > 0
    ok = run_cli("fit", s.uri, "--out", str(tmp_path / "beside"), "--no-figures")    # beside it: fine
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("args,flag", [(("--threshold", "inf"), "--threshold"), (("--threshold", "150"), "--threshold"),
                                       (("--max-group-figures", "-1"), "--max-group-figures")])
def test_option_values_out_of_range_are_refused(tmp_path, args, flag):
    s = _store(tmp_path / "st", runs=12)
    cmd = "report" if args[0] == "--threshold" else "fit"
    r = run_cli(cmd, s.uri, "--out", str(tmp_path / "o"), "--serial" if cmd == "report" else "--no-figures", *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and flag in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_an_overlap_that_is_not_a_number_of_seconds_is_refused(tmp_path):
    for value in ("nan", "inf", "-5"):
        r = run_cli("ingest", str(tmp_path / "missing.csv"), "--store", str(tmp_path / "st"), "--overlap", value)
        assert r.returncode == 2 and r.stderr.strip() == f"meta-study: error: --overlap must be a finite number >= 0, got {value}"


def test_a_misspelled_name_among_several_is_refused_not_dropped(tmp_path):
    """`--ds-task a --ds-task typo` analysed a alone and said nothing of the typo."""
    s = _store(tmp_path / "st", runs=12)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures", "--ds-task", "a", "--ds-task", "bb")
    assert one_error_line(r, "--ds-task bb: no such value in the store (it has a, b)")
    assert not (tmp_path / "o" / "fits.parquet").exists()
    ok = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures", "--ds-task", "a", "--ds-task", "b")
    assert ok.returncode == 0, ok.stderr
    # names as the store holds them: spaces at either end (a shell quote) are no part of one
    ok = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures", "--ds-task", "a ", "--ds-task", " b")
    assert ok.returncode == 0 and "reused fits" in ok.stdout, ok.stderr


def test_params_vs_shots_only_with_several_shot_settings(tmp_path):
    """With one shot setting per task (0-shot language-model tasks) the figure had empty
    log-scaled panels and a legend of every task."""
    one = Store(str(tmp_path / "one"))
    one.commit(validate(make_rows(30, ds_tasks=("a", "b"), shots=(5,))).table)
    several = Store(str(tmp_path / "several"))
    several.commit(validate(make_rows(30, ds_tasks=("a", "b"), shots=(1, 5))).table)
    for store, drawn in ((one, False), (several, True)):
        out = tmp_path / f"fit-{drawn}"
        r = run_cli("fit", store.uri, "--out", str(out), "--max-group-figures", "0")
        assert r.returncode == 0, r.stderr
        assert (out / "figures" / "params_vs_shots.png").exists() == drawn


def test_fit_takes_the_threshold_that_report_takes(tmp_path):
    """`report --threshold 0.5` into a folder made by `fit` was refused ("made with other options:
    payoff_threshold 0.1"), and no `fit` option could make it."""
    s = _store(tmp_path / "st", runs=30)
    out = tmp_path / "o"
    r = run_cli("fit", s.uri, "--out", str(out), "--threshold", "0.5")   # with figures: a report needs them
    assert r.returncode == 0, r.stderr
    again = run_cli("report", s.uri, "--out", str(out), "--threshold", "0.5", "--serial", "--trials", "2",
                    "--samples", "10")
    assert again.returncode == 0, again.stderr
    assert "reused fits" in again.stdout, again.stdout


def test_an_interrupted_write_is_redone_by_the_same_command_not_a_blocked_folder(tmp_path):
    """A report killed while drawing left sensitivity.parquet unrecorded; the same command then
    refused the folder ("results of unknown options are already there") until files were
    deleted by hand. Now the part is recorded as incomplete, with its options, before it is written."""
    import os
    import signal
    import sys

    s = _store(tmp_path / "st", runs=30)
    out = tmp_path / "o"
    args = [sys.executable, "-m", "meta_study.cli", "fit", s.uri, "--out", str(out), "--no-figures"]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "META_STUDY_FAILPOINT": "results_part_written"})
    try:
        # progress lines ("fits: 2/2 (2 s)") come first when the fits take seconds (a loaded machine)
        lines = []
        while not lines or ("failpoint" not in lines[-1] and lines[-1]):
            lines.append(p.stderr.readline())
        assert "failpoint results_part_written" in lines[-1], lines
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (out / "fits.parquet").exists()
    other = run_cli("fit", s.uri, "--out", str(out), "--no-figures", "--tolerance", "4")   # other options: refused
    assert one_error_line(other, "fits.parquet: made with")
    # named as the user types it: the flag, in its units ("tolerance 0.03" read as an internal field)
    assert "other options: --tolerance 3 (this command: 4)" in other.stderr, other.stderr
    again = run_cli("fit", s.uri, "--out", str(out), "--no-figures")
    assert again.returncode == 0, again.stderr
    assert '"incomplete"' not in (out / "results.json").read_text()
    reuse = run_cli("fit", s.uri, "--out", str(out), "--no-figures")
    assert "reused fits" in reuse.stdout


def test_a_fit_of_the_all_frontier_alone_is_refused_in_one_line(tmp_path):
    """`fit --frontiers all` printed "15/15 candidate fits usable" and then "not trusted (no usable
    fit)" for every group: the headline never uses 'all'."""
    s = _store(tmp_path / "st", runs=12)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "fit"), "--frontiers", "all", "--no-figures")
    one_error_line(r, "--frontiers all: the headline is built from frontier estimators", "--frontiers vertices,all")
    assert r.returncode == 2
    assert run_cli("fit", s.uri, "--out", str(tmp_path / "fit2"), "--frontiers", "vertices,all",
                   "--no-figures").returncode == 0


def test_a_refused_option_leaves_no_empty_out_directory(tmp_path):
    s = _store(tmp_path / "st", runs=12)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "new"), "--threshold", "-1")
    one_error_line(r, "--threshold must be DS points per US point")
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()                      # one the user made stays
    run_cli("fit", s.uri, "--out", str(tmp_path / "mine"), "--threshold", "-1")
    assert (tmp_path / "mine").is_dir()


def test_a_task_name_with_a_tab_is_shown_as_written(tmp_path):
    """`fit` and `store info` printed a tab inside a task name raw (columns shifted; an escape code
    would have been obeyed)."""
    from meta_study.store import Store
    from meta_study.validation import validate

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(12, ds_tasks=("oxford\tpets",))).table)
    info = run_cli("store", "info", s.uri)
    assert info.returncode == 0 and "oxford\\tpets" in info.stdout and "\t" not in info.stdout
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures")
    assert r.returncode == 0 and "up -> oxford\\tpets (fewshot, 5-shot):" in r.stdout and "\t" not in r.stdout


def test_an_address_where_another_server_answers_is_one_line_not_minutes(tmp_path):
    """A stale RAY_ADDRESS whose port MLflow (or any HTTP server) took after a restart: the TCP
    check passed and Ray's connect retried for ~13 minutes."""
    import http.server
    import threading

    from meta_study.errors import UserError
    from meta_study.ray_session import check_address

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        with pytest.raises(UserError, match=r"a server answers there, but not a Ray cluster \(GCS\)"):
            check_address(f"127.0.0.1:{port}", timeout_s=5)
    finally:
        srv.shutdown()


def test_mlflow_only_ingest_options_with_files_only_are_refused(tmp_path):
    # silently ignored: `--full` or `--experiment` with a CSV changed nothing and said nothing
    from conftest import make_rows, one_error_line

    f = tmp_path / "x.csv"
    make_rows(3, ds_tasks=("a",)).drop(columns=["extra"]).to_csv(f, index=False)
    one_error_line(run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--full", "--experiment", "e"),
                   "ingest: --experiment, --full: for MLflow sources, and none is given")
    assert not (tmp_path / "st").exists()
    assert run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet").returncode == 0


def test_exact_repeats_and_two_us_accuracies_of_one_run_are_said(tmp_path):
    # 42 rows gave "39 new + 2 quarantined" with no word of the repeat; a run with US 0.5 on one
    # row and 0.9 on another was stored in silence
    from conftest import make_rows

    rows = make_rows(3, ds_tasks=("a", "b")).drop(columns=["extra"])
    run = rows["run_id"].unique()[1]
    idx = rows.index[rows["run_id"] == run]
    rows.loc[idx, "us_accuracy"] = 0.9
    rows.loc[idx[0], "us_accuracy"] = 0.5
    other = rows.index[rows["run_id"] == rows["run_id"].unique()[2]][0]
    rows = pd.concat([rows, rows.loc[[other]]], ignore_index=True)          # one exact repeat
    f = tmp_path / "x.csv"
    rows.to_csv(f, index=False)
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "1 row(s) repeated another row exactly (key and values) and were stored once" in r.stderr, r.stderr
    assert f"1 run(s) have two or more US accuracies for one US task (e.g. {run} on up: 0.5 and 0.9)" in r.stderr


def test_a_layer_no_row_has_names_the_layers_the_store_has(tmp_path):
    """``fit --layer 3`` said "no pre-logits rows of that layer match": layer rows are no
    pre-logits rows, and the layers the store does hold went unsaid."""
    s = Store(str(tmp_path / "st"))
    rows = make_rows(10, ds_tasks=("a",))
    s.commit(validate(pd.concat([rows, rows.assign(representation_layer=0), rows.assign(representation_layer=2)],
                                ignore_index=True)).table)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--layer", "3", "--no-figures")
    assert r.returncode == 2 and "--layer 3: the store has probes of layers 0, 2" in r.stderr, r.stderr
    assert "pre-logits rows of that layer" not in r.stderr
    t = Store(str(tmp_path / "flat"))
    t.commit(validate(rows).table)
    r = run_cli("fit", t.uri, "--out", str(tmp_path / "o2"), "--layer", "3", "--no-figures")
    assert r.returncode == 2 and "no layer-wise probe rows (pre-logits only)" in r.stderr, r.stderr
