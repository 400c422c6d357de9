"""Session 41: a working directory too large for a Ray job's upload is refused in one line before
anything is zipped (it was Ray's "status code 413" traceback after the whole zip was built)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import test_cluster_review_s36 as s36  # noqa: E402

from meta_study.tune import submit  # noqa: E402

cluster = s36.cluster   # the fixture: a local-up.sh head and MLflow server, stopped by local-down.sh
MiB = 2**20


def _tree(root: Path, data_bytes: int) -> Path:
    """A working dir with a job script and a data file of `data_bytes` (sparse: no disk used)."""
    (root / "data").mkdir(parents=True)
    with open(root / "data" / "big.bin", "wb") as f:
        f.truncate(data_bytes)
    (root / "job.py").write_text("print('ran with its data')\n")
    return root


def test_the_limit_is_the_dashboards_request_limit():
    assert submit.UPLOAD_MAX_BYTES == 100 * MiB


def test_an_upload_over_the_limit_is_refused_in_one_line_naming_what_weighs(tmp_path, capsys, monkeypatch):
    wd = _tree(tmp_path / "wd", 101 * MiB)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    rc = submit.main(["--working-dir", str(wd), "--no-wait", "--", "python", "job.py"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"submit: --working-dir {wd}: the upload would be 101 MiB, over the 100 MiB a Ray job's "
                          "working directory can take"), err
    assert "largest: data/ (101 MiB), job.py (0 MiB)" in err and ".rayignore" in err, err


def test_what_is_left_out_does_not_count(tmp_path, capsys, monkeypatch):
    """The size is of what Ray would upload: a .rayignore'd data dir is no obstacle."""
    wd = _tree(tmp_path / "wd", 101 * MiB)
    (wd / ".rayignore").write_text("data/\n")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    closed = s36._closed_port()
    rc = submit.main(["--address", f"http://127.0.0.1:{closed}", "--working-dir", str(wd), "--no-wait", "--",
                      "python", "job.py"])
    err = capsys.readouterr().err
    assert rc == 2 and "upload would be" not in err and str(closed) in err, err   # on to the address check


def test_the_size_counts_files_and_their_zip_entries(tmp_path):
    wd = _tree(tmp_path / "wd", 5 * MiB)
    size = submit.upload_size(str(wd), ["data/big.bin", "job.py", "gone.txt"])
    body = 5 * MiB + len("print('ran with its data')\n")
    assert body < size <= body + 2 * (submit.ZIP_FILE_OVERHEAD + 2 * len("data/big.bin"))


@pytest.mark.slow(90)
def test_an_upload_just_under_the_limit_reaches_the_cluster(cluster, tmp_path):
    """Against a real token-protected head: 99 MiB is uploaded and the job runs (the check refuses
    nothing Ray takes). Measured before the check: 101 MiB was Ray's RuntimeError traceback,
    "Request failed with status code 413: Maximum request body size 104857600 exceeded"."""
    wd = _tree(tmp_path / "wd", 99 * MiB)
    env = {k: cluster[k] for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS")}
    r = s36._submit("--", "python", "job.py", cwd=wd, env=env, timeout=300)
    assert r.returncode == 0 and "ran with its data" in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])


def test_a_credentials_file_path_on_the_command_line_is_no_secret():
    """As in a runtime_env's env_vars (preflight.PATH_VALUED): the command line refused
    GOOGLE_APPLICATION_CREDENTIALS=/path, a path, not a secret; a secret's value is still refused."""
    submit.refuse_secret_args(["env", "GOOGLE_APPLICATION_CREDENTIALS=/keys/sa.json", "python", "job.py"])
    submit.refuse_secret_args(["env", "AWS_SHARED_CREDENTIALS_FILE=/keys/aws", "python", "job.py"])
    with pytest.raises(submit.UserError, match="holds a secret"):
        submit.refuse_secret_args(["env", "AWS_SECRET_ACCESS_KEY=abc", "python", "job.py"])
