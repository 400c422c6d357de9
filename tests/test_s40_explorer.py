"""What a researcher looks at after an analysis (session 40 review): the figures, the explorer,
the results directory and the names they share."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _eq1_fits(shots: tuple[int, ...], protocol: str = "other") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [dict(us_task="up", eval_protocol=protocol, ds_task=f"task-{t}", shots=s, law="eq1", frontier=fr,
                 k=rng.uniform(0.5, 2), alpha=rng.uniform(0.1, 2), e_ir=rng.uniform(0.01, 0.3), status="ok",
                 message="")
            for t in range(2) for s in shots for fr in ("vertices", "all")]
    return pd.DataFrame(rows).astype({"shots": "Int64"})


def test_params_vs_shots_draws_0_shot_fits_inside_the_axes_with_a_tick():
    """0- and 5-shot ICL of one task (protocol "other" allows shots 0, as DCLM's tables hold): on
    the log shots axis the 0-shot estimates and the lines from them vanished without a word, and
    no tick said 0."""
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import params_figure

    fig = params_figure(_eq1_fits((0, 1, 5, 25)))
    try:
        fig.canvas.draw()
        for ax in fig.axes[:3]:
            x0, x1 = sorted(ax.get_xlim())
            xs = np.concatenate([np.asarray(ln.get_xdata(), float) for ln in ax.get_lines()])
            assert (xs == 0).any()
            # each point placed: a finite position in the axis' scale, inside its limits
            t = ax.xaxis.get_transform().transform(xs)
            lo, hi = ax.xaxis.get_transform().transform([x0, x1])
            assert np.isfinite(t).all() and (t >= lo).all() and (t <= hi).all(), (ax.get_xscale(), x0, x1)
            labels = [tk.get_text() for tk in ax.get_xticklabels()]
            assert labels == ["0", "1", "5", "25"], labels
    finally:
        plt.close(fig)
    fig = params_figure(_eq1_fits((1, 5, 25)))    # without 0 shots: the log axis as before
    try:
        assert all(ax.get_xscale() == "log" for ax in fig.axes[:3])
    finally:
        plt.close(fig)


#: Two MMLU subjects whose names differ only in the middle: cut to a label's width (40, a legend's
#: 28), both read "mmlu:hendrycksTest-high_sch…mics:acc_norm".
MMLU = ("mmlu:hendrycksTest-high_school_macroeconomics:acc_norm", "mmlu:hendrycksTest-high_school_microeconomics:acc_norm")


def test_names_that_differ_in_the_middle_keep_apart_in_legends_titles_and_heatmaps():
    """The params legend, Fig. 3's row titles and the heatmaps' task labels cut long names in the
    middle: two MMLU subjects became one label twice, two lines (or rows) no one could tell apart."""
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import heatmap_figure, params_figure, sensitivity_figure

    rows = [dict(us_task="lambada_openai", eval_protocol="other", ds_task=d, shots=s, law="eq1", frontier=fr, k=1.0,
                 alpha=1.0, e_ir=0.1, status="ok", message="") for d in MMLU for s in (0, 5) for fr in ("vertices", "all")]
    figs = [params_figure(pd.DataFrame(rows).astype({"shots": "Int64"}))]
    try:
        labels = [t.get_text() for t in figs[0].legends[0].get_texts()]
        assert len(set(labels)) == 2, labels
        summary = pd.DataFrame([dict(us_task="lambada_openai", eval_protocol="other", ds_task=d, shots=0,
                                     frontier="vertices", n=n, fit_err_mean=0.01, fit_err_std=0.0, pred_err_mean=0.02,
                                     pred_err_std=0.0) for d in MMLU for n in (10, 40)]).astype({"shots": "Int64"})
        figs.append(sensitivity_figure(summary))
        titles = [ax.get_title() for ax in figs[1].axes if ax.get_title().endswith("prediction error")]
        assert len(titles) == 2 and len(set(titles)) == 2, titles
        figs.append(heatmap_figure(pd.DataFrame(np.eye(2), index=list(MMLU), columns=list(MMLU)), title="t"))
        ax = figs[2].axes[0]
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            assert len({t.get_text() for t in ticks}) == 2, [t.get_text() for t in ticks]
    finally:
        for f in figs:
            plt.close(f)


def test_shorts_keeps_equal_names_equal_and_short_names_whole():
    from meta_study.analysis.figures import short, shorts

    long = "x" * 60
    assert shorts([long, long, "pets"]) == [short(long), short(long), "pets"]
    a, b = shorts(["a" * 30 + "-one-" + "b" * 30, "a" * 30 + "-two-" + "b" * 30])
    assert a != b and len(a) < 65


def test_series_labels_cut_each_name_to_its_own_width():
    """Without a clash, each label is :func:`series_label`'s: the US name to 18 characters, the DS
    name to 28, the protocol to 12 (and not, say, the DS name to the protocol's 12)."""
    from meta_study.analysis.figures import series_label, series_labels

    keys = [("u" * 30, "fewshot-linear-probe", "ds-" + "d" * 40), ("v" * 30, "zeroshot-prompted-eval", "es-" + "e" * 40)]
    assert series_labels(keys) == [series_label(us, ds, p) for us, p, ds in keys]


def test_a_figure_that_cannot_be_written_is_closed_all_the_same(tmp_path):
    """``refit --every`` goes on after a failed round: each round that could not write its figures
    (a full disk; here a file where the folder should be) left them open in pyplot, and memory grew."""
    import pytest

    from meta_study.analysis.figures import pyplot, save

    plt = pyplot()
    (tmp_path / "blocked").write_text("a file, not a folder")
    fig, _ = plt.subplots()
    with pytest.raises(OSError):
        save(fig, str(tmp_path / "blocked" / "grid"), footer="store v1")
    assert fig.number not in plt.get_fignums()
