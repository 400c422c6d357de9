"""Session 52 review of the DS-vs-US figures: one legend for a grid's panels (OpenCLIP's fits_grid
repeated it under each of its 30 panels, a third of the figure's height), each panel's title says
whether its group's answer is trusted (only the legends did), and the interval band lies under the
models it spans."""

from __future__ import annotations

import numpy as np
import pytest

from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.groups import Group
from meta_study.analysis.selection import SelectionOptions
from meta_study.analysis.tables import fit_table


def _saturating(name: str, seed: int, noise: float) -> Group:
    rng = np.random.default_rng(seed)
    us = rng.uniform(0.3, 0.9, 60)
    ds = np.clip(0.95 - 0.8 * (1 - us) ** 1.4 - rng.exponential(noise, us.size), 0, 1)
    return Group("up", name, "fewshot", 5, us, ds)


def _panels(groups: list[Group], options: FitOptions | None = None) -> list[dict]:
    _, panels = fit_table(groups, options or FitOptions())
    return [{k: v for k, v in p.items() if k != "slug"} for p in panels]


@pytest.fixture(scope="module")
def mixed() -> list[dict]:
    """A trusted group, an untrusted one and one of two models (no usable fit)."""
    two = Group("up", "two", "fewshot", 5, np.array([0.3, 0.8]), np.array([0.2, 0.6]))
    panels = _panels([_saturating("a", 1, 0.01), _saturating("b", 2, 0.08), two])
    assert [(p["selection"].headline.usable, p["selection"].trusted) for p in panels] == [
        (True, True), (True, False), (False, False)]
    return panels


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _drawn_labels(axes) -> list[str]:
    """The labels of what the panels draw, each once."""
    out: list[str] = []
    for ax in axes:
        out += [lab for lab in ax.get_legend_handles_labels()[1] if lab not in out]
    return out


def test_a_grid_has_one_legend_with_each_drawn_entry_once(mixed):
    from meta_study.analysis.figures import HULL_LABEL, fit_grid_figure

    panels = mixed * 3                                  # 9 panels, 5 rows
    fig = fit_grid_figure(panels, title="DS vs US accuracy\n(the first 9 of 12 groups)")
    axes = [a for a in fig.axes if a.axison]
    assert len(axes) == 9 and all(a.get_legend() is None for a in axes)
    (legend,) = fig.legends                             # was: 9, one under each panel
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == len(set(labels))
    assert sorted(labels) == sorted(_drawn_labels(axes))        # nothing a panel does not draw
    for want in ("models", "held out", HULL_LABEL, "headline prediction", "90% interval", "tested horizon",
                 "paper: Eq. 1 on hull vertices", "paper: Eq. 1, held-out range", "hold-out threshold"):
        assert want in labels, (want, labels)
    assert any(t.startswith("laws' ") for t in labels), labels
    assert not any("trusted" in t or "no usable fit" in t for t in labels), labels    # the titles say it
    assert legend.get_title().get_text().startswith("DS vs US accuracy")
    # the panels keep their size: the figure is shorter by the legends it no longer repeats
    assert fig.get_size_inches()[1] < 5.3 * 5
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert min(a.get_window_extent(r).height for a in axes) / fig.dpi > 3.0
    _close(fig)


def test_the_grid_legend_names_only_what_some_panel_draws():
    """No models held out (holdout_quantile 1.0) and no Eq. 1 (--laws power): no entry for the
    hold-out line, the held-out models, the hull vertices or the paper's fit."""
    from meta_study.analysis.figures import HULL_LABEL, fit_grid_figure

    options = FitOptions(holdout_quantile=1.0, selection=SelectionOptions(laws=("power",)))
    panels = _panels([_saturating("a", 1, 0.01), _saturating("c", 3, 0.01)], options)
    fig = fit_grid_figure(panels)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    for absent in ("held out", "hold-out threshold", HULL_LABEL, "paper: Eq. 1 on hull vertices",
                   "paper: Eq. 1, held-out range"):
        assert absent not in labels, (absent, labels)
    assert "models" in labels and "headline prediction" in labels
    _close(fig)


def test_an_entry_only_a_later_panel_draws_keeps_its_place():
    """Held-out models only in the second panel: their entry follows "models", as in a panel that
    draws both, not at the end of the legend."""
    from meta_study.analysis.figures import fit_grid_figure

    first = _panels([_saturating("a", 1, 0.01)], FitOptions(holdout_quantile=1.0))
    second = _panels([_saturating("b", 2, 0.01)])
    fig = fit_grid_figure(first + second)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels.index("held out") == labels.index("models") + 1, labels
    _close(fig)


def test_each_panel_title_says_whether_its_answer_is_trusted(mixed):
    from meta_study.analysis.figures import fit_grid_figure, group_figure

    fig = fit_grid_figure(mixed)
    titles = [a.get_title() for a in fig.axes if a.axison]
    assert titles[0].endswith("\u00b7 trusted") and "not trusted" not in titles[0], titles
    assert titles[1].endswith("\u00b7 not trusted"), titles
    assert titles[2].endswith("no usable fit: no prediction"), titles
    assert titles[0].startswith("up -> a (fewshot, 5-shot)")
    _close(fig)
    for panel, want in zip(mixed, ("\u00b7 trusted", "\u00b7 not trusted", "no usable fit: no prediction")):
        own = group_figure(panel)                       # the group's own figure says it as the grid
        assert own.axes[0].get_title().endswith(want), own.axes[0].get_title()
        _close(own)


def test_a_long_title_puts_the_standing_on_a_line_of_its_own():
    from meta_study.analysis.figures import TITLE_LINE, TITLE_LINES, panel_title

    short_one = panel_title("up -> a (fewshot, 5-shot)", "not trusted")
    assert short_one == "up -> a (fewshot, 5-shot) \u00b7 not trusted"
    long_one = panel_title("x" * 300, "not trusted").split("\n")
    assert len(long_one) == TITLE_LINES + 1 and long_one[-1] == "not trusted"
    assert all(len(line) <= TITLE_LINE for line in long_one[:-1])
    assert panel_title("up -> a") == "up -> a"          # no standing: the title as it was


def test_the_interval_band_lies_under_the_models(mixed):
    """The band was drawn after the models, tinting the held-out ones it spans."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import FillBetweenPolyCollection, PathCollection

    from meta_study.analysis.figures import draw_group

    fig, ax = plt.subplots()
    draw_group(ax, **mixed[1])
    bands = [c for c in ax.collections if isinstance(c, FillBetweenPolyCollection)]
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert bands and points
    assert max(b.get_zorder() for b in bands) < min(p.get_zorder() for p in points)
    assert ax.get_legend() is not None                  # a panel drawn alone keeps its own legend
    _close(fig)


def test_a_groups_figure_has_one_legend_under_both_panels_above_its_footer(tmp_path):
    from meta_study.analysis.figures import FOOTER_ID, group_figure, save

    rng = np.random.default_rng(3)
    us = np.concatenate([rng.uniform(0.02, 0.79, 100), rng.uniform(0.79, 0.85, 25)])   # as OpenCLIP
    ds = np.clip(0.92 - 0.85 * (1 - us) ** 2 - rng.exponential(0.04, us.size), 0, 1)
    (panel,) = _panels([Group("up", "wide", "zeroshot", None, us, ds)])
    fig = group_figure(panel)
    full, zoom = [a for a in fig.axes if a.axison]
    (legend,) = fig.legends
    save(fig, str(tmp_path / "g"), footer="data: x \u00b7 settings")      # closes it: drawn on a new canvas
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    lb = legend.get_window_extent(r)
    (footer,) = [t for t in fig.texts if t.get_gid() == FOOTER_ID]
    fb = footer.get_window_extent(r)
    fe, ze = full.get_window_extent(r), zoom.get_window_extent(r)
    assert lb.y1 <= min(fe.y0, ze.y0)                   # under both panels
    assert fb.y1 <= lb.y0 + 1                           # and the footer under it
    assert lb.x0 < ze.x0 and lb.x1 > fe.x1             # across both: no blank under the zoom
