"""The report's explorer (session 47 review), in a real headless Chromium: the legend of a group
with nothing held out, the plot from the keyboard, and a group of 150,000 models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

#: The plot's geometry in the page's SVG units (explorer.JS: W, H, L, B, T, R).
W, H, L, B, T, R = 760, 460, 52, 44, 12, 14


def _heads(ds_tasks=("a",), thresholds=(0.85,)) -> pd.DataFrame:
    row = {"us_task": "up", "eval_protocol": "fewshot", "shots": 5, "law": "power", "frontier": "vertices",
           "status": "ok", "k": 0.9, "alpha": 1.2, "e_ir": float("nan"), "e_us_star": float("nan"),
           "best_us": 0.85, "horizon_us": 0.88, "trusted": True}
    return pd.DataFrame([{**row, "ds_task": t, "holdout_threshold": thr} for t, thr in zip(ds_tasks, thresholds)])


def _page(tmp_path: Path, heads: pd.DataFrame, points: pd.DataFrame) -> tuple[Path, dict]:
    from meta_study import explorer

    body = explorer.explorer_html(heads, points)
    page = tmp_path / "p.html"
    page.write_text("<!doctype html><html><head><meta charset=utf-8><style>" + explorer.CSS + "</style></head><body>"
                    + body + "</body></html>")
    data = json.loads(body.split("<script type=application/json id=ex-data>")[1].split("</script>")[0])
    return page, data


class _Browser:
    """One headless Chromium tab on ``page``; page errors collected in ``errors``."""

    def __init__(self, page: Path, width: int = 900):
        from playwright.sync_api import sync_playwright

        from test_report_html import CHROMIUM, FLAGS

        if not Path(CHROMIUM).exists():
            pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
        self._p = sync_playwright().start()
        self.browser = self._p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        self.tab = self.browser.new_page(viewport={"width": width, "height": 800})
        self.errors: list[str] = []
        self.tab.on("pageerror", lambda e: self.errors.append(str(e)))
        self.tab.goto(page.resolve().as_uri(), wait_until="load")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.browser.close()
        self._p.stop()

    def hover_line(self) -> str:
        return self.tab.evaluate("document.getElementById('ex-hover').textContent")

    def domain(self) -> list[float]:
        return [float(v) for v in self.tab.evaluate("document.getElementById('ex-svg').dataset.domain").split(",")]


def _tip(name: str, us: float, ds: float, held: bool = False) -> str:
    """What hovering a model says (explorer.JS's ``tip``)."""
    return f"{name}: US {us:.2f}%, DS {ds:.2f}%{' (held out)' if held else ''}"


#: Whether the legend entry that reads ``text`` is shown.
LEGEND_SHOWN = """(text) => { const s = Array.from(document.querySelectorAll('.ex-legend > span')).find(e => e.innerText.trim() === text);
  return !!s && getComputedStyle(s).display !== 'none'; }"""


@pytest.mark.slow(10)
def test_the_held_out_legend_shows_only_for_a_group_with_held_out_models(tmp_path):
    """"held out (not fitted)" stood in the legend of every group, also of one whose threshold
    holds nothing out (--holdout-quantile 1.0): it said the plot had marks it has not."""
    us = np.linspace(0.3, 0.9, 20)
    points = pd.concat([pd.DataFrame({"us_task": "up", "ds_task": t, "eval_protocol": "fewshot", "shots": 5,
                                      "run_id": [f"{t}{i}" for i in range(us.size)], "us_accuracy": us,
                                      "ds_accuracy": 0.2 + 0.5 * us}) for t in ("none", "some")])
    page, data = _page(tmp_path, _heads(("none", "some"), (0.95, 0.85)), points)
    assert [sum(p[3] for p in g["p"]) for g in data["groups"]] == [0, 2]
    with _Browser(page) as b:
        first = b.tab.evaluate(LEGEND_SHOWN, "held out (not fitted)")
        b.tab.select_option("#ex-group", "1")
        second = b.tab.evaluate(LEGEND_SHOWN, "held out (not fitted)")
        model = b.tab.evaluate(LEGEND_SHOWN, "model")
        assert not b.errors, b.errors
    assert (first, second, model) == (False, True, True)


#: Five models, (run id, US, DS): the frontier (each better downstream than every model below it
#: upstream) is alpha, bravo, delta.
FIVE = [("alpha", 0.40, 0.30), ("bravo", 0.50, 0.60), ("charlie", 0.60, 0.50), ("delta", 0.70, 0.70),
        ("echo", 0.80, 0.65)]


@pytest.mark.slow(10)
def test_the_keyboard_reaches_every_model_and_hears_what_hover_shows(tmp_path):
    """The points answered the mouse only: a keyboard user could not reach the plot, nor learn any
    model's name or accuracies, nor zoom. Now Tab reaches the plot (described by its keys), the arrow
    keys step through the models in view (the matches while searching), Page Up/Down along the
    frontier, and the model is ringed and named on the hover line, which is read out."""
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                           "run_id": [r for r, _, _ in FIVE], "us_accuracy": [u for _, u, _ in FIVE],
                           "ds_accuracy": [d for _, _, d in FIVE]})
    page, _ = _page(tmp_path, _heads(thresholds=(0.95,)), points)
    tips = {r: _tip(r, 100 * u, 100 * d) for r, u, d in FIVE}
    with _Browser(page) as b:
        tab = b.tab
        tab.focus("#ex-group")
        tab.keyboard.press("Tab")
        tab.keyboard.press("Tab")
        assert tab.evaluate("document.activeElement.id") == "ex-svg"
        aria = tab.evaluate("""() => { const s = document.getElementById('ex-svg'), h = document.getElementById('ex-hover');
          return [s.getAttribute('aria-label'), document.getElementById(s.getAttribute('aria-describedby')).textContent,
                  h.getAttribute('aria-live')]; }""")
        seen = []
        for key in ("ArrowRight", "ArrowRight", "ArrowLeft", "ArrowUp", "End", "Home", "PageUp", "PageUp", "PageUp",
                    "PageUp"):
            tab.keyboard.press(key)
            seen.append(b.hover_line())
        ringed = tab.evaluate("document.querySelectorAll('#ex-svg circle.cur').length")
        before = b.domain()
        tab.keyboard.press("+")
        zoomed = b.domain()
        tab.keyboard.press("0")
        reset = b.domain()
        # while searching, the matches only (alpha, charlie and delta hold an "l")
        tab.fill("#ex-find", "l")
        tab.keyboard.press("Tab")
        matches = []
        for key in ("Home", "ArrowRight", "ArrowRight", "ArrowRight"):
            tab.keyboard.press(key)
            matches.append(b.hover_line())
        tab.keyboard.press("Escape")
        after = [b.hover_line(), tab.evaluate("document.querySelectorAll('#ex-svg circle.cur').length")]
        assert not b.errors, b.errors
    assert aria[0] == "up → a (fewshot, 5-shot): 5 models" and "arrow keys" in aria[1] and aria[2] == "polite", aria
    assert seen == [tips["alpha"], tips["bravo"], tips["alpha"], tips["charlie"], tips["echo"], tips["alpha"],
                    tips["bravo"], tips["delta"], "no further model in view that way",
                    "no further model in view that way"], seen
    assert ringed == 1
    assert zoomed[1] - zoomed[0] < 0.8 * (before[1] - before[0]) and reset == before, (before, zoomed, reset)
    assert matches == [tips["alpha"], tips["charlie"], tips["delta"], "no further match in view that way"], matches
    assert after == ["", 0], after


#: The plot's images as the page drew them: for each (US, DS) in accuracy points, the pixel at its
#: centre and the most opaque pixel within 4 units, in the image of unmarked models ("under") and of
#: marked ones ("over"); null where the image is not there. Also the number of elements in the plot.
PIXELS = """async (pts) => {
  const svg = document.getElementById('ex-svg'), d = svg.dataset.domain.split(',').map(Number);
  const at = (us, ds) => [52 + (us - d[0]) / (d[1] - d[0]) * 694, 416 - (ds - d[2]) / (d[3] - d[2]) * 404];
  const read = async (sel) => { const im = svg.querySelector(sel); if (!im) return null;
    const img = new Image(); img.src = im.getAttribute('href'); await img.decode();
    const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
    const x = c.getContext('2d'); x.drawImage(img, 0, 0); return [x, img.width / 760]; };
  const out = {elements: svg.querySelectorAll('*').length};
  for (const sel of ['under', 'over']) {
    const r = await read(sel === 'under' ? 'image.ras:not(.hit)' : 'image.ras.hit');
    out[sel] = r && pts.map(([us, ds]) => { const [cx, cy] = at(us, ds), [x, s] = r, X = Math.round(cx * s), Y = Math.round(cy * s);
      const box = x.getImageData(X - 4 * s, Y - 4 * s, 8 * s + 1, 8 * s + 1).data; let most = 0;
      for (let i = 3; i < box.length; i += 4) most = Math.max(most, box[i]);
      return [Array.from(x.getImageData(X, Y, 1, 1).data), most]; }); }
  return out; }"""

#: The client (page) coordinates of a model at (US, DS) accuracy points.
CLIENT = """([us, ds]) => { const svg = document.getElementById('ex-svg'), d = svg.dataset.domain.split(',').map(Number);
  const p = new DOMPoint(52 + (us - d[0]) / (d[1] - d[0]) * 694, 416 - (ds - d[2]) / (d[3] - d[2]) * 404).matrixTransform(svg.getScreenCTM());
  return [p.x, p.y]; }"""


@pytest.mark.slow(10)
def test_a_group_beyond_3000_models_in_view_draws_what_the_circles_drew(tmp_path):
    """Beyond 3,000 models in view the models are pixels of two images, not one SVG circle each: a
    translucent model, a held-out ring, a marked model show as their circles did, a model drawn as
    pixels is named when hovered or stepped to with the keyboard, and zoomed into a few models they
    are circles again."""
    ii, jj = np.meshgrid(np.arange(70), np.arange(50), indexing="ij")   # 3,500 models ~8 px apart
    us, ds = 0.30 + 0.6 * ii.ravel() / 69, 0.20 + 0.6 * jj.ravel() / 49
    runs = [f"g{i}-{j}" for i, j in zip(ii.ravel(), jj.ravel())]
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "run_id": runs,
                           "us_accuracy": us, "ds_accuracy": ds})
    # no prediction line: the domain is the models' alone, and they stay apart (discs of 3 units)
    page, data = _page(tmp_path, _heads(thresholds=(0.85,)).assign(best_us=np.nan, horizon_us=np.nan), points)
    pts = {data["names"][p[2]]: p for p in data["groups"][0]["p"]}
    plain, held, marked = pts["g10-10"], pts["g65-20"], pts["g30-25"]
    assert (plain[3], held[3], marked[3]) == (0, 1, 0)
    xy = [p[:2] for p in (plain, held, marked)]
    with _Browser(page) as b:
        tab = b.tab
        before = tab.evaluate(PIXELS, xy)
        tab.fill("#ex-find", "g30-25")
        after = tab.evaluate(PIXELS, xy)
        count = tab.evaluate("document.getElementById('ex-info').textContent")
        tab.mouse.move(*tab.evaluate(CLIENT, plain[:2]))
        hovered = b.hover_line()
        tab.fill("#ex-find", "")
        tab.focus("#ex-svg")
        tab.keyboard.press("End")          # the best model upstream: 90% US, the best downstream of those
        stepped = b.hover_line()
        for _ in range(14):                # zoomed in at it: a few models, circles again
            tab.keyboard.press("+")
        near = tab.evaluate("[document.querySelectorAll('#ex-svg image').length, "
                            "Array.from(document.querySelectorAll('#ex-svg circle title')).map(t => t.textContent)]")
        assert not b.errors, b.errors
    assert before["elements"] < 100 and before["over"] is None, before["elements"]
    blue = [58, 110, 165]
    (plain_c, plain_most), (held_c, held_most), (marked_c, _) = before["under"]
    assert plain_c == blue + [128] and plain_most == 128           # one circle of opacity .5
    assert held_c[3] == 0 and held_most == 255                       # a ring: nothing inside, its edge opaque
    assert marked_c == blue + [128]
    assert count == "1 of 3500 models match"
    assert after["under"][2][0][3] == 0 and after["over"][2][0] == [230, 126, 34, 255]   # marked: over the rest
    assert after["over"][0][1] == 0                                 # nothing else marked
    assert hovered == _tip("g10-10", plain[0], plain[1])
    assert stepped == _tip("g69-49", 90.0, 80.0, held=True)
    images, titles = near
    assert images == 0 and 0 < len(titles) < 100 and _tip("g69-49", 90.0, 80.0, held=True) in titles, near


def _frontier(ps: list) -> set[int]:
    """Positions in ``ps`` ([US, DS, name, held]) of the models better downstream than every model
    below them upstream (of those with the same US, the best)."""
    best, out = -np.inf, set()
    order = sorted(range(len(ps)), key=lambda i: (ps[i][0], ps[i][1], i))
    for k, i in enumerate(order):
        if k + 1 < len(order) and ps[order[k + 1]][0] == ps[i][0]:
            continue
        if ps[i][1] > best:
            out.add(i)
            best = ps[i][1]
    return out


#: After load: [elements in the plot, titles of its circles]; then, per search, [count line,
#: elements in the plot, titles of the marked circles, whether an image of marked models is there].
HUGE = """(queries) => { const svg = document.getElementById('ex-svg'), find = document.getElementById('ex-find');
  const out = [[svg.querySelectorAll('*').length, Array.from(svg.querySelectorAll('circle title')).map(t => t.textContent)]];
  for (const q of queries) { find.value = q; find.dispatchEvent(new Event('input'));
    out.push([document.getElementById('ex-info').textContent, svg.querySelectorAll('*').length,
              Array.from(svg.querySelectorAll('circle.hit title')).map(t => t.textContent), !!svg.querySelector('image.ras.hit')]); }
  return out; }"""


@pytest.mark.slow(40)
def test_a_group_of_150000_models_stays_a_few_hundred_elements_and_search_still_marks(tmp_path):
    """A group of 150,000 models was 150,000 SVG circles, each with its title, built again at every
    keystroke in the search box (~1.5 s each on a laptop; ~2-4 s on this CI's 2 cores). Now the page
    holds a bounded number of elements whatever the group's size, the frontier's models keep their
    circles and names, and a search still counts, marks and names its models."""
    n = 150_000
    rng = np.random.default_rng(0)
    runs = [f"{i:032x}" for i in range(n)]
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "run_id": runs,
                           "model_name": [f"model{i % 7}" for i in range(n)],
                           "us_accuracy": rng.uniform(0.3, 0.9, n), "ds_accuracy": rng.uniform(0.2, 0.8, n)})
    page, data = _page(tmp_path, _heads(), points)
    ps = data["groups"][0]["p"]
    tip = {i: _tip(data["names"][p[2]], p[0], p[1], p[3] == 1) for i, p in enumerate(ps)}
    front = {tip[i] for i in _frontier(ps)}
    one = 12345   # the group's points in the store's order
    assert runs[one] in data["names"][ps[one][2]] + data["ids"][ps[one][2]]
    with _Browser(page) as b:
        out = b.tab.evaluate(HUGE, [runs[12345], "model3", ""])
        b.tab.fill("#ex-find", runs[12345])
        marked = b.tab.evaluate(PIXELS, [ps[one][:2]])
        assert not b.errors, b.errors
    (elements, titles), by_id, family, cleared = out
    assert elements < 200 and set(titles) == front and 3 <= len(front) < 60, (elements, titles, front)
    count, elements, hit_titles, image = by_id
    assert count == f"1 of {n} models match" and elements < 200
    # the model marked: a circle of its own where it is on the frontier, else pixels of the marked image
    if tip[one] in front:
        assert hit_titles == [tip[one]], by_id
    else:
        assert hit_titles == [] and image and marked["over"][0][0] == [230, 126, 34, 255], (by_id, marked)
    n3 = sum(1 for p in ps if data["names"][p[2]].startswith("model3 "))
    count, elements, hit_titles, image = family
    assert count == f"{n3} of {n} models match" and elements < 200 and image, family[:2]
    assert set(hit_titles) == {t for t in front if t.startswith("model3 ")}
    assert cleared[0] == f"{n} models" and cleared[1] < 200 and not cleared[3], cleared[:2]
