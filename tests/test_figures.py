"""Figures a researcher can read: legends off the data, titles clear of each other, every group
drawn, the prediction's interval inside the axes."""

from __future__ import annotations

import os
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


def test_grid_legend_is_one_for_all_panels_off_every_axes(fitted):
    """The legends sat on the points (upper left) and ran into the next panel. Then one legend
    under each panel (session 52: a third of OpenCLIP's grid was 30 copies of it): one above the
    panels, under the title, off every axes and title."""
    from meta_study.analysis.figures import fit_grid_figure

    _, panels = fitted
    drawn = [{k: v for k, v in p.items() if k != "slug"} for p in panels]
    fig = fit_grid_figure(drawn, title="DS vs US")
    r, axes = _boxes(fig)
    assert len(axes) == 12                               # every group has its panel
    assert all(a.get_legend() is None for a in axes)
    (lg,) = fig.legends
    lb = lg.get_window_extent(r)
    assert not any(_overlap(lb, a.get_window_extent(r)) for a in axes), "the legend covers a panel"
    assert not any(_overlap(lb, a.title.get_window_extent(r)) for a in axes), "the legend covers a title"
    assert lb.y0 >= max(a.get_window_extent(r).y1 for a in axes)        # above the panels
    assert lg.get_title().get_text() == "DS vs US"                      # the grid's title heads it
    # every line drawn is in the legend: the dash-dot hold-out line was the one a reader could not name
    labels = [t.get_text() for t in lg.get_texts()]
    assert "hold-out threshold" in labels and "tested horizon" in labels, labels
    for a in axes:                      # the prediction's interval is inside the axes' y range
        lo, hi = a.get_ylim()
        for line in a.lines:
            if line.get_marker() == "s":
                assert lo <= line.get_ydata()[0] <= hi
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_params_vs_shots_legends_right_of_the_panels_labelled_axes_and_bound_values_hollow(fitted):
    """F.4/F.5: the legend sat in the first panel, on its lines; the suptitle covered 'α'. Then: no y
    labels, two x ticks (1 and 10) for four shot settings, and α pinned at its bound drawn as data."""
    from meta_study.analysis.figures import params_figure

    df, _ = fitted
    eq1 = df[df["law"] == "eq1"].copy()
    pinned = eq1.index[(eq1["frontier"] == "vertices") & (eq1["ds_task"] == "beta-task") & (eq1["shots"] == 10)][0]
    eq1.loc[pinned, ["alpha", "status", "message"]] = [10.0, "at_bound", "alpha at its upper bound 10"]
    fig = params_figure(eq1)
    r, axes = _boxes(fig)
    assert len(axes) == 3 and all(a.get_legend() is None for a in axes)
    tasks, keys = fig.legends
    assert [t.get_text() for t in tasks.get_texts()] == ["up \u2192 alpha-task", "up \u2192 beta-task",
                                                         "up \u2192 gamma-task"]
    assert any("at its bound" in t.get_text() for t in keys.get_texts())       # the legend says what hollow means
    for lg in fig.legends:
        lb = lg.get_window_extent(r)
        assert all(lb.x0 >= a.get_window_extent(r).x1 for a in axes)
    title = fig._suptitle.get_window_extent(r)
    assert not any(_overlap(title, a.title.get_window_extent(r)) for a in axes)
    for a in axes:
        assert a.get_ylabel()                                                 # every panel says what it shows
        assert [t.get_text() for t in a.get_xticklabels()] == ["1", "5", "10", "25"]   # every shot setting
        assert len(a.xaxis.get_minor_locator()()) == 0                            # and no unlabelled tick
    alpha = axes[1]
    hollow = [ln for ln in alpha.lines if ln.get_marker() == "o" and ln.get_markerfacecolor() == "white" and len(ln.get_xdata())]
    assert [(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in hollow] == [(10.0, 10.0)]
    assert not [ln for ln in axes[0].lines if ln.get_markerfacecolor() == "white" and len(ln.get_xdata())]   # k is free
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_bound_params_reads_the_power_law_fit_messages():
    """The hollow markers rest on powerlaw's wording: a fit pinned at alpha_max says so."""
    from meta_study.analysis.figures import bound_params
    from meta_study.analysis.powerlaw import fit_power_law

    e_us = np.linspace(0.1, 0.6, 12)
    f = fit_power_law(e_us, 0.05 + 0.9 * e_us ** 3.0, alpha_max=1.5)
    assert f.status == "at_bound" and bound_params(f.message) == {"alpha"}
    free = fit_power_law(e_us, 0.05 + 0.9 * e_us ** 1.2)
    assert bound_params(free.message) == frozenset()
    assert bound_params("k = 0 (alpha is not identified); e_ir = 0") == {"k", "alpha", "e_ir"}


@pytest.fixture(scope="module")
def sens_summary():
    """Fig. 3's input for two DS tasks, 8 size steps each (as the CLI's default)."""
    from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity, summarize_sensitivity

    rng = np.random.default_rng(1)
    groups = []
    for d in ("alpha-task", "beta-task"):
        us = rng.uniform(0.3, 0.9, 80)
        groups.append(Group("up", d, "fewshot", 5, us, np.clip(0.9 - 0.7 * (1 - us) ** 1.5 + rng.normal(0, 0.02, 80), 0, 1)))
    return summarize_sensitivity(sensitivity(groups, SensitivityOptions(trials=2)))


def test_sensitivity_ticks_all_labelled_legend_under_the_title_without_a_gap(sens_summary):
    """Fig. 3 had an unlabelled x tick, a blank band under its legend (and the legend on the
    title), and named `all` like a headline frontier."""
    from meta_study.analysis.figures import LEGEND_PT, sensitivity_figure

    fig = sensitivity_figure(sens_summary)
    r, axes = _boxes(fig)
    assert len(axes) == 4
    for a in axes:
        labels = [t.get_text() for t in a.get_xticklabels()]
        assert len(labels) >= 6 and all(labels), labels          # every major tick has its number
        assert len(a.xaxis.get_minor_locator()()) == 0                # no minor (unlabelled) ticks
    (lg,) = fig.legends
    lb = lg.get_window_extent(r)
    assert all(t.get_fontsize() >= LEGEND_PT for t in lg.get_texts())
    assert any("never in the headline" in t.get_text() for t in lg.get_texts() if t.get_text().startswith("all"))
    tops = [a.title.get_window_extent(r) for a in axes]
    assert not any(_overlap(lb, t) for t in tops) and not any(_overlap(lb, a.get_window_extent(r)) for a in axes)
    gap = lb.y0 - max(t.y1 for t in tops)                         # pixels between legend and the first titles
    assert 0 <= gap < 0.25 * fig.dpi, gap
    assert fig._suptitle is None or not _overlap(lb, fig._suptitle.get_window_extent(r))
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_sensitivity_figure_of_many_tasks_is_one_row_of_their_mean(sens_summary):
    """202 DS tasks (the testbed) made a 526-inch-tall figure that took minutes to encode."""
    import pandas as pd

    from meta_study.analysis.figures import SENS_TASKS_MAX, sensitivity_figure

    many = pd.concat([sens_summary.assign(ds_task=f"{t}-{i}") for i in range(SENS_TASKS_MAX) for t in ("a", "b")])
    fig = sensitivity_figure(many)
    assert len(fig.axes) == 2 and fig.get_size_inches()[1] < 5
    assert fig.axes[0].get_title().startswith(f"median over {2 * SENS_TASKS_MAX} DS tasks")
    few = sensitivity_figure(many[many["ds_task"].isin(sorted(many["ds_task"].unique())[:SENS_TASKS_MAX])])
    assert len(few.axes) == 2 * SENS_TASKS_MAX                     # a row per task up to the limit
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(few)

def test_heatmap_cells_are_legible_and_missing_cells_are_not_white():
    """F.20/F.21: 7 pt values in thumbnails, and a missing pair drawn white like rho = 0."""
    import pandas as pd

    from meta_study.analysis.figures import HEAT_PT, heatmap_figure

    m = pd.DataFrame([[1.0, 0.5, np.nan], [0.5, 1.0, 0.2]], index=["u/a", "u/b"], columns=["x", "y", "z"])
    fig = heatmap_figure(m, title="t")
    _, axes = _boxes(fig)
    ax = axes[0]
    values = [t for t in ax.texts]
    assert len(values) == 5 and all(t.get_fontsize() >= HEAT_PT >= 10 for t in values)
    img = ax.images[0].get_array()
    assert np.ma.is_masked(img) and bool(img.mask[0, 2])          # the missing cell shows the axes' face
    assert ax.get_facecolor()[:3] != (1.0, 1.0, 1.0) and "grey" in ax.get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_no_curve_leaves_its_axes(fitted):
    """Every curve of every DS-vs-US panel lies inside its axes where it is drawn: the headline
    once plunged to 0% DS or shot off the top (a law drawn over the whole US range, the y axis
    following the points only)."""
    from meta_study.analysis.figures import fit_grid_figure

    _, panels = fitted
    drawn = [{k: v for k, v in p.items() if k != "slug"} for p in panels]
    # a steep, then flat cloud whose low end lies far under the fitted laws' reach
    rng = np.random.default_rng(3)
    us = np.concatenate([rng.uniform(0.05, 0.3, 15), rng.uniform(0.7, 0.95, 40)])
    ds = np.clip(np.where(us > 0.5, 0.2 + 0.7 * np.sqrt(np.clip(us - 0.5, 0, None)), 0.02) + rng.normal(0, 0.01, us.size), 0, 1)
    _, extra = fit_table([Group("up", "steep", "shift", None, us, ds)])
    drawn += [{k: v for k, v in p.items() if k != "slug"} for p in extra]
    fig = fit_grid_figure(drawn)
    n_lines = 0
    for ax in (a for a in fig.get_axes() if a.axison):
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        for ln in ax.lines:
            if ln.get_transform() != ax.transData or ln.get_linestyle() in ("None", ""):
                continue                          # markers, and axvlines (axes coordinates in y)
            x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
            inside = (x >= x0) & (x <= x1) & np.isfinite(y)
            n_lines += 1
            assert ((y[inside] >= y0 - 1e-9) & (y[inside] <= y1 + 1e-9)).all(), (ax.get_title(), ln.get_label(), (y0, y1))
            assert ln.get_clip_on()
    assert n_lines >= 3 * len(drawn)
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


def test_a_heatmap_of_hundreds_of_tasks_stays_a_readable_size(tmp_path):
    """The testbed's 202 DS tasks drew a 121-inch square with 40,804 numbers (minutes, 6 GB of
    memory, unreadable). Beyond HEAT_TEXT_MAX tasks a side: colour only, cells within
    HEAT_MAX_IN inches, the title says where the values are."""
    import pandas as pd

    from meta_study.analysis.figures import HEAT_MAX_IN, HEAT_TEXT_MAX, heatmap_figure, save

    n = 202
    rng = np.random.default_rng(0)
    names = [f"imagenet-c.task-{i}.severity-{i % 5 + 1}" for i in range(n)]
    m = pd.DataFrame(rng.uniform(-1, 1, (n, n)), index=names, columns=names)
    fig = heatmap_figure(m, title="t")
    w, h = fig.get_size_inches()
    assert not fig.axes[0].texts and max(w, h) < HEAT_MAX_IN + 12 and "values in the correlations table" in fig.axes[0].get_title()
    assert len(fig.axes[0].get_xticklabels()) == n                 # every task still named
    paths = save(fig, str(tmp_path / "big"))
    assert all(os.path.getsize(p) < 20e6 for p in paths)
    small = heatmap_figure(m.iloc[:HEAT_TEXT_MAX, :HEAT_TEXT_MAX], title="t")
    assert len(small.axes[0].texts) == HEAT_TEXT_MAX ** 2          # values written up to the limit
    import matplotlib.pyplot as plt

    plt.close(small)


def test_a_groups_figure_zooms_on_the_best_models_and_the_prediction():
    """Over a group's whole US range (0-85% on OpenCLIP) the prediction from the best model to the
    tested horizon was a sliver at the edge of its figure: a second panel zooms on it."""
    from meta_study.analysis.figures import answer_window, group_figure

    rng = np.random.default_rng(3)
    us = np.concatenate([rng.uniform(0.02, 0.79, 100), rng.uniform(0.79, 0.85, 25)])   # as OpenCLIP
    ds = np.clip(0.92 - 0.85 * (1 - us) ** 2 - rng.exponential(0.04, us.size), 0, 1)
    _, panels = fit_table([Group("up", "wide", "zeroshot", None, us, ds)])
    panel = {k: v for k, v in panels[0].items() if k != "slug"}
    h = panel["selection"].headline
    fig = group_figure(panel)
    full, zoom = fig.axes[:2]
    # one legend for both, under them (session 52: it was the full panel's, a blank under the zoom)
    assert full.get_legend() is None and zoom.get_legend() is None and len(fig.legends) == 1
    x0, x1 = zoom.get_xlim()
    assert x0 < h.best_us * 100 < x1 and x1 >= max(h.horizon_us, us.max()) * 100
    assert (x1 - x0) < 0.6 * (full.get_xlim()[1] - full.get_xlim()[0])
    assert (x1 - h.best_us * 100) >= 0.35 * (x1 - x0)                          # the prediction: 40% of the width
    y0, y1 = zoom.get_ylim()
    lo, hi = h.interval(np.array([h.best_us, h.horizon_us]), 0.9)
    inside = (us * 100 >= x0) & (us * 100 <= x1)
    assert y0 <= min(ds[inside].min(), np.nanmin(lo)) * 100 and y1 >= min(100.0, np.nanmax(hi) * 100) - 1e-9
    (wx0, wx1), _ = answer_window(us, ds, panel["selection"])
    assert (wx0 * 100, wx1 * 100) == (x0, x1)
    # where the answer's region is most of the range (few models, a far prediction): the panel alone
    few = np.concatenate([rng.uniform(0.05, 0.35, 16), rng.uniform(0.45, 0.75, 4)])   # as the demo's own tasks
    _, panels = fit_table([Group("up", "few", "zeroshot", None, few, np.clip(0.1 + 0.6 * few, 0, 1))])
    alone = group_figure({k: v for k, v in panels[0].items() if k != "slug"})
    assert len([a for a in alone.axes if a.axison]) == 1
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(alone)


def test_the_fits_grid_of_many_groups_shows_the_first_few_and_says_so(tmp_path, fitted, monkeypatch):
    """487 groups (the six public tables at once) made a grid 1,500 inches tall."""
    from meta_study.analysis import outputs

    df, panels = fitted
    monkeypatch.setattr(outputs, "GRID_MAX", 4)        # the cap's logic, on the 12 groups at hand
    outputs.write_fits(df, panels, str(tmp_path), max_group_figures=0)
    svg = (tmp_path / "figures" / "fits_grid.svg").read_text()
    assert svg.count("US accuracy (%)") == 4 and "the first 4 of 12 groups" in svg
    monkeypatch.setattr(outputs, "GRID_MAX", 30)
    outputs.write_fits(df, panels, str(tmp_path / "all"), max_group_figures=0)
    svg = (tmp_path / "all" / "figures" / "fits_grid.svg").read_text()
    assert svg.count("US accuracy (%)") == 12 and "the first" not in svg


def _two_us_groups(seed: int = 5):
    """One DS task under two US tasks (the paper's JFT and ImageNet-21k), four shot counts each,
    with clearly different laws (k about 0.9 and 0.5)."""
    rng = np.random.default_rng(seed)
    groups = []
    for us_task, k in (("jft", 0.5), ("in21k", 0.9)):
        for shots in (1, 5, 10, 25):
            us = rng.uniform(0.3, 0.9, 40)
            ds = 0.95 - k * (1 - us) ** 1.3 - 0.004 * shots + rng.normal(0, 0.005, 40)
            groups.append(Group(us_task, "pets", "fewshot", shots, us, np.clip(ds, 0, 1)))
    return groups


def test_params_vs_shots_draws_one_line_per_us_task_of_a_shared_ds_task():
    """One DS task under two US tasks was one line zig-zagging between k = 0.5 and 0.9 at every
    shot count, named by the DS task only."""
    from meta_study.analysis.figures import params_figure

    df, _ = fit_table(_two_us_groups())
    fig = params_figure(df[df["law"] == "eq1"])
    series, _ = fig.legends
    assert sorted(t.get_text() for t in series.get_texts()) == ["in21k \u2192 pets", "jft \u2192 pets"]
    k_axis = fig.axes[0]
    hull = [ln for ln in k_axis.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 1]
    assert len(hull) == 2                                     # one line per US task
    for ln in hull:
        x = np.asarray(ln.get_xdata(), float)
        assert list(x) == [1.0, 5.0, 10.0, 25.0]             # each shot once, in order: no zig-zag
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_sensitivity_figure_keeps_us_tasks_apart():
    """Groups of different US tasks were averaged into one row titled by the DS task."""
    from meta_study.analysis.figures import sensitivity_figure
    from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity, summarize_sensitivity

    groups = [g for g in _two_us_groups() if g.shots == 5]
    summ = summarize_sensitivity(sensitivity(groups, SensitivityOptions(trials=1)))
    fig = sensitivity_figure(summ)
    titles = [a.get_title() for a in fig.axes if a.axison]
    assert len(titles) == 4, titles                          # a row per US task
    assert sum(t.startswith("in21k \u2192 pets") for t in titles) == 2
    assert sum(t.startswith("jft \u2192 pets") for t in titles) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_long_task_names_are_shortened_in_legends_and_drawing_warnings_are_quiet(tmp_path, fitted):
    """200-character DS-task names ran across every panel of params_vs_shots, and matplotlib's
    missing-glyph and constrained_layout warnings flooded stderr (two lines each)."""
    import warnings

    from meta_study.analysis.figures import params_figure, save

    df, _ = fitted
    eq1 = df[df["law"] == "eq1"].copy()
    names = {"alpha-task": "very-long-task-name-" + "x" * 180 + "A", "beta-task": "very-long-task-name-" + "x" * 180 + "B",
             "gamma-task": "pets \U0001F436 <b>bold</b>"}
    eq1["ds_task"] = eq1["ds_task"].map(names)
    fig = params_figure(eq1)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == 3 and all(len(t) <= 60 for t in labels), labels
    assert sum("\u2026" in t for t in labels) == 2                       # the cut is marked,
    assert labels[1].endswith("xA") and labels[2].endswith("xB")            # and the names stay apart
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        save(fig, str(tmp_path / "p"))
    noisy = [str(w.message) for w in seen if "missing from" in str(w.message) or "constrained_layout" in str(w.message)]
    assert not noisy, noisy
    from PIL import Image

    assert Image.open(tmp_path / "p.png").size[0] < 20 * 130          # the legend no longer sets the width


def test_the_zoom_of_a_group_near_100_percent_us_stays_below_100_and_on_the_data():
    """With the best model at >= 99.5% US the zoom ran past 100% US, where the interval is [0, 1],
    and its DS range became 0-100%: every model in one flat line at the top."""
    from meta_study.analysis.figures import answer_window, group_figure
    from meta_study.analysis.fitting import FitOptions

    rng = np.random.default_rng(2)
    us = np.concatenate([rng.uniform(0.5, 0.95, 60), np.linspace(0.95, 0.998, 20)])
    ds = np.clip(0.97 - 0.9 * (1 - us) ** 1.3 - rng.exponential(0.005, us.size), 0, 1)
    _, panels = fit_table([Group("up", "near100", "linear", None, us, ds)], FitOptions(holdout_quantile=1.0))
    panel = {k: v for k, v in panels[0].items() if k != "slug"}
    assert panel["selection"].headline.usable and panel["selection"].headline.best_us >= 0.995
    (x0, x1), (y0, y1) = answer_window(us, ds, panel["selection"], panel["paper"])
    assert x1 <= 1.0 and x0 < 0.998
    assert y1 - y0 < 0.3 and y0 > 0.5, (y0, y1)           # the data's DS range, not 0-100%
    fig = group_figure(panel)
    zoom = fig.axes[1]
    assert zoom.get_xlim()[1] <= 100.0
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_hull_vertices_are_drawn_only_as_the_papers_eq1_fit_data():
    """Under --laws power --frontiers bins, red diamonds labelled "hull vertices (fit data)"
    marked points that no fit used."""
    from meta_study.analysis.figures import group_figure
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.selection import SelectionOptions

    rng = np.random.default_rng(4)
    us = rng.uniform(0.3, 0.9, 50)
    ds = np.clip(0.95 - 0.8 * (1 - us) ** 1.4 - rng.exponential(0.01, 50), 0, 1)
    g = Group("up", "t", "linear", None, us, ds)
    import matplotlib.pyplot as plt

    def labels(options):
        _, panels = fit_table([g], options)
        fig = group_figure({k: v for k, v in panels[0].items() if k != "slug"})
        out = [ln.get_label() for ln in fig.axes[0].lines]
        plt.close(fig)
        return out

    other = labels(FitOptions(selection=SelectionOptions(laws=("power",), frontiers=("bins",))))
    assert not [lb for lb in other if "hull vertices" in lb], other
    assert "hull vertices (paper's Eq. 1 fit data)" in labels(FitOptions())


def test_saving_a_figure_with_an_emoji_says_nothing_on_stderr(tmp_path):
    """A task name's emoji made matplotlib warn "Glyph 128054 missing from font(s)" at every
    save: dozens of two-line warnings in `fit` and `report` (the glyph is drawn as a box)."""
    import warnings

    from meta_study.analysis import figures

    plt = figures.pyplot()
    fig, ax = plt.subplots(layout="constrained")
    ax.set_title("pets \U0001F436")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        figures.save(fig, str(tmp_path / "f"))
        warnings.warn("another warning still shows", UserWarning)
    assert [str(w.message) for w in seen] == ["another warning still shows"]
