"""What a store records and returns: the manifest format (the commit log; the newest wins), the
quarantine's table, and the results of a commit and of a check (with its damage records)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa

from ..errors import UserError
from ..schema import SCHEMA_VERSION

FORMAT = "meta-study-store"
#: 1: partitions in hive directories ``us_task=<name>/ds_task=<name>/``, the partition columns
#:    only in those names (plain readers inferred their type: task ``007`` read back as 7).
#: 2: partitions in ``<name>/<name>/``, the partition columns stored in each file as strings;
#:    manifests carry a checksum and a copy. A writer upgrades a format-1 store at its first commit.
FORMAT_VERSION = 2
#: Manifests older than this many versions are pruned (they are history only: their files are gone).
KEEP_MANIFESTS = 20
#: Commit-log entries carried in each manifest.
KEEP_LOG = 500

QUARANTINE_SCHEMA = pa.schema([
    pa.field("source", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("raw", pa.string()),          # the rejected payload as JSON; never parsed or executed
    pa.field("payload_hash", pa.string()),  # sha256 of (source, reason, raw): quarantine is idempotent
    pa.field("quarantined_at", pa.timestamp("us", tz="UTC")),
])



@dataclass(frozen=True)
class CommitResult:
    """What one commit did. ``version`` is None when nothing changed and nothing was written."""

    version: int | None
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    partitions_written: int = 0
    collapsed: int = 0      # rows that repeated another exactly (key and values), stored once (commit_stream)
    #: rows of ``delete_runs`` written again in the same commit: stored, so not in ``deleted``
    #: (which counts the rows that left the store), but in ``updated`` or ``unchanged`` by content
    rewritten: int = 0
    #: (rows given whose ``ended_at`` is before their ``started_at``, the first as text), or None:
    #: kept as given, as :func:`~meta_study.validation.validate` keeps them, and said here for rows
    #: that did not come through it (:func:`~meta_study.validation.ends_before_start`;
    #: :func:`~meta_study.validation.ends_before_start_note` words it)
    ends_before_start: tuple[int, str] | None = None

    @property
    def wrote(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class StoreSummary:
    """``meta-study store info``: what is in a store."""

    uri: str
    version: int
    rows: int
    quarantined: int
    groups: pd.DataFrame          # us_task, ds_task, eval_protocol, shots, rows, runs (distinct run ids), model_names (distinct)
    sources: pd.DataFrame         # source, rows, runs, last_ingested_at
    last_ingest: str | None
    last_commit: Mapping[str, Any] | None
    pending_finalize: bool


@dataclass(frozen=True)
class Damage:
    """One damaged file found by :meth:`Store.check`."""

    path: str     # relative to the store root
    kind: str     # data | quarantine | state | manifest | untracked (a file plain readers read that no
                  # manifest lists)
    problem: str
    rows: int     # rows the manifest records for the file (0 when untracked)


@dataclass(frozen=True)
class CheckResult:
    """What ``meta-study store check`` found (and, with ``repair``, did)."""

    uri: str
    version: int
    files: int                    # manifest files checked
    damage: tuple[Damage, ...]
    repaired_version: int | None = None   # the version the repair committed, if it ran
    rows_dropped: int = 0
    #: the latest commit passed its commit point but its files are not all in place, and this
    #: check could not finish it (read-only store, or another writer holds the lock): plain
    #: Parquet readers see another version than meta-study until a writer finishes it
    unfinished: bool = False
    #: the repair went back to this version because the newer manifests were damaged
    rolled_back_to: int | None = None
    #: the repair rewrote the damaged latest manifest from its intact copy
    manifest_restored: bool = False
    #: where the repair put each file it set aside (``_damaged/<version>/<path>``); a file that was
    #: missing moves nowhere ("1 file(s) moved to _damaged/..." named a directory that did not exist)
    moved: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.damage and not self.unfinished


class _CorruptManifest(ValueError):
    """A manifest that does not parse, lacks fields, or fails its checksum (the message says which).

    ``newer``: the format version it claims when that is newer than this meta-study's: a newer
    meta-study may checksum its manifests otherwise, so a manifest *and* its copy that both claim
    it are that meta-study's (one flipped bit damages only one of the two)."""

    def __init__(self, message: str, newer: int | None = None) -> None:
        super().__init__(message)
        self.newer = newer


def _dumps(d: Mapping[str, Any]) -> bytes:
    # default=str: a commit's ``info`` (its log entry) may hold values JSON lacks (a numpy int, a
    # path, a timestamp); they were a TypeError traceback at the commit point, the commit rolled
    # back. Stored as their text, which reads back and checksums the same (and is what
    # Store._refuse_a_pruned_name compares a log entry as)
    return json.dumps(d, indent=1, sort_keys=True, default=str).encode()


def _json_key(k: Any) -> str:
    # JSON's own text for the keys it takes (5 -> "5", True -> "true"); the text of any other
    # (a numpy int -> "5"), which json.dumps refused with a TypeError even with default=str
    return k if isinstance(k, str) else json.dumps(k) if k is None or isinstance(k, (int, float)) else str(k)


def _plain_keys(o: Any) -> Any:
    if isinstance(o, Mapping):
        return {_json_key(k): _plain_keys(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain_keys(v) for v in o]
    return o


def _as_json(log: list[Any]) -> list[Any]:
    """Log entries as they read back from a manifest: string keys at every level, values JSON
    lacks as their text (:func:`_dumps`). A commit's ``info`` with int keys (``{"by_shots": {5: 1,
    10: 2}}``) was checksummed sorted as ints (5, 10) but read back sorted as strings ("10", "5"):
    the checksum never verified, and the commit left a store with no intact manifest (every
    command failed). ~1 ms per 500 entries (KEEP_LOG)."""
    try:
        return json.loads(json.dumps(log, default=str))
    except TypeError:   # a key json.dumps refuses even with default=str (a numpy int)
        return json.loads(json.dumps(_plain_keys(log), default=str))


@dataclass
class _Manifest:
    version: int = 0
    data: list[dict[str, Any]] = field(default_factory=list)        # path, staged, us_task, ds_task, rows
    quarantine: list[dict[str, Any]] = field(default_factory=list)  # path, staged, rows
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> path, staged, rows
    pending_delete: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = ""
    format_version: int = FORMAT_VERSION   # the layout of its files (see FORMAT_VERSION)
    txn: str = ""   # the transaction that published it: a writer recognizes its own commit

    def __post_init__(self) -> None:
        # in memory as on disk: the checksum of to_json, and the comparison of a log entry with
        # the one a newer manifest read back holds (Store._refuse_a_pruned_name), see the same keys
        self.log = _as_json(self.log)

    def to_json(self) -> bytes:
        d = {
            "format": FORMAT, "format_version": self.format_version, "schema_version": SCHEMA_VERSION,
            "version": self.version, "created_at": self.created_at, "data": self.data,
            "quarantine": self.quarantine, "state": self.state, "pending_delete": self.pending_delete,
            "log": self.log, "txn": self.txn,
        }
        # sha256 of the manifest without this field: a truncated or altered manifest that still
        # parses (a flipped digit in a row count or a checksum) is caught on load
        d["checksum"] = hashlib.sha256(_dumps(d)).hexdigest()
        return _dumps(d)

    @staticmethod
    def newer_error(where: str, format_version: int) -> UserError:
        """The one line for a manifest of a newer meta-study."""
        return UserError(f"{where}: store format {format_version} is newer than this meta-study "
                         f"({FORMAT_VERSION}); upgrade meta-study")

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "_Manifest":
        """Parse a manifest. A :class:`_CorruptManifest` if it is damaged, a :class:`UserError` if
        it is not a meta-study manifest or is newer than this meta-study."""
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:   # "[[[[..." nested past the parser's depth
            # (damage as any other: it escaped as a traceback from every command, 'store check' too)
            raise _CorruptManifest(f"does not parse ({str(e)[:80]}, {len(raw)} bytes)") from None
        # The checksum first: a flipped bit in "format" or "format_version" is damage (read from
        # the copy), not "not a manifest" or "upgrade meta-study" (which never tried the copy).
        # Only a manifest that verifies, or one of format 1 (no checksum), may be refused as
        # foreign or newer.
        checked = "checksum" in d
        if checked:
            want = d.pop("checksum")
            if hashlib.sha256(_dumps(d)).hexdigest() != want:
                fv = d.get("format_version")
                claims = fv if isinstance(fv, int) and not isinstance(fv, bool) and fv > FORMAT_VERSION \
                    and d.get("format") == FORMAT else None
                raise _CorruptManifest("its contents differ from what was written (checksum)", claims)
        fv = d.get("format_version", 1)
        if not isinstance(fv, int) or isinstance(fv, bool):
            if not checked:
                raise _CorruptManifest(f"garbles field 'format_version' ({str(fv)[:40]!r})")
            raise UserError(f"{where}: not a meta-study manifest (format_version {str(fv)[:40]!r})")
        if d.get("format") != FORMAT:
            # Without a checksum nothing shows that it is another tool's: damage (read from the
            # copy, rolled back by '--repair'). A latest manifest overwritten with "{}" (or any JSON
            # object but ours) was "not a meta-study manifest" from every command, 'store check
            # --repair' too, with its copy intact; only a verified one is refused as foreign
            if not checked:
                fmt = d.get("format")
                raise _CorruptManifest("lacks field 'format'" if fmt is None else
                                       f"garbles field 'format' ({str(fmt)[:40]!r})")
            raise UserError(f"{where}: not a meta-study manifest")
        if fv > FORMAT_VERSION:
            raise cls.newer_error(where, fv)
        sv = d.get("schema_version", 1)
        if checked and isinstance(sv, int) and not isinstance(sv, bool) and sv > SCHEMA_VERSION:
            # rows of a newer schema (columns this install does not know): a commit here rewrote
            # their partitions with this install's columns, silently dropping the others
            raise UserError(f"{where}: store schema {sv} is newer than this meta-study ({SCHEMA_VERSION}); "
                            "upgrade meta-study")
        if fv >= 2 and not checked:   # every format-2 manifest carries one: its key was garbled
            raise _CorruptManifest("lacks its checksum")
        for k, kind in (("data", list), ("quarantine", list), ("state", dict), ("pending_delete", list), ("log", list)):
            if k in d and not isinstance(d[k], kind):   # list("abc") and list({...}) took it as entries
                raise _CorruptManifest(f"garbles field '{k}'")
        try:
            m = cls(version=int(d["version"]), data=list(d["data"]), quarantine=list(d["quarantine"]),
                    state=dict(d["state"]), pending_delete=list(d["pending_delete"]), log=list(d["log"]),
                    created_at=d.get("created_at", ""), format_version=int(d.get("format_version", 1)),
                    txn=str(d.get("txn", "")))
        except (KeyError, TypeError, ValueError, RecursionError) as e:   # a log entry nested too deep to copy
            raise _CorruptManifest(f"lacks or garbles field {e}"[:200]) from None
        m._check_entries()
        return m

    def _check_entries(self) -> None:
        """A :class:`_CorruptManifest` unless every file entry has the fields every reader uses.
        A format-1 manifest has no checksum: one flipped bit in a key (``"path"`` as ``"pa4h"``) or a
        value still parsed, and every command, 'store check' too, ended in a KeyError or
        AttributeError traceback instead of naming the damage. Microseconds per entry."""
        need = (("data", self.data, ("path", "us_task", "ds_task")), ("quarantine", self.quarantine, ("path",)),
                ("state", list(self.state.values()), ("path",)))
        for name, entries, keys in need:
            for i, e in enumerate(entries):
                if not isinstance(e, dict):
                    raise _CorruptManifest(f"garbles entry {i} of field '{name}' (not an object)")
                bad = [k for k in keys if not isinstance(e.get(k), str) or (k == "path" and not e[k])]
                if not isinstance(e.get("staged"), (str, type(None))):
                    bad.append("staged")
                if not isinstance(e.get("rows", 0), int) or isinstance(e.get("rows"), bool):
                    bad.append("rows")
                bad += [k for k in ("path", "staged") if isinstance(e.get(k), str) and e[k] and not _inside(e[k])]
                if bad:
                    raise _CorruptManifest(f"garbles entry {i} of field '{name}' (its '{bad[0]}')")
        if not all(isinstance(r, str) and _inside(r) for r in self.pending_delete):
            raise _CorruptManifest("garbles field 'pending_delete'")
        if not all(isinstance(e, dict) for e in self.log):
            raise _CorruptManifest("garbles field 'log'")
        # a repair's log entry names the files it sets aside, and the next writer moves them
        aside = self.log[-1].get("set_aside", []) if self.log else []
        if not isinstance(aside, list) or not all(isinstance(r, str) and _inside(r) for r in aside):
            raise _CorruptManifest("garbles field 'log' (its last entry's 'set_aside')")

    def live_files(self) -> list[dict[str, Any]]:
        return self.data + self.quarantine + list(self.state.values())


def _inside(rel: str) -> bool:
    """True for a path a manifest may name: relative, inside the store (no ``..``, ``.`` or empty
    component, no NUL). Every writer writes only such paths; any other would make the next
    command that opens the store move or delete files outside it (a manifest's checksum is no
    secret: whoever can write a shared store's manifest can make one verify): ``pending_delete``
    of ``../x`` deleted ``x`` beside the store at the next 'store info'."""
    parts = rel.split("/")
    return bool(rel) and "\x00" not in rel and not any(c in ("", ".", "..") for c in parts)


def _payload_json(v: Any) -> str:
    """A rejected payload given as an object (a dict of the raw row) as the JSON ``raw`` holds."""
    try:
        return json.dumps(v, sort_keys=True, default=str)
    except (TypeError, ValueError):   # keys of mixed types cannot be sorted; a circular object
        return str(v)


def _quarantine_table(q: pd.DataFrame | pa.Table, now: _dt.datetime) -> pa.Table:
    df = q.to_pandas() if isinstance(q, pa.Table) else q.copy()
    for c in ("source", "run_id", "reason", "raw"):
        if c not in df.columns:
            df[c] = None
    df = df[["source", "run_id", "reason", "raw"]].astype(object).where(lambda d: d.notna(), None)
    # every column is text: a run id given as a number (7, numpy's int64) or a payload as a dict
    # was an ArrowTypeError traceback ("Expected bytes, got a 'int' object") and nothing committed.
    # Text as the payload hash below already took it (str), the payload as JSON; strings unchanged
    for c in ("source", "run_id", "reason"):
        df[c] = pd.Series([v if v is None or isinstance(v, str) else str(v) for v in df[c]], index=df.index,
                          dtype=object)   # object: pandas 3 made a list's None NaN (hashed as "nan")
    df["raw"] = pd.Series([v if v is None or isinstance(v, str) else _payload_json(v) for v in df["raw"]],
                          index=df.index, dtype=object)
    # (the separator format is persisted in every store's quarantine: kept as it is)
    df["payload_hash"] = [hashlib.sha256(f"{s}\x1f{r}\x1f{w}".encode()).hexdigest()
                          for s, r, w in zip(df["source"], df["reason"], df["raw"])]
    df = df.drop_duplicates("payload_hash")
    cols = {c: pa.array(df[c].tolist(), pa.string()) for c in ("source", "run_id", "reason", "raw", "payload_hash")}
    cols["quarantined_at"] = pa.array([now] * len(df), QUARANTINE_SCHEMA.field("quarantined_at").type)
    return pa.table(cols, schema=QUARANTINE_SCHEMA)
