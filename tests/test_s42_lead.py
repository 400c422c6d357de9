"""Small defects fixed by the lead in session 42, each test failing before its fix."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def test_a_metric_beyond_a_doubles_range_is_infinite_not_an_overflow_in_tunes_callback():
    """A trial that reported an int past 1.8e308 (a count, an overflowed product) raised
    OverflowError ("int too large to convert to float") inside the MLflow callback: the sweep stopped."""
    from meta_study.tune.tracking import _metrics

    m = _metrics({"big": 10 ** 400, "small": -(10 ** 400), "frac": Fraction(10 ** 400, 3), "acc": np.float32(0.5),
                  "n": 3, "flag": True, "name": "x"})
    assert m == {"big": math.inf, "small": -math.inf, "frac": math.inf, "acc": 0.5, "n": 3.0}
