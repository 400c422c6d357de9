"""Review of session 52's changes: defects found and fixed (each test fails on the code before)."""

from __future__ import annotations

from pathlib import Path

from meta_study.report import _figure_alt

REPO = Path(__file__).resolve().parents[1]


def _head(status: object) -> dict:
    return {"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5.0, "status": status}


def test_a_group_without_a_usable_fit_is_not_described_as_drawing_a_prediction() -> None:
    # its figure draws the models alone (the panel title says "no usable fit: no prediction"); the
    # alt text said "the models and the headline prediction with its 90% interval"
    alt = _figure_alt("g", {"g": _head("degenerate")}, "90%")
    assert "prediction with its" not in alt and "no usable fit" in alt, alt
    for ok in ("ok", None, float("nan")):      # fitted, or a row without a status: as before
        alt = _figure_alt("g", {"g": _head(ok)}, "90%")
        assert alt.endswith("the models and the headline prediction with its 90% interval"), (ok, alt)


def test_the_docs_place_the_summary_line_where_the_report_puts_it() -> None:
    # report.py puts the cross-group line after the answers (commit f2110ca); the docs said the
    # report "opens its answers" with it
    doc = " ".join((REPO / "docs" / "analysis.md").read_text().split())
    assert "opens its answers with" not in doc
    assert "the report states the same line after its answers" in doc
    src = (REPO / "meta_study" / "report.py").read_text()
    assert src.index("+ _answers_html(heads, threshold") < src.index("<p class=summary>")


def test_latest_cut_errors_of_none_is_none() -> None:
    # `np.unique(cut)[-k:]` with k = 0 is every cut: "the latest 0 cuts" read all of them
    from meta_study.analysis.headline import latest_cut_errors

    r = [(0.01, 0.1, 0), (0.02, 0.1, 1), (0.03, 0.1, 2)]
    assert latest_cut_errors(r, 0) == ()
    assert latest_cut_errors(r, 2) == (0.02, 0.03) and latest_cut_errors(r, 5) == (0.01, 0.02, 0.03)
