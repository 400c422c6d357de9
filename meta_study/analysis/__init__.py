"""Analysis: frontiers, laws, back-tested selection, held-out prediction, sensitivity, bootstrap, correlations.

Pure numpy/scipy functions that return frozen result objects. Ray (``parallel``) and matplotlib
(``figures``) are imported only by the modules that need them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .frontiers import FRONTIERS, frontier_points
from .headline import ENSEMBLE, Headline, interval_around, parse_residuals
from .hull import hull_frontier, upper_hull
from .laws import LAWS, LawFit, get_law
from .powerlaw import PowerLawFit, fit_power_law, fit_power_laws


def _curve(row: Mapping[str, Any]) -> Any:
    if str(row["law"]) == ENSEMBLE:
        return Headline.from_row(row)
    return get_law(str(row["law"])).from_row(row)


def predict_fit(row: Mapping[str, Any], us_accuracy: Any) -> np.ndarray:
    """DS accuracies (fractions) that a row of ``fits.parquet`` predicts at ``us_accuracy``.

    Args:
        row: a row of ``fits.parquet`` (a pandas Series or a dict): a headline row
            (``law == "ensemble"``, see :mod:`~meta_study.analysis.headline`) or a candidate's
            (``law``, the law's parameter columns and ``status``).
        us_accuracy: US accuracies (fractions), any shape.

    Returns:
        An array of the same shape: NaN where the row's fit is unusable. For the headline and
        every frontier fit this is the DS accuracy of the best models at that US accuracy.
    """
    return np.asarray(_curve(row).predict_accuracy(np.asarray(us_accuracy, dtype=float)), dtype=float)


def predict_interval(row: Mapping[str, Any], us_accuracy: Any, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` prediction interval ``(lo, hi)`` (DS accuracies, fractions) of a row of
    ``fits.parquet`` at ``us_accuracy``.

    The half-width is the split-conformal ``level`` quantile of the row's back-test |residuals|
    (``interval_scores``; for the headline, leave one cut out), growing in proportion to the
    distance past the back-tested horizon (``horizon_us``, in log US error) and clipped to [0, 1];
    see :mod:`~meta_study.analysis.headline`. NaN where the row has no back-test or no usable fit.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    u = np.asarray(us_accuracy, dtype=float)
    if str(row["law"]) == ENSEMBLE:
        return Headline.from_row(row).interval(u, level)
    size = row.get("ds_test_size")
    return interval_around(predict_fit(row, u), u, parse_residuals(row.get("interval_residuals")),
                           float(row["best_us"]), level, float(size) if size is not None else float("nan"))


__all__ = ["FRONTIERS", "LAWS", "Headline", "LawFit", "PowerLawFit", "fit_power_law", "fit_power_laws",
           "frontier_points", "get_law", "hull_frontier", "predict_fit", "predict_interval", "upper_hull"]
