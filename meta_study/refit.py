"""The scheduled re-fitting job: re-ingest, re-fit what changed, publish to MLflow.

One refit:

1. takes the store's refit lock, then OUT's (non-blocking: a refit already running on the store,
   or writing to OUT, means this one is skipped, so cron, systemd timers and ``--every`` loops
   never overlap);
2. ingests the sources, if any, waiting up to :data:`STORE_LOCK_WAIT_S` for another writer of
   the store (an ``ingest`` committing); longer is a transient failure (:class:`StoreWriterBusy`:
   exit 1, one line, nothing refitted), not a bad input;
3. fingerprints every group (sha256 of its runs and accuracies) and compares with the last refit:
   if no group and no option changed, it stops here (a no-op takes seconds);
4. fits every group (every law on every frontier, back-tested: seconds), and runs sample-size sensitivity and bootstrap
   only for groups whose data changed, reusing the last refit's rows for the others;
5. builds the correlation tables, the figures and the HTML report in a new version directory
   ``OUT/refits/<version>/``, written under a temporary name and renamed into place, then points
   ``OUT/LATEST`` at it; a version is named by its UTC time (``20261203T220248Z``), with ``-02``,
   ``-03``, ... when a version of that second exists already (:func:`version_name`), so names
   never collide and sort by time;
6. logs one MLflow run (experiment ``meta-study/refits`` by default) with the store, sources,
   fingerprint, every option that changes a number (:func:`option_params`) and why the groups were
   refitted (the data, or the options: which) as params, every group's parameters and errors as
   metrics (with ``--ds-target``, the band its ``us_needed`` interval is as a param of its own:
   :data:`US_NEEDED_BAND`, and a point or an end that is "never" as a param under its key:
   :data:`INF_WORDS`), and the version directory (tables, figures, report) as artifacts.

Publishing is at most once per version (:func:`publish_to_mlflow`): ``OUT/published/`` records the
run as soon as it exists and again when it is complete. A refit killed after ``OUT/LATEST`` moved
but before its run was complete, or whose server failed mid-publish, leaves the version
unpublished; the next refit, when nothing changed, publishes it (into the same run, if one was
started: a refit stopped by Ctrl-C or SIGTERM mid-publish ends that run KILLED meanwhile). One
that finds the data changed makes and publishes a newer version instead: the one it replaces stays
in OUT unpublished, and its run, if one was started, is ended KILLED (superseded).
A tracking server that does not answer, a tracking URI MLflow refuses and a server that refuses
the credentials each fail the refit in one line before any work, before OUT's lock is taken
(:func:`check_tracking`: exit 2, the URI may be wrong), a server that fails mid-publish in one
line too (:class:`PublishError`: exit 1, the server failed partway), and a tracking URI with
credentials in it is refused: the messages only ever hold the URI without them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from .validation import printable as _printable
from . import __version__
from .analysis.groups import Group, Selection, Snapshot, layers_only_note
from .analysis.fitting import FitOptions
from .analysis.headline import INTERVAL_RULE, MEMBER_QUANTILE
from .analysis.selection import us_needed_band   # the rule, where the selection applies it
from .analysis.results import AnalysisOptions, Previous, ResultsDir, analyze, group_key
from .analysis.outputs import footer
from .analysis.bootstrap import BootstrapOptions
from .analysis.sensitivity import SensitivityOptions
from .defaults import PAYOFF_THRESHOLD, REFIT_BOOTSTRAP_SAMPLES, REFIT_EXPERIMENT
from .errors import StoreLockedError, UserError
from .store import Store

Progress = Callable[[str, int, int | None], None]
DEFAULT_EXPERIMENT = REFIT_EXPERIMENT


@dataclass(frozen=True)
class RefitConfig:
    """Everything one refit needs. ``out`` is a local directory (versions are kept there).

    ``fit`` is how every part fits (the headline fits, and each sensitivity draw and bootstrap
    resample: hold-out split, loss, ``alpha_max``, ``nondecreasing``), as ``meta-study refit``
    passes its options to all three: a ``sensitivity`` or ``bootstrap`` whose ``fit`` is left at
    the default, or differs from ``fit`` only in its ``selection``, takes it (the same options, the
    same :meth:`options_fingerprint` as the CLI's), and one given other fitting options is refused
    (:class:`ValueError`).
    So with the frontiers: a ``sensitivity`` left at its default frontiers (every estimator) is
    run on ``fit.selection.frontiers``, as ``meta-study refit --frontiers`` narrows both; one
    given its own frontiers keeps them (logged as ``sensitivity_frontiers``).
    ``max_group_figures``: per-group figures at most, an integer of 0 or more.
    """

    store: str
    out: str
    sources: tuple[str, ...] = ()
    mapping: str | None = None
    sources_file: str | None = None
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    fit: FitOptions = field(default_factory=FitOptions)
    sensitivity: SensitivityOptions = field(default_factory=SensitivityOptions)
    bootstrap: BootstrapOptions = field(default_factory=lambda: BootstrapOptions(samples=REFIT_BOOTSTRAP_SAMPLES))
    address: str | None = None
    workers: int | None = None
    use_ray: bool = True
    threshold: float = PAYOFF_THRESHOLD   # "scaling stops paying" below this many DS points per US point
    max_group_figures: int = 60
    # the report page's title (and its MLflow artifact's): the demo's says it is the demo's report
    title: str = "meta-study refit"

    def __post_init__(self) -> None:
        from dataclasses import replace

        # paths as strings: store=Path("st") ended the refit, after every fit, in "argument of type
        # 'PosixPath' is not iterable" (recording where the store is); one source is a tuple of it:
        # sources="runs.csv" was ingested letter by letter ("r", "u", ...)
        for name in ("store", "out", "mapping", "sources_file"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        srcs = (self.sources,) if isinstance(self.sources, (str, os.PathLike)) else self.sources
        object.__setattr__(self, "sources", tuple(os.fspath(s) for s in srcs))
        if set(self.fit.selection.frontiers) <= {"all"}:
            # as `fit` and `report` refuse it: every group of the version (and of its MLflow run)
            # said "could not fit: degenerate: no usable candidate", exit status 0
            raise UserError("--frontiers all: the headline is built from frontier estimators (the best models at "
                            "each US accuracy); 'all' fits every model, the typical one, and is only shown beside "
                            "them. Add one, e.g. --frontiers vertices,all")
        # One threshold: the fits find the stop-paying point with fit.selection.payoff_threshold,
        # and the report and the run say ``threshold``. Given apart (RefitConfig(threshold=0.5)),
        # the page said "< 0.5 DS pt" beside a point found at 0.1. The one set away from the
        # default is both; two different ones set are refused.
        fit_thr = self.fit.selection.payoff_threshold
        if self.threshold == fit_thr:
            pass
        elif fit_thr == PAYOFF_THRESHOLD:
            object.__setattr__(self, "fit", replace(self.fit, selection=replace(self.fit.selection,
                                                                                payoff_threshold=self.threshold)))
        elif self.threshold == PAYOFF_THRESHOLD:
            object.__setattr__(self, "threshold", fit_thr)
        else:
            raise ValueError(f"RefitConfig: threshold {self.threshold:g} and fit.selection.payoff_threshold "
                             f"{fit_thr:g} differ; they are one setting (DS points per US point)")
        # One set of fitting options. RefitConfig(fit=FitOptions(loss="huber")) fitted the
        # headlines with huber and every sensitivity draw and bootstrap resample with the default
        # loss (their own fit, left at its default), while the run logged loss=huber for all of it.
        # A part's fit left at the default takes ``fit``; one set to other fitting options is refused.
        # One that differs only in its selection (laws, frontiers, tolerance, ...) takes ``fit`` too:
        # it fits the same, and kept apart it was hashed apart: fit=FitOptions(selection=...) alone
        # left the parts' selection at the default, the same tables under another options
        # fingerprint than `meta-study refit`'s (which passes its options to all three).
        mine, default = _fitting(self.fit), _fitting(FitOptions())
        for name in ("sensitivity", "bootstrap"):
            part = getattr(self, name)
            own = _fitting(part.fit)
            if part.fit == self.fit:
                continue
            if own != mine and own != default:
                diffs = ", ".join(f"{f.name} {getattr(own, f.name)!r} (fit: {getattr(mine, f.name)!r})"
                                  for f in fields(FitOptions) if getattr(own, f.name) != getattr(mine, f.name))
                raise ValueError(f"RefitConfig: {name}.fit differs from fit: {diffs}; a refit fits every part with "
                                 f"fit's options (its run logs those): leave {name}.fit at the default, or give it "
                                 "the same")
            object.__setattr__(self, name, replace(part, fit=self.fit))
        # the sensitivity's frontiers as the CLI's: fit.selection.frontiers narrowed to vertices
        # left the sensitivity on every estimator (its default), where `refit --frontiers vertices`
        # runs it on vertices alone: the same settings, other tables and several times the work
        fronts = self.fit.selection.frontiers
        if self.sensitivity.frontiers == SensitivityOptions().frontiers and self.sensitivity.frontiers != fronts:
            object.__setattr__(self, "sensitivity", replace(self.sensitivity, frontiers=fronts))
        # -1 drew every group's figure but the last (a slice [:-1]) and recorded -1 drawn; 2.5 ended
        # the refit, after every fit, in a TypeError (as the CLI's --max-group-figures refuses them)
        n = self.max_group_figures
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"RefitConfig: max_group_figures must be an integer of 0 or more (per-group figures "
                             f"at most), got {n!r}")
        object.__setattr__(self, "max_group_figures", int(n))

    def options_fingerprint(self) -> str:
        """What, besides the data, decides the results: a change refits everything (the
        analysis code too: an upgrade that changes a law or a frontier refits every group)."""
        from .analysis.results import analysis_code

        opts = {"fit": asdict(self.fit), "sensitivity": asdict(self.sensitivity), "bootstrap": asdict(self.bootstrap),
                "threshold": self.threshold, "code": analysis_code()}
        return hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fitting(fit: FitOptions) -> FitOptions:
    """``fit`` less its selection: what a sensitivity draw or a bootstrap resample fits with."""
    from dataclasses import replace

    from .analysis.selection import SelectionOptions

    return replace(fit, selection=SelectionOptions())


def option_params(cfg: RefitConfig) -> dict[str, Any]:
    """The options a refit's results were made with, by their MLflow param names: what its run logs
    beside the data's params, and what its refit.json records (``options``), so that the next refit
    says which of them changed. Every setting :meth:`RefitConfig.options_fingerprint` hashes that
    changes a number is here: apart (``--ds-target`` logged nothing), two runs differed only in
    ``options_fingerprint``. Values are JSON scalars (numbers, strings, booleans)."""
    fit, sel, sens, boot = cfg.fit, cfg.fit.selection, cfg.sensitivity, cfg.bootstrap
    return {
        "holdout_quantile": fit.holdout_quantile, "loss": fit.loss,
        # the US accuracy above which models are held out: it wins over the quantile, which
        # alone read as the split of a run cut at --holdout-above
        "holdout_above": "none" if fit.holdout_above is None else fit.holdout_above,
        # what the metrics were fitted with, as the CLI's options say it (lists of registry
        # names: far below MLflow's 6000 characters a value); apart, two refits differed
        # only in options_fingerprint
        "frontiers": ",".join(sel.frontiers), "laws": ",".join(sel.laws),
        "nondecreasing": fit.nondecreasing, "alpha_max": fit.alpha_max,
        "trials": sens.trials, "samples": boot.samples,
        # the back-test RMSE (fraction, as the metrics) above which the metric trusted is 0:
        # refits at --tolerance 5 and 3 logged different trusted values and no reason why
        "tolerance": sel.tolerance,
        # the metric stop_paying_us is where +1 US point buys less than this many DS points
        "threshold": cfg.threshold,
        # the calculator's DS accuracy (--ds-target): the headline's us_needed is the US accuracy that reaches it
        "ds_target": "none" if sel.ds_target is None else sel.ds_target,
        # how the headline metrics were made: the members' quantile (refits before 2026-12-06
        # logged none: the discounted median), the back-test cuts and the intervals' level;
        # apart, a change of any of them read as the same analysis under a new fingerprint
        "member_quantile": MEMBER_QUANTILE, "cuts": ",".join(f"{c:g}" for c in sel.cuts), "level": sel.level,
        # how its intervals were built (refits before 2026-12-06 logged none: symmetric, "reaches")
        "interval_rule": INTERVAL_RULE,
        # the sensitivity and bootstrap tables' own settings (the library's; the CLI keeps them at their defaults)
        "sizes": (",".join(map(str, sens.sizes)) if sens.sizes else f"{sens.n_sizes} geometric from {sens.min_size}"),
        "sensitivity_frontiers": ",".join(sens.frontiers), "sensitivity_replace": sens.replace,
        "sensitivity_seed": sens.seed,
        "bootstrap_frontiers": ",".join(boot.frontiers), "bootstrap_level": boot.level, "bootstrap_seed": boot.seed,
    }


#: The params of :func:`option_params` that are ``meta-study refit`` flags, by their flag; the rest
#: are named as the run logs them. ``tolerance`` is logged as a fraction and typed in points.
_REFIT_FLAGS = {"holdout_quantile": "--holdout-quantile", "holdout_above": "--holdout-above", "loss": "--loss",
                "alpha_max": "--alpha-max", "nondecreasing": "--nondecreasing", "laws": "--laws",
                "frontiers": "--frontiers", "tolerance": "--tolerance", "ds_target": "--ds-target",
                "trials": "--trials", "samples": "--samples", "threshold": "--threshold"}


def _option_text(name: str, value: Any) -> str:
    """A param of :func:`option_params` as a user reads it (``--tolerance`` in points)."""
    if name == "tolerance" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = 100 * value
    return f"{value:g}" if isinstance(value, float) else str(value)


def options_changed(old: Any, new: dict[str, Any]) -> list[str] | None:
    """The options that differ between a refit's recorded ``options`` (:func:`option_params`) and
    ``new``, each as ``--threshold 0.1 -> 0.2`` (a param that is no flag by its name); None when
    ``old`` is no record of them (a refit from before they were recorded)."""
    if not isinstance(old, dict):
        return None
    out = []
    for name in [*new, *(k for k in old if k not in new)]:
        if name in old and name in new and old[name] == new[name]:
            continue
        was = _option_text(name, old[name]) if name in old else "not recorded"
        now = _option_text(name, new[name]) if name in new else "not recorded"
        out.append(f"{_REFIT_FLAGS.get(name, name)} {was} -> {now}")
    return out


def why_refitted(prev: dict[str, Any], cfg: RefitConfig, options: dict[str, Any], n_data: int, n_new: int,
                 n_gone: int, unreadable: str | None = None) -> str:
    """Why a refit made a new version, in one line: there was no earlier one; the options changed
    (which, as flags: ``--threshold 0.1 -> 0.2``) or the analysis code did (an upgrade), and every
    group was refitted; and/or the data of ``n_data`` groups changed (``n_new`` of them new) and
    ``n_gone`` groups left the store. "refit: 75 changed" alone did not say whether the data or the
    options had, and its user went looking for new runs. ``unreadable``: the version ``OUT/LATEST``
    names when ``prev`` is empty because its record could not be read (:func:`previous_refit`)."""
    from .analysis.results import analysis_code

    if not prev:
        if unreadable:
            return (f"the last refit's record (LATEST: {unreadable}) is missing or damaged, nothing to compare "
                    "with: every group fitted")
        return "no earlier refit in this output directory to compare with: every group fitted"   # refit --out, demo --workdir
    settings = []
    if prev.get("options_fingerprint") != cfg.options_fingerprint():
        diffs = options_changed(prev.get("options"), options)
        if diffs:
            settings.append("the options changed (" + "; ".join(diffs[:6])
                            + (f"; {len(diffs) - 6} more" if len(diffs) > 6 else "") + ")")
        code = prev.get("analysis_code")
        if code is not None and code != analysis_code():
            was = prev.get("meta_study")
            settings.append("the analysis code changed (" + (f"meta-study {was} -> {__version__}" if was != __version__
                                                             else "an edit of meta_study/analysis") + ")")
        if not settings and diffs is None:   # a record from before the options were recorded
            settings.append("the options or the analysis code changed (that refit recorded no options to name)")
        elif not settings:   # a setting no param shows (a library caller's sensitivity or bootstrap fit options)
            settings.append(f"the options changed (options_fingerprint {prev.get('options_fingerprint')} -> "
                            f"{cfg.options_fingerprint()})")
    data = ([f"the data of {n_data} group(s) changed" + (f" ({n_new} new)" if n_new else "")] if n_data else []) \
        + ([f"{n_gone} group(s) left the store"] if n_gone else [])
    since = f"since the refit of {prev.get('time')}"
    if settings:
        return f"{since}, {' and '.join(settings + data)}" + ("" if data else ", not the data") \
            + ": every group refitted"
    return f"{since}, {' and '.join(data) or 'nothing changed'}, not the options" + (": those refitted" if n_data else "")


#: How long a refit with sources waits for another writer of the store (an ``ingest`` committing)
#: before it gives up with :class:`StoreWriterBusy`, in seconds: a commit holds the lock for seconds
#: to minutes, so a quarter of an hourly schedule; the store says once whom it waits for.
STORE_LOCK_WAIT_S = 900.0


class StoreWriterBusy(OSError):
    """Another writer held the store's lock for longer than :data:`STORE_LOCK_WAIT_S` while the
    refit waited to ingest its sources: a transient failure, not a bad input, so the command exits
    1 as for any machine failure and an ``--every`` loop tries again next round (its first round
    too: no setting is wrong); nothing was refitted, the versions in OUT stay as they were."""


@dataclass
class RefitResult:
    """What a refit did. ``status``: ``refitted``, ``noop`` (nothing changed), ``published``
    (nothing changed, and the last version, which an earlier refit had left unpublished, was
    published), ``locked`` (another refit holds the store or OUT) or ``empty`` (no groups).
    ``message`` says why: for ``refitted``, whether the data, the options (which) or the analysis
    code changed since the last refit (:func:`why_refitted`)."""

    status: str
    version_dir: str | None = None
    changed: list[tuple] = field(default_factory=list)
    unchanged: int = 0
    unfittable: list[str] = field(default_factory=list)
    ingest_lines: list[str] = field(default_factory=list)
    failed_sources: list[str] = field(default_factory=list)   # their ingest lines: the refit used the store as it was
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None       # the run in the MLflow UI (http(s) tracking URIs)
    seconds: float = 0.0
    message: str = ""


# --------------------------------------------------------------------------------------------
# Locking and fingerprints
# --------------------------------------------------------------------------------------------


#: The refit lock of a local store, in the store; an object store's is ``OUT/.refit.lock``.
REFIT_LOCK = "_meta/REFIT.lock"

#: What a refit writes into its ``OUT`` (the demo's workdir check reads them too): the name of the
#: latest version, written aside first (``.LATEST.tmp-<pid>``) and renamed; the versions; the
#: publish ledgers; OUT's own lock; an object store's refit lock.
LATEST, LATEST_TMP, VERSIONS, LEDGERS = "LATEST", ".LATEST.tmp-", "refits", "published"
OUT_LOCK, STORE_LOCK = ".refit-out.lock", ".refit.lock"


def _refit_lock_path(store: Store, out: str) -> Path:
    """The file of ``store``'s refit lock (:func:`refit_lock`)."""
    local = store.local_path(REFIT_LOCK)
    return Path(local) if local else Path(out) / STORE_LOCK


@contextlib.contextmanager
def refit_lock(store: Store, out: str, create: bool = True) -> Iterator[bool]:
    """Yield True if this process holds the refit lock of ``store``, False if another one does.

    The lock lives in the store's ``_meta`` for local stores (so two refits writing different OUT
    directories still exclude each other) and in OUT for object stores.
    """
    local = store.local_path(REFIT_LOCK)
    # in the store's own _meta, made here only when the refit creates the store (``create``: it has
    # sources to ingest): else a store gone since it was checked (renamed, its mount not back)
    # became an empty directory at its path, which no command reads as a store
    made = [d for d in (Path(local).parent.parent, Path(local).parent) if not d.exists()] if local and create else []
    try:
        if made:   # the store's directory: one line naming the store where it cannot be made (not a
            # bare "[Errno 2] No such file or directory: '/proc/s'", exit 1, naming no option)
            try:
                Path(local).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"{store.uri}: cannot create a store there: its directory cannot be made "
                                f"({e.strerror or type(e).__name__})") from None
        with _flock(_refit_lock_path(store, out), make_parent=create or not local) as held:
            yield held
    finally:
        if made and not store.exists():
            # the refit made no store (every source failed): nothing of its lock stays, or the
            # path read "not a meta-study store" to every later command
            assert local is not None
            Path(local).unlink(missing_ok=True)
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()


@contextlib.contextmanager
def out_lock(out: str) -> Iterator[bool]:
    """Yield True if this process holds the lock of OUT (``OUT/.refit-out.lock``), False if another
    refit does. Refits of two stores into one OUT would otherwise run at once: each would end the
    other's MLflow run as superseded while it was still publishing, and LATEST would flip between
    them mid-refit. Taken after the store's lock, never before, so that no two refits wait on each
    other."""
    with _flock(Path(out) / OUT_LOCK) as held:
        yield held


@contextlib.contextmanager
def _flock(path: Path, make_parent: bool = True) -> Iterator[bool]:
    """A non-blocking exclusive ``flock`` of ``path`` (created, with its directory unless
    ``make_parent`` is False), which records its holder."""
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)   # the umask applies: a group-shared OUT takes every user's refit
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {_now_iso()}".encode(), 0)
        yield True
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    """Who holds a lock of :func:`_flock` (``pid 123 since ...``), or "" when unknown; a record
    damaged into bytes that are not UTF-8 (it was a UnicodeDecodeError traceback) or into control
    characters is shown escaped, on one line."""
    from .validation import printable

    try:
        return printable(" ".join(path.read_bytes()[:200].decode(errors="replace").split()))[:80]
    except OSError:
        return ""


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def group_fingerprint(g: Group) -> str:
    """sha256 of everything of a group that its results show, independent of row order: its runs,
    accuracies, model names (the report names points by them), ``repeated`` warning, known
    DS test-set sizes, and in a group of two or more sources each row's source and protocol name
    (its ``mixed_sources`` warning).

    The model names and the warning joined the fingerprint later: the first refit after that
    upgrade sees every group as changed and recomputes them all, once."""
    names = [_name(v) for v in g.model_names] if g.model_names.size == g.n else []
    keys = (g.ds_accuracy, g.us_accuracy, g.run_ids.astype(str))
    # the names sort too: two rows of one run differing only in name hash the same in any order
    order = np.lexsort(((np.array([json.dumps(n) for n in names]),) if names else ()) + keys)
    h = hashlib.sha256(repr(g.key).encode())
    h.update("\x1f".join(g.run_ids.astype(str)[order]).encode())
    h.update(np.ascontiguousarray(g.us_accuracy[order]).tobytes())
    h.update(np.ascontiguousarray(g.ds_accuracy[order]).tobytes())
    h.update(json.dumps([names[i] for i in order] if names else None).encode())
    h.update(json.dumps(g.repeated).encode())
    if g.ds_test_size.size == g.n:    # known test-set sizes floor the intervals (none: hashes as before)
        # b"ds_n" is this field's fixed label in the hash, deliberately not schema.EXTRA_DS_TEST_SIZE
        # (nothing reads it back): renaming that key must not change every stored fingerprint
        h.update(b"ds_n" + np.ascontiguousarray(np.nan_to_num(g.ds_test_size[order], nan=-1.0)).tobytes())
    if g.sources.size == g.n and len({_name(v) for v in g.sources}) > 1:
        # the mixed_sources warning names each row's source and protocol name: a group of two or
        # more sources hashes them. One of a single source hashes as before: under one version of
        # the analysis code, a renamed source refits only the mixed groups (a new version of
        # analysis/*.py refits every group anyway: options_fingerprint holds analysis_code())
        protocols = [_name(v) for v in g.protocols] if g.protocols.size == g.n else None
        h.update(b"sources" + json.dumps([[_name(g.sources[i]), protocols[i] if protocols else None]
                                          for i in order]).encode())
    return h.hexdigest()[:24]


def _name(v: Any) -> str | None:
    """A model name as the fingerprint hashes it: None for a missing one (None, NaN or NA)."""
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


@contextlib.contextmanager
def refit_locks(store: Store, cfg: RefitConfig) -> Iterator[str]:
    """Take the store's refit lock, then OUT's; yield "" when both are held, else why this refit
    is skipped (one line)."""
    with refit_lock(store, cfg.out, create=bool(cfg.sources or cfg.sources_file)) as held:
        if not held:
            holder = _holder(_refit_lock_path(store, cfg.out))
            yield f"another refit is running on {store.uri}" + (f" ({holder})" if holder else "") + "; skipped"
            return
        with out_lock(cfg.out) as held_out:
            holder = "" if held_out else _holder(Path(cfg.out) / OUT_LOCK)
            yield "" if held_out else (f"another refit is writing to {cfg.out}"
                                       + (f" ({holder})" if holder else "") + "; skipped")


def version_name(out: str) -> str:
    """The name of a new version of OUT: its UTC time to the second (``20261203T220248Z``), with
    ``-02``, ``-03``, ... when that name is taken, in ``refits/`` or in ``published/`` (the ledger
    of a version removed by hand would make the new one look published). Names sort by time.
    Race-free because a refit holds OUT's lock (:func:`out_lock`) while it names and writes."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name, n = stamp, 1
    while (Path(out) / VERSIONS / name).exists() or any((Path(out) / LEDGERS).glob(f"{name}.*.json")):
        n += 1
        name = f"{stamp}-{n:02d}"
    return name


def _latest_name(out: str) -> str | None:
    """What ``OUT/LATEST`` says (shown escaped, at most 80 characters), or None without one."""
    try:
        return _printable(" ".join((Path(out) / LATEST).read_bytes()[:200].decode(errors="replace").split()))[:80]
    except OSError:
        return None


def previous_refit(out: str) -> tuple[Path | None, dict[str, Any]]:
    latest = Path(out) / LATEST
    if not latest.exists():
        return None, {}
    try:
        # in the try: a LATEST damaged into bytes that are not UTF-8 ended every refit after it
        # in a UnicodeDecodeError traceback; now it is no record, as a damaged refit.json is
        name = latest.read_text().strip()
        # one version directory by name: a LATEST edited to "../x" or "/elsewhere" named a record
        # outside refits/, which this refit then kept as current or published from
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            return None, {}
        d = Path(out) / VERSIONS / name
        info = json.loads((d / "refit.json").read_text())
        # a record damaged into other JSON (a disk fault, a hand) is no record: every refit after
        # it ended in a traceback ('list' object has no attribute 'get'); now every group is refitted
        if not isinstance(info, dict) or not isinstance(info.get("groups"), dict) \
                or not all(isinstance(info.get(k), t) for k, t in _RECORD_FIELDS.items()):
            return None, {}
        for k in info["groups"]:
            group_key(json.loads(k))
        # a version that lost its fits or its report (a disk fault, a hand) is no record either: it
        # was kept as current by every refit after ("noop", a report of nothing) and its publish
        # failed in every one ("publishing ... failed (.../fits.parquet)")
        if not all((d / name).is_file() for name in _VERSION_FILES):
            return None, {}
        return d, info
    except (OSError, ValueError, TypeError):
        return None, {}


#: What a version's refit.json must hold for a later refit to read it (the fingerprints, and what
#: publishing it logs: a version left unpublished is published from its record).
_RECORD_FIELDS = {"time": str, "store": str, "fingerprint": str, "options_fingerprint": str, "changed": list,
                  "unfittable": list, "sources": list}
#: The files of a version a later refit keeps as current or publishes: the fits its MLflow run's
#: metrics are read from, and the report.
_VERSION_FILES = ("fits.parquet", "index.html")


# --------------------------------------------------------------------------------------------
# The refit
# --------------------------------------------------------------------------------------------


def _remove_stale_tmp(refits: Path) -> None:
    """Delete the half-written version directories of refits that were killed: ``.tmp-<stamp>-<pid>``
    whose process is gone (a live one may be another store's refit writing to the same OUT)."""
    if not refits.is_dir():
        return
    for d in refits.glob(".tmp-*"):
        try:
            pid = int(d.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except (ValueError, IndexError, PermissionError):
            alive = True   # not ours to judge
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def refit(cfg: RefitConfig, *, progress: Progress | None = None, log: Callable[[str], None] = print) -> RefitResult:
    """Run one refit (see the module doc). Never raises for a group that cannot be fitted.

    Raises:
        UserError: one line: no store at ``cfg.store`` (and no sources to create it from),
            credentials in the tracking URI, or a tracking server that does not answer (nothing
            is done).
        PublishError: one line: a publish that failed once the server had answered (the version
            is on disk, and the next refit publishes it).
        StoreWriterBusy: one line: another writer held the store for longer than
            STORE_LOCK_WAIT_S while the refit waited to ingest (nothing was refitted).
    """
    from .mlflow_client import refuse_credentials

    t0 = time.perf_counter()
    if cfg.tracking_uri:
        refuse_credentials(cfg.tracking_uri)
    store = Store(cfg.store, lock_timeout_s=STORE_LOCK_WAIT_S)   # the ingest's wait for another writer
    if not cfg.sources and not cfg.sources_file:
        store.require()   # before the locks: a mistyped --store creates neither it nor OUT's files
    if cfg.tracking_uri:
        # before any work, and before the locks: a dead server is one line in seconds, and OUT
        # is not left holding nothing but a lock file
        check_tracking(cfg)
    fresh = not Path(cfg.out).exists()
    with refit_locks(store, cfg) as busy:
        if busy:
            return RefitResult(status="locked", message=busy)
        try:
            res = _refit(cfg, store, t0, progress, log)
        except BaseException:
            _remove_if_only_locks(Path(cfg.out), fresh)   # while they are held: no other refit is in OUT
            raise
        if res.status == "empty":
            # nothing to fit made no version: an OUT this refit made held only its lock file
            # after it ("a failed first refit leaves no --out it made behind", docs/cluster.md)
            _remove_if_only_locks(Path(cfg.out), fresh)
        return res


def _remove_if_only_locks(out: Path, fresh: bool) -> None:
    """After a failed refit: OUT's lock files when OUT holds nothing else (every source failed, say),
    and OUT itself when this refit made it; an OUT with results keeps everything."""
    locks = {OUT_LOCK, STORE_LOCK}
    try:
        entries = list(out.iterdir())
        # an empty folder a late failure left (refits/) is nothing either: it kept the locks for good
        empty = {p.name for p in entries if p.is_dir() and not p.is_symlink() and not any(p.iterdir())}
    except OSError:
        return
    names = {p.name for p in entries}
    if not names <= locks | empty:
        return
    for name in names:
        with contextlib.suppress(OSError):
            if name in empty:
                (out / name).rmdir()
            else:
                (out / name).unlink(missing_ok=True)
    if fresh:
        with contextlib.suppress(OSError):
            out.rmdir()


def _refit(cfg: RefitConfig, store: Store, t0: float, progress: Progress | None,
           log: Callable[[str], None]) -> RefitResult:
    """:func:`refit` once it holds the locks."""
    res = RefitResult(status="refitted")
    _remove_stale_tmp(Path(cfg.out) / VERSIONS)
    try:
        reports = _ingest(cfg, store, progress)
    except StoreLockedError as e:
        # another writer (an `ingest` committing) held the store past the bounded wait: a
        # transient state of the machine, not a bad input. As a UserError it exited 2, which a
        # CronJob or a timer's operator reads as a wrong setting
        raise StoreWriterBusy(f"{e} while this refit waited to ingest; nothing was refitted") from None
    res.ingest_lines = [r.line() for r in reports]
    res.failed_sources = [r.line() for r in reports if not r.ok]
    for r in reports:
        log(r.line())
        for note in r.notes:     # as `meta-study ingest` shows them (skipped entries, data notes): they were dropped
            log(f"  {_printable(note)}")
    if reports and not store.exists():
        raise UserError(f"{store.uri}: no store was made, nothing to refit: every source failed "
                        f"({res.failed_sources[0] if res.failed_sources else 'no rows'})")
    store.require()
    snap = Selection().snapshot(store)   # one store version for the fingerprints, the fits and the record
    groups = snap.groups
    if not groups:
        note = layers_only_note(snap.rows["representation_layer"]) if len(snap.rows) else ""
        prev_dir, prev = previous_refit(cfg.out)
        if prev_dir is not None:   # a dashboard or cron job reading LATEST would show them as current
            note = "; ".join(filter(None, (note, f"{Path(cfg.out) / 'LATEST'} still names the refit of "
                                                 f"{prev.get('time')} (store version {prev.get('store_version')}), "
                                                 f"whose groups the store no longer holds")))
        return RefitResult(status="empty", message=f"{store.uri}: no groups to fit" + (f" ({note})" if note else ""),
                           ingest_lines=res.ingest_lines, failed_sources=res.failed_sources,
                           seconds=time.perf_counter() - t0)
    fps = {group_key(g.key): group_fingerprint(g) for g in groups}
    prev_dir, prev = previous_refit(cfg.out)
    prev_fps = {group_key(json.loads(k)): v for k, v in prev.get("groups", {}).items()}
    same_opts = prev.get("options_fingerprint") == cfg.options_fingerprint()
    changed = [g for g in groups if not same_opts or prev_fps.get(group_key(g.key)) != fps[group_key(g.key)]]
    if not changed and set(prev_fps) == set(fps):
        assert prev_dir is not None
        if cfg.tracking_uri and not is_published(cfg, prev_dir.name):
            # an earlier refit wrote this version but was killed or failed before publishing it, or
            # published it to another experiment or tracking server than this refit's (a changed
            # --publish-experiment: that too said "which an earlier run had left unpublished")
            why = ("which was published to another experiment or tracking server, not to this one"
                   if not _ledger_path(cfg, prev_dir.name).exists() and _published_elsewhere(cfg.out, prev_dir.name)
                   else "which an earlier run had left unpublished")
            rid = publish_to_mlflow(cfg, prev_dir, prev)
            return RefitResult(status="published", version_dir=str(prev_dir), unchanged=len(groups),
                               ingest_lines=res.ingest_lines, failed_sources=res.failed_sources, mlflow_run_id=rid,
                               mlflow_url=published_url(cfg, prev_dir.name),
                               seconds=time.perf_counter() - t0,
                               message=f"nothing changed since the refit of {prev.get('time')}, {why}: published it now")
        return RefitResult(status="noop", version_dir=str(prev_dir), unchanged=len(groups),
                           ingest_lines=res.ingest_lines, failed_sources=res.failed_sources,
                           seconds=time.perf_counter() - t0,
                           message=f"nothing changed since the refit of {prev.get('time')}")
    res.changed = [g.key for g in changed]
    res.unchanged = len(groups) - len(changed)
    data = [k for k in fps if prev_fps.get(k) != fps[k]]
    res.message = why_refitted(prev if prev_dir is not None else {}, cfg, option_params(cfg), len(data),
                               sum(k not in prev_fps for k in data), len(set(prev_fps) - set(fps)),
                               unreadable=_latest_name(cfg.out) if prev_dir is None else None)
    stamp = version_name(cfg.out)
    final = Path(cfg.out) / VERSIONS / stamp
    tmp = Path(cfg.out) / VERSIONS / f".tmp-{stamp}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            # matplotlib's layout warnings (a legend or labels that do not fit: the figure is
            # drawn anyway) are about looks, not results; they leaked into cron logs
            warnings.filterwarnings("ignore", category=UserWarning,
                                    message=r"(Tight layout not applied|This figure includes Axes that are not "
                                            r"compatible with tight_layout|constrained_layout not applied)")
            info = _analyze(cfg, store, snap, changed, prev_dir, tmp, stamp, fps, progress, res.failed_sources,
                            why=res.message)
        res.unfittable = info["unfittable"]
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not e.filename:
            # a full disk met by a writer that names no file (PIL drawing a figure, a Parquet
            # stream): "[Errno 28] No space left on device" said not which disk; it is OUT's
            raise OSError(e.errno, e.strerror, cfg.out) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_latest(cfg.out, stamp)
    res.version_dir = str(final)
    if cfg.tracking_uri:
        res.mlflow_run_id = publish_to_mlflow(cfg, final, info)
        res.mlflow_url = published_url(cfg, final.name)
    res.seconds = time.perf_counter() - t0
    return res


def _ingest(cfg: RefitConfig, store: Store, progress: Progress | None) -> list[Any]:
    """The ingest reports of the refit's sources (none without sources)."""
    if not cfg.sources and not cfg.sources_file:
        return []
    from .ingest import ingest_sources, load_mapping, load_sources_file, open_source_specs, open_sources

    mapping = load_mapping(cfg.mapping) if cfg.mapping else None
    srcs = open_sources(list(cfg.sources), mapping) if cfg.sources else []
    if cfg.sources_file:
        srcs += open_source_specs(load_sources_file(cfg.sources_file))
        if cfg.sources:   # a file named here and its copy in the sources file (as `ingest` refuses them)
            from .ingest import refuse_shared_files

            refuse_shared_files(srcs)
    return ingest_sources(srcs, store, progress=progress or (lambda *a: None))


def _analyze(cfg: RefitConfig, store: Store, snap: Snapshot, changed: list[Group], prev_dir: Path | None,
             out: Path, stamp: str, fps: dict[tuple, str], progress: Progress | None,
             failed_sources: Sequence[str] = (), why: str = "") -> dict[str, Any]:
    """Tables, figures and the report of refit ``stamp`` (of the store version ``snap`` read),
    written in ``out``; returns what refit.json records (``why``: :func:`why_refitted`)."""
    from .analysis.results import analysis_code
    from .analysis.tables import options_text
    from .report import render_report

    groups = snap.groups
    # the fit settings too, as every analysis command's figures name them: a refit's said only
    # "refit <version>", the same for a refit at --holdout-quantile 0.7 --loss huber as at the defaults
    foot = footer(store, f"refit {stamp} · {options_text(cfg.fit)}", snap.version)
    # the one pipeline, incrementally: sensitivity and bootstrap only for the groups that changed
    unchanged = frozenset(set(fps) - {group_key(g.key) for g in changed})
    options = AnalysisOptions(fit=cfg.fit, sensitivity=cfg.sensitivity, bootstrap=cfg.bootstrap, correlations=True)
    reuse = prev_dir is not None and _holds_rows_of(prev_dir, unchanged)
    analysis = analyze(store, Selection(), options, snapshot=snap, use_ray=cfg.use_ray, address=cfg.address,
                       workers=cfg.workers, progress=progress,
                       previous=Previous(prev_dir, unchanged) if reuse and prev_dir is not None else None,
                       provenance={"refit": stamp, "groups": len(groups), "changed": len(changed)})
    fits = analysis.fits
    ResultsDir(out).write(analysis, Selection(), max_group_figures=cfg.max_group_figures, footer_text=foot)
    bad = fits[fits["headline"] & ~fits["status"].isin(["ok", "at_bound"])]   # groups with no usable headline
    # each group named as every command names it (Group.label: "up -> pets (linear)"); a group
    # without shots read "(linear, shots=<NA>)", pandas' NA printed raw
    label = {group_key(g.key): g.label for g in groups}
    unfittable = sorted({f"{label.get(group_key((r.us_task, r.ds_task, r.eval_protocol, r.shots)), r.ds_task)}: "
                         f"{r.status}: {r.warnings or r.message}" for r in bad.itertuples()})
    info = {
        "time": _now_iso(), "store": _store_location(store, cfg.store), "store_version": snap.version,
        "meta_study": __version__,
        "sources": [_source_location(s) for s in (*cfg.sources, *([cfg.sources_file] if cfg.sources_file else []))],
        "failed_sources": list(failed_sources),    # their lines: this version is of the store as it was
        "options_fingerprint": cfg.options_fingerprint(),
        # what the fingerprint hashes, readable: the next refit names the options that changed
        "options": option_params(cfg), "analysis_code": analysis_code(), "why": why,
        "fingerprint": hashlib.sha256(json.dumps(sorted(fps.values())).encode()).hexdigest()[:24],
        "groups": {json.dumps(list(k)): v for k, v in fps.items()},
        "changed": [list(group_key(g.key)) for g in changed], "unfittable": unfittable,
        "previous": prev_dir.name if prev_dir else None,
    }
    (out / "refit.json").write_text(json.dumps(info, indent=1, default=str))
    render_report(analysis, out, title=cfg.title, threshold=cfg.threshold,
                  provenance={"fingerprint": info["fingerprint"]})
    # the results directory's write lock guards shared directories; a version is this refit's
    # alone, and the lock file is no artifact to publish
    (out / ".results.lock").unlink(missing_ok=True)
    return info


def _store_location(store: Store, given: str) -> str:
    """Which store a refit is of, as refit.json and the MLflow run record it: a local path as an
    absolute one (a cron job's ``--store store`` was recorded as "store", which names no store), a
    URI as given, less its secrets (:attr:`Store.uri`)."""
    local = store.local_path("") if "://" not in given else None
    return local if local is not None else store.uri


def _source_location(spec: str) -> str:
    """A source as refit.json and the MLflow run record it: a local file or directory by its
    absolute path (``--source runs.csv`` was recorded as "runs.csv"), an MLflow sqlite database by
    its absolute path too (``sqlite:///mlflow.db`` is relative to the directory the refit ran in,
    which a cron job or a timer does not record), anything else as given."""
    head = "sqlite:///"
    if spec.startswith(head) and not spec[len(head):].startswith("/") and spec[len(head):] not in ("", ":memory:"):
        path, sep, query = spec[len(head):].partition("?")
        return f"{head}{os.path.abspath(os.path.expanduser(path))}{sep}{query}"
    return os.path.abspath(spec) if "://" not in spec and os.path.exists(spec) else spec


def _holds_rows_of(prev_dir: Path, unchanged: frozenset[tuple]) -> bool:
    """Whether the last version's sensitivity and bootstrap tables can be read and hold rows of
    every group in ``unchanged`` (:func:`group_key`; every group keeps rows, a group too small to
    fit with its status). Else nothing of them is reused and every group is resampled: a table
    removed or damaged since (a disk fault, a hand) gave a new version, and its MLflow run, only
    the changed groups' rows, or a traceback. Costs one read of the tables' group columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .analysis.groups import GROUP_COLUMNS
    from .analysis.results import MAIN_TABLE

    for part in ("sensitivity", "bootstrap"):
        try:
            keys = pq.read_table(prev_dir / MAIN_TABLE[part], columns=list(GROUP_COLUMNS)).to_pandas()
        except (OSError, ValueError, pa.ArrowException):
            return False
        if not unchanged <= {group_key(k) for k in keys.itertuples(index=False)}:
            return False
    return True


def _write_latest(out: str, stamp: str) -> None:
    tmp = Path(out) / f"{LATEST_TMP}{os.getpid()}"
    tmp.write_text(stamp + "\n")
    os.replace(tmp, Path(out) / LATEST)


# --------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------

_KEY_OK = re.compile(r"[^A-Za-z0-9_\-. :]")


#: MLflow refuses metric keys longer than this (``mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH``).
MLFLOW_KEY_MAX = 250
#: Characters of each of a group's us_task, ds_task and eval_protocol kept in its metric keys: with
#: ``fit/``, shots (<= 20), the hash (13), the slot and the longest name it is <= 244 < MLFLOW_KEY_MAX.
KEY_NAME_MAX = 60


def metric_key(group: Sequence[Any], slot: str, name: str) -> str:
    """The MLflow key of metric ``name`` of ``slot`` of a group (us_task, ds_task, eval_protocol, shots).

    ``fit/{us_task}/{ds_task}/{eval_protocol}/{shots or na}/{slot}/{name}`` when each task and
    protocol name is kept as it is: at most KEY_NAME_MAX characters, all letters, digits or
    ``_-. :``, and not ``.`` or ``..``. Otherwise each name has its other characters replaced by
    ``_`` and is cut to KEY_NAME_MAX, and the shots segment gets ``-`` and 12 hex digits of the
    sha256 of the exact group key (``["up", "vtab/dtd", "fewshot", 5]``): ``a/b`` and ``a_b``, or
    two names that differ only past the cut, keep keys of their own. A kept name never holds that
    suffix (shots is an integer or ``na``), so no group's key is another's.
    """
    us, ds, proto, shots = group_key(group)
    names = ["" if v is None else str(v) for v in (us, ds, proto)]
    safe = [_KEY_OK.sub("_", n)[:KEY_NAME_MAX] for n in names]
    safe = ["_" if s in ("", ".", "..") else s for s in safe]   # MLflow refuses keys that resolve to other paths
    shots_seg = "na" if shots is None else str(shots)
    if safe != names:
        exact = json.dumps([us, ds, proto, shots])
        shots_seg += "-" + hashlib.sha256(exact.encode()).hexdigest()[:12]
    return "/".join(["fit", *safe, shots_seg, slot, name])


#: How a refit talks to its tracking server. MLflow's defaults (7 retries, back-off factor 2,
#: 120 s per request) kept a refit against a dead server retrying for ~4 minutes: the reachability
#: check makes one attempt of at most CHECK_TIMEOUT_S; publishing, once the server answered, retries
#: a failing request PUBLISH_RETRIES times (1 and 2 s apart) with PUBLISH_TIMEOUT_S per request (an
#: artifact upload included), so a server lost mid-publish fails it within ~1.5 minutes at worst
#: (seconds when the connection is refused). A user's own MLFLOW_HTTP_REQUEST_* settings win.
CHECK_TIMEOUT_S = 10
PUBLISH_RETRIES = 2
PUBLISH_TIMEOUT_S = 30
#: Tags of a refit's run: ingest never reads a run with ``meta_study.role = refit`` as data, and
#: a refit finds the run of a version it left unpublished by ``meta_study.refit`` and ``OUT_TAG``.
ROLE_TAG, ROLE = "meta_study.role", "refit"
VERSION_TAG = "meta_study.refit"
OUT_TAG = "meta_study.refit_out"
#: The per-group param (``fit/<group>/headline/us_needed_band``) that says which band the metrics
#: ``us_needed_lo`` and ``us_needed_hi`` of that group are the ends of: ``trend`` (the band for the
#: frontier's law) in a trusted group, ``prediction`` (the prediction interval, a model's scatter
#: about the law included: wider) in an untrusted one (:func:`~.analysis.selection.us_needed_band`,
#: the rule where the selection applies it). The same two metrics meant two things, and changed
#: meaning with 2026-12-07's analysis for trusted groups only, with nothing in the run to say so; a
#: run from before then logged no such param (its ends were the prediction interval's in every group).
US_NEEDED_BAND = "us_needed_band"
#: The report's word (``answers.pct``) for a headline value that is ``inf``, by name: an end of the
#: ``us_needed`` interval is inf where the band's edge never reaches the ``--ds-target`` below 100%
#: US, the point ``us_needed`` where the headline never reaches it, ``stop_paying_us`` where the
#: laws' curve still pays at 100% US (:mod:`~.analysis.payoff`: inf is "never", NaN no answer).
#: No metric holds inf, and unlogged it read as "no target given" (NaN, which stays unlogged),
#: so the run logs the word as a param under the metric's own key, beside :data:`US_NEEDED_BAND`
#: (``fit/<group>/headline/us_needed_hi`` = ``never``; keys <= 244 characters, MLflow's limit 250,
#: values 5, its limit 6000): a key is a metric or this param in a run, never both. Refits up to
#: 2026-12-07 may have logged nothing for a point that was "never" (the analysis said it with NaN).
INF_WORDS: dict[str, str] = {"stop_paying_us": "never", "us_needed": "never", "us_needed_lo": "never",
                             "us_needed_hi": "never"}


def _http_settings(retries: int, timeout_s: int) -> contextlib.AbstractContextManager[None]:
    """MLflow's HTTP retry settings for the calls inside (read by MLflow at each request): the
    ones ingest's check of its server uses too (:func:`~.mlflow_client.http_settings`)."""
    from .mlflow_client import http_settings

    return http_settings(retries, timeout_s)


def _one_line(e: BaseException, uri: str) -> str:
    """Why a request to the tracking server failed, in a few words (MLflow's messages run to a
    paragraph of urllib3 internals), with the tracking URI, were it to appear, in its safe form."""
    from .mlflow_client import NO_ANSWER_WORDS, safe_uri

    text = " ".join(str(e).split()) or type(e).__name__
    for needle, why in (*NO_ANSWER_WORDS, ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
        if needle in text:
            return why
    code = re.search(r"error code (\d+)", text)
    if code:
        return f"HTTP {code.group(1)}"
    return _cut(text.replace(uri, safe_uri(uri)), 200)


def _cut(text: str, most: int) -> str:
    """``text`` of at most ``most`` characters, cut at a space (with "...") rather than mid-word."""
    if len(text) <= most:
        return text
    head = text[:most - 3]
    return (head.rsplit(" ", 1)[0] if " " in head else head).rstrip(" ,;:") + "..."


def _first_sentence(text: str, most: int = 240) -> str:
    """The first sentence of one of MLflow's messages (they run to a paragraph of advice and links),
    whole words only: up to the first ``.``, ``!`` or ``?`` followed by a space, not the one of "e.g."."""
    text = " ".join(text.split())
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)[.!?](?=\s|$)", text)
    return _cut(text[:m.end()] if m else text, most)


def _refused_by_mlflow(e: BaseException) -> bool:
    """Whether MLflow refused the tracking URI itself (an unsupported scheme, a file store, a missing
    plug-in) rather than failing to reach a server: a connection error or an HTTP status is a request
    that was tried ("API request to ... failed")."""
    from mlflow.exceptions import MlflowException, RestException

    return (isinstance(e, MlflowException) and not isinstance(e, RestException)
            and not str(e).lstrip().startswith("API request to"))


def check_tracking(cfg: RefitConfig) -> str:
    """The id of the refit's experiment (created and tagged if absent): one request, no retries.

    Raises:
        UserError: one line, within about ``CHECK_TIMEOUT_S`` seconds, saying which it is: MLflow
            refuses the URI (its first sentence: an unsupported scheme, a file store), the store
            cannot be opened (a sqlite file), no database server or no MLflow tracking server
            answers there, or the server refuses access (HTTP 401 or 403).
    """
    from .mlflow_client import safe_uri
    from .mlflow_client import get_or_create_experiment, mlflow_client, shown_uri
    from .tune.preflight import check_database_answers, check_sqlite_file

    assert cfg.tracking_uri
    # a database server that does not answer: one connect, not MLflow's ~2 minutes of retries
    check_database_answers(cfg.tracking_uri, CHECK_TIMEOUT_S, then="nothing was refitted")
    if cfg.tracking_uri.lower().startswith("sqlite:"):
        try:                  # a directory or another kind of file: MLflow retried it for ~100 s
            check_sqlite_file(cfg.tracking_uri)
        except UserError as e:
            raise UserError(f"{e}; nothing was refitted") from None
    try:
        with _http_settings(0, CHECK_TIMEOUT_S):
            client = mlflow_client(cfg.tracking_uri)
            exp = client.get_experiment_by_name(cfg.experiment)
            if exp is not None and exp.lifecycle_stage == "deleted":
                # every refit did all its work, then failed to publish ("must be in the 'active'
                # state"), exit 1, saying the next refit would publish it
                raise UserError(f"--publish-experiment {cfg.experiment}: the experiment is deleted in MLflow at "
                                f"{shown_uri(cfg.tracking_uri)} (id {exp.experiment_id}); restore it (in the UI, or `mlflow "
                                f"experiments restore --experiment-id {exp.experiment_id}` with MLFLOW_TRACKING_URI "
                                "set) or give another "
                                "--publish-experiment; nothing was refitted")
            return get_or_create_experiment(client, cfg.tracking_uri, cfg.experiment)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to reach it is the same one line
        uri = safe_uri(cfg.tracking_uri)
        if _refused_by_mlflow(e):
            # no server was asked: "no server answers there" sent users looking for a dead server
            why = _first_sentence(str(e).replace(cfg.tracking_uri, uri))
            raise UserError(f"--tracking-uri {uri}: MLflow refuses this tracking URI ({why}); "
                            "nothing was refitted") from None
        code = re.search(r"error code (40[13])\b", str(e))
        if code:
            # the server answered: "no MLflow tracking server answers there (HTTP 401)" sent users
            # looking for a dead server when their credentials were missing or wrong
            given = [k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_TOKEN") if os.environ.get(k)]
            why = (f"HTTP 401: not authenticated; {'check' if given else 'set'} MLFLOW_TRACKING_USERNAME and "
                   "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)" if code.group(1) == "401" else
                   f"HTTP 403: this user may not read or create the experiment {cfg.experiment!r}")
            raise UserError(f"--tracking-uri {uri}: the MLflow tracking server there refuses access ({why}); "
                            "nothing was refitted") from None
        if not cfg.tracking_uri.lower().startswith(("http://", "https://")):
            # a database (sqlite:////no/such/dir/mlflow.db) or a plug-in's store: no server to answer
            raise UserError(f"--tracking-uri {uri}: MLflow cannot open this tracking store "
                            f"({_one_line(e, cfg.tracking_uri)}); nothing was refitted") from None
        raise UserError(f"--tracking-uri {uri}: no MLflow tracking server answers there "
                        f"({_one_line(e, cfg.tracking_uri)}); nothing was refitted") from None


def _out_id(out: str) -> str:
    """A short id of an OUT directory (a refit's run is found again by it and its version)."""
    return hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:16]


def _ledger_path(cfg: RefitConfig, stamp: str) -> Path:
    """Where OUT records the publishing of version ``stamp`` to this tracking URI and experiment
    (one server however its URI is typed: ``http://h:5000/`` published a version a second time)."""
    from .mlflow_client import source_uri

    key = hashlib.sha256(f"{source_uri(cfg.tracking_uri or '')}\n{cfg.experiment}".encode()).hexdigest()[:12]
    return Path(cfg.out) / LEDGERS / f"{stamp}.{key}.json"


def _read_ledger(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_ledger(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(entry, indent=1))
    os.replace(tmp, path)


def _published_elsewhere(out: str, stamp: str) -> bool:
    """Whether version ``stamp`` of OUT is published to some tracking URI and experiment (its ledgers)."""
    return any(_read_ledger(p).get("status") == "published" for p in (Path(out) / LEDGERS).glob(f"{stamp}.*.json"))


def is_published(cfg: RefitConfig, stamp: str) -> bool:
    """Whether version ``stamp`` of OUT is published to the refit's tracking URI and experiment."""
    return _read_ledger(_ledger_path(cfg, stamp)).get("status") == "published"


def published_url(cfg: RefitConfig, stamp: str) -> str | None:
    """The MLflow UI address of version ``stamp``'s run (None for a tracking URI with no UI)."""
    from .mlflow_client import experiment_url

    entry = _read_ledger(_ledger_path(cfg, stamp))
    if not cfg.tracking_uri or not entry.get("run_id"):
        return None
    return experiment_url(cfg.tracking_uri, entry["experiment_id"], entry["run_id"])


def close_abandoned_runs(cfg: RefitConfig, latest: str) -> list[str]:
    """End KILLED (tag ``meta_study.status = superseded``) the runs of this OUT left unfinished for
    versions other than ``latest``: a refit killed mid-publish (its run RUNNING), or stopped by
    Ctrl-C or SIGTERM (its run ended KILLED, untagged: :func:`_end_interrupted`), whose version a
    newer one replaced before it was published. Returns their ids."""
    from .mlflow_client import get_or_create_experiment, mlflow_client

    assert cfg.tracking_uri
    client = mlflow_client(cfg.tracking_uri)
    exp_id = get_or_create_experiment(client, cfg.tracking_uri, cfg.experiment)
    runs = client.search_runs([exp_id], filter_string=f"tags.`{OUT_TAG}` = '{_out_id(cfg.out)}' and "
                                                      "attributes.status != 'FINISHED'", max_results=1000)
    closed = []
    for r in runs:
        if r.data.tags.get(VERSION_TAG) != latest and r.data.tags.get("meta_study.status") != "superseded":
            client.set_tag(r.info.run_id, "meta_study.status", "superseded")
            if r.info.status == "RUNNING":
                client.set_terminated(r.info.run_id, status="KILLED")
            closed.append(r.info.run_id)
    return closed


def _get_run(client: Any, run_id: str) -> Any | None:
    """The run the ledger names, or None when the server no longer has it: deleted for good (``mlflow
    gc``) or a tracking database reset at the same URI. Every later refit failed "publishing ...
    failed (RESOURCE_DOES_NOT_EXIST)", and said the next refit would publish the version."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _find_run(client: Any, exp_id: str, stamp: str, out_id: str) -> Any | None:
    """The run an earlier, killed publish of this version created (None if none)."""
    runs = client.search_runs([exp_id], filter_string=f"tags.`{VERSION_TAG}` = '{stamp}' and "
                                                      f"tags.`{OUT_TAG}` = '{out_id}'", max_results=5)
    done = [r for r in runs if r.info.status == "FINISHED"]
    return (done or runs or [None])[0]


class PublishError(OSError):
    """Publishing a version failed after the tracking server had answered: the server failed
    partway (gone, timing out, an HTTP 5xx), not the input, so the command exits 1 as for any
    machine failure (it exited 2, "bad input", and a scheduler's operator went looking for a
    wrong setting). The version is safe on disk and the next refit publishes it."""


def publish_to_mlflow(cfg: RefitConfig, version_dir: Path, info: dict[str, Any]) -> str:
    """Publish a refit version as one MLflow run: params, per-group metrics and the version
    directory as artifacts. Exactly once per version, tracking URI and experiment: OUT/published/
    records the run as soon as it exists and when it is complete, so a publish that was killed
    or failed is finished by the next refit, in the same run (every value is logged again
    identically: the metrics carry the version's time as their timestamp). Then ends the runs of
    versions this one replaced that were left RUNNING (:func:`close_abandoned_runs`).

    Raises:
        PublishError: one line naming the version and the server (without credentials) if publishing failed.
    """
    from .mlflow_client import shown_uri

    assert cfg.tracking_uri
    stamp = version_dir.name
    ledger = _ledger_path(cfg, stamp)
    try:
        with _http_settings(PUBLISH_RETRIES, PUBLISH_TIMEOUT_S):
            rid = _publish(cfg, version_dir, info, ledger)
            close_abandoned_runs(cfg, stamp)
            return rid
    except Exception as e:  # noqa: BLE001 - the version is safe on disk; the next refit publishes it
        raise PublishError(f"refit {stamp}: publishing to {shown_uri(cfg.tracking_uri)} failed "
                           f"({_one_line(e, cfg.tracking_uri)}); the results are in {version_dir}, and the next "
                           # "publishes them" alone: a refit that finds new data publishes its own version
                           # instead, and this one is superseded
                           "refit publishes them if the data has not changed by then (else its newer version)") from None


def _publish(cfg: RefitConfig, version_dir: Path, info: dict[str, Any], ledger: Path) -> str:
    from mlflow.entities import Metric, Param, RunTag

    from .mlflow_client import safe_uri
    from .mlflow_client import get_or_create_experiment, mlflow_client

    assert cfg.tracking_uri
    stamp = version_dir.name
    client = mlflow_client(cfg.tracking_uri)
    exp_id = get_or_create_experiment(client, cfg.tracking_uri, cfg.experiment)
    entry = _read_ledger(ledger)
    run = _get_run(client, entry["run_id"]) if entry.get("run_id") else None
    if run is None:
        run = _find_run(client, exp_id, stamp, _out_id(cfg.out))
    if run is not None and run.info.lifecycle_stage == "deleted":
        run = None
    if run is None:
        run = client.create_run(exp_id, run_name=f"refit {stamp}",
                                tags={VERSION_TAG: stamp, OUT_TAG: _out_id(cfg.out), ROLE_TAG: ROLE,
                                      "meta_study.version": __version__})
    rid = run.info.run_id
    entry = {"version": stamp, "tracking_uri": safe_uri(cfg.tracking_uri), "experiment": cfg.experiment,
             "experiment_id": exp_id, "run_id": rid, "status": "started", "time": _now_iso()}
    _write_ledger(ledger, entry)
    if run.info.status != "FINISHED":
        try:
            params, metrics = _run_values(cfg, version_dir, info)
            # one band param per group with --ds-target: past MLflow's 100 params a request,
            # which the client (mlflow>=3.0) splits into requests of 100
            client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                             tags=[RunTag("n_metrics", str(len(metrics)))])
            for i in range(0, len(metrics), 1000):  # MLflow's per-batch limit
                client.log_batch(rid, metrics=[Metric(k, v, ts, 0) for k, v, ts in metrics[i:i + 1000]])
            client.log_artifacts(rid, str(version_dir))
            client.set_terminated(rid)
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C or a service's stop (SIGTERM: errors.Terminated) mid-publish left the run
            # RUNNING, half its metrics and artifacts logged, in the UI for as long as no refit
            # followed. It ends KILLED (one request, no retries); the ledger still says "started",
            # so the next refit logs it again into this run and ends it FINISHED
            _end_interrupted(client, rid)
            raise
    _write_ledger(ledger, {**entry, "status": "published", "time": _now_iso()})
    return rid


def _end_interrupted(client: Any, run_id: str) -> None:
    """End ``run_id`` KILLED after an interrupted publish: best effort, one request of at most
    5 s whatever the publish's settings (a server that does not answer is the next refit's to
    meet, not this stop's: a stop waited out the publish's retries)."""
    from .ray_session import scoped_environment

    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    with contextlib.suppress(Exception), scoped_environment(quick):
        client.set_terminated(run_id, status="KILLED")


def _run_values(cfg: RefitConfig, version_dir: Path, info: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                      list[tuple[str, float, int]]]:
    """A version's params and its metrics as (key, value, timestamp ms): the same every time. The
    params are the run's (:func:`option_params` and the data's) and, per group with a ``us_needed``
    interval, which band it is (:data:`US_NEEDED_BAND`) and, under a metric's key, the word for a
    headline value that is ``inf`` (:data:`INF_WORDS`: "never"), which no metric holds."""
    from .mlflow_client import safe_uri

    # a record from before store_version was kept has none (publishing it ended in a KeyError)
    params = {"store": info["store"], "store_version": info.get("store_version", "unknown"),
              "fingerprint": info["fingerprint"],
              "options_fingerprint": info["options_fingerprint"], "n_groups": len(info["groups"]),
              "n_changed": len(info["changed"]), "n_unfittable": len(info["unfittable"]),
              "sources": ",".join(safe_uri(s) if "://" in s else s for s in info["sources"])[:6000] or "-",
              # why the groups were refitted (the data of some, the options or the code: all), in words
              "why": info.get("why") or "-",
              **option_params(cfg)}
    fits = pd.read_parquet(version_dir / "fits.parquet")
    ts = int(_dt.datetime.fromisoformat(info["time"]).timestamp() * 1000)   # the version's time
    metrics: list[tuple[str, float, int]] = []
    # per group: the headline (slot "headline") and the paper's Eq. 1 on the hull vertices (slot
    # "vertices"); the other candidates are in the fits.parquet artifact
    paper = fits[(fits["law"] == "eq1") & (fits["frontier"] == "vertices")]
    for slot, rows in (("headline", fits[fits["headline"]]), ("vertices", paper)):
        # stop_paying_supported (1 or 0) beside stop_paying_us: that point is a finding only where
        # supported, else an extrapolation to 100% US (the report says so); alone, a dashboard of
        # the runs showed the extrapolated point as the finding
        # us_needed (with its interval): the --ds-target calculator's answer, the US accuracy that
        # reaches the target (NaN, so not logged, without one); the run logged the param alone.
        # Its interval's band is a param beside it (us_needed_band: trend or prediction): the
        # trend's band in a trusted group, the prediction interval in an untrusted one. A value
        # that is inf ("never": a point or an end that never reaches the target, a stop-paying
        # point that still pays at 100% US) is the param "never" under its key
        names = (("saturation", "alpha", "k", "e_ir", "fit_err", "pred_err", "backtest_err", "stop_paying_us",
                  "stop_paying_supported", "trusted", "us_needed", "us_needed_lo", "us_needed_hi") if slot == "headline"
                 else ("saturation", "alpha", "k", "e_ir", "fit_err", "pred_err"))
        for r in rows.itertuples():
            group = (r.us_task, r.ds_task, r.eval_protocol, r.shots)
            for name in names:
                v = float(getattr(r, name, math.nan))
                if math.isfinite(v):
                    metrics.append((metric_key(group, slot, name), v, ts))
                elif v == math.inf and name in INF_WORDS:
                    # "never" (INF_WORDS): a param, no metric holds inf; NaN (no value) logs nothing
                    params[metric_key(group, slot, name)] = INF_WORDS[name]
            if slot == "headline" and _has_us_needed_interval(r):
                # which band us_needed_lo/hi are the ends of: the trend's (trusted) or the prediction interval
                params[metric_key(group, slot, US_NEEDED_BAND)] = us_needed_band(bool(r.trusted))
    metrics.append(("refit/groups", float(len(info["groups"])), ts))
    metrics.append(("refit/changed", float(len(info["changed"])), ts))
    return params, metrics


def _has_us_needed_interval(row: Any) -> bool:
    """Whether a headline row has a ``us_needed`` interval (``--ds-target`` given and a band to
    invert): an end may be ``inf`` ("never", a param: :data:`INF_WORDS`), but not both NaN."""
    return not all(math.isnan(float(getattr(row, n, math.nan))) for n in ("us_needed_lo", "us_needed_hi"))


def round_failure(e: BaseException, out: str) -> str:
    """The one line a ``refit --every`` loop says for a round after the first that failed with
    ``e``, before it goes on to the next round. One format whatever failed:
    ``refit: failed: WHAT; WHERE; the next refit tries again[ (META_STUDY_TRACEBACK=1 shows where)]``.

    WHAT is a bad input's (:class:`UserError`) or the machine's (``OSError``) own first line, as
    the command says them when they end it, and a bug's type and first line (a Ray task's own
    error, not Ray's ``ray::task() (pid=...)`` header); WHERE says that OUT's results stay as they
    were (a failed round moves neither LATEST nor a version), or, for a :class:`PublishError`,
    whose version is already in OUT, the error's own words say where it is. The traceback hint
    comes with every error but a bad input's. It was two formats: the input's and the machine's
    errors said neither OUT nor the hint, a bug's both."""
    from .validation import printable

    cause = getattr(e, "cause", None)       # ray.exceptions.RayTaskError: the error raised in the task
    err = cause if isinstance(cause, BaseException) else e
    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, (UserError, OSError)) and first:
        what = first                        # its own words, as when it ends the command
    else:
        what = f"{type(err).__name__}: {first}" if first else type(err).__name__
    where = "" if isinstance(err, PublishError) else f"; the results in {out} stay as they were"
    # a lock wait that ran out has no code to show: where it failed is the line itself
    hint = "" if isinstance(err, (UserError, StoreWriterBusy)) else " (META_STUDY_TRACEBACK=1 shows where)"
    return f"refit: failed: {printable(_cut(what, 300))}{where}; the next refit tries again{hint}"


def parse_every(text: str) -> float:
    """'90s', '30m', '1h', '1d' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m:
        raise UserError(f"--every: {text!r} is not a duration like 30m, 1h or 1d")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if value < 1:
        raise UserError(f"--every: {text!r} is shorter than a second")
    return value
