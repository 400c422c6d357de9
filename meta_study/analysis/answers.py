"""The answer of a headline row of ``fits.parquet``, in words: one function for the CLI
(``meta-study fit``'s answer lines) and the HTML report (``report.html``, also the one a refit
renders and publishes among its MLflow run's artifacts; the run itself logs no answer text), so
that they never say different things.

Every number comes from the row. Accuracies are printed in percent, errors and slopes in
accuracy points ("pt"); a prediction past the tested horizon says so; an untrusted group states
its interval, never a point prediction. Intervals are at the row's ``level`` (90% by default, and
for a row written before the column existed: :func:`row_level`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..defaults import PAYOFF_THRESHOLD
from .selection import FLAG_HELP, PLUS_POINTS, slope_text as _slope


def _f(row: Mapping[str, Any], key: str) -> float:
    try:
        v = float(row.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan
    return v


def _missing(v: Any) -> bool:
    """Whether a cell holds no value: None, NaN or pandas' NA (a row read back from fits.csv has NaN
    where the table had "", and ``convert_dtypes`` makes that NA, whose truth value raises)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return type(v).__name__ == "NAType"      # pandas.NA, without importing pandas here


def _text(row: Mapping[str, Any], key: str) -> str:
    """A text cell, "" where it holds no value (never "nan")."""
    v = row.get(key)
    return "" if _missing(v) else str(v)


def _flag(row: Mapping[str, Any], key: str) -> bool:
    """A boolean cell, False where it holds no value."""
    v = row.get(key)
    return False if _missing(v) else bool(v)


def pct(v: float, digits: int = 1) -> str:
    """An accuracy (fraction) in percent; "never" for inf/NaN ends. A value that would round to
    100% (or 0%) without being it gets more digits, up to 3: a best model at 99.95% US read
    "100.0% US", beside "+1 US pt: past 100% US"."""
    if not math.isfinite(v):
        return "never"
    text = f"{100 * v:.{digits}f}"
    while digits < 3 and ((v < 1 and float(text) >= 100) or (v > 0 and float(text) <= 0)):
        digits += 1
        text = f"{100 * v:.{digits}f}"
    return f"{text}%"


def _digits(lo: float, hi: float) -> int:
    """The decimals (1 to 4) at which an interval's ends print apart in percent: a half-width under
    0.05 pt (tight back-tests, above headline.NO_SPREAD) read "85.0% DS [85.0%-85.0%]", a 90%
    interval of width 0. An estimate printed beside it takes the same decimals (at 1 its 85.03%
    read "85.0%", below "[85.02%-85.04%]")."""
    d = 1
    while d < 4 and math.isfinite(lo) and math.isfinite(hi) and lo < hi and pct(lo, d) == pct(hi, d):
        d += 1
    return d


def interval(lo: float, hi: float) -> str:
    """``[lo-hi]`` in percent (at :func:`_digits`), or "" when undefined."""
    if not (math.isfinite(lo) or math.isfinite(hi)) or math.isnan(lo) or math.isnan(hi):
        return ""
    d = _digits(lo, hi)
    return f" [{pct(lo, d)}-{pct(hi, d)}]"


#: How the members' spread of the stop-paying point and of the limit is said: the laws'
#: disagreement (their equal-tailed quantiles, the stop-paying one widened to hold the point), not
#: a calibrated 90% interval. In brackets, beside "Brackets give the 90% interval" in the report,
#: "an extrapolation: 26.0% [25.0%-28.0%]" read as a 90% interval on the limit at 100% US.
SPREAD = "(spread of the laws: "


def _with_trend(iv: str, lo: float, hi: float) -> str:
    """The interval ``iv`` (`` [a-b]``) with the trend's band inside its brackets, `` [a-b, trend
    c-d]``: what a model there will measure, then where the frontier's law lies (its back-tests
    scored against the final curve, not the measured points: :func:`~.headline.trend_around`).
    ``iv`` unchanged where either is missing (a row written before the band was stored), and
    where the band has no width (a hand-made row, or one written by the band's first form that
    day): "trend 90.4%-90.4%" claimed the law exactly; and where the band prints as the interval
    itself (the band is clipped to the interval: "[60.7%-82.2%, trend 60.7%-82.2%]" on OpenCLIP's
    ImageNet Sketch said one range twice, as if the law were no better known than a model)."""
    t = interval(lo, hi) if lo < hi else ""
    return f"{iv[:-1]}, trend {t[2:-1]}]" if iv and t and t != iv else iv


def _band_digits(lo: float, hi: float, t_lo: float, t_hi: float) -> int:
    """The decimals of an estimate printed beside its interval ``lo-hi`` and its trend's band
    ``t_lo-t_hi`` (:func:`_with_trend`): those of the finer. At the interval's alone, 90.36% read
    "90.4% DS [89.8%-90.9%, trend 90.35%-90.37%]", a point outside the band that holds it."""
    d = _digits(lo, hi)
    return max(d, _digits(t_lo, t_hi)) if interval(lo, hi) and t_lo < t_hi else d


def _spread(lo: float, hi: float) -> str:
    """`` (spread of the laws: lo-hi)`` in percent, or "" when undefined (as :func:`interval`)."""
    text = interval(lo, hi)
    return f" {SPREAD}{text[2:-1]})" if text else ""


#: A US accuracy that prints as 100% even with 3 decimals: the grid's last step (1 - 1e-7 to 1),
#: where a law reaches a target only in the limit of 100% US.
AT_100 = 1 - 5e-6


def _us_interval(lo: float, hi: float) -> str:
    """:func:`interval` of the US accuracy a target needs: an end at :data:`AT_100` or above is
    "100%", not "100.000%" (a limit, not a model's accuracy)."""
    text = interval(lo, hi)
    if text and math.isfinite(hi) and hi >= AT_100:
        text = f" [{pct(lo)}-100%]"
    return text


#: Why a back-tested step has no interval: every back-test hit exactly (headline.NO_SPREAD).
NO_SPREAD_WHY = "the back-tests hit exactly, no spread to calibrate one"
NO_SPREAD_TEXT = f"no 90% interval: {NO_SPREAD_WHY}"

#: The interval level of a row without a ``level`` column (a fits.parquet from before it was
#: recorded): every such table was made at SelectionOptions' default.
DEFAULT_LEVEL = 0.9


def row_level(row: Mapping[str, Any]) -> float:
    """The interval level of a row of ``fits.parquet`` (its ``level`` column, a fraction in (0, 1));
    :data:`DEFAULT_LEVEL` where the row has none (an older table, a hand-built dict). A row made with
    ``SelectionOptions(level=0.5)`` stores 50% intervals: its text said "90% interval"."""
    v = row.get("level") if hasattr(row, "get") else None
    if _missing(v):
        return DEFAULT_LEVEL
    try:
        lv = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"a fits.parquet row's level is not a number: {v!r}") from None
    if not 0 < lv < 1:
        raise ValueError(f"a fits.parquet row's level must be a fraction in (0, 1), got {lv:g}")
    return lv


def level_pct(level: float) -> str:
    """An interval level as the text names it: 0.9 -> "90%", 0.95 -> "95%", 0.5 -> "50%"."""
    return f"{100 * level:g}%"


def flags(warnings: Any) -> list[tuple[str, str]]:
    """``(label, detail)`` of each warning of a row, each label once (the first detail kept)."""
    out: dict[str, str] = {}
    # no warnings read back from fits.csv are NaN (or NA): they read "note: nan" (or raised)
    for part in ("" if _missing(warnings) else str(warnings)).split(";"):
        part = part.strip()
        if not part:
            continue
        label, _, detail = part.partition(":")
        label = label.strip()
        key = label if label in FLAG_HELP else "note"
        out.setdefault(key, detail.strip() if key != "note" else part)
    return list(out.items())


def _slope_texts(threshold: float, *values: float) -> list[str]:
    """Slopes (DS points per US point) at one number of decimals, 2 or as many more (up to 4) as it
    takes for each to read on the same side of ``threshold`` as it is (:func:`~.selection.slope_text`
    for several): a point and its spread at the same decimals read in order."""
    d = 2
    while d < 4 and not all(not math.isfinite(v) or (v < threshold) == (float(f"{v:.{d}f}") < threshold)
                            for v in values):
        d += 1
    return [_slope(v, threshold) if not math.isfinite(v) else f"{v:.{d}f}" for v in values]


def _below(v: float, flat: float) -> bool:
    """Whether ``v`` is said to be below the best DS seen: by more than 0.05 pt and as printed
    (0.2066 beside 0.2072 read "the laws' limit, 20.7%, is below the best DS seen (20.7%)")."""
    return math.isfinite(flat) and v < flat - 5e-4 and pct(v) != pct(flat)


@dataclass(frozen=True)
class Answer:
    """The parts of one group's answer (plain text; the report escapes them)."""

    trusted: bool
    word: str            # "trusted" or "not trusted"
    reason: str
    steps: tuple[str, ...]
    claims: str
    flags: tuple[tuple[str, str], ...]

    def text(self) -> str:
        """One line: trust and why, then the steps, then the supported claims."""
        # the steps' closing period only where the last one does not end a sentence already: a
        # replace("..", ".") over the whole line made a "..." in a reason or a name ("a...b") ".."
        steps = "; ".join(self.steps)
        steps += "" if not steps or steps.endswith(".") else "."
        return " ".join(p for p in (f"{self.word} ({self.reason}).", steps, self.claims) if p)


def answer(row: Mapping[str, Any], threshold: float | None = None) -> Answer:
    """The answer a headline row of ``fits.parquet`` supports (see the module doc). ``threshold``
    (DS points per US point) defaults to the row's ``payoff_threshold``, the one its stop-paying
    point was found with (:data:`~meta_study.defaults.PAYOFF_THRESHOLD` for a row without one): a row fitted with ``--threshold 0.2`` read
    "< 0.1 DS pt" beside a point found at 0.2.

    Raises:
        ValueError: a ``threshold`` outside (0, 100] (NaN too), as ``SelectionOptions`` refuses
            it: "Scaling stops paying (+1 US pt buys < 0 DS pt)" was a claim no row makes; or one
            other than the row's own ``payoff_threshold``: the row's stop-paying point was found
            with that one, and ``threshold=0.5`` on a row fitted at 0.2 read "stops paying (+1 US
            pt buys < 0.5 DS pt) at 95.0% US", where +1 US point still bought more than 0.5.
    """
    t = _f(row, "payoff_threshold")
    if threshold is None:
        threshold = t if math.isfinite(t) else PAYOFF_THRESHOLD
    elif not 0 < float(threshold) <= 100:
        raise ValueError(f"threshold must be DS points per US point in (0, 100], got {float(threshold):g}")
    elif math.isfinite(t) and not math.isclose(float(threshold), t, rel_tol=1e-9):
        raise ValueError(f"threshold {float(threshold):g} is not the row's payoff_threshold {t:g}, the one its "
                         f"stop-paying point was found with: leave threshold out, or fit again with "
                         f"payoff_threshold={float(threshold):g}")
    threshold = float(threshold)     # a numpy scalar or "0.2" as the number it says ("{:g}" of text raised)
    L = level_pct(row_level(row))    # the level the row's intervals were made at: "90%" by default
    trusted = _flag(row, "trusted")
    reason = _text(row, "trust_reason") or _text(row, "message") or "no usable fit"
    best, flat = _f(row, "best_us"), _f(row, "flat")
    beat = dict(flags(row.get("warnings"))).get("backtest", "")
    if trusted and "does not beat the flat guess" in beat and math.isfinite(flat):
        # trusted, and no better on its back-tests than "DS stays where it is": said in the line a
        # reader reads, not only in the backtest label's hover (CIFAR-10-C defocus_blur-3 read
        # "trusted" beside an error of 2.22 pt against the flat guess's 2.21)
        reason += f"; but no better on its back-tests than the flat guess, DS staying at {pct(flat)} ({beat})"
    steps: list[str] = []
    if math.isfinite(best) and math.isfinite(flat):
        # the highest US and the highest DS accuracy among the visible models: often two models
        # models above the hold-out threshold are hidden from the answer to check it: said, or a
        # reader took "+1 US pt" beyond 84.7% US for the data's best model (90.1% US on timm).
        # Every model above the best visible one is held out (visible: at or below the threshold),
        # so "above it": the threshold beside it ("82.7% US (48 models above 82.8% US held out)")
        # read as a gap between the two
        n_held, cut = _f(row, "n_heldout"), _f(row, "holdout_threshold")
        held = (f" ({int(n_held)} model{'s' if n_held != 1 else ''} above it held out to check "
                f"the answer)" if math.isfinite(n_held) and n_held > 0 and math.isfinite(cut) else "")
        steps.append(f"best visible model: {pct(best)} US{held}; best DS seen: {pct(flat)}")
    no_trend = "no_trend" in dict(flags(row.get("warnings")))
    hus = _f(row, "horizon_us")
    noted = said_spread = False
    unstated: list[int] = []
    past_100: list[int] = []
    for k in PLUS_POINTS:
        ds, lo, hi = _f(row, f"ds_plus{k}"), _f(row, f"ds_plus{k}_lo"), _f(row, f"ds_plus{k}_hi")
        u = best + k / 100.0
        if not math.isfinite(ds):
            if math.isfinite(best) and best <= 1.0 and u > 1.0 + 1e-9:   # (a best of 95: a percent, no fit)
                past_100.append(k)    # said, not dropped: a trusted group at 99.5% US stated nothing
            continue
        past = " (past the tested horizon)" if not (math.isfinite(hus) and u <= hus + 1e-12) else ""
        if trusted and not past:
            slope = _f(row, f"slope_plus{k}")
            if no_trend:     # the laws' slope is not evidence when DS is not shown to rise with US
                gain = (", no DS gain per US pt stated (no significant rise of DS with US in these models, "
                        "one-sided Spearman test)")
            else:
                # what the laws say +1 US point buys there, beside the headline's slope (which sits
                # between the levelling laws' ~0 and the rising ones'): "does it still pay" is a
                # question they may disagree on; said only where they do, at the shown digits. The
                # three at one number of decimals, each on its side of the threshold: the spread at
                # 2 read "0.0996 DS pt per US pt (spread of the laws: 0.10-0.45)", a point outside
                # its spread and a law below the threshold read at it, and 0.0999-0.1006 (one law
                # below the threshold, one above) read as one "0.10", its spread unsaid
                s_lo, s_hi = _f(row, f"slope_plus{k}_lo"), _f(row, f"slope_plus{k}_hi")
                spread = math.isfinite(s_lo) and math.isfinite(s_hi)
                texts = _slope_texts(threshold, slope, *((s_lo, s_hi) if spread else ()))
                gain = f", {texts[0]} DS pt per US pt" if math.isfinite(slope) else ""   # pt per pt
                if gain and spread and texts[1] != texts[2]:
                    gain += f" {SPREAD}{texts[1]}-{texts[2]})"
            # the headline is the laws' trend: a best DS seen above it is a model above the trend
            below = (f" (below the best DS seen, {pct(flat)}: that model lies above the laws' trend)"
                     if _below(ds, flat) and not noted else "")
            noted = noted or bool(below)
            # no interval where the back-tests all hit exactly (the row's warning says so): it read
            # "50.0% DS [50.0%-50.0%]", a 90% interval of width 0
            t_lo, t_hi = _f(row, f"ds_plus{k}_trend_lo"), _f(row, f"ds_plus{k}_trend_hi")
            iv = (_with_trend(interval(lo, hi), t_lo, t_hi)
                  or (f" (no {L} interval)" if said_spread else f" (no {L} interval: {NO_SPREAD_WHY})"))
            said_spread = said_spread or not interval(lo, hi)
            steps.append(f"+{k} US pt: {pct(ds, _band_digits(lo, hi, t_lo, t_hi))} DS{iv}{gain}{below}")
        elif interval(lo, hi):
            steps.append(f"+{k} US pt: {L} interval{interval(lo, hi)}{past}")
        else:
            unstated.append(k)
    # why a statement has no interval: no back-test reached past the best model, or they all hit exactly
    no_iv_why = "no back-test to calibrate one" if not math.isfinite(hus) else NO_SPREAD_WHY
    no_iv = f"no {L} interval ({no_iv_why})"
    if unstated:       # one line for them all, not "[none] (past the tested horizon)" three times
        pts = "/".join(f"+{k}" for k in unstated)
        steps.append(f"{pts} US pt: {no_iv}")
    if past_100:
        pts = "/".join(f"+{k}" for k in past_100)
        steps.append(f"{pts} US pt: past 100% US")
        p_us, p_ds = _f(row, "predict_us"), _f(row, "predict_ds")
        if len(past_100) == len(PLUS_POINTS) and math.isfinite(p_us) and math.isfinite(p_ds):
            # no step left to state: the prediction at the end of the tested horizon instead
            p_lo, p_hi = _f(row, "predict_lo"), _f(row, "predict_hi")
            iv_p = interval(p_lo, p_hi)
            pt_lo, pt_hi = (_f(row, "predict_trend_lo"), _f(row, "predict_trend_hi")) if trusted else (math.nan,) * 2
            iv_p = _with_trend(iv_p, pt_lo, pt_hi)
            # a trusted point without its interval says why, as a step does (it read "74.2% DS."
            # alone, the only point of the answer with neither an interval nor a reason)
            steps.append(f"at the tested horizon ({pct(p_us, 2)} US): " +
                         (f"{pct(p_ds, _band_digits(p_lo, p_hi, pt_lo, pt_hi))} DS{iv_p or f' (no {L} interval: {NO_SPREAD_WHY})'}" if trusted
                          else (f"{L} interval{iv_p}" if iv_p else no_iv)))   # not "90% interval [none]"
    claims = ""
    if trusted and _flag(row, "stop_paying_supported"):
        sp = _f(row, "stop_paying_us")
        sat, sat_lo, sat_hi = _f(row, "saturation"), _f(row, "saturation_lo"), _f(row, "saturation_hi")
        # a limit below the best DS seen: that model sits above the laws' curve, which has levelled off
        level = (f"DS has levelled off: the laws' limit, {pct(sat)}, is below the best DS seen ({pct(flat)})"
                 if _below(sat, flat) else
                 # p(100% US): never a finding, however well the stop-paying point is supported
                 f"the laws' limit at 100% US, an extrapolation: {pct(sat, _digits(sat_lo, sat_hi))}"
                 f"{_spread(sat_lo, sat_hi)}")
        # a supported point lies within the data: a member still paying at the best visible
        # model stops past the data, not "never" (which the laws' own extrapolation may say)
        sp_lo, sp_hi = _f(row, "stop_paying_lo"), _f(row, "stop_paying_hi")
        sp_iv = (f" {SPREAD}{pct(sp_lo)}-past the data)" if math.isfinite(sp_lo) and sp_hi == math.inf
                 else _spread(sp_lo, sp_hi))
        # the point with its spread's decimals: "at 72.5% US (spread of the laws: 72.45%-72.46%)"
        # read as a point outside the spread that holds it
        claims = (f"Scaling stops paying (+1 US pt buys < {threshold:g} DS pt) at {pct(sp, _digits(sp_lo, sp_hi))} US"
                  f"{sp_iv}; {level}.")
    target = _f(row, "ds_target")
    if math.isfinite(target):
        # "never" is inf (NaN in rows written before 2026-12-07, read alike below: a trusted row has
        # a fit, and NaN there meant never)
        un = _f(row, "us_needed")
        un_lo, un_hi = _f(row, "us_needed_lo"), _f(row, "us_needed_hi")
        # the interval's low end at 100% US (the band's upper edge reaches the target only in the
        # limit) or never: "needs US in the 90% interval [100.000%-never]" said nothing reachable
        lo_100 = un_lo >= AT_100
        iv = "" if lo_100 else _us_interval(un_lo, un_hi)
        # a trusted row with the trend's band (written since 2026-12-07): its interval is where
        # that band reaches the target, said so (the legend says brackets give the prediction
        # interval first: "needs 94.2% US [92.7%-95.6%]" read as that); an untrusted row's, and
        # an older row's, is the prediction interval's
        by_trend = trusted and any(math.isfinite(_f(row, c)) for c in
                                   (*(f"ds_plus{k}_trend_lo" for k in PLUS_POINTS), "predict_trend_lo"))
        named = f" (the trend's {L} band{iv})" if by_trend else f" ({L} interval{iv})"
        iv = f" [trend {iv[2:]}" if by_trend and iv else iv
        edge = f"the upper edge of the trend's {L} band" if by_trend else f"the {L} interval's upper edge"
        # a target just above the best DS seen, printed alike ("best DS seen: 30.0%" beside "30.0% DS
        # needs 65.0% US" for 29.996% and 30%): with the digits that tell them apart, and said so
        # (apart by less than 5e-7, as 0.3 and 0.29999999999999993 from an average: the same accuracy)
        tgt = f"{pct(target)} DS"
        same = math.isfinite(flat) and target > flat and pct(target, 4) == pct(flat, 4)
        if math.isfinite(flat) and target > flat and not same and pct(target) == pct(flat):
            d = _digits(flat, target)
            tgt = f"{pct(target, d)} DS (above the best DS seen, {pct(flat, d)})"
        if math.isfinite(flat) and (target <= flat or same):   # no prediction needed: a visible model has it
            need = f"{pct(target)} DS is reached already (best DS seen: {pct(flat)})"
        elif no_trend:   # "needs US in [89.8%-never]" on a task whose DS falls as US rises
            need = (f"{tgt}: no US accuracy is stated (no significant rise of DS with US in these models, "
                    "one-sided Spearman test)")
        elif lo_100 and (not trusted or not un < AT_100):
            need = f"{tgt} is not reached below 100% US, not even by {edge}"
        elif not trusted and iv:   # as the steps: an untrusted group states the interval, never a point
            # an interval lying wholly past the tested horizon says so, as a step's does
            past_iv = "" if math.isfinite(hus) and un_lo <= hus + 1e-12 else " (past the tested horizon)"
            need = f"{tgt} needs US in the {L} interval{iv}{past_iv}"
        elif not trusted:   # and without one (no usable fit, no back-test) states no US at all: "needs
            # US in the 90% interval [none]" read as a need of none, beside steps that said why there is none
            why = f"no {L} interval: {no_iv_why}" if math.isfinite(best) and math.isfinite(flat) else "no usable fit"
            need = f"{tgt}: no US accuracy is stated ({why})"
        elif math.isfinite(un) and math.isfinite(best) and un <= best + 1e-12:
            # the laws' trend passes the target within the data, but no visible model reaches it
            # (the trend runs above them there): "needs 81.8% US", the best model's, which has less
            need = f"{tgt} needs more US than the best visible model's {pct(best)}{iv}"
        elif math.isfinite(un) and un < AT_100:
            past = "" if math.isfinite(hus) and un <= hus + 1e-12 else " (past the tested horizon)"
            # with its interval's decimals ("needs 85.0% US [85.01%-85.04%]": outside its interval)
            need = f"{tgt} needs {pct(un, _digits(un_lo, un_hi))} US{iv}{past}"
        else:   # never, or only in the limit of 100% US (it read "needs 100.000% US")
            when = " only at 100% US" if math.isfinite(un) else " up to 100% US"
            # a statement about the curve up to 100% US: past the tested horizon, said as every other
            # such claim is ("97.0% DS is not reached by the prediction" read as a finding)
            past = "" if math.isfinite(hus) and hus >= AT_100 else ", past the tested horizon"
            need = (f"{tgt} is {'reached' if math.isfinite(un) else 'not reached'} by the prediction{when}{past}"
                    + (named if iv else ""))
        claims = (claims + " " if claims else "") + need + "."
    return Answer(trusted=trusted, word="trusted" if trusted else "not trusted", reason=reason,
                  steps=tuple(steps), claims=claims, flags=tuple(flags(row.get("warnings"))))


def answer_text(row: Mapping[str, Any], threshold: float | None = None) -> str:
    """:meth:`Answer.text` of :func:`answer`."""
    return answer(row, threshold).text()


def _first_step_slope(row: Mapping[str, Any]) -> float:
    """The slope (DS points per US point) a trusted answer states at its first step, +1 US point
    past the best visible model, where :func:`answer` states one: within the tested horizon and
    below 100% US, on a task whose DS is shown to rise with US. NaN where it states none."""
    k = PLUS_POINTS[0]
    best, hus = _f(row, "best_us"), _f(row, "horizon_us")
    if not (math.isfinite(best) and math.isfinite(hus) and best + k / 100.0 <= hus + 1e-12):
        return math.nan
    if not math.isfinite(_f(row, f"ds_plus{k}")) or "no_trend" in dict(flags(row.get("warnings"))):
        return math.nan
    return _f(row, f"slope_plus{k}")


def payoff_summary(rows: Sequence[Mapping[str, Any]], threshold: float | None = None) -> str:
    """One line across groups for "does scaling up pre-training still pay off downstream?", from
    the headline rows' own answers (:func:`answer`: nothing is stated here that a group's answer
    does not state): how many answers are trusted; of those, where +1 US point past the best
    visible model still buys ``threshold`` DS points or more (the median and range of those
    slopes), where less, where a stop-paying point within the data is stated, where DS does not
    track US; and that the untrusted ones answer with intervals, not numbers. Costs nothing: it
    reads the rows.

    Each row is read at its own ``payoff_threshold`` (:data:`PAYOFF_THRESHOLD` for a row without
    one), the one its stop-paying point was found with: rows fitted at 0.1 and 0.2 (two fits read
    as one table) were all counted at 0.1, beside stop-paying points found at 0.2. ``threshold``,
    if given, must be that of every row, as :func:`answer` refuses another (ValueError)."""
    rows = list(rows)
    own = [_f(r, "payoff_threshold") for r in rows]
    own = [t if math.isfinite(t) else PAYOFF_THRESHOLD for t in own]
    if threshold is not None:
        if not 0 < float(threshold) <= 100:
            raise ValueError(f"threshold must be DS points per US point in (0, 100], got {float(threshold):g}")
        other = sorted({t for t in own if not math.isclose(float(threshold), t, rel_tol=1e-9)})
        if other:
            raise ValueError(f"threshold {float(threshold):g} is not the rows' payoff_threshold "
                             f"({', '.join(f'{t:g}' for t in other)}), the one their stop-paying points were found "
                             f"with: leave threshold out, or fit again with payoff_threshold={float(threshold):g}")
    by_row = {id(r): t for r, t in zip(rows, own)}
    n = len(rows)
    trusted = [r for r in rows if _flag(r, "trusted")]
    head = f"Does more US accuracy still pay? {n} group{'s' if n != 1 else ''}, {len(trusted)} trusted"
    if not trusted:
        # "where it has one": a group with no back-test has no interval, and its line says so
        return (head + ": no answer is trusted, so none is a number: read each group's interval, where it "
                "has one, and why it is not trusted.")
    slopes = [(r, _first_step_slope(r)) for r in trusted]
    stated = [(v, by_row[id(r)]) for r, v in slopes if math.isfinite(v)]
    pays = [v for v, t in stated if v >= t]
    ts = sorted({t for _, t in stated})
    parts = []
    if stated:
        vals = [v for v, _ in stated]
        lo, med, hi = min(vals), float(np.median(vals)), max(vals)
        # one threshold: the slopes read on its side of it; several: on the side of the lowest
        t_lo, t_med, t_hi = _slope_texts(ts[0], lo, med, hi)
        gain = (f"{t_med} pt per US pt in the median ({t_lo}-{t_hi} over {len(stated)})" if len(stated) > 1
                else f"{t_med} pt per US pt")
        at = (f"the threshold of {ts[0]:g}" if len(ts) == 1 else
              f"its group's own threshold ({' or '.join(f'{t:g}' for t in ts)}, as each was fitted)")
        parts.append(f"at +1 US pt past the best visible model DS gains {gain}, {len(pays)} of {len(stated)} "
                     f"at or above {at}")
    stops = sum(1 for r in trusted if _flag(r, "stop_paying_supported"))
    if stops:
        parts.append(f"{stops} state{'s' if stops == 1 else ''} a stop-paying point within the data")
    flat = sum(1 for r in trusted if "no_trend" in dict(flags(r.get("warnings"))))
    if flat:
        # "no DS gain" read the test's absence of evidence as evidence of absence: no_trend is only
        # that the one-sided test did not show DS rising with US (p >= selection.TREND_P)
        parts.append(f"{flat} show{'s' if flat == 1 else ''} no significant rise of DS with US (one-sided "
                     "Spearman test)")
    unstated = len(trusted) - len(stated) - flat
    if unstated:
        parts.append(f"{unstated} state{'s' if unstated == 1 else ''} no slope at +1 US pt (past the tested "
                     "horizon, past 100% US, or none fitted there)")
    untrusted = n - len(trusted)
    tail = (f" The other {untrusted} answer{'s are' if untrusted != 1 else ' is'} not trusted: read "
            f"{'their intervals and reasons' if untrusted != 1 else 'its interval and reason'}, not a number." if untrusted else "")
    return head + ": " + "; ".join(parts) + "." + tail


__all__ = ["DEFAULT_LEVEL", "Answer", "answer", "answer_text", "flags", "interval", "level_pct", "pct",
           "payoff_summary", "row_level"]
