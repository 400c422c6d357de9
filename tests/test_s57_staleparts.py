"""The ``analysis/*.py`` scripts say the stale parts of their ``--out`` as the commands do.

``meta-study fit B --out D`` beside a part of store A in D prints one line naming it (the report,
made of every part, never mixes them); ``python analysis/heatmaps_f20_f21.py B --out D`` printed
nothing. Both now print the one line of ``results.stale_parts_line``. (A refit writes each
version into a fresh directory of its own with every part: no part there can be another's.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import REPO, committed_store, run_cli

SCRIPT = REPO / "analysis" / "heatmaps_f20_f21.py"


def _script(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _stale(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if " also holds " in line]


def test_a_script_says_a_part_of_another_store_in_its_out_as_the_command_does_and_only_then(tmp_path):
    committed_store(tmp_path / "a", runs=8, tasks=("a", "b"))
    committed_store(tmp_path / "b", runs=8, tasks=("a", "b"), seed=1)
    fits = run_cli("fit", "a", "--out", "d", "--no-figures", cwd=tmp_path)
    assert fits.returncode == 0, fits.stderr
    shutil.copytree(tmp_path / "d", tmp_path / "e")

    r = _script("b", "--out", "d", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (line,) = _stale(r.stdout)
    assert line.startswith("d also holds fits of store a version 1, not of store b version 1"), line
    assert "`meta-study fit b --out d`" in line, line

    # the command's own line, of the same DIR (a copy): word for word the script's
    cmd = run_cli("correlations", "b", "--out", "e", cwd=tmp_path)
    assert cmd.returncode == 0, cmd.stderr
    (said,) = _stale(cmd.stdout)
    assert said == line.replace("d also holds", "e also holds").replace("--out d", "--out e"), (said, line)

    # a part of the same store, version and selection beside the script's: nothing stale, no line
    same = run_cli("fit", "b", "--out", "f", "--no-figures", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    r = _script("b", "--out", "f", cwd=tmp_path)
    assert r.returncode == 0 and "wrote" in r.stdout and not _stale(r.stdout), (r.stdout, r.stderr)
