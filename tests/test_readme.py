"""The README's two commands stay true: CI runs (b) verbatim."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, run_cli


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_has_two_commands_at_the_top():
    text = (REPO / "README.md").read_text()
    a, b = _commands()
    assert text.index(a) < text.index("## ")  # both commands come before the first section
    assert "pip install -e '.[train]'" in a and "meta-study demo" in a   # the demo trains: the [train] extra
    assert "pip install -e '.[test]'" in b and b.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    _, b = _commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert b.strip() in ci.splitlines()


def _tour() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[2]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow(60)
def test_the_tour_runs_copy_paste_from_the_repository_root(tmp_path):
    # every tour command that needs no server (the MLflow lines need one, or its database; the
    # sweep is tested in test_sweeps, local-up.sh and `ray job submit` in test_cluster): STORE and
    # DIR filled in, optional [...] parts left out, run from the repo root
    skip = ("http://", "mlflow-sql:", "sweeps/", "cluster/local-up.sh")
    ran = []
    for cmd in _tour():
        if any(s in cmd for s in skip):
            continue
        cmd = re.sub(r"\s*\[[^\]]*\]", "", cmd).replace("STORE", str(tmp_path / "store")).replace("DIR", str(tmp_path / "out"))
        argv = shlex.split(cmd)
        if argv[0] == "meta-study":
            argv = [sys.executable, "-m", "meta_study.cli", *argv[1:]]
            fast = {"sensitivity": ["--trials", "2"], "bootstrap": ["--samples", "50"],
                    "report": ["--trials", "2", "--samples", "50"]}   # the command as written, smaller
            if argv[3] in fast:
                argv += ["--serial", *fast[argv[3]]]
        elif argv[0] == "python":
            argv[0] = sys.executable
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
        assert r.returncode == 0, (cmd, r.stdout[-1500:], r.stderr[-1500:])
        ran.append(argv[3] if argv[0] == sys.executable and len(argv) > 3 and argv[2] == "meta_study.cli" else cmd)
    assert {"ingest", "store", "fit", "report", "correlations"} <= set(ran), ran
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "out" / "fits.parquet").exists()


def test_the_join_mapping_in_docs_ingest_runs_as_written(tmp_path):
    """docs/ingest.md's `join:` example lacked eval_protocol and param_count's unit: run as written
    on the shipped timm results it failed ('no column for eval_protocol'), then stored parameter
    counts in millions. It is a whole mapping now, and it ingests every row."""
    text = (REPO / "docs" / "ingest.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("join:"))
    (tmp_path / "join.yaml").write_text(block)
    r = run_cli("ingest", str(REPO / "examples" / "data" / "timm"), "--mapping", str(tmp_path / "join.yaml"),
                "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and " 0 quarantined" in r.stdout, r.stdout + r.stderr
    import pandas as pd

    df = pd.read_parquet(tmp_path / "st")
    assert set(df["ds_task"]) == {"imagenet-real", "sketch"} and df["param_count"].min() > 1e5
