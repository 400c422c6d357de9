"""Session 49: the report read as a researcher in their first hour (text against its own numbers).

A group with no usable fit stores no ``member_quantile`` (it has no members), and the page read
that as a row written before the column existed: beside a store's other groups it said "the
headline is the 0.4 quantile or median of their predictions", and alone "the median", without
the reason a low quantile is used.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.tables import fits_frame


def _group(ds_task: str, n: int, rng: np.random.Generator) -> tuple[Group, list[dict]]:
    us = np.sort(rng.uniform(0.3, 0.8, n))
    ds = 0.9 - 0.6 * (1 - us) ** 1.3 + rng.normal(0, 0.01, n)
    pts = [{"us_task": "up", "ds_task": ds_task, "eval_protocol": "fewshot", "shots": 5, "run_id": f"{ds_task}{i:03d}",
            "model_name": "vit", "us_accuracy": u, "ds_accuracy": d} for i, (u, d) in enumerate(zip(us, ds))]
    return Group("up", ds_task, "fewshot", 5, us, ds), pts


@pytest.fixture(scope="module")
def mixed() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two groups: one fitted (40 models), one too small for any fit (2 models)."""
    rng = np.random.default_rng(0)
    (ga, pa), (gb, pb) = _group("a", 40, rng), _group("b", 2, rng)
    sels = fit_groups([(g.us_accuracy, g.ds_accuracy) for g in (ga, gb)], FitOptions(), keys=[ga.key, gb.key])
    return fits_frame([ga, gb], sels), pd.DataFrame(pa + pb)


def _page_text(page: Path) -> str:
    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def _render(fits: pd.DataFrame, points: pd.DataFrame, out: Path) -> str:
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.report import render_report

    return _page_text(Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={}, points=points),
                                         out)))


def test_a_group_without_a_usable_fit_does_not_make_the_headline_a_median(mixed, tmp_path):
    """The unfit group's row has no member_quantile (NaN); it was named the legacy median."""
    from meta_study.analysis.headline import MEMBER_QUANTILE
    from meta_study.report import _quantiles

    fits, points = mixed
    heads = fits[fits["headline"].astype(bool)]
    assert heads["member_quantile"].isna().sum() == 1         # the unfit group's row
    assert _quantiles(heads) == f"{MEMBER_QUANTILE:g} quantile"
    text = _render(fits, points, tmp_path / "both")
    assert f"the headline is the {MEMBER_QUANTILE:g} quantile of their predictions at each US accuracy (the laws" in text
    assert "median" not in text and " or " not in text.split("the headline is the")[1][:40]
    # alone, the unfit group still names the method this version fits with, not a legacy median
    unfit = fits[fits["ds_task"] == "b"]
    text = _render(unfit, points[points["ds_task"] == "b"], tmp_path / "alone")
    assert f"the headline is the {MEMBER_QUANTILE:g} quantile of their predictions" in text
    assert "median" not in text


def test_a_legacy_table_is_still_the_median(mixed):
    """Rows written before member_quantile was stored (no column) held the members' median."""
    from meta_study.report import _quantiles

    fits, _ = mixed
    heads = fits[fits["headline"].astype(bool)].drop(columns=["member_quantile"])
    assert _quantiles(heads) == "median"
