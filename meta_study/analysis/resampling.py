"""What sample-size sensitivity and the bootstrap share: seeded draws of a group's fitting points.

The random stream of every draw is derived from (seed, a stable hash of the group key, stream,
more...), so a result does not depend on which process computes which group: the Ray path
(``parallel.py``) and the serial path give the same numbers bit for bit.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from .frontiers import curve_points, frontier_points
from .groups import stable_hash
from .hull import SubsetHulls

#: The Eq. 1 parameters both report per draw.
PARAMS = ("k", "alpha", "e_ir", "saturation")

#: Random streams: one per kind of draw, so sensitivity and bootstrap never share draws.
SENSITIVITY_STREAM, BOOTSTRAP_STREAM = 0, 1


class CountError(UserError, ValueError):
    """A count option (``trials``, ``samples``, ``seed``, ``sizes``, ...) that is no whole number:
    one line naming the option and its value (a ValueError too, as the options' range errors)."""


def whole_number(option: str, value: Any, what: str = "") -> int:
    """``value`` as a Python int when it is a whole number (``1e3`` is 1000, ``np.int64(5)`` is 5);
    else a :class:`CountError` naming ``option`` (and ``what`` it counts) and the value.

    Every count option of sensitivity and the bootstrap goes through here, before its range check:
    ``SensitivityOptions(trials=1e1)`` was accepted and failed in ``range()`` inside a Ray worker,
    after the work had started, and 2.5 trials or a size of 10.5 models were cut to 2 and 10
    without a word. A bool (``trials=True``), a string or NaN is refused too."""
    ok = (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(value) and value == int(value))
    if not ok:
        raise CountError(f"{option}{' (' + what + ')' if what else ''} must be a whole number, got {value!r}")
    return int(value)


def _key_value(v: Any) -> Any:
    """A key's value as :class:`~.groups.Group` holds it: numpy scalars as Python ones, a whole
    float (a ``shots`` column read back as float) as an int, NaN or pandas.NA as None."""
    if v is None or isinstance(v, str):
        return v if v is None else str(v)     # np.str_ too: its repr is "np.str_('a')"
    if v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def group_rng(seed: int, key: Sequence[Any], stream: int, *more: int) -> np.random.Generator:
    """An independent generator per (seed, group, stream, more...): order-free, process-free.

    The key is hashed by value: ``shots`` given as 5, ``np.int64(5)`` or 5.0 (a key taken from a
    table's row) draws what the command line drew for that group; hashed by its ``repr`` it drew
    other resamples, and other intervals, for the same group and seed."""
    h = stable_hash(tuple(_key_value(v) for v in key))
    return np.random.default_rng(np.random.SeedSequence([seed, h & 0xFFFFFFFF, h >> 32, stream, *more]))


def draw_problems(p: Any, s: np.ndarray, frontiers: Sequence[str], hulls: SubsetHulls
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(frontier, US, DS) points of each frontier estimator on the draw ``s`` (indices).

    The hull-based frontiers come from ``hulls`` (one sort per group, O(n) per draw: the same
    vertices as ``frontier_points`` on the drawn points); the others from ``frontier_points``."""
    us, ds = p.us[s], p.ds[s]
    out = []
    h = hulls.hull(s) if ("vertices" in frontiers or "hull-curve" in frontiers) else None
    for fr in frontiers:
        if fr == "vertices":
            out.append((fr, p.us[h], p.ds[h]))
        elif fr == "hull-curve":
            out.append((fr, *curve_points(p.us[h], p.ds[h])))
        elif fr == "all":
            out.append((fr, us, ds))          # every drawn point; the order does not matter to a fit
        else:
            F = frontier_points(fr, us, ds, nondecreasing=hulls.nondecreasing)
            out.append((fr, F.us, F.ds))
    return out


def serially(kind: str, fn: Callable[..., pd.DataFrame], groups: Sequence[Any], options: Any,
              progress: Callable[[str, int, int | None], None] | None) -> list[pd.DataFrame]:
    """``fn`` for each group in turn, reporting progress after each (the Ray path reports per task)."""
    frames = []
    for i, g in enumerate(groups):
        if progress:
            progress(kind, i, len(groups))
        frames.append(fn(g.key, g.us_accuracy, g.ds_accuracy, options))
    if progress:
        progress(kind, len(groups), len(groups))
    return frames
