"""Review (session 39) of the analysis commands' refusals."""

from __future__ import annotations


def test_a_bootstrap_with_nothing_to_fit_writes_nothing(tmp_path):
    """`bootstrap --holdout-above 0` (every point held out) wrote bootstrap.parquet of rows of NaNs
    ("too_few_points"), printed "vertices no fit; all no fit" per group and exited 0. Refused as
    sensitivity is, naming the frontiers and the split; DIR holds nothing of it."""
    from conftest import committed_store, one_error_line, run_cli

    committed_store(tmp_path / "st", runs=40, tasks=("a",))
    out = tmp_path / "D"
    r = run_cli("bootstrap", str(tmp_path / "st"), "--out", str(out), "--holdout-above", "0", "--serial",
                "--samples", "10")
    one_error_line(r, "no group of the selection has at least 3 points to fit on any frontier (vertices, all) at or "
                      "below the hold-out split (--holdout-above 0)")
    assert not (out / "results.json").exists() and not list(out.glob("**/*.parquet"))
    # a split that leaves points to fit still bootstraps
    r = run_cli("bootstrap", str(tmp_path / "st"), "--out", str(out), "--serial", "--samples", "10")
    assert r.returncode == 0, r.stderr
    assert (out / "bootstrap.parquet").exists()
