"""Exceptions that mean "the user gave bad input", as opposed to bugs.

The CLI prints a :class:`UserError` as one line on stderr and exits with code 2 (1 for the store's
transient ones: locked, busy, conflict; the input was fine); anything else is a bug and keeps its
traceback. :class:`Terminated` is neither: a stop signal, exit 128 + its number.
"""

from __future__ import annotations

import math
import numbers


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed mapping, a store that is not a store.

    The message names the input and the problem in one line, e.g.
    ``"mapping.yaml: unknown unit 'percnt' for us_accuracy (expected fraction, percent, error)"``.
    """


class Terminated(SystemExit):
    """The command was asked to stop by ``signum`` (SIGTERM: ``kill PID``, a service manager's stop,
    ``scancel``; SIGHUP: its terminal closed). Raised in the main thread by the CLI's handler, so
    that the stack unwinds as for Ctrl-C: a commit not yet published rolls back, the store's lock
    or lease is released, temporary files are removed. A ``SystemExit`` (exit code 128 +
    ``signum``, 143 for SIGTERM, as ``cluster/*.sh`` exit), so that no ``except Exception`` (a
    failed source, a failed refit round) takes it for an error and goes on."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(128 + signum)


class StoreLockedError(UserError):
    """Another writer holds the store's lock for longer than the timeout."""


class StoreConflictError(UserError):
    """Another writer published the store version a commit was built for (object stores, when
    a lease expired under a paused writer or was broken): nothing of the commit was stored."""


class StoreBusyError(UserError):
    """Every try of a read met a store changed under it (manifests or files gone between listing
    and reading, as other processes committed and collected garbage): nothing is wrong with the
    store, and the same command run again reads it."""


class StoreDamagedError(UserError):
    """A file the store's manifest lists is missing, truncated or unreadable.

    The message names the file and says what to do: ``meta-study store check STORE`` lists every
    damaged file, ``--repair`` sets them aside and drops them from the store.
    """


#: An option dataclass's field -> (its command-line flag, the scale from the field's unit to the
#: flag's, the unit said): so that a message about an option names what the user typed.
OPTION_FLAGS = {"holdout_quantile": ("--holdout-quantile", 1.0, "a quantile (fraction) "),
                "holdout_above": ("--holdout-above", 1.0, "a US accuracy "),
                "alpha_max": ("--alpha-max", 1.0, ""), "tolerance": ("--tolerance", 100.0, "in accuracy points, "),
                "ds_target": ("--ds-target", 1.0, "a DS accuracy (fraction) "),
                "payoff_threshold": ("--threshold", 1.0, "DS points per US point "), "trials": ("--trials", 1.0, ""),
                "sizes": ("--sizes", 1.0, "sample sizes "), "samples": ("--samples", 1.0, ""),
                "level": ("--level", 1.0, "a confidence level (fraction) ")}


def option_flag(option: str) -> tuple[str, float, str]:
    """(flag, scale, unit) of an option field (:data:`OPTION_FLAGS`; else ``--field-name``)."""
    return OPTION_FLAGS.get(option, ("--" + option.replace("_", "-"), 1.0, ""))


def option_message(option: str, value: float, allowed: "Range") -> str:
    """An option out of its range, in one line naming its flag, in the flag's units; a fraction or
    an accuracy typed in percent (``--ds-target 80``, ``--holdout-quantile 80``, ``--level 95``)
    gets the fraction it meant (only ``--ds-target`` did: the others said "must be in (0, 1]")."""
    flag, scale, unit = option_flag(option)
    if not _is_number(value):
        return f"{flag} must be a number {unit}{allowed.text(scale)}, got {value!r}"
    v = value * scale
    # from 2 up: 1.5 is a typo more often than 1.5% meant ("did you mean 0.015?" for --ds-target 1.5)
    pct = (f"; did you mean {v / 100:g}?" if ("accuracy" in unit or "fraction" in unit) and 2 <= v <= 100
           and allowed.contains(v / 100) else "")
    return f"{flag} must be {unit}{allowed.text(scale)}, got {_num(v)}{pct}"


def _num(v: float) -> str:
    """A number as the message shows it: an integral value in full (a ceiling of 1,000,000 read
    "1e+06", and a typo of 10**7 "got 1e+07"), anything else as ``:g``."""
    try:
        if float(v).is_integer() and abs(v) < 1e16:
            return str(int(v))
    except (OverflowError, ValueError):
        pass
    return f"{v:g}"


def _is_number(v: object) -> bool:
    """A real number (int, float, numpy's), not text, None or a complex."""
    return isinstance(v, numbers.Real)


class OptionError(UserError, ValueError):
    """An option outside its range, raised where the option is defined (the dataclasses), so
    that every caller checks the same thing. ``option`` is the field name, ``value`` its value and
    ``allowed`` its :class:`Range`; the command line re-words it with its flag and units."""

    def __init__(self, option: str, value: float, allowed: "Range", what: str = "") -> None:
        self.option, self.value, self.allowed, self.what = option, value, allowed, what
        # a library caller's text ("0.95") or None is named as given: "got {value:g}" raised a
        # TypeError of its own, and the comparison before it another
        got = _num(value) if _is_number(value) else f"{value!r} (not a number)"
        super().__init__(f"{option}{' (' + what + ')' if what else ''} must be {allowed.text()}, got {got}")


class Range:
    """A numeric range: ``Range(0, 1, lo_open=True)`` is (0, 1]; ``hi=None`` has no upper end but
    holds finite values only (``--threshold inf`` is a typo, not a setting)."""

    def __init__(self, lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def contains(self, v: float) -> bool:
        if not _is_number(v):     # "0.95" or None: not in any range (the comparison raised a TypeError)
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = math.isfinite(v) if self.hi is None else (v < self.hi if self.hi_open else v <= self.hi)
        return bool(above and below)   # False for NaN

    def text(self, scale: float = 1.0) -> str:
        lo = _num(self.lo * scale)
        if self.hi is None:
            return f"> {lo}" if self.lo_open else f">= {lo}"
        return f"in {'(' if self.lo_open else '['}{lo}, {_num(self.hi * scale)}{')' if self.hi_open else ']'}"

    def check(self, option: str, value: float, what: str = "") -> None:
        """Raise :class:`OptionError` unless ``value`` is in the range."""
        if not self.contains(value):
            raise OptionError(option, value, self, what)


#: The ranges the option dataclasses enforce (``FitOptions``, ``SelectionOptions``,
#: ``BootstrapOptions``, ingest's ``SourceOptions``: each field's check reads its entry here), in the field's units, and that
#: ``--help`` shows (in the flag's: :data:`OPTION_FLAGS`) without importing the analysis (~0.7 s).
#: ``level`` is the bootstrap's and the selection's interval level alike. An ``alpha_max`` above
#: 100 and a payoff threshold above 100 DS points per US point are unit mix-ups, not settings.
OPTION_RANGES = {"holdout_quantile": Range(0, 1, lo_open=True), "holdout_above": Range(0, 1),
                 "alpha_max": Range(0.001, 100, lo_open=True), "tolerance": Range(0, 1, lo_open=True),
                 "ds_target": Range(0, 1, lo_open=True), "payoff_threshold": Range(0, 100, lo_open=True),
                 "level": Range(0, 1, lo_open=True, hi_open=True),
                 # ingest's --overlap, seconds (NaN or inf was a traceback at the first MLflow query)
                 "overlap_s": Range(0)}
