"""A new researcher's first hour, read with fresh eyes (session 52): the README's tour on the shipped
tables, ``meta-study --help``, ``fit``'s lines, the report and the docs pages they point to.

- ``meta-study --help`` (80 columns) cut five commands' summaries mid-sentence ("demo  The whole
  system on embedded defaults: train a small model..."), ``store --help`` three;
- ``fit`` on one group opened with "1 groups"; its answer lines ended in labels ("[few_points,
  chord, extrapolation]") that the terminal explained nowhere;
- a trusted answer that the held-out models contradict (``held_out``) was "trusted" in bold on the
  page and in the terminal, the contradiction only a small label at the end of its line;
- the report's figures had their file names as alt text ("imagenet_imagenet-a_shift-475599");
- docs/analysis.md named ``n_points, n_fit, n_support`` of fits.parquet without defining them (on
  the headline row ``n_fit`` counts member fits, not models); docs/data.md, the "Data" page, never
  said where the shipped result tables are; the README's tour never showed the calculator options.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import MAPPINGS, REPO, committed_store, run_cli


def _page_text(page: Path) -> str:
    """The page's words as a reader sees them (tags, scripts and styles out; one space apart)."""
    import html

    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


@pytest.mark.parametrize("args", [["--help"], ["store", "--help"]])
def test_every_command_summary_in_help_is_whole(args):
    from click.testing import CliRunner

    from meta_study.cli import cli

    out = CliRunner().invoke(cli, args, terminal_width=80).output
    commands = out.split("Commands:", 1)[1].splitlines()
    cut = [ln for ln in commands if ln.rstrip().endswith("...")]
    assert not cut, cut
    # each summary on one line (a wrapped one read as two commands' worth of text)
    assert all(ln.startswith("  ") and len(ln.split()) > 1 for ln in commands if ln.strip()), commands


def test_fit_on_one_group_says_one_group(tmp_path):
    store = committed_store(tmp_path / "st", runs=40, tasks=("a",))
    r = run_cli("fit", store.uri, "--out", str(tmp_path / "out"), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("1 group, "), r.stdout.splitlines()[0]


@pytest.fixture(scope="module")
def timm_store(tmp_path_factory, timm_dir) -> str:
    store = str(tmp_path_factory.mktemp("timm") / "store")
    r = run_cli("ingest", str(timm_dir), "--mapping", str(MAPPINGS / "timm_wide.yaml"), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    return store


def test_fit_says_what_each_label_it_printed_means(timm_store, tmp_path):
    from meta_study.analysis.selection import FLAG_HELP

    r = run_cli("fit", timm_store, "--out", str(tmp_path / "out"), "--no-figures", "--ds-task", "imagenet-a")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    answer = next(ln for ln in lines if ln.startswith("  imagenet -> imagenet-a"))
    labels = re.search(r"\[([a-z_, ]+)\]$", answer).group(1).split(", ")
    assert labels, answer
    for label in labels:   # each once, in words, after the answers and before the files written
        assert lines.count(f"  {label}: {FLAG_HELP[label]}") == 1, (label, lines)
    i = lines.index(answer)
    # the answers, the question across groups in one line (payoff_summary), then the labels
    assert lines[i + 1].startswith("Does more US accuracy still pay?"), lines
    assert lines[i + 2].startswith("the labels (docs/analysis.md"), lines
    assert all(ln.startswith("wrote ") for ln in lines[i + 3 + len(labels):]), lines


def _held_out(fits, trusted_tasks):
    """``fits`` with the headlines of ``trusted_tasks`` trusted and flagged held_out (as the
    selection marks a trusted answer the held-out models contradict)."""
    fits = fits.copy()
    rows = fits["headline"].astype(bool) & fits["ds_task"].isin(trusted_tasks)
    fits.loc[rows, "trusted"] = True
    fits.loc[rows, "warnings"] = ("held_out: held-out frontier RMSE 6.0 pt, flat guess 2.0 pt; 3 of 8 held-out "
                                  "frontier points inside the 90% interval")
    return fits


def test_trusted_answers_flagged_held_out_are_said_in_words(tmp_path):
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.analysis.tables import headlines
    from meta_study.cli import held_out_note
    from meta_study.report import render_report

    a = analyze(committed_store(tmp_path / "st", runs=30, tasks=("a", "b", "c")), options=AnalysisOptions(),
                use_ray=False)
    ResultsDir(tmp_path / "rep").write(a, Selection(), figures=False)
    flagged = replace(a, fits=_held_out(a.fits, ["a", "b"]))
    text = _page_text(Path(render_report(flagged, tmp_path / "rep")))
    answers = text.split("Answers", 1)[1].split("Per group,", 1)[0]
    assert "2 of the trusted answers are flagged held_out" in answers, answers
    assert "contradicted by the newest models" in answers, answers
    assert held_out_note(headlines(flagged.fits)) == (" (2 of them flagged held_out: on the models the fit did not "
                                                       "see, off by more than the trust tolerance or worse than the "
                                                       "flat guess; the report says which)")
    # none flagged: nothing said
    clean = replace(a, fits=a.fits.assign(warnings=""))
    text = _page_text(Path(render_report(clean, tmp_path / "rep")))
    assert "flagged held_out" not in text
    assert held_out_note(headlines(clean.fits)) == ""


def test_the_reports_figures_say_what_they_show(tmp_path):
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.report import render_report

    a = analyze(committed_store(tmp_path / "st", runs=30, tasks=("a", "b")), options=AnalysisOptions(),
                use_ray=False)
    ResultsDir(tmp_path / "rep").write(a, Selection())
    page = Path(render_report(a, tmp_path / "rep")).read_text()
    imgs = re.findall(r"<img src='([^']+)' alt='([^']*)'", page)
    assert len(imgs) >= 3, imgs        # the grid and each group's own figure
    for src, alt in imgs:
        assert alt != Path(src).stem and len(alt.split()) >= 5, (src, alt)
    groups = {src: alt for src, alt in imgs if "/groups/" in src}
    assert any("up to a (fewshot, 5-shot)" in alt for alt in groups.values()), groups
    assert all("90% interval" in alt for alt in groups.values()), groups


def test_docs_define_the_count_columns_of_fits_parquet():
    doc = " ".join((REPO / "docs" / "analysis.md").read_text().split())
    for col in ("n_points", "n_fit", "n_support"):
        assert f"`{col}`:" in doc, col
    assert "on the headline row the number of its member fits" in doc


def test_the_data_page_points_to_the_shipped_result_tables():
    page = (REPO / "docs" / "data.md").read_text()
    intro = page.split("## The procedural suite", 1)[0]
    assert "](../examples/data/README.md)" in intro and (REPO / "examples" / "data" / "README.md").exists()


def test_the_readme_tour_shows_the_calculator():
    tour = (REPO / "README.md").read_text().split("## A tour", 1)[1].split("## Layout", 1)[0]
    line = next(ln for ln in tour.splitlines() if "--ds-target" in ln)
    assert line.startswith("meta-study fit STORE --out DIR2 ") and "--threshold" in line, line
