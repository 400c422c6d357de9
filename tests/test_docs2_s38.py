"""docs/analysis.md against the code (session 38), where a claim was corrected.

- The ``few_points`` and ``chord`` warnings describe the visible models' upper hull, counted
  against Eq. 1's 3 parameters, whatever ``--laws`` and ``--frontiers`` ask for (the page said that
  neither was checked when the laws or frontiers left out Eq. 1 on the hull vertices).
"""

from __future__ import annotations

import numpy as np

from meta_study.analysis.selection import SelectionOptions, select_groups


def _labels(warnings: tuple[str, ...]) -> set[str]:
    return {w.split(":", 1)[0] for w in warnings}


def test_hull_warnings_do_not_depend_on_laws_or_frontiers() -> None:
    # 30 models below a line from (0.5, 0.2) to (0.8, 0.35): a hull of two models
    rng = np.random.default_rng(0)
    us = np.linspace(0.5, 0.8, 30)
    ds = 0.2 + 0.5 * (us - 0.5) - rng.uniform(0.0, 0.05, 30)
    ds[[0, -1]] = [0.2, 0.35]
    default = select_groups([(us, ds)], [("a",)], [0.8], SelectionOptions())[0]
    narrow = select_groups([(us, ds)], [("a",)], [0.8], SelectionOptions(laws=("power",), frontiers=("bins",)))[0]
    assert "few_points" in _labels(default.warnings)
    assert _labels(narrow.warnings) & {"few_points", "chord"} == _labels(default.warnings) & {"few_points", "chord"}
