"""Review of the answer text, the report's answers and the demo's output as a first-hour reader
meets them (session 39)."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from meta_study.analysis.answers import answer_text, interval


def _row(**kw):
    row = {"trusted": True, "trust_reason": "back-test error 1.0 pt <= tolerance 3 pt over 4 cuts",
           "best_us": 0.349, "flat": 0.207, "horizon_us": 0.40, "warnings": "",
           "ds_plus1": 0.25, "ds_plus1_lo": 0.23, "ds_plus1_hi": 0.27, "slope_plus1": 0.5,
           "ds_plus3": 0.26, "ds_plus3_lo": 0.23, "ds_plus3_hi": 0.29, "slope_plus3": 0.5,
           "ds_plus5": 0.27, "ds_plus5_lo": 0.23, "ds_plus5_hi": 0.31, "slope_plus5": 0.5,
           "ds_target": math.nan}
    row.update(kw)
    return row


def test_a_tight_interval_prints_apart_with_its_estimate_inside():
    """A half-width under 0.05 pt (tight back-tests, above the no-spread zero) read "85.0% DS
    [85.0%-85.0%]", a 90% interval of width 0; at more decimals the estimate printed at one read
    below its interval's low end."""
    text = answer_text(_row(ds_plus1=0.85031, ds_plus1_lo=0.85021, ds_plus1_hi=0.85041))
    assert "+1 US pt: 85.03% DS [85.02%-85.04%]" in text, text
    untrusted = answer_text(_row(trusted=False, ds_plus1=0.8502, ds_plus1_lo=0.8499, ds_plus1_hi=0.8504))
    assert "+1 US pt: 90% interval [84.99%-85.04%]" in untrusted, untrusted
    # ordinary widths print as before; exact ends (no spread) stay as they are
    assert interval(0.23, 0.27) == " [23.0%-27.0%]" and interval(0.2, math.inf) == " [20.0%-never]"
    # every step past 100% US: the horizon's prediction takes its interval's decimals too
    horizon = answer_text(_row(best_us=0.995, ds_plus1=math.nan, ds_plus3=math.nan, ds_plus5=math.nan,
                               predict_us=0.999, predict_ds=0.50031, predict_lo=0.50021, predict_hi=0.50041))
    assert "50.03% DS [50.02%-50.04%]" in horizon, horizon


def test_nothing_is_said_below_the_best_ds_seen_that_prints_as_it():
    """0.2066 beside a best DS seen of 0.2072 read "+1 US pt: 20.7% DS ... (below the best DS
    seen, 20.7%" and "the laws' limit, 20.7%, is below the best DS seen (20.7%)"."""
    text = answer_text(_row(flat=0.2072, ds_plus1=0.2066, ds_plus1_lo=0.19, ds_plus1_hi=0.22))
    assert "below the best DS seen" not in text, text
    text = answer_text(_row(flat=0.2072, stop_paying_supported=True, stop_paying_us=0.3, stop_paying_lo=0.25,
                            stop_paying_hi=0.33, saturation=0.2066, saturation_lo=0.2, saturation_hi=0.21))
    assert "is below the best DS seen" not in text and "an extrapolation: 20.7%" in text, text
    # a real gap is still said
    text = answer_text(_row(flat=0.2072, ds_plus1=0.2, ds_plus1_lo=0.19, ds_plus1_hi=0.22))
    assert "(below the best DS seen, 20.7%" in text, text


@pytest.fixture(scope="module")
def synthetic_results(tmp_path_factory):
    from test_demo import _synthetic_results

    return _synthetic_results(tmp_path_factory.mktemp("synth"))


def _copy(results: Path, to: Path, fits: pd.DataFrame) -> Path:
    to.mkdir()
    fits.to_parquet(to / "fits.parquet")
    pd.read_parquet(results / "points.parquet").to_parquet(to / "points.parquet")
    return to


def test_the_held_out_check_counts_no_model_inside_an_interval_there_is_not(tmp_path, synthetic_results):
    """A trusted row whose back-tests hit exactly has no 90% interval: the check read "0 of 9
    inside the 90% interval: right"."""
    from meta_study.demo import held_out_check

    results, fits = synthetic_results
    fits = fits.copy()
    heads = fits["headline"].astype(bool)
    fits.loc[heads, "trusted"] = True
    fits.loc[heads, "interval_residuals"] = [json.dumps([[0.0] * len(c) for c in json.loads(r)])
                                             for r in fits.loc[heads, "interval_residuals"]]
    out = held_out_check(_copy(results, tmp_path / "r", fits))
    assert len(out) == 4, out
    for line in out[:3]:
        assert "inside the 90% interval" not in line and "no 90% interval to check them against: " in line, line


def test_the_held_out_check_never_says_no_trusted_group_of_trusted_ones(tmp_path, synthetic_results):
    """Trusted groups none of whose models lie above the hold-out line read "no trusted group (3
    groups)" beside a report that counted them trusted; those left unchecked are counted."""
    from meta_study.demo import held_out_check

    results, fits = synthetic_results
    fits = fits.copy()
    heads = fits["headline"].astype(bool)
    fits.loc[heads, "trusted"] = True
    fits.loc[heads, "holdout_threshold"] = 1.0
    out = held_out_check(_copy(results, tmp_path / "none", fits))
    assert out == ["3 trusted groups (3 groups), none with models above its hold-out line: nothing to check against "
                   "hidden models"], out
    fits.loc[fits.index[heads][0], "holdout_threshold"] = synthetic_results[1].loc[fits.index[heads][0],
                                                                                   "holdout_threshold"]
    out = held_out_check(_copy(results, tmp_path / "one", fits))
    assert len(out) == 2 and out[1].startswith(("0 of 1 trusted answers right", "1 of 1 trusted answers right")), out
    assert out[1].endswith("; 2 more trusted with no model above the hold-out line to check"), out[1]


def test_a_workdir_that_cannot_be_made_is_one_line(tmp_path):
    """A --workdir under a file exited 1 with "[Errno 20] Not a directory"."""
    from meta_study.demo import run_demo
    from meta_study.errors import UserError

    f = tmp_path / "afile"
    f.write_text("")
    with pytest.raises(UserError, match=r"^--workdir .*afile/x: cannot be created \(Not a directory\)$"):
        run_demo(str(f / "x"), synthetic=True)


def test_the_mlflow_ui_command_of_a_workdir_with_a_space_is_one_shell_word(tmp_path, monkeypatch):
    """The last lines are commands to paste: "mlflow ui --backend-store-uri sqlite:////Users/Jane
    Doe/... --port 5000" split the URI in two in a shell."""
    import meta_study.ingest as ingest
    from meta_study import demo

    monkeypatch.setattr(demo, "refuse_mixed_workdir", lambda *a, **k: True)
    monkeypatch.setattr(demo, "synthetic_step", lambda *a, **k: "simulated")
    monkeypatch.setattr(demo, "log_synthetic", lambda *a, **k: 0)
    monkeypatch.setattr(demo, "examples_dir", lambda: None)
    monkeypatch.setattr(ingest, "open_sources", lambda *a, **k: [])
    monkeypatch.setattr(ingest, "ingest_sources", lambda *a, **k: [])
    monkeypatch.setattr(demo, "_refit", lambda *a: SimpleNamespace(status="ok", message="", version_dir=str(tmp_path)))
    monkeypatch.setattr(demo, "held_out_check", lambda p: [])
    monkeypatch.setattr(demo, "_compare_known_laws", lambda p, log: None)
    monkeypatch.setattr(demo, "_ui_url", lambda *a: "http://127.0.0.1:5000")
    lines: list[str] = []
    res = demo.run_demo(str(tmp_path / "Jane Doe"), synthetic=True, log=lines.append)
    ui = next(line for line in lines if "mlflow ui" in line)
    words = shlex.split(ui.split("MLflow UI", 1)[1])
    assert words[:3] == ["mlflow", "ui", "--backend-store-uri"] and words[3] == res.tracking_uri, words
    assert words[4:6] == ["--port", "5000"], words
