"""Defects the lead found in session 49, each with the test that failed before its fix."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli


def test_a_refit_with_nothing_to_fit_leaves_no_out_it_made(tmp_path: Path) -> None:
    """``refit: empty`` (no groups to fit) made no version, but an ``--out`` the refit created stayed
    behind holding only ``.refit-out.lock``, against docs/cluster.md's "a failed first refit leaves
    no --out it made behind"; an --out that existed before is kept."""
    (tmp_path / "runs.csv").write_text("run_id,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
                                       "r1,a,b,kfold,0.5,0.5\nr2,a,b,kfold,0.6,0.5\n")
    st, out = tmp_path / "st", tmp_path / "out"
    r = run_cli("refit", "--store", str(st), "--source", str(tmp_path / "runs.csv"), "--tracking-uri", "none",
                "--out", str(out), "--serial")
    assert r.returncode == 1 and "refit: empty:" in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    # the store exists now (its quarantine): a refit of it alone, exit 0, no version; the --out the
    # command made (before the refit, to check it can be written) holds no lock file
    r = run_cli("refit", "--store", str(st), "--tracking-uri", "none", "--out", str(out), "--serial")
    assert r.returncode == 0 and "refit: empty:" in r.stdout, (r.stdout, r.stderr)
    assert not out.exists() or not any(out.iterdir())
    # an OUT that was there before keeps itself and what it holds
    out.mkdir(exist_ok=True)
    (out / "notes.txt").write_text("mine")
    r = run_cli("refit", "--store", str(st), "--tracking-uri", "none", "--out", str(out), "--serial")
    assert r.returncode == 0 and (out / "notes.txt").read_text() == "mine"
