"""Figures a researcher can read: legends off the data, titles clear of each other, every group
drawn, the prediction's interval inside the axes."""

from __future__ import annotations

import numpy as np
import pytest

from meta_study.analysis.groups import Group
from meta_study.analysis.tables import fit_table


@pytest.fixture(scope="module")
def fitted():
    """Three DS tasks x four shot counts of saturating synthetic groups (12 panels)."""
    rng = np.random.default_rng(0)
    groups = []
    for d in ("alpha-task", "beta-task", "gamma-task"):
        for shots in (1, 5, 10, 25):
            us = rng.uniform(0.3, 0.9, 40)
            ds = 0.95 - 0.8 * (1 - us) ** (1 + 0.1 * shots ** 0.5) + rng.normal(0, 0.01, 40)
            groups.append(Group("up", d, "fewshot", shots, us, np.clip(ds, 0, 1)))
    return fit_table(groups)


def _boxes(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axes = [a for a in fig.get_axes() if a.axison]
    return r, axes


def _overlap(a, b) -> bool:
    """True when two display boxes share more than a pixel."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1


def test_grid_legends_sit_under_their_panels_off_every_axes(fitted):
    """The legends sat on the points (upper left) and ran into the next panel."""
    from meta_study.analysis.figures import fit_grid_figure

    _, panels = fitted
    drawn = [{k: v for k, v in p.items() if k != "slug"} for p in panels]
    fig = fit_grid_figure(drawn, title="DS vs US")
    r, axes = _boxes(fig)
    assert len(axes) == 12                               # every group has its panel
    legends = [a.get_legend() for a in axes]
    assert all(lg is not None for lg in legends)
    lboxes = [lg.get_window_extent(r) for lg in legends]
    aboxes = [a.get_window_extent(r) for a in axes]
    for i, lb in enumerate(lboxes):
        assert not any(_overlap(lb, ab) for ab in aboxes), f"legend {i} covers a panel"
        assert not any(_overlap(lb, other) for j, other in enumerate(lboxes) if j != i), f"legend {i} covers another"
        ab = aboxes[i]
        assert lb.y1 <= ab.y0 and lb.x0 < (ab.x0 + ab.x1) / 2 < lb.x1      # under its own panel
    title = fig._suptitle.get_window_extent(r)
    assert not any(_overlap(title, a.title.get_window_extent(r)) for a in axes)
    for a in axes:                      # the prediction's interval is inside the axes' y range
        lo, hi = a.get_ylim()
        for line in a.lines:
            if line.get_marker() == "s":
                assert lo <= line.get_ydata()[0] <= hi
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_params_vs_shots_has_one_legend_right_of_the_panels_and_clear_titles(fitted):
    """F.4/F.5: the legend sat in the first panel, on its lines; the suptitle covered 'α'."""
    from meta_study.analysis.figures import params_figure

    df, _ = fitted
    fig = params_figure(df[df["law"] == "eq1"])
    r, axes = _boxes(fig)
    assert len(axes) == 3 and all(a.get_legend() is None for a in axes)
    assert len(fig.legends) == 1
    lb = fig.legends[0].get_window_extent(r)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["alpha-task", "beta-task", "gamma-task"]
    assert all(lb.x0 >= a.get_window_extent(r).x1 for a in axes)
    title = fig._suptitle.get_window_extent(r)
    assert not any(_overlap(title, a.title.get_window_extent(r)) for a in axes)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_footer_is_under_the_figure(tmp_path, fitted):
    """The footer is written below everything else: it may never cover the last row's legends."""
    from PIL import Image

    from meta_study.analysis.figures import plot_fit_grid

    _, panels = fitted
    drawn = [{k: v for k, v in p.items() if k != "slug"} for p in panels[:3]]
    with_footer = plot_fit_grid(drawn, str(tmp_path / "a"), footer="data: x · settings")[0]
    without = plot_fit_grid(drawn, str(tmp_path / "b"))[0]
    wa, ha = Image.open(with_footer).size
    wb, hb = Image.open(without).size
    assert ha > hb + 5                      # the footer adds its own strip under the figure
