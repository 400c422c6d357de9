"""The answer issue's benchmark: the held-out protocol on many tables, and what the answer costs.

    python benchmarks/bench_selection.py [--tables all|TABLE,...] [--groups 100] [--points 4800] [--no-cost]

(a) **Held-out protocol, per table.** Per group: hide the models above the 80th percentile of US
    accuracy, fit the rest exactly as ``meta-study fit --holdout-quantile 1.0`` does (the
    back-tests run inside the visible models), write the ``fits.parquet`` rows, and score the
    headline row through ``predict_fit`` and ``predict_interval`` at the hidden models'
    upper-hull vertices. No hidden model takes part in any choice. Per table: the headline's
    median RMSE against the flat guess (the best visible DS accuracy) and against the paper's
    Eq. 1 on the hull vertices, the share of groups at or below the flat guess, how many groups
    are trusted and how many of those are within 5 points (RMSE) of the hidden frontier, and the
    share of hidden frontier points inside the 90% interval. Then the geometric mean over tables
    of the RMSE ratios, and the pooled shares.

    Tables: every ``examples/data/*/us_ds.csv`` (public model zoos, see examples/data/README.md),
    the 5 timm groups, 63 groups in 3 tables derived from the raw timm CSVs (US from ImageNet, -ReaL or V2
    against every other test set, for all models, ImageNet-1k-only models and convnets), and
    synthetic families with known laws. Groups need 10 or more models.
(s) **Synthetic families with a known law: the claims' intervals against the truth.** The demo's
    simulator and our own families (eq1, eq1 with an upstream Bayes error, logit-linear), every
    model visible: in trusted groups, the share of 90% bands for the trend (``band="trend"``; the
    prediction interval's share beside them) that hold the true law's value at +1, +3 and +5 US
    points (within the tested horizon) and at ``predict_us``, the share of US-needed intervals
    holding the true US accuracy needed for a DS target 2 points past the best model, and of the
    stop-paying spreads holding the true stop-paying point where one is stated; and the share of the laws' spreads of the slope at +1, +3 and +5 US points (the
    members' equal-tailed 90% quantiles, not an interval) that hold the true law's slope there.
(b) **Cost**: the whole answer (every law on every frontier, back-tests, headline, claims) on
    ``--groups`` synthetic groups of ``--points`` models, against the fit this project had first
    (Eq. 1 on the hull vertices and on all points, one batched call), in the same run. Target:
    under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.hull import upper_hull
from meta_study.analysis.laws import LawFit
from meta_study.analysis.headline import point_secant
from meta_study.analysis.payoff import stop_paying_us, us_needed
from meta_study.analysis.powerlaw import fit_power_laws
from meta_study.analysis.selection import SelectionOptions
from meta_study.analysis.tables import fits_frame

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "examples", "data")
MIN_MODELS = 10
Table = tuple[str, str, np.ndarray, np.ndarray]      # (table, group, US, DS)


def rmse_points(pred: np.ndarray, target: np.ndarray) -> float:
    return float(100 * np.sqrt(np.mean((pred - target) ** 2)))


# ---- tables -----------------------------------------------------------------------------------

RAW = {"imagenet": "results-imagenet.csv", "real": "results-imagenet-real.csv",
       "v2": "results-imagenetv2-matched-frequency.csv", "sketch": "results-sketch.csv", "a": "results-imagenet-a.csv",
       "r": "results-imagenet-r.csv", "a-clean": "results-imagenet-a-clean.csv", "r-clean": "results-imagenet-r-clean.csv"}


def _in1k_only(model: str) -> bool:
    return "in1k" in model and not any(t in model for t in ("in22k", "in12k", "ig", "clip", "laion", "jft", "m38m"))


def _cnn(model: str) -> bool:
    return any(t in model for t in ("resnet", "resnext", "conv", "efficientnet", "regnet", "mobilenet", "dense"))


def timm_groups(folder: str) -> list[Table]:
    """The 5 groups of the joined timm table (ImageNet -> each shifted test set)."""
    df = pd.read_csv(os.path.join(folder, "timm_us_ds.csv"))
    return [("timm", str(t), g["us_top1"].to_numpy(float), g["ds_top1"].to_numpy(float))
            for t, g in df.groupby("ds_task", sort=True)]


def timm_derived(folder: str) -> list[Table]:
    """Every derived table of 100+ models: US from ImageNet, -ReaL or V2 against every other test
    set, for all models (``timm-all``), ImageNet-1k-only models (``timm-in1k``) and convnets."""
    acc = {k: pd.read_csv(os.path.join(folder, v)).set_index(["model", "img_size"])["top1"] / 100 for k, v in RAW.items()}
    out = []
    for us_name in ("imagenet", "real", "v2"):
        for ds_name in RAW:
            if ds_name == us_name:
                continue
            j = pd.concat([acc[us_name].rename("us"), acc[ds_name].rename("ds")], axis=1).dropna()
            models = j.index.get_level_values(0)
            for subset, keep in (("all", None), ("in1k", _in1k_only), ("cnn", _cnn)):
                t = j if keep is None else j[[keep(m) for m in models]]
                if len(t) >= 100:
                    out.append((f"timm-{subset}", f"{us_name}>{ds_name}", t["us"].to_numpy(float), t["ds"].to_numpy(float)))
    return out


#: (table, group) -> each model's DS test-set size where the table records it (``ds_n``), as
#: ``meta-study fit`` reads it from a row's ``extra`` (NaN: unknown, estimated from the accuracies)
TEST_SIZES: dict[tuple[str, str], np.ndarray] = {}


def zoo_groups(path: str) -> list[Table]:
    """The groups of one ``us_ds.csv`` (examples/data/*/): one per (US task, DS task, protocol, shots)."""
    df = pd.read_csv(path)
    table = os.path.basename(os.path.dirname(path))
    out = []
    # `protocol`: the table's own protocol name (`eval_protocol` is meta-study's vocabulary)
    for key, g in df.groupby(["us_task", "ds_task", "protocol", "shots"], dropna=False, sort=True):
        if len(g) >= MIN_MODELS:
            name = "/".join(str(k) for k in key)
            out.append((table, name, g["us_accuracy"].to_numpy(float), g["ds_accuracy"].to_numpy(float)))
            if "ds_n" in g:
                TEST_SIZES[(table, name)] = pd.to_numeric(g["ds_n"], errors="coerce").to_numpy(float)
    return out


def law_families(seed: int, n_groups: int = 60) -> list[tuple[str, np.ndarray, np.ndarray, LawFit]]:
    """Groups of 60-500 models drawn below known laws (eq1, eq1-bayes, logit-linear) with
    exponential gaps of 1-4 points: (name, US, DS, the true law)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_groups):
        n = int(rng.choice([60, 120, 240, 500]))
        us = rng.uniform(rng.uniform(0.2, 0.5), rng.uniform(0.8, 0.97), n)
        kind = ("eq1", "logit-linear", "eq1-bayes")[i % 3]
        p = ({"k": rng.uniform(0.5, 1.2), "alpha": rng.uniform(1.1, 3.0), "e_ir": rng.uniform(0.02, 0.4)} if kind == "eq1"
             else {"a": rng.uniform(-1, 1), "b": rng.uniform(0.5, 1.8)} if kind == "logit-linear"
             else {"k": rng.uniform(0.5, 1.2), "alpha": rng.uniform(1.1, 2.5), "e_ir": rng.uniform(0.02, 0.3),
                   "e_us_star": rng.uniform(0.0, 0.02)})
        law = LawFit(kind, p, math.nan, 0, "ok")
        ds = np.clip(law.predict_accuracy(us) - rng.exponential(rng.choice([0.01, 0.02, 0.04]), n), 0, 1)
        out.append((f"{kind}-{seed}-{i}", us, ds, law))
    return out


def demo_simulator(seed: int) -> list[tuple[str, np.ndarray, np.ndarray, LawFit]]:
    """The demo's simulated meta-study (meta_study.demo.synthetic_runs) with its known laws."""
    from meta_study.demo import SYNTH_LAWS, SYNTH_SHOTS, synthetic_runs
    from meta_study.schema import ds_metric_key, us_metric_key

    runs = synthetic_runs(seed=seed)
    us = np.array([r["metrics"][us_metric_key("sim_up")] for r in runs])
    out = []
    for task, (k, a, c) in SYNTH_LAWS.items():
        for shots in SYNTH_SHOTS:
            b = 1.0 - 0.04 * math.log(shots)
            ds = np.array([r["metrics"][ds_metric_key(task, shots)] for r in runs])
            out.append((f"demo-{task}-{shots}-{seed}", us, ds, LawFit("eq1", {"k": b * k, "alpha": a, "e_ir": b * c},
                                                                      math.nan, 0, "ok")))
    return out


def unknown_tables(which: str) -> list[str]:
    """The names in ``which`` (a comma list, or all) that are no table here."""
    known = {"timm", "synth", *(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(DATA, "*", "us_ds.csv")))}
    return [] if which == "all" else [w for w in which.split(",") if w not in known]


def all_tables(which: str) -> list[Table]:
    tables = []
    wanted = set(which.split(","))
    timm = os.path.join(DATA, "timm")
    if which == "all" or "timm" in wanted:
        tables += timm_groups(timm) + timm_derived(timm)
    for path in sorted(glob.glob(os.path.join(DATA, "*", "us_ds.csv"))):
        name = os.path.basename(os.path.dirname(path))
        if which == "all" or name in wanted:
            tables += zoo_groups(path)
    if which == "all" or "synth" in wanted:
        tables += [("synth", name, us, ds) for name, us, ds, _ in law_families(100, 40)]
    return tables


# ---- (a) the held-out protocol ----------------------------------------------------------------

def heldout_fits(tables: list[Table], quantile: float = 0.8
                 ) -> tuple[list[Group], list[tuple[np.ndarray, np.ndarray]], pd.DataFrame]:
    """Per group: hide the models above the ``quantile`` of US accuracy and fit the rest as
    ``meta-study fit --holdout-quantile 1.0`` does. Returns the visible groups, the hidden models'
    upper-hull vertices (US, DS) and the ``fits.parquet`` rows."""
    groups, targets, sizes = [], [], []
    for table, name, us, ds in tables:
        vis = us <= np.quantile(us, quantile)
        h = upper_hull(us[~vis], ds[~vis])
        groups.append(Group(table, name, "heldout", None, us[vis], ds[vis]))
        targets.append((us[~vis][h], ds[~vis][h]))
        n = TEST_SIZES.get((table, name))
        sizes.append(n[vis] if n is not None else None)
    sels = fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups], FitOptions(holdout_quantile=1.0),
                      keys=[g.key for g in groups], test_sizes=sizes)
    return groups, targets, fits_frame(groups, sels)


def protocol(tables: list[Table], quantile: float = 0.8) -> pd.DataFrame:
    """One row per group: RMSE (points) of the headline, the flat guess and Eq. 1 on vertices at
    the hidden frontier, trust, and hidden frontier points inside the 90% interval."""
    groups, targets, fits = heldout_fits(tables, quantile)
    heads = fits[fits["headline"]].reset_index(drop=True)
    paper = fits[(fits["law"] == "eq1") & (fits["frontier"] == "vertices")].reset_index(drop=True)
    rows = []
    for g, (tx, ty), h, p in zip(groups, targets, heads.to_dict("records"), paper.to_dict("records")):
        pred = predict_fit(h, tx)
        lo, hi = predict_interval(h, tx)
        rows.append({"table": g.us_task, "group": g.ds_task, "models": g.n, "targets": tx.size,
                     "flat": rmse_points(np.full(tx.shape, g.ds_accuracy.max()), ty), "headline": rmse_points(pred, ty),
                     "eq1/vertices": rmse_points(predict_fit(p, tx), ty), "trusted": bool(h["trusted"]),
                     "backtest": 100 * float(h["backtest_err"]), "inside": int(np.sum((ty >= lo) & (ty <= hi)))})
    return pd.DataFrame(rows)


def per_table(d: pd.DataFrame) -> pd.DataFrame:
    out = []
    for t, x in d.groupby("table", sort=True):
        tr = x[x["trusted"]]
        out.append({"table": t, "groups": len(x), "flat": x["flat"].median(), "headline": x["headline"].median(),
                    "eq1/vertices": x["eq1/vertices"].median(),
                    "vs flat": x["headline"].median() / x["flat"].median(),
                    "vs eq1": x["headline"].median() / x["eq1/vertices"].median(),
                    "<= flat": float((x["headline"] <= x["flat"] + 1e-9).mean()), "trusted": len(tr),
                    "trusted %": len(tr) / len(x), "within 5": float((tr["headline"] <= 5).mean()) if len(tr) else math.nan,
                    "coverage": x["inside"].sum() / x["targets"].sum()})
    return pd.DataFrame(out)


def coverage_spread(d: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per table: the hidden frontier points, the interval's coverage, and the 2.5-97.5% range of
    that coverage over ``reps`` resamples of the table's groups (with replacement; a group's points
    share one fit, so they are resampled together, not as independent points). A table of 10
    groups and 20 points measures coverage to about +-10 points: 100% there does not tell a 90%
    interval from a wider one, and a range that holds 0.90 is no evidence against calibration.
    Cost: ``reps`` sums per table, well under a second."""
    rng = np.random.default_rng(seed)
    out = []
    for t, x in d.groupby("table", sort=True):
        inside, targets = x["inside"].to_numpy(float), x["targets"].to_numpy(float)
        idx = rng.integers(0, len(x), size=(reps, len(x)))
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = inside[idx].sum(axis=1) / targets[idx].sum(axis=1)
        lo, hi = np.nanquantile(boot, [0.025, 0.975])
        out.append({"table": t, "groups": len(x), "points": int(targets.sum()),
                    "coverage": inside.sum() / targets.sum(), "range lo": lo, "range hi": hi,
                    "holds 0.90": bool(lo <= 0.9 <= hi)})
    return pd.DataFrame(out)


def summary_line(d: pd.DataFrame, t: pd.DataFrame) -> str:
    tr = d[d["trusted"]]
    geo = lambda c: float(np.exp(np.log(t[c].clip(lower=1e-9)).mean()))  # noqa: E731
    return (f"{len(t)} tables, {len(d)} groups: headline/flat {geo('vs flat'):.2f} (geometric mean over tables; worst "
            f"{t['vs flat'].max():.2f}, {t.loc[t['vs flat'].idxmax(), 'table']}), headline/eq1-on-vertices {geo('vs eq1'):.2f}; "
            f"at or below flat on {(d['headline'] <= d['flat'] + 1e-9).mean():.0%} of groups; trusted {len(tr)} "
            f"({len(tr) / len(d):.0%}), {(tr['headline'] <= 5).mean():.0%} of them within 5 points; 90% intervals "
            f"cover {d['inside'].sum() / d['targets'].sum():.0%} of the hidden frontier points "
            f"({t['coverage'].min():.0%}-{t['coverage'].max():.0%} per table)")


# ---- (s) synthetic families: the claims against the truth -------------------------------------

def claims_check(groups: list[tuple[str, np.ndarray, np.ndarray, LawFit]], threshold: float = 0.1) -> pd.DataFrame:
    """Per group and claim type: whether the 90% interval holds the truth (trusted groups flagged);
    and per step, whether the laws' spread of the slope holds the true law's slope (``.attrs["spreads"]``); per
    group whose stop-paying point is stated as an extrapolation, whether the members' spread of it and of the
    saturation hold the law's all the same (``.attrs["extrapolations"]``)."""
    rows, spreads, extrapolations = [], [], []
    for name, us, ds, law in groups:
        target = float(min(0.999, law.predict_accuracy(np.array([us.max() + 0.02]))[0]))
        s = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0, selection=SelectionOptions(ds_target=target)))[0]
        cl = s.claims
        truth = lambda u: float(law.predict_accuracy(np.array([u]))[0])  # noqa: E731
        # (claim, the trend's band holds the law, the prediction interval holds it: NaN where none)
        checks: list[tuple[str, bool, float]] = []
        if math.isfinite(cl.predict_us):
            t = truth(cl.predict_us)
            checks.append(("DS at the horizon", cl.predict_trend_lo <= t <= cl.predict_trend_hi,
                           float(cl.predict_lo <= t <= cl.predict_hi)))
        for st in cl.steps:
            if math.isfinite(st.ds) and not st.beyond_horizon:
                t = truth(st.us)
                checks.append((f"DS at +{st.points}", st.trend_lo <= t <= st.trend_hi, float(st.lo <= t <= st.hi)))
                if math.isfinite(st.slope_lo):   # the laws' spread of the slope, not a 90% interval
                    true = float(point_secant(law.predict_accuracy, np.array([st.us]))[0])
                    spreads.append({"group": name, "trusted": s.trusted, "step": f"+{st.points}", "true": true,
                                    "headline": st.slope, "covered": st.slope_lo <= true <= st.slope_hi})
        un = us_needed(law, target)
        if math.isfinite(cl.us_needed) and math.isfinite(un):
            checks.append(("US needed", cl.us_needed_lo <= un <= cl.us_needed_hi, math.nan))
        sp = stop_paying_us(law, threshold)
        sp_held = bool(cl.stop_paying_lo <= sp <= cl.stop_paying_hi)   # "never" is inf on both sides
        if cl.stop_paying_supported:
            checks.append(("stop paying", sp_held, math.nan))
        else:
            # stated as an extrapolation, not a finding (to 100% US, the members' spread): does that spread
            # hold the law's point all the same? And the saturation's (always an extrapolation)
            sat = float(law.predict_accuracy(np.array([1.0]))[0])
            extrapolations.append({"group": name, "trusted": s.trusted, "stop paying": sp_held,
                                   "never": not math.isfinite(cl.stop_paying_hi),
                                   "saturation": bool(cl.saturation_lo <= sat <= cl.saturation_hi)})
        rows += [{"group": name, "family": name.split("-")[0], "trusted": s.trusted, "claim": c, "covered": ok,
                  "prediction interval": pi} for c, ok, pi in checks]
    out = pd.DataFrame(rows)
    out.attrs["spreads"] = pd.DataFrame(spreads)
    out.attrs["extrapolations"] = pd.DataFrame(extrapolations)
    return out


# ---- (b) cost ---------------------------------------------------------------------------------

def synthetic_groups(n_groups: int, n_points: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_groups):
        us = rng.uniform(0.2, 0.92, n_points)
        k, a, c = rng.uniform(0.3, 1.2), rng.uniform(0.3, 3), rng.uniform(0.02, 0.4)
        out.append((us, np.clip(1 - (k * (1 - us) ** a + c) - rng.exponential(0.04, n_points), 0, 1)))
    return out


def old_fit(groups: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The first fit: Eq. 1 on the hull vertices and on all points of the visible models (80%
    hold-out), every group in one batched call."""
    e_us, e_ds = [], []
    for us, ds in groups:
        vis = np.flatnonzero(us <= np.quantile(us, 0.8))
        h = vis[upper_hull(us[vis], ds[vis])]
        for idx in (h, vis):
            e_us.append(1 - us[idx])
            e_ds.append(1 - ds[idx])
    fit_power_laws(e_us, e_ds)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables", default="all", help="all, or a comma list of examples/data folders (timm, synth, ...)")
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--points", type=int, default=4800)
    ap.add_argument("--no-cost", action="store_true", help="skip (b)")
    ap.add_argument("--csv", help="also write the per-group rows of (a) here")
    a = ap.parse_args()
    for flag, v in (("--groups", a.groups), ("--points", a.points)):
        if v < 1:
            ap.error(f"{flag} {v}: must be at least 1")   # one line, exit 2
    if not os.path.isdir(DATA):
        sys.exit(f"bench_selection: {DATA}: no such directory (the shipped example data)")
    if unknown_tables(a.tables):
        ap.error(f"--tables {a.tables}: no table {', '.join(unknown_tables(a.tables))} (all, timm, synth or a folder of {DATA})")
    pd.set_option("display.width", 220)
    d = protocol(all_tables(a.tables))
    t = per_table(d)
    print("(a) held-out protocol: hide the top 20% of each group by US accuracy, fit the rest, predict the hidden "
          "frontier (RMSE in points; coverage = hidden frontier points inside the 90% interval)")
    print(t.round(3).to_string(index=False))
    print(summary_line(d, t))
    cs = coverage_spread(d)
    print("(a) the interval's coverage per table, with its 95% range over resamples of the table's groups")
    print(cs.round(3).to_string(index=False))
    print(f"coverage within 85-95% on {int(cs['coverage'].between(0.85, 0.95).sum())} of {len(cs)} tables; "
          f"0.90 inside the resampling range on {int(cs['holds 0.90'].sum())} of {len(cs)}")
    if a.csv:
        d.to_csv(a.csv, index=False)
    c = claims_check(demo_simulator(0) + demo_simulator(1) + law_families(0) + law_families(1))
    tr = c[c["trusted"]]
    print("(s) synthetic families with known laws: share of 90% intervals holding the truth, trusted groups "
          f"({tr['group'].nunique()} of {c['group'].nunique()} trusted); DS claims by the trend's band (the "
          "prediction interval beside it), the US needed where the trend's band reaches the target")
    by_claim = tr.groupby(["claim"]).agg(mean=("covered", "mean"), size=("covered", "size"),
                                         prediction_interval=("prediction interval", "mean"))
    print(by_claim.round(3).to_string())
    print(tr.groupby(["family"])["covered"].agg(["mean", "size"]).round(3).to_string())
    sp = c.attrs["spreads"]
    sp = sp[sp["trusted"]]
    if len(sp):
        ratio = (sp["headline"] / sp["true"]).where(sp["true"] > 0)
        print("(s) the laws' spread of the slope (the members' 5%-95% quantiles, not an interval), trusted groups: share "
              f"holding the true slope {sp['covered'].mean():.3f} ({len(sp)} steps; per step "
              + ", ".join(f"{k} {v:.3f}" for k, v in sp.groupby("step")["covered"].mean().items())
              + f"); the headline's slope / the true slope: median {ratio.median():.2f}")
    ex = c.attrs["extrapolations"]
    ex = ex[ex["trusted"]] if len(ex) else ex
    if len(ex):
        print("(s) stated as extrapolations (not findings), trusted groups: the members' 5%-95% spread of the stop-paying "
              f"point holds the law's in {ex['stop paying'].mean():.3f} of {len(ex)} groups (its upper end 'never' in "
              f"{ex['never'].mean():.3f}), of the saturation {ex['saturation'].mean():.3f}")
    if not a.no_cost:
        groups = synthetic_groups(a.groups, a.points, 0)
        t_old = timed(lambda: old_fit(groups))
        t_new = timed(lambda: fit_groups(groups, FitOptions(), keys=[(i,) for i in range(len(groups))]))
        print(f"(b) {a.groups} groups x {a.points} points: the whole answer {t_new:.1f} s, the first fit {t_old:.2f} s "
              f"(ratio {t_new / t_old:.0f}x; target < 60 s)")


if __name__ == "__main__":
    main()
