"""Analysis: frontiers, laws, back-tested selection, held-out prediction, sensitivity, bootstrap, correlations.

Pure numpy/scipy functions that return frozen result objects. Ray (``parallel``) and matplotlib
(``figures``) are imported only by the modules that need them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import numpy as np

from .frontiers import FRONTIERS, frontier_points
from .headline import ENSEMBLE, Headline, check_band, interval_around, parse_residuals, row_interval_rule, row_number
from .hull import hull_frontier, upper_hull
from .laws import LAWS, LawFit, get_law
from .powerlaw import PowerLawFit, fit_power_law, fit_power_laws


def _law(row: Mapping[str, Any]) -> str:
    """The row's ``law`` (a bare KeyError('law') for a row without one: a hand-built dict, a
    selection of columns)."""
    law = row.get("law") if hasattr(row, "get") else None
    if law is None or (isinstance(law, float) and law != law):
        raise ValueError("a fits.parquet row has no 'law' (the law's name, or 'ensemble' for a headline): "
                         "pass a whole row of fits.parquet")
    return str(law)


def _curve(row: Mapping[str, Any]) -> Any:
    if _law(row) == ENSEMBLE:
        return Headline.from_row(row)
    return get_law(_law(row)).from_row(row)


def _us(us_accuracy: Any) -> np.ndarray:
    """US accuracies as fractions, or a ValueError: 85 (a percent) or -0.2 gave a number (85
    predicted the saturation, 100% US), not an error. A missing value (None, ``pandas.NA``, as a
    nullable column holds it) is NaN and predicts NaN; ``pandas.NA`` raised a TypeError."""
    try:
        u = np.asarray(us_accuracy, dtype=float)
    except (TypeError, ValueError):
        try:   # pandas.NA -> NaN, as None already is; anything else that is not a number is refused
            obj = np.asarray(us_accuracy, dtype=object)
            u = np.array([math.nan if v is None or type(v).__name__ == "NAType" else float(v) for v in obj.flat],
                         dtype=float).reshape(obj.shape)
        except (TypeError, ValueError):
            raise ValueError(f"us_accuracy must be numbers (fractions in [0, 1]), got {repr(us_accuracy)[:80]}") from None
    bad = np.isfinite(u) & ((u < 0.0) | (u > 1.0)) | np.isinf(u)
    if np.any(bad):
        v = float(u[bad].flat[0]) if u.ndim else float(u)
        hint = f" (a percent? give fractions: {v / 100:g}, not {v:g})" if 1.0 < v <= 100.0 else ""
        raise ValueError(f"us_accuracy must be fractions in [0, 1], got {v:g}{hint}")
    return u


def predict_fit(row: Mapping[str, Any], us_accuracy: Any) -> np.ndarray:
    """DS accuracies (fractions) that a row of ``fits.parquet`` predicts at ``us_accuracy``.

    Args:
        row: a row of ``fits.parquet`` (a pandas Series or a dict): a headline row
            (``law == "ensemble"``, see :mod:`~meta_study.analysis.headline`) or a candidate's
            (``law``, the law's parameter columns and ``status``).
        us_accuracy: US accuracies (fractions), any shape.

    Returns:
        An array of the same shape, in [0, 1] (a candidate law's curve is clipped there: far from
        its data Eq. 1 on bins went below 0): NaN where the row's fit is unusable or
        ``us_accuracy`` is NaN (or None, ``pandas.NA``). For the headline and every frontier fit this is the DS accuracy
        of the best models at that US accuracy.

    Raises:
        ValueError: a US accuracy outside [0, 1] (e.g. 85 for 85%), or one that is not a number.
    """
    with np.errstate(invalid="ignore"):
        return np.clip(np.asarray(_curve(row).predict_accuracy(_us(us_accuracy)), dtype=float), 0.0, 1.0)


def predict_interval(row: Mapping[str, Any], us_accuracy: Any, level: float | None = None,
                     band: str = "prediction") -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` prediction interval ``(lo, hi)`` (DS accuracies, fractions) of a row of
    ``fits.parquet`` at ``us_accuracy``. ``level`` defaults to the row's own (its ``level``
    column: the level its stored intervals ``ds_plus*_lo/hi`` were made at; 0.9 for a row without
    one, as a table written before the column existed), so that the default reproduces them.

    The half-width comes from the row's back-test |residuals| (``interval_residuals``): their
    ``level`` quantile, flat out to the farthest back-test and growing in proportion to the
    distance (log US error) past it; on a headline row the upper end is raised to the highest
    member's prediction where that is higher (the headline leans low). The interval is clipped to
    [0, 1]. A row written before 2026-12-06 (no ``interval_rule``) keeps the symmetric interval it
    stated; see :mod:`~meta_study.analysis.headline`. NaN where the row has no back-test or no usable fit.

    ``band="trend"`` gives the band for the frontier's law at ``us_accuracy`` instead of for a
    model's measured accuracy there (the stored ``ds_plus*_trend_lo/hi``): the same half-width
    rule on the headline's back-test predictions scored against its own final curve
    (``trend_residuals``; :func:`~meta_study.analysis.headline.trend_around`). NaN on a
    candidate's row and on a headline row written before 2026-12-07, which have none.

    Raises:
        ValueError: ``level`` (given, or the row's) not a number in (0, 1), a US accuracy outside
            [0, 1], or a ``band`` other than "prediction" and "trend".
    """
    check_band(band)
    if level is None:   # the row's: a row made at level 0.5 disagreed with its own stored ends at 0.9
        from .answers import row_level

        level = row_level(row)
    # a number, then its range: "0.9" or pandas.NA raised a TypeError from the comparison
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1) (a number), got {level!r}")
    u = _us(us_accuracy)
    if _law(row) == ENSEMBLE:
        return Headline.from_row(row).interval(u, level, band)
    if band == "trend":     # a candidate's row: no trend residuals
        return np.full(u.shape, np.nan), np.full(u.shape, np.nan)
    return interval_around(predict_fit(row, u), u, parse_residuals(row.get("interval_residuals")),
                           row_number(row.get("best_us")), level, row_number(row.get("ds_test_size")),
                           row_interval_rule(row))


__all__ = ["FRONTIERS", "LAWS", "Headline", "LawFit", "PowerLawFit", "fit_power_law", "fit_power_laws",
           "frontier_points", "get_law", "hull_frontier", "predict_fit", "predict_interval", "upper_hull"]
