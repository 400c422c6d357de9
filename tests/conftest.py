"""Shared fixtures: canonical rows, the real timm results, subprocess helpers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
# MLflow 3's telemetry thread races os.environ (see meta_study/mlflow_client.py): off in tests,
# including the servers and CLIs the tests start.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
#: The public timm results (see ../shared/data/timm/SOURCES.md); CI has them at the same place.
TIMM_DIR = Path(os.environ.get("META_STUDY_TIMM_DATA", REPO.parent / "shared" / "data" / "timm"))
MAPPINGS = REPO / "examples" / "mappings"


#: The slow tier (`pytest -m slow`): modules whose tests start real servers (MLflow, S3,
#: PostgreSQL), Ray clusters or sweeps, kill processes on purpose, or drive a browser. The fast
#: tier (`pytest -m "not slow"`, about 2 minutes on 2 cores; the README gives the time) is the library's behaviour without them;
#: CI runs both. A test elsewhere that takes more than ~10 s carries its own ``slow`` mark.
SLOW_MODULES = {"test_store_s3", "test_store_crash", "test_store_concurrency", "test_store_cli_exit",
                "test_ingest_mlflow", "test_ingest_mlflow_sql", "test_ingest_mlflow_sql_postgres", "test_tracking",
                "test_sweeps", "test_multinode", "test_finalize", "test_demo", "test_refit", "test_train_ddp",
                "test_many_trials", "test_core_install", "test_report_html", "test_ray_session", "test_cluster",
                "test_analysis_scripts", "test_writer_faults"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tier is marked (``SLOW_MODULES``, and every test that uses the MLflow server),
    then the longest tests go first: ``@pytest.mark.slow(seconds)`` gives a test's rough duration
    on the 2-core CI machine. xdist hands this order out 2 tests at a time (``--maxschedchunk 2``
    in pyproject.toml) as its two workers free up, so the long tests run side by side instead of
    one of them alone at the end (the sort is stable, so every worker collects the same order, as
    xdist requires)."""
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        if item.get_closest_marker("slow") is None and (
                name in SLOW_MODULES or "mlflow_server" in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow(10))

    def seconds(item: pytest.Item) -> float:
        m = item.get_closest_marker("slow")
        return 0.0 if m is None else float(m.args[0] if m.args else 30)
    items.sort(key=seconds, reverse=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """After a module's last test (its module fixtures torn down), a Ray still connected in this
    process is shut down and named. Left connected, it outlives the environment that held its
    token, and a later test of this xdist worker that touches Tune's registry (which writes to a
    connected Ray's GCS) failed with an authentication error that had nothing to do with it."""
    yield
    if nextitem is not None and getattr(nextitem, "module", None) is getattr(item, "module", None):
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        msg = f"{item.nodeid}: left Ray connected in the test process; shut down after its module"
        if os.environ.get("META_STUDY_RAY_LEAKS"):
            with open(os.environ["META_STUDY_RAY_LEAKS"], "a") as f:
                f.write(msg + "\n")
        item.warn(pytest.PytestWarning(msg))


@pytest.fixture(scope="session")
def timm_dir() -> Path:
    if not (TIMM_DIR / "results-imagenet.csv").exists():
        pytest.fail(f"timm results not found at {TIMM_DIR} (set META_STUDY_TIMM_DATA)")
    return TIMM_DIR


def make_rows(n: int, *, source: str = "src", us_task: str = "up", ds_tasks=("a", "b"), seed: int = 0,
              run_prefix: str = "r", shots=(5,)) -> pd.DataFrame:
    """``n`` runs, each evaluated on every ds task x shots: canonical raw rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        us = float(rng.uniform(0.2, 0.9))
        for ds in ds_tasks:
            for k in shots:
                rows.append({
                    "source": source, "run_id": f"{run_prefix}{i}", "experiment": "exp", "researcher": "ada",
                    "model_name": "vit_tiny_patch16_224", "arch_family": "vit", "param_count": 5_000_000,
                    "us_task": us_task, "us_accuracy": us, "ds_task": ds, "eval_protocol": "fewshot",
                    "shots": k, "ds_accuracy": float(np.clip(us * rng.uniform(0.5, 1.0), 0, 1)), "seed": i,
                    "lr": 8e-4, "wd": 0.1, "head_lr": 8e-4, "head_wd": 0.1, "epochs": 7.0, "data_fraction": 1.0,
                    "batch_size": 256, "optimizer": "adam", "checkpoint_uri": f"file:///ckpt/{i}",
                    "started_at": pd.Timestamp("2026-01-01", tz="UTC"), "ended_at": pd.Timestamp("2026-01-02", tz="UTC"),
                    "extra": {"note": f"run {i}"},
                })
    return pd.DataFrame(rows)


#: Commands that start a Ray of their own (unless --serial) or run a whole chain: always in a
#: subprocess, so that no Ray or server outlives its test inside the test process.
SUBPROCESS_ONLY = {"demo", "refit"}
STARTS_RAY = {"sensitivity", "bootstrap", "report"}


class CliResult:
    """What :func:`run_cli` returns, either way: ``returncode``, ``stdout``, ``stderr``."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def sweep_module(name: str):
    """sweeps/NAME.py as a module, loaded by path: ``sweeps/`` is scripts, not a package on the
    path (plain ``pytest`` does not put the checkout on sys.path, ``python -m pytest`` does)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"sweeps_{name}", REPO / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: A plain progress line (``cli.progress_bar`` without a terminal: ``  fits: 1/1 (3 s)``), printed
#: for an operation that took over 2 s: on a loaded machine, before a command's one error line.
PROGRESS_LINE = re.compile(r"^  [^:]+: \d+(/\d+)? \(\d+ s\)$")


def error_lines(stderr: str) -> list[str]:
    """The non-blank lines of ``stderr`` that are not progress lines."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]


def one_error_line(r: "CliResult | subprocess.CompletedProcess", *needles: str) -> str:
    """The line a user error prints, asserted: exit code 2, one non-blank line on stderr (besides
    progress lines), no traceback, every needle in it."""
    lines = error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stdout, r.stderr)
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            subprocess_: bool | None = None) -> CliResult:
    """Run ``meta-study ARGS`` and return its exit code and output.

    In this process through click's runner (~0.05 s instead of ~1.3 s of interpreter and import
    start-up) when nothing needs a process of its own; in a subprocess (the installed console
    script's module) when ``env`` is given (failpoints, credentials, variables read at start-up),
    for commands that start Ray or run a whole chain, or with ``subprocess_=True`` (exit codes of
    a dying process, native threads at exit)."""
    if subprocess_ is None:
        cmd = args[0] if args else ""
        subprocess_ = (env is not None or cmd in SUBPROCESS_ONLY or (cmd in STARTS_RAY and "--serial" not in args)
                       or os.environ.get("META_STUDY_TEST_SUBPROCESS") == "1")
    if subprocess_:
        e = dict(os.environ)
        e.update(env or {})
        r = subprocess.run([sys.executable, "-m", "meta_study.cli", *args], cwd=cwd, env=e, capture_output=True,
                           text=True, timeout=timeout)
        return CliResult(r.returncode, r.stdout, r.stderr)
    return _run_in_process(list(args), cwd)


def _run_in_process(args: list[str], cwd: Path | None) -> CliResult:
    import traceback

    from click.testing import CliRunner

    from meta_study.cli import cli

    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        r = CliRunner().invoke(cli, args, prog_name="meta-study")
    finally:
        os.chdir(old)
    stderr = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        # what the interpreter would have printed: a test that forbids tracebacks sees it
        stderr += "".join(traceback.format_exception(r.exception))
    return CliResult(r.exit_code, r.stdout, stderr)


def committed_store(path: Path, runs: int = 60, tasks: tuple[str, ...] = ("a", "b", "c"), seed: int = 0):
    """A local store at ``path`` holding :func:`make_rows` (``runs`` runs on DS ``tasks``), validated
    and committed once."""
    from meta_study.store import Store
    from meta_study.validation import validate

    s = Store(str(path))
    s.commit(validate(make_rows(runs, ds_tasks=tasks, seed=seed)).table)
    return s


def quick_refit_config(store, out: Path, **kw):
    """A :class:`RefitConfig` of ``store`` into ``out`` sized for tests: 2 sensitivity trials, 20
    bootstrap samples, no Ray, at most 2 group figures; ``kw`` sets the rest."""
    from meta_study.analysis.bootstrap import BootstrapOptions
    from meta_study.analysis.sensitivity import SensitivityOptions
    from meta_study.refit import RefitConfig

    return RefitConfig(store=store.uri, out=str(out), sensitivity=SensitivityOptions(trials=2),
                       bootstrap=BootstrapOptions(samples=20), use_ray=False, max_group_figures=2, **kw)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real ``mlflow server`` (sqlite backend) for the whole session; tests use their own
    experiments so they do not see each other's runs."""
    from mlflow_server import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 API on 127.0.0.1 (``tests/s3_server.py``) with a bucket ``lab``, one per test
    module; skipped without boto3 (the ``[s3]`` extra)."""
    pytest.importorskip("boto3")
    from s3_server import S3Server

    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        server.make_bucket("lab")
        yield server


@pytest.fixture
def s3env(s3, monkeypatch):
    """The S3 server's endpoint and keys in this test's environment (what a store URI reads)."""
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    return s3.env


@pytest.fixture(scope="module")
def local_ray():
    """A private Ray (2 CPUs) in this test process for one module, shut down after it. It leaves
    no token in this process's environment (test_ray_session checks), so clusters the xdist
    worker starts later are not handed it."""
    from meta_study.ray_session import start_or_connect

    ray = start_or_connect("local", num_cpus=2)
    yield ray
    ray.shutdown()


def interrupt_sweep(script: Path, args: list[str], ready: str, timeout: float) -> tuple[int, str, dict]:
    """Run a sweep script (its own Ray, no outside tracking server), Ctrl-C it once a path matching
    the glob ``ready`` (relative to the script's directory) exists, and return its exit code, its
    output and the summary JSON it printed."""
    import json
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    p = subprocess.Popen([sys.executable, str(script), *args], cwd=script.parent, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and p.poll() is None:
            if list(script.parent.glob(ready)):
                break
            time.sleep(0.2)
        assert p.poll() is None, "the sweep ended before it could be interrupted: " + p.stdout.read()[-3000:]
        os.killpg(p.pid, signal.SIGINT)
        out = p.communicate(timeout=timeout)[0]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, out[-4000:]
    start = out.index('{\n "sweep"')
    return p.returncode, out, json.loads(out[start:out.index("}", start) + 1])
