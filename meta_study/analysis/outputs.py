"""Writing an analysis: tables (Parquet, and a CSV copy when small), figures with their
provenance footer. Every file is written to a temporary name and renamed into place, so an
interrupted run never leaves a half-written table. :class:`~meta_study.analysis.results.ResultsDir`
calls these; so do the ``analysis/*.py`` scripts for their extra tables.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..dirs import missing_dirs, remove_made_dirs
from .groups import cut_name, stable_hash
from .sensitivity import rank_frontiers, summarize_sensitivity

#: CSV copies are written for tables up to this many rows.
CSV_MAX_ROWS = 200_000


@dataclass
class Outputs:
    """Paths written by a run, for the caller to print or attach to MLflow."""

    tables: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def removed_if_failed(out_dir: str | None) -> Iterator[None]:
    """Around a command that writes to ``--out`` ``out_dir``: if the body fails (raises, or exits
    with a non-zero code), remove the directory again when this command created it and nothing
    was written into it, with the empty folders the body made inside it and the parents that had
    to be created for it (``--out new/results`` made ``new`` too, and a failed command left it).
    A directory that existed before is never removed, nor one holding a file. ``None``: no
    ``--out``, nothing to do.

    The one rule of the CLI's commands, the refit and the ``analysis/*.py`` scripts: each removed
    the ``--out`` a failed command had created its own way (one only after some errors, none of
    them the parents)."""
    made = missing_dirs(out_dir) if out_dir else []
    try:
        yield
    except SystemExit as e:
        if e.code not in (None, 0):
            remove_made_dirs(made)
        raise
    except BaseException:
        remove_made_dirs(made)
        raise


def write_table(df: pd.DataFrame, stem: str, out: Outputs, *, csv: bool | None = None) -> None:
    """``stem.parquet`` (+ ``stem.csv`` when small), each written atomically.

    The old ``stem.csv`` is removed first, whether or not a new one is written: a table that grew
    past CSV_MAX_ROWS kept its stale copy, which the report linked to; and an interruption between
    the two files now leaves the table without a copy (the report links the Parquet file), never
    beside an old one."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    try:
        os.remove(f"{stem}.csv")
    except FileNotFoundError:
        pass
    _write_then_rename(lambda tmp: pq.write_table(table, tmp), f"{stem}.parquet")
    out.tables.append(f"{stem}.parquet")
    if csv if csv is not None else len(df) <= CSV_MAX_ROWS:
        _write_then_rename(lambda tmp: df.to_csv(tmp, index=False), f"{stem}.csv")
        out.tables.append(f"{stem}.csv")


def _write_then_rename(write: Any, path: str) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it into place; a write that
    fails (a full disk, an interruption) removes its temporary file: it stayed, half a table the
    size of the whole, in the results directory and kept the disk full."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            raise named_os_error(e, path) from e
        raise


def named_os_error(e: OSError, path: str | os.PathLike[str]) -> OSError:
    """``e`` naming ``path``: pyarrow's and a file's write errors name no file ("[Errno 28] Error
    writing bytes to file. Detail: [errno 28] No space left on device"), and the one line the CLI
    prints of a full disk said not which disk, nor which table was left unwritten."""
    if e.errno is None:
        return OSError(f"{os.fspath(path)}: {e}")
    return OSError(e.errno, e.strerror or str(e), os.fspath(path))


def footer(store: Any, what: str, version: int | None = None) -> str:
    """The provenance line every figure carries: ``version`` is the store version the figures
    are of (an analysis's ``provenance["store version"]``); read from the store without it (an
    ingest since could make that a newer one)."""
    if version is None:
        try:
            version = store.version
        except Exception:  # noqa: BLE001 - a footer must never fail a run
            version = None
    version = "?" if version is None else version
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"data: {store.uri} (store v{version}) · {what} · meta-study {__version__} · {now}"


#: Panels in the fits grid: beyond, the first GRID_MAX (two a row: 94 inches tall at most).
GRID_MAX = 30


def write_fits(df: pd.DataFrame, panels: Sequence[dict[str, Any]], out_dir: str, *, out: Outputs | None = None,
               max_group_figures: int = 60, footer_text: str | None = None) -> Outputs:
    """``fits.parquet`` (+ .csv) and, when ``panels`` are given, the grid, per-group and
    parameters-vs-shots figures; without them, an earlier table's such figures are removed."""
    out = out or Outputs()
    write_table(df, os.path.join(out_dir, "fits"), out)
    if panels:
        from . import figures as fig

        drawn = [{k: v for k, v in p.items() if k != "slug"} for p in panels]   # the slug names files only
        # the paper's Eq. 1 is drawn only where it was fitted (--laws/--frontiers may leave it out)
        has_paper = any(p.get("paper") is not None for p in drawn)
        title = "DS vs US accuracy: headline" + (" and Eq. 1 on the hull" if has_paper else "")
        if len(drawn) > GRID_MAX:   # 487 groups made a 1,500-inch-tall grid (minutes to encode, unreadable)
            # which groups have a figure of their own: "each group: its own figure" was said of 487
            # groups of which the first 60 (--max-group-figures) had one
            own = min(len(drawn), max_group_figures)
            where = ("each group: its own figure, and fits.csv" if own >= len(drawn) else
                     f"the first {own}: a figure of their own; every group: fits.csv" if own else "every group: fits.csv")
            title += f"\n(the first {GRID_MAX} of {len(drawn)} groups; {where})"
        out.figures += fig.plot_fit_grid(drawn[:GRID_MAX], os.path.join(out_dir, "figures", "fits_grid"),
                                         footer=footer_text, title=title)
        mine: list[str] = []
        for p, d in list(zip(panels, drawn))[:max_group_figures]:
            mine += fig.plot_group(d, os.path.join(out_dir, "figures", "groups", p["slug"]), footer=footer_text)
        eq1 = df[(df["law"] == "eq1")]
        if several_shot_settings(eq1):
            mine += fig.plot_params_vs_shots(eq1, os.path.join(out_dir, "figures", "params_vs_shots"),
                                             footer=footer_text)
        for pattern in ("groups/*", "params_vs_shots"):
            remove_stale_figures(out_dir, pattern + ".*", mine)
        out.figures += mine
    else:
        # no figures drawn (`fit --no-figures`): the grid and group figures of an earlier fits
        # table (another store version) stayed beside this one, as if they were its own
        for pattern in ("fits_grid", "groups/*", "params_vs_shots"):
            remove_stale_figures(out_dir, pattern + ".*", ())
    return out


def several_shot_settings(fits: pd.DataFrame) -> bool:
    """Whether a line of the parameters-vs-shots figure (F.4/F.5; one per US task, protocol and DS
    task) has several shot settings: only then is the figure drawn. A single one (0-shot language
    model tasks) drew empty log-scaled panels and a legend of every task; counted per task alone,
    fewshot 5-shot beside linear 10-shot of one task drew two lone dots (``tables_f1_f2.py`` did,
    where ``fig1_grid.py`` drew nothing)."""
    shots = fits.dropna(subset=["shots"]).groupby(["us_task", "eval_protocol", "ds_task"],
                                                  dropna=False)["shots"].nunique()
    return bool((shots > 1).any())


def _any_value(matrix: pd.DataFrame) -> bool:
    """Whether a heatmap's matrix holds a value to colour: an empty one (one DS task; a single
    model, whose correlations are all undefined) drew an empty axis and a matplotlib warning."""
    import numpy as np

    return bool(matrix.size) and bool(np.isfinite(matrix.to_numpy(dtype=float)).any())


def _any_pair(matrix: pd.DataFrame) -> bool:
    """Whether a task-by-task matrix holds a value for two different tasks: the diagonal (a task
    with itself, always 1) is no data, and one DS task drew a 1x1 heatmap of it."""
    import numpy as np

    if len(set(matrix.index) | set(matrix.columns)) < 2:
        return False
    values = matrix.to_numpy(dtype=float)
    off = np.array([[a != b for b in matrix.columns] for a in matrix.index], bool).reshape(values.shape)
    return bool((np.isfinite(values) & off).any())


def remove_stale_figures(out_dir: str, pattern: str, written: Sequence[str]) -> None:
    """Remove the figures (PNG and SVG) under ``out_dir/figures`` matching ``pattern`` (a glob of
    stems, e.g. ``groups/*`` or ``f20_*``) that this write did not draw (``written``: its paths).

    A figure of data that has since left the store (a group or a slice whose runs were deleted,
    a second shot setting gone, groups too small for Fig. 3) stayed beside the new tables, and
    the report, which shows what ``figures/`` holds, showed it as one of its own."""
    import glob

    keep = {os.path.abspath(p) for p in written}
    for path in glob.glob(os.path.join(glob.escape(os.path.join(out_dir, "figures")), pattern)):
        if path.endswith((".png", ".svg")) and os.path.abspath(path) not in keep:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def write_sensitivity(table: pd.DataFrame, out_dir: str, *, figures: bool = True, footer_text: str | None = None,
                      out: Outputs | None = None) -> Outputs:
    """``sensitivity.parquet``, its per-size summary, the frontier ranking and the Fig. 3 figure."""
    out = out or Outputs()
    write_table(table, os.path.join(out_dir, "sensitivity"), out)
    summ = summarize_sensitivity(table)
    write_table(summ, os.path.join(out_dir, "sensitivity_summary"), out)
    write_table(rank_frontiers(summ), os.path.join(out_dir, "sensitivity_frontiers"), out)
    if figures:
        mine: list[str] = []
        # a summary of groups too small to fit is all NaN: it drew blank panels under a full legend
        if any(c in summ and summ[c].notna().any() for c in ("fit_err_mean", "pred_err_mean")):
            from . import figures as fig

            mine = fig.plot_sensitivity(summ, os.path.join(out_dir, "figures", "sensitivity"), footer=footer_text)
        remove_stale_figures(out_dir, "sensitivity.*", mine)
        out.figures += mine
    else:   # an earlier table's Fig. 3 would stand beside this one (see write_fits)
        remove_stale_figures(out_dir, "sensitivity.*", ())
    return out


def write_correlations(tables: dict[str, pd.DataFrame], out_dir: str, *, figures: bool = True,
                       out: Outputs | None = None, footer_text: str | None = None) -> Outputs:
    """``correlations/*.parquet`` and the F.20 / F.21 heatmaps."""
    out = out or Outputs()
    for name, t in tables.items():
        write_table(t, os.path.join(out_dir, "correlations", name), out)
    if figures:
        from . import figures as fig

        foot = footer_text
        mine: list[str] = []
        f20 = tables["f20_ds_task_spearman"]
        for key, g in f20.groupby(["us_task", "eval_protocol", "shots"], dropna=False, sort=True):
            m = g.pivot(index="ds_task_a", columns="ds_task_b", values="spearman")
            # shots as an integer ("5", never "5.0": a float column after the pivot tables' NaN)
            key = (key[0], key[1], None if pd.isna(key[2]) else int(key[2]))
            shots = "" if key[2] is None else f", {key[2]}-shot"
            stem = os.path.join(out_dir, "figures", f"f20_{_figure_name(key)}")
            if not _any_pair(m):    # one DS task, or one model: no pair has a rank correlation
                continue
            mine += fig.plot_heatmap(m, stem, title=f"DS-task rank correlation ({key[0]}, {key[1]}{shots})",
                                     footer=foot)
        f21 = tables["f21_us_ds_spearman"]
        if not f21.empty:
            labelled = f21.assign(slice=f21["us_task"] + "/" + f21["eval_protocol"].astype(str)
                                  + f21["shots"].map(lambda s: "" if pd.isna(s) else f"/{int(s)}shot"))
            # rows in (US task, protocol, shots as numbers) order: as text, 10 would sort before 5
            order = labelled.sort_values(["us_task", "eval_protocol", "shots"], na_position="first")["slice"].unique()
            # dropna=False: a DS task (or a slice) without a single ρ (one accuracy for every model,
            # too few models) was left out of the heatmap, not drawn grey as the figure says
            m = labelled.pivot_table(index="slice", columns="ds_task", values="spearman", dropna=False).reindex(order)
            if _any_value(m):
                mine += fig.plot_heatmap(m, os.path.join(out_dir, "figures", "f21_us_ds"),
                                         title="US-DS rank correlation", footer=foot)
        for pattern in ("f20_*", "f21_us_ds.*"):
            remove_stale_figures(out_dir, pattern, mine)
        out.figures += mine
    else:   # an earlier table's heatmaps would stand beside these (see write_fits)
        for pattern in ("f20_*", "f21_us_ds.*"):
            remove_stale_figures(out_dir, pattern, ())
    return out


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _figure_name(key: Sequence[Any]) -> str:
    """A slice's figure name: :func:`_safe` of its key, as before where that spells the key
    exactly; where it does not (a character replaced, an ``_`` that reads as the separator, cut at
    80 characters or 160 bytes), with ``group_slug``'s hash suffix. US tasks ``imagenet 1k`` and
    ``imagenet-1k`` both wrote ``f20_imagenet-1k_zeroshot``, and one heatmap was lost."""
    parts = [str(v) for v in key if not _missing(v)]
    joined = "_".join(parts)
    exact = cut_name(joined) == joined and all(p and all(ch.isalnum() or ch in "-." for ch in p) for p in parts)
    return _safe(key) if exact else f"{_safe(key)}-{stable_hash(key) % 10**6:06d}"


def _safe(key: Sequence[Any]) -> str:
    """A readable file-name part for ``key``; keys that differ only in punctuation, or after 80
    characters or 160 bytes (:func:`cut_name`), share it (:func:`_figure_name` tells them apart)."""
    raw = "_".join("" if _missing(v) else str(v) for v in key)
    return cut_name("".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in raw).strip("_"))
