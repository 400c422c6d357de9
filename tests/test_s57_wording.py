"""Wording that said more than the numbers (session 57).

* The bootstrap's note flagged only alpha on its bound: openclip's Country211 (DS accuracies
  ~30-40%) read "e_IR 0.0 [0.0-0.0], saturation 100.0 [100.0-100.0]" with an empty note, a
  certain 100% saturation that is the fitter's bound on e_IR, not an estimate.
* The summary across groups said "no DS gain" where the one-sided Spearman test only did not show
  DS rising with US (absence of evidence read as evidence of absence).
* ``chord`` gave the widest single unsupported stretch of the frontier as "N% of the frontier's US
  range has no model", which reads as the total.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from meta_study.analysis import selection as S
from meta_study.analysis.answers import answer_text, payoff_summary
from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap_group
from meta_study.defaults import ALPHA_MAX
from meta_study.report import _bootstrap_html

OPENCLIP = Path(__file__).resolve().parents[1] / "examples" / "data" / "openclip" / "us_ds.csv"
NAN3 = (math.nan, math.nan, math.nan)


def test_country211_saturation_on_e_ir_bound_is_said_in_the_report(tmp_path: Path) -> None:
    d = pd.read_csv(OPENCLIP)
    g = d[d["ds_task"] == "Country211"]
    boot = bootstrap_group(("ImageNet 1k", "Country211", "zeroshot", None), g["us_accuracy"].to_numpy(),
                           g["ds_accuracy"].to_numpy(), BootstrapOptions(samples=20, frontiers=("all",)))
    e_ir = boot[boot["param"] == "e_ir"].iloc[0]
    assert (e_ir["estimate"], e_ir["lo"], e_ir["hi"]) == (0.0, 0.0, 0.0)      # the case the reviewer saw
    html = _bootstrap_html(boot, ALPHA_MAX, tmp_path)
    assert "100.0 [100.0-100.0]" in html, html
    assert ("e_IR at its bound 0 across its whole interval: the saturation 100% is the bound, not an estimate"
            in html), html


def test_e_ir_bound_words_estimate_ends_and_upper_bound() -> None:
    from meta_study.analysis.bootstrap import eir_bound_words

    # an estimate inside, an end on a bound: said as alpha's ("interval reaches its bound")
    assert eir_bound_words(0.02, 0.0, 0.05) == ("", "interval reaches its bound 0, a saturation of 100%")
    # the estimate on the bound, the interval not all there: the bound, not "its whole interval"
    assert eir_bound_words(0.0, 0.0, 0.04) == (
        "at its bound 0: the saturation 100% is the bound, not an estimate", "")
    # the upper bound 1 (DS error 100%): a saturation of 0% is the bound too
    at, reach = eir_bound_words(1.0, 0.9, 1.0)
    assert at == "at its bound 1: the saturation 0% is the bound, not an estimate" and reach == "", (at, reach)
    assert eir_bound_words(0.3, 0.2, 0.4) == ("", "")
    assert eir_bound_words(math.nan, math.nan, math.nan) == ("", "")


def test_bound_notes_k_zero_said_once() -> None:
    from meta_study.analysis.bootstrap import bound_notes

    # a flat law: alpha at its lower bound already says k = 0; not said twice
    flat = bound_notes({"k": (0.0, 0.0, 0.1), "alpha": (1e-3, 1e-3, 2.0), "e_ir": (0.3, 0.25, 0.35)}, ALPHA_MAX)
    assert sum("k = 0" in n or "k at its bound" in n for n in flat) == 1, flat
    # k = 0 with alpha elsewhere (the search left it there): k's bound is said
    k0 = bound_notes({"k": (0.0, 0.0, 0.1), "alpha": (1.5, 0.5, 3.0), "e_ir": (0.3, 0.25, 0.35)}, ALPHA_MAX)
    assert k0 == ["k at its bound 0: a flat law, alpha not identified"], k0
    # alpha's and e_IR's notes together, alpha's first (as before)
    both = bound_notes({"k": (1.0, 0.9, 1.1), "alpha": (ALPHA_MAX, 3.0, ALPHA_MAX), "e_ir": (0.0, 0.0, 0.0)},
                       ALPHA_MAX)
    assert both[0] == f"alpha at its bound {ALPHA_MAX:g}" and both[1].startswith("e_IR at its bound 0"), both
    assert bound_notes({"k": NAN3, "alpha": NAN3, "e_ir": NAN3}, ALPHA_MAX) == []


def _row(warnings: str = "", trusted: bool = True) -> dict:
    return {"trusted": trusted, "best_us": 0.80, "horizon_us": 0.85, "flat": 0.6, "payoff_threshold": 0.1,
            "ds_plus1": 0.62, "ds_plus1_lo": 0.6, "ds_plus1_hi": 0.64, "slope_plus1": 0.5, "warnings": warnings,
            "stop_paying_supported": False, "stop_paying_us": math.nan,
            "trust_reason": "back-test error 1.0 pt <= tolerance 3 pt over 4 cuts"}


def test_no_trend_is_said_as_no_significant_rise() -> None:
    flat = _row("no_trend: DS is not shown to rise with US in these models (Spearman rho = 0.10, one-sided p = 0.30)")
    s = payoff_summary([_row(), flat])
    assert "1 shows no significant rise of DS with US (one-sided Spearman test)" in s, s
    assert "no DS gain" not in s, s
    text = answer_text(flat)
    assert "no DS gain per US pt stated (no significant rise of DS with US in these models" in text, text
    assert "measurable" not in text, text


def test_chord_says_the_widest_stretch_not_the_total() -> None:
    # three clusters of models on a concave law, two gaps of ~35% of the US range between them, and
    # two models far (15 points) below the frontier inside the gaps: unsupported stretches of ~76%
    # of the range in all, the widest ~42%
    rng = np.random.default_rng(0)
    us = np.concatenate([rng.uniform(0.40, 0.45, 15), rng.uniform(0.62, 0.66, 15), rng.uniform(0.85, 0.90, 15),
                         [0.55, 0.75]])
    ds = 1 - (0.8 * (1 - us) ** 1.5 + 0.05) - rng.uniform(0, 0.03, us.size)
    ds[-2:] -= 0.15
    (sel,) = S.select_groups([(us, ds)], [("u", "d", "p", None)], [1.0])
    chord = [w for w in sel.warnings if w.startswith("chord:")]
    assert len(chord) == 1, sel.warnings
    m = re.fullmatch(r"chord: the widest stretch of the frontier with no model within 2 DS points of it spans "
                     r"(\d+)% of its US range", chord[0])
    assert m, chord[0]
    near = np.sort(us[:-2])
    gaps = np.diff(near) / (near[-1] - near[0])
    widest, total = 100 * gaps.max(), 100 * gaps[gaps > 0.1].sum()
    assert abs(int(m.group(1)) - widest) <= 3 and total - widest > 20, (m.group(1), widest, total)


def _boot_rows(params: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    """A bootstrap table of one group and frontier (BOOTSTRAP_COLUMNS), 200 of 200 resamples usable."""
    from meta_study.analysis.bootstrap import BOOTSTRAP_COLUMNS

    rows = [{"us_task": "up", "ds_task": "a", "eval_protocol": "zeroshot", "shots": None, "frontier": "all",
             "param": p, "estimate": e, "lo": lo, "hi": hi, "level": 0.95, "samples": 200, "n_ok": 200,
             "status": "ok"} for p, (e, lo, hi) in params.items()]
    return pd.DataFrame(rows, columns=list(BOOTSTRAP_COLUMNS))


def test_meta_study_bootstrap_says_e_ir_on_its_bound_and_k_0_only_where_k_is_0() -> None:
    """`meta-study bootstrap`'s lines say what the report's note says: e_IR pinned at 0 (a saturation
    of 100% that is the bound), and alpha at its floor is "k = 0" only where k is 0 (the fitter also
    stops there with k > 0: a flat law all the same)."""
    from meta_study.cli import bootstrap_lines

    pinned = _boot_rows({"k": (0.7, 0.6, 0.8), "alpha": (1.2, 0.9, 1.5), "e_ir": (0.0, 0.0, 0.0)})
    text = "\n".join(bootstrap_lines(pinned, ALPHA_MAX))
    assert "(e_IR at its bound 0 across its whole interval: the saturation 100% is the bound, not an estimate)" \
        in text, text
    floor_k_pos = _boot_rows({"k": (0.3, 0.2, 0.4), "alpha": (0.001, 0.001, 0.001), "e_ir": (0.2, 0.1, 0.3)})
    text = "\n".join(bootstrap_lines(floor_k_pos, ALPHA_MAX))
    assert "at its bound 0.001 (a flat law, alpha not identified)" in text and "k = 0" not in text, text
    floor_k0 = _boot_rows({"k": (0.0, 0.0, 0.0), "alpha": (0.001, 0.001, 0.001), "e_ir": (0.2, 0.1, 0.3)})
    text = "\n".join(bootstrap_lines(floor_k0, ALPHA_MAX))
    assert text.count("k = 0") == 1 and "(k = 0: a flat law, alpha not identified)" in text, text


def test_a_trusted_answer_no_better_than_the_flat_guess_says_so_in_its_line() -> None:
    """A trusted group whose back-tests did not beat the flat guess (CIFAR-10-C defocus_blur-3: 2.22
    pt against 2.21) read "trusted (back-test error 2.2 pt <= tolerance 3 pt ...)": the comparison
    was only in the backtest label's hover. The answer line now says it; an untrusted one, or one
    that beats flat, is unchanged."""
    row = {"trusted": True, "trust_reason": "back-test error 2.2 pt <= tolerance 3 pt over 4 cuts",
           "best_us": 0.85, "flat": 0.54, "horizon_us": 0.86,
           "warnings": "backtest: error 2.22 pt does not beat the flat guess (2.21 pt)"}
    text = answer_text(row)
    assert text.startswith("trusted (back-test error 2.2 pt <= tolerance 3 pt over 4 cuts; but no better on its "
                           "back-tests than the flat guess, DS staying at 54.0% (error 2.22 pt does not beat the "
                           "flat guess (2.21 pt))"), text
    assert "no better on its back-tests" not in answer_text({**row, "trusted": False})
    assert "no better on its back-tests" not in answer_text({**row, "warnings": "chord: x"})


def test_a_trend_band_that_prints_as_the_interval_is_not_said_twice() -> None:
    """The band is clipped to the interval; where it prints as the interval itself, "[60.7%-82.2%,
    trend 60.7%-82.2%]" said one range twice (OpenCLIP ImageNet Sketch)."""
    from meta_study.analysis.answers import _with_trend, interval

    iv = interval(0.607, 0.822)
    assert _with_trend(iv, 0.607, 0.822) == " [60.7%-82.2%]"
    assert _with_trend(iv, 0.62, 0.80) == " [60.7%-82.2%, trend 62.0%-80.0%]"
