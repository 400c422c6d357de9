"""Analysis: frontiers, laws, back-tested selection, held-out prediction, sensitivity, bootstrap, correlations.

Pure numpy/scipy functions that return frozen result objects. Ray (``parallel``) and matplotlib
(``figures``) are imported only by the modules that need them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .frontiers import FRONTIERS, frontier_points
from .hull import hull_frontier, upper_hull
from .laws import LAWS, LawFit, get_law
from .powerlaw import PowerLawFit, fit_power_law, fit_power_laws


def predict_fit(row: Mapping[str, Any], us_accuracy: Any) -> np.ndarray:
    """DS accuracies (fractions) that a row of ``fits.parquet`` predicts at ``us_accuracy``.

    Args:
        row: a row of ``fits.parquet`` (a pandas Series or a dict) with ``law``, the law's
            parameter columns and ``status``.
        us_accuracy: US accuracies (fractions), any shape.

    Returns:
        An array of the same shape: NaN where the row's fit is unusable. For a frontier fit (every
        headline) this is the DS accuracy of the best models at that US accuracy.
    """
    law = get_law(str(row["law"]))
    return law.from_row(row).predict_accuracy(np.asarray(us_accuracy, dtype=float))


__all__ = ["FRONTIERS", "LAWS", "LawFit", "PowerLawFit", "fit_power_law", "fit_power_laws", "frontier_points",
           "get_law", "hull_frontier", "predict_fit", "upper_hull"]
