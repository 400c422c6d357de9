"""Benchmark (a): the batched power-law fitter against a serial loop of scipy's curve_fit.

    python benchmarks/bench_fit.py [--problems 10000] [--seed 0]

The same problems (50-300 points each; noisy laws with alpha in [0.2, 3], log-like and
saturating shapes) go to ``fit_power_laws`` in one call and, one at a time, to
``scipy.optimize.curve_fit`` (bounded, method="trf", p0 = (1, 1, 0.1), the same bounds). Reports
the throughput ratio and the share of problems where our SSE is worse than curve_fit's by more than
1e-6 relative. Targets: >= 30x, and never worse on >= 99.9% of problems.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from scipy.optimize import curve_fit

from meta_study.analysis.powerlaw import ALPHA_MAX, ALPHA_MIN, fit_power_laws


def law(e, k, a, c):
    return k * np.power(e, a) + c


def problems(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    us, ds = [], []
    for i in range(n):
        m = int(rng.integers(50, 301))
        e = rng.uniform(0.03, 0.9, m)
        kind = i % 10
        if kind < 7:
            y = law(e, rng.uniform(0.1, 1.2), rng.uniform(0.2, 3.0), rng.uniform(0.0, 0.5)) + rng.normal(0, 0.02, m)
        elif kind < 9:
            y = law(e, rng.uniform(0.5, 2), rng.uniform(0.01, 0.08), 0) - rng.uniform(0.2, 0.6) + rng.normal(0, 0.01, m)
        else:
            y = 0.4 + 0.02 * e ** 0.3 + rng.normal(0, 0.01, m)
        us.append(e)
        ds.append(np.clip(y, 0, 1))
    return us, ds


def curve_fit_one(e: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p, _ = curve_fit(law, e, y, p0=[1.0, 1.0, 0.1], bounds=([0, ALPHA_MIN, 0], [np.inf, ALPHA_MAX, 1]),
                             method="trf")
        except (RuntimeError, ValueError):
            return math.inf
    return float(np.sum((law(e, *p) - y) ** 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.problems < 1:
        ap.error(f"--problems {args.problems}: must be at least 1")   # one line, exit 2
    us, ds = problems(args.problems, args.seed)
    pts = sum(u.size for u in us)

    t0 = time.perf_counter()
    ours = fit_power_laws(us, ds)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = [curve_fit_one(u, d) for u, d in zip(us, ds)]
    t_ref = time.perf_counter() - t0

    worse = sum(f.sse > r * (1 + 1e-6) + 1e-15 for f, r in zip(ours, ref))
    better = sum(r > f.sse * (1 + 1e-6) + 1e-15 for f, r in zip(ours, ref))
    print(f"problems                 {args.problems} ({pts} points, 50-300 each)")
    print(f"ours (batched)           {t_ours:8.2f} s  {args.problems / t_ours:9.0f} fits/s")
    print(f"curve_fit (serial, trf)  {t_ref:8.2f} s  {args.problems / t_ref:9.0f} fits/s")
    print(f"speed-up                 {t_ref / t_ours:8.1f}x   (target >= 30x)")
    print(f"ours worse by >1e-6 rel  {worse} ({100 * worse / args.problems:.3f}%)   (target <= 0.1%)")
    print(f"curve_fit worse          {better} ({100 * better / args.problems:.2f}%)")
    print("statuses                 " + ", ".join(f"{s}={sum(f.status == s for f in ours)}"
                                                   for s in ("ok", "at_bound", "degenerate", "nonfinite")))


if __name__ == "__main__":
    main()
