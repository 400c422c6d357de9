"""The ``meta-study`` command line: thin wrappers over the library.

A user error (bad file, bad mapping, not a store) is one line on stderr and exit code 2; click's
own usage errors are folded into the same one-line form. Heavy imports happen inside commands so
``meta-study --help`` starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import click

from . import __version__
from . import defaults as D
from .errors import (OPTION_RANGES, OptionError, Range, StoreBusyError, StoreConflictError, StoreLockedError, Terminated, UserError,
                     option_flag, option_message)


#: Where the Ray commands' Ray comes from (meta_study/ray_session.py; docs/cluster.md says the same).
D_ADDRESS_HELP = ("Ray cluster to join: host:port, ray://host:port or auto (default: $RAY_ADDRESS if set, else a "
                  "Ray of its own on this machine, as with 'local'; RAY_ADDRESS=local means the same).")


class AtMost(click.IntRange):
    """A whole number of at most ``max`` (and at least ``min`` when given), whose refusal of a value
    above ``max`` says why there is a ceiling: a typo with extra zeros (``--trials 100000`` for
    ``--trials 100``) was accepted and ran until killed, or until the memory ran out."""

    def __init__(self, max: int, why: str, min: int | None = None) -> None:
        super().__init__(min=min, max=max)
        self.why = why

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        v = click.INT.convert(value, param, ctx)
        if self.max is not None and v > self.max:
            self.fail(f"{v} is more than {self.max:,}, the most it takes ({self.why})", param, ctx)
        if self.min is not None and v < self.min:
            self.fail(f"{v} is less than {self.min:,}, the fewest it takes", param, ctx)
        return super().convert(v, param, ctx)


#: Ceilings of the work options, each far above any real use (docs/analysis.md lists them). The
#: draws are materialised: a sensitivity keeps every draw's points of every frontier (sizes x
#: trials x frontiers problems per group), a bootstrap every resample's indices and frontier points
#: (~24 bytes per fitting point per resample: ~4 GB for a group of 1,550 models at 100,000).
#: The ceilings are :mod:`.defaults`' (the option dataclasses refuse the same values: one place
#: for each number, and no analysis import to know them).
MAX_TRIALS, MAX_SAMPLES, MAX_SIZE = D.MAX_TRIALS, D.MAX_SAMPLES, D.MAX_SIZE
MAX_WORKERS = 1024            # workers of a Ray of its own on this one machine: more CPUs than one has
#: Their floors are the option dataclasses' too (:mod:`.defaults`), so that `--help` shows the
#: range it enforces: `x<=100000` was shown and `--samples 5` refused.
TRIALS = AtMost(MAX_TRIALS, "draws per sample size, every draw held in memory", min=D.MIN_TRIALS)
SAMPLES = AtMost(MAX_SAMPLES, "resamples per group, every resample held in memory", min=D.MIN_SAMPLES)
#: --workers: at least one (-2 reached ray.init and ended in Ray's traceback; 0 meant "all CPUs"),
#: and at most MAX_WORKERS (a Ray of its own started that many worker processes on one machine).
WORKERS = AtMost(MAX_WORKERS, "worker processes of a Ray of its own on this one machine", min=1)
#: --seed: numpy seeds are >= 0 (-1 ended in numpy's "expected non-negative integer" traceback).
SEED = click.IntRange(min=0)


def range_words(allowed: Range, scale: float = 1.0) -> str:
    """``allowed`` in click's words for a range (``0<x<=1``, ``x>=0``), as ``--help`` shows
    --trials' (``1<=x<=10000``), in the flag's units (``scale`` flag units per value unit)."""
    lo = f"{allowed.lo * scale:g}"
    if allowed.hi is None:
        return f"x{'>' if allowed.lo_open else '>='}{lo}"
    return f"{lo}{'<' if allowed.lo_open else '<='}x{'<' if allowed.hi_open else '<='}{allowed.hi * scale:g}"


class ShownRange(click.FloatRange):
    """A number (click's FLOAT) whose ``--help`` shows the range ``allowed`` that the code checking
    it enforces (:data:`~.errors.OPTION_RANGES`, or a constant here), in the flag's units
    (``scale`` flag units per value unit). The value is not checked here: where the range is
    enforced (an option dataclass, :func:`_fit_opts`) the refusal names the flag in its units and
    the fraction a percentage meant (``--level 95``: "did you mean 0.95?"). ``--level``,
    ``--tolerance`` and others refused values outside a range that ``--help`` did not show."""

    def __init__(self, allowed: Range, scale: float = 1.0) -> None:
        super().__init__()
        self.allowed, self.scale = allowed, scale

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return click.FLOAT.convert(value, param, ctx)

    def _describe_range(self) -> str:
        return range_words(self.allowed, self.scale)


def field_range(field: str) -> ShownRange:
    """The type of the flag of option field ``field``: a number, with the range its option
    dataclass enforces (:data:`~.errors.OPTION_RANGES`: one place for each range, so the help
    cannot say another than the one refused) shown in the flag's units (:func:`~.errors.option_flag`)."""
    return ShownRange(OPTION_RANGES[field], option_flag(field)[1])


#: --tolerance below this many points looks like a fraction (0.03 for 3 points) and is refused.
MIN_TOLERANCE_PT = 0.5


#: --tolerance's range in accuracy points (its flag's units): from :data:`MIN_TOLERANCE_PT`
#: (refused by :func:`_fit_opts`) up to what :class:`~.analysis.selection.SelectionOptions` takes.
TOLERANCE_PT = Range(MIN_TOLERANCE_PT, OPTION_RANGES["tolerance"].hi * option_flag("tolerance")[1])


#: --overlap, in seconds: a finite number of 0 or more (as ingest's SourceOptions refuses).
OVERLAP_S = OPTION_RANGES["overlap_s"]
#: `store quarantine --limit`: rows to show, 0 for all.
QUARANTINE_LIMIT = click.IntRange(min=0)


def _fail(msg: str) -> None:
    raise UserError(msg)


def _out_dir(ctx: Any, param: Any, value: str | None) -> str | None:
    """``--out``, as given: a local path that is not a file (it is created, beside the store and
    never in it, by :func:`prepare_out` once the store is known)."""
    import os

    if value is None:
        return value
    _refuse_empty_path("--out", value)
    if "://" in value:
        _fail(f"--out {value}: outputs go to a local directory, not a URI")
    # `--out=~/x` (no shell expands it there): the directory was made as ./~/x, while pyarrow wrote
    # to /home/u/x, a "Failed to open local file" error, exit 1, and a stray ./~ left behind
    value = os.path.expanduser(value)
    if os.path.exists(value) and not os.path.isdir(value):
        _fail(f"--out {value}: exists and is not a directory")
    return value


def _user_path(ctx: Any, param: Any, value: str | None) -> str | None:
    """A local file option (``--mapping``, ``--sources-file``) with ``~`` expanded, as ``--out``:
    ``--mapping=~/m.yaml`` (no shell expands ``~`` after ``=``) was "no such file"."""
    import os

    return None if value is None else os.path.expanduser(value)


def _refuse_empty_path(flag: str, value: str) -> None:
    """One line for an empty path (``--workdir "$UNSET"``): it meant the working directory, and the
    demo spread its database, store and refits there."""
    if not value.strip():
        _fail(f"{flag} {value!r}: an empty path; give a directory")


def refuse_empty_sources(what: str, sources: Sequence[str]) -> None:
    """One line for an empty or blank source (``ingest "$MLFLOW_URI" --store S`` with the variable
    unset): it was read as a file named '' and said ": no such file or directory"."""
    blank = next((x for x in sources if not x.strip()), None)
    if blank is not None:
        _fail(f"{what} {blank!r}: an empty source; give a file, a directory or a tracking URI")


def _in_range(flag: str, allowed: Range, value: float) -> float:
    """``value`` if ``allowed`` holds it (a finite number: click's FloatRange lets NaN through)."""
    if not allowed.contains(value):
        _fail(f"{flag} must be a finite number {allowed.text()}, got {value:g}")
    return value


def prepare_out(out_dir: str, store_uri: str) -> None:
    """Create ``--out`` and check that it can be written, unless it is the local store ``STORE`` or
    lies inside it: results written there are files the store's manifest does not list, and a
    plain ``pandas.read_parquet(STORE)`` then fails on them (one line, nothing created)."""
    import os
    import tempfile

    if "://" not in store_uri:
        store, out = os.path.realpath(store_uri), os.path.realpath(out_dir)
        if out == store or out.startswith(store.rstrip(os.sep) + os.sep):
            _fail(f"--out {out_dir}: is {'the store' if out == store else 'inside the store'} {store_uri}; "
                  "results go to a directory of their own")
    refuse_inside_store("--out", out_dir, "results go to a directory of their own")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        # as ``--out``'s check says it; the analysis scripts said "cannot write there (File exists)"
        _fail(f"--out {out_dir}: exists and is not a directory")
    if os.path.islink(out_dir) and not os.path.exists(out_dir):
        # mkdir said "cannot write there (File exists)" of a name `ls` shows, and nothing exists there
        _fail(f"--out {out_dir}: a symbolic link to {os.readlink(out_dir)}, which does not exist (or is a loop "
              "of links)")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        _fail(f"--out {out_dir}: cannot write there ({e.strerror or e})")


def store_around(path: str) -> str | None:
    """The local meta-study store (a directory holding ``_meta/manifests``) that ``path`` is or
    lies inside, or None."""
    d = os.path.realpath(path)
    while True:
        if os.path.isdir(os.path.join(d, "_meta", "manifests")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def refuse_inside_store(flag: str, path: str, why: str) -> None:
    """One line if ``path`` is, or lies inside, any meta-study store (not only the one a command
    reads): files written there are files its manifest does not list, and a plain
    ``pandas.read_parquet(STORE)`` fails on them (``fit A --out B`` wrote into store B; ``demo
    --workdir STORE`` left 238 such files)."""
    store = store_around(path)
    if store is not None:
        where = "the store" if store == os.path.realpath(path) else "inside the store"
        _fail(f"{flag} {path}: is {where} {shown_path(store)}; {why}")


@contextmanager
def progress_bar(enabled: bool = True, *, clock: Any = None) -> Iterator[Any]:
    """A rich progress bar on stderr as a ``progress(description, completed, total)`` callback.

    Without a terminal (CI logs, cron) it prints plain lines instead: at most one every 10 s, none
    for an operation that finishes within 2 s (a quick failure stays a one-line error), and, for
    every operation it printed a line for, a last line with its final count (``sensitivity: 5/5``,
    not the ``0/5`` of the line before), when it completes, when the next operation starts or at
    the end. ``clock``: seconds, for tests (default: ``time.monotonic``).
    """
    if not enabled or not sys.stderr.isatty():
        import time

        now_s = clock or time.monotonic
        start = now_s()
        printed: set[str] = set()              # operations that got a line
        state: dict[str, Any] = {"last": -1e9, "pending": None}

        def emit(description: str, completed: int, total: int | None, at: float) -> None:
            of = f"/{total}" if total else ""
            click.echo(f"  {description}: {completed}{of} ({at - start:.0f} s)", err=True)
            printed.add(description)
            state["pending"] = None

        def flush() -> None:
            if state["pending"] is not None and state["pending"][0] in printed:
                emit(*state["pending"])

        def plain(description: str, completed: int, total: int | None) -> None:
            if not enabled:
                return
            now = now_s()
            if state["pending"] is not None and state["pending"][0] != description:
                flush()                        # the last operation's final count, before the next one
            state["pending"] = (description, completed, total, now)
            final = total is not None and completed >= total
            if now - start < 2:
                return
            if now - state["last"] >= 10 or (final and description in printed):
                state["last"] = now
                emit(description, completed, total, now)
        yield plain
        flush()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=_stderr_console()) as p:
        task = p.add_task("starting", total=None)

        def update(description: str, completed: int, total: int | None) -> None:
            p.update(task, description=description, completed=completed, total=total)
        yield update


def _stderr_console() -> Any:
    from rich.console import Console
    return Console(stderr=True)


class _NamedUsage:
    """Usage errors of the parser name their command: click raises "Option '--out' requires an
    argument" with no context, and the line said ``meta-study: error:`` where every other usage
    error of a subcommand says ``meta-study fit: error:``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except click.UsageError as e:
            if e.ctx is None:
                e.ctx = ctx
            raise


#: Exit code of a command whose reader went away (``meta-study fit ... | head -1``): 128 + SIGPIPE,
#: what a shell reports of a process that SIGPIPE ended (``yes | head -1`` under ``pipefail``).
EXIT_BROKEN_PIPE = 128 + 13


@contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """A write to a closed pipe ends the command quietly with :data:`EXIT_BROKEN_PIPE`. Click turned
    it into exit 1, the code of a machine's failure (README: exit codes), so that a script or a
    scheduler read ``| head -1`` as a failed command. Python's recommended way: the rest of the
    output (what the interpreter flushes at exit) goes to ``os.devnull``, not to the closed pipe."""
    import errno

    try:
        yield
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError):   # not a file (click's test runner): nothing to flush
            pass
        raise SystemExit(EXIT_BROKEN_PIPE) from None


class _Command(_NamedUsage, click.Command):
    """A subcommand (:class:`_NamedUsage`)."""


class _Group(_NamedUsage, click.Group):
    """A click group whose errors are one line and exit 2 (click prints usage + error otherwise)."""

    command_class = _Command
    group_class = type      # `store` and its subcommands too

    # the whole command runs inside these two (``--help`` and ``--version`` print in make_context)
    def make_context(self, *args: Any, **kw: Any) -> click.Context:
        with _quiet_broken_pipe():
            return super().make_context(*args, **kw)

    def invoke(self, ctx: click.Context) -> Any:
        with _quiet_broken_pipe():
            return super().invoke(ctx)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **kw: Any) -> Any:  # type: ignore[override]
        try:
            return super().main(args=args, prog_name=prog_name, standalone_mode=False, **kw)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help() if e.ctx else "", err=False)
            sys.exit(0)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "meta-study"
            click.echo(f"{where}: error: {e.format_message()}", err=True)
            sys.exit(2)
        except UserError as e:
            from .validation import printable   # a value from an input, shown on one line, not obeyed
            click.echo(f"meta-study: error: {printable(str(e))}", err=True)
            # another writer or a store changing under a read, not the input: exit 1 as for a machine's
            # failure (refit's StoreWriterBusy does), so that a scheduler does not read a wrong setting
            # into "locked by another writer for more than 900 s" (it was exit 2)
            sys.exit(1 if isinstance(e, (StoreLockedError, StoreConflictError, StoreBusyError)) else 2)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("meta-study: aborted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            click.echo(f"meta-study: error: {e.format_message()}", err=True)
            sys.exit(2)
        except OSError as e:
            # the machine or a server failed partway (a full disk, an S3 endpoint gone after the
            # first request): one line with the OS's own words and the path they name, exit 1 (the
            # input was fine); META_STUDY_TRACEBACK=1 shows where
            if os.environ.get("META_STUDY_TRACEBACK"):
                raise
            click.echo(f"meta-study: error: {_first_line_of(e)} (META_STUDY_TRACEBACK=1 shows where)", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="meta-study")
def cli() -> None:
    """meta-study: sweeps, a Parquet meta-study store and scaling-law fits (Abnar et al. 2022)."""


# --------------------------------------------------------------------------------------------
# store
# --------------------------------------------------------------------------------------------


@cli.group(short_help="Inspect, check and repair a store; break a dead lease.")
def store() -> None:
    """Inspect a meta-study store, check its files (and repair them), break a dead writer's lease."""


def _to_the_second(when: str | None) -> str:
    """A stored time (``ingested_at``, microseconds) as ``store info`` shows it: to the second, as
    a reader reads a time ("2026-12-07 23:41:50.896150+00:00" read as noise); "-" for none.
    ``--json`` keeps the stored value."""
    import pandas as pd

    if not when:
        return "-"
    try:
        return str(pd.Timestamp(when).floor("s"))
    except ValueError:   # not a time pandas reads: shown as stored
        return when


@store.command("info", short_help="Rows per group, sources and the last ingest.")
@click.argument("store_uri", metavar="STORE")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def store_info(store_uri: str, as_json: bool) -> None:
    """Rows per (US task, DS task, protocol, shots), sources and the last ingest."""
    import json

    from pandas import isna as pd_isna

    from .schema import GROUP
    from .store import open_store

    # summary() opens the store itself (require(): the same refusals): opened here first as well,
    # every request of that was asked twice (5 more of 19 on S3, a 5-partition store)
    s = open_store(store_uri, must_exist=False).summary()
    if as_json:
        click.echo(json.dumps({
            "uri": s.uri, "version": s.version, "rows": s.rows, "quarantined": s.quarantined,
            "last_ingest": s.last_ingest, "pending_finalize": s.pending_finalize,
            "groups": s.groups.astype(object).where(s.groups.notna(), None).to_dict("records"),
            # counts as numbers, as the groups' (they were strings: "37"), the time as text
            "sources": [{"source": r["source"], "rows": int(r["rows"]), "runs": int(r["runs"]),
                         "last_ingested_at": None if pd_isna(r["last_ingested_at"]) else str(r["last_ingested_at"])}
                        for r in s.sources.to_dict("records")],
        }, indent=1, default=str))
        return
    click.echo(f"store      {s.uri}")
    click.echo(f"version    {s.version}")
    click.echo(f"rows       {s.rows}")
    click.echo(f"quarantine {s.quarantined}")
    click.echo(f"last ingest {_to_the_second(s.last_ingest)}")
    if s.pending_finalize:
        click.echo("note: the last commit was interrupted after its commit point and could not be finished "
                   "now (another writer holds the lock, or the store is read-only)")
    click.echo("")
    click.echo(_table(s.sources, ["source", "rows", "runs", "last_ingested_at"]))
    click.echo("")
    # runs (distinct run ids) and model names: a column "models" counted runs (1,556 on timm, whose
    # runs name 1,266 models)
    click.echo(_table(s.groups, [*GROUP, "rows", "runs", "model_names"]))


@store.command("quarantine")
@click.argument("store_uri", metavar="STORE")
@click.option("--source", default=None, help="Only rows from this source.")
@click.option("--limit", default=20, show_default=True, type=QUARANTINE_LIMIT, help="Rows to show (0 = all).")
def store_quarantine(store_uri: str, source: str | None, limit: int) -> None:
    """Rejected rows with their reasons."""
    from .store import open_store

    from .validation import printable

    # quarantine() opens the store itself and reads by the manifest that read (as info's summary)
    st = open_store(store_uri, must_exist=False)
    q = st.quarantine().to_pandas()
    if source is not None:
        known = set(q["source"].dropna())
        if source not in known:
            known |= set(st.read(columns=["source"]).column("source").unique().to_pylist())
        if source not in known:
            # a typo looked like a clean source ("0 quarantined row(s)", exit 0)
            names = sorted(known)
            raise UserError(f"--source {printable(source)}: no such source in {st.uri} (its sources: "
                            f"{', '.join(map(printable, names[:10])) or 'none'}{', ...' if len(names) > 10 else ''})")
        q = q[q["source"] == source]
    click.echo(f"{len(q)} quarantined row(s)")
    shown = q if limit == 0 else q.head(limit)
    for r in shown.astype(object).where(shown.notna(), None).itertuples():
        # values from the source: an ANSI escape or a newline in a run id is shown, not obeyed
        click.echo(printable(f"- [{r.source}] {r.run_id or '-'}{_quarantined_where(r.raw)}: {r.reason}"))
    if len(shown) < len(q):
        # "5000 quarantined row(s)" then 20 lines, with nothing to say the rest were left out
        click.echo(f"... and {len(q) - len(shown)} more (the first {len(shown)} shown; --limit 0 shows all)")


def _quarantined_where(raw: Any) -> str:
    """Which row a quarantined row was, from its ``raw`` record (JSON): `` (FILE line N, ds_task T)``
    as far as it says, else "". A run's rows differ only in their DS task: seven lines
    "- [glue] Turing ULR v6: ds_accuracy: -0.5 out of range [0, 1]" read as one row said seven times."""
    import json

    try:
        d = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return ""
    if not isinstance(d, dict):
        return ""
    parts = []
    if d.get("_file") is not None:
        parts.append(f"{d['_file']}" + (f" line {d['_line']}" if d.get("_line") is not None else ""))
    if d.get("ds_task") not in (None, ""):
        parts.append(f"ds_task {d['ds_task']}")
    return f" ({', '.join(map(str, parts))})" if parts else ""


@store.command("check", short_help="Check every file of STORE against its manifest.")
@click.argument("store_uri", metavar="STORE")
@click.option("--repair", is_flag=True,
              help="Set damaged files aside (moved to STORE/_damaged/, never deleted) and commit a version "
                   "without them; re-ingest their sources to restore the rows.")
def store_check(store_uri: str, repair: bool) -> None:
    """Check every file of STORE against its manifest: present, the recorded size and checksum,
    readable Parquet with the recorded row count, and no stray files that plain readers would read.

    Exit 0 if the store is sound (or was repaired), 1 if damage was found and left as it is, or
    if a commit is left unfinished (plain readers see a mix of versions) and cannot be finished here.
    """
    from .store import Store

    r = Store(store_uri).check(repair=repair)
    for d in r.damage:
        rows = f", {d.rows} rows" if d.rows else ""
        done = "damaged" if not r.repaired_version else "dropped" if d.problem == "missing" else "set aside"
        click.echo(f"{done}: {d.path} ({d.kind}{rows}): {d.problem}", err=not r.repaired_version)
    if r.manifest_restored:
        kept = (f"the damaged one is in _damaged/{r.version:010d}/" if any(p.startswith(f"_damaged/{r.version:010d}/")
                                                                          for p in r.moved) else "it was missing")
        click.echo(f"{r.uri}: manifest of version {r.version} restored from its intact copy ({kept})")
    if r.rolled_back_to is not None:
        click.echo(f"{r.uri}: rolled back from damaged version {r.version} to version {r.rolled_back_to}, the newest "
                   f"intact one, committed as version {r.repaired_version}; re-ingest your sources to restore what "
                   "the damaged versions added (ingest state was reset)")
    if r.unfinished:
        click.echo(f"{r.uri}: the commit of version {r.version} is unfinished (its writer stopped after the commit "
                   "point) and cannot be finished here (read-only store, or another writer holds the lock): plain "
                   "Parquet readers see a mix of versions until a command with write access opens the store", err=True)
    if not r.damage:
        if r.unfinished:
            sys.exit(1)
        click.echo(f"{r.uri}: version {r.version}, {r.files} files checked, no damage")
    elif r.repaired_version:
        again = ("; re-ingest the sources of the partitions above to restore them (ingest state was reset where "
                 "rows were lost)") if r.rows_dropped else ""
        # after a rollback, what the damaged versions added is gone too, and uncounted: their
        # manifests, which list it, cannot be read ("0 rows dropped" said so falsely)
        dropped = (f"{r.rows_dropped} rows of damaged files dropped besides what the damaged versions added "
                   "(not counted: their manifests cannot be read)" if r.rolled_back_to is not None
                   else f"{r.rows_dropped} rows dropped")
        # only what was there moves: a missing file is dropped from the store, never "moved"
        aside = f"_damaged/{r.repaired_version:010d}/"
        n_moved = sum(p.startswith(aside) for p in r.moved)
        gone = sum(d.problem == "missing" for d in r.damage)
        what = ", ".join(x for x in (f"{n_moved} file(s) moved to {aside}" if n_moved else "",
                                     f"{gone} missing file(s) dropped from the store" if gone else "") if x) or "nothing to move"
        click.echo(f"{r.uri}: repaired as version {r.repaired_version}: {what}, {dropped}{again}")
    else:
        click.echo(f"{r.uri}: {len(r.damage)} damaged file(s) of {r.files}; restore them from a backup, or run "
                   f"'meta-study store check --repair {r.uri}'", err=True)
        sys.exit(1)


@store.command("unlock", short_help="Break the lease of an object store whose writer died.")
@click.argument("store_uri", metavar="STORE")
def store_unlock(store_uri: str) -> None:
    """Break the writers' lease of an object store whose writer died (a waiting writer names it,
    and takes an expired lease over by itself). Safe even if that writer is alive: its commit
    then fails its commit point and is merged again or refused, never half-applied. A local
    store's lock needs no unlocking: the kernel frees it when its holder dies."""
    from .store import Store

    s = Store(store_uri)
    s.require_location()   # a mistyped path said "not locked", exit 0; a file's named a lock inside it
    holder = s.unlock()
    if holder is None:
        click.echo(f"{s.uri}: not locked")
    else:
        state = "expired" if holder.expired else "valid"
        click.echo(f"{s.uri}: broke the lease of {holder.describe()} ({state} until {holder.expires_at})")


def _table(df: Any, cols: list[str]) -> str:
    from .validation import printable

    if df is None or len(df) == 0:
        return "(none)"
    # names from sources: a tab or an escape code shown as written, never obeyed (nor a column shifted)
    rows = [[("-" if v is None or (isinstance(v, float) and v != v) or str(v) == "<NA>" else printable(str(v)))
             for v in r] for r in df[cols].itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


# --------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------


@cli.command(short_help="MLflow runs and CSV / Parquet / JSONL exports into a store.")
@click.argument("sources", nargs=-1, metavar="SOURCE...")
@click.option("--store", "store_uri", required=True, metavar="STORE", help="Store path or URI (created if absent).")
@click.option("--mapping", "mapping_path", default=None, metavar="MAPPING.yaml", callback=_user_path,
              help="How source columns / MLflow keys become canonical columns (docs/ingest.md).")
@click.option("--sources-file", default=None, metavar="SOURCES.yaml", callback=_user_path,
              help="A YAML list of sources, each with its own mapping and experiments.")
@click.option("--experiment", "experiments", multiple=True, metavar="NAME|ID|GLOB",
              help="MLflow experiments to read (repeatable; default: every active experiment).")
@click.option("--filter", "filter_string", default=None, help="An MLflow search filter, e.g. \"params.dataset = 'jft'\".")
@click.option("--include-running", is_flag=True, help="Also ingest RUNNING MLflow runs (re-read every time).")
@click.option("--drop-deleted", is_flag=True, help="Remove rows of runs since deleted in MLflow, and of runs of experiments deleted there.")
@click.option("--drop-missing", is_flag=True,
              help="Files: also remove the stored runs of a file's source that the file no longer contains "
                   "(default: keep and count them). Stale rows of the runs a file does contain are always replaced.")
@click.option("--full", is_flag=True, help="Rescan every MLflow run, not only those that ended since the last ingest.")
@click.option("--history", type=click.Choice(["latest", "max"]), default="latest", show_default=True,
              help="Each metric's latest value, or its best over the logged history (one call per metric).")
@click.option("--page-size", default=D.MLFLOW_PAGE_SIZE, show_default=True, type=click.IntRange(1, D.MLFLOW_MAX_PAGE_SIZE),
              help="MLflow runs per search call.")
@click.option("--overlap", "overlap_s", default=D.MLFLOW_OVERLAP_S, show_default=True,
              type=ShownRange(OVERLAP_S), callback=lambda ctx, param, v: _in_range("--overlap", OVERLAP_S, v),
              help="Seconds behind the last ingested end time to re-read (clock skew between loggers).")
@click.option("--source", "source_name", default=None, metavar="NAME",
              help="The rows' source name, for one SOURCE (default: a file's 'source' column, else its name "
                   "without its extension; an MLflow URI). A new export of a file saved elsewhere under the same name: --source with that "
                   "name takes it as the same source.")
@click.option("--keep-going", is_flag=True,
              help="Exit 0 when some sources fail but others were ingested (default: exit 1).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def ingest(sources: tuple[str, ...], store_uri: str, mapping_path: str | None, sources_file: str | None,
           experiments: tuple[str, ...], filter_string: str | None, include_running: bool, drop_deleted: bool,
           drop_missing: bool, full: bool, history: str, page_size: int, overlap_s: float, source_name: str | None,
           keep_going: bool, quiet: bool) -> None:
    """Ingest sources into STORE: MLflow tracking URIs (http(s)://host:port, sqlite:///path.db,
    ...), MLflow tracking databases read directly and read-only (mlflow-sql:SQLALCHEMY_URL) and
    CSV / Parquet / JSONL exports (files or directories).

    Rows are validated; bad rows go to the store's quarantine with a reason. Re-ingesting
    unchanged data writes nothing; re-ingesting a changed file replaces its runs' rows. MLflow credentials come only from MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD / MLFLOW_TRACKING_TOKEN, database ones from META_STUDY_DB_USER /
    META_STUDY_DB_PASSWORD (or the driver's, e.g. PGPASSWORD).
    """
    from .ingest import SourceOptions, ingest_sources, load_mapping, load_sources_file, open_source_specs, open_sources
    from .validation import printable
    from .store import Store

    if not sources and not sources_file:
        _fail("ingest: give at least one SOURCE or --sources-file")
    refuse_empty_sources("ingest: SOURCE", sources)
    if mapping_path and not sources:
        # it maps the SOURCEs only: with a --sources-file alone it was read and ignored, exit 0
        _fail(f"--mapping {mapping_path}: it maps the SOURCEs given on the command line, and none is given (a "
              "--sources-file names each source's mapping itself: 'mapping:' in its entries)")
    if source_name is not None:
        if len(sources) != 1 or sources_file:
            _fail(f"ingest: --source {source_name!r} names the rows of one SOURCE; {len(sources)} given"
                  + (" and a --sources-file (give each entry a 'name:' there)" if sources_file else ""))
        if not source_name.strip() or not printable(source_name) == source_name:
            _fail(f"ingest: --source {source_name!r}: give a name of printable characters")
        source_name = source_name.strip()
    options = SourceOptions(experiments=experiments, filter_string=filter_string, include_running=include_running,
                            drop_deleted=drop_deleted, history=history, page_size=page_size, overlap_s=overlap_s,
                            full=full, drop_missing=drop_missing, source_name=source_name)
    mapping = load_mapping(mapping_path) if mapping_path else None
    srcs = open_sources(list(sources), mapping, options) if sources else []
    if sources_file:
        srcs += open_source_specs(load_sources_file(sources_file), options)
        if sources:   # a file named here and its copy in the sources file: each is checked on its own
            from .ingest import refuse_shared_files

            refuse_shared_files(srcs)
    ctx = click.get_current_context()
    mlflow_only = [p.opts[0] for p in ctx.command.params
                   if p.name in ("experiments", "filter_string", "include_running", "drop_deleted", "full", "history",
                                 "page_size", "overlap_s")
                   and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if mlflow_only and not any(getattr(x, "uses_run_options", False) for x in srcs):
        # silently ignored before: a --full or --experiment with files only changed nothing
        _fail(f"ingest: {', '.join(mlflow_only)}: for MLflow sources, and none is given (a file is read whole "
              "whenever it changes)")
    if (drop_missing and srcs and all(getattr(x, "uses_run_options", False) for x in srcs)
            and ctx.get_parameter_source("drop_missing") == click.core.ParameterSource.COMMANDLINE):
        # silently ignored before: deleted MLflow runs stayed in the store, exit 0
        _fail("ingest: --drop-missing: for file sources, and none is given (for runs deleted in MLflow: "
              "--drop-deleted)")
    store_obj = Store(store_uri)
    store_obj.check_writable()            # an unreachable or read-only store fails once, not once per source
    with progress_bar(not quiet) as progress:
        reports = ingest_sources(srcs, store_obj, progress=progress)
    for r in reports:
        click.echo(r.line(), err=not r.ok)
        for note in r.notes:
            click.echo(printable(note), err=True)
    failed = [r for r in reports if not r.ok]
    if failed and len(failed) == len(reports):
        sys.exit(2)                       # nothing ingested: the failure lines above say why
    if failed:
        click.echo(f"ingest: {len(failed)} of {len(reports)} sources failed (above); the others were ingested"
                   + ("" if keep_going else "; exit 1 (--keep-going exits 0)"), err=True)
        if not keep_going:
            sys.exit(1)


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------


def _selection_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--us-task", multiple=True, help="Only these upstream tasks (repeatable)."),
        click.option("--ds-task", multiple=True, help="Only these downstream tasks (repeatable)."),
        click.option("--eval-protocol", "--protocol", "eval_protocol", multiple=True,
                     help="Only these eval protocols, e.g. fewshot (repeatable; --protocol is an alias)."),
        click.option("--shots", multiple=True, type=int, help="Only these shot counts (repeatable)."),
        click.option("--layer", type=int, default=None, help="Probe of this block (default: pre-logits rows)."),
    ]):
        f = opt(f)
    return f


#: the fit options that shape only the headline (fit, report): sensitivity and bootstrap refit the
#: paper's Eq. 1 with no headline, so they hide these and refuse them when given
HEADLINE_KEYS = ("laws", "tolerance", "ds_target")


#: --frontiers' help, where the default is every estimator (fit, sensitivity, report, refit)
FRONTIERS_HELP = ("Frontier estimators (default: all of vertices, hull-curve, bins, hull-curve-upper, bins-upper, "
                  "all).")


def _fit_options(f: Any, headline: bool = True, frontiers_help: str = FRONTIERS_HELP) -> Any:
    hidden = not headline
    for opt in reversed([
        click.option("--holdout-quantile", type=field_range("holdout_quantile"), default=D.HOLDOUT_QUANTILE,
                     show_default=True, help="Fit on points at or below this quantile of US accuracy; predict the rest."),
        click.option("--holdout-above", type=field_range("holdout_above"), default=None,
                     help="Fit on points with US accuracy at or below this value (wins over the quantile)."),
        click.option("--loss", type=click.Choice(["lsq", "huber", "log"]), default=D.LOSS, show_default=True,
                     help="The fit's loss: lsq (squared error in accuracy units), huber (robust to outlying "
                          "models, 1-point threshold) or log (squared error of log error rates)."),
        click.option("--alpha-max", type=field_range("alpha_max"), default=D.ALPHA_MAX, show_default=True,
                     help="Upper bound on alpha."),
        click.option("--nondecreasing", is_flag=True, help="Keep only each frontier's non-decreasing part."),
        click.option("--laws", default=None, metavar="L1,L2", hidden=hidden,
                     help="Laws to fit and back-test (default: all of eq1, eq1-bayes, power, logit-linear, "
                          "probit-linear)."),
        click.option("--frontiers", default=None, metavar="F1,F2", help=frontiers_help),
        click.option("--tolerance", type=ShownRange(TOLERANCE_PT), default=100 * D.TOLERANCE,
                     show_default=True, hidden=hidden,
                     help="Back-test RMSE in accuracy points (3 = 3 points) above which a headline is not "
                          f"trusted; values below {MIN_TOLERANCE_PT:g} look like fractions and are refused."),
        click.option("--ds-target", type=field_range("ds_target"), default=None, metavar="ACC", hidden=hidden,
                     help="A DS accuracy (fraction); the headline then says what US accuracy reaches it."),
    ]):
        f = opt(f)
    return f


def _given_options(*names: str) -> list[str]:
    """The flags among ``names`` (parameter names) given on the command line or by the
    environment, not left at their defaults."""
    ctx = click.get_current_context()
    return [f"--{n.replace('_', '-')}" for n in names
            if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]


def refuse_ray_options_if_serial(serial: bool) -> None:
    """One line for --address or --workers given beside --serial: they were silently ignored (the
    user believed a cluster did the work)."""
    given = _given_options("address", "workers") if serial else []
    if given:
        _fail(f"{', '.join(given)}: for the Ray a command uses, and --serial runs in this process without Ray "
              "(drop one of them)")


def check_ray(address: str | None, workers: int | None = None) -> None:
    """Before a Ray command's work: one line for an ``--address`` or ``$RAY_ADDRESS`` it cannot use
    (:func:`~meta_study.ray_session.check_target`), and for ``--workers`` beside a cluster: it
    sets the CPUs of a Ray of its own, and a cluster ran on all of its CPUs (only the tasks'
    packing changed) while the user believed it limited."""
    from .ray_session import check_target, own_ray_requested, refuse_empty_address, shown_address

    refuse_empty_address(address)
    if workers is not None and not own_ray_requested(address):
        # shown_address: safe_uri left a user:password@host:port without a scheme whole in the line
        where = (f"the cluster at --address {shown_address(address)}" if address
                 else f"the cluster in $RAY_ADDRESS ({shown_address(os.environ['RAY_ADDRESS'])})")
        _fail(f"--workers {workers}: the CPUs of a Ray of its own, and this command joins {where}, which runs on "
              "its own CPUs: drop --workers, or add --address local")
    check_target(address)


#: the group's columns (``schema.GROUP``, written out: cli imports no pyarrow at start; a test
#: checks they agree) and the probe layer
SELECTION_KEYS = ("us_task", "ds_task", "eval_protocol", "shots", "layer")
FIT_KEYS = ("holdout_quantile", "holdout_above", "loss", "alpha_max", "nondecreasing", "laws", "frontiers",
            "tolerance", "ds_target")
@contextlib.contextmanager
def flag_errors() -> Iterator[None]:
    """An :class:`OptionError` (raised where the option is defined) as one line that names the
    command line's flag, in the flag's units."""
    try:
        yield
    except OptionError as e:
        raise UserError(option_message(e.option, e.value, e.allowed)) from None


def analysis_command(name: str | None = None, *, fit_options: bool = True, headline: bool = True,
                     out_help: str = "Output directory.", frontiers_help: str = FRONTIERS_HELP,
                     short_help: str | None = None) -> Any:
    """An analysis command: ``STORE``, ``--out DIR``, the group selection and (unless
    ``fit_options=False``) the fit options, before the command's own options; ``short_help`` is its
    line in ``meta-study --help`` (without it click cuts the docstring at ~45 characters, "...").
    The function gets ``store_uri``, ``store`` (opened), ``out_dir``, ``sel`` (a Selection) and ``fit``
    (FitOptions, or None), and its own options; an option out of its range is one line. With
    ``headline=False`` (a command that refits Eq. 1 only) the headline's options
    (:data:`HEADLINE_KEYS`) are hidden and refused in one line when given."""
    def deco(fn: Callable[..., None]) -> Any:
        cmd_name = name or fn.__name__

        @functools.wraps(fn)
        def command(store_uri: str, out_dir: str, **kw: Any) -> None:
            from .analysis.outputs import removed_if_failed
            from .store import open_store

            given = [] if headline or not fit_options else _given_options(*HEADLINE_KEYS)
            if given:
                # they were accepted and ignored (sensitivity recorded --laws power beside all laws)
                raise UserError(f"{', '.join(given)}: {cmd_name} refits the paper's Eq. 1 only, with no headline "
                                "or trust; those options are for fit and report (it takes --frontiers)")
            sel = _selection(*(kw.pop(k) for k in SELECTION_KEYS))
            fit = _fit_opts(**{k: kw.pop(k) for k in FIT_KEYS}) if fit_options else None
            with flag_errors():
                opened = open_store(store_uri)
                with removed_if_failed(out_dir):   # a refused option, no rows: no empty --out left
                    prepare_out(out_dir, store_uri)
                    fn(store_uri=store_uri, store=opened, out_dir=out_dir, sel=sel, fit=fit, **kw)

        if fit_options:
            command = _fit_options(command, headline=headline, frontiers_help=frontiers_help)
        command = _selection_options(command)
        command = click.option("--out", "out_dir", callback=_out_dir, required=True, metavar="DIR",
                               help=out_help)(command)
        return cli.command(name, short_help=short_help)(click.argument("store_uri", metavar="STORE")(command))
    return deco


def _selection(us_task: tuple[str, ...], ds_task: tuple[str, ...], eval_protocol: tuple[str, ...],
               shots: tuple[int, ...], layer: int | None) -> Any:
    from .analysis.groups import Selection

    def names(values: tuple[str, ...]) -> tuple[str, ...]:
        # as the store holds them (ingest strips spaces at either end, composes accents (NFC) and
        # drops zero-width characters): "oxford pets " matched nothing
        from .validation import canonical_name

        return tuple(dict.fromkeys(canonical_name(v) for v in values))

    return Selection(us_task=names(us_task), ds_task=names(ds_task), eval_protocol=names(eval_protocol), shots=shots,
                     layer=layer)


def _names(option: str, text: str | None, registry: Any) -> tuple[str, ...]:
    if text is None:
        return tuple(registry)
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    bad = [n for n in names if n not in registry]
    if bad or not names:
        _fail(f"{option}: unknown name(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(registry)}")
    return names


def _fit_opts(holdout_quantile: float, holdout_above: float | None, loss: str, alpha_max: float,
              nondecreasing: bool, laws: str | None = None, frontiers: str | None = None,
              tolerance: float = 100 * D.TOLERANCE, ds_target: float | None = None,
              payoff_threshold: float = D.PAYOFF_THRESHOLD) -> Any:
    # the dataclasses check their own ranges; flag_errors names each field by its flag, in its units
    if 0 < tolerance < MIN_TOLERANCE_PT:
        raise UserError(f"--tolerance {tolerance:g}: the tolerance is in accuracy points (3 = a back-test RMSE of "
                        f"3 points), not a fraction, and at least {MIN_TOLERANCE_PT:g}; did you mean "
                        f"{100 * tolerance:g}?")
    with flag_errors():
        return _build_fit_opts(holdout_quantile, holdout_above, loss, alpha_max, nondecreasing, laws, frontiers,
                               tolerance, ds_target, payoff_threshold)


def _build_fit_opts(holdout_quantile: float, holdout_above: float | None, loss: str, alpha_max: float,
                    nondecreasing: bool, laws: str | None, frontiers: str | None, tolerance: float,
                    ds_target: float | None, payoff_threshold: float) -> Any:
    from .analysis.fitting import FitOptions
    from .analysis.frontiers import FRONTIERS
    from .analysis.laws import LAWS
    from .analysis.selection import SelectionOptions

    selection = SelectionOptions(laws=_names("--laws", laws, LAWS), frontiers=_names("--frontiers", frontiers, FRONTIERS),
                                 tolerance=tolerance / 100.0, payoff_threshold=payoff_threshold,
                                 ds_target=ds_target)
    return FitOptions(holdout_quantile=holdout_quantile, holdout_above=holdout_above, loss=loss,
                      alpha_max=alpha_max, nondecreasing=nondecreasing, selection=selection)


def _no_match(store_uri: str, store_obj: Any, sel: Any) -> str:
    """'no rows match the selection', with the values the store has for each option given
    (:func:`analysis.groups.no_match`: the analysis scripts say the same words)."""
    from .analysis.groups import no_match

    return no_match(store_uri, store_obj, sel)


def _analyze(store_obj: Any, store_uri: str, sel: Any, out_dir: str, options: Any, *, serial: bool = True,
             address: str | None = None, workers: int | None = None, figures: bool = True,
             max_group_figures: int = 60, empty: Callable[[Any], bool] | None = None) -> tuple[Any, Any]:
    """The one pipeline every analysis command runs: analyze (reusing what DIR holds with the same
    options), write what was computed, and say what was reused. ``empty(analysis)``: the command has
    nothing to show, refused before DIR is written (:func:`_nothing_to_fit`)."""
    from .analysis.groups import matches_no_group, unknown_selection
    from .analysis.results import ResultsDir, analyze, stale_parts_line
    from .analysis.tables import options_text
    from .analysis.outputs import footer

    unknown = unknown_selection(store_uri, store_obj, sel)
    if unknown:
        _fail(unknown)
    if matches_no_group(store_obj, sel):
        # said before DIR is read: into a DIR of earlier results, a mistyped --ds-task was refused as
        # "made with another selection ... give the same options to reuse it", not as a typo
        _fail(_no_match(store_uri, store_obj, sel))
    if options.fits and set(options.fit.selection.frontiers) <= {"all"}:
        # every group said "not trusted (no usable fit)" beside "15/15 candidate fits usable"
        _fail("--frontiers all: the headline is built from frontier estimators (the best models at each US "
              "accuracy); 'all' fits every model, the typical one, and is only shown beside them. Add one, e.g. "
              "--frontiers vertices,all")
    if not serial:
        check_ray(address, workers)   # before the work, and even where every output is reused
    results = ResultsDir(out_dir)
    with progress_bar() as progress:
        # group_figures: a fits part drawn with fewer per-group figures than asked is fitted again
        a = analyze(store_obj, sel, options, results=results, use_ray=not serial, address=address,
                    workers=workers, progress=progress, figures=figures,
                    group_figures=max_group_figures if figures else None)
    if a.n_groups == 0:
        _fail(_no_match(store_uri, store_obj, sel))
    if empty is not None and empty(a):   # an empty table and its results.json entry were written first
        _fail(_nothing_to_fit(store_uri, options.fit, options.bootstrap.frontiers if options.bootstrap else ()))
    out = results.write(a, sel, figures=figures, max_group_figures=max_group_figures,
                        footer_text=footer(store_obj, options_text(options.fit), a.provenance.get("store version")))
    for part in a.reused:
        click.echo(f"reused {part} from {out_dir} (same options, selection and store version)")
    # parts of DIR of another store, store version or selection: one line, as the scripts say it
    stale = stale_parts_line(results, a, store_uri, shown_path(out_dir), sel, command_flags=flags_of)
    if stale:
        click.echo(stale)
    if figures and a.n_groups > max_group_figures:   # the rest have no figure: said, not silent
        click.echo(f"per-group figures for the first {max_group_figures} of {a.n_groups} groups (in the order of "
                   "fits.csv; --max-group-figures for more, or --ds-task to choose)")
    return a, out


def flags_of(name: str) -> frozenset[str]:
    """Every spelling of the visible options of ``meta-study NAME`` (the ``analysis/*.py`` scripts
    pass it to ``scripts.analyse``: the advice of the stale-parts line names these commands)."""
    return frozenset(o for p in cli.commands[name].params if isinstance(p, click.Option) and not p.hidden
                     for o in (*p.opts, *p.secondary_opts))


def _nothing_to_fit(store_uri: str, fit: Any, frontiers: Sequence[str] = ()) -> str:
    """Why sensitivity or bootstrap made no row (or bootstrap only rows of no fit): no group of the
    selection has 3 points to fit (on any of ``frontiers``), which a hold-out split can cause
    (``--holdout-above 0`` leaves none: it said "no groups with at least 3 points" of groups of 12)."""
    split = (f" at or below the hold-out split (--holdout-above {fit.holdout_above:g})" if fit.holdout_above is not None
             else f" at or below the hold-out split (--holdout-quantile {fit.holdout_quantile:g})"
             if fit.holdout_quantile is not None and fit.holdout_quantile < 1 else "")
    on = f" on any frontier ({', '.join(frontiers)})" if frontiers else ""
    from .store import display_uri   # an s3:// URI's keys shown as *** (it printed them)

    return f"{display_uri(store_uri)}: no group of the selection has at least 3 points to fit{on}{split}"


def shown_path(path: str) -> str:
    """A path as a user reads it back: relative under the working directory, else absolute
    (``--out /tmp/x`` run from a repository printed ``../../tmp/x``)."""
    import os

    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _report_outputs(out: Any, out_dir: str) -> None:
    import os

    for p in out.tables:
        click.echo(f"wrote {shown_path(p)}")
    if out.figures:
        click.echo(f"wrote {len(out.figures)} figure files under {shown_path(os.path.join(out_dir, 'figures'))}")


@analysis_command(short_help="Fit and back-test the laws: what +1/+3/+5 US points buy.")
@click.option("--no-figures", is_flag=True, help="Tables only.")
@click.option("--max-group-figures", default=60, show_default=True, type=click.IntRange(min=0),
              help="Per-group figures to draw at most.")
@click.option("--threshold", default=D.PAYOFF_THRESHOLD, show_default=True, type=field_range("payoff_threshold"),
              help="'Scaling stops paying' where +1 US point buys fewer DS points than this (as report's, so that "
                   "report reuses the fits in DIR).")
def fit(store_uri: str, store: Any, out_dir: str, sel: Any, fit: Any, no_figures: bool, max_group_figures: int,
        threshold: float) -> None:
    """Fit every law to every frontier of each group, back-test them, and pick each headline.

    Writes DIR/fits.parquet (+ .csv): one row per group x law x frontier with the parameters,
    fit_err, pred_err, backtest_err, and for the headline row (headline = true) its trust
    flags, saturation, stop-paying US accuracy and prediction with intervals; figures under
    DIR/figures. --holdout-quantile 1.0 fits on every point (the back-tests run inside them).
    """
    from .analysis.results import AnalysisOptions

    fit = replace(fit, selection=replace(fit.selection, payoff_threshold=threshold))
    a, out = _analyze(store, store_uri, sel, out_dir, AnalysisOptions(fit=fit),
                      figures=not no_figures, max_group_figures=max_group_figures)
    df = a.fits
    import pandas as pd

    from .analysis.answers import answer_text, flags, level_pct, payoff_summary, row_level
    from .analysis.tables import headlines
    from .validation import printable

    ok = df["status"].isin(["ok", "at_bound"]) & ~df["headline"].astype(bool)
    heads = headlines(df)
    # "1 groups" read as a typo; a trusted answer the held-out models contradict is said here, not
    # only as a label at the end of its line (docs/analysis.md: read it as contradicted)
    n = len(heads)
    click.echo(f"{n} group{'s' if n != 1 else ''}, {int(heads['trusted'].sum())} trusted{held_out_note(heads)}; "
               f"{int(ok.sum())}/{int((~df['headline']).sum())} candidate fits usable")
    held = int(heads["n_heldout"].fillna(0).sum()) if "n_heldout" in heads.columns else 0
    if held:   # the answers are from the visible models; "+1 US pt" is beyond the best of those
        # a sum over groups: "1550 model point(s)" of 5 groups read as 1,550 models (310 per group)
        per = heads["n_heldout"].fillna(0).astype(int)
        each = (f"{int(per.iloc[0])} per group" if per.nunique() == 1 else
                f"{int(per.min())}-{int(per.max())} per group") if len(per) > 1 else ""
        click.echo(f"answers use each group's models at or below its hold-out threshold; {held} model point"
                   f"{'s' if held != 1 else ''}{f' ({each})' if each else ''} above it "
                   f"{'are' if held != 1 else 'is'} held out to check them "
                   "(--holdout-quantile 1.0 answers from every model)")
    levels = sorted({row_level(r) for r in heads.to_dict("records")})
    if levels:   # what the brackets of every answer line are (the report says it beside its table)
        lv = ' / '.join(level_pct(v) for v in levels)
        click.echo(f"brackets give the {lv} prediction interval (what a model there will measure); \"trend a-b\" "
                   f"in them, in a trusted answer within the tested horizon, is the trend's {lv} band (where the "
                   "frontier's law lies, without one model's scatter about it); [labels] after a line are its warnings")
    for r in heads.to_dict("records"):
        shots = "" if pd.isna(r["shots"]) else f", {int(r['shots'])}-shot"
        labels = ", ".join(label for label, _ in flags(r.get("warnings")))
        # task names from a source, on one line as written (a tab or an escape code is shown, not obeyed)
        click.echo(printable(f"  {r['us_task']} -> {r['ds_task']} ({r['eval_protocol']}{shots}): "
                             f"{answer_text(r, threshold)}") + (f" [{labels}]" if labels else ""))
    if len(heads):     # the question across groups, from the answers above (nothing they do not state)
        click.echo(payoff_summary(heads.to_dict("records"), threshold))
    for line in label_lines(heads):
        click.echo(line)
    _report_outputs(out, out_dir)


def held_out_note(heads: Any) -> str:
    """`` (N of them flagged held_out: ...)`` where trusted answers carry the ``held_out`` warning,
    else "". Not "contradict them": many were within 5 points, missed by more than the trust
    tolerance only (the report's :func:`~.report.held_out_words` says which, the demo likewise)."""
    from .report import trusted_held_out

    n = trusted_held_out(heads)
    return (f" ({n} of them flagged held_out: on the models the fit did not see, off by more than the trust "
            "tolerance or worse than the flat guess; the report says which)" if n else "")


def label_lines(heads: Any) -> list[str]:
    """What each warning label printed after the answer lines means, once per label used (in the
    order first seen): "[few_points, chord]" was jargon the terminal explained nowhere."""
    from .analysis.answers import flags
    from .analysis.selection import FLAG_HELP

    used = dict.fromkeys(label for r in heads.to_dict("records") for label, _ in flags(r.get("warnings")))
    helps = [f"  {label}: {FLAG_HELP[label]}" for label in used if label in FLAG_HELP]
    return (["the labels (docs/analysis.md, \"Trust, from evidence, and warnings\"):", *helps] if helps else [])


#: Groups a command lists one line each for at most (the table has them all).
MAX_GROUP_LINES = 20


def _group_label(r: Any) -> str:
    import pandas as pd

    from .validation import printable

    shots = "" if r.shots is pd.NA or pd.isna(r.shots) else f", {int(r.shots)}-shot"
    return printable(f"{r.us_task} -> {r.ds_task} ({r.eval_protocol}{shots})")


def sensitivity_lines(table: Any) -> list[str]:
    """Per frontier: the median over groups of the mean prediction error (points) at each group's
    smallest sample and at its largest (each by its sample size n)."""
    import numpy as np

    from .schema import GROUP

    keys = list(GROUP)
    per = table.groupby([*keys, "frontier", "n"], dropna=False)["pred_err"].mean().reset_index()

    def pt(values: Any) -> str:
        v = np.asarray(values, dtype=float)
        return f"{100 * float(np.median(v[np.isfinite(v)])):.1f} pt" if np.isfinite(v).any() else "no fit"

    lines = ["prediction error (RMSE; median over groups) at each group's smallest and largest sample:"]
    for frontier, f in per.groupby("frontier", sort=False):
        by = f.groupby(keys, dropna=False)["n"]
        small, full = f[f["n"] == by.transform("min")], f[f["n"] == by.transform("max")]
        lo, hi = int(small["n"].min()), int(small["n"].max())
        # the largest size by its n: it is every fitting point only where --sizes did not stop below
        # them (--sizes 10,30 of ~1,245 points was called "the full sample")
        flo, fhi = int(full["n"].min()), int(full["n"].max())
        lines.append(f"  {frontier}: {pt(small['pred_err'])} at n={lo}{'' if lo == hi else f'..{hi}'}, "
                     f"{pt(full['pred_err'])} at n={flo}{'' if flo == fhi else f'..{fhi}'}")
    return lines


def _no_bootstrap_fit(a: Any) -> bool:
    """No group of the bootstrap had 3 points on any frontier: every row is a "too_few_points"
    row of NaNs (``--holdout-above 0`` wrote a table of them, exit 0)."""
    t = a.bootstrap
    return bool(t.empty or (t["status"] == "too_few_points").all())


def bootstrap_lines(table: Any, alpha_max: float) -> list[str]:
    """Per group (the first ``MAX_GROUP_LINES``): alpha on each frontier with its interval, and
    whether the estimate, or an end of the interval, sits on alpha's bound ``alpha_max``, or k or
    e_ir on theirs (:func:`~.analysis.bootstrap.bound_notes`, as the report's note says them)."""
    import math

    import pandas as pd

    from .analysis.bootstrap import alpha_bound_words, bound_notes, resolution_note, usable_words
    from .schema import GROUP

    def one(frontier: str, est: float, lo: float, hi: float, n_ok: int, samples: int,
            params: dict[str, tuple[float, float, float]]) -> str:
        """``n_ok`` of ``samples`` resamples usable (both 0: not known)."""
        # "2.62 [nan, nan]" (no resample usable, or every usable one refitted the estimate's own
        # points: 3 fitting points) read as a broken interval; and an interval of 46 usable
        # resamples of 200 said nothing of the 154 that failed
        if not math.isfinite(est):
            text = f"{frontier} no fit"
        elif not (math.isfinite(lo) and math.isfinite(hi)):
            text = f"{frontier} {est:.3g} (no interval" + (f": {usable_words(n_ok, samples)})" if samples else ")")
        else:
            text = f"{frontier} {est:.3g} [{lo:.3g}, {hi:.3g}]" + (
                f" ({usable_words(n_ok, samples)})" if n_ok < samples else "")
        at, reach = alpha_bound_words(est, lo, hi, alpha_max, k=params.get("k", (math.nan,))[0])
        # e_ir 0 [0, 0] on Country211 (DS ~30-40%): a saturation of 100% that is the fitter's bound
        others = bound_notes(params, alpha_max, alpha=False)
        return (text + (f" {at}" if at else "") + (f" ({reach})" if reach else "")
                + "".join(f" ({n})" for n in others))

    keys = [*GROUP, "frontier"]

    def key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        # (group..., frontier) of a row, NaN (no shots) as "": NaN != NaN as a dict key
        return tuple("" if pd.isna(r[c]) else r[c] for c in keys)

    params: dict[tuple[Any, ...], dict[str, tuple[float, float, float]]] = {}   # key -> param -> (est, lo, hi)
    for r in table.to_dict("records"):
        params.setdefault(key(r), {})[r["param"]] = (float(r["estimate"]), float(r["lo"]), float(r["hi"]))
    alpha = table[table["param"] == "alpha"]
    groups = list(alpha.groupby(list(GROUP), dropna=False, sort=False))
    level = f" {100 * float(alpha['level'].iloc[0]):g}%" if len(alpha) else ""
    lines = [f"alpha with its{level} interval:"]
    for _, g in groups[:MAX_GROUP_LINES]:
        parts = [one(r["frontier"], float(r["estimate"]), float(r["lo"]), float(r["hi"]), _count(r.get("n_ok", 0)),
                     _count(r.get("samples", 0)), params.get(key(r), {}))
                 for r in g.to_dict("records")]
        lines.append(f"  {_group_label(g.iloc[0])}: {'; '.join(parts)}")
    if len(groups) > MAX_GROUP_LINES:
        lines.append(f"  ... and {len(groups) - MAX_GROUP_LINES} more groups (bootstrap.parquet has them all)")
    # --samples 10 at 95%: intervals narrower than their level, said nowhere
    note = resolution_note(table)
    return lines + [note] if note else lines


def _count(v: Any) -> int:
    """A count read from a table (0 where it is missing or NA)."""
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _parse_sizes(sizes: str | None) -> tuple[int, ...] | None:
    if not sizes:
        return None
    try:
        vals = tuple(int(x) for x in sizes.split(",") if x.strip())
    except ValueError:
        _fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    if not vals or min(vals) < D.MIN_SIZE:
        _fail(f"--sizes must be integers >= {D.MIN_SIZE}, got {sizes!r}")
    if max(vals) > MAX_SIZE:
        # with --bootstrap every draw holds that many models: --sizes 10,30,100000000 ran out of memory
        _fail(f"--sizes {max(vals)}: more than {MAX_SIZE:,} models in a sample, the most it takes (a size above a "
              "group's fitting points draws all of them; with --bootstrap each draw holds that many)")
    return tuple(sorted(set(vals)))


@analysis_command(headline=False)
@click.option("--sizes", default=None,
              help=f"Sample sizes, e.g. 10,30,100: integers {D.MIN_SIZE} to {MAX_SIZE:,} "
                   "(default: ~8 geometric steps from 10 to all).")
@click.option("--trials", default=D.SENSITIVITY_TRIALS, show_default=True, type=TRIALS, help="Draws per sample size.")
@click.option("--bootstrap", "replace", is_flag=True, help="Draw with replacement instead of without.")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Master seed; results are deterministic for a seed.")
@click.option("--address", default=None, help=D_ADDRESS_HELP)
@click.option("--workers", type=WORKERS, default=None, help="Ray workers for a Ray of its own (default: all CPUs).")
@click.option("--serial", is_flag=True, help="Run in this process, without Ray.")
@click.option("--no-figures", is_flag=True, help="Tables only.")
def sensitivity(store_uri: str, store: Any, out_dir: str, sel: Any, fit: Any, sizes: str | None, trials: int,
                replace: bool, seed: int, address: str | None, workers: int | None, serial: bool, no_figures: bool) -> None:
    """Sample-size sensitivity of every frontier's fit.

    Fits Eq. 1 to every frontier estimator on random subsamples of each group, and prints per
    frontier the median prediction error at each group's smallest and largest sample. Writes
    DIR/sensitivity.parquet (one row per group x n x trial x frontier),
    DIR/sensitivity_summary.parquet, DIR/sensitivity_frontiers.parquet (the frontiers ranked) and
    the figure DIR/figures/sensitivity.png.
    """
    from .analysis.results import AnalysisOptions
    from .analysis.sensitivity import SensitivityOptions

    refuse_ray_options_if_serial(serial)
    opts = SensitivityOptions(sizes=_parse_sizes(sizes), trials=trials, replace=replace, seed=seed, fit=fit,
                              frontiers=fit.selection.frontiers)
    a, out = _analyze(store, store_uri, sel, out_dir, AnalysisOptions(fit=fit, fits=False, sensitivity=opts),
                      serial=serial, address=address, workers=workers, figures=not no_figures,
                      empty=lambda a: a.sensitivity.empty)
    table = a.sensitivity
    click.echo(f"{len(table)} fits over {table.groupby(['us_task', 'ds_task', 'eval_protocol', 'shots'], dropna=False).ngroups} groups")
    for line in sensitivity_lines(table):
        click.echo(line)
    _report_outputs(out, out_dir)


@analysis_command("bootstrap", headline=False,
                  frontiers_help="Frontier estimators to refit (default: vertices, all: the paper's pair).")
@click.option("--samples", default=D.BOOTSTRAP_SAMPLES, show_default=True, type=SAMPLES, help="Bootstrap resamples per group.")
@click.option("--level", default=D.BOOTSTRAP_LEVEL, show_default=True, type=field_range("level"),
              help="Confidence level of the percentile intervals.")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Master seed; results are deterministic for a seed.")
@click.option("--address", default=None, help=D_ADDRESS_HELP)
@click.option("--workers", type=WORKERS, default=None, help="Ray workers for a Ray of its own (default: all CPUs).")
@click.option("--serial", is_flag=True, help="Run in this process, without Ray.")
def bootstrap_cmd(store_uri: str, store: Any, out_dir: str, sel: Any, fit: Any, samples: int, level: float, seed: int,
                  address: str | None, workers: int | None, serial: bool) -> None:
    """Bootstrap confidence intervals of the law's parameters.

    Resamples each group's points and refits Eq. 1 for k, alpha, e_IR and saturation (on the hull
    vertices and on all points, the paper's pair, unless --frontiers names others), and prints per
    group alpha with its interval, saying when an end sits on alpha's bound (--alpha-max). Writes
    DIR/bootstrap.parquet: one row per group x frontier x parameter.
    """
    from .analysis.results import AnalysisOptions
    from .analysis.bootstrap import BootstrapOptions

    refuse_ray_options_if_serial(serial)
    # the paper's pair of frontiers unless --frontiers names others
    frontiers = {"frontiers": fit.selection.frontiers} if _given_options("frontiers") else {}
    opts = BootstrapOptions(samples=samples, level=level, seed=seed, fit=fit, **frontiers)
    a, out = _analyze(store, store_uri, sel, out_dir, AnalysisOptions(fit=fit, fits=False, bootstrap=opts),
                      serial=serial, address=address, workers=workers, empty=_no_bootstrap_fit)
    table = a.bootstrap
    for line in bootstrap_lines(table, fit.alpha_max):
        click.echo(line)
    _report_outputs(out, out_dir)


@analysis_command(fit_options=False, short_help="The paper's correlation tables F.1, F.2, F.20 and F.21.")
@click.option("--no-figures", is_flag=True, help="Tables only.")
def correlations(store_uri: str, store: Any, out_dir: str, sel: Any, fit: Any, no_figures: bool) -> None:
    """The paper's correlation tables: F.1 and F.2 (parameters vs shots), F.20 (between DS
    tasks) and F.21 (DS vs US), written under DIR/correlations with heatmaps."""
    from .analysis.fitting import FitOptions
    from .analysis.results import AnalysisOptions

    a, out = _analyze(store, store_uri, sel, out_dir, AnalysisOptions(fit=FitOptions(), fits=False, correlations=True),
                      figures=not no_figures)
    tables = a.correlations
    for name, t in tables.items():
        click.echo(f"{name}: {len(t)} rows")
    if tables["f1_shots_correlation"].empty or tables["f2_increase_likelihood"].empty:
        click.echo(f"  F.1/F.2 are empty: {_why_no_shot_tables(store.summary().groups)}")
    _report_outputs(out, out_dir)


def _why_no_shot_tables(groups: Any) -> str:
    """Why tables F.1 (>= 3 shot settings per DS task) and F.2 (>= 2) have no rows."""
    shots = groups.dropna(subset=["shots"]) if "shots" in groups else groups.iloc[:0]
    if shots.empty:
        return "no group has a shot setting (the data has no few-shot evaluations, e.g. eval_protocol 'shift')"
    most = int(shots.groupby(["us_task", "ds_task"])["shots"].nunique().max())
    return (f"they compare fits across shot settings of one DS task; the most settings any task has here is "
            f"{most} (F.1 needs 3, F.2 needs 2)")


# --------------------------------------------------------------------------------------------
# refit and report
# --------------------------------------------------------------------------------------------


#: --every at most (seconds): a year, far below what time.sleep can wait.
MAX_EVERY_S = 366 * 86400


@cli.command(short_help="Re-ingest, refit what changed, publish: the scheduled job.")
@click.option("--store", "store_uri", required=True, metavar="STORE", help="The meta-study store.")
@click.option("--source", "sources", multiple=True, metavar="SOURCE", help="Ingest this source first (repeatable).")
@click.option("--mapping", "mapping_path", default=None, metavar="MAPPING.yaml", callback=_user_path,
              help="Mapping for --source.")
@click.option("--sources-file", default=None, metavar="SOURCES.yaml", callback=_user_path,
              help="Sources to ingest first.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="Publish each refit as an MLflow run here (default: $MLFLOW_TRACKING_URI; unset or 'none': no "
                   "run).")
@click.option("--publish-experiment", "--experiment", "experiment", default=D.REFIT_EXPERIMENT, show_default=True,
              help="The MLflow experiment the refit's runs are published to (--experiment is the old name: for "
                   "ingest it means where runs are read from).")
@click.option("--out", "out_dir", callback=_out_dir, default="meta-study-refits", show_default=True, metavar="DIR",
              help="Where versioned results go: DIR/refits/<UTC time>/, DIR/LATEST.")
@click.option("--every", default=None, metavar="DURATION", help="Refit in a loop, e.g. 30m, 1h, 1d. A round after the first that fails is said in one line on stderr and the loop goes on; a failed first round exits (unless another writer held the store past the wait).")
@_fit_options
@click.option("--trials", default=D.SENSITIVITY_TRIALS, show_default=True, type=TRIALS, help="Sensitivity draws per sample size.")
@click.option("--samples", default=D.REFIT_BOOTSTRAP_SAMPLES, show_default=True, type=SAMPLES, help="Bootstrap resamples per group.")
@click.option("--threshold", default=D.PAYOFF_THRESHOLD, show_default=True, type=field_range("payoff_threshold"),
              help="'Scaling stops paying' where +1 US point buys fewer DS points than this.")
@click.option("--address", default=None, help=D_ADDRESS_HELP)
@click.option("--workers", type=WORKERS, default=None, help="Ray workers for a Ray of its own (default: all CPUs).")
@click.option("--serial", is_flag=True, help="Run in this process, without Ray.")
def refit(store_uri: str, sources: tuple[str, ...], mapping_path: str | None, sources_file: str | None,
          tracking_uri: str | None, experiment: str, out_dir: str, every: str | None, trials: int, samples: int,
          threshold: float, address: str | None, workers: int | None, serial: bool, **kw: Any) -> None:
    """Re-ingest, re-fit what changed, and publish: the scheduled job.

    Fits every group; runs sensitivity and bootstrap only for groups whose data changed (every
    group when the options or the analysis code changed), and says which ('why'); writes tables,
    figures and an HTML report to a new version directory; logs one MLflow run. With nothing
    changed it stops after the fingerprint check. Never two refits at once on one store.
    """
    import time as _time

    from .analysis.bootstrap import BootstrapOptions
    from .analysis.sensitivity import SensitivityOptions
    from .refit import RefitConfig, parse_every, refit as run_refit

    from .mlflow_client import refuse_credentials

    source = click.get_current_context().get_parameter_source("tracking_uri")
    if tracking_uri is not None and not tracking_uri.strip() and source == click.core.ParameterSource.COMMANDLINE:
        # `--tracking-uri "$MLFLOW_URI"` with the variable unset published nothing, exit 0
        _fail(f"--tracking-uri {tracking_uri!r}: an empty URI; give the tracking URI, or none for no MLflow run")
    if not experiment.strip():
        # MLflow refused it only once the refit ran, in a line that blamed --tracking-uri
        _fail(f"--publish-experiment {experiment!r}: an empty experiment name")
    if tracking_uri and tracking_uri.strip().lower() == "none":   # no run, whatever the environment says
        tracking_uri = None
    if not tracking_uri and click.get_current_context().get_parameter_source("experiment") not in (
            None, click.core.ParameterSource.DEFAULT):
        # nothing is published without a tracking URI: the experiment was ignored, exit 0
        _fail(f"--publish-experiment {experiment!r}: names the MLflow experiment of the refit's run, and no run is "
              "published without a tracking URI (--tracking-uri or $MLFLOW_TRACKING_URI; 'none' publishes nothing)")
    refuse_ray_options_if_serial(serial)
    refuse_empty_sources("--source", sources)
    if mapping_path and not sources:
        raise UserError(f"--mapping {mapping_path}: it maps the files of --source, and none is given (a "
                        "--sources-file names each source's mapping itself)")
    if tracking_uri:   # named by where it came from; the message never repeats the credentials
        refuse_credentials(tracking_uri, "MLFLOW_TRACKING_URI" if source == click.core.ParameterSource.ENVIRONMENT
                           else "--tracking-uri")
    period = parse_every(every) if every is not None else None   # "" is no loop: refused, not one refit
    if period is not None and period > MAX_EVERY_S:
        # time.sleep overflowed (a traceback after the first refit had run)
        _fail(f"--every: {every!r} is longer than a year (366d), the longest wait between refits")
    if not sources and not sources_file:   # else the ingest creates it
        from .store import open_store

        open_store(store_uri)   # before --out is made: a mistyped --store creates nothing
    # the options before --out is made: a refused one leaves no empty directory behind
    fit_opts = _fit_opts(payoff_threshold=threshold, **kw)
    with flag_errors():
        cfg = RefitConfig(store=store_uri, out=out_dir, sources=sources, mapping=mapping_path, sources_file=sources_file,
                          tracking_uri=tracking_uri, experiment=experiment, fit=fit_opts,
                          sensitivity=SensitivityOptions(trials=trials, fit=fit_opts,
                                                         frontiers=fit_opts.selection.frontiers),
                          bootstrap=BootstrapOptions(samples=samples, fit=fit_opts), address=address, workers=workers,
                          use_ray=not serial, threshold=threshold)
    if not serial:
        check_ray(address, workers)   # before --out is made and every group fitted
    from .analysis.outputs import removed_if_failed

    # a failed first refit (or a refused setting) leaves no empty --out, nor the parents it made
    with removed_if_failed(out_dir):
        prepare_out(out_dir, store_uri)
        first = True
        while True:
            start = _time.monotonic()
            try:
                with progress_bar() as progress:
                    res = run_refit(cfg, progress=progress, log=click.echo)
            except Exception as e:  # noqa: BLE001 - a failed round is said, and the schedule goes on
                # a schedule outlives a tracking server restarting, a store briefly unreachable or a
                # bug in one round (a damaged record ended a cron schedule with a traceback); the
                # versions stay as they were. Only the first run fails (a wrong setting is said at
                # once, not once an hour), unless another writer held the store past the wait: no
                # setting is wrong, and a service started beside a long ingest died. One line, one
                # format (refit.round_failure)
                from .refit import StoreWriterBusy, round_failure

                if period is None or (first and not isinstance(e, StoreWriterBusy)):
                    raise

                if os.environ.get("META_STUDY_TRACEBACK") and not isinstance(e, UserError):
                    import traceback

                    traceback.print_exc()
                click.echo(round_failure(e, out_dir), err=True)
            else:
                _echo_refit(res)
                if res.failed_sources:
                    # as `ingest`: a source that failed is an exit code, not only a line among others
                    # (a cron refit published results of old data and exited 0)
                    # only a new version has a refit.json of its own; a refit that changed nothing
                    # (or found no groups) wrote none, so the line above it is the record
                    where = " (refit.json: failed_sources)" if res.status == "refitted" else ""
                    click.echo(f"refit: {len(res.failed_sources)} source(s) failed; this refit used the store as it "
                               f"was{where}", err=True)
                    if period is None:
                        sys.exit(1)
            first = False
            if period is None:
                return
            wait = max(0.0, period - (_time.monotonic() - start))
            try:
                click.echo(f"next refit in {wait:.0f} s (Ctrl-C to stop)")
                _time.sleep(wait)
            except (KeyboardInterrupt, Terminated):
                return   # between rounds nothing is interrupted: a service's stop (SIGTERM) is a clean end, as Ctrl-C


def _first_line_of(e: BaseException) -> str:
    """An error's first line, its control characters shown, not obeyed (an error line of one)."""
    from .validation import printable

    return printable((str(e).strip().splitlines() or [type(e).__name__])[0])


def _echo_refit(res: Any) -> None:
    from .validation import printable

    if res.status == "refitted":
        click.echo(f"refit: {len(res.changed)} changed, {res.unchanged} unchanged group(s) -> {res.version_dir} "
                   f"({res.seconds:.1f} s)")
        if res.message:   # the data, the options or the code: "75 changed" alone sent users looking for new runs
            click.echo(f"  why: {printable(res.message)}")
        for u in res.unfittable:   # task names from a source, on one line as written
            click.echo(f"  could not fit: {printable(u)}")
        click.echo(f"report: {res.version_dir}/index.html")
        if res.mlflow_run_id:
            click.echo(f"mlflow run: {res.mlflow_run_id}" + (f" ({res.mlflow_url})" if res.mlflow_url else ""))
    elif res.status == "published":
        click.echo(f"refit: published: {res.message} -> {res.version_dir} ({res.seconds:.1f} s)")
        click.echo(f"mlflow run: {res.mlflow_run_id}" + (f" ({res.mlflow_url})" if res.mlflow_url else ""))
    else:
        click.echo(f"refit: {res.status}: {res.message} ({res.seconds:.1f} s)")


@analysis_command(out_help="Where the report and its tables go.",
                  short_help="A static HTML report: answers, tables and figures.")
# the same defaults as `sensitivity` and `bootstrap`, so that the README's tour (those commands,
# then `report`, into one DIR) reuses their outputs instead of refusing them
@click.option("--trials", default=D.SENSITIVITY_TRIALS, show_default=True, type=TRIALS, help="Sensitivity draws per sample size.")
# as sensitivity's: `sensitivity --sizes 10,30` then `report` into one DIR was refused with "give
# ... the same options to reuse it", and report had no --sizes to give
@click.option("--sizes", default=None,
              help=f"Sensitivity sample sizes, e.g. 10,30,100: integers {D.MIN_SIZE} to {MAX_SIZE:,} "
                   "(default: ~8 geometric steps from 10 to all).")
@click.option("--samples", default=D.BOOTSTRAP_SAMPLES, show_default=True, type=SAMPLES, help="Bootstrap resamples per group.")
@click.option("--threshold", default=D.PAYOFF_THRESHOLD, show_default=True, type=field_range("payoff_threshold"),
              help="'Scaling stops paying' where +1 US point buys fewer DS points than this.")
@click.option("--serial", is_flag=True, help="Run in this process, without Ray.")
def report(store_uri: str, store: Any, out_dir: str, sel: Any, fit: Any, trials: int, sizes: str | None, samples: int,
           threshold: float, serial: bool) -> None:
    """Build a static HTML report of STORE in DIR/index.html: per task, the headline's answer
    (where scaling stops paying and a prediction, with intervals) or why it is not identified; the
    headline next to the paper's Eq. 1 on the hull vertices; per-task figures, the sensitivity
    figure and the correlation heatmaps."""
    from .analysis.results import REPORT_KEPT, AnalysisOptions
    from .analysis.bootstrap import BootstrapOptions
    from .analysis.sensitivity import SensitivityOptions
    from .report import render_report

    fit_opts = replace(fit, selection=replace(fit.selection, payoff_threshold=threshold))
    # built as `sensitivity` and `bootstrap` build them, so that their outputs in DIR are reused
    sens = SensitivityOptions(sizes=_parse_sizes(sizes), trials=trials, fit=fit_opts,
                              frontiers=fit_opts.selection.frontiers)
    boot = BootstrapOptions(samples=samples, fit=fit_opts)

    def from_dir(part: str, opts: Any, own: dict[str, str]) -> Any:
        # The settings report has no flag for (``own``, by the flag of the command that has one)
        # are taken from DIR's results.json where that part is there: `bootstrap --seed 3 --out D`
        # then `report --out D` was refused with "made with other options: --seed 3 (this command:
        # 0); give another --out, or the same options to reuse it", and report has no --seed to
        # give. The options report has are compared as before (a difference is refused).
        from dataclasses import fields

        from .analysis.results import ResultsDir

        have = ResultsDir(out_dir).recorded_options(part)
        if have is None:
            return opts   # no readable record of them: _analyze compares the part as it is, in its order
        recorded = {k: v for k, v in have.items() if k in own}
        was = {f.name: getattr(opts, f.name) for f in fields(opts)}
        try:
            kept = replace(opts, **recorded)
        except (UserError, ValueError, TypeError):
            return opts   # a record this version's options refuse: compared, and refused, as before
        shown = [own[k] if v is True else f"{own[k]} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
                 for k, v in recorded.items() if was[k] != v]
        if shown:
            click.echo(f"{part}: kept the {' '.join(shown)} it was made with in {out_dir} (report has no such "
                       "option; another --out makes it with the defaults)")
        return kept

    # sensitivity's --frontiers is report's own (its fits'); bootstrap's is of its own
    sens = from_dir("sensitivity", sens, REPORT_KEPT["sensitivity"])
    boot = from_dir("bootstrap", boot, REPORT_KEPT["bootstrap"])
    options = AnalysisOptions(fit=fit_opts, sensitivity=sens, bootstrap=boot, correlations=True)
    a, _ = _analyze(store, store_uri, sel, out_dir, options, serial=serial)
    page = render_report(a, out_dir, threshold=threshold)
    click.echo(f"report: {shown_path(page)}")


@cli.command(short_help="Train (or simulate), ingest, fit and report a small zoo.")
@click.option("--workdir", default=None, metavar="DIR",
              help="Everything the demo writes goes here: MLflow db and artifacts, store, refits, report "
                   "(default: meta-study-demo, with --synthetic meta-study-demo-synthetic; a directory holds "
                   "one kind of demo).")
@click.option("--synthetic", is_flag=True, help="Skip training: a simulated meta-study with a known law (1-2 min on 2 cores).")
@click.option("--serial", is_flag=True, help="One trial at a time, analysis without Ray workers.")
def demo(workdir: str | None, synthetic: bool, serial: bool) -> None:
    """The whole system on embedded defaults: train a small model zoo on the procedural suite
    (local Ray, MLflow in a sqlite file), ingest it, refit with sensitivity, write the report.

    Takes 1-3 minutes on a 2-core CPU (the README has the latest measurement); running it again reuses what the first run made.
    """
    from .demo import run_demo

    # each kind its own default: `demo --synthetic` (the core install) then `demo` (after adding
    # [train]), the README's first hour, met the refusal of a workdir of the other kind
    workdir = workdir if workdir is not None else "meta-study-demo-synthetic" if synthetic else "meta-study-demo"
    _refuse_empty_path("--workdir", workdir)
    workdir = os.path.expanduser(workdir)   # `--workdir=~/demo`, as --out: it was made as ./~/demo
    try:
        os.stat(workdir)
    except (FileNotFoundError, NotADirectoryError):
        pass                                # made by the demo, or said by it ("cannot be created")
    except OSError as e:
        # the demo's first look at it raised: a name too long ("[Errno 36]", exit 1 as for a
        # machine's failure), a loop of links (pathlib's "RuntimeError: Symlink loop" traceback)
        _fail(f"--workdir {workdir}: cannot be created ({e.strerror or e})")
    refuse_inside_store("--workdir", workdir, "the demo's files go to a directory of their own")
    run_demo(workdir, synthetic=synthetic, serial=serial, log=click.echo)


#: Signals that end a command by unwinding its stack, as Ctrl-C does (:class:`~.errors.Terminated`).
TERM_SIGNALS = ("SIGTERM", "SIGHUP")


@contextmanager
def stop_signals_unwind() -> Iterator[list[int]]:
    """While the body runs, SIGTERM and SIGHUP raise :class:`~.errors.Terminated` in the main thread;
    yields the list of the signals taken (:func:`stop_signal_of` reads it).

    Their default ends the process at once: ``kill PID`` of an ingest left its staged files, and
    an object store's lease held until it expired (60 s), every writer waiting. Now the commit
    rolls back and the lock is released, as for Ctrl-C. Only a signal at its default is taken (under
    ``nohup`` SIGHUP stays ignored; an embedding program's handler stays); the handlers are put
    back on leaving. A second signal while the stack unwinds ends the process at once (a cleanup
    that hangs), and a forked child (a multiprocessing worker) dies of it as before. Ray's
    ``ray.init`` installs a SIGTERM handler of its own (``sys.exit(15)``: exit 15, no line):
    :func:`~.ray_session.start_or_connect` keeps this one in place, while Ray starts too."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got                          # signal.signal works in the main thread only
        return
    pid = os.getpid()

    def on_signal(signum: int, frame: Any) -> None:
        if os.getpid() != pid or got:      # a forked child, or a second signal: die of it now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        got.append(signum)
        raise Terminated(signum)

    saved = {}
    for name in TERM_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            saved[sig] = signal.signal(sig, on_signal)
    try:
        yield got
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point. SIGTERM or SIGHUP ends a command as Ctrl-C does (its stack
    unwound: the store's lock released, a commit not yet published rolled back), with one line
    on stderr and exit code 128 + the signal's number (143 for SIGTERM)."""
    with stop_signals_unwind() as got:
        try:
            cli.main(args=list(argv) if argv is not None else None, prog_name="meta-study")
        except BaseException as e:
            signum = stop_signal_of(e, got)
            if signum is None:
                raise
            click.echo(f"meta-study: terminated by {signal.Signals(signum).name}", err=True)
            sys.exit(128 + signum)


def stop_signal_of(e: BaseException, got: Sequence[int]) -> int | None:
    """The stop signal a command that ended with ``e`` ends for, ``got`` the signals its handler
    took (:func:`stop_signals_unwind`); None when it ends for itself.

    The handler's :class:`~.errors.Terminated` does not always arrive: raised inside ``ray.wait``
    (a sensitivity waiting for its tasks), Ray's check of signals turns it into ``SystemExit(1)``,
    and the command exited 1 with nothing said. So once a signal was taken, whatever ends the
    command is that signal's end (exit 128 + N, its one line), except a clean exit (code 0 or
    None): a ``refit --every`` stopped between rounds takes the signal as its clean end, exit 0.
    An error raised while the stack unwinds after the signal is said as the signal too (the
    command was being stopped); ``main`` then gives no traceback for it."""
    if isinstance(e, Terminated):
        return e.signum
    if not got or (isinstance(e, SystemExit) and e.code in (0, None)):
        return None
    return got[0]


if __name__ == "__main__":  # pragma: no cover
    main()
