"""Sensitivity and bootstrap: deterministic per seed, Ray equals serial, sensible coverage."""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.groups import Group
from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap, bootstrap_group
from meta_study.analysis.sensitivity import SensitivityOptions, default_sizes, sensitivity, sensitivity_group, summarize_sensitivity


def synthetic_group(name: str, n: int, seed: int, k=0.9, alpha=1.3, c=0.1) -> Group:
    rng = np.random.default_rng(seed)
    us = rng.uniform(0.3, 0.95, n)
    ds = 1 - (k * (1 - us) ** alpha + c) - rng.exponential(0.04, n)
    return Group("up", name, "fewshot", 10, us, np.clip(ds, 0, 1))


def test_default_sizes():
    assert default_sizes(1000) == [10, 19, 37, 72, 139, 268, 518, 1000]
    assert default_sizes(7) == [7] and default_sizes(0) == []


def test_sensitivity_rows_and_determinism():
    g = synthetic_group("a", 300, 0)
    opts = SensitivityOptions(trials=4, seed=3)
    a = sensitivity_group(g.key, g.us_accuracy, g.ds_accuracy, opts)
    b = sensitivity_group(g.key, g.us_accuracy, g.ds_accuracy, opts)
    pd.testing.assert_frame_equal(a, b)
    sizes = default_sizes(int((g.us_accuracy <= np.quantile(g.us_accuracy, 0.8)).sum()))
    from meta_study.analysis.frontiers import FRONTIERS
    assert len(a) == len(sizes) * 4 * len(FRONTIERS)
    assert set(a["frontier"]) == set(FRONTIERS) and a["n"].max() == sizes[-1]
    # the all-points fit of a draw of size n uses n points; the hull uses its vertices
    assert (a.loc[a["frontier"] == "all", "n_fit"] == a.loc[a["frontier"] == "all", "n"]).all()
    assert (a.loc[a["frontier"] == "vertices", "n_fit"] < a.loc[a["frontier"] == "vertices", "n"]).all()
    c = sensitivity_group(g.key, g.us_accuracy, g.ds_accuracy, SensitivityOptions(trials=4, seed=4))
    assert not np.allclose(a["alpha"], c["alpha"], equal_nan=True)


def test_errors_shrink_with_more_models():
    g = synthetic_group("a", 800, 1)
    t = sensitivity_group(g.key, g.us_accuracy, g.ds_accuracy, SensitivityOptions(trials=10))
    s = summarize_sensitivity(t)
    hull = s[s["frontier"] == "vertices"].sort_values("n")
    assert hull["pred_err_mean"].iloc[-1] < hull["pred_err_mean"].iloc[0]
    assert hull["pred_err_std"].iloc[-2] < hull["pred_err_std"].iloc[0]


def test_with_replacement_option_draws_repeats():
    g = synthetic_group("a", 100, 2)
    t = sensitivity_group(g.key, g.us_accuracy, g.ds_accuracy, SensitivityOptions(sizes=(200,), trials=2, replace=True))
    assert set(t["n"]) == {200} and (t.loc[t["frontier"] == "all", "n_fit"] == 200).all()


def test_bad_groups_do_not_stop_the_run():
    good = synthetic_group("a", 100, 0)
    tiny = Group("up", "tiny", "fewshot", 10, np.array([0.5, 0.6]), np.array([0.2, 0.3]))
    flat = Group("up", "flat", "fewshot", 10, np.full(20, 0.7), np.linspace(0.1, 0.5, 20))
    t = sensitivity([good, tiny, flat], SensitivityOptions(trials=2))
    by = t.groupby("ds_task")["status"].agg(lambda s: set(s))
    assert by["tiny"] <= {"too_few_points"} and by["flat"] <= {"degenerate", "too_few_points"}
    assert "ok" in by["a"] or "at_bound" in by["a"]


def test_groups_too_small_to_fit_keep_their_rows():
    from meta_study.analysis.tables import bootstrap_table, sensitivity_table

    one = Group("up", "one", "fewshot", 10, np.array([0.5]), np.array([0.2]))
    two = Group("up", "two", "fewshot", 10, np.array([0.5, 0.6]), np.array([0.2, 0.3]))
    good = synthetic_group("a", 60, 0)
    s = sensitivity_table([one, two, good], SensitivityOptions(trials=2), use_ray=False)
    b = bootstrap_table([one, two, good], BootstrapOptions(samples=20), use_ray=False)
    for t in (s, b):
        assert set(t["ds_task"]) == {"one", "two", "a"}
        assert set(t.loc[t["ds_task"].isin(["one", "two"]), "status"]) == {"too_few_points"}
    assert b.loc[b["ds_task"] == "one", "estimate"].isna().all() and (b.loc[b["ds_task"] == "one", "n_ok"] == 0).all()


@pytest.mark.slow(15)
def test_ray_and_serial_paths_agree():
    from meta_study.analysis.parallel import bootstrap_ray, sensitivity_ray

    import ray

    groups = [synthetic_group(f"t{i}", 150 + 40 * i, i) for i in range(5)]
    opts = SensitivityOptions(trials=3, seed=11)
    serial = sensitivity(groups, opts)
    seen = []
    # the Ray the parallel paths start stays up in this process (for the next call) until shut
    # down here: left connected, it failed a later test of this xdist worker (conftest's hook)
    try:
        par = sensitivity_ray(groups, opts, workers=2, progress=lambda d, done, total: seen.append(done))
        pd.testing.assert_frame_equal(serial, par)
        assert seen[-1] == 5
        bopts = BootstrapOptions(samples=30, seed=2)
        pd.testing.assert_frame_equal(bootstrap(groups[:3], bopts), bootstrap_ray(groups[:3], bopts, workers=2))
    finally:
        ray.shutdown()


def test_bootstrap_interval_covers_the_truth():
    rng = np.random.default_rng(5)
    us = rng.uniform(0.3, 0.95, 400)
    ds = 1 - (0.8 * (1 - us) ** 1.5 + 0.12) + rng.normal(0, 0.01, us.size)
    t = bootstrap_group(("up", "d", "fewshot", 5), us, ds,
                        BootstrapOptions(samples=300, fit=FitOptions(holdout_quantile=None)))
    row = t[(t["frontier"] == "all")].set_index("param")
    for p, truth in (("k", 0.8), ("alpha", 1.5), ("e_ir", 0.12), ("saturation", 0.88)):
        assert row.loc[p, "lo"] <= truth <= row.loc[p, "hi"], (p, row.loc[p].to_dict())
        assert row.loc[p, "lo"] <= row.loc[p, "estimate"] <= row.loc[p, "hi"]
    assert (t["n_ok"] == 300).all()
    again = bootstrap_group(("up", "d", "fewshot", 5), us, ds,
                            BootstrapOptions(samples=300, fit=FitOptions(holdout_quantile=None)))
    pd.testing.assert_frame_equal(t, again)


def test_ray_chunks_are_balanced_and_keep_group_order():
    from meta_study.analysis.parallel import _chunks

    rng = np.random.default_rng(0)
    costs = rng.uniform(5e4, 1e5, 100)
    chunks = _chunks(costs, 2)
    assert [i for c in chunks for i in c] == list(range(100))      # every group once, in order
    sums = [costs[c].sum() for c in chunks]
    assert max(sums) <= np.mean(sums) + costs.max()                 # within one group of the mean
    assert len(chunks) >= 4                                         # at least 2 per worker
    assert _chunks([], 2) == [] and _chunks([0, 0, 0], 4) == [[0], [1], [2]]
    assert _chunks([1e9, 1, 1, 1], 2) == [[0], [1, 2, 3]]           # a huge group alone


def test_fig3_has_a_row_per_ds_task_with_plain_sample_size_ticks():
    """Fig. 3 is drawn per DS task, as in the paper; sizes 10-14 on a log axis used to be labelled
    '10^1, 1.05x10^1, ...' on top of each other."""
    import numpy as np
    import pandas as pd

    from meta_study.analysis.figures import sensitivity_figure

    rows = [dict(us_task="in", ds_task=ds, eval_protocol="fewshot", shots=5, frontier=fr, n=n, fit_err_mean=0.02,
                 fit_err_std=0.01, pred_err_mean=0.05, pred_err_std=0.01)
            for ds in ("a", "b", "c") for fr in ("vertices", "all") for n in (10, 11, 12, 13, 14)]
    fig = sensitivity_figure(pd.DataFrame(rows))
    fig.canvas.draw()
    axes = fig.get_axes()
    assert len(axes) == 6 and [a.get_title() for a in axes[::2]] == ["a: fitting error", "b: fitting error",
                                                                       "c: fitting error"]
    for ax in axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "11", "12", "13", "14"]
        assert ax.get_legend() is None            # one legend for the figure, above the panels
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == [
        "vertices", "all (every model; never in the headline)"]      # `all` is never a headline frontier
    assert np.isclose(axes[1].lines[0].get_ydata()[0], 5.0)   # accuracy points, not fractions


def test_progress_counts_as_groups_complete():
    """Progress moves as work completes (it stayed at 0/5 until the end, serially)."""
    import numpy as np

    from meta_study.analysis.groups import Group
    from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap
    from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity

    rng = np.random.default_rng(0)
    groups = []
    for i in range(5):
        us = rng.uniform(0.3, 0.9, 40)
        groups.append(Group("u", f"d{i}", "fewshot", 5, us, np.clip(0.9 - 0.5 * (1 - us) ** 1.2, 0, 1)))
    for fn, opts, kind in ((sensitivity, SensitivityOptions(trials=1, sizes=(10, 20)), "sensitivity"),
                           (bootstrap, BootstrapOptions(samples=10), "bootstrap")):
        seen = []
        fn(groups, opts, progress=lambda k, done, total: seen.append((k, done, total)))
        assert seen == [(kind, i, 5) for i in range(6)], seen


@pytest.mark.slow(20)
def test_a_cluster_without_cpus_is_said_not_waited_on_in_silence(tmp_path):
    """A KubeRay head started with num-cpus 0 (workers still to come): the refit's sensitivity
    waited in ray.wait without a word. Said at once, and again every WAIT_NOTE_S."""
    import subprocess
    import sys

    code = """
import sys, ray
sys.path.insert(0, {tests!r})
from test_sensitivity import synthetic_group
from meta_study.analysis import parallel
from meta_study.analysis.sensitivity import SensitivityOptions
parallel.WAIT_NOTE_S = 1.0
ray.init(num_cpus=0, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
g = [synthetic_group("t0", 60, 0)]
parallel._fan_out(ray, "sensitivity", g, SensitivityOptions(trials=1), [1.0], workers=None, progress=None, columns=[])
""".format(tests=str(Path(__file__).parent))
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("still wait" in ln for ln in lines):
            # never a blocking read: a run that says nothing must fail the test, not hang it
            if not select.select([p.stderr], [], [], 1.0)[0]:
                continue
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    text = "".join(lines)
    assert "sensitivity: the Ray cluster has no CPU yet (0): its tasks wait for a node with one" in text, text
    assert "sensitivity: 0 of 1 groups done; 1 Ray tasks still wait or run (the cluster has 0 CPUs)" in text, text
