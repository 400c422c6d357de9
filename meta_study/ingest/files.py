"""File exports: CSV / TSV / Parquet / JSONL files, or directories of them.

Without a mapping, columns must already carry canonical names (unknown ones go to ``extra``).
With a mapping, columns are renamed, units converted, constants set, and wide per-task files
can be joined on key columns (``join:``). Values are read as text (CSV) so that a percent in a
fraction column reaches validation as what it is and is quarantined with a reason.
"""

from __future__ import annotations

import fnmatch
import json
import os
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..schema import COLUMN_BY_NAME, row_json
from ..store import Store
from .mapping import IngestMapping, JoinSpec, TableSpec, finish_rows
from .sources import Progress, SourceBatch, SourceOptions, is_local_path, register_source, rejected_frame

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".csv.gz": "csv", ".tsv.gz": "tsv", ".jsonl.gz": "jsonl"}
#: What a row must have after mapping; missing columns are a mapping problem, reported once per file.
REQUIRED_AFTER_MAPPING = ("run_id", "us_task", "us_accuracy", "ds_task", "ds_accuracy", "eval_protocol")


def _format_of(path: str) -> str | None:
    low = path.lower()
    for suf in sorted(SUFFIXES, key=len, reverse=True):
        if low.endswith(suf):
            return SUFFIXES[suf]
    return None


def expand_paths(specs: Sequence[str]) -> list[str]:
    """Files named directly, plus supported files directly inside named directories (sorted)."""
    out: list[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            names = sorted(n for n in os.listdir(spec) if _format_of(n) and not n.startswith((".", "_")))
            if not names:
                raise UserError(f"{spec}: directory holds no CSV, TSV, Parquet or JSONL files")
            out.extend(os.path.join(spec, n) for n in names)
        elif os.path.isfile(spec):
            if _format_of(spec) is None:
                raise UserError(f"{spec}: unknown file type (expected .csv, .tsv, .parquet or .jsonl)")
            out.append(spec)
        else:
            raise UserError(f"{spec}: no such file or directory")
    return out


#: A CSV/TSV with more rows than this is read, validated and staged in pieces of this many rows
#: (~50 MB of text, ~0.5 GB at peak), and committed once: memory stays bounded for any size.
CHUNK_ROWS = 500_000


def _csv_kwargs(fmt: str) -> dict:
    # dtype=str keeps "87.5" and "1,014.45" as written; "" is the only missing marker so a literal
    # "NaN" reaches validation and is quarantined as NaN.
    return dict(sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False, na_values=[""],
                skipinitialspace=True)


def read_export_chunks(path: str, rows: int | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(first row's position, frame)`` pieces of one export, in order: CSV/TSV in pieces of
    ``rows`` (default :data:`CHUNK_ROWS`), other formats whole. Errors as :func:`read_export`."""
    rows = rows or CHUNK_ROWS
    fmt = _format_of(path)
    if fmt not in ("csv", "tsv"):
        yield 0, read_export(path)
        return
    _check_header_or_fail(path, fmt)
    start = 0
    reader = _reading(path, fmt, lambda: pd.read_csv(path, chunksize=rows, **_csv_kwargs(fmt)))
    while True:
        frame = _reading(path, fmt, lambda: next(reader, None))
        if frame is None:
            return
        yield start, frame
        start += len(frame)


def _check_header_or_fail(path: str, fmt: str) -> None:
    _reading(path, fmt, lambda: _check_header(path, "\t" if fmt == "tsv" else ","))


def _reading(path: str, fmt: str | None, fn: Callable[[], Any]) -> Any:
    """``fn()``, with a read or parse error turned into one :class:`UserError` naming the file."""
    try:
        return fn()
    except UserError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        # EOFError: a truncated .gz (it must not reach click, which turns it into "Aborted")
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, EOFError):
            msg = f"truncated compressed file: {msg}"
        raise UserError(f"{path}: cannot read {fmt} ({msg})") from None


def read_export(path: str) -> pd.DataFrame:
    """Read one export file into a DataFrame of raw values (strings for CSV/TSV).

    Raises:
        UserError: the file cannot be read or parsed.
    """
    fmt = _format_of(path)
    return _reading(path, fmt, lambda: _read_whole(path, fmt))


def _read_whole(path: str, fmt: str | None) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        _check_header(path, "\t" if fmt == "tsv" else ",")
        return pd.read_csv(path, **_csv_kwargs(fmt))
    if fmt == "parquet":
        return pq.read_table(path).to_pandas()
    if fmt == "jsonl":
        import gzip
        opener = gzip.open if path.lower().endswith(".gz") else open
        records = []
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise UserError(f"{path}:{lineno}: invalid JSON ({e})") from None
                if not isinstance(rec, dict):
                    raise UserError(f"{path}:{lineno}: each line must be a JSON object")
                records.append(rec)
        return pd.DataFrame.from_records(records)
    raise UserError(f"{path}: unknown file type")


#: A header line longer than this, or with more columns, is refused before parsing: pandas needs
#: minutes and gigabytes for a 16 MB header (its duplicate-name handling), and a file with no
#: newline at all would be read whole as one header.
MAX_HEADER_BYTES = 1 << 20
MAX_COLUMNS = 20_000


def _check_header(path: str, sep: str) -> None:
    """Refuse, in one line, a CSV/TSV whose header line is absurdly long or wide (reads <= 1 MB)."""
    import gzip

    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.readline(MAX_HEADER_BYTES + 1)
    if len(head) > MAX_HEADER_BYTES:
        raise UserError(f"{path}: the first line is longer than {MAX_HEADER_BYTES >> 20} MB (no header, "
                        "or not a CSV/TSV file)")
    n = head.count(sep.encode()) + 1
    if n > MAX_COLUMNS:
        raise UserError(f"{path}: the header has {n:,} columns (at most {MAX_COLUMNS:,})")


def _payload(path: str, rec: dict, **more: object) -> str:
    """A raw row for the quarantine: the file, the row's line (CSV: header is line 1) and its values."""
    row = rec.get("_row")
    line = {"_line": int(row) + 2} if row is not None and _format_of(path) in ("csv", "tsv") else \
        ({"_row": int(row)} if row is not None else {})
    return row_json({"_file": os.path.basename(path), **line, **more,
                     **{k: v for k, v in rec.items() if not str(k).startswith("_")}})


def _raw_payloads(frame: pd.DataFrame, path: str, offset: int = 0) -> Callable[[np.ndarray], list[str]]:
    """The quarantine payloads of the rows at given positions, built only for rejected rows;
    ``offset``: the frame's first row in the file (a piece of a large file)."""
    def payloads(idx: np.ndarray) -> list[str]:
        recs = frame.iloc[idx].to_dict("records")
        return [_payload(path, {"_row": offset + int(i), **rec}) for i, rec in zip(idx, recs)]
    return payloads


def _check_required(rows: pd.DataFrame, where: str, mapping: IngestMapping | None) -> None:
    missing = [c for c in REQUIRED_AFTER_MAPPING if c not in rows.columns]
    if missing:
        hint = " (add a mapping with --mapping; see docs/ingest.md)" if mapping is None else ""
        raise UserError(f"{where}: no column for {', '.join(missing)} after mapping{hint}")


def map_long(frame: pd.DataFrame, mapping: IngestMapping | None, *, where: str, source: str) -> pd.DataFrame:
    """Rows of a long export (one row per evaluation) -> raw canonical rows."""
    mapping = mapping or IngestMapping(name="none")
    if mapping.join is not None:
        raise UserError(f"{where}: mapping {mapping.name} is a join mapping; it needs all its files at once")
    missing_src = [c for c in mapping.rename if c not in frame.columns]
    if missing_src:
        raise UserError(f"{where}: mapping {mapping.name} renames column(s) {', '.join(missing_src)} "
                        f"not in the file (columns: {', '.join(map(str, frame.columns))})")
    targets = list(mapping.rename.values())
    clash = sorted({t for t in targets if targets.count(t) > 1} |
                   {t for t in targets if t in frame.columns and t not in mapping.rename})
    if clash:
        raise UserError(f"{where}: more than one column maps to {', '.join(clash)}")
    canon = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        target = mapping.rename.get(col, col)
        if target in COLUMN_BY_NAME:
            canon[target] = frame[col]
    extra_cols = [c for c in frame.columns if c not in mapping.rename and c not in COLUMN_BY_NAME]
    rows = finish_rows(canon, frame, mapping, extra_columns=extra_cols, source=source, where=where)
    _check_required(rows, where, mapping if mapping.name != "none" else None)
    return rows


def _match_table(spec: TableSpec, paths: Sequence[str], where: str) -> str:
    hits = [p for p in paths if fnmatch.fnmatch(os.path.basename(p), spec.file)]
    if not hits:
        raise UserError(f"{where}: join table {spec.file!r} ({spec.task}) matched no input file")
    if len(hits) > 1:
        raise UserError(f"{where}: join table {spec.file!r} matched several files: {', '.join(hits)}")
    return hits[0]


def map_join(frames: dict[str, pd.DataFrame], mapping: IngestMapping, *, where: str,
             source: str) -> tuple[pd.DataFrame, list[str], pd.DataFrame, list[str]]:
    """Join wide per-task files on key columns into long canonical rows.

    Returns:
        (rows, raw payload per row, rejected rows, files the mapping did not use).
    """
    join: JoinSpec = mapping.join  # type: ignore[assignment]
    paths = list(frames)
    up_path, ds_paths = _join_files(join, frames, where)
    on = list(join.on)
    rejected: list[dict] = []
    up_rows = _unique_keys(frames[up_path], on, up_path, source, rejected)
    up = _Upstream(path=up_path, task=join.upstream.task, rows=up_rows, accuracy=up_rows[join.upstream.accuracy],
                   model_cols={raw: canon for raw, canon in mapping.rename.items() if raw in up_rows.columns})
    parts, raws = [], []
    for spec, p in zip(join.downstream, ds_paths):
        d = _unique_keys(frames[p], on, p, source, rejected)
        rows, payloads = _join_downstream(d, p, spec, up, on, mapping, rejected, source=source, where=where)
        parts.append(rows)
        raws.extend(payloads)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    _check_required(rows, where, mapping)
    used = {up_path, *ds_paths}
    unused = [p for p in paths if p not in used]
    return rows, raws, rejected_frame(rejected), unused


@dataclass(frozen=True)
class _Upstream:
    """The upstream table of a join, without its duplicate keys."""

    path: str
    task: str
    rows: pd.DataFrame
    accuracy: pd.Series          # raw; finish_rows converts units once for every column
    model_cols: dict[str, str]   # its columns that the mapping renames: raw -> canonical


def _join_files(join: JoinSpec, frames: Mapping[str, pd.DataFrame], where: str) -> tuple[str, list[str]]:
    """The files the join's tables match (upstream, then one per downstream table); a
    :class:`UserError` if one of them lacks a key or accuracy column."""
    paths = list(frames)
    up_path = _match_table(join.upstream, paths, where)
    ds_paths = [_match_table(s, paths, where) for s in join.downstream]
    used = {up_path, *ds_paths}
    for p in used:
        f = frames[p]
        need = list(join.on) + [join.upstream.accuracy if p == up_path else
                                join.downstream[ds_paths.index(p)].accuracy]
        missing = [c for c in need if c not in f.columns]
        if missing:
            raise UserError(f"{p}: no column(s) {', '.join(missing)} needed by the join")
    return up_path, ds_paths


def _unique_keys(frame: pd.DataFrame, on: list[str], path: str, source: str, rejected: list[dict]) -> pd.DataFrame:
    """``frame`` with its row numbers (``_row``), without the rows whose key repeats: those go to
    ``rejected``, every copy of the key."""
    f = frame.copy()
    f["_row"] = range(len(f))
    dup = f.duplicated(on, keep=False)
    for rec in f[dup].to_dict("records"):
        rejected.append({"source": source, "run_id": None,
                         "reason": f"duplicate key {_key_text(rec, on)} in {os.path.basename(path)}",
                         "raw": _payload(path, rec)})
    return f[~dup]


def _join_downstream(d: pd.DataFrame, path: str, spec: TableSpec, up: _Upstream, on: list[str],
                     mapping: IngestMapping, rejected: list[dict], *, source: str,
                     where: str) -> tuple[pd.DataFrame, list[str]]:
    """One downstream table joined to the upstream one: canonical rows and their raw payloads.
    Rows with no upstream row go to ``rejected`` (missing US metric)."""
    m = d.merge(up.rows[on].assign(_us_accuracy=up.accuracy.to_numpy(), **{
        f"_m_{raw}": up.rows[raw].to_numpy() for raw in up.model_cols}), on=on, how="left", indicator=True)
    orphan = m["_merge"] == "left_only"
    for rec in d.loc[d.index[orphan.to_numpy()]].to_dict("records"):
        rejected.append({"source": source, "run_id": None,
                         "reason": f"missing US metric: no row for {_key_text(rec, on)} in "
                                   f"{os.path.basename(up.path)} (downstream {spec.task})",
                         "raw": _payload(path, rec)})
    m = m[~orphan].reset_index(drop=True)
    d_ok = d.loc[d.index[(~orphan).to_numpy()]].reset_index(drop=True)
    canon = pd.DataFrame({
        "us_task": up.task, "ds_task": spec.task,
        "us_accuracy": m["_us_accuracy"].to_numpy(),
        "ds_accuracy": m[spec.accuracy].to_numpy(),
    })
    for raw, canon_col in up.model_cols.items():
        if canon_col not in ("us_accuracy", "ds_accuracy", "us_task", "ds_task"):
            canon[canon_col] = m[f"_m_{raw}"].to_numpy()
    extra_cols = [c for c in d_ok.columns if not c.startswith("_") and c != spec.accuracy
                  and c not in mapping.rename]
    rows = finish_rows(canon, d_ok, mapping, extra_columns=extra_cols, source=source, where=where)
    return rows, [_payload(path, rec, _upstream_file=os.path.basename(up.path)) for rec in d_ok.to_dict("records")]


def _key_text(rec: dict, on: Sequence[str]) -> str:
    return ", ".join(f"{k}={rec.get(k)}" for k in on)


@dataclass
class FileSource:
    """One or more export files ingested with one mapping."""

    paths: list[str]
    mapping: IngestMapping | None
    source_name: str | None = None

    @property
    def label(self) -> str:
        if len(self.paths) == 1:
            return self.paths[0]
        common = os.path.commonpath(self.paths)
        return f"{common}/ ({len(self.paths)} files)" if common else f"{len(self.paths)} files"

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        if self.mapping is not None and self.mapping.join is not None:
            source = self.source_name or self.mapping.source or self.mapping.name
            name, seen = _file_state(store, source, self.paths, self.mapping)
            if seen is None:
                yield SourceBatch(rows=pd.DataFrame(), stats={"unchanged_files": len(self.paths)})
                return
            yield self._join_batch(source, progress, state={name: seen})
            return
        for i, p in enumerate(self.paths):
            progress(f"reading {os.path.basename(p)}", i, len(self.paths))
            source = self.source_name or os.path.splitext(os.path.basename(p))[0]
            name, seen = _file_state(store, source, [p], self.mapping)
            if seen is None:  # unchanged since its last ingest into this store: nothing to read
                yield SourceBatch(rows=pd.DataFrame(), stats={"unchanged_files": 1})
                continue
            # built in a helper so that this generator holds no reference to the frames while the
            # pipeline commits (they are half of an ingest's peak memory)
            yield self._long_batch(p, state={name: seen})
        progress("read", len(self.paths), len(self.paths))

    def _join_batch(self, source: str, progress: Progress, state: dict) -> SourceBatch:
        assert self.mapping is not None
        frames = {}
        for i, p in enumerate(self.paths):
            progress(f"reading {os.path.basename(p)}", i, len(self.paths))
            frames[p] = read_export(p)
        rows, raws, rejected, unused = map_join(frames, self.mapping, where=self.mapping.name, source=source)
        progress("joined", len(self.paths), len(self.paths))
        return SourceBatch(rows=rows, raw=raws, rejected=rejected, state=state, stats={"skipped_files": len(unused)})

    def _long_batch(self, p: str, state: dict) -> SourceBatch:
        """The file as one batch, read in pieces when it is a large CSV/TSV (committed once)."""
        if _format_of(p) in ("csv", "tsv") and os.path.getsize(p) > CHUNK_ROWS * 60:   # ~60 B/row or more
            return SourceBatch(rows=pd.DataFrame(), state=state, chunks=self._pieces(p))
        rows, raw = self._mapped(p, 0, read_export(p))
        return SourceBatch(rows=rows, raw=raw, state=state)

    def _pieces(self, p: str) -> Iterator[tuple[pd.DataFrame, Callable[[np.ndarray], list[str]]]]:
        for start, frame in read_export_chunks(p):
            yield self._mapped(p, start, frame)

    def _mapped(self, p: str, start: int, frame: pd.DataFrame) -> tuple[pd.DataFrame, Callable[[np.ndarray], list[str]]]:
        source = os.path.splitext(os.path.basename(p))[0]
        rows = map_long(frame, self.mapping, where=p, source=source)
        if self.source_name:
            rows["source"] = self.source_name
        return rows, _raw_payloads(frame, p, offset=start)


#: Bump when the way a file becomes rows changes, so that unchanged files are read again.
FILE_STATE_VERSION = 1


def _file_state(store: Store, source: str, paths: Sequence[str], mapping: IngestMapping | None) -> tuple[str, pa.Table | None]:
    """(state name, the state to commit with the file's rows), or (name, None) when the store's
    state says that this very file, with the same content, mapping and schema, was the last one
    ingested as ``source``: re-ingesting it would change nothing, so it is not even read.

    The content is identified by its sha256 (~0.1 s for 100 MB), not by its mtime, so a copy or a
    touched file is still recognized and an edited one never is. The state is per source, so a
    different file ingested as the same source in between (which replaced these rows) makes the
    next ingest of this one read it again. ``store check --repair`` drops every state when data
    was lost, so that the next ingest restores it."""
    import hashlib

    from ..schema import SCHEMA_VERSION

    files = {}
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        files[os.path.abspath(path)] = h.hexdigest()
    fp = json.dumps({"files": files, "schema": SCHEMA_VERSION,
                     "v": FILE_STATE_VERSION, "mapping": mapping.fingerprint() if mapping is not None else None},
                    sort_keys=True)
    name = f"files/{source}"
    table = pa.table({"fingerprint": [fp]})
    old = store.read_state(name) if store.exists() else None
    if old is not None and old.column_names == ["fingerprint"] and old.column("fingerprint").to_pylist() == [fp]:
        return name, None
    return name, table


def _claims(spec: str) -> bool:
    return is_local_path(spec)


@register_source("files", _claims)
def _make(specs: Sequence[str], mapping: IngestMapping | None, options: SourceOptions) -> list[FileSource]:
    paths = expand_paths(specs)
    if mapping is not None and mapping.join is not None:
        return [FileSource(paths=paths, mapping=mapping, source_name=options.source_name)]
    if options.source_name is None and (mapping is None or mapping.source is None):
        _refuse_shared_stems(paths)
    return [FileSource(paths=[p], mapping=mapping, source_name=options.source_name) for p in paths]


def _refuse_shared_stems(paths: Sequence[str]) -> None:
    """Each file's rows get its name without extension as their ``source``: two files with one
    name would silently replace each other's rows (same source and run ids), so refuse."""
    seen: dict[str, str] = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in seen and os.path.abspath(seen[stem]) != os.path.abspath(p):
            raise UserError(f"{seen[stem]} and {p}: both would be source {stem!r} (a file's name without its "
                            "extension) and replace each other's rows; rename one, set 'source:' in the mapping, "
                            "or give each a 'name:' in a --sources-file")
        seen[stem] = p
