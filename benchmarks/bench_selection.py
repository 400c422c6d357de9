"""Trust issue benchmarks: the held-out protocol on real data, and the cost of back-tested selection.

    python benchmarks/bench_selection.py [--data ../shared/data/timm/timm_us_ds.csv] [--groups 100] [--points 4800]

(a) **Held-out protocol** (the issue's): per group, hide the models above the 80th percentile of
    US accuracy, run the fit on the rest (``--holdout-quantile 1.0``: the back-tests run inside
    the visible models), and score each fit against the hidden models' upper-hull vertices (RMSE
    in accuracy points, through ``predict_fit`` on the ``fits.parquet`` rows). Baselines: the flat
    guess (the best visible DS accuracy) and the paper's Eq. 1 on the hull vertices. Targets: the
    headline's median RMSE <= 0.6x the baseline's, at or below the flat guess on >= 4 of 5 groups,
    and >= 90% of trusted groups within 5 points.
(b) **Cost**: selection with back-tests on ``--groups`` synthetic groups of ``--points`` models,
    against the fit this project had before (Eq. 1 on the hull vertices and on all points, one
    batched call), in the same run. Target: under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

from meta_study.analysis import predict_fit
from meta_study.analysis.groups import Group
from meta_study.analysis.holdout import FitOptions, fit_groups
from meta_study.analysis.hull import upper_hull
from meta_study.analysis.powerlaw import fit_power_laws
from meta_study.analysis.run import fits_frame

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "timm", "timm_us_ds.csv")


def rmse_points(pred: np.ndarray, target: np.ndarray) -> float:
    return float(100 * np.sqrt(np.mean((pred - target) ** 2)))


def protocol(path: str) -> pd.DataFrame:
    """One row per group: RMSE (points) of every (law, frontier), the headline and the baselines."""
    df = pd.read_csv(path)
    groups, targets, flats = [], [], []
    for ds_task, g in df.groupby("ds_task", sort=True):
        us, ds = g["us_top1"].to_numpy(float), g["ds_top1"].to_numpy(float)
        thr = np.quantile(us, 0.8)
        vis = us <= thr
        h = upper_hull(us[~vis], ds[~vis])
        targets.append((us[~vis][h], ds[~vis][h]))
        flats.append(float(ds[vis].max()))
        groups.append(Group("imagenet", str(ds_task), "shift", None, us[vis], ds[vis]))
    sels = fit_groups([(g.us_acc, g.ds_acc) for g in groups], FitOptions(holdout_quantile=1.0),
                      keys=[g.key for g in groups])
    fits = fits_frame(groups, sels)
    rows = []
    for g, (tx, ty), flat in zip(groups, targets, flats):
        f = fits[fits["ds_task"] == g.ds_task]
        row = {"ds_task": g.ds_task, "n_visible": g.n, "n_target": tx.size,
               "flat": rmse_points(np.full(tx.shape, flat), ty)}
        for r in f.to_dict("records"):
            row[f"{r['law']}/{r['frontier']}"] = rmse_points(predict_fit(r, tx), ty)
        head = f[f["headline"]].iloc[0]
        row.update(headline=rmse_points(predict_fit(head, tx), ty), pick=f"{head['law']}/{head['frontier']}",
                   trusted=bool(head["trusted"]), backtest=100 * float(head["backtest_err"]))
        rows.append(row)
    return pd.DataFrame(rows)


def synthetic(n_groups: int, n_points: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_groups):
        us = rng.uniform(0.2, 0.92, n_points)
        k, a, c = rng.uniform(0.3, 1.2), rng.uniform(0.3, 3), rng.uniform(0.02, 0.4)
        out.append((us, np.clip(1 - (k * (1 - us) ** a + c) - rng.exponential(0.04, n_points), 0, 1)))
    return out


def old_fit(groups: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The fit before back-tested selection: Eq. 1 on the hull vertices and on all points of the
    visible models (80% hold-out), every group in one batched call."""
    e_us, e_ds = [], []
    for us, ds in groups:
        vis = np.flatnonzero(us <= np.quantile(us, 0.8))
        h = vis[upper_hull(us[vis], ds[vis])]
        for idx in (h, vis):
            e_us.append(1 - us[idx])
            e_ds.append(1 - ds[idx])
    fit_power_laws(e_us, e_ds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--points", type=int, default=4800)
    a = ap.parse_args()
    if not os.path.exists(a.data):
        sys.exit(f"bench_selection: {a.data}: no such file (the timm table from ../shared/data/timm)")
    t = protocol(a.data)
    pairs = [c for c in t.columns if "/" in c]
    pd.set_option("display.width", 200)
    print("(a) held-out protocol, RMSE in points against the hidden frontier")
    print(t[["ds_task", "n_visible", "n_target", "flat", "eq1/vertices", "headline", "pick", "backtest",
             "trusted"]].round(2).to_string(index=False))
    med = t[pairs].median().sort_values()
    print("median RMSE per (law, frontier), best 10:")
    print(med.head(10).round(2).to_string())
    base, head = t["eq1/vertices"].median(), t["headline"].median()
    wins = int((t["headline"] <= t["flat"] + 1e-9).sum())
    trusted = t[t["trusted"]]
    ok5 = float((trusted["headline"] <= 5).mean()) if len(trusted) else float("nan")
    print(f"headline median {head:.2f} vs eq1/vertices {base:.2f} (ratio {head / base:.2f}, target <= 0.6); "
          f"flat median {t['flat'].median():.2f}; headline <= flat on {wins}/{len(t)} groups (target >= 4); "
          f"trusted {len(trusted)}, within 5 points {ok5:.0%} (target >= 90%)")
    groups = synthetic(a.groups, a.points, 0)
    t0 = time.perf_counter()
    old_fit(groups)
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_groups(groups, FitOptions(), keys=[(i,) for i in range(len(groups))])
    t_new = time.perf_counter() - t0
    print(f"(b) {a.groups} groups x {a.points} points: selection with back-tests {t_new:.1f} s, "
          f"the old fit {t_old:.2f} s (ratio {t_new / t_old:.0f}x; target < 60 s)")


if __name__ == "__main__":
    main()
