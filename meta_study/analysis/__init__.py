"""Analysis: upper hulls, power-law fits, held-out prediction, sensitivity, bootstrap, correlations.

Pure numpy/scipy functions that return frozen result objects. Ray (``parallel``) and matplotlib
(``figures``) are imported only by the modules that need them.
"""

from __future__ import annotations

from .hull import hull_frontier, upper_hull
from .powerlaw import PowerLawFit, fit_power_law, fit_power_laws

__all__ = ["PowerLawFit", "fit_power_law", "fit_power_laws", "hull_frontier", "upper_hull"]
