"""The group warnings and the answer's words, checked where a review found them misleading.

- ``few_points`` and ``chord`` describe the data (the visible models' upper hull), so they do not
  depend on which laws or frontiers were asked for (``--laws power`` dropped them).
- The ``backtest`` label's help says where a headline without a back-test says so (its trust
  reason), as docs/analysis.md does; it claimed the label covered it.
- "+1 US point", not "+1 US points".
- The best visible model and the models held out above it read as one split, not as two numbers
  with a gap between them ("82.7% US (48 models above 82.8% US held out)").
- Frontiers that tie at the shown precision are said to tie, not ranked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meta_study.analysis.answers import answer_text
from meta_study.analysis.selection import FLAG_HELP, SelectionOptions, select_groups
from meta_study.analysis.sensitivity import rank_frontiers

KEY = [("u", "d", "p", None)]


def _hull_flags(sel) -> list[str]:
    return [w for w in sel.warnings if w.split(":", 1)[0] in ("few_points", "chord")]


def _sparse_hull_group() -> tuple[np.ndarray, np.ndarray]:
    """34 models whose upper hull has 4 vertices, with a long stretch of it far above every model."""
    us = np.linspace(0.5, 0.85, 30)
    ds = 0.1 + 0.2 * (us - 0.5)               # a line: only its ends could be hull vertices
    return np.concatenate([us, [0.5, 0.6, 0.86, 0.87]]), np.concatenate([ds, [0.3, 0.4, 0.5, 0.5]])


def test_hull_warnings_do_not_depend_on_the_laws_or_frontiers_asked_for() -> None:
    us, ds = _sparse_hull_group()
    (base,) = select_groups([(us, ds)], KEY, [1.0])
    flags = _hull_flags(base)
    assert [w.split(":")[0] for w in flags] == ["few_points", "chord"]
    for opts in (SelectionOptions(laws=("power",)), SelectionOptions(frontiers=("bins",)),
                 SelectionOptions(laws=("logit-linear",), frontiers=("hull-curve", "all"))):
        (sel,) = select_groups([(us, ds)], KEY, [1.0], opts)
        assert _hull_flags(sel) == flags, opts


def test_hull_warnings_follow_the_nondecreasing_hull() -> None:
    # the hull the vertices frontier is fitted to: without its decreasing tail when asked (then a
    # chord from 80% to 90% US, which the full hull's tail to 92% US shortens below the cut)
    us = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.91, 0.92])
    ds = np.array([0.3, 0.45, 0.55, 0.6, 0.62, 0.5, 0.4])
    got = {}
    for nd in (False, True):
        (a,) = select_groups([(us, ds)], KEY, [1.0], nondecreasing=nd)
        (b,) = select_groups([(us, ds)], KEY, [1.0], SelectionOptions(laws=("power",)), nondecreasing=nd)
        assert _hull_flags(a) == _hull_flags(b)
        got[nd] = [w.split(":")[0] for w in _hull_flags(b)]
    assert got == {False: [], True: ["chord"]}


def test_too_few_hull_vertices_are_said_without_eq1() -> None:
    us = np.array([0.5, 0.7, 0.6, 0.55])
    ds = np.array([0.3, 0.5, 0.38, 0.3])      # hull: 2 vertices
    (a,) = select_groups([(us, ds)], KEY, [1.0])
    (b,) = select_groups([(us, ds)], KEY, [1.0], SelectionOptions(laws=("power",), frontiers=("bins",)))
    assert _hull_flags(a) == _hull_flags(b) != []


def test_backtest_help_says_where_a_missing_backtest_is_said() -> None:
    us = np.array([0.5, 0.6, 0.65, 0.7, 0.75])
    ds = np.array([0.3, 0.4, 0.42, 0.5, 0.52])
    (sel,) = select_groups([(us, ds)], KEY, [1.0])
    assert sel.trust_reason.startswith("no back-test")
    assert not any(w.startswith("backtest:") for w in sel.warnings)
    # the label's help must not claim that a group without a back-test carries it
    assert "trust reason" in FLAG_HELP["backtest"]


def test_one_us_point_is_singular_in_the_extrapolation_warning() -> None:
    us = np.array([0.5, 0.6, 0.65, 0.7, 0.75])
    ds = np.array([0.3, 0.4, 0.42, 0.5, 0.52])
    (sel,) = select_groups([(us, ds)], KEY, [1.0])
    text = "; ".join(sel.warnings)
    assert "extrapolation: +1 US point (76.0%) and beyond" in text
    assert "+1 US points" not in text


def test_held_out_models_read_as_the_ones_above_the_best_visible_model() -> None:
    row = {"trusted": False, "trust_reason": "x", "best_us": 0.8271, "flat": 0.5, "horizon_us": 0.85,
           "n_heldout": 48, "holdout_threshold": 0.8276, "warnings": ""}
    text = answer_text(row)
    assert "best visible model: 82.7% US (48 models above it held out to check the answer)" in text
    assert "82.8%" not in text
    assert "(1 model above it held out" in answer_text({**row, "n_heldout": 1})


def _summary(errs: dict[str, float]) -> pd.DataFrame:
    rows = []
    for fr, e in errs.items():
        for n, scale in ((10, 1.0), (40, 0.5)):
            rows.append({"us_task": "u", "ds_task": "d", "eval_protocol": "p", "shots": None, "frontier": fr, "n": n,
                         "fit_err_mean": e, "fit_err_std": 0.0, "pred_err_mean": e * scale, "pred_err_std": 0.0,
                         "trials": 3, "ok": 3})
    return pd.DataFrame(rows)


def test_frontiers_that_tie_at_the_shown_precision_are_said_to_tie() -> None:
    from meta_study.analysis.sensitivity import frontier_ranking_text   # the report's sentence

    rk = rank_frontiers(_summary({"bins": 0.0, "bins-upper": 0.0, "vertices": 0.02, "hull-curve": 0.02000001,
                                  "all": 0.01}))
    text = frontier_ranking_text(rk)
    assert "bins and bins-upper tie for best at the smallest sample (0 pt prediction error" in text
    assert "then hull-curve and vertices (tied at 2 pt)" in text
    assert "predicts best" not in text and "all (" not in text      # "all" is no headline frontier
    one = frontier_ranking_text(rank_frontiers(_summary({"bins": 0.011, "vertices": 0.02})))
    assert one.startswith("Among them, on this data, bins predicts best at the smallest sample (1.1 pt")
    assert one.endswith(", then vertices (2 pt).")
    marked = frontier_ranking_text(rk, name=str.upper, best=lambda s: f"<b>{s}</b>")
    assert "<b>BINS</b> and <b>BINS-UPPER</b> tie" in marked
