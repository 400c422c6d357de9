"""The source interface and registry: anything that yields raw canonical rows for the store.

A source is looked up by name (``files``, ``mlflow``, ``mlflow-sql``) from a spec string: an
existing local path is a file export; a URI with a tracking-store scheme is an MLflow server, and
``mlflow-sql:`` before an SQLAlchemy URL is an MLflow tracking database read directly. A source yields
:class:`SourceBatch` es; each batch is validated and committed on its own, so a long ingest
that is killed keeps every batch committed before the kill and the next run resumes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Protocol, Sequence

import pandas as pd
import pyarrow as pa

from ..defaults import MLFLOW_MAX_PAGE_SIZE, MLFLOW_OVERLAP_S, MLFLOW_PAGE_SIZE
from ..errors import OPTION_RANGES, UserError
from ..validation import RawPayloads
from ..store import Store
from .mapping import IngestMapping

#: progress(description, completed, total): total may be None when unknown.
Progress = Callable[[str, int, int | None], None]


def no_progress(description: str, completed: int, total: int | None) -> None:  # noqa: ARG001
    """A progress callback that shows nothing."""


#: A source's stat (not shown): rows of it were stored before this ingest, so a read whose every
#: row was rejected is a bad update (quarantined and said), not a failed source.
STORED_BEFORE = "_stored_before"


@dataclass
class SourceBatch:
    """Raw rows from one source, committed to the store as one transaction.

    Attributes:
        rows: rows with canonical column names, raw (not yet validated) values.
        raw: one payload per row for the quarantine (JSON), a function that builds the payloads
            of rows at given positions (only rejected rows need one), or None to use the row itself.
        rejected: rows the source rejected before validation: source, run_id, reason, raw.
        state: state tables to commit with the rows (e.g. which MLflow runs were seen).
        delete_runs: (source, run_id) pairs to remove.
        stats: counters for the summary line (e.g. ``runs``, ``skipped_files``).
        chunks: instead of ``rows``/``raw``, an iterator of ``(rows, raw)`` pieces of one input
            (a large file read in pieces): all of them are committed as one transaction, in
            bounded memory (:meth:`Store.commit_stream`).
        replace_runs: the batch holds *every* row of each ``(source, run_id)`` it contains (a
            file): stored rows of those runs whose key it lacks are stale and removed.
        drop_missing: with ``replace_runs``, the batch is also the whole of its sources: stored
            runs of those sources that it lacks are removed (otherwise kept, and counted).
        notes: lines to show the user with the source's summary (e.g. entries that were skipped).
        skipped: input files passed over unread (a join's files that no table names): file as
            shown -> why; the summary line names them (a bare count did not say whether data was lost).
        earlier_inputs: with ``replace_runs``, a function that names the inputs ingested before
            under the batch's source that the batch is not (another file, another path): the
            stale rows the batch removes may be theirs (another file's tasks of the same runs),
            and the summary line says so. Called only when stale rows are removed.
    """

    rows: pd.DataFrame
    raw: RawPayloads | None = None
    rejected: pd.DataFrame | None = None
    state: dict[str, pa.Table] = field(default_factory=dict)
    delete_runs: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    chunks: Iterator[tuple[pd.DataFrame, RawPayloads | None]] | None = None
    replace_runs: bool = False
    drop_missing: bool = False
    notes: list[str] = field(default_factory=list)
    earlier_inputs: Callable[[], tuple[str, ...]] | None = None
    skipped: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    """What ingest needs from a source.

    A source may also have ``notes``, lines for the user that it knows before reading (a file
    source: the directory entries it skipped): the pipeline shows them with the source's summary
    line whether or not the source then fails. Lines learnt while reading go in
    :attr:`SourceBatch.notes`. A source that honours the run options of :class:`SourceOptions`
    (experiments, filter, deleted runs, ...) says so with ``uses_run_options = True``: given to
    sources that all lack it, those options are refused, not ignored.
    """

    #: How the source is named in messages: never contains credentials.
    label: str

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        """Yield batches of raw rows; may read the store's state to fetch only what changed."""
        ...


@dataclass(frozen=True)
class SourceOptions:
    """Options of MLflow sources (file sources ignore them)."""

    experiments: tuple[str, ...] = ()   # experiment names, ids or globs; () = every active experiment
    filter_string: str | None = None    # an MLflow search filter, ANDed with ingest's own
    include_running: bool = False       # also take RUNNING runs (re-read on every ingest)
    drop_deleted: bool = False          # remove rows of runs deleted in MLflow since they were ingested
    history: str = "latest"             # "latest" value of each metric, or "max" over its history (slow)
    page_size: int = MLFLOW_PAGE_SIZE     # runs per search call (MLflow allows up to 50,000)
    overlap_s: float = MLFLOW_OVERLAP_S   # re-read finished runs this far behind the watermark (clock skew)
    full: bool = False                  # rescan every run, not only those past the watermark
    source_name: str | None = None      # the `source` column's value (default: URI or file stem)
    drop_missing: bool = False          # files: remove stored runs of a file's sources that it lacks
    from_sources_file: bool = False     # named by a --sources-file entry: lines say its 'mapping:', not --mapping

    def __post_init__(self) -> None:
        if self.history not in ("latest", "max"):
            raise UserError(f"history must be 'latest' or 'max', not {self.history!r}")
        if not 1 <= self.page_size <= MLFLOW_MAX_PAGE_SIZE:
            raise UserError(f"--page-size {self.page_size}: must be in [1, {MLFLOW_MAX_PAGE_SIZE}] (runs per MLflow request)")
        if not OPTION_RANGES["overlap_s"].contains(self.overlap_s):   # NaN too: int(NaN * 1000) was a traceback
            raise UserError(f"overlap must be a finite number {OPTION_RANGES['overlap_s'].text()} seconds, "
                            f"got {self.overlap_s}")


SourceFactory = Callable[[Sequence[str], "IngestMapping | None", SourceOptions], list[Source]]

#: name -> (claims(spec) -> bool, factory). A factory takes every spec its kind claimed and
#: returns the sources they make (a join mapping makes one source of many files).
_REGISTRY: dict[str, tuple[Callable[[str], bool], SourceFactory]] = {}


def register_source(name: str, claims: Callable[[str], bool]) -> Callable[[SourceFactory], SourceFactory]:
    """Register a source kind: ``claims(spec)`` says whether a spec string belongs to it."""
    def deco(factory: SourceFactory) -> SourceFactory:
        _REGISTRY[name] = (claims, factory)
        return factory
    return deco


def source_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


#: Why the MLflow sources could not be imported (None: they were): said instead of "unsupported
#: source scheme" for a URI they would have claimed.
_MLFLOW_IMPORT_ERROR: str | None = None


def _load_builtin() -> None:
    # Importing registers them; kept lazy so `import meta_study.ingest` stays cheap.
    global _MLFLOW_IMPORT_ERROR
    from . import files  # noqa: F401
    try:
        from . import mlflow_source, mlflow_sql  # noqa: F401
        _MLFLOW_IMPORT_ERROR = None
    except ImportError as e:  # mlflow is a hard dependency; guard for slim installs
        _MLFLOW_IMPORT_ERROR = f"{type(e).__name__}: {e}"


def kind_of(spec: str) -> str:
    """The registered source kind that claims ``spec``; :class:`UserError` if none does."""
    _load_builtin()
    for name, (claims, _) in _REGISTRY.items():
        if claims(spec):
            why = _mlflow_store_misnamed(spec)
            if why is not None:
                raise UserError(why)
            return name
    if "://" in spec:
        scheme = spec.split("://")[0]
        # Heroku's and others' spelling, which SQLAlchemy and MLflow refuse too
        hint = " (PostgreSQL is postgresql://)" if scheme.lower().partition("+")[0] == "postgres" else ""
        if _MLFLOW_IMPORT_ERROR is not None:
            raise UserError(f"{scheme}://...: the MLflow sources cannot be loaded ({_MLFLOW_IMPORT_ERROR[:200]})")
        raise UserError(f"{scheme}://...: unsupported source scheme{hint}")
    if any(c in spec for c in "*?["):
        # the shell passes a pattern that matched nothing on as it is (bash without nullglob); one
        # quoted, or in a sources file, is never expanded: ingest takes files and directories
        import glob

        if glob.glob(spec):
            raise UserError(f"{spec}: a pattern, which ingest does not expand; name the files or their directory")
        raise UserError(f"{spec}: matches no file")
    if os.path.islink(spec):   # `ls` shows it; "no such file" did not say why
        try:
            to = os.readlink(spec)
        except OSError:
            to = "?"
        raise UserError(f"{spec}: a symbolic link to {to}, which does not exist (or is a loop of links)")
    raise UserError(f"{spec}: no such file or directory")


#: The first bytes of a SQLite database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_sqlite_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:   # unreadable, a FIFO's open would block: not checked here (is_file first)
        return False


def _is_mlflow_file_store(path: str) -> bool:
    """A directory laid out as MLflow's file store (``mlruns/``): experiment folders named by
    their ids with a ``meta.yaml``, its ``.trash`` (or a run's folder with a ``meta.yaml`` in an
    experiment's), and no data file of ingest's directly inside."""
    from .files import suffix_of

    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    if any(e.is_file() and suffix_of(e.name) is not None for e in entries):
        return False
    exps = [e.path for e in entries
            if e.name.isdigit() and e.is_dir() and os.path.isfile(os.path.join(e.path, "meta.yaml"))]
    if not exps:
        return False
    if any(e.name == ".trash" and e.is_dir() for e in entries):
        return True
    for exp in exps[:20]:
        try:
            if any(r.is_dir() and os.path.isfile(os.path.join(r.path, "meta.yaml")) for r in os.scandir(exp)):
                return True
        except OSError:
            continue
    return False


def _mlflow_store_misnamed(spec: str) -> str | None:
    """Why ``spec`` names an MLflow tracking store as another kind of source, with the spec that
    reads it, or None. Each was a line that did not say what the input was: a tracking database
    named as a path was "unknown file type", an ``mlruns`` folder "holds no CSV, TSV, Parquet or
    JSONL files", ``file:///x/mlflow.db`` "unreachable (Not a directory: .../.trash)", and
    ``sqlite:///mlruns`` "no such database file" (it exists: a folder)."""
    from urllib.parse import unquote, urlsplit

    if "://" not in spec:
        if os.path.isfile(spec):
            from .files import suffix_of

            if suffix_of(spec) is None and _is_sqlite_file(spec):
                return (f"{spec}: a SQLite database, not a data file: an MLflow tracking database is read as "
                        f"sqlite:///{spec} (MLflow's client) or mlflow-sql:sqlite:///{spec} (read directly)")
        elif os.path.isdir(spec) and _is_mlflow_file_store(spec):
            return (f"{spec}: an MLflow file store (its experiments' folders), not a directory of data files: "
                    f"read it as file://{os.path.abspath(spec)} (MLflow 3 reads a file store only with "
                    "MLFLOW_ALLOW_FILE_STORE=true; 'mlflow migrate-filestore' makes it a database)")
        return None
    low = spec.lower()
    if low.startswith("file:"):
        u = urlsplit(spec)
        path = unquote(u.path)
        if u.netloc in ("", "localhost") and path and os.path.isfile(path) and _is_sqlite_file(path):
            return (f"{spec}: {path} is a SQLite database, not an MLflow file store (a folder): read it as "
                    f"sqlite:///{path}")
        return None
    db = _RELATIVE_SQLITE.fullmatch(spec)
    if db is not None and db[3] and db[3] != ":memory:" and os.path.isdir(db[3]):
        where = os.path.abspath(db[3])
        store = (f"an MLflow file store: read it as file://{where}" if _is_mlflow_file_store(db[3]) else
                 "name the database file inside it")
        return f"{spec}: {db[3]} is a directory, not a SQLite database; {store}"
    return None


def open_sources(specs: Sequence[str], mapping: IngestMapping | None,
                 options: SourceOptions = SourceOptions()) -> list[Source]:
    """Build sources for spec strings, in order of kinds first seen. Each file is a source of its
    own, except that a join mapping makes one source of all its files; each MLflow URI is one."""
    by_kind: dict[str, list[str]] = {}
    for spec in specs:
        by_kind.setdefault(kind_of(spec), []).append(spec)
    out: list[Source] = []
    for kind, kind_specs in by_kind.items():
        out.extend(_REGISTRY[kind][1](kind_specs, mapping, options))
    _refuse_shared_states(out)    # a mapping's `source:` names every MLflow URI given alike
    return out


@dataclass(frozen=True)
class SourceSpec:
    """One entry of a sources file: a source, its mapping and its own options."""

    spec: str
    mapping: str | None = None
    name: str | None = None
    experiments: tuple[str, ...] = ()
    filter_string: str | None = None


#: A sqlite URL, as MLflow's client or ``mlflow-sql:`` reads it: (prefix, scheme up to its three
#: slashes, the database path, its query). ``sqlite:///rel.db`` names a path relative to the reader's
#: working directory, ``sqlite:////abs.db`` an absolute one.
_RELATIVE_SQLITE = re.compile(r"(mlflow-sql:)?(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?", re.IGNORECASE)


def load_sources_file(path: str) -> list[SourceSpec]:
    """Parse a sources file (YAML; see docs/ingest.md). Relative paths are relative to the file,
    file paths and sqlite databases (``sqlite:///rel.db``, ``mlflow-sql:sqlite:///rel.db``) alike.

    ::

        sources:
          - uri: http://mlflow.lab:5000
            experiments: ["team-*"]
            filter: "params.dataset = 'jft'"
            mapping: mappings/lab.yaml
          - uri: exports/bob.csv
            mapping: mappings/bob.yaml
    """
    from .mapping import read_yaml

    doc = read_yaml(path, "sources file")
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list) or not doc["sources"]:
        raise UserError(f"{path}: expected a map with a non-empty list 'sources'")
    top = sorted(map(str, set(doc) - {"sources", "description"}))
    if top:   # a top-level `mapping:` (meant for every entry) was ignored without a word
        raise UserError(f"{path}: unknown key(s) {', '.join(top)} (a sources file holds 'sources' and "
                        "'description'; give each entry its own 'mapping:')")
    base = os.path.dirname(os.path.abspath(path))

    def rel(p: str) -> str:
        db = _RELATIVE_SQLITE.fullmatch(p)
        if db is not None:
            # a relative sqlite file is relative to this file too (it was to the working directory,
            # beside file paths of the same entries read from this file's directory)
            prefix, scheme, name, query = db.groups()
            # normalized: "../mlflow.db" was "/work/cfg/../mlflow.db", the name of the rows of a
            # database the command line names "/work/mlflow.db": its runs were stored twice
            if name and name != ":memory:" and not os.path.isabs(name):
                return f"{prefix or ''}{scheme}{os.path.normpath(os.path.join(base, name))}{query or ''}"
            return p
        if p.startswith("~"):   # a home path, as a shell would read it ("~/runs.csv" was base/~/runs.csv)
            p = os.path.expanduser(p)
        return p if "://" in p or os.path.isabs(p) else os.path.normpath(os.path.join(base, p))

    out = []
    for i, d in enumerate(doc["sources"]):
        if isinstance(d, str):   # "- runs.csv": "needs a 'uri'" did not say an entry is a map
            raise UserError(f"{path}: sources[{i}] is the text {d!r}; each entry is a map with a 'uri' "
                            f"(- uri: {d})")
        if not isinstance(d, dict) or not isinstance(d.get("uri"), str) or not d["uri"]:
            raise UserError(f"{path}: sources[{i}] needs a 'uri'")
        unknown = set(d) - {"uri", "mapping", "name", "experiments", "filter"}
        if unknown:
            raise UserError(f"{path}: sources[{i}]: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        for key, what in (("mapping", "the path of a mapping file"), ("name", "a source name"),
                          ("filter", "an MLflow search filter")):
            if d.get(key) is not None and not (isinstance(d[key], str) and d[key]):
                raise UserError(f"{path}: sources[{i}].{key}: must be {what}, not {_short(d[key])}")
        if isinstance(d.get("name"), str) and not d["name"].strip():
            # as `--source "  "`: every row was quarantined as "source: missing required field"
            raise UserError(f"{path}: sources[{i}].name: must be a source name, not {_short(d['name'])}")
        if isinstance(d.get("name"), str) and not d["name"].strip().isprintable():
            # as `--source`: "lab\tx" (a tab, a newline) was stored as a source name in every row
            raise UserError(f"{path}: sources[{i}].name: give a name of printable characters, not {_short(d['name'])}")
        exps = d.get("experiments")
        if exps is None:
            exps = []
        elif isinstance(exps, (str, int)) and not isinstance(exps, bool):
            exps = [exps]     # one experiment; 0 is MLflow's Default experiment (it selected all)
        if not isinstance(exps, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in exps):
            raise UserError(f"{path}: sources[{i}].experiments: must be a list of names, ids or globs")
        out.append(SourceSpec(spec=rel(d["uri"]), mapping=rel(d["mapping"]) if d.get("mapping") else None,
                              name=d["name"].strip() if d.get("name") else None, experiments=tuple(str(x) for x in exps),
                              filter_string=d.get("filter")))
    return out


def _short(v: Any) -> str:
    """A config value for a one-line message: its repr, at most 60 characters, escaped."""
    from ..validation import printable

    r = repr(v)
    return printable(r if len(r) <= 60 else r[:57] + "...")


def open_source_specs(entries: Sequence[SourceSpec], options: SourceOptions = SourceOptions()) -> list[Source]:
    """Sources for the entries of a sources file, each with its own mapping and selection. Files
    of two entries that would be one source, or are copies, are refused as in one entry
    (:func:`refuse_shared_files`), and so are two MLflow databases under one name."""
    from .mapping import load_mapping

    out: list[Source] = []
    for e in entries:
        out.extend(open_sources([e.spec], load_mapping(e.mapping) if e.mapping else None, entry_options(e, options)))
    refuse_shared_files(out)    # this module's: the files' check, then the MLflow states'
    return out


def _refuse_shared_states(sources: Sequence[Source]) -> None:
    """Refuse two MLflow databases under one source name (two entries with the same ``name:``, or
    one ``--mapping`` with ``source:`` for two URIs).
    An MLflow source keeps one incremental state per name (``mlflow:<name>``), whose watermarks
    are per experiment id: server A's experiment 1 moved the watermark of server B's experiment 1,
    and B's runs that ended before A's latest run were never read (exit 0, "0 new", on every
    ingest); with ``--drop-deleted`` each server's runs were the other's "deleted" ones. The same
    database under one name (two entries of other experiments) is one state, as it should be."""
    from ..mlflow_client import source_uri

    seen: dict[str, tuple[str, str]] = {}
    for src in sources:
        state = getattr(src, "state_name", None)
        where = getattr(src, "uri", None) or getattr(src, "spec", None)
        if not (isinstance(state, str) and isinstance(where, str) and getattr(src, "uses_run_options", False)):
            continue
        if where.lower().startswith("mlflow-sql:"):
            from .mlflow_sql import db_source

            # one spelling per database: `sqlite:///x.db` and `sqlite+pysqlite:///x.db`, or
            # `postgresql://db/m` and `postgresql+psycopg2://db:5432/m`, were "two databases"
            db = db_source(where[len("mlflow-sql:"):])
        else:
            db = source_uri(where)    # one spelling per server (http://h:5000/ is http://h:5000)
        if db.lower().startswith("sqlite:///") and not db[len("sqlite:///"):].startswith("/"):
            db = "sqlite:///" + os.path.abspath(db[len("sqlite:///"):])
        first = seen.setdefault(state, (db, src.label))
        if first[0] != db:
            name = getattr(src, "source", state)
            raise UserError(f"{first[1]} and {src.label}: two MLflow databases under one source name {name!r}; "
                            "they would share one incremental state (one server's experiment ids taken for the "
                            "other's: runs never read, or dropped as deleted). Give each its own name ('name:' in a "
                            "sources file; not one mapping's 'source:' for both)")


def entry_options(entry: SourceSpec, options: SourceOptions) -> SourceOptions:
    """The options of one sources-file entry: its experiments and name replace the command's;
    its filter is ANDed with the command's ``--filter`` (it replaced it, so a ``--filter`` given
    to narrow every source was dropped without a word for each entry with a filter of its own)."""
    filters = [f for f in (options.filter_string, entry.filter_string) if f]
    return replace(options, experiments=entry.experiments or options.experiments,
                   filter_string=" and ".join(dict.fromkeys(filters)) or None,
                   source_name=entry.name or options.source_name, from_sources_file=True)


def is_local_path(spec: str) -> bool:
    return "://" not in spec and os.path.exists(spec)


def rejected_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows rejected by a source: each record has source, run_id, reason, raw."""
    return pd.DataFrame(list(records), columns=["source", "run_id", "reason", "raw"])


def refuse_shared_files(sources: Sequence[Source]) -> None:
    """Refuse files of different sources that would be one source or are copies
    (:func:`~meta_study.ingest.files.refuse_shared_files`): for callers that join sources opened
    apart (the command line's and a sources file's)."""
    from .files import refuse_shared_files as refuse

    refuse(sources)
    _refuse_shared_states(sources)
