"""The static HTML report of a results directory (what ``meta-study report`` and refits write).

The page sits next to the tables and figures it shows (``DIR/index.html`` with ``figures/...``
linked relatively), so the directory can be copied, served or attached to MLflow as it is. It
needs no JavaScript and loads nothing from the network. Every value from the data (task names can
hold anything) is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from . import __version__
from .analysis.payoff import stop_paying_us
from .analysis.powerlaw import PowerLawFit

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.prov{color:#555;font-size:.85rem} table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left}
tr.bad td{color:#a33} img{max-width:100%;border:1px solid #eee;margin:.3rem 0} .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:.6rem}
.note{font-size:.85rem;color:#444;max-width:60rem}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "&ndash;"
    return "&ndash;" if not math.isfinite(f) else f"{f:.{digits}g}"


def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "&ndash;"
    return "never" if not math.isfinite(f) else f"{100 * f:.1f}%"


def _fit_of(row: Mapping[str, Any]) -> PowerLawFit:
    return PowerLawFit(k=float(row["k"]), alpha=float(row["alpha"]), e_ir=float(row["e_ir"]), sse=math.nan,
                       loss="lsq", loss_value=math.nan, n_points=int(row["n_fit"]), status=str(row["status"]),
                       message=str(row.get("message") or ""))


def summary_table(fits: pd.DataFrame, boot: pd.DataFrame | None, threshold: float) -> pd.DataFrame:
    """One row per group x frontier: parameters with CIs, errors and where scaling stops paying."""
    keys = ["us_task", "ds_task", "eval_protocol", "shots", "frontier"]
    t = fits.copy()
    t["stop_paying_us"] = [stop_paying_us(_fit_of(r), threshold) for r in t.to_dict("records")]
    if boot is not None and not boot.empty:
        b = boot.astype({"shots": "Int64"})
        wide = b.pivot_table(index=keys, columns="param", values=["lo", "hi"], aggfunc="first", dropna=False)
        wide.columns = [f"{p}_{side}" for side, p in wide.columns]
        t = t.astype({"shots": "Int64"}).merge(wide.reset_index(), on=keys, how="left")
    return t


def _fmt_ci(row: Mapping[str, Any], p: str, digits: int = 3) -> str:
    lo, hi = row.get(f"{p}_lo"), row.get(f"{p}_hi")
    ci = ""
    if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
        ci = f" <span class=prov>[{_num(lo, digits)}, {_num(hi, digits)}]</span>"
    return _num(row.get(p), digits) + ci


def _table_html(t: pd.DataFrame, threshold: float) -> str:
    head = ("<tr><th class=l>US task</th><th class=l>DS task</th><th class=l>protocol</th><th>shots</th>"
            "<th class=l>frontier</th><th>points</th><th>saturation (1&minus;e<sub>IR</sub>) [95% CI]</th>"
            "<th>&alpha; [CI]</th><th>k [CI]</th><th>fit err</th><th>pred err</th>"
            f"<th>scaling stops paying at US acc. (&lt;{threshold:g} DS pt per US pt)</th><th class=l>status</th></tr>")
    rows = []
    for r in t.to_dict("records"):
        bad = r["status"] not in ("ok", "at_bound")
        shots = "" if pd.isna(r["shots"]) else str(int(r["shots"]))
        status = _e(r["status"]) + (f": {_e(r['message'])}" if r.get("message") else "")
        rows.append(
            f"<tr class='{'bad' if bad else ''}'><td class=l>{_e(r['us_task'])}</td><td class=l>{_e(r['ds_task'])}</td>"
            f"<td class=l>{_e(r['eval_protocol'])}</td><td>{shots}</td><td class=l>{_e(r['frontier'])}</td>"
            f"<td>{int(r['n_fit'])}/{int(r['n_points'])}</td><td>{_fmt_ci(r, 'saturation')}</td>"
            f"<td>{_fmt_ci(r, 'alpha')}</td><td>{_fmt_ci(r, 'k')}</td>"
            f"<td>{_num(100 * float(r['fit_err']), 3)}</td><td>{_num(100 * float(r['pred_err']), 3)}</td>"
            f"<td>{_pct(r['stop_paying_us']) if not bad else '&ndash;'}</td><td class=l>{status}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _img(rel: str, alt: str) -> str:
    return f"<a href='{_e(rel)}'><img src='{_e(rel)}' alt='{_e(alt)}' loading='eager'></a>"


def render_report(results_dir: str | os.PathLike[str], *, title: str = "meta-study report",
                  provenance: Mapping[str, Any] | None = None, threshold: float = 0.1) -> str:
    """Write ``results_dir/index.html`` from the tables and figures in ``results_dir``.

    Reads ``fits.parquet`` (required), and when present ``bootstrap.parquet``,
    ``sensitivity_summary.parquet``, ``correlations/*.parquet`` and ``figures/``.

    Returns:
        The path of the page.
    """
    root = Path(results_dir)
    fits = pd.read_parquet(root / "fits.parquet")
    boot = pd.read_parquet(root / "bootstrap.parquet") if (root / "bootstrap.parquet").exists() else None
    table = summary_table(fits, boot, threshold)
    figs = root / "figures"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    prov = dict(provenance or {})
    prov.setdefault("generated", now)
    prov.setdefault("meta-study", __version__)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class=prov>" + " &middot; ".join(f"{_e(k)}: {_e(v)}" for k, v in prov.items())
             + "</p>"]
    n_groups = fits.groupby(["us_task", "ds_task", "eval_protocol", "shots"], dropna=False).ngroups
    bad = table[~table["status"].isin(["ok", "at_bound"])]
    parts.append(f"<p class=note>{n_groups} groups. The law <i>e</i><sub>DS</sub> = <i>k</i> "
                 "<i>e</i><sub>US</sub><sup>&alpha;</sup> + <i>e</i><sub>IR</sub> is fitted to the upper convex hull "
                 "of each group (the best DS accuracy any randomized combination of models reaches) and, for "
                 "comparison, to all points. Saturation is the DS accuracy the law predicts at 100% US accuracy. "
                 "Errors are in accuracy points; pred err is measured on the held-out models with the highest US "
                 "accuracy. Definitions: docs/analysis.md." + (f" <b>{len(bad)} fits could not be made</b> (rows in "
                 "red, with the reason)." if len(bad) else "") + "</p>")
    parts.append("<h2>Fits</h2>" + _table_html(table, threshold))
    if (figs / "fits_grid.png").exists():
        parts.append("<h2>DS vs US accuracy</h2>" + _img("figures/fits_grid.png", "fits grid"))
    group_pngs = sorted((figs / "groups").glob("*.png")) if (figs / "groups").exists() else []
    if group_pngs:
        parts.append("<h2>Per task</h2><div class=grid>" +
                     "".join(_img(f"figures/groups/{p.name}", p.stem) for p in group_pngs) + "</div>")
    if (figs / "sensitivity.png").exists():
        parts.append("<h2>Sample-size sensitivity</h2><p class=note>Fitting and prediction error of hull and "
                     "all-point fits on random subsamples of the models (mean &plusmn; sd over trials).</p>"
                     + _img("figures/sensitivity.png", "sensitivity"))
    if (figs / "params_vs_shots.png").exists():
        parts.append("<h2>Parameters vs shots</h2>" + _img("figures/params_vs_shots.png", "params vs shots"))
    heat = sorted(figs.glob("f2*.png")) if figs.exists() else []
    if heat:
        parts.append("<h2>Correlations</h2><div class=grid>" +
                     "".join(_img(f"figures/{p.name}", p.stem) for p in heat) + "</div>")
    tables = sorted(p.name for p in root.glob("*.parquet")) + sorted(
        f"correlations/{p.name}" for p in (root / "correlations").glob("*.parquet")) if root.exists() else []
    parts.append("<h2>Tables</h2><ul>" + "".join(f"<li><a href='{_e(t)}'>{_e(t)}</a></li>" for t in tables) + "</ul>")
    parts.append("</body></html>")
    out = root / "index.html"
    tmp = root / f".index.html.tmp-{os.getpid()}"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return str(out)
