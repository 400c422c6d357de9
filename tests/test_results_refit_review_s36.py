"""Review (session 36) of results directories, the refit job and the analysis on Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A driver that joins a Ray whose workers import meta_study from WORKER_PATH (a cluster whose nodes
# have another meta-study installed), then runs the parallel bootstrap of one group.
_DRIVER = r"""
import sys, numpy as np, ray
from meta_study.errors import UserError
from meta_study.analysis.groups import Group
from meta_study.analysis.parallel import bootstrap_ray
from meta_study.analysis.bootstrap import BootstrapOptions
ray.init(address="local", num_cpus=1, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": sys.argv[1]}})
rng = np.random.default_rng(0)
us = np.sort(rng.uniform(0.3, 0.9, 30))
ds = np.clip(0.9 - 0.7 * (1 - us) ** 1.5 + rng.normal(0, 0.01, 30), 0, 1)
try:
    bootstrap_ray([Group("up", "d", "fewshot", 5, us, ds)], BootstrapOptions(samples=20), workers=1)
except UserError as e:
    print(f"USERERROR {e}", flush=True)   # one string: a Ray log line cannot land inside it
else:
    print("NO ERROR", flush=True)
"""


def _run_driver(tmp_path: Path, worker_path: Path) -> subprocess.CompletedProcess:
    run = tmp_path / "run"          # not the repository: its cwd would come first on the workers' path
    run.mkdir()
    (run / "driver.py").write_text(_DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    return subprocess.run([sys.executable, "driver.py", str(worker_path)], cwd=run, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.slow(30)
def test_workers_running_other_meta_study_code_are_refused_in_one_line(tmp_path):
    """A cluster whose workers had another meta-study installed computed the bootstrap with their
    code and the results were recorded as this code's (measured: the intervals differed from the
    serial ones, no word said)."""
    other = tmp_path / "other"
    shutil.copytree(ROOT / "meta_study", other / "meta_study", ignore=shutil.ignore_patterns("__pycache__"))
    p = other / "meta_study" / "analysis" / "bootstrap.py"
    text = p.read_text()
    anchor = "    p = prepare(us_accuracy, ds_accuracy, options.fit)"
    assert anchor in text
    p.write_text(text.replace(anchor, "    ds_accuracy = ds_accuracy * 0.9   # an older release\n" + anchor, 1))
    r = _run_driver(tmp_path, other)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("USERERROR", "NO ERROR"))]
    assert lines and lines[0].startswith("USERERROR"), r.stdout + r.stderr[-3000:]
    assert "other meta-study code" in lines[0] and "--serial" in lines[0], lines[0]


@pytest.mark.slow(30)
def test_workers_without_meta_study_are_refused_in_one_line(tmp_path):
    """Workers that cannot import meta_study (a cluster without it) gave Ray's traceback."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta_study.py").write_text("# not the package\n")
    r = _run_driver(tmp_path, other)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("USERERROR", "NO ERROR"))]
    assert lines and lines[0].startswith("USERERROR"), r.stdout + r.stderr[-3000:]
    assert "cannot import meta_study" in lines[0] and "--serial" in lines[0], lines[0]


def test_a_results_table_cut_short_is_made_again_not_a_traceback(tmp_path):
    """`fit --out D` again after D/fits.parquet was cut short (a disk that filled, a copy
    interrupted): the part was reused and pyarrow's traceback ("Parquet magic bytes not found")
    ended the command. The manifest records these very options: the part is made again."""
    import pandas as pd

    from conftest import committed_store, run_cli

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    out = tmp_path / "o"
    args = ("fit", s.uri, "--out", str(out), "--no-figures")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    before = pd.read_parquet(out / "fits.parquet")
    for name in ("fits.parquet", "points.parquet"):
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[: len(data) // 2])
        r = run_cli(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
        pd.testing.assert_frame_equal(pd.read_parquet(out / "fits.parquet"), before)
        pd.read_parquet(out / "points.parquet")


# A cluster that says it runs another Python (as one of another release would: Ray refuses a
# driver whose Ray or Python differs from the cluster's), kept up until stdin closes.
_OTHER_CLUSTER = r"""
import json, os, sys
from meta_study.analysis.parallel import init_ray
import ray._common.usage.usage_constants as usage_constant
from ray._private import ray_constants
from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put
ray = init_ray("local", 1)

@ray.remote
def token():
    return os.environ["RAY_AUTH_TOKEN"]

tok = ray.get(token.remote())     # before: a worker started after it would refuse this very cluster
ns = ray_constants.KV_NAMESPACE_CLUSTER
meta = json.loads(_internal_kv_get(usage_constant.CLUSTER_METADATA_KEY, namespace=ns))
meta["python_version"] = "3.10.99"
_internal_kv_put(usage_constant.CLUSTER_METADATA_KEY, json.dumps(meta).encode(), overwrite=True, namespace=ns)
print(ray.get_runtime_context().gcs_address, tok, flush=True)
sys.stdin.read()
"""


@pytest.mark.slow(60)
def test_a_cluster_of_another_python_or_ray_is_named_in_one_line(tmp_path):
    """--address of a cluster started with another Python or Ray: the line said only "(Version
    mismatch: The cluster was started with:)", the versions cut off."""
    from conftest import committed_store, run_cli

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    server = subprocess.Popen([sys.executable, "-c", _OTHER_CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env={**env, "PYTHONPATH": str(ROOT)})
    try:
        assert server.stdout is not None
        gcs, token = server.stdout.readline().split()
        s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
        r = run_cli("bootstrap", s.uri, "--out", str(tmp_path / "o"), "--samples", "10", "--address", gcs,
                    env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                    timeout=120)
        lines = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]   # Ray's INFO lines beside it
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert len(lines) == 1 and "Python 3.10.99" in lines[0] and "Ray 2." in lines[0], r.stderr[-3000:]
        assert "token" not in lines[0] and f"Python {sys.version.split()[0]}" in lines[0], lines[0]
    finally:
        server.stdin.close()
        server.wait(timeout=60)


def test_a_write_waiting_for_another_commands_lock_says_so(tmp_path, capfd):
    """`fit --out D` while another command wrote D (a report drawing 200 group figures: minutes)
    waited on D's lock without a word: a command that seemed hung."""
    import fcntl
    import threading

    from meta_study.analysis.results import ResultsDir

    d = ResultsDir(tmp_path / "d")
    d.path.mkdir()
    fd = os.open(d.path / ".results.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)              # another command's write
    got = threading.Event()

    def write() -> None:
        with d.locked():
            got.set()

    t = threading.Thread(target=write)
    t.start()
    try:
        assert not got.wait(1.0)                # it waits ...
        err = capfd.readouterr().err
        assert f"{d.path}: another command is writing here; waiting for it" in err, err   # ... and says so
    finally:
        os.close(fd)
        t.join(30)
    assert got.is_set()


_CHANGED_ON_DISK = r"""
import numpy as np
from meta_study.errors import UserError
from meta_study.analysis import results
from meta_study.analysis.groups import Group
from meta_study.analysis.parallel import bootstrap_ray
from meta_study.analysis.bootstrap import BootstrapOptions
results._CODE[:] = ["0" * 16]     # the code this process loaded before meta-study changed on disk
rng = np.random.default_rng(0)
us = np.sort(rng.uniform(0.3, 0.9, 30))
ds = np.clip(0.9 - 0.7 * (1 - us) ** 1.5 + rng.normal(0, 0.01, 30), 0, 1)
try:
    bootstrap_ray([Group("up", "d", "fewshot", 5, us, ds)], BootstrapOptions(samples=20), address="local", workers=1)
except UserError as e:
    print(f"USERERROR {e}", flush=True)   # one string: a Ray log line cannot land inside it
else:
    print("NO ERROR", flush=True)
"""


@pytest.mark.slow(30)
def test_own_workers_importing_code_changed_on_disk_are_refused(tmp_path):
    """meta-study upgraded under a running `refit --every`: the workers Ray starts import the new
    files while the driver runs the old ones, and the results were recorded as the old code's."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    r = subprocess.run([sys.executable, "-c", _CHANGED_ON_DISK], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=240)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("USERERROR", "NO ERROR"))]
    assert lines and "changed on disk since this command started" in lines[0], r.stdout + r.stderr[-3000:]
