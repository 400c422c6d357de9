"""Store in, tables and figures out: what ``meta-study fit / sensitivity / correlations`` run.

Output tables are Parquet (the record) plus a CSV copy when small; every file is written to a
temporary name and renamed into place, so an interrupted run never leaves a half-written table.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from .correlations import correlation_tables
from .groups import Group, load_groups
from .frontiers import frontier_points
from .fitting import FitOptions, fit_groups
from .laws import PARAM_COLUMNS
from .headline import ENSEMBLE, residuals_json
from .selection import PLUS_POINTS, GroupSelection, Step, unusable_reason
from .bootstrap import BootstrapOptions, bootstrap
from .sensitivity import SensitivityOptions, rank_frontiers, sensitivity, summarize_sensitivity

Progress = Callable[[str, int, int | None], None]

#: fits.parquet: per group, its headline row (``law == frontier == "ensemble"``, ``headline`` true)
#: and one row per law x frontier candidate. Accuracies and errors are fractions; slopes are DS
#: points per US point. The answer (``ds_plus*``, claims) is on the headline row only; every row
#: carries ``best_us``, ``horizon_us`` and its own ``interval_residuals``, so that
#: :func:`meta_study.analysis.predict_interval` works on any row.
STEP_COLUMNS = tuple(c for k in PLUS_POINTS for c in (f"ds_plus{k}", f"ds_plus{k}_lo", f"ds_plus{k}_hi",
                                                        f"slope_plus{k}"))
CLAIM_COLUMNS = ("saturation_lo", "saturation_hi", "stop_paying_us", "stop_paying_lo", "stop_paying_hi",
                 "predict_us", "predict_ds", "predict_lo", "predict_hi", "us_needed", "us_needed_lo", "us_needed_hi")
FITS_COLUMNS = ("us_task", "ds_task", "eval_protocol", "shots", "law", "frontier", "n_points", "n_fit", "n_support",
                *PARAM_COLUMNS, "saturation", "fit_err", "pred_err", "backtest_err", "flat_backtest_err",
                "flat_pred_err", "coverage", "holdout_threshold", "n_heldout", "headline", "trusted", "trust_reason",
                "warnings", "best_single", "best_us", "horizon_us", "flat", "discount", "members", "interval_residuals", "ds_test_size",
                *STEP_COLUMNS, "slope_best", "saturation_lo", "saturation_hi", "stop_paying_us", "stop_paying_lo",
                "stop_paying_hi", "stop_paying_supported", "predict_us", "predict_ds", "predict_lo", "predict_hi",
                "ds_target", "us_needed", "us_needed_lo", "us_needed_hi", "noise", "spearman", "spearman_p",
                "status", "message")
#: CSV copies are written for tables up to this many rows.
CSV_MAX_ROWS = 200_000


@dataclass(frozen=True)
class Selection:
    """Which groups to analyse (empty = all) and which representation layer (None = pre-logits)."""

    us_task: tuple[str, ...] = ()
    ds_task: tuple[str, ...] = ()
    eval_protocol: tuple[str, ...] = ()
    shots: tuple[int, ...] = ()
    layer: int | None = None

    def load(self, store: Any) -> list[Group]:
        return load_groups(store, us_task=self.us_task, ds_task=self.ds_task, eval_protocol=self.eval_protocol,
                           shots=self.shots, layer=self.layer)


@dataclass
class Outputs:
    """Paths written by a run, for the caller to print or attach to MLflow."""

    tables: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def write_table(df: pd.DataFrame, stem: str, out: Outputs, *, csv: bool | None = None) -> None:
    """``stem.parquet`` (+ ``stem.csv`` when small), each written atomically."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    tmp = f"{stem}.parquet.tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(table, tmp)
    os.replace(tmp, f"{stem}.parquet")
    out.tables.append(f"{stem}.parquet")
    if csv if csv is not None else len(df) <= CSV_MAX_ROWS:
        tmp = f"{stem}.csv.tmp-{uuid.uuid4().hex[:8]}"
        df.to_csv(tmp, index=False)
        os.replace(tmp, f"{stem}.csv")
        out.tables.append(f"{stem}.csv")


def footer(store: Any, what: str) -> str:
    """The provenance line every figure carries."""
    try:
        version = store.version
    except Exception:  # noqa: BLE001 - a footer must never fail a run
        version = "?"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"data: {store.uri} (store v{version}) · {what} · meta-study {__version__} · {now}"


def fits_frame(groups: Sequence[Group], selections: Sequence[GroupSelection],
               ds_target: float | None = None) -> pd.DataFrame:
    """The rows of ``fits.parquet`` (:data:`FITS_COLUMNS`) for groups and their selections."""
    rows = []
    for g, sel in zip(groups, selections):
        rows.append(_headline_row(g, sel, ds_target))
        for c in sel.candidates:
            rows.append({**g.key_dict, "law": c.law, "frontier": c.frontier, "n_points": sel.n_points,
                         "n_fit": c.n_fit, "n_support": c.n_support,
                         **{p: float(c.fit.params.get(p, math.nan)) for p in PARAM_COLUMNS},
                         "saturation": c.fit.saturation, "fit_err": c.fit_err, "pred_err": c.pred_err,
                         "backtest_err": c.backtest_err, "flat_backtest_err": sel.flat_backtest_err,
                         "flat_pred_err": sel.flat_pred_err, "coverage": c.coverage,
                         "holdout_threshold": sel.holdout_threshold, "n_heldout": sel.n_heldout, "headline": False,
                         "trusted": False, "trust_reason": "", "warnings": "; ".join(c.warnings), "best_single": "",
                         "best_us": sel.headline.best_us, "horizon_us": sel.headline.horizon_us, "members": "",
                         "interval_residuals": residuals_json(c.residuals), "ds_test_size": sel.headline.test_size,
                         "stop_paying_supported": False,
                         "ds_target": math.nan if ds_target is None else float(ds_target),
                         "status": c.fit.status, "message": c.fit.message})
    df = pd.DataFrame(rows, columns=list(FITS_COLUMNS))
    return df.astype({"shots": "Int64", "n_points": "int64", "n_fit": "int64", "n_support": "int64",
                      "n_heldout": "int64", "headline": bool, "trusted": bool, "stop_paying_supported": bool,
                      "warnings": str, "trust_reason": str, "members": str, "interval_residuals": str,
                      "best_single": str})


def _headline_row(g: Group, sel: GroupSelection, ds_target: float | None) -> dict[str, Any]:
    h, cl = sel.headline, sel.claims
    single = sel.single
    bad = unusable_reason(sel.candidates)
    steps = {}
    for st in cl.steps or tuple(Step(points=k) for k in PLUS_POINTS):
        steps.update({f"ds_plus{st.points}": st.ds, f"ds_plus{st.points}_lo": st.lo, f"ds_plus{st.points}_hi": st.hi,
                      f"slope_plus{st.points}": st.slope})
    return {**g.key_dict, "law": ENSEMBLE, "frontier": ENSEMBLE, "n_points": sel.n_points, "n_fit": len(h.members),
            "n_support": max((c.n_support for c in sel.candidates if c.frontier == "vertices"), default=0),
            **{p: math.nan for p in PARAM_COLUMNS}, "saturation": h.saturation, "fit_err": sel.fit_err,
            "pred_err": sel.pred_err, "backtest_err": sel.backtest_err, "flat_backtest_err": sel.flat_backtest_err,
            "flat_pred_err": sel.flat_pred_err, "coverage": sel.coverage, "holdout_threshold": sel.holdout_threshold,
            "n_heldout": sel.n_heldout, "headline": True, "trusted": bool(sel.trusted),
            "trust_reason": sel.trust_reason, "warnings": "; ".join(sel.warnings),
            "best_single": f"{single.law}/{single.frontier}" if single is not None else "",
            **(h.to_row() if h.usable else {"best_us": h.best_us, "horizon_us": h.horizon_us, "members": "",
                                            "interval_residuals": "[]", "ds_test_size": h.test_size}),
            **steps, "slope_best": cl.slope_best,
            **{col: float(getattr(cl, col)) for col in CLAIM_COLUMNS},
            "stop_paying_supported": bool(cl.stop_paying_supported),
            "ds_target": math.nan if ds_target is None else float(ds_target),
            "noise": sel.noise, "spearman": sel.spearman, "spearman_p": sel.spearman_p,
            "status": "ok" if h.usable else (bad.fit.status if bad else "degenerate"),
            "message": (f"median of {len(h.members)} candidates, discount {h.discount:.2f}" if h.usable
                        else (bad.fit.message if bad else "no usable candidate"))}


def headlines(fits: pd.DataFrame) -> pd.DataFrame:
    """The headline row of every group (one per group, in the table's order)."""
    return fits[fits["headline"].astype(bool)].reset_index(drop=True)


def options_text(o: FitOptions) -> str:
    split = (f"holdout above {o.holdout_above:g}" if o.holdout_above is not None
             else f"holdout q={o.holdout_quantile:g}" if o.holdout_quantile is not None else "no holdout")
    return (f"{split}, {len(o.selection.laws)} laws x {len(o.selection.frontiers)} frontiers, back-test cuts "
            f"{','.join(f'{c:g}' for c in o.selection.cuts)}, eq1 loss={o.loss}, alpha<={o.alpha_max:g}"
            + (", non-decreasing frontiers" if o.nondecreasing else ""))


def run_fit(store: Any, out_dir: str, *, selection: Selection = Selection(), options: FitOptions = FitOptions(),
            figures: bool = True, max_group_figures: int = 60) -> tuple[pd.DataFrame, Outputs]:
    """Fit every law to every frontier of each selected group, back-test them and pick the headline;
    write ``fits.parquet`` and figures.

    Returns:
        The fits table (one row per group x frontier) and the paths written.
    """
    return fit_to_dir(selection.load(store), out_dir, options=options, figures=figures,
                      max_group_figures=max_group_figures, footer_text=footer(store, options_text(options)))


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


def fit_table(groups: Sequence[Group], options: FitOptions = FitOptions(), *,
              progress: Progress | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The fits table of ``groups`` and, per group, what its figures draw (points, selection)."""
    selections = fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups], options, keys=[g.key for g in groups],
                            progress=progress)
    df = fits_frame(groups, selections, options.selection.ds_target)
    return df, [_panel(g, s, options) for g, s in zip(groups, selections)]


def write_fits(df: pd.DataFrame, panels: Sequence[dict[str, Any]], out_dir: str, *, out: Outputs | None = None,
               max_group_figures: int = 60, footer_text: str | None = None) -> Outputs:
    """``fits.parquet`` (+ .csv) and, when ``panels`` are given, the grid, per-group and
    parameters-vs-shots figures."""
    out = out or Outputs()
    write_table(df, os.path.join(out_dir, "fits"), out)
    if panels:
        from . import figures as fig

        drawn = [{k: v for k, v in p.items() if k != "slug"} for p in panels]   # the slug names files only
        out.figures += fig.plot_fit_grid(drawn, os.path.join(out_dir, "figures", "fits_grid"),
                                         footer=footer_text, title="DS vs US accuracy: headline and Eq. 1 on the hull")
        for p, d in list(zip(panels, drawn))[:max_group_figures]:
            out.figures += fig.plot_group(d, os.path.join(out_dir, "figures", "groups", p["slug"]), footer=footer_text)
        eq1 = df[(df["law"] == "eq1")]
        if eq1["shots"].notna().any():
            out.figures += fig.plot_params_vs_shots(eq1, os.path.join(out_dir, "figures", "params_vs_shots"),
                                                    footer=footer_text)
    return out


def fit_to_dir(groups: Sequence[Group], out_dir: str, *, options: FitOptions = FitOptions(), figures: bool = True,
               max_group_figures: int = 60, footer_text: str | None = None) -> tuple[pd.DataFrame, Outputs]:
    """:func:`run_fit` on given groups."""
    df, panels = fit_table(groups, options)
    out = write_fits(df, panels if figures and groups else (), out_dir, max_group_figures=max_group_figures,
                     footer_text=footer_text)
    return df, out


def _panel(g: Group, sel: GroupSelection, options: FitOptions) -> dict[str, Any]:
    vis = g.us_accuracy <= sel.holdout_threshold
    F = frontier_points("vertices", g.us_accuracy[vis], g.ds_accuracy[vis], nondecreasing=options.nondecreasing)
    return {"us": g.us_accuracy, "ds": g.ds_accuracy, "selection": sel, "paper": sel.paper, "title": g.label,
            "frontier_us": F.us, "frontier_ds": F.ds, "slug": g.slug}


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


def write_sensitivity(table: pd.DataFrame, out_dir: str, *, figures: bool = True, footer_text: str | None = None,
                      out: Outputs | None = None) -> Outputs:
    """``sensitivity.parquet``, its per-size summary, the frontier ranking and the Fig. 3 figure."""
    out = out or Outputs()
    write_table(table, os.path.join(out_dir, "sensitivity"), out)
    summ = summarize_sensitivity(table)
    write_table(summ, os.path.join(out_dir, "sensitivity_summary"), out)
    write_table(rank_frontiers(summ), os.path.join(out_dir, "sensitivity_frontiers"), out)
    if figures and not summ.empty:
        from . import figures as fig

        out.figures += fig.plot_sensitivity(summ, os.path.join(out_dir, "figures", "sensitivity"), footer=footer_text)
    return out


def run_sensitivity(store: Any, out_dir: str, *, selection: Selection = Selection(),
                    options: SensitivityOptions = SensitivityOptions(), address: str | None = None,
                    workers: int | None = None, use_ray: bool = True, progress: Progress | None = None,
                    figures: bool = True) -> tuple[pd.DataFrame, Outputs]:
    """Sample-size sensitivity of every selected group; writes ``sensitivity.parquet``, its
    per-size summary and the Fig. 3 figure."""
    groups = selection.load(store)
    table = sensitivity_table(groups, options, address=address, workers=workers, use_ray=use_ray,
                              progress=progress)
    what = (f"{table.groupby(list(table.columns[:4]), dropna=False).ngroups if len(table) else 0} groups, "
            f"{options.trials} trials, {'with' if options.replace else 'without'} replacement, seed {options.seed}, "
            + options_text(options.fit))
    return table, write_sensitivity(table, out_dir, figures=figures, footer_text=footer(store, what))


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
                        fits: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Tables F.1, F.2 (from ``fits``, computed when not given), F.20 and F.21 of the selection."""
    filters: dict[str, Any] = {}
    for col, vals in (("us_task", selection.us_task), ("ds_task", selection.ds_task),
                      ("eval_protocol", selection.eval_protocol), ("shots", selection.shots)):
        if vals:
            filters[col] = list(vals)
    rows = store.to_pandas(filters, columns=["source", "run_id", "us_task", "ds_task", "eval_protocol", "shots",
                                             "representation_layer", "us_accuracy", "ds_accuracy"])
    rl = rows["representation_layer"]
    rows = rows[rl.isna()] if selection.layer is None else rows[rl == selection.layer]
    if fits is None:
        groups = selection.load(store)
        fits = fits_frame(groups, fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups], keys=[g.key for g in groups]))
    return correlation_tables(rows, fits)


def write_correlations(tables: dict[str, pd.DataFrame], out_dir: str, *, figures: bool = True,
                       out: Outputs | None = None, footer_text: str | None = None) -> Outputs:
    """``correlations/*.parquet`` and the F.20 / F.21 heatmaps."""
    out = out or Outputs()
    for name, t in tables.items():
        write_table(t, os.path.join(out_dir, "correlations", name), out)
    if figures:
        from . import figures as fig

        foot = footer_text
        f20 = tables["f20_ds_task_spearman"]
        for key, g in f20.groupby(["us_task", "eval_protocol", "shots"], dropna=False, sort=True):
            m = g.pivot(index="ds_task_a", columns="ds_task_b", values="spearman")
            # shots as an integer ("5", never "5.0": a float column after the pivot tables' NaN)
            key = (key[0], key[1], None if pd.isna(key[2]) else int(key[2]))
            shots = "" if key[2] is None else f", {key[2]}-shot"
            stem = os.path.join(out_dir, "figures", f"f20_{_safe(key)}")
            out.figures += fig.plot_heatmap(m, stem, title=f"DS-task rank correlation ({key[0]}, {key[1]}{shots})",
                                            footer=foot)
        f21 = tables["f21_us_ds_spearman"]
        if not f21.empty:
            labelled = f21.assign(slice=f21["us_task"] + "/" + f21["eval_protocol"].astype(str)
                                  + f21["shots"].map(lambda s: "" if pd.isna(s) else f"/{int(s)}shot"))
            # rows in (US task, protocol, shots as numbers) order: as text, 10 would sort before 5
            order = labelled.sort_values(["us_task", "eval_protocol", "shots"], na_position="first")["slice"].unique()
            m = labelled.pivot_table(index="slice", columns="ds_task", values="spearman").reindex(order)
            out.figures += fig.plot_heatmap(m, os.path.join(out_dir, "figures", "f21_us_ds"),
                                            title="US-DS rank correlation", footer=foot)
    return out


def run_correlations(store: Any, out_dir: str, *, selection: Selection = Selection(),
                     fits: pd.DataFrame | None = None, figures: bool = True) -> tuple[dict[str, pd.DataFrame], Outputs]:
    """Tables F.1, F.2 (when fits with shots exist), F.20 and F.21, and their heatmaps."""
    tables = correlations_tables(store, selection, fits)
    out = write_correlations(tables, out_dir, figures=figures,
                             footer_text=footer(store, "Spearman rank correlation across models"))
    return tables, out


def _safe(key: Sequence[Any]) -> str:
    raw = "_".join("" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v) for v in key)
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in raw).strip("_")[:80]

