"""A group that pools two sources says so (session 56): the README's ``meta-study ingest
examples/data/*/us_ds.csv --store public`` then ``fit`` made seven groups of two exports measured
under different harnesses (hellaswag -> mmlu: helm_classic's 32 models at 43-82% US beside the Open
LLM Leaderboard's 87 at 83-89%), with nothing to say so: the hull ran from one harness into the
other, a change of harness drawn as a scaling curve. Pooling is intended, so the groups stay whole;
a ``mixed_sources`` warning (headline row, answer line, report) names each source's models and US
range, where the top models come from, the sources' own protocol names, and how to fit one source.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

HEADER = "source,run_id,model_name,us_task,ds_task,eval_protocol,protocol,shots,us_accuracy,ds_accuracy\n"


def _csv(path: Path, source: str, protocol: str, us: np.ndarray, ds_tasks: tuple[str, ...]) -> Path:
    """One export: each model on hellaswag (US) and the given DS tasks, DS rising with US."""
    lines = []
    for i, u in enumerate(us):
        for j, task in enumerate(ds_tasks):
            d = 0.2 + 0.6 * u + 0.01 * ((i * 7 + j) % 5 - 2)       # a rising trend, +-2 pt of scatter
            lines.append(f"{source},{source}-m{i},{source}-m{i},hellaswag,{task},other,{protocol},,{u:.4f},{d:.4f}")
    path.write_text(HEADER + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, str]:
    """A store of two exports sharing hellaswag -> mmlu (helm_like: 14 models at 40-80% US, also on
    boolq alone; oll_like: 10 models at 83-89% US), fitted by ``meta-study fit``."""
    d = tmp_path_factory.mktemp("sources")
    a = _csv(d / "helm_like.csv", "helm_like", "helm-em", np.linspace(0.40, 0.80, 14), ("mmlu", "boolq"))
    b = _csv(d / "oll_like.csv", "oll_like", "open-llm-v1", np.linspace(0.83, 0.89, 10), ("mmlu",))
    store = str(d / "store")
    r = run_cli("ingest", str(a), str(b), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    out = d / "out"
    r = run_cli("fit", store, "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def _headline_warnings(out: Path, ds_task: str) -> str:
    fits = pd.read_parquet(out / "fits.parquet")
    row = fits[fits["headline"] & (fits["ds_task"] == ds_task)]
    assert len(row) == 1
    return str(row["warnings"].iloc[0])


def test_a_group_of_two_sources_names_each_with_its_models_and_us_range(fitted):
    from meta_study.analysis.answers import flags

    out, _ = fitted
    detail = dict(flags(_headline_warnings(out, "mmlu")))["mixed_sources"]
    # largest first, each with its count and US range
    assert detail.startswith("24 models from 2 sources pooled in one group: helm_like 14 (US 40.0-80.0%), "
                             "oll_like 10 (US 83.0-89.0%)"), detail
    assert "Their US ranges do not overlap (helm_like up to 80.0%, oll_like from 83.0%)" in detail
    assert "Their extra.protocol names differ (helm_like: helm-em, oll_like: open-llm-v1)" in detail
    # the held-out (top 20%) models and the best visible one are oll_like's, most of the fit helm_like's
    assert "Most of the fit is from helm_like (14 of 19 visible models)" in detail
    assert "From another source: the 5 held-out models above 85.9% US (oll_like 5) and the best visible model " \
           "(85.7% US, oll_like): a change of source at the top" in detail
    # what to do: one source alone, or apart by eval_protocol set by a mapping's constants
    assert "ingest it into a store of its own" in detail and "constants: {eval_protocol: VALUE}" in detail
    assert ";" not in detail      # readers split the warnings on ";"


def test_a_group_of_one_source_has_no_such_warning(fitted):
    out, _ = fitted
    assert "mixed_sources" not in _headline_warnings(out, "boolq")
    fits = pd.read_parquet(out / "fits.parquet")
    # on the headline row only, as `repeated`: no candidate's row carries it
    assert not fits.loc[~fits["headline"], "warnings"].str.contains("mixed_sources").any()


def test_the_answer_line_labels_it_and_says_what_the_label_means(fitted):
    from meta_study.analysis.selection import FLAG_HELP, FLAGS

    _, stdout = fitted
    mmlu = next(ln for ln in stdout.splitlines() if ln.startswith("  hellaswag -> mmlu"))
    boolq = next(ln for ln in stdout.splitlines() if ln.startswith("  hellaswag -> boolq"))
    assert "mixed_sources" in mmlu.rsplit("[", 1)[1] and "mixed_sources" not in boolq
    assert "mixed_sources" in FLAGS
    assert f"  mixed_sources: {FLAG_HELP['mixed_sources']}" in stdout.splitlines()


def test_the_warning_changes_no_number(tmp_path):
    """The same group fitted with its rows under one source: every column but the warnings alike."""
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.groups import load_groups
    from meta_study.analysis.tables import fit_table
    from meta_study.store import open_store

    a = _csv(tmp_path / "helm_like.csv", "helm_like", "helm-em", np.linspace(0.40, 0.80, 14), ("mmlu",))
    b = _csv(tmp_path / "oll_like.csv", "oll_like", "open-llm-v1", np.linspace(0.83, 0.89, 10), ("mmlu",))
    assert run_cli("ingest", str(a), str(b), "--store", str(tmp_path / "st"), "--quiet").returncode == 0
    (g,) = load_groups(open_store(str(tmp_path / "st")))
    one = replace(g, sources=np.full(g.n, "helm_like", dtype=object), protocols=np.zeros(0, object))
    mixed, _ = fit_table([g], FitOptions())
    alone, _ = fit_table([one], FitOptions())
    assert mixed["warnings"].str.contains("mixed_sources").any()
    assert not alone["warnings"].str.contains("mixed_sources").any()
    pd.testing.assert_frame_equal(mixed.drop(columns="warnings"), alone.drop(columns="warnings"))


def test_at_most_three_sources_are_named_and_the_top_of_most_of_the_fit_reads_calm():
    from meta_study.analysis.groups import mixed_sources_warning

    us = np.array([0.5, 0.55, 0.6, 0.65, 0.7, 0.52, 0.62, 0.58, 0.61, 0.57, 0.56])
    src = np.array(["a"] * 5 + ["b", "b", "c", "d", "e", "e"], dtype=object)
    w = mixed_sources_warning(us, src, np.zeros(0, object), threshold=0.66)
    assert w.startswith("mixed_sources: 11 models from 5 sources pooled in one group: a 5 (US 50.0-70.0%), "
                        "b 2 (US 52.0-62.0%), e 2 (US 56.0-57.0%), and 2 more (2 models)"), w
    # the one held-out model (70%) and the best visible one (65%) are a's, as the largest part of the fit
    assert "The largest part of the fit is from a (4 of 10 visible models), as are the 1 held-out model above " \
           "66.0% US and the best visible model (65.0% US)" in w
    assert "change of source" not in w and "extra.protocol" not in w      # none named: nothing said of them
    # one source, or no sources known: nothing
    assert mixed_sources_warning(us, np.full(us.size, "a", dtype=object), np.zeros(0, object), 0.66) == ""
    assert mixed_sources_warning(us, np.zeros(0, object), np.zeros(0, object), 0.66) == ""


def test_the_report_shows_the_label_with_its_meaning_and_detail(fitted):
    from meta_study.report import _flags_html

    out, _ = fitted
    html = _flags_html(_headline_warnings(out, "mmlu"))
    span = next(s for s in html.split("<span ")[1:] if ">mixed_sources</span>" in s)
    assert "the group pools models from two or more sources" in span and "helm_like 14 (US 40.0-80.0%)" in span


def test_interleaved_sources_are_no_change_at_the_top() -> None:
    """Two sources over one US range, half of each held out: the held-out models mix sources as
    the fit does, which is no 'change of source at the top' (a review found it said so), and no
    source is 'the largest part' of a fit they share alike."""
    import numpy as np

    from meta_study.analysis.groups import mixed_sources_warning

    us = np.tile(np.linspace(0.3, 0.9, 10), 2)
    text = mixed_sources_warning(us, np.array(["a"] * 10 + ["b"] * 10, object), np.zeros(0, object), 0.75)
    assert "change of source at the top" not in text and "largest part" not in text
    assert "The fit is from a and b alike (7 each of 14 visible models)" in text
    assert "the check on the held-out models mixes sources" in text
    # the other source holding more of the top than of the fit still says it
    top = mixed_sources_warning(np.r_[np.linspace(0.3, 0.7, 14), np.linspace(0.8, 0.9, 6)],
                                np.array(["a"] * 14 + ["b"] * 6, object), np.zeros(0, object), 0.75)
    assert "change of source at the top" in top
