"""Interval rules on many tables: why the 90% interval is built as it is, and what it cannot do.

    python benchmarks/bench_intervals.py [--tables all|TABLE,...]

The held-out protocol of ``bench_selection.py`` (a): per group, hide the models above the 80th
percentile of US accuracy, fit the rest exactly as ``meta-study fit --holdout-quantile 1.0`` does,
and read the headline row of ``fits.parquet``. Then, for each interval rule below, the share of
the hidden upper-hull vertices inside its 90% interval, per table, and its median half-width
against the chosen rule's in the same run (the baseline). Every rule sees only what a headline
row carries: the back-test residuals (|residual|, reach, cut), the members, the best visible US
accuracy and the DS test-set size (binomial floor, as in production). No hidden model takes part.

Rules (``x`` = distance beyond the best visible model in log US error; ``H``, ``M`` = longest and
median back-test reach; ``q`` = empirical 90% quantile of the scaled residuals):

- ``chosen`` (since 2026-12-06): ``headline.half_width``, ``q_H max(1, x/H)`` below the
  headline, and above it the larger of that and the highest member's prediction.
- ``before``: the rule until 2026-12-06, symmetric, ``max(q_H max(1, x/H), q_M max(1, x/M))``.
- ``flat``: ``q`` of the residuals, the same at every distance.
- ``past H``: flat out to the longest back-test, proportional to ``x`` past it (``chosen``
  without its upper end).
- ``past M``: flat out to the median back-test, proportional to ``x`` past it.
- ``cut median``: ``before`` with ``q`` the median over cuts of each cut's quantile (one bad
  cut does not set the width).
- ``flat+spread``: ``flat``, widened to half the range of the members' predictions.
- ``flat, up to top``: ``flat`` with ``chosen``'s upper end.

(d) **Diagnosis**: how a group's error grows with distance. Per table, the within-group slope of
``ln|error|`` on ``ln x`` (each group's means removed), for the back-test residuals (what a rule
can learn from) and for the hidden frontier (what it must cover). A rule can only learn growth
from the first; where the two differ by table, no rule built from a group's own back-tests can be
calibrated on every table.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import numpy as np
import pandas as pd

from bench_selection import DATA, all_tables, heldout_fits, unknown_tables
from meta_study.analysis import predict_fit
from meta_study.analysis.headline import (LEGACY_INTERVAL_RULE, Headline, distance, empirical_quantile, half_width,
                                          noise_half_width, parse_residuals)

LEVEL = 0.9
#: (x, residuals, headline, US accuracies) -> half-width (accuracy, fraction) at each distance
Rule = Callable[[np.ndarray, np.ndarray, Headline, np.ndarray], np.ndarray]


def _knee(x: np.ndarray, res: np.ndarray, which: str) -> np.ndarray:
    """Flat out to the longest (``H``) or median (``M``) reach, proportional to ``x`` past it."""
    r, reach = res[:, 0], res[:, 1]
    pos = reach[reach > 0]
    if pos.size == 0:
        return np.where(x > 0, np.inf, empirical_quantile(r, LEVEL))
    R = float(pos.max() if which == "H" else np.median(pos))
    return empirical_quantile(r / np.maximum(1.0, reach / R), LEVEL) * np.maximum(1.0, x / R)


def _cut_median(x: np.ndarray, res: np.ndarray) -> np.ndarray:
    r, reach = res[:, 0], res[:, 1]
    cut = res[:, 2] if res.shape[1] > 2 else np.zeros(len(r))
    pos = reach[reach > 0]
    if pos.size == 0:
        return np.where(x > 0, np.inf, empirical_quantile(r, LEVEL))
    out = np.zeros(x.shape)
    for R in (float(pos.max()), float(np.median(pos))):
        s = r / np.maximum(1.0, reach / R)
        q = float(np.median([empirical_quantile(s[cut == c], LEVEL) for c in np.unique(cut)]))
        out = np.maximum(out, q * np.maximum(1.0, x / R))
    return out


def _flat_spread(x: np.ndarray, res: np.ndarray, h: Headline, u: np.ndarray) -> np.ndarray:
    members = h.member_curves(u)
    spread = (members.max(axis=0) - members.min(axis=0)) / 2.0
    return np.fmax(np.full(x.shape, empirical_quantile(res[:, 0], LEVEL)), spread)


RULES: dict[str, Rule] = {
    "chosen": lambda x, res, h, u: half_width(x, res, LEVEL),
    "before": lambda x, res, h, u: half_width(x, res, LEVEL, LEGACY_INTERVAL_RULE),
    "flat": lambda x, res, h, u: np.full(x.shape, empirical_quantile(res[:, 0], LEVEL)),
    "past H": lambda x, res, h, u: _knee(x, res, "H"),
    "past M": lambda x, res, h, u: _knee(x, res, "M"),
    "cut median": lambda x, res, h, u: _cut_median(x, res),
    "flat+spread": _flat_spread,
    "flat, up to top": lambda x, res, h, u: np.full(x.shape, empirical_quantile(res[:, 0], LEVEL)),
}
#: rules whose upper end is raised to the highest member's prediction where that is higher
UP_TO_TOP = {"chosen", "flat, up to top"}


def collect(tables: list[tuple[str, str, np.ndarray, np.ndarray]]) -> list[dict]:
    """Per group: the hidden frontier, the headline row rebuilt, its residuals."""
    groups, targets, fits = heldout_fits(tables)
    heads = fits[fits["headline"]].to_dict("records")
    out = []
    for g, (tx, ty), row in zip(groups, targets, heads):
        res = np.asarray(parse_residuals(row.get("interval_residuals")), dtype=float)
        if not len(res) or not tx.size:
            continue
        out.append({"table": g.us_task, "tx": tx, "ty": ty, "pred": predict_fit(row, tx), "res": res,
                    "head": Headline.from_row(row), "test_size": float(row.get("ds_test_size", np.nan))})
    return out


def coverage(rows: list[dict], within_horizon: bool = False) -> pd.DataFrame:
    """Per rule and table: the share of hidden frontier points inside (all of them, or those
    within the group's tested horizon), and the median half-width against the chosen rule's."""
    recs = []
    for g in rows:
        h: Headline = g["head"]
        x = distance(g["tx"], h.best_us)
        floor = noise_half_width(g["pred"], g["test_size"], LEVEL)
        keep = x <= h.horizon + 1e-12 if within_horizon else np.ones(x.shape, dtype=bool)
        if not keep.any():
            continue
        x, floor, pred = x[keep], floor[keep], g["pred"][keep]
        top = h.member_curves(g["tx"][keep]).max(axis=0)
        for name, rule in RULES.items():
            w = np.fmax(rule(x, g["res"], h, g["tx"][keep]), floor)
            lo, hi = pred - w, (np.fmax(pred + w, top) if name in UP_TO_TOP else pred + w)
            y = g["ty"][keep]
            recs.append({"rule": name, "table": g["table"], "inside": int(np.sum((y >= lo) & (y <= hi))),
                         "points": x.size,
                         "width": float(np.median(np.minimum(np.clip(hi, 0, 1) - np.clip(lo, 0, 1), 1.0) / 2))})
    d = pd.DataFrame(recs)
    s = d.groupby(["rule", "table"])[["inside", "points"]].sum()
    cov = (s["inside"] / s["points"]).unstack("table")
    width = d.groupby(["rule", "table"])["width"].median().unstack("table")
    cov["width vs chosen"] = np.exp(np.log(width / width.loc["chosen"]).mean(axis=1))
    return cov.loc[list(RULES)]


def growth(rows: list[dict]) -> pd.DataFrame:
    """Within-group slope of ln|error| on ln(distance), back-tests and hidden frontier, per table."""
    bt, hid = [], []
    for k, g in enumerate(rows):
        res = g["res"]
        ok = res[:, 1] > 0
        bt += [(g["table"], k, np.log(max(r, 1e-4)), np.log(x)) for r, x in res[ok, :2]]
        x = distance(g["tx"], g["head"].best_us)
        e = np.abs(g["pred"] - g["ty"])
        hid += [(g["table"], k, np.log(max(ei, 1e-4)), np.log(xi)) for xi, ei in zip(x, e) if xi > 0]

    def slope(recs: list[tuple]) -> pd.Series:
        d = pd.DataFrame(recs, columns=["table", "group", "y", "x"])
        d["y"] -= d.groupby("group")["y"].transform("mean")
        d["x"] -= d.groupby("group")["x"].transform("mean")
        d["xy"], d["xx"] = d["x"] * d["y"], d["x"] ** 2
        s = d.groupby("table")[["xy", "xx"]].sum()
        return s["xy"] / s["xx"].clip(lower=1e-12)
    return pd.DataFrame({"back-tests": slope(bt), "hidden frontier": slope(hid)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables", default="all", help="all, or a comma list of examples/data folders (timm, synth, ...)")
    a = ap.parse_args()
    if not os.path.isdir(DATA):
        sys.exit(f"bench_intervals: {DATA}: no such directory (the shipped example data)")
    if unknown_tables(a.tables):
        ap.error(f"--tables {a.tables}: no table {', '.join(unknown_tables(a.tables))} (all, timm, synth or a folder of {DATA})")
    pd.set_option("display.width", 250)
    rows = collect(all_tables(a.tables))
    print(f"(c) share of hidden frontier points inside each rule's 90% interval, {len(rows)} groups; width vs chosen: "
          "geometric mean over tables of the median half-width's ratio to the chosen rule's")
    for within in (False, True):
        cov = coverage(rows, within)
        print("every hidden frontier point" if not within else
              "only the hidden frontier points within the group's tested horizon")
        print(cov.round(3).T.to_string())
        per_table = cov.drop(columns="width vs chosen")
        print("tables with 85-95% inside: " + ", ".join(
            f"{rule} {int(n)} of {per_table.shape[1]}"
            for rule, n in ((per_table >= 0.85) & (per_table <= 0.95)).sum(axis=1).items()))
    print("(d) within-group growth of ln|error| with ln(distance): what the back-tests show, what the hidden frontier did")
    print(growth(rows).round(2).to_string())


if __name__ == "__main__":
    main()
