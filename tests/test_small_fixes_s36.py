"""Review s36 (small fixes): the refit submitter's options and create errors, a US need at the limit
of 100% in the warnings, "1 models", file names cut by bytes, and an --out that is a file."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, one_error_line, run_cli

CLUSTER = REPO / "cluster"


# --- cluster/kuberay/submit_refit.py ----------------------------------------------------------------

@pytest.fixture
def submit_refit(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = importlib.util.spec_from_file_location("submit_refit_s36", CLUSTER / "kuberay" / "submit_refit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exit(module, argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr plus a SystemExit message) of ``module.main(argv)``."""
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    code = e.value.code
    err = capsys.readouterr().err + (code if isinstance(code, str) else "")
    return (code if isinstance(code, int) else 1), err


@pytest.mark.parametrize("option, value, says", [
    ("--keep", "-1", "--keep must be an integer >= 0, got -1"),
    ("--poll", "0", "--poll must be a finite number of seconds > 0, got 0"),
    ("--poll", "nan", "--poll must be a finite number of seconds > 0, got nan"),
    ("--poll", "inf", "--poll must be a finite number of seconds > 0, got inf"),
    ("--max-api-errors", "-1", "--max-api-errors must be an integer >= 0, got -1")])
def test_submit_refit_refuses_an_option_out_of_range_in_one_line(submit_refit, tmp_path, capsys, option, value, says):
    """``--keep -1`` deleted the oldest finished refit only (``done[-1:]``), ``--poll 0`` polled the
    API server in a busy loop, ``--poll nan`` ended in time.sleep's ValueError after creating the
    RayJob, and ``--max-api-errors -1`` gave up on the first poll ("0 API errors in a row")."""
    argv = ["--template", str(CLUSTER / "kuberay" / "rayjob-refit.yaml"), "--api", "http://127.0.0.1:9",
            option, value]
    code, err = _exit(submit_refit, argv, capsys)
    assert code == 2 and f"submit_refit: {says}" in err and err.strip().count("\n") == 0, (code, err)


class _RefusesCreate(BaseHTTPRequestHandler):
    """A Kubernetes API that lists no RayJob and answers every create with ``status``."""

    status = 403

    def log_message(self, *args):
        pass

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply(200, {"kind": "RayJobList", "items": []})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply(self.status, {"kind": "Status", "code": self.status, "message": "rayjobs.ray.io is forbidden"})


@pytest.mark.slow
@pytest.mark.parametrize("status", [403, 422])
def test_submit_refit_says_in_one_line_that_the_api_refused_the_rayjob(submit_refit, tmp_path, capsys, status):
    """A create the API server refused (a Role without ``create``, an invalid spec) was an
    ``urllib.error.HTTPError`` traceback."""
    handler = type("Handler", (_RefusesCreate,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}"
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    try:
        code, err = _exit(submit_refit, ["--template", str(CLUSTER / "kuberay" / "rayjob-refit.yaml"), "--api", api,
                                         "--token-file", str(token), "--poll", "0.01"], capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1 and "Traceback" not in err and err.strip().count("\n") == 0, (code, err)
    assert f"submit_refit: cannot create the RayJob at {api}: HTTP {status}" in err, err


class _PrunesFail(_RefusesCreate):
    """Lists two finished refits, answers their deletion with ``status``, creates a RayJob that is
    Complete at once."""

    def do_GET(self):
        if self.path.endswith("/rayjobs/meta-study-refit-new"):
            return self._reply(200, {"metadata": {"name": "meta-study-refit-new"},
                                     "status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}})
        self._reply(200, {"kind": "RayJobList", "items": [
            {"metadata": {"name": f"meta-study-refit-old{i}", "creationTimestamp": f"2026-01-0{i}T00:00:00Z"},
             "status": {"jobDeploymentStatus": "Complete"}} for i in (1, 2)]})

    def do_DELETE(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply(self.status, {"kind": "Status", "code": self.status})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply(201, {"metadata": {"name": "meta-study-refit-new"}})


@pytest.mark.slow
@pytest.mark.parametrize("status", [404, 403])
def test_submit_refit_prunes_past_a_rayjob_deleted_meanwhile_and_says_a_refused_delete(submit_refit, tmp_path,
                                                                                         capsys, status):
    """Deleting a finished refit that was deleted meanwhile (404), or a Role without ``delete``
    (403), was an HTTPError traceback, and no refit was submitted."""
    handler = type("Handler", (_PrunesFail,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}"
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    argv = ["--template", str(CLUSTER / "kuberay" / "rayjob-refit.yaml"), "--api", api, "--token-file", str(token),
            "--poll", "0.01", "--keep", "0"]
    try:
        if status == 404:
            assert submit_refit.main(argv) == 0
            assert "created RayJob meta-study-refit-new" in capsys.readouterr().out
        else:
            code, err = _exit(submit_refit, argv, capsys)
            assert code == 1 and err.strip().count("\n") == 0, (code, err)
            assert f"submit_refit: cannot delete finished RayJobs at {api}: HTTP 403" in err, err
    finally:
        server.shutdown()
        server.server_close()


# --- selection.py: a US need at the limit of 100% ---------------------------------------------------

def test_the_extrapolation_warning_never_says_a_need_of_100_percent_us():
    """"extrapolation: 97% DS needs 100.0% US" for a need of 99.96% US, and for a target the
    law reaches only in the limit of 100% US; the answer says "reached ... only at 100% US"."""
    from meta_study.analysis.selection import SelectionOptions, _need_warning, select_groups

    rng = np.random.default_rng(0)
    us = np.linspace(0.3, 0.9, 40)
    ds = 0.5 + 0.4 * us ** 3 + rng.normal(0, 0.003, us.size)
    (sel,) = select_groups([(us, ds)], [("up", "a", "fewshot", 5)], [0.8], SelectionOptions(ds_target=0.97))
    assert 0.9995 <= sel.claims.us_needed < 0.99995, sel.claims.us_needed
    (w,) = [w for w in sel.warnings if "97% DS" in w]
    assert w == "extrapolation: 97% DS needs 99.97% US, past the tested horizon (88.8% US)", w
    for un in (1 - 1e-7, 1.0):
        w = _need_warning(0.9, un, 0.888)
        assert w == "extrapolation: 90% DS is reached by the prediction only at 100% US, past the tested horizon (88.8% US)", w
    assert _need_warning(0.9, 0.95, 0.888) == "extrapolation: 90% DS needs 95.0% US, past the tested horizon (88.8% US)"


# --- explorer.py: "1 models" -------------------------------------------------------------------------

@pytest.mark.slow
def test_the_explorer_counts_one_model_in_the_singular(tmp_path):
    """A group of one model read "1 models", and a search matching it "1 of 1 models match"."""
    from meta_study.explorer import CSS, explorer_html
    from playwright.sync_api import sync_playwright
    from test_report_html import CHROMIUM, FLAGS

    heads = pd.DataFrame([{"us_task": "up", "ds_task": f"t{i}", "eval_protocol": "fewshot", "shots": 5,
                           "holdout_threshold": np.nan, "best_us": np.nan, "horizon_us": np.nan} for i in (1, 3)])
    points = pd.DataFrame({"us_task": "up", "ds_task": ["t1", "t3", "t3", "t3"], "eval_protocol": "fewshot", "shots": 5,
                           "run_id": ["eva02-a", "eva02-b", "vit-c", "vit-d"], "model_name": None,
                           "us_accuracy": [0.5, 0.6, 0.7, 0.8], "ds_accuracy": [0.3, 0.4, 0.5, 0.6]})
    page = tmp_path / "p.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><style>{CSS}</style><body>{explorer_html(heads, points)}</body>")
    probe = """(v) => { const sel = document.getElementById('ex-group'), find = document.getElementById('ex-find');
      sel.value = v[0]; sel.dispatchEvent(new Event('change'));
      find.value = v[1]; find.dispatchEvent(new Event('input'));
      return document.getElementById('ex-info').textContent; }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page()
        pg.goto(page.resolve().as_uri(), wait_until="load")
        lines = [pg.evaluate(probe, [group, q]) for group, q in (("0", ""), ("0", "eva02"), ("0", "vit"),
                                                                ("1", ""), ("1", "eva02"), ("1", "vit"))]
        browser.close()
    assert lines == ["1 model", "1 of 1 model match", "0 of 1 model match",
                     "3 models", "1 of 3 models match", "2 of 3 models match"], lines


# --- file names cut by bytes -------------------------------------------------------------------------

BOLD_A = "\U0001d400"   # MATHEMATICAL BOLD CAPITAL A: a letter of 4 bytes in UTF-8


@pytest.mark.parametrize("task", [BOLD_A * 300, "é" * 300, "漢" * 300, "a" * 300])
def test_a_figure_name_of_four_byte_letters_fits_a_file_name(tmp_path, task):
    """80 four-byte letters made a 320-byte name (+ "-123456.png": past the 255-byte limit of a file
    name on ext4, where writing the figure failed with "File name too long")."""
    from meta_study.analysis.groups import group_slug
    from meta_study.analysis.outputs import _figure_name

    for name in (group_slug(("up", task, "fewshot", 5)), "f20_" + _figure_name(("up", task, 5))):
        assert len(name.encode()) <= 200, (len(name.encode()), name)
        (tmp_path / f"{name}.json").write_text("{}")      # the file system takes it
    # two keys that differ past the cut keep different names
    assert group_slug(("up", task + "x", "fewshot", 5)) != group_slug(("up", task + "y", "fewshot", 5))
    assert _figure_name(("up", task + "x", 5)) != _figure_name(("up", task + "y", 5))


def test_short_and_ascii_names_keep_their_names():
    """Existing outputs keep their file names: the byte budget cuts only what 80 characters let pass."""
    from meta_study.analysis.groups import group_slug, stable_hash
    from meta_study.analysis.outputs import _figure_name

    key = ("imagenet-1k", "oxford pets", "fewshot", 5)
    assert group_slug(key) == f"imagenet-1k_oxford-pets_fewshot_5-{stable_hash(key) % 10**6:06d}"
    long = ("u" * 50, "d" * 60, "fewshot", 10)
    assert group_slug(long) == f"{'u' * 50}_{'d' * 29}-{stable_hash(long) % 10**6:06d}"
    assert _figure_name(("imagenet-1k", "zeroshot", 5)) == "imagenet-1k_zeroshot_5"
    assert _figure_name(("tâche", "zeroshot", 5)) == "tâche_zeroshot_5"
    assert _figure_name(("é" * 30, "zeroshot")) == "é" * 30 + "_zeroshot"


# --- cli.prepare_out: an --out that is a file --------------------------------------------------------

@pytest.mark.slow
def test_an_analysis_script_says_an_out_that_is_a_file_is_not_a_directory(tmp_path):
    """The analysis scripts said "--out F: cannot write there (File exists)" where the commands say
    "exists and is not a directory"; the file is left as it was."""
    from conftest import committed_store

    store = committed_store(tmp_path / "store", runs=12, tasks=("a",)).uri
    f = tmp_path / "out.txt"
    f.write_text("keep me")
    r = subprocess.run([sys.executable, str(REPO / "analysis" / "tables_f1_f2.py"), str(store), "--out", str(f)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    one_error_line(r, f"--out {f}: exists and is not a directory")
    assert f.read_text() == "keep me"
    one_error_line(run_cli("report", str(store), "--out", str(f)), f"--out {f}: exists and is not a directory")


def test_prepare_out_refuses_a_file_as_the_commands_do(tmp_path):
    from meta_study.cli import prepare_out
    from meta_study.errors import UserError

    f = tmp_path / "out.txt"
    f.write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a directory"):
        prepare_out(str(f), str(tmp_path / "store"))
    assert f.read_text() == "keep me" and not Path(tmp_path / "store").exists()
