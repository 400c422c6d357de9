"""Session 48 review: the explorer's redraws during a wheel gesture or a drag over a huge group and
its legend without a search (in a real headless Chromium), the calculator at a law's saturation,
and row keys of values that are neither text nor integers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from test_s47_explorer import LEGEND_SHOWN, B, H, L, R, T, W, _Browser, _heads, _page

#: In the page: count the drawings (each starts with ``svg.replaceChildren()``), then dispatch
#: ``n`` wheel notches at the plot's centre within one task (as a trackpad's gesture queues them
#: behind a slow drawing), then ``n`` moves of a drag; after each, the drawings made at once and after
#: a few frames, and the domain drawn.
GESTURES = """async (n) => {
  const svg = document.getElementById('ex-svg'), r = svg.getBoundingClientRect();
  const frames = async (k) => { for (let i = 0; i < k; i++) await new Promise(res => requestAnimationFrame(() => res())); };
  await frames(3);
  let draws = 0; const own = svg.replaceChildren.bind(svg);
  svg.replaceChildren = (...a) => { draws++; return own(...a); };
  const dom = () => svg.dataset.domain.split(',').map(Number);
  const cx = Math.round(r.left + r.width / 2), cy = Math.round(r.top + r.height / 2), out = {before: dom()};   // events take whole pixels
  for (let i = 0; i < n; i++) svg.dispatchEvent(new WheelEvent('wheel', {deltaY: -100, clientX: cx, clientY: cy,
    bubbles: true, cancelable: true}));
  out.wheel = [draws]; await frames(4); out.wheel.push(draws); out.zoomed = dom();
  draws = 0;
  const ptr = (type, x) => svg.dispatchEvent(new PointerEvent(type, {pointerId: 1, pointerType: 'mouse', isPrimary: true,
    clientX: x, clientY: cy, buttons: 1, bubbles: true, cancelable: true}));
  svg.setPointerCapture = () => {};   // a synthetic pointer is no active pointer to capture
  ptr('pointerdown', cx);
  for (let i = 1; i <= n; i++) ptr('pointermove', cx + 2 * i);
  ptr('pointerup', cx + 2 * n);
  out.drag = [draws]; await frames(4); out.drag.push(draws); out.dragged = dom();
  out.width = r.width;
  const u = new DOMPoint(cx, cy).matrixTransform(svg.getScreenCTM().inverse()); out.cursor = [u.x, u.y];
  return out; }"""


@pytest.mark.slow(15)
def test_a_wheel_gesture_or_a_drag_over_a_huge_group_draws_once_a_frame_its_latest_view(tmp_path):
    """Over a group beyond 3,000 models (drawn as pixels, 0.1-0.3 s a drawing) every wheel notch
    and every move of a drag drew the view again, in turn: a gesture of 30 notches queued 30
    drawings and the view trailed it by seconds. Now the state follows every event and the drawing
    follows at most once a frame: the first event at once, the rest of its frame together after it,
    of the latest view."""
    ii, jj = np.meshgrid(np.arange(70), np.arange(50), indexing="ij")   # 3,500 models
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                           "run_id": [f"g{i}-{j}" for i, j in zip(ii.ravel(), jj.ravel())],
                           "us_accuracy": 0.30 + 0.6 * ii.ravel() / 69, "ds_accuracy": 0.20 + 0.6 * jj.ravel() / 49})
    page, _ = _page(tmp_path, _heads().assign(best_us=np.nan, horizon_us=np.nan), points)
    n = 30
    with _Browser(page) as b:
        out = b.tab.evaluate(GESTURES, n)
        assert not b.errors, b.errors
    (at_once, settled), before, zoomed = out["wheel"], out["before"], out["zoomed"]
    assert at_once == 1 and settled == 2, out["wheel"]        # was 30 and 30
    # the view drawn is the latest: 30 notches of exp(-0.15) each about the accuracies under the
    # cursor (that far into the plot's 694 x 404 units, from its left and bottom edges)
    f = math.exp(-0.0015 * 100 * n)
    ux, uy = out["cursor"]
    for lo, hi, at in ((0, 1, (ux - L) / (W - L - R)), (2, 3, (H - B - uy) / (H - B - T))):
        assert zoomed[hi] - zoomed[lo] == pytest.approx(f * (before[hi] - before[lo]), abs=2e-3), (before, zoomed)
        fixed = before[lo] + at * (before[hi] - before[lo])
        assert zoomed[lo] + at * (zoomed[hi] - zoomed[lo]) == pytest.approx(fixed, abs=2e-3), (before, zoomed)
    (at_once, settled), dragged = out["drag"], out["dragged"]
    assert at_once == 1 and settled == 2, out["drag"]         # was 30 and 30
    # dragged right by 2 * n CSS px: the domain moved left by that much of the plot's width (694 units)
    shift = 2 * n * (W / out["width"]) / (W - L - R) * (zoomed[1] - zoomed[0])
    assert dragged[0] == pytest.approx(zoomed[0] - shift, abs=5e-3) and dragged[2:] == zoomed[2:], (zoomed, dragged)


@pytest.mark.slow(10)
def test_a_group_of_a_few_models_still_draws_at_every_wheel_notch(tmp_path):
    """Below 3,000 models a drawing costs milliseconds: each notch is drawn at once (what a script
    reading the domain, or the ticks, right after a notch sees)."""
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                           "run_id": ["r1", "r2", "r3"], "us_accuracy": [0.5, 0.6, 0.7], "ds_accuracy": [0.3, 0.4, 0.5]})
    page, _ = _page(tmp_path, _heads().assign(best_us=np.nan, horizon_us=np.nan), points)
    with _Browser(page) as b:
        out = b.tab.evaluate(GESTURES, 5)
        assert not b.errors, b.errors
    assert out["wheel"] == [5, 5] and out["drag"] == [5, 5], out


@pytest.mark.slow(10)
def test_the_search_legend_entry_shows_only_while_a_search_marks_models(tmp_path):
    """"matches the search" stood in the legend with the search box empty: it named a mark the plot
    did not have (the held-out and prediction entries already hide for a group without them)."""
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                           "run_id": ["alpha", "bravo", "charlie"], "us_accuracy": [0.5, 0.6, 0.7],
                           "ds_accuracy": [0.3, 0.4, 0.5]})
    page, _ = _page(tmp_path, _heads(thresholds=(0.95,)), points)
    seen = []
    with _Browser(page) as b:
        seen.append(b.tab.evaluate(LEGEND_SHOWN, "matches the search"))
        for q in ("rav", "zzz", ""):
            b.tab.fill("#ex-find", q)
            seen.append(b.tab.evaluate(LEGEND_SHOWN, "matches the search"))
        assert not b.errors, b.errors
    assert seen == [False, True, False, False], seen


# ---- the calculator at a law's saturation ----------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.0, 3.0, 10.0])
def test_a_target_at_the_saturation_of_a_rising_law_needs_100_percent_us(alpha):
    """A DS target at the law's saturation is reached only in the limit of 100% US (1.0, the
    module doc, said "not reached below 100% US"). A steep law stays within 1e-12 of its limit long
    before: eq1 with alpha 3 "needed" 99.987% US and with alpha 10 93.3%, reachable below 100%."""
    from meta_study.analysis.laws import LAWS
    from meta_study.analysis.payoff import us_needed, us_needed_many

    fit = LAWS["eq1"].from_row({"status": "ok", "k": 0.5, "alpha": alpha, "e_ir": 0.1})
    assert us_needed(fit, fit.saturation) == 1.0
    assert us_needed(fit, fit.saturation + 1e-9) == math.inf               # above it: never, as before
    below = 1 - (1e-6 / 0.5) ** (1 / alpha)                               # just below it: where the law passes
    assert us_needed(fit, fit.saturation - 1e-6) == pytest.approx(below, abs=3e-3 * (1 - below))
    many = us_needed_many("eq1", [fit.params, {"k": 0.5, "alpha": alpha, "e_ir": 0.2}], 0.9)
    assert many[0] == 1.0 and many[1] == math.inf


def test_a_target_at_the_saturation_of_a_law_that_levels_off_is_reached_where_it_does():
    """Laws that reach their limit below 100% US keep their answer: eq1-bayes past its US Bayes
    accuracy (95% here), a flat law at 0% US."""
    from meta_study.analysis.laws import LAWS
    from meta_study.analysis.payoff import us_needed

    for alpha in (1.0, 10.0):
        bayes = LAWS["eq1-bayes"].from_row({"status": "ok", "k": 0.5, "alpha": alpha, "e_ir": 0.1, "e_us_star": 0.05})
        assert us_needed(bayes, bayes.saturation) == pytest.approx(0.95, abs=3e-4)
    flat = LAWS["eq1"].from_row({"status": "ok", "k": 0.0, "alpha": 1.5, "e_ir": 0.2})
    assert us_needed(flat, flat.saturation) == 0.0
    level = LAWS["logit-linear"].from_row({"status": "ok", "a": 0.2, "b": 0.0})
    assert us_needed(level, level.saturation) == 0.0


# ---- row keys -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, np.bool_(False), 7.0, np.float64(0.5), b"r1", float("nan")])
def test_a_key_value_that_is_neither_text_nor_an_integer_is_refused(value):
    """key_of wrote str(value): True as "True" and 7.0 as "7.0", where Arrow writes "true" and "7",
    so a key given so matched no stored row, silently (delete_runs=[("src", 7.0)] deleted nothing)."""
    from meta_study.keys import key_of

    with pytest.raises(TypeError, match="neither text nor an integer"):
        key_of(["src", value])


@pytest.mark.parametrize("arr", [pa.array([True]), pa.array([7.0]), pa.array([b"r1"], pa.binary()),
                                 pa.array([1], pa.timestamp("us"))])
def test_a_key_column_that_is_neither_text_nor_integers_is_refused(arr):
    from meta_study.keys import key_array, key_strings

    t = pa.table({"source": pa.array(["src"]), "run_id": arr})
    for f in (key_array, key_strings):
        with pytest.raises(TypeError, match="key column 'run_id'"):
            f(t, ("source", "run_id"))


def test_text_and_integer_keys_agree_between_python_and_arrow():
    """What every caller keys (text, the int32 shots and layer, nulls) is keyed alike both ways."""
    from meta_study.keys import key_array, key_of

    t = pa.table({"s": pa.array(["a|1:b", None, ""]), "n": pa.array([5, None, -3], pa.int32()),
                  "d": pa.array(["x", "y", "x"]).dictionary_encode(), "z": pa.array([None, None, None], pa.null())})
    rows = [("a|1:b", 5, "x", None), (None, None, "y", None), ("", np.int64(-3), "x", None)]
    assert key_array(t, ("s", "n", "d", "z")).to_pylist() == [key_of(r) for r in rows]


def test_deleting_a_run_given_by_a_float_is_refused_not_a_silent_no_op(tmp_path):
    """A run id read through pandas as a float (7.0) deleted nothing of run "7": its key read "7.0"."""
    from meta_study.store import Store
    from test_s44_store_parts import _quarantine  # noqa: F401 - the store's own fixtures

    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(None, quarantine=_quarantine("7"))
    with pytest.raises(ValueError, match=r"delete_runs: \('src', 7\.0\): 7\.0 is float"):
        s.commit(None, delete_runs=[("src", 7.0)])
    with pytest.raises(ValueError, match="True is bool"):
        s.commit(None, delete_runs=[("src", True)])
    assert s.quarantine().column("run_id").to_pylist() == ["7"]   # nothing half done
    assert s.commit(None, delete_runs=[("src", 7)]).version is not None and s.quarantine().num_rows == 0
