"""Hostile but valid data through every analysis command (issue 24, item 1): near-tied US
accuracies, constant axes, 1-3 models, DS exactly 0 or 1, names that are mathtext, HTML or shell
metacharacters. No command may fail or print a traceback, and every group gets a status."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_rows, run_cli
from meta_study.analysis.fitting import fit_groups
from meta_study.validation import validate
from meta_study.store import Store

NAMES = ["\\badcommand", "$x^2$", "<script>alert(1)</script>", "a & b", "007", "7"]


def hostile_rows() -> pd.DataFrame:
    parts = []
    tied = make_rows(2, ds_tasks=("tied",), run_prefix="t")      # 0.8012 vs 0.8013, DS 20 vs 80
    tied["us_accuracy"] = [0.8012, 0.8013]
    tied["ds_accuracy"] = [0.20, 0.80]
    parts.append(tied)
    const_us = make_rows(8, ds_tasks=("const-us",), run_prefix="cu")
    const_us["us_accuracy"] = 0.7
    parts.append(const_us)
    const_ds = make_rows(30, ds_tasks=("const-ds",), run_prefix="cd")
    const_ds["ds_accuracy"] = 0.25
    parts.append(const_ds)
    for n in (1, 2, 3):
        parts.append(make_rows(n, ds_tasks=(f"only-{n}",), run_prefix=f"o{n}"))
    edges = make_rows(40, ds_tasks=("zero-one",), run_prefix="z")
    edges["ds_accuracy"] = np.where(np.arange(len(edges)) % 2, 1.0, 0.0)
    parts.append(edges)
    for i, name in enumerate(NAMES):
        parts.append(make_rows(25, ds_tasks=(name,), run_prefix=f"n{i}", seed=i))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.slow(25)
def test_two_thousand_random_groups_of_five_each_get_a_status():
    rng = np.random.default_rng(0)
    groups = [(rng.uniform(0, 1, 5), rng.uniform(0, 1, 5)) for _ in range(2000)]
    groups[7] = (np.array([0.8012, 0.8013, 0.5, 0.5, 0.5]), np.array([0.2, 0.8, 0.3, 0.3, 0.3]))
    sels = fit_groups(groups)
    assert len(sels) == 2000
    assert all(s.trust_reason for s in sels)
    statuses = {c.fit.status for s in sels for c in s.candidates}
    assert statuses <= {"ok", "at_bound", "too_few_points", "degenerate", "nonfinite"}


@pytest.mark.slow(40)
def test_every_analysis_command_survives_hostile_groups(tmp_path):
    store = Store(str(tmp_path / "st"))
    store.commit(validate(hostile_rows()).table)
    out = tmp_path / "out"
    for args in (("fit", "--out", str(out / "fit")), ("report", "--out", str(out / "report"), "--serial", "--trials", "2",
                                                      "--samples", "20"),
                 ("sensitivity", "--out", str(out / "sens"), "--serial", "--trials", "2"),
                 ("bootstrap", "--out", str(out / "boot"), "--serial", "--samples", "20"),
                 ("correlations", "--out", str(out / "corr"))):
        r = run_cli(args[0], str(store.uri), *args[1:], timeout=600)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
        assert "Traceback" not in r.stderr and "Error" not in r.stderr, (args, r.stderr[-3000:])
    fits = pd.read_parquet(out / "fit" / "fits.parquet")
    heads = fits[fits["headline"]]
    assert set(heads["ds_task"]) >= {"tied", "const-us", "const-ds", "only-1", "zero-one", *NAMES}
    assert heads["status"].notna().all() and (heads["trust_reason"] != "").all()
    page = (out / "report" / "index.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
