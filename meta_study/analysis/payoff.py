"""Where scaling stops paying: the US accuracy past which the law predicts little DS gain.

With ``a_DS(u) = 1 - k (1 - u)^alpha - e_IR`` (accuracies as fractions) the DS gain per unit of
US accuracy is

    s(u) = d a_DS / d u = k * alpha * (1 - u)^(alpha - 1)

which is also "DS points per +1 US point". The report's column is the US accuracy ``u*`` at which
``s`` falls to ``threshold`` (default 0.1: one more US point buys a tenth of a DS point):

- ``alpha > 1``: ``s`` decreases towards 1, so ``u* = 1 - (threshold / (k alpha))^(1 / (alpha - 1))``;
  0 if the slope is already below the threshold at ``u = 0``.
- ``alpha <= 1``: ``s`` never decreases (for ``alpha < 1`` it grows without bound as ``u -> 1``;
  for ``alpha = 1`` it is the constant ``k``): scaling keeps paying by the law's own account,
  unless ``k * alpha`` is already below the threshold (then ``u* = 0``). NaN means "never".
"""

from __future__ import annotations

import math

from .powerlaw import PowerLawFit


def stop_paying_us(fit: PowerLawFit, threshold: float = 0.1) -> float:
    """The US accuracy (fraction) beyond which +1 US point buys less than ``threshold`` DS points.

    Returns NaN when the law never drops below the threshold, or when the fit is unusable.
    """
    if not fit.usable or threshold <= 0:
        return math.nan
    k, a = fit.k, fit.alpha
    if k <= 0:
        return 0.0  # a flat law: no gain anywhere
    if a <= 1.0:
        return 0.0 if k * a < threshold else math.nan
    u = 1.0 - (threshold / (k * a)) ** (1.0 / (a - 1.0))
    return max(0.0, min(1.0, u))


def slope(fit: PowerLawFit, us_accuracy: float) -> float:
    """DS points gained per +1 US point at ``us_accuracy`` (the derivative of the law)."""
    if not fit.usable:
        return math.nan
    e = 1.0 - us_accuracy
    if e <= 0:
        return math.inf if fit.alpha < 1 else (fit.k if fit.alpha == 1 else 0.0)
    return fit.k * fit.alpha * e ** (fit.alpha - 1.0)
