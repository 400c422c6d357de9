"""Sample-size sensitivity (Abnar et al. 2022, Fig. 3, F.10-F.16): how fitting and prediction
errors move with the number of models, per frontier estimator.

A pure function of one group and a seed; each draw's stream is derived from (seed, group, size,
trial) (:mod:`.resampling`), so the Ray path (``parallel.py``) and the serial path give the same
numbers bit for bit. The bootstrap is :mod:`.bootstrap`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..defaults import MAX_SIZE, MAX_TRIALS, MIN_SIZE, MIN_TRIALS, SENSITIVITY_TRIALS
from .fitting import FitOptions, frontier_errors_many, prepare
from ..errors import Range
from .frontiers import FRONTIER_KINDS, FRONTIERS, check_frontier_names
from .groups import GROUP_COLUMNS
from .hull import SubsetHulls
from .powerlaw import fit_power_laws
from .resampling import SENSITIVITY_STREAM, CountError, draw_problems, group_rng, serially, whole_number

#: Frontier points (over every frontier of every draw) per block of draws fitted and scored
#: together (:func:`sensitivity_group`): its memory, ~25 MB at the peak with the fits' work
#: (measured on 1,500 models, 2026-12-06), whatever ``trials``; the table's own rows grow with them
#: (~0.4 KB a row while it is made).
SENSITIVITY_BLOCK_POINTS = 1 << 18
#: The ceilings of the counts are :mod:`~meta_study.defaults`' (the command line's too): a library
#: caller (or ``analysis/fig3_sensitivity.py --trials``) with a typo of extra zeros ran until killed.
SENSITIVITY_COLUMNS = (*GROUP_COLUMNS, "n", "trial", "frontier", "n_fit", "k", "alpha", "e_ir", "saturation",
                       "fit_err", "pred_err", "status")


@dataclass(frozen=True)
class SensitivityOptions:
    """The sample-size protocol.

    Attributes:
        sizes: sample sizes; None = ``n_sizes`` geometric steps from ``min_size`` to all fitting points.
            Without replacement, a size above a group's fitting points is all of them (one step);
            a group with no fitting points has no step (no rows), whatever ``sizes``.
        n_sizes, min_size: the default sizes' steps (>= 1) and smallest sample (>= 3 models, as ``sizes``).
        trials: draws per size, 1 to :data:`MAX_TRIALS` (sizes and steps: at most :data:`MAX_SIZE`).
        replace: draw with replacement (the bootstrap variant) instead of without.
        seed: the master seed.
        fit: how each draw is split and fitted.
        frontiers: the frontier estimators compared (the paper's Eq. 1 is fitted to each).
    """

    sizes: tuple[int, ...] | None = None
    n_sizes: int = 8
    min_size: int = 10
    trials: int = SENSITIVITY_TRIALS
    replace: bool = False
    seed: int = 0
    fit: FitOptions = field(default_factory=FitOptions)
    frontiers: tuple[str, ...] = tuple(FRONTIERS)

    def __post_init__(self) -> None:
        # each once, as the CLI's --frontiers: ("all", "all") fitted every draw twice, each row twice;
        # one name is a tuple of it ("all" was refused as the frontiers 'a', 'l', 'l')
        object.__setattr__(self, "frontiers", check_frontier_names(self.frontiers))
        # whole numbers, checked here as the bootstrap's samples and seed (resampling.whole_number):
        # trials=1e1 was accepted and failed in range() inside a Ray worker, 2.5 trials or a size of
        # 10.5 models were cut to 2 and 10 without a word, and a float seed failed in numpy
        for name, what in (("trials", "draws per sample size"), ("n_sizes", "sample-size steps"),
                           ("min_size", "models in the smallest sample"), ("seed", "the master seed")):
            object.__setattr__(self, name, whole_number(name, getattr(self, name), what))
        if self.sizes is not None:
            # one size is a tuple of it (sizes=10 was "'int' object is not iterable"); a list or an
            # array is a tuple, so that the frozen options hash and compare as the CLI's tuple
            sizes = (self.sizes,) if isinstance(self.sizes, (int, float, np.number)) else self.sizes
            if isinstance(sizes, str):
                raise CountError(f"sizes (models in a sample) must be whole numbers, got {sizes!r}")
            object.__setattr__(self, "sizes", tuple(whole_number("sizes", n, "models in a sample") for n in sizes))
            if not self.sizes:   # () silently meant the default sizes, which None asks for
                raise CountError("sizes (models in a sample) is empty; give one size or more, or None for the "
                                 "default steps")
        Range(MIN_TRIALS, MAX_TRIALS).check("trials", self.trials, "draws per sample size")
        # as ``sizes``: min_size 0 was numpy's "Geometric sequence cannot include zero" traceback,
        # 1 and 2 drew samples no law can be fitted to, and n_sizes 0 an empty table, said nowhere;
        # n_sizes 1e10 allocated its 80 GB of steps (numpy's MemoryError) before removing duplicates
        Range(1, MAX_SIZE).check("n_sizes", self.n_sizes, "sample-size steps")
        Range(MIN_SIZE, MAX_SIZE).check("min_size", self.min_size, "models in the smallest sample")
        # numpy seeds are >= 0: -1 (a script's --seed -1) was numpy's "expected non-negative integer" traceback
        Range(0).check("seed", self.seed, "the master seed")
        if self.sizes is not None:
            for n in self.sizes:
                Range(MIN_SIZE, MAX_SIZE).check("sizes", n, "models in a sample")


def default_sizes(n_fit: int, n_sizes: int = 8, min_size: int = 10) -> list[int]:
    """About ``n_sizes`` geometric steps from ``min_size`` up to ``n_fit`` (duplicates removed)."""
    if n_fit <= 0:
        return []
    if n_fit <= min_size:
        return [n_fit]
    return sorted({int(round(v)) for v in np.geomspace(min_size, n_fit, n_sizes)})


def sensitivity_group(key: Sequence[Any], us_accuracy: np.ndarray, ds_accuracy: np.ndarray,
                      options: SensitivityOptions = SensitivityOptions()) -> pd.DataFrame:
    """Fit Eq. 1 to every frontier estimator on random subsamples of a group's fitting points.

    For each size ``n`` and trial: draw ``n`` fitting points uniformly, recompute each frontier
    inside the draw, fit it, and score ``fit_err`` (on the points each fit used) and ``pred_err``
    (against the group's held-out frontier, exactly as in :mod:`.fitting`).

    Args:
        key: the group key (us_task, ds_task, eval_protocol, shots); seeds the draws.

    Returns:
        One row per (n, trial, frontier): :data:`SENSITIVITY_COLUMNS`.
    """
    p = prepare(us_accuracy, ds_accuracy, options.fit)
    pool = p.fit_idx
    sizes = list(options.sizes) if options.sizes else default_sizes(pool.size, options.n_sizes, options.min_size)
    if pool.size == 0:
        # nothing to draw (every model held out, or none with finite accuracies): no step, as the
        # default sizes have none (a table of no rows is what `sensitivity` says "nothing to fit"
        # of); --sizes 10,30 wrote rows for 10 and 30 models drawn from none
        sizes = []
    elif not options.replace:
        # a size above the fitting points draws all of them: said as that many, once (n=100 and
        # n=300 of a 40-model group were the same draw, shown as 100 and 300 models)
        sizes = sorted({min(int(n), pool.size) for n in sizes})
    else:   # each size once, as the CLI's --sizes: (10, 10) drew the same seeded draws twice
        sizes = sorted({int(n) for n in sizes})
    hulls = SubsetHulls(p.us, p.ds, nondecreasing=options.fit.nondecreasing)
    # The draws are fitted and scored a block of about SENSITIVITY_BLOCK_POINTS frontier points at a
    # time, and kept as their table's columns: every draw's points were held until the end, with a
    # dict per row, ~39 MB per 100 trials of a 1,500-model group at the default sizes (3.9 GB per
    # task at --trials 10000) for a table of 0.7 MB
    cols: dict[str, list[Any]] = {c: [] for c in SENSITIVITY_COLUMNS[len(GROUP_COLUMNS):]}
    block: list[tuple[int, int, str, np.ndarray, np.ndarray]] = []    # (n, trial, frontier, US, DS)

    def score() -> None:
        fits = fit_power_laws([1.0 - fu for *_, fu, _ in block], [1.0 - fd for *_, fd in block],
                              loss=options.fit.loss, alpha_max=options.fit.alpha_max)
        fit_err, pred_err = frontier_errors_many(p, [fr for _, _, fr, _, _ in block], fits,
                                                 [(fu, fd) for *_, fu, fd in block])
        for (n, t, fr, fu, _), f, fe, pe in zip(block, fits, fit_err.tolist(), pred_err.tolist()):
            for c, v in (("n", n), ("trial", t), ("frontier", fr), ("n_fit", int(fu.size)), ("k", f.k),
                         ("alpha", f.alpha), ("e_ir", f.e_ir), ("saturation", f.saturation), ("fit_err", fe),
                         ("pred_err", pe), ("status", f.status)):
                cols[c].append(v)
        block.clear()

    drawn = 0
    for n in sizes:
        for t in range(options.trials):
            s = group_rng(options.seed, key, SENSITIVITY_STREAM, n, t).choice(pool, size=n, replace=options.replace)
            problems = draw_problems(p, s, options.frontiers, hulls)
            block.extend((int(n), t, fr, fu, fd) for fr, fu, fd in problems)
            drawn += sum(fu.size for _, fu, _ in problems)
            if drawn >= SENSITIVITY_BLOCK_POINTS:
                score()
                drawn = 0
    if block:
        score()
    if not cols["n"]:
        return pd.DataFrame([], columns=list(SENSITIVITY_COLUMNS))
    key_cols = {c: [v] * len(cols["n"]) for c, v in zip(GROUP_COLUMNS, key)}
    return pd.DataFrame({**key_cols, **cols}, columns=list(SENSITIVITY_COLUMNS))


def sensitivity(groups: Sequence[Any], options: SensitivityOptions = SensitivityOptions(), *,
                progress: Callable[[str, int, int | None], None] | None = None) -> pd.DataFrame:
    """:func:`sensitivity_group` for every group (objects with ``key``, ``us_accuracy``, ``ds_accuracy``), serially."""
    frames = serially("sensitivity", sensitivity_group, groups, options, progress)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SENSITIVITY_COLUMNS))


def summarize_sensitivity(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of fit_err and pred_err per (group, frontier, n) over trials."""
    if table.empty:
        return pd.DataFrame()
    keys = [*GROUP_COLUMNS, "frontier", "n"]
    t = table.astype({"shots": "Int64"})
    return (t.groupby(keys, dropna=False)
             .agg(fit_err_mean=("fit_err", "mean"), fit_err_std=("fit_err", "std"),
                  pred_err_mean=("pred_err", "mean"), pred_err_std=("pred_err", "std"),
                  trials=("trial", "size"), ok=("status", lambda s: int(s.isin(["ok", "at_bound"]).sum())))
             .reset_index())


#: The columns of :func:`frontier_curves`: errors and their sd are fractions (x100: accuracy points).
CURVE_COLUMNS = ("frontier", "step", "n", "groups", "fit_err", "fit_err_sd", "pred_err", "pred_err_sd")


@dataclass(frozen=True)
class CurveGroups:
    """The groups each curve of Fig. 3 is over (:func:`curve_groups`): one set per frontier, the
    same at every one of its size steps.

    Attributes:
        steps: the size steps drawn (1 ... steps: the kept groups' whole grids, the last one each
            group's largest sample).
        total: the groups of the summary.
        groups: per frontier, the group numbers (``groupby(GROUP_COLUMNS).ngroup()`` of the summary)
            each of its points is a median over; the same set for every frontier unless no group
            has every frontier's error (then each frontier's own).
    """

    steps: int
    total: int
    groups: dict[str, frozenset[int]]

    @property
    def kept(self) -> int:
        """The groups the medians are over (the most any frontier's are over)."""
        return max((len(g) for g in self.groups.values()), default=0)


def _stepped(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``step`` (a group's k-th smallest ``n``) and ``_g`` (its group number)."""
    gkeys = list(GROUP_COLUMNS)
    s = summary.astype({"shots": "Int64"}) if "shots" in summary else summary
    by = s.groupby(gkeys, dropna=False)
    return s.assign(step=by["n"].rank(method="dense").astype(int), _g=by.ngroup())


def _curve_groups(s: pd.DataFrame) -> CurveGroups:
    """:func:`curve_groups` of a :func:`_stepped` summary."""
    n_steps = s.groupby("_g")["step"].max()
    if n_steps.empty:
        return CurveGroups(0, 0, {})
    # The groups of one grid length, the most common (the longer of a tie): groups have their own
    # size grids (10 ... their fitting points; one step where they have 10 or fewer), and a group
    # that ends at step 3 leaves the medians of steps 4-8, which then move with the groups, not with n
    counts = n_steps.value_counts()
    steps = int(counts[counts == counts.max()].index.max())
    cand = set(n_steps.index[n_steps == steps].tolist())
    ok = s[s["_g"].isin(cand) & np.isfinite(s["pred_err_mean"].astype(float))]
    scored = ok.groupby(["frontier", "_g"])["step"].nunique()
    frontiers = sorted(set(s["frontier"]))
    # per frontier, the groups where it has a prediction error at every step
    complete = {f: frozenset(int(g) for (fr, g), k in scored.items() if fr == f and k == steps) for f in frontiers}
    # Of those, the groups where every frontier has a prediction error at every step: each point a
    # median over the same groups, so that a curve's change from one step to the next is the
    # sample size's alone (a paired comparison: a median over the groups each step happens to have
    # moves when a hard group comes in or leaves), and the frontiers are compared on the same groups
    # (over each one's own, a frontier failing on the hard groups was ranked by the easy ones). Every
    # frontier drawn, `all` too: the page compares it with the others. Leaving a group out is said
    # (kept of total, in the figure's title and the sentence under it). A frontier with no such group
    # anywhere (no fit at some step of every group) does not empty the set: it is drawn only at the
    # steps where every kept group has its error. No group with every frontier's: each frontier over
    # its own complete groups (still the same ones at each of its steps).
    required = [f for f in frontiers if complete[f]]
    common = frozenset(cand).intersection(*(complete[f] for f in required))
    sets = {f: common for f in frontiers} if common else {f: complete[f] for f in frontiers}
    return CurveGroups(steps, int(n_steps.size), sets)


def curve_groups(summary: pd.DataFrame) -> CurveGroups:
    """The groups and size steps :func:`frontier_curves` draws of ``summary``
    (:func:`summarize_sensitivity`), and how many groups it leaves out."""
    return _curve_groups(_stepped(summary)) if len(summary) else CurveGroups(0, 0, {})


def frontier_curves(summary: pd.DataFrame) -> pd.DataFrame:
    """What Fig. 3 draws of the groups of ``summary`` (:func:`summarize_sensitivity`; the figure
    calls it once per row of panels): per frontier and size step (a group's k-th smallest ``n``:
    groups have their own size grids, 10 ... their fitting points), the median over groups of each
    group's mean over trials of ``fit_err`` and ``pred_err``, the median over them of the sd over
    trials (the bars), the mean ``n`` of the step (its x) and the ``groups`` a median is over.

    Over one set of groups at every step (:func:`curve_groups`): the groups of the most common grid
    length where every frontier has a prediction error at every step. Each group's own set per step
    (all 75 groups of the CIFAR-10-C table at steps 2-3, the 73 that every frontier could be scored
    on at step 1) drew a drop from step 1 to 2 that was partly the two groups coming in, and the
    ranking's "every fitting model" median (over the 73) was no point drawn. A point where a kept
    group has no error is not drawn (NaN), rather than a median over fewer.

    The median, not the mean, over groups: it is what the report's ranking (:func:`rank_frontiers`,
    which takes its numbers from here) and ``meta-study sensitivity`` say. A mean over groups is one
    group's 40-60 pt miss spread over all of them: on the public tables (49 DS tasks) it drew bins
    below hull-curve at n=10, ~1.5 pt above the medians the text ranked hull-curve first by.
    Cost: a few groupbys, ~10 ms for 50 groups x 8 steps."""
    if summary.empty:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    s = _stepped(summary)
    cg = _curve_groups(s)
    s = s[s["step"] <= cg.steps]
    # a step's x: the mean over the kept groups of their n there (the same for every frontier)
    n_at = s.groupby(["_g", "step"])["n"].first()
    parts = []
    for frontier in sorted(cg.groups):
        kept = cg.groups[frontier]
        at = s[(s["frontier"] == frontier) & s["_g"].isin(kept)]
        by = at.groupby("step")
        part = pd.DataFrame(index=pd.RangeIndex(1, cg.steps + 1, name="step"))
        part["frontier"] = frontier
        part["n"] = n_at[n_at.index.get_level_values("_g").isin(kept)].groupby(level="step").mean().reindex(part.index)
        part["groups"] = len(kept)
        for metric in ("fit_err", "pred_err"):
            vals = at[f"{metric}_mean"].astype(float)
            med = vals.groupby(at["step"]).median()
            full = np.isfinite(vals).groupby(at["step"]).sum() == len(kept)
            part[metric] = med.where(full).reindex(part.index)
            part[f"{metric}_sd"] = by[f"{metric}_std"].median().astype(float).reindex(part.index).where(
                part[metric].notna())
        parts.append(part.reset_index())
    if not parts:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(CURVE_COLUMNS)]


def rank_frontiers(summary: pd.DataFrame) -> pd.DataFrame:
    """Which frontier is more robust at small n, on this data: per frontier, the median over groups
    of the mean prediction and fitting errors at the smallest and the largest size step, ranked by
    the prediction error at the smallest (1 = most robust). The numbers are Fig. 3's first and last
    points (:func:`frontier_curves`): over the same groups at both steps, those of the most common
    size grid where every frontier has a prediction error at every step (``groups``; each
    frontier's own where no group has every one's), so that the sentence under the figure says
    what it draws. The medians, as ``meta-study sensitivity`` prints: the report's means ranked the
    frontiers otherwise than the terminal, one group's 60 pt miss outweighing the rest.
    Only the frontiers a headline can use (``in_headline``, :data:`~.frontiers.FRONTIER_KINDS`)
    are ranked; ``all`` (every model: the typical model, not the frontier) keeps its errors for the
    paper's comparison, with no rank."""
    cols = ["frontier", "in_headline", "groups", "pred_err_small_n", "pred_err_full_n", "fit_err_small_n",
            "fit_err_full_n", "rank_small_n"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    curves = frontier_curves(summary)
    steps = int(curves["step"].max()) if len(curves) else 1
    small = curves[curves["step"] == 1].set_index("frontier")
    full = curves[curves["step"] == steps].set_index("frontier")
    out = pd.DataFrame({
        "groups": small["groups"],
        "pred_err_small_n": small["pred_err"],
        "pred_err_full_n": full["pred_err"],
        "fit_err_small_n": small["fit_err"],
        "fit_err_full_n": full["fit_err"],
    }).rename_axis("frontier").reset_index()
    out["in_headline"] = out["frontier"].isin(FRONTIER_KINDS)
    out["rank_small_n"] = out["pred_err_small_n"].where(out["in_headline"]).rank(method="min").astype("Int64")
    return out.sort_values(["rank_small_n", "frontier"], na_position="last").reset_index(drop=True)[cols]


def _points(v: float) -> str:
    """An error (fraction) in accuracy points, 3 significant digits (as the report prints them)."""
    return f"{100 * float(v):.3g}" if v is not None and np.isfinite(v) else "-"


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def frontier_ranking_text(rank: pd.DataFrame, pt: Callable[[float], str] = _points, *,
                          name: Callable[[str], str] = str, best: Callable[[str], str] = str,
                          total: int | None = None) -> str:
    """The sentence that ranks the headline's frontiers (:func:`rank_frontiers`) by their prediction
    error at the smallest sample, or "" when none has one. Frontiers whose errors read the same in
    ``pt`` (an error in points) tie, and are said to ("bins predicts best ... then bins-upper (0 pt)"
    ranked two at 0 pt); ``name`` formats a frontier's name (the report escapes it), ``best`` the
    best ones' names once formatted (the report bolds them); ``total``, the groups of the table: where
    the medians are over fewer (``groups``, :func:`curve_groups`), it says over how many of them."""
    if rank.empty:
        return ""
    m = rank[rank["in_headline"].astype(bool) & rank["pred_err_small_n"].notna()]
    groups: list[list[dict[str, Any]]] = []
    for r in m.to_dict("records"):      # in rank order: equal shown values are neighbours
        if groups and pt(groups[-1][0]["pred_err_small_n"]) == pt(r["pred_err_small_n"]):
            groups[-1].append(r)
        else:
            groups.append([r])
    if not groups:
        return ""
    top = sorted(groups[0], key=lambda r: str(r["frontier"]))
    full = [pt(r["pred_err_full_n"]) for r in top]
    # "with all models" read as the frontier named `all` beside it: the full sample is meant
    full_text = (f"{full[0]} pt with every fitting model" if len(set(full)) == 1 else
                 "with every fitting model " + ", ".join(f"{name(str(r['frontier']))} {f} pt" for r, f in zip(top, full)))
    who = _names([best(name(str(r["frontier"]))) for r in top])
    verb = "predicts best" if len(top) == 1 else "tie for best"
    kept = top[0].get("groups")
    over = (f"median over {int(kept)} of {total} groups" if total is not None and kept is not None
            and not pd.isna(kept) and int(kept) < total else "median over groups")
    out = (f"Among them, on this data, {who} {verb} at the smallest sample ({pt(top[0]['pred_err_small_n'])} pt "
           f"prediction error, {over}; {full_text})")
    for g in groups[1:]:
        names = _names(sorted(name(str(r["frontier"])) for r in g))
        err = pt(g[0]["pred_err_small_n"])
        out += f", then {names} ({err} pt)" if len(g) == 1 else f", then {names} (tied at {err} pt)"
    return out + "."


__all__ = ["CURVE_COLUMNS", "CurveGroups", "MAX_SIZE", "MAX_TRIALS", "SENSITIVITY_COLUMNS", "SensitivityOptions",
           "curve_groups", "default_sizes", "frontier_curves", "frontier_ranking_text", "rank_frontiers",
           "sensitivity", "sensitivity_group", "summarize_sensitivity"]
