"""Session 57: Fig. 3's curves and the sentence under it are over one set of groups.

On the CIFAR-10-C table the page said "bins predicts best at the smallest sample (1.33 pt ...;
1.18 pt with every fitting model)" beside a figure that drew bins at n = 12 as 1.04 pt: the
ranking's medians were over the 73 groups every frontier was scored on at the smallest step, the
figure's over those 73 at step 1 and all 75 at steps 2-3, so a curve also changed its groups from
one step to the next (part of its drop was two groups coming in). Now every point of every curve
is a median over the same groups, the sentence's numbers are the first and last of them, and both
say over how many of the groups they are. Read here from the lines the figure draws."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pandas as pd
import pytest

#: per frontier, group 0's prediction error at n = 10 (fractions); group g's is (1 + g/10) times
#: it, and it halves as n doubles: the median over 13 groups (group 6) and over 12 (groups 5-6)
#: differ by ~3% at every step, more than the 3 significant digits the page prints
BASE = {"bins": 0.010, "vertices": 0.020, "all": 0.040}
SIZES = (10, 20, 40)
GROUPS = 13                       # > SENS_TASKS_MAX: one row of panels, the median over every group
LACKING = GROUPS - 1              # the group where vertices has no prediction error at one step


def _error(frontier: str, g: int, n: int, trial: int) -> float:
    return BASE[frontier] * (1 + g / 10) * 10 / n * (1 + 0.01 * trial)


def _table(step: int) -> pd.DataFrame:
    """A raw sensitivity table (SENSITIVITY_COLUMNS): 13 groups x 3 frontiers x 3 sizes x 2 trials,
    vertices failing on every draw of the last group at size step ``step``."""
    rows = []
    for g in range(GROUPS):
        for frontier in BASE:
            for k, n in enumerate(SIZES, 1):
                for trial in (0, 1):
                    failed = frontier == "vertices" and g == LACKING and k == step
                    err = math.nan if failed else _error(frontier, g, n, trial)
                    rows.append({"us_task": "up", "ds_task": f"t{g:02d}", "eval_protocol": "fewshot", "shots": 5,
                                 "n": n, "trial": trial, "frontier": frontier, "n_fit": n, "k": np.nan,
                                 "alpha": np.nan, "e_ir": np.nan, "saturation": np.nan,
                                 "fit_err": err / 2, "pred_err": err, "status": "failed" if failed else "ok"})
    return pd.DataFrame(rows).astype({"shots": "Int64"})


def _median_pt(frontier: str, n: int, groups: range) -> float:
    """The median over ``groups`` of each one's mean over trials, in points: what a point over them is."""
    return 100 * float(np.median([np.mean([_error(frontier, g, n, t) for t in (0, 1)]) for g in groups]))


def _drawn(fig, panel: int) -> dict[str, dict[float, float]]:
    """Per frontier, {x: y} of the line the figure draws in ``panel`` (0 fitting, 1 prediction error)."""
    out = {}
    for c in fig.axes[panel].containers:       # one ErrorbarContainer per frontier, labelled by it
        line = c.lines[0]
        out[c.get_label().split(" ")[0]] = {float(x): float(y) for x, y in zip(line.get_xdata(), line.get_ydata())
                                            if np.isfinite(y)}
    return out


def _three_digits(v: float) -> float:
    return float(f"{v:.3g}")


@pytest.mark.parametrize("step", [1, 2])
def test_the_sentence_gives_points_the_figure_draws_over_one_set_of_groups(step: int) -> None:
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import sensitivity_figure
    from meta_study.analysis.sensitivity import summarize_sensitivity
    from meta_study.report import _sensitivity_text

    table = _table(step)
    summ = summarize_sensitivity(table)
    fig = sensitivity_figure(summ)
    drawn = _drawn(fig, 1)
    heading = fig.legends[0].get_title().get_text()
    panel = fig.axes[1].get_title()
    plt.close(fig)

    # every point of every curve is the median over the same 12 groups (the lacking one left out at
    # every step, not at its step alone), so a step-to-step change is the sample size's
    kept = range(LACKING)
    for frontier in BASE:
        assert sorted(drawn[frontier]) == [float(n) for n in SIZES], (frontier, drawn[frontier])
        for n in SIZES:
            assert math.isclose(drawn[frontier][n], _median_pt(frontier, n, kept), rel_tol=1e-9), (frontier, n)
            assert not math.isclose(drawn[frontier][n], _median_pt(frontier, n, range(GROUPS)), rel_tol=1e-3)
    assert f"medians over {LACKING} of {GROUPS} groups" in heading, heading
    assert panel.startswith(f"median over {LACKING} of {GROUPS} groups ({GROUPS} DS tasks)"), panel

    # the sentence under it: its two numbers are bins' first and last points, and it says over what
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", _sensitivity_text(table))))
    m = re.search(r"bins predicts best at the smallest sample \(([\d.]+) pt prediction error, median over "
                  r"(\d+) of (\d+) groups; ([\d.]+) pt with every fitting model\)", text)
    assert m, text
    small, full = float(m.group(1)), float(m.group(4))
    assert (int(m.group(2)), int(m.group(3))) == (LACKING, GROUPS)
    assert small == _three_digits(drawn["bins"][SIZES[0]]), (small, drawn["bins"])
    assert full == _three_digits(drawn["bins"][SIZES[-1]]), (full, drawn["bins"])
    then = dict((f, float(v)) for f, v in re.findall(r"then (\S+) \(([\d.]+) pt\)", text))
    assert then == {"vertices": _three_digits(drawn["vertices"][SIZES[0]])}, text


def test_the_curves_keep_their_groups_where_grids_differ_in_length() -> None:
    """A group with a shorter size grid (fewer fitting points) left the medians of the steps it
    does not reach: the curve's last point was over the long-grid groups only. The curves are over
    the groups of the commonest grid, at each of its steps; the short one is said to be left out."""
    from meta_study.analysis.sensitivity import frontier_curves, summarize_sensitivity

    table = _table(0)                                      # step 0: no failure
    short = (table["ds_task"] == "t00") & (table["n"] == SIZES[-1])
    table = table[~short]                                  # t00 has 2 steps, the 12 others 3
    summ = summarize_sensitivity(table)
    curves = frontier_curves(summ)
    bins = curves[curves["frontier"] == "bins"].set_index("step")["pred_err"]
    for k, n in enumerate(SIZES, 1):
        assert math.isclose(100 * bins[k], _median_pt("bins", n, range(1, GROUPS)), rel_tol=1e-9), (k, bins[k])
    assert set(curves["groups"]) == {GROUPS - 1}

    from meta_study.analysis.sensitivity import curve_groups

    cg = curve_groups(summ)
    assert (cg.steps, cg.kept, cg.total) == (3, GROUPS - 1, GROUPS)
