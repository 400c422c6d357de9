"""docs/analysis.md and docs/tracking.md, checked against the code where a claim was corrected.

- A back-test cut needs 3 visible models above it and 3 at or below it: a group of 5 visible
  models has no back-test, and its headline row says so in ``trust_reason``, not as a warning.
- The headline row (``law == "ensemble"``) has no law parameters of its own, so a refit never logs
  ``k``, ``alpha`` or ``e_ir`` under its ``headline`` slot (the doc's example key said ``alpha``).
- Groups are packed into Ray tasks of about 60 ms, smaller where that leaves fewer than two tasks
  per worker.
"""

from __future__ import annotations

import math
import re

import numpy as np

from meta_study.analysis.groups import Group
from meta_study.analysis.parallel import _chunks
from meta_study.analysis.selection import select_groups
from meta_study.analysis.tables import fit_table
from meta_study.refit import metric_key


def test_five_visible_models_have_no_backtest_and_say_so_in_trust_reason() -> None:
    us = np.array([0.5, 0.6, 0.65, 0.7, 0.75])
    ds = np.array([0.3, 0.4, 0.42, 0.5, 0.52])
    (sel,) = select_groups([(us, ds)], [("u", "d", "p", None)], [1.0])
    assert sel.n_cuts == 0 and not sel.trusted
    assert sel.trust_reason == "no back-test (needs 6 or more visible models, 3 above a cut)"
    assert not any(w.startswith("backtest:") for w in sel.warnings)
    # a candidate's row carries it as a warning
    assert any(w.startswith("backtest: no back-test") for c in sel.candidates for w in c.warnings)


def test_headline_row_has_no_law_parameters() -> None:
    rng = np.random.default_rng(0)
    us = np.sort(rng.uniform(0.4, 0.9, 40))
    ds = 1 - (0.8 * (1 - us) ** 1.3 + 0.1) - rng.uniform(0, 0.05, us.size)
    df, _ = fit_table([Group("u", "d", "p", None, us, ds)])
    head = df[df["headline"]].iloc[0]
    assert head["law"] == "ensemble"
    assert all(math.isnan(head[p]) for p in ("k", "alpha", "e_ir"))
    assert math.isfinite(head["saturation"])


def test_refit_metric_key_example_of_the_doc() -> None:
    key = metric_key(("up", "vtab/dtd", "fewshot", 5), "headline", "saturation")
    assert re.fullmatch(r"fit/up/vtab_dtd/fewshot/5-[0-9a-f]{12}/headline/saturation", key)
    assert metric_key(("up", "vtab_dtd", "fewshot", 5), "headline", "saturation") == \
        "fit/up/vtab_dtd/fewshot/5/headline/saturation"


def test_small_work_is_split_into_two_tasks_per_worker() -> None:
    chunks = _chunks([1.0] * 10, 4)           # far below 60 ms of work in all
    assert len(chunks) == 8
    assert sorted(i for c in chunks for i in c) == list(range(10))
