"""Store in, tables and figures out: what ``meta-study fit / sensitivity / correlations`` run.

Output tables are Parquet (the record) plus a CSV copy when small; every file is written to a
temporary name and renamed into place, so an interrupted run never leaves a half-written table.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..defaults import PAYOFF_THRESHOLD
from .correlations import correlation_tables
from .groups import ROW_COLUMNS, Group, Selection, groups_from_frame, with_test_sizes
from .frontiers import frontier_points
from .fitting import FitOptions, fit_groups
from .laws import PARAM_COLUMNS
from .headline import ENSEMBLE, INTERVAL_RULE, quantile_name, residuals_json
from .selection import PLUS_POINTS, GroupSelection, SelectionOptions, Step, unusable_reason
from .bootstrap import BootstrapOptions, bootstrap
from .sensitivity import SensitivityOptions, sensitivity

Progress = Callable[[str, int, int | None], None]

#: fits.parquet: per group, its headline row (``law == frontier == "ensemble"``, ``headline`` true)
#: and one row per law x frontier candidate. Accuracies and errors are fractions; slopes are DS
#: points per US point. The answer (``ds_plus*``, claims) is on the headline row only; every row
#: carries ``best_us``, ``horizon_us``, its own ``interval_residuals`` and the ``level`` its intervals
#: were made at, so that :func:`meta_study.analysis.predict_interval` works on any row.
#: ``ds_plus{k}_lo/_hi`` is the prediction interval (a model's measured DS accuracy there),
#: ``ds_plus{k}_trend_lo/_hi`` the band for the frontier's law (predict_interval's ``band``).
STEP_COLUMNS = tuple(c for k in PLUS_POINTS for c in (f"ds_plus{k}", f"ds_plus{k}_lo", f"ds_plus{k}_hi",
                                                        f"slope_plus{k}", f"slope_plus{k}_lo", f"slope_plus{k}_hi",
                                                        f"ds_plus{k}_trend_lo", f"ds_plus{k}_trend_hi"))
CLAIM_COLUMNS = ("saturation_lo", "saturation_hi", "stop_paying_us", "stop_paying_lo", "stop_paying_hi",
                 "predict_us", "predict_ds", "predict_lo", "predict_hi", "predict_trend_lo", "predict_trend_hi",
                 "us_needed", "us_needed_lo", "us_needed_hi")
FITS_COLUMNS = ("us_task", "ds_task", "eval_protocol", "shots", "law", "frontier", "n_points", "n_fit", "n_support",
                *PARAM_COLUMNS, "saturation", "fit_err", "pred_err", "backtest_err", "flat_backtest_err",
                "flat_pred_err", "coverage", "holdout_threshold", "n_heldout", "headline", "trusted", "trust_reason",
                "warnings", "best_single", "best_us", "horizon_us", "flat", "member_quantile", "interval_rule", "discount", "members", "interval_residuals", "trend_residuals", "ds_test_size",
                *STEP_COLUMNS, "slope_best", "saturation_lo", "saturation_hi", "stop_paying_us", "stop_paying_lo",
                "stop_paying_hi", "stop_paying_supported", "predict_us", "predict_ds", "predict_lo", "predict_hi",
                "predict_trend_lo", "predict_trend_hi", "ds_target", "payoff_threshold", "level", "us_needed", "us_needed_lo", "us_needed_hi", "noise", "spearman",
                "spearman_p",
                "status", "message")

def join_warnings(warnings: Sequence[str]) -> str:
    """The ``warnings`` column: each ``label: detail`` once, joined by "; ", which readers split
    on (:func:`~meta_study.analysis.answers.flags`); a ";" inside a detail (a fit's message, "2
    point(s); eq1 needs 3") becomes "," so that it cannot read as a label: readers split on ";"
    alone, and a run id ``r1;chord: x`` in a ``repeated`` warning read as a ``chord`` warning."""
    return "; ".join(w.replace(";", ",") for w in warnings)

def fits_frame(groups: Sequence[Group], selections: Sequence[GroupSelection],
               ds_target: float | None = None, payoff_threshold: float = PAYOFF_THRESHOLD,
               level: float = SelectionOptions.level) -> pd.DataFrame:
    """The rows of ``fits.parquet`` (:data:`FITS_COLUMNS`) for groups and their selections.
    ``payoff_threshold`` (DS points per US point) is the one the stop-paying points were found
    with, ``level`` the one their intervals were made at (``SelectionOptions.level``): each row
    carries both, so that an answer read back from the table states them and
    :func:`~meta_study.analysis.predict_interval` reproduces the stored intervals by default."""
    if len(groups) != len(selections):   # zip dropped the groups past the shorter list, silently
        raise ValueError(f"fits_frame: {len(groups)} group(s) but {len(selections)} selection(s); one selection per group")
    rows = []
    for g, sel in zip(groups, selections):
        rows.append({**_headline_row(g, sel, ds_target), "payoff_threshold": float(payoff_threshold),
                     "level": float(level)})
        for c in sel.candidates:
            rows.append({**g.key_dict, "law": c.law, "frontier": c.frontier, "n_points": sel.n_points,
                         "n_fit": c.n_fit, "n_support": c.n_support,
                         **{p: float(c.fit.params.get(p, math.nan)) for p in PARAM_COLUMNS},
                         "saturation": c.fit.saturation, "fit_err": c.fit_err, "pred_err": c.pred_err,
                         "backtest_err": c.backtest_err, "flat_backtest_err": sel.flat_backtest_err,
                         "flat_pred_err": sel.flat_pred_err, "coverage": c.coverage,
                         "holdout_threshold": sel.holdout_threshold, "n_heldout": sel.n_heldout, "headline": False,
                         "trusted": False, "trust_reason": "", "warnings": join_warnings(c.warnings), "best_single": "",
                         "best_us": sel.headline.best_us, "horizon_us": sel.headline.horizon_us, "members": "",
                         "interval_residuals": residuals_json(c.residuals), "trend_residuals": "[]",
                         "interval_rule": INTERVAL_RULE,
                         "ds_test_size": sel.headline.test_size,
                         "stop_paying_supported": False,
                         "ds_target": math.nan if ds_target is None else float(ds_target),
                         "payoff_threshold": float(payoff_threshold), "level": float(level),
                         "status": c.fit.status, "message": c.fit.message})
    df = pd.DataFrame(rows, columns=list(FITS_COLUMNS))
    return df.astype({"shots": "Int64", "n_points": "int64", "n_fit": "int64", "n_support": "int64",
                      "n_heldout": "int64", "headline": bool, "trusted": bool, "stop_paying_supported": bool,
                      "warnings": str, "trust_reason": str, "members": str, "interval_residuals": str, "trend_residuals": str,
                      "interval_rule": str, "best_single": str})


def _headline_row(g: Group, sel: GroupSelection, ds_target: float | None) -> dict[str, Any]:
    h, cl = sel.headline, sel.claims
    single = sel.single
    bad = unusable_reason(sel.candidates)
    steps = {}
    for st in cl.steps or tuple(Step(points=k) for k in PLUS_POINTS):
        steps.update({f"ds_plus{st.points}": st.ds, f"ds_plus{st.points}_lo": st.lo, f"ds_plus{st.points}_hi": st.hi,
                      f"slope_plus{st.points}": st.slope, f"slope_plus{st.points}_lo": st.slope_lo,
                      f"slope_plus{st.points}_hi": st.slope_hi, f"ds_plus{st.points}_trend_lo": st.trend_lo,
                      f"ds_plus{st.points}_trend_hi": st.trend_hi})
    return {**g.key_dict, "law": ENSEMBLE, "frontier": ENSEMBLE, "n_points": sel.n_points, "n_fit": len(h.members),
            "n_support": max((c.n_support for c in sel.candidates if c.frontier == "vertices"), default=0),
            **{p: math.nan for p in PARAM_COLUMNS}, "saturation": h.saturation, "fit_err": sel.fit_err,
            "pred_err": sel.pred_err, "backtest_err": sel.backtest_err, "flat_backtest_err": sel.flat_backtest_err,
            "flat_pred_err": sel.flat_pred_err, "coverage": sel.coverage, "holdout_threshold": sel.holdout_threshold,
            "n_heldout": sel.n_heldout, "headline": True, "trusted": bool(sel.trusted),
            "trust_reason": sel.trust_reason, "warnings": join_warnings((*sel.warnings, *g.data_warnings(sel.holdout_threshold))),
            "best_single": f"{single.law}/{single.frontier}" if single is not None else "",
            **(h.to_row() if h.usable else {"best_us": h.best_us, "horizon_us": h.horizon_us, "members": "",
                                            "interval_residuals": "[]", "trend_residuals": "[]",
                                            "interval_rule": h.interval_rule,
                                            "ds_test_size": h.test_size}),
            **steps, "slope_best": cl.slope_best,
            **{col: float(getattr(cl, col)) for col in CLAIM_COLUMNS},
            "stop_paying_supported": bool(cl.stop_paying_supported),
            "ds_target": math.nan if ds_target is None else float(ds_target),
            "noise": sel.noise, "spearman": sel.spearman, "spearman_p": sel.spearman_p,
            "status": "ok" if h.usable else (bad.fit.status if bad else "degenerate"),
            "message": (f"{quantile_name(h.quantile)} of {len(h.members)} candidates" if h.usable
                        else (bad.fit.message if bad else _unusable_why(sel.trust_reason)))}


def _unusable_why(trust_reason: str) -> str:
    """Why a headline is unusable when every candidate was usable, from its ``trust_reason``
    ("no usable fit (DS accuracy 95 is outside [0, 1]: ...)"): the message said "no usable
    candidate" beside 30 usable candidates."""
    why = trust_reason.removeprefix("no usable fit (").removesuffix(")") if trust_reason.startswith(
        "no usable fit (") else trust_reason
    return why or "no usable candidate"


def headlines(fits: pd.DataFrame) -> pd.DataFrame:
    """The headline row of every group (one per group, in the table's order)."""
    return fits[fits["headline"].astype(bool)].reset_index(drop=True)


def options_text(o: FitOptions) -> str:
    split = (f"holdout above {o.holdout_above:g}" if o.holdout_above is not None
             else f"holdout q={o.holdout_quantile:g}" if o.holdout_quantile is not None else "no holdout")
    return (f"{split}, {len(o.selection.laws)} laws x {len(o.selection.frontiers)} frontiers, back-test cuts "
            f"{','.join(f'{c:g}' for c in o.selection.cuts)}, eq1 loss={o.loss}, alpha<={o.alpha_max:g}"
            + (", non-decreasing frontiers" if o.nondecreasing else ""))


#: points.parquet: every model of every fitted group, for the report's hover view (which model is
#: that outlier?). ``model_name`` is the store's (None where it has none). Accuracies are fractions.
POINTS_COLUMNS = ("us_task", "ds_task", "eval_protocol", "shots", "run_id", "model_name", "us_accuracy",
                  "ds_accuracy")


def points_table(groups: Sequence[Group]) -> pd.DataFrame:
    """One row per (group, run): the points the fits were made from."""
    def aligned(g: Group, values: Any) -> list[Any]:
        return list(values) if len(values) == len(g.us_accuracy) else [None] * len(g.us_accuracy)

    parts = [pd.DataFrame({**{c: [v] * len(g.us_accuracy) for c, v in g.key_dict.items()},
                           "run_id": aligned(g, g.run_ids), "model_name": aligned(g, g.model_names),
                           "us_accuracy": g.us_accuracy, "ds_accuracy": g.ds_accuracy}) for g in groups]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(POINTS_COLUMNS))
    return df[list(POINTS_COLUMNS)].astype({"shots": "Int64"})


def test_sizes(groups: Sequence[Group]) -> list[np.ndarray | None]:
    """Each group's known DS test-set sizes for :func:`fit_groups` (None: estimate them)."""
    return [g.ds_test_size if g.ds_test_size.size else None for g in groups]


def fit_table(groups: Sequence[Group], options: FitOptions = FitOptions(), *,
              progress: Progress | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The fits table of ``groups`` and, per group, what its figures draw (points, selection)."""
    selections = fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups], options, keys=[g.key for g in groups],
                            progress=progress, test_sizes=test_sizes(groups))
    df = fits_frame(groups, selections, options.selection.ds_target, options.selection.payoff_threshold,
                    options.selection.level)
    return df, [_panel(g, s, options) for g, s in zip(groups, selections)]


def sensitivity_table(groups: Sequence[Group], options: SensitivityOptions, *, address: str | None = None,
                      workers: int | None = None, use_ray: bool = True,
                      progress: Progress | None = None) -> pd.DataFrame:
    """The sensitivity rows of ``groups``; a group too small to fit keeps its rows, with the status."""
    if use_ray and groups:
        from .parallel import sensitivity_ray

        table = sensitivity_ray(groups, options, address=address, workers=workers, progress=progress)
    else:
        table = sensitivity(groups, options, progress=progress)
    return table.astype({"shots": "Int64"})


def bootstrap_table(groups: Sequence[Group], options: BootstrapOptions, *, address: str | None = None,
                    workers: int | None = None, use_ray: bool = True,
                    progress: Progress | None = None) -> pd.DataFrame:
    """The bootstrap rows of ``groups``; a group too small to fit keeps its rows, with the status."""
    if use_ray and groups:
        from .parallel import bootstrap_ray

        table = bootstrap_ray(groups, options, address=address, workers=workers, progress=progress)
    else:
        table = bootstrap(groups, options, progress=progress)
    return table.astype({"shots": "Int64"})


def correlations_tables(store: Any, selection: Selection = Selection(),
                        fits: pd.DataFrame | None = None, rows: pd.DataFrame | None = None,
                        options: FitOptions = FitOptions()) -> dict[str, pd.DataFrame]:
    """Tables F.1, F.2 (from ``fits``, computed with ``options`` when not given), F.20 and F.21
    of the selection; from ``rows`` (the selection's, as :meth:`Selection.snapshot` read them)
    when given, so that they are of the same store version as the fits. Fits computed here are
    of those same rows: a second read of the store could see a version an ingest committed since."""
    if rows is None:
        table, _ = store.snapshot(selection.filters(), columns=ROW_COLUMNS)
        rows = with_test_sizes(table)
    if fits is None:
        groups = groups_from_frame(rows, layer=selection.layer)
        fits = fits_frame(groups, fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups], options,
                                             keys=[g.key for g in groups], test_sizes=test_sizes(groups)),
                          options.selection.ds_target, options.selection.payoff_threshold, options.selection.level)
    rl = rows["representation_layer"]
    rows = rows[rl.isna()] if selection.layer is None else rows[rl == selection.layer]
    return correlation_tables(rows, fits)


def _panel(g: Group, sel: GroupSelection, options: FitOptions) -> dict[str, Any]:
    """What a group's figure draws. The hull vertices are the data of the paper's Eq. 1 fit: given
    only when that fit was made (``--laws`` / ``--frontiers`` without it: no fit used them)."""
    if sel.paper is None:
        return {"us": g.us_accuracy, "ds": g.ds_accuracy, "selection": sel, "paper": None, "title": g.label,
                "frontier_us": None, "frontier_ds": None, "slug": g.slug, "level": options.selection.level}
    vis = g.us_accuracy <= sel.holdout_threshold
    F = frontier_points("vertices", g.us_accuracy[vis], g.ds_accuracy[vis], nondecreasing=options.nondecreasing)
    return {"us": g.us_accuracy, "ds": g.ds_accuracy, "selection": sel, "paper": sel.paper, "title": g.label,
            "frontier_us": F.us, "frontier_ds": F.ds, "slug": g.slug, "level": options.selection.level}
