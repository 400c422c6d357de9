"""One analysis pipeline: store -> :class:`Analysis` -> a results directory -> the report.

``meta-study fit / sensitivity / bootstrap / correlations / report``, the refit job (and so the
demo) all go through :func:`analyze` and :class:`ResultsDir`:

- :func:`analyze` computes the parts asked for (``fits``, ``sensitivity``, ``bootstrap``,
  ``correlations``) and returns a frozen :class:`Analysis` holding their tables, the options that
  made each, and the provenance (store, store version, selection, meta-study version).
- :class:`ResultsDir` owns the layout of a results directory. ``results.json`` records, per part,
  the options and selection it was made with and the store version it saw. A part already there
  with the same options, selection and store version is **reused**, not recomputed. A part made
  with other options or another selection is never overwritten silently: the command refuses in
  one line and names the difference (use another ``--out``, or the same options). The same
  options on a newer store version recompute the part: that is an update, not a conflict.
- **Incremental** (the refit): given the groups and a :class:`Previous` results directory with the
  keys of the groups that did not change, sensitivity and bootstrap are computed for the changed
  groups only and the previous rows of the others are reused; the fits are always made for every
  group (seconds). The tables equal a full analysis of the same store with the same options.
- :func:`meta_study.report.render_report` renders an :class:`Analysis`.

Every table is written to a temporary name and renamed into place (:func:`outputs.write_table`), and
a part's entry in ``results.json`` after its tables, so an interrupted command leaves either the old
part or the new one; a part is recorded as ``incomplete`` (with its options) before it is written,
so that the same command run again redoes what an interruption left (and reuses the parts it had
written whole), where other options are still refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pandas as pd

from .. import __version__
from ..errors import UserError, option_flag
from ..failpoints import failpoint
from .fitting import FitOptions
from .groups import GROUP_COLUMNS, Group, Selection, Snapshot
from .outputs import Outputs, named_os_error, write_correlations, write_fits, write_sensitivity, write_table
from .tables import bootstrap_table, correlations_tables, fit_table, points_table, sensitivity_table
from .bootstrap import BootstrapOptions
from .sensitivity import SensitivityOptions

Progress = Callable[[str, int, int | None], None]

MANIFEST = "results.json"
#: The main table of each part: present means the part was written.
MAIN_TABLE = {"fits": "fits.parquet", "sensitivity": "sensitivity.parquet", "bootstrap": "bootstrap.parquet",
              "correlations": "correlations/f21_us_ds_spearman.parquet"}
#: The tables of the correlations part (``correlations/NAME.parquet``), in the order they are made:
#: a part missing one is made again (reused, `correlations` ended in a KeyError's traceback).
CORRELATION_TABLES = ("f1_shots_correlation", "f2_increase_likelihood", "f20_ds_task_spearman", "f21_us_ds_spearman")


@dataclass(frozen=True)
class AnalysisOptions:
    """What to compute. ``None`` leaves a part out. The execution settings (Ray, workers) are
    not options: they never change a result (draws are seeded per group)."""

    fit: FitOptions = FitOptions()
    fits: bool = True
    sensitivity: SensitivityOptions | None = None
    bootstrap: BootstrapOptions | None = None
    correlations: bool = False

    def parts(self) -> tuple[str, ...]:
        return tuple(p for p, on in (("fits", self.fits), ("sensitivity", self.sensitivity is not None),
                                     ("bootstrap", self.bootstrap is not None),
                                     ("correlations", self.correlations)) if on)

    def of(self, part: str) -> Any:
        """The options that determine ``part`` (fit options for the fits and correlations).

        Sensitivity and bootstrap refit Eq. 1 on their own frontiers: the selection's options
        (laws, frontiers, --threshold, --ds-target, --tolerance) do not change them, so they are
        left out (at their defaults). With them, `bootstrap --out D` then `report --out D
        --threshold 0.2` was refused as "made with other options: --threshold 0.1", an option
        `bootstrap` does not even have."""
        from dataclasses import replace

        from .selection import SelectionOptions

        def own(o: Any) -> Any:
            return None if o is None else replace(o, fit=replace(o.fit, selection=SelectionOptions()))

        # the correlation tables use the fits' parameters (which laws and frontiers were fitted,
        # how), never the headline's answer: `correlations --out D` then `report --out D
        # --threshold 0.2` was refused the same way
        s = self.fit.selection
        corr = replace(self.fit, selection=SelectionOptions(laws=s.laws, frontiers=s.frontiers))
        return {"fits": self.fit, "sensitivity": own(self.sensitivity), "bootstrap": own(self.bootstrap),
                "correlations": corr}[part]


@dataclass(frozen=True)
class Analysis:
    """The results of one analysis of one store version: tables, options, provenance.

    ``fits`` follows :data:`tables.FITS_COLUMNS` (None when not asked for, e.g. by ``meta-study
    bootstrap``; correlations compute the fits they need without keeping them); ``sensitivity``
    and ``bootstrap`` are None when not computed; ``correlations`` maps table names
    (``f1_shots_correlation``, ...) to tables. ``reused`` names the parts read back from a
    results directory instead of computed; ``n_groups`` counts the groups the selection matched
    (-1: not counted, every part was reused).
    """

    fits: pd.DataFrame | None
    options: AnalysisOptions
    provenance: Mapping[str, Any]
    n_groups: int = 0
    sensitivity: pd.DataFrame | None = None
    bootstrap: pd.DataFrame | None = None
    correlations: Mapping[str, pd.DataFrame] | None = None
    reused: tuple[str, ...] = ()
    points: pd.DataFrame | None = None   # tables.POINTS_COLUMNS: the fitted groups' models (points.parquet)
    snapshot_id: str = ""                # the store version the parts are of (Store.snapshot_id)
    # for the figures of freshly computed fits (the groups' points and selections); not persisted
    panels: Sequence[Mapping[str, Any]] = field(default=(), repr=False, compare=False)


_CODE: list[str] = []


def analysis_code() -> str:
    """sha256 (16 hex digits) of the code that makes results: meta_study/analysis/*.py with the
    package's defaults and schema (~25 files, ~2 ms, once per process). Results made by other code
    (an upgrade, a fix to a law or a frontier) are not reused: the package version alone does not
    change between a developer's commits."""
    if not _CODE:
        import hashlib

        here = Path(__file__).resolve().parent
        h = hashlib.sha256(__version__.encode() + b"\0")
        for p in sorted(here.glob("*.py")) + [here.parent / "defaults.py", here.parent / "schema.py"]:
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        _CODE.append(h.hexdigest()[:16])
    return _CODE[0]


def _key(part: str, options: AnalysisOptions, selection: Selection) -> dict[str, str]:
    # repr of frozen dataclasses of numbers, strings and tuples: stable across runs and processes
    return {"options": repr(options.of(part)), "selection": repr(selection)}


def _fields(text: str) -> dict[str, Any] | None:
    """The fields of an options or selection repr (``Name(a=1, fit=Inner(b=(1, 2)))``) by their
    dotted path (``fit.b``), as Python values; None when ``text`` is not such a repr."""
    import ast

    try:
        node = ast.parse(str(text), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    out: dict[str, Any] = {}

    def walk(call: Any, prefix: str) -> bool:
        if not isinstance(call, ast.Call):
            return False
        for kw in call.keywords:
            if kw.arg is None:
                return False
            if isinstance(kw.value, ast.Call):
                if not walk(kw.value, f"{prefix}{kw.arg}."):
                    return False
                continue
            try:
                out[prefix + kw.arg] = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                return False
        return True

    return out if walk(node, "") else None


#: Option fields whose flag is not ``--field-name`` nor in :data:`~meta_study.errors.OPTION_FLAGS`.
_FLAGS = {"replace": "--bootstrap"}


def _shown(name: str, value: Any, digits: int = 6) -> str:
    """An option's value as the user would type it (tuples comma-joined, ``--tolerance`` in points),
    numbers to ``digits`` significant digits (:func:`_shown_pair` asks for more where 6 read alike)."""
    if value is None:
        return "not given"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(name, v, digits) for v in value) if value else "none"
    if isinstance(value, (int, float)):
        scale = option_flag(name)[1]
        if isinstance(value, int) and scale == 1:   # --seed 20261206, not 2.02612e+07
            return str(value)
        return f"{float(value) * scale:.{digits}g}"
    return str(value)


def _shown_pair(name: str, old: Any, new: Any) -> tuple[str, str]:
    """``old`` and ``new`` as :func:`_shown` gives them, with as many digits as tell them apart:
    ``--level 0.95 (this command: 0.95)`` named a difference it did not show."""
    for digits in range(6, 18):
        a, b = _shown(name, old, digits), _shown(name, new, digits)
        if a != b:
            break
    return a, b


def _selection_text(fields: Mapping[str, Any]) -> str:
    """A selection as the flags that make it (``--ds-task pets --shots 5``), or "all groups"; a
    name with a space or a quote quoted as a shell takes it (``--ds-task 'oxford pets'``: two
    words read as two names)."""
    import shlex

    names = GROUP_COLUMNS
    words = [f"--{name.replace('_', '-')} {shlex.quote(str(v))}" for name in names for v in fields.get(name) or ()]
    if fields.get("layer") is not None:
        words.append(f"--layer {fields['layer']}")
    return " ".join(words) or "all groups"


def _same_selection(old: Any, new: str) -> bool:
    """Whether two selection reprs select the same rows: the same names, in any order."""
    if old == new:
        return True
    a, b = _fields(str(old)), _fields(new)
    if a is None or b is None or set(a) != set(b):
        return False
    return all(sorted(map(repr, a[k])) == sorted(map(repr, b[k])) if isinstance(a[k], tuple) and
               isinstance(b[k], tuple) else a[k] == b[k] for k in a)


def _option_diffs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """(flag, ``--flag OLD (this command: NEW)``) of each option that differs between two part
    keys (:func:`_key`) of the same selection; None when a record is no options repr."""
    a, b = _fields(str(old.get("options", ""))), _fields(new["options"])
    if a is None or b is None:
        return None
    # each differing field by its path (nested options repeat names: seed, fit, frontiers), shown
    # by its flag; one flag said once
    diffs: list[tuple[str, str]] = []
    for path in [*a, *(p for p in b if p not in a)]:
        if a.get(path) == b.get(path):
            continue
        name = path.rsplit(".", 1)[-1]
        flag = _FLAGS.get(name) or option_flag(name)[0]
        was, now = _shown_pair(name, a.get(path), b.get(path))
        text = f"{flag} {was} (this command: {now})"
        if (flag, text) not in diffs:
            diffs.append((flag, text))
    return diffs


def _differing_flags(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The flags that would make ``new`` (a part key) the same as ``old`` (a recorded one)."""
    if old.get("selection") != new["selection"]:
        a, b = _fields(str(old.get("selection"))), _fields(new["selection"])
        if a is None or b is None:
            return []
        return [f"--{k.replace('_', '-')}" for k in [*a, *(k for k in b if k not in a)] if a.get(k) != b.get(k)]
    return list(dict.fromkeys(flag for flag, _ in _option_diffs(old, new) or ()))


def _describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    if old.get("selection") != new["selection"]:
        a, b = _fields(str(old.get("selection"))), _fields(new["selection"])
        if a is None or b is None:
            return f"another selection ({old.get('selection')})"
        return f"another selection: {_selection_text(a)} (this command: {_selection_text(b)})"
    diffs = _option_diffs(old, new)
    if diffs is None:
        return "other options: " + str(old.get("options", ""))[:120]
    return "other options: " + ("; ".join(t for _, t in diffs[:3]) if diffs else str(old.get("options", ""))[:120])


def _command_flags() -> tuple[str, frozenset[str]] | None:
    """The name and the flags (its visible options) of the ``meta-study`` command running, or None
    outside one (a library caller, an ``analysis/*.py`` script)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    flags = frozenset(o for p in ctx.command.params if isinstance(p, click.Option) and not p.hidden
                      for o in (*p.opts, *p.secondary_opts))
    return ctx.info_name or ctx.command.name or "this command", flags


def _refusal_advice(old: Mapping[str, Any], new: Mapping[str, Any],
                    command: tuple[str, frozenset[str]] | None = None) -> str:
    """What to do about a part made with other options: the same options, where the running
    command has the flags that differ. `report --loss huber --out D` then `correlations --out D`
    said "give another --out, or the same options to reuse it", and correlations has no --loss.
    ``command``: the name and flags of the command running (:class:`ResultsDir`'s); default the
    ``meta-study`` command's, read from click."""
    same = "give another --out, or the same options to reuse it"
    command = command or _command_flags()
    if command is None:
        return same
    name, flags = command
    missing = [f for f in _differing_flags(old, new) if f not in flags]
    return f"{name} has no {', '.join(missing)} option: give another --out" if missing else same


#: The command that makes each part (``meta-study NAME``).
PART_COMMAND = {"fits": "fit", "sensitivity": "sensitivity", "bootstrap": "bootstrap", "correlations": "correlations"}


def _command_defaults() -> AnalysisOptions:
    """Every part's options as the commands make them with no option given (sensitivity on the
    fits' frontiers, as `sensitivity` and `report` build it; the bootstrap on its own pair)."""
    f = FitOptions()
    return AnalysisOptions(fit=f, sensitivity=SensitivityOptions(fit=f, frontiers=f.selection.frontiers),
                           bootstrap=BootstrapOptions(fit=f), correlations=True)


def _typed(name: str, value: Any) -> str | None:
    """``value`` as its flag takes it, to the digits that give it back exactly (``--tolerance 3``
    for 0.03); "" for an on flag, None where no flag value gives it (None, an off flag)."""
    if value is None or value is False:
        return None
    if value is True:
        return ""
    if isinstance(value, float):
        scale = option_flag(name)[1]
        for digits in range(6, 18):
            text = _shown(name, value, digits)
            if float(text) / scale == value:
                return text
    return _shown(name, value)


def made_with(part: str, record: Mapping[str, Any], flags: Iterable[str],
              kept: Iterable[str] = ()) -> tuple[dict[str, str], str] | None:
    """The options (``{flag: value}``, "" for an on flag) and the selection (flags, "" for all
    groups) that make ``part`` as its ``results.json`` entry ``record`` says it was made, for a
    command with ``flags``; None where one of them has no flag there. ``kept``: option paths the
    command takes from the part itself (``report`` keeps a bootstrap's ``seed``)."""
    import shlex

    have, sel = _fields(str(record.get("options", ""))), _fields(str(record.get("selection", "")))
    if have is None or sel is None:
        return None
    default = _fields(repr(_command_defaults().of(part))) or {}
    flags, kept, out = frozenset(flags), frozenset(kept), {}
    for path, value in have.items():
        if path in kept or (path in default and default[path] == value):
            continue
        name = path.rsplit(".", 1)[-1]
        flag, word = _FLAGS.get(name) or option_flag(name)[0], _typed(name, value)
        # a nested field repeats another's flag (sensitivity's frontiers and its fits'): one value
        if word is None or flag not in flags or out.get(flag, word) != word:
            return None
        out[flag] = shlex.quote(word) if word else ""
    text = _selection_text(sel)
    return out, "" if text == "all groups" else text


def _manifest_problem(m: Any) -> str:
    """What keeps the JSON ``m`` from being a ``results.json`` ("" if nothing)."""
    if not isinstance(m, dict):
        return f"a JSON {_json_type(m)}, not an object"
    if not isinstance(m.get("parts"), dict):
        return "no \"parts\" object" if "parts" not in m else f"\"parts\" is a JSON {_json_type(m['parts'])}"
    bad = sorted(str(k) for k, v in m["parts"].items() if not isinstance(v, dict))
    return f"part {bad[0]!r} is not an object" if bad else ""


def _json_type(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


class ResultsDir:
    """A results directory: its tables, figures, ``results.json`` and ``index.html``."""

    def __init__(self, path: str | os.PathLike[str], *, command: tuple[str, Iterable[str]] | None = None) -> None:
        """``command``: the name and the flags (every spelling, ``--out`` included) of the command
        that runs, which alone a refusal's advice names: an ``analysis/*.py`` script passes its
        argparse parser's (:func:`~meta_study.analysis.scripts.command_flags`). Default: the
        running ``meta-study`` command's, read from click; outside one, none (the advice names the
        options that differ, not which flags give them). A script's refusal told
        `fig3_sensitivity.py` to give the --loss it has no option for."""
        self.path = Path(path)
        self.command = None if command is None else (str(command[0]), frozenset(command[1]))

    def manifest(self) -> dict[str, Any]:
        """``results.json``: ``{"parts": {part: {options, selection, ...}}}`` (no parts when absent).

        Raises:
            UserError: one line, when it cannot be read or is not of that shape: never read as
                empty, which would let the next write replace what it holds.
        """
        p = self.path / MANIFEST
        if not p.exists():
            return {"parts": {}}
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{p}: not a meta-study results manifest ({getattr(e, 'strerror', None) or e})") from None
        why = _manifest_problem(m)
        if why:
            raise UserError(f"{p}: not a meta-study results manifest ({why})")
        return m

    def recorded_options(self, part: str) -> dict[str, Any] | None:
        """The options ``part`` was made with, by their dotted path (``fit.loss``), as Python
        values: None where the part is not here (no record, or its main table gone) or its record
        cannot be read (an unreadable manifest included: the part is then compared as it is)."""
        try:
            have = self.manifest()["parts"].get(part)
        except UserError:
            return None
        if not isinstance(have, dict) or not (self.path / MAIN_TABLE[part]).exists():
            return None
        return _fields(str(have.get("options", "")))

    def stale_parts(self, parts: Iterable[str], snapshot_id: str,
                    selection: Selection | None = None) -> dict[str, tuple[dict[str, Any], tuple[str, ...]]]:
        """The parts besides ``parts`` (a command's) that the directory holds, made from another
        store version than ``snapshot_id`` (another store's, or an older one) or of another
        ``selection`` than the command's, by their ``results.json`` entries: each entry with why
        (``"store version"``, ``"selection"``, or both). `sensitivity A --out D`, then `fit B --out
        D` (or `sensitivity A --ds-task sst2`, then `fit A --ds-task rte`): D held the fits beside
        a sensitivity of something else, and only results.json said so."""
        try:
            recorded = self.manifest()["parts"]
        except UserError:   # said by the command that reads it; nothing to compare here
            return {}
        mine, out = set(parts), {}
        for p in MAIN_TABLE:   # in the commands' order
            rec = recorded.get(p)
            if not isinstance(rec, dict) or p in mine or not (self.path / MAIN_TABLE[p]).exists():
                continue
            why = (("store version",) if rec.get("store_snapshot") != snapshot_id else ()) + (
                # an entry with no selection recorded is not said to differ: nothing to compare
                ("selection",) if selection is not None and "selection" in rec
                and not _same_selection(rec["selection"], repr(selection)) else ())
            if why:
                out[p] = (rec, why)
        return out

    @staticmethod
    def selection_text(recorded: Any) -> str:
        """A recorded selection repr as the flags that make it (``--ds-task sst2``), or "all groups"
        (the repr itself, cut to 120 characters, where it is none)."""
        fields = _fields(str(recorded))
        return _selection_text(fields) if fields is not None else str(recorded)[:120]

    def plan(self, part: str, options: AnalysisOptions, selection: Selection, snapshot_id: str, *,
             figures: bool = False, group_figures: int | None = None) -> str:
        """``reuse``, or ``compute``; raises a one-line :class:`UserError` rather than overwrite a
        part made with other options or another selection.

        Reused only when made from this very store version (``snapshot_id``: the version and its
        commit's random id): a version number alone matched another store's, or a store deleted
        and made again, and gave one store's results as another's."""
        have = self.manifest()["parts"].get(part)
        if not (self.path / MAIN_TABLE[part]).exists():
            return "compute"
        if have is None:
            # written before results.json existed, or by hand: not ours to overwrite blindly
            why = "not in results.json" if (self.path / MANIFEST).exists() else "no results.json"
            raise UserError(f"{self.path / MAIN_TABLE[part]}: results of unknown options are already there "
                            f"({why}); give another --out, or remove them")
        key = _key(part, options, selection)
        if _same_selection(have.get("selection"), key["selection"]):
            have = {**have, "selection": key["selection"]}     # the same names in another order
        if part == "correlations" and have.get("options") == repr(options.fit):
            have = {**have, "options": key["options"]}    # recorded before the key left the headline's options
        if {k: have.get(k) for k in key} != key:
            raise UserError(f"{self.path / MAIN_TABLE[part]}: made with {_describe_difference(have, key)}; "
                            f"{_refusal_advice(have, key, self.command)}")
        if have.get("incomplete"):      # an interrupted write of these very options: redone
            return "compute"
        if figures and have.get("figures") is False and part == "fits":
            # made by `fit --no-figures`: a report reusing it had no fits grid and no per-group
            # figures, and said nothing. Only the fits: their figures need the groups' selections,
            # which are not stored; Fig. 3 and the heatmaps are drawn from the reused tables by
            # :meth:`write` (an hour of `sensitivity --no-figures` was run again for one figure)
            return "compute"
        drawn, n = have.get("group_figures"), have.get("groups")
        if (figures and part == "fits" and group_figures is not None and isinstance(drawn, int)
                and isinstance(n, int) and min(group_figures, n) > drawn):
            # `fit --max-group-figures 1`, then `--max-group-figures 20`: "reused fits", and one
            # group's figure (the figures need the selections, which are not stored: fitted again)
            return "compute"
        # made from this very store version by this very code, and still readable: a table cut
        # short since (a disk that filled, a copy interrupted) ended the command in pyarrow's
        # traceback; it is made again, as the options it was recorded with are these
        return ("reuse" if have.get("store_snapshot") == snapshot_id and have.get("code") == analysis_code()
                and self._readable(part) else "compute")

    def _tables(self, part: str) -> list[Path]:
        """The Parquet files a reused ``part`` is read from."""
        if part == "correlations":   # each of them: one removed since (by hand, a copy cut short) is no part
            return [self.path / "correlations" / f"{name}.parquet" for name in CORRELATION_TABLES]
        extra = [self.path / "points.parquet"] if part == "fits" else []
        return [self.path / MAIN_TABLE[part], *(p for p in extra if p.exists())]

    def _readable(self, part: str) -> bool:
        """Whether every table of ``part`` opens as Parquet (its footer read: milliseconds)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            for p in self._tables(part):
                pq.read_schema(p)
        except (OSError, ValueError, pa.ArrowException):
            return False
        return True

    def load(self, part: str) -> Any:
        if part == "correlations":   # the part's own tables, in the order a computed part has them
            return {p.stem: pd.read_parquet(p) for p in self._tables(part)}
        return pd.read_parquet(self.path / MAIN_TABLE[part])

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's write lock (``DIR/.results.lock``, an exclusive ``flock``; waits
        for another command's write). Two commands writing one DIR at once (an hourly ``report``
        overrunning the next, a ``fit`` beside it) interleaved their tables and their
        ``results.json`` updates: DIR/results.json said one store version, fits.parquet held
        another's groups, and the next command reused it as the version recorded. A wait is said
        on stderr (it waited without a word, for minutes: a command that seemed hung)."""
        import fcntl
        import sys

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".results.lock", os.O_RDWR | os.O_CREAT, 0o666)   # the umask applies: a group-shared OUT takes every user
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"{self.path}: another command is writing here; waiting for it to finish", file=sys.stderr,
                      flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def write(self, analysis: Analysis, selection: Selection, *, figures: bool = True,
              max_group_figures: int = 60, footer_text: str | None = None) -> Outputs:
        """Write the parts of ``analysis`` that were computed (reused ones are there already),
        their figures, and then ``results.json``, holding the directory's lock (:meth:`locked`)."""
        with self.locked():
            return self._write(analysis, selection, figures=figures, max_group_figures=max_group_figures,
                               footer_text=footer_text)

    def _write(self, analysis: Analysis, selection: Selection, *, figures: bool,
               max_group_figures: int, footer_text: str | None) -> Outputs:
        out = Outputs()
        root = str(self.path)
        # :meth:`plan`'s refusals again, now under the lock and before a byte is written: a part
        # another command wrote with other options since this one planned (outside the lock, before
        # minutes of work) was overwritten silently, the one thing results.json exists to prevent
        for part in analysis.options.parts():
            if part not in analysis.reused:
                self.plan(part, analysis.options, selection, analysis.snapshot_id)
        if any(p not in analysis.reused for p in analysis.options.parts()):
            # an index.html of earlier parts would stand beside these, saying their numbers over
            # the figures redrawn here (`report --out D`, an ingest, `fit --out D`): it goes, and
            # `report` writes the page of what D then holds
            try:
                (self.path / "index.html").unlink()
            except FileNotFoundError:
                pass
        # reused parts recorded without figures (`sensitivity --no-figures`, `correlations
        # --no-figures`): their figures are drawn from the tables read back, unless another command
        # has rewritten the part since analyze read it (then that part is not this analysis's)
        redraw = [p for p in analysis.reused if figures and p in ("sensitivity", "correlations")
                  and self.manifest()["parts"].get(p, {}).get("figures") is False
                  and self._still(p, analysis, selection)]
        for part in analysis.options.parts():
            if part in analysis.reused and part not in redraw:
                continue
            # recorded as incomplete before a byte of it is written: a command interrupted while
            # writing it (a figure of 202 groups takes minutes) leaves files the same options redo,
            # not "results of unknown options" that blocked the folder
            self._record([part], analysis, selection, incomplete=True, group_figures=max_group_figures)
            if part == "fits":
                write_fits(analysis.fits, analysis.panels if figures else (), root, out=out,
                           max_group_figures=max_group_figures, footer_text=footer_text)
                if analysis.points is not None:
                    write_table(analysis.points, os.path.join(root, "points"), out)
            elif part == "sensitivity" and analysis.sensitivity is not None:
                write_sensitivity(analysis.sensitivity, root, figures=figures, footer_text=footer_text, out=out)
            elif part == "bootstrap" and analysis.bootstrap is not None:
                write_table(analysis.bootstrap, os.path.join(root, "bootstrap"), out)
            elif part == "correlations" and analysis.correlations is not None:
                write_correlations(analysis.correlations, root, figures=figures, out=out,
                                   footer_text=footer_text)
            failpoint("results_part_written")   # a test stops here: the part is on disk, not yet recorded
            # recorded whole at once, not after the parts that follow it: a full disk or a Ctrl-C in
            # a later part's write left this one "incomplete", and hours of sensitivity were redone
            self._record([part], analysis, selection, figures=figures, group_figures=max_group_figures)
        return out

    def _still(self, part: str, analysis: Analysis, selection: Selection) -> bool:
        """Whether ``part`` in the directory is still the one ``analysis`` reused."""
        try:
            return self.plan(part, analysis.options, selection, analysis.snapshot_id) == "reuse"
        except UserError:   # rewritten with other options since: not ours to redraw, nor to refuse
            return False

    def _record(self, parts: Sequence[str], analysis: Analysis, selection: Selection, *,
                incomplete: bool = False, figures: bool = True, group_figures: int = 0) -> None:
        """``results.json`` with ``parts`` made by ``analysis`` (written atomically); the fits
        part records how many per-group figures it has (of ``group_figures`` asked for)."""
        m = self.manifest()
        self.path.mkdir(parents=True, exist_ok=True)     # before the first part: nothing may have made it yet
        for part in parts:
            m["parts"][part] = {**_key(part, analysis.options, selection),
                                "store_version": analysis.provenance.get("store version"),
                                "store_snapshot": analysis.snapshot_id,
                                "store": analysis.provenance.get("store"),
                                "written": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                                "meta_study": __version__, "code": analysis_code(), "figures": figures}
            if part == "fits" and analysis.fits is not None:
                n = int(analysis.fits["headline"].astype(bool).sum())
                m["parts"][part].update(groups=n, group_figures=min(n, group_figures) if figures else 0)
            if incomplete:
                m["parts"][part]["incomplete"] = True
        tmp = self.path / f".{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(m, indent=1, sort_keys=True))
            os.replace(tmp, self.path / MANIFEST)
        except BaseException as e:   # a full disk left a half-written .results.json.tmp-* beside every try
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.filename is None:   # a write's ENOSPC names no file
                raise named_os_error(e, self.path / MANIFEST) from e
            raise


#: What ``report`` takes from the part DIR holds, having no flag for it (its ``from_dir``): the
#: option's field, and the flag of the command that has one (``sensitivity --bootstrap``).
REPORT_KEPT = {"sensitivity": {"seed": "--seed", "replace": "--bootstrap", "n_sizes": "n_sizes", "min_size": "min_size"},
               "bootstrap": {"seed": "--seed", "level": "--level", "frontiers": "--frontiers"}}


def stale_parts_line(results: ResultsDir, analysis: Analysis, store_uri: str, shown_dir: str,
                     selection: Selection | None, *,
                     command_flags: Callable[[str], Iterable[str]] | None = None) -> str | None:
    """One line where the results directory ``results`` (``shown_dir``: its path as the user reads
    it) holds parts ``analysis`` did not make that are of another store, another store version or
    another ``selection`` (the one ``analysis`` is of), naming them, what they are of, and the
    ``meta-study`` command that makes them of this one; None where none is. `sensitivity A --out
    D`, then `fit B --out D` (or `sensitivity A --ds-task sst2`, then `fit A --ds-task rte`): D
    held the fits beside a sensitivity of something else, and only results.json said so (the
    report, made of every part, never mixes them).

    ``command_flags(NAME)``: the flags of ``meta-study NAME`` (``cli.flags_of``; the command line is
    a floor above the analysis): the advice names the commands that make each part with the
    options it was made with, which only they tell; without it the line names the parts and what
    they are of, with no command to run. The commands (``cli._analyze``) and the ``analysis/*.py``
    scripts (:func:`~meta_study.analysis.scripts.analyse`) say it alike."""
    import shlex

    from ..store import display_uri

    stale = results.stale_parts(analysis.options.parts(), analysis.snapshot_id, selection)
    if not stale:
        return None
    uri = display_uri(store_uri)
    whys = {w for _, why in stale.values() for w in why}
    here = f"store {uri} version {analysis.provenance.get('store version')}"
    this_sel = ResultsDir.selection_text(repr(selection)) if selection is not None else "all groups"
    # a part of another selection is refused, not replaced, by the command that makes it (plan):
    # its table goes first. Said only for those; a part of another store version is made again
    by_sel = [p for p, (_, why) in stale.items() if "selection" in why]

    def of(store_text: str, sel_text: str) -> str:
        # what a part is of, in the terms this line compares: store version, selection, or both
        if "selection" not in whys:
            return store_text
        return sel_text if "store version" not in whys else f"{sel_text} in {store_text}"

    def alike(rec: Any) -> bool:
        # a store made again at the same path reads alike: its commit's id tells them apart
        return rec.get("store_snapshot") != analysis.snapshot_id and store_of(rec, False) == here

    def store_of(rec: Any, snapshot: bool = True) -> str:
        text = f"store {display_uri(str(rec.get('store') or '?'))} version {rec.get('store_version', '?')}"
        return f"{text} (store_snapshot {rec.get('store_snapshot') or 'not recorded'})" if snapshot and alike(rec) else text

    def command(name: str, flags: Any) -> str:
        words = [f"meta-study {name} {shlex.quote(uri)} --out {shlex.quote(shown_dir)}",
                 "" if this_sel == "all groups" else this_sel, *(f"{f} {v}".rstrip() for f, v in flags.items())]
        return "`" + " ".join(w for w in words if w) + "`"

    # each part by the command that makes it, with the options it was made with (a default
    # `sensitivity` into a DIR of `--trials 2` is refused) and this selection; for several,
    # `report` where every part there (this analysis's too) is made with report's defaults and
    # none is of another selection: report's options feed each part in its own way, so that other
    # flags are said per part only
    own = {p: None if command_flags is None else made_with(p, rec, command_flags(PART_COMMAND[p]))
           for p, (rec, _) in stale.items()}
    cmds = [command(PART_COMMAND[p], m[0]) for p, m in own.items() if m is not None]
    recorded = results.manifest()["parts"]
    whole = [None if command_flags is None else made_with(p, recorded[p], command_flags("report"), REPORT_KEPT.get(p, {}))
             for p in PART_COMMAND if p in recorded and (results.path / MAIN_TABLE[p]).exists()]
    them = "it" if len(stale) == 1 else "them"
    this = " and ".join(w for w in ("store version", "selection") if w in whys)
    advice = f"run {' and '.join(cmds)} to make {them} of this {this}" if len(cmds) == len(stale) else ""
    if advice and by_sel:
        tables = " and ".join(shlex.quote(os.path.join(shown_dir, MAIN_TABLE[p])) for p in by_sel)
        advice = f"remove {tables} (a part of another selection is not replaced), then {advice}"
    if len(stale) > 1 and not by_sel and all(w is not None and not w[0] for w in whole):
        report = command("report", {})
        advice = (f"{advice} (or {report}, which makes every part)" if advice else
                  f"run {report} to make {them} of this {this}")
    origins: dict[str, list[str]] = {}
    for p, (rec, _) in stale.items():
        origins.setdefault(of(store_of(rec), ResultsDir.selection_text(rec.get("selection"))), []).append(p)
    held = "; ".join(f"{' and '.join(ps)} of {o}" for o, ps in origins.items())
    if any(alike(rec) for rec, _ in stale.values()):
        here = f"{here} (store_snapshot {analysis.snapshot_id})"
    return (f"{shown_dir} also holds {held}, not of {of(here, this_sel)} as this command's "
            f"{' and '.join(analysis.options.parts())} (results.json); "
            f"{advice + ', or ' if advice else ''}give this command another --out to keep them apart")


def group_key(values: Sequence[Any]) -> tuple:
    """A group key with NA normalized to None and shots to int: usable in sets and dicts."""
    return tuple(None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else
                 (int(v) if i == 3 else str(v)) for i, v in enumerate(values))


@dataclass(frozen=True)
class Previous:
    """An earlier results directory, and the keys (:func:`group_key`) of the groups whose data
    has not changed since it was made: their sensitivity and bootstrap rows are reused."""

    directory: Path
    unchanged: frozenset[tuple]

    def rows(self, name: str) -> pd.DataFrame | None:
        path = self.directory / name
        if not path.exists() or not self.unchanged:
            return None
        t = pd.read_parquet(path)
        return t[[group_key(k) in self.unchanged for k in t[list(GROUP_COLUMNS)].itertuples(index=False)]]


def _incremental(compute: Callable[[Sequence[Group]], pd.DataFrame], groups: Sequence[Group],
                 previous: Previous | None, name: str) -> pd.DataFrame:
    """``compute`` on the groups that changed (or have no previous rows), the previous rows of the
    others, in group order."""
    if previous is None:
        return compute(groups)
    old = previous.rows(name)
    keys = [] if old is None or not len(old) else [group_key(k) for k in old[list(GROUP_COLUMNS)].itertuples(index=False)]
    mine = {group_key(g.key) for g in groups}
    old = old[[k in mine for k in keys]] if keys else None     # never the rows of a group this analysis has not
    # an unchanged group without rows there (a table of another selection, or removed since) is
    # computed as a changed one: it was left out of the table, silently
    reusable = previous.unchanged & set(keys)
    changed = [g for g in groups if group_key(g.key) not in reusable]
    new = compute(changed) if changed else None
    parts = [t for t in (old, new) if t is not None and len(t)]
    if not parts:
        return compute([])
    table = pd.concat(parts, ignore_index=True).astype({"shots": "Int64"})
    rank = {group_key(g.key): i for i, g in enumerate(groups)}
    order = [rank.get(group_key(k), len(rank)) for k in table[list(GROUP_COLUMNS)].itertuples(index=False)]
    return table.assign(_o=order).sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def analyze(store: Any, selection: Selection = Selection(), options: AnalysisOptions = AnalysisOptions(), *,
            results: ResultsDir | None = None, use_ray: bool = True, address: str | None = None,
            workers: int | None = None, progress: Progress | None = None, snapshot: Snapshot | None = None,
            previous: Previous | None = None, provenance: Mapping[str, Any] | None = None,
            figures: bool = False, group_figures: int | None = None) -> Analysis:
    """Compute (or, from ``results``, reuse) every part ``options`` asks for.

    Args:
        snapshot: the selection's rows and groups when the caller has read them already (the
            refit fingerprints the groups); default ``selection.snapshot(store)`` when a part is
            computed. Every part computed is of that one store version, and says so.
        previous: an earlier results directory and the groups unchanged since (see the module
            doc): only the changed groups are resampled.
        provenance: more provenance lines (the refit's stamp and counts).
        figures: the caller will draw figures: a part of ``results`` written without them is
            computed again (a fits part from ``fit --no-figures`` has no panels to draw from).
        group_figures: the per-group figures the caller will draw (``--max-group-figures``):
            fits with fewer of them (of more groups) are computed again, for the same reason.

    Raises:
        UserError: ``results`` holds a part made with other options or another selection.
    """
    sid = snapshot.snapshot_id if snapshot is not None else store.snapshot_id
    plans = {p: (results.plan(p, options, selection, sid, figures=figures, group_figures=group_figures) if results is not None else "compute")
             for p in options.parts()}    # every refusal before any work
    reused = tuple(p for p, how in plans.items() if how == "reuse")
    assert results is not None or not reused
    computing = any(how == "compute" for how in plans.values())
    if computing and snapshot is None:
        snapshot = selection.snapshot(store)
        if snapshot.snapshot_id != sid:   # an ingest committed since the plan: nothing older is reused
            sid = snapshot.snapshot_id
            plans = {p: (results.plan(p, options, selection, sid, figures=figures, group_figures=group_figures) if results is not None else "compute")
                     for p in options.parts()}
            reused = tuple(p for p, how in plans.items() if how == "reuse")
    groups = snapshot.groups if snapshot is not None and computing else []
    version = int(sid.split(":", 1)[0])
    # every part reused: they were made from a selection that matched (an empty one writes nothing)
    n_groups = len(groups) if computing else -1
    kw = dict(address=address, workers=workers, use_ray=use_ray, progress=progress)

    panels: Sequence[Mapping[str, Any]] = ()
    fits = points = None
    if plans.get("fits") == "reuse":
        fits = results.load("fits")  # type: ignore[union-attr]
        p = results.path / "points.parquet"   # type: ignore[union-attr]
        points = pd.read_parquet(p) if p.exists() else None
    elif options.fits:
        fits, panels = fit_table(groups, options.fit, progress=progress)
        points = points_table(groups)
    sens = boot = corr = None
    if options.sensitivity is not None:
        so = options.sensitivity
        sens = (results.load("sensitivity") if plans["sensitivity"] == "reuse"  # type: ignore[union-attr]
                else _incremental(lambda gs: sensitivity_table(gs, so, **kw), groups, previous, MAIN_TABLE["sensitivity"]))
    if options.bootstrap is not None:
        bo = options.bootstrap
        boot = (results.load("bootstrap") if plans["bootstrap"] == "reuse"  # type: ignore[union-attr]
                else _incremental(lambda gs: bootstrap_table(gs, bo, **kw), groups, previous, MAIN_TABLE["bootstrap"]))
    if options.correlations:
        corr = (results.load("correlations") if plans["correlations"] == "reuse"  # type: ignore[union-attr]
                else correlations_tables(store, selection, fits, rows=snapshot.rows if snapshot is not None else None,
                                         options=options.fit))
    prov = {"store": store.uri, "store version": version, "meta-study": __version__,
            "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **dict(provenance or {})}
    if reused:
        prov["reused"] = ", ".join(reused)
    return Analysis(fits=fits, options=options, provenance=prov, n_groups=n_groups, sensitivity=sens,
                    bootstrap=boot, correlations=corr, reused=reused, panels=panels, points=points,
                    snapshot_id=sid)
