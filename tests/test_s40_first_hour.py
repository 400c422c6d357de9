"""Session 40: a new researcher's first hour (README, the demo, the report), the defects it found."""

from __future__ import annotations

import html as html_
import re
from pathlib import Path

import numpy as np

from meta_study.analysis.groups import Group
from meta_study.analysis.tables import fit_table


def _tiny_report(tmp_path: Path) -> str:
    """The report of a sweep's smoke run: two models per group, nothing can be fitted."""
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.report import render_report

    one = Group("up", "one", "fewshot", 5, np.array([0.4, 0.4]), np.array([0.3, 0.3]))   # one hull vertex
    fits, _ = fit_table([one])
    page = Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={}), tmp_path / "rep"))
    return html_.unescape(page.read_text())


def test_a_report_with_no_usable_fit_names_its_rows_as_the_answers_do(tmp_path):
    """A smoke sweep's report (2 models per group) said "Fits could not be made for 6 groups (no
    headline)" above a table whose rows read "ensemble ... headline, not trusted", and "Eq. 1 on the
    1 hull vertices" and "no usable fit: 1 of 1 groups"."""
    text = _tiny_report(tmp_path)
    answers = re.sub(r"<[^>]+>", "", text.split("<h2>Answers</h2>", 1)[1].split("<ul", 1)[0])
    assert "(no headline)" not in answers and "(no usable headline)" in answers, answers
    assert "no usable fit: 1 of 1 group." in answers, answers
    table = text.split("<h2>Headline and the paper's fit</h2>", 1)[1].split("</table>", 1)[0]
    cells = re.findall(r"<td class=l>([^<]*)</td>", table)
    assert "ensemble" not in cells and "none: no usable law x frontier fit" in cells, cells
    assert "Eq. 1 on the 1 hull vertex" in cells and "1 hull vertices" not in table, cells
