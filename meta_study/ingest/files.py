"""File exports: CSV / TSV / Parquet / JSONL files, or directories of them.

Without a mapping, columns must already carry canonical names (unknown ones go to ``extra``).
With a mapping, columns are renamed, units converted, constants set, and wide per-task files
can be joined on key columns (``join:``). Values are read as text (CSV) so that a percent in a
fraction column reaches validation as what it is and is quarantined with a reason.

A file is refused whole, in one line, when a CSV/TSV row has more fields than its header (pandas
would store it shifted by a column), when it holds no rows (a header alone), and when a column
declared in percent holds fractions (:class:`~meta_study.ingest.mapping.PercentTally`).
"""

from __future__ import annotations

import array
import csv
import fnmatch
import io
import json
import os
import re
import stat
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..schema import COLUMN_BY_NAME
from ..validation import printable, row_json
from ..store import Store
from .mapping import NOTHING_STORED, IngestMapping, JoinSpec, PercentTally, TableSpec, finish_rows
from .sources import Progress, SourceBatch, SourceOptions, is_local_path, register_source, rejected_frame

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".csv.gz": "csv", ".tsv.gz": "tsv", ".jsonl.gz": "jsonl", ".ndjson.gz": "jsonl",
            # pandas' own example, df.to_parquet("df.parquet.gzip", compression="gzip"): Parquet whose pages
            # are gzip-compressed, not a gzip file (it was passed over in a directory without a word)
            ".parquet.gzip": "parquet"}
#: What a row must have after mapping; missing columns are a mapping problem, reported once per file.
REQUIRED_AFTER_MAPPING = ("run_id", "us_task", "us_accuracy", "ds_task", "ds_accuracy", "eval_protocol")
#: How a line says to add a mapping or rename columns, and the same for a source named by a
#: ``--sources-file`` entry, whose mapping is the entry's ``mapping:`` (:func:`said_for_entry`)
ADD_MAPPING = " (add a mapping with --mapping; see docs/ingest.md)"
ADD_MAPPING_ENTRY = " (add a 'mapping:' to its entry in the sources file; see docs/ingest.md)"
RENAME_HINT = "(rename them in the file or with a --mapping; see docs/ingest.md)"
RENAME_HINT_ENTRY = ("(rename them in the file or with a mapping, the 'mapping:' of its entry in the sources file; "
                     "see docs/ingest.md)")


def said_for_entry(message: str) -> str:
    """``message`` worded for a source of a ``--sources-file`` entry: its mapping is the entry's
    ``mapping:``, not a ``--mapping`` option."""
    return message.replace(ADD_MAPPING, ADD_MAPPING_ENTRY).replace(RENAME_HINT, RENAME_HINT_ENTRY)


def suffix_of(path: str) -> str | None:
    low = path.lower()
    for suf in sorted(SUFFIXES, key=len, reverse=True):
        if low.endswith(suf):
            return suf
    return None


def _format_of(path: str) -> str | None:
    suf = suffix_of(path)
    return None if suf is None else SUFFIXES[suf]


def source_stem(path: str) -> str:
    """The default ``source`` of a file's rows: its name without its whole suffix, the
    compression's included (``x.csv.gz`` -> ``x``, as ``x.csv``: one export, one source)."""
    name = os.path.basename(path)
    suf = suffix_of(name)
    return name[: -len(suf)] if suf else os.path.splitext(name)[0]


def _kind_of_entry(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _special(path: str) -> str | None:
    """What ``path`` is when it is not a regular file (after symlinks: a link to ``/dev/zero`` is a
    character device), or None. Ingest reads only regular files: a FIFO blocks forever, a device
    never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None if stat.S_ISREG(mode) else _kind_of_entry(mode)


def dataset_parts(path: str) -> list[str] | None:
    """The part files of a dataset directory, or None for any other path.

    A dataset directory is one export, one source (``x``, or the directory's name): each part was a
    source of its own, named after the part (new names at every write: each rewrite stored every
    run again). It is either

    - a directory named like an export (``x.parquet/``, as Spark's ``df.write.parquet("x.parquet")``
      and Hive tables write them) whose regular files directly inside, besides hidden and ``_``
      ones (``_SUCCESS``, ``.part-0.crc``), are parts in its format; or
    - a Hive-partitioned directory (:func:`hive_parts`: pyarrow's ``write_to_dataset(partition_cols=
      [...])``, Spark's ``partitionBy``), whose parts hold the partition columns in their path only.
    """
    fmt = _format_of(path) or ("jsonl" if path.lower().endswith(".json") else None)   # Spark's x.json/
    if fmt is None or not os.path.isdir(path):
        return _spark_output_parts(path) or hive_parts(path)
    try:
        names = sorted(n for n in os.listdir(path) if not n.startswith((".", "_")))
    except OSError:
        return None
    parts = [os.path.join(path, n) for n in names if _part_format(n, fmt) == fmt]
    parts = [q for q in parts if _special(q) is None]     # the others: dataset_skipped() says them
    return parts or hive_parts(path)    # Spark's partitionBy(...).parquet("x.parquet"): partitions inside


def dataset_skipped(path: str) -> dict[str, str]:
    """The entries of a directory named like an export (:func:`dataset_parts`) that are named as
    its parts but are not regular files -> what they are (``"a FIFO"``, ``"unreadable (No such
    file or directory)"`` for a link to a part that is gone). They are not read, and were passed
    over without a word: a part whose link was broken (its disk not mounted) lost its rows
    silently, the ingest a success. One listing of the directory, paid by dataset directories only."""
    hive = _hive_walk(path)
    if hive is not None:
        return hive[1]
    fmt = _format_of(path) or ("jsonl" if path.lower().endswith(".json") else None)
    spark = _spark_output_parts(path) if fmt is None else None
    if spark:
        fmt = _part_format(os.path.basename(spark[0]))
    if fmt is None or not os.path.isdir(path):
        return {}
    try:
        names = sorted(n for n in os.listdir(path) if not n.startswith((".", "_")))
    except OSError:
        return {}
    out = {}
    for n in names:
        q = os.path.join(path, n)
        why = _special(q) if _part_format(n, fmt) == fmt else None
        if why is not None:
            out[q] = why
    return out


def _spark_output_parts(path: str) -> list[str] | None:
    """The parts of Spark's output written under a name of any kind (``df.write.parquet("out")``:
    ``out/_SUCCESS`` beside ``part-00000-<uuid>-c000.snappy.parquet``, ...), or None: a directory
    holding Spark's ``_SUCCESS`` marker whose files (hidden and ``_`` ones aside) are all parts
    ``part-*`` of one format. Read as a plain directory, each part was a source of its own, named
    after the part: a new write names its parts anew, so every re-export stored every run again."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "_SUCCESS")):
        return None
    try:
        names = sorted(n for n in os.listdir(path) if not n.startswith((".", "_")))
    except OSError:
        return None
    formats = {_part_format(n) for n in names}
    if not names or not all(n.startswith("part-") for n in names) or len(formats) != 1 or None in formats:
        return None
    parts = [os.path.join(path, n) for n in names]
    parts = [q for q in parts if _special(q) is None]     # the others: dataset_skipped() says them
    return parts or None


def _part_format(name: str, fmt: str | None = None) -> str | None:
    """The format of a dataset's part file named ``name``: its suffix's, or JSON Lines for Spark's
    ``part-*.json`` (``df.write.json`` writes one object a line, under a ``.json`` name)."""
    got = _format_of(name)
    if got is None and re.fullmatch(r"part-.*\.json(\.gz)?", name.lower()):
        got = "jsonl"
    return got if fmt is None or got == fmt else None


#: A Hive partition directory's name, ``key=value`` (the key a column name, the value
#: percent-encoded as pyarrow and Spark write it); ``__HIVE_DEFAULT_PARTITION__`` is a null value.
_HIVE_DIR = re.compile(r"([^=]+)=(.*)", re.S)
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def hive_parts(path: str) -> list[str] | None:
    """The part files of a Hive-partitioned directory, sorted by path, or None when ``path`` is
    not one: every entry of it (hidden and ``_`` ones aside: ``_SUCCESS``, ``.crc``,
    ``_common_metadata``) is a directory ``key=value``, recursively, down to directories that hold
    part files of one format (:func:`_part_format`); every part lies under the same keys in the
    same order. Anything else (a file beside a partition directory, a directory of another name,
    two formats, keys that differ between branches) is not one: it is read as a plain directory,
    whose sub-directories are said and skipped. One listing per directory of the tree. An entry
    named as a part that is not a regular file (a FIFO, a link to a part that is gone) is no part:
    :func:`dataset_skipped` says it (it made the whole dataset "a directory ...: name it too")."""
    walked = _hive_walk(path)
    return None if walked is None else walked[0]


def _hive_walk(path: str) -> tuple[list[str], dict[str, str]] | None:
    """(:func:`hive_parts`, its entries named as parts that are not regular files -> what they
    are), or None."""
    if not os.path.isdir(path):
        return None
    parts: list[str] = []
    special: dict[str, str] = {}
    keys: set[tuple[str, ...]] = set()
    formats: set[str] = set()
    seen: set[str] = set()      # a `k=v` link to a directory above: a loop, not a dataset

    def walk(d: str, above: tuple[str, ...]) -> bool:
        real = os.path.realpath(d)
        if real in seen:
            return False
        seen.add(real)
        try:
            names = sorted(n for n in os.listdir(d) if not n.startswith((".", "_")))
        except OSError:
            return False
        if not names:
            return True              # an empty partition (Spark writes none, a deleted one leaves it)
        dirs = [n for n in names if _HIVE_DIR.fullmatch(n) and os.path.isdir(os.path.join(d, n))]
        if dirs:
            return len(dirs) == len(names) and all(
                walk(os.path.join(d, n), (*above, _HIVE_DIR.fullmatch(n).group(1))) for n in dirs)  # type: ignore[union-attr]
        if not above:
            return False
        for n in names:
            q = os.path.join(d, n)
            fmt = _part_format(n)
            if fmt is None:
                return False
            why = _special(q)
            if why is not None:
                special[q] = why
                continue
            parts.append(q)
            formats.add(fmt)
        keys.add(above)
        return True

    if not walk(path, ()) or len(formats) != 1 or len(keys) != 1 or not parts:
        return None
    (names,) = keys
    return (sorted(parts), special) if len(set(names)) == len(names) else None


def partition_values(dataset: str, part: str) -> dict[str, str | None]:
    """The Hive partition columns of a dataset's part, from its path: ``{"ds_task": "c/d"}`` for
    ``out/ds_task=c%2Fd/x.parquet``, percent-decoded as pyarrow decodes them (its default
    ``segment_encoding="uri"``), ``__HIVE_DEFAULT_PARTITION__`` as null; none for a part of a
    directory named like an export. Values are text, as a CSV's are: validation parses numbers."""
    from urllib.parse import unquote

    out: dict[str, str | None] = {}
    for seg in os.path.relpath(os.path.dirname(part), dataset).split(os.sep):
        m = _HIVE_DIR.fullmatch(seg) if seg != os.curdir else None
        if m is not None:
            value = unquote(m.group(2))
            out[unquote(m.group(1)).strip()] = None if value == HIVE_NULL else value   # names as column_names()
    return out


def _with_partitions(dataset: str, part: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a piece of ``part``) with its partition columns (:func:`partition_values`) last,
    as pyarrow's ``dataset()`` adds them. A file that holds a column of that name too is refused:
    pyarrow's ``read_table`` fails on it, and which of two values is meant cannot be told."""
    values = partition_values(dataset, part)
    if not values:
        return frame
    clash = [k for k in values if k in frame.columns]
    if clash:
        raise UserError(printable(f"{part}: column {clash[0]!r} is both in the file and a partition directory "
                                  f"of {dataset} ({clash[0]}=...); which value is meant? Drop one"))
    return frame.assign(**{k: pd.Series([v] * len(frame), index=frame.index, dtype=object) for k, v in values.items()})


@dataclass(frozen=True)
class ExpandedPaths:
    """The files a list of specs names, and the directory entries that were passed over."""

    paths: list[str]
    special: dict[str, str]   # directory entry that is not a regular file -> what it is ("a FIFO")
    #: a directory's files that look like data in a format ingest does not read, and its
    #: sub-directories that hold files it reads -> why
    other: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> list[str]:
        """One ``"path: skipped (why)"`` line per entry passed over."""
        return [f"{p}: skipped ({why})" for p, why in {**self.special, **self.other}.items()]


#: Suffixes of data files ingest does not read, noted when a directory holds them (a zoo.json
#: beside zoo.csv was passed over without a word); README.md and the like are not data.
_UNREAD = {".json": "JSON is not read: JSON Lines (one object a line) ends in .jsonl",
           ".xlsx": "a spreadsheet: export it as CSV",
           ".xls": "a spreadsheet: export it as CSV", ".feather": "Feather is not read: write Parquet",
           ".arrow": "Arrow IPC is not read: write Parquet",
           ".txt": "not a CSV, TSV, Parquet or JSONL name", ".zip": "an archive: unpack it"}


#: Compression suffixes ingest does not read (it reads gzip, of CSV, TSV and JSON Lines only): a
#: directory's ``results.csv.zst`` was passed over without a word.
_COMPRESSED = {".zst": "zstd", ".zstd": "zstd", ".bz2": "bzip2", ".xz": "xz", ".lz4": "lz4", ".gz": "gzip",
               ".gzip": "gzip", ".7z": "7-Zip"}
_DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".xlsx", ".xls")


def _why_unread(name: str) -> str | None:
    """Why a file named ``name`` that looks like data is not read, or None (it is read, or is not
    data: README.md)."""
    if _format_of(name):
        return None
    base, ext = os.path.splitext(name.lower())
    if ext in _COMPRESSED:
        if os.path.splitext(base)[1] not in _DATA_SUFFIXES:
            return None
        return (f"compressed with {_COMPRESSED[ext]}: ingest reads .csv.gz, .tsv.gz and .jsonl.gz and "
                "uncompressed files; decompress it")
    return _UNREAD.get(ext)


def _marker(name: str) -> bool:
    """A ``_`` name that is no data file (Spark's ``_SUCCESS``, ``_temporary``, ``_metadata``)."""
    return name.startswith("_") and _format_of(name) is None and _why_unread(name) is None


def _subdirectory_of_data(path: str, parent: str) -> str | None:
    """Why a sub-directory of a named directory is passed over, when it holds files ingest reads
    (``exports/alice/a.csv`` beside ``exports/summary.csv``: alice's runs were missing without a
    word), or None. One listing of the sub-directory."""
    if _format_of(path) or not os.path.isdir(path):
        return None          # a directory named like a file is listed as "a directory" already
    if dataset_parts(path) is not None:    # a Hive-partitioned one, Spark's x.json/: nothing directly inside
        return f"a dataset directory: ingest reads the files directly inside {parent}; name it too"
    try:
        held = any(_format_of(n) for n in os.listdir(path) if not n.startswith(".") and not _marker(n))
    except OSError:
        return None
    return (f"a directory: ingest reads the files directly inside {parent}, not in its sub-directories; "
            "name it too") if held else None


def _subdirectories_glob(spec: str, subdirs: Sequence[str]) -> str:
    """How to name the data files of ``spec``'s sub-directories: ``examples/data/*/us_ds.csv`` (with
    how many hold it) where most of them hold a file of one name in meta-study's columns, which
    ingests as it is; else ``spec/*/``. ``examples/data/*/`` (the hint before) read every folder's
    raw tables beside its ``us_ds.csv``, and those failed. One listing and one header read a file
    (~3 ms), on this error's path only."""
    held: dict[str, int] = {}
    for d in subdirs:
        try:
            names = [n for n in os.listdir(d) if _format_of(n) and not n.startswith(".")]
        except OSError:
            continue
        for n in names:
            h = _header(os.path.join(d, n))
            if h is not None and _columns_problem(tuple(h), None) is None:
                held[n] = held.get(n, 0) + 1
    name, count = max(sorted(held.items()), key=lambda kv: kv[1], default=("", 0))
    if count < 2 or 2 * count <= len(subdirs):
        return os.path.join(spec, "*", "")
    whose = "each of them holds" if count == len(subdirs) else f"{count} of the {len(subdirs)} hold"
    return f"{os.path.join(spec, '*', name)}, the file in meta-study's columns that {whose}, which ingests as it is"


def expand_paths(specs: Sequence[str]) -> ExpandedPaths:
    """Files named directly, plus supported regular files directly inside named directories
    (sorted). A directory entry with a supported name that is not a regular file (a FIFO, a
    device, a link to one, a directory) is skipped and listed; a file named directly must be a
    regular file.

    Raises:
        UserError: a spec names nothing, a special file, or a directory without a file to read.
    """
    out: list[str] = []
    special: dict[str, str] = {}
    other: dict[str, str] = {}
    for spec in specs:
        if spec.endswith(os.sep) and os.path.isdir(spec):
            # `x.parquet/` (a shell completes a directory so) is `x.parquet`: with the slash it was no
            # dataset (every part its own source, named after the part) and a dataset's source was ""
            spec = spec.rstrip(os.sep) or os.sep
        if os.path.isdir(os.path.join(spec, "_delta_log")):
            # its parts include those that later writes removed (only the log says which are live):
            # read as files, an overwritten table's old rows were stored beside the new ones
            raise UserError(f"{spec}: a Delta Lake table (it holds _delta_log): its directory keeps the parts that "
                            "later writes replaced, so its files are not its rows; export the table as Parquet or "
                            "CSV (spark.read.format('delta').load(...).write.parquet(...)) and ingest that")
        if dataset_parts(spec) is not None:
            out.append(spec)       # a dataset directory (x.parquet/ of part files): one export
            special.update(dataset_skipped(spec))
        elif os.path.isdir(spec):
            # hidden files (macOS's `._x.csv` beside x.csv) are not read; `_`-names are Spark's
            # markers (_SUCCESS, _temporary) unless named as data: `_final.csv` was passed over unsaid
            entries = sorted(n for n in os.listdir(spec) if not n.startswith(".") and not _marker(n))
            names = [n for n in entries if _format_of(n)]
            mine = []   # (path, why) of its files that look like data ingest does not read
            for n in entries:
                p = os.path.join(spec, n)
                why_not = _why_unread(n) if os.path.isfile(p) else _subdirectory_of_data(p, spec)
                if why_not:
                    other[p] = why_not
                    mine.append((p, why_not))
            files, passed = [], 0
            for n in names:
                p = os.path.join(spec, n)
                why = _special(p)
                if why is None or dataset_parts(p) is not None:
                    files.append(p)
                    if why is not None:      # a dataset directory inside: its parts that are not files
                        special.update(dataset_skipped(p))
                else:
                    special[p] = why
                    passed += 1
            if not files:
                # what it does hold, passed over: a results.csv.zst, a spreadsheet (it said "no files")
                # "6 more file(s)" of examples/data/ were its 6 other sub-directories of data
                dirs = all(os.path.isdir(q) and not _format_of(q) for q, _ in mine)
                more = ("" if len(mine) < 2 else f" (and {len(mine) - 1} more file(s) not read)" if not dirs else
                        f" (and {len(mine) - 1} more sub-directories of data files: name them, e.g. "
                        f"{_subdirectories_glob(spec, [q for q, _ in mine])})")
                held = f"; {mine[0][0]}: {mine[0][1]}{more}" if mine else ""
                raise UserError(f"{spec}: directory holds no CSV, TSV, Parquet or JSONL files"
                                + (f" ({passed} entries that are not regular files skipped)" if passed else "") + held)
            out.extend(files)
        elif os.path.exists(spec):
            why = _special(spec)
            if why is not None:
                raise UserError(f"{spec}: cannot read {why}: ingest reads regular files only")
            if _format_of(spec) is None:
                why_not = _why_unread(os.path.basename(spec))
                raise UserError(f"{spec}: unknown file type (expected .csv, .tsv, .parquet or .jsonl"
                                + (f"; {why_not})" if why_not else ")"))
            out.append(spec)
        else:
            raise UserError(f"{spec}: no such file or directory")
    return ExpandedPaths(paths=out, special=special, other=other)


#: A file with more rows than this (CSV/TSV and JSON Lines: a size above 60 bytes a row) is read,
#: validated and staged in pieces of this many rows
#: (~50 MB of text, ~0.5 GB at peak), and committed once: memory stays bounded for any size.
CHUNK_ROWS = 500_000

#: A line of a CSV, TSV or JSONL file longer than this is refused, in one line naming it: parsing
#: costs ~13x a line's size in memory (a 1 GB line took 12.7 GB, or aborted with std::bad_alloc),
#: and no row of this schema needs more than a few kB.
MAX_LINE_BYTES = 8 << 20


def _csv_kwargs(fmt: str) -> dict:
    # dtype=str keeps "87.5" and "1,014.45" as written; "" is the only missing marker so a literal
    # "NaN" reaches validation and is quarantined as NaN. The caller decompresses (compression=None).
    return dict(sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False, na_values=[""],
                skipinitialspace=True, compression=None, encoding="utf-8")


class _LineCapped(io.RawIOBase):
    """A binary file that raises :class:`UserError` as soon as a line grows past ``cap`` bytes,
    so that pandas never holds more than that of one line. Costs one ``find`` per read."""

    def __init__(self, f: Any, path: str, cap: int = MAX_LINE_BYTES) -> None:
        self.f, self.path, self.cap = f, path, cap
        self.run = 0      # bytes since the last newline
        self.lines = 0    # newlines seen

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.f.read(len(b))
        n = len(data)
        first = data.find(b"\n")
        if first < 0:
            self.run += n
        else:
            if self.run + first > self.cap:
                self._too_long(self.lines + 1)
            last = data.rfind(b"\n")
            if last - first > self.cap:   # a read longer than the cap: a long line may lie inside it
                pos = first
                while pos < last:
                    nxt = data.find(b"\n", pos + 1)
                    if nxt - pos - 1 > self.cap:
                        self._too_long(self.lines + data.count(b"\n", 0, pos + 1) + 1)
                    pos = nxt
            self.lines += data.count(b"\n")
            self.run = n - last - 1
        if self.run > self.cap:
            self._too_long(self.lines + 1)
        b[:n] = data
        return n

    def _too_long(self, line: int) -> None:
        raise UserError(f"{self.path}: line {line} is longer than {self.cap >> 20} MB (a row of that size is not "
                        "a result; is it the right file?)")

    def close(self) -> None:
        self.f.close()
        super().close()


def _open_capped(path: str) -> io.BufferedReader:
    """``path`` (gzip-decompressed when it ends in .gz) as a line-capped binary stream."""
    import gzip

    f = gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")
    return io.BufferedReader(_LineCapped(f, path), buffer_size=1 << 20)


def read_export_chunks(path: str, rows: int | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(first row's position, frame)`` pieces of one export, in order, of ``rows`` rows at most
    (default :data:`CHUNK_ROWS`); a dataset directory's (:func:`dataset_parts`) part after part,
    positions counted across them. Errors as :func:`read_export`."""
    rows = rows or CHUNK_ROWS
    parts = dataset_parts(path)
    if parts is None:
        yield from _file_chunks(path, rows)
        return
    start = 0
    for _, _, frame in _part_pieces(path, parts, rows):
        yield start, frame
        start += len(frame)
    if start == 0:
        raise _no_rows(path, _format_of(path))


def _part_pieces(dataset: str, parts: Sequence[str], rows: int) -> Iterator[tuple[str, int, pd.DataFrame]]:
    """``(part, first row's position in it, frame)`` of a dataset's parts, with their partition
    columns (:func:`_with_partitions`); a part without rows (Spark writes one for an empty
    partition, of 0 bytes or a header alone) holds none.

    Every part's frame has the columns of all parts (missing: NaN), as one export: Spark's JSON
    writer leaves out a null field, so a part whose rows all lacked a value lacked its column, and
    a mapping that renames it refused the whole dataset ("renames column(s) ... not in the file").
    Cost: each part's header (CSV/TSV), footer (Parquet) or keys (JSON Lines: one more pass)."""
    live = [q for q in parts if os.path.getsize(q) or _part_format(os.path.basename(q)) == "parquet"]
    columns = _union_columns(live)
    for part in live:
        keys = partition_values(dataset, part)      # another part's file holding one is that part's clash
        mine = [c for c in columns if c not in keys] if keys else columns
        for start, frame in _file_chunks(part, rows, empty_ok=True):
            if list(frame.columns) != mine:
                frame = frame.reindex(columns=[*mine, *(c for c in frame.columns if c not in mine)])
            yield part, start, _with_partitions(dataset, part, frame)


def _union_columns(parts: Sequence[str]) -> list[str]:
    """The column names of a dataset's parts, all of them, in the order first seen."""
    seen: dict[str, None] = {}
    for part in parts:
        fmt = _part_format(os.path.basename(part))
        names = _reading(part, fmt, lambda: _parquet_columns(part)[1] if fmt == "parquet"
                         else _jsonl_all_keys(part) if fmt == "jsonl" else _csv_columns(part, fmt or "csv"))
        seen.update(dict.fromkeys(names))
    return list(seen)


def _file_chunks(path: str, rows: int, *, empty_ok: bool = False) -> Iterator[tuple[int, pd.DataFrame]]:
    """:func:`read_export_chunks` of one file; ``empty_ok``: a file without rows yields nothing."""
    fmt = _part_format(os.path.basename(path))
    if fmt == "jsonl":
        yield from _jsonl_chunks(path, rows, empty_ok)
        return
    if fmt == "parquet":
        yield from _parquet_chunks(path, rows, empty_ok)
        return
    if fmt not in ("csv", "tsv"):
        yield 0, read_export(path)
        return
    columns = _reading(path, fmt, lambda: _csv_columns(path, fmt))
    start, first = 0, True
    short = _ShortRows(path, fmt, columns)
    with _open_capped(path) as f:
        reader = _reading(path, fmt, lambda: pd.read_csv(f, chunksize=rows, **_csv_body_kwargs(fmt)))
        while True:
            frame = _reading(path, fmt, lambda: next(reader, None))
            if frame is None:
                break
            frame, first = _with_header(frame, columns, first=first), False
            short.refuse(frame)
            if len(frame):
                yield start, frame
            start += len(frame)
    if start == 0 and not empty_ok:
        raise _no_rows(path, fmt)


def _jsonl_chunks(path: str, rows: int, empty_ok: bool = False) -> Iterator[tuple[int, pd.DataFrame]]:
    """A JSON Lines file in pieces of ``rows`` objects: read whole, a 55 MB file took 600 MB (a
    dict a record, then the frame), so a few GB of JSON Lines did not fit in memory.

    Every piece has every key of the file as a column (missing: NaN), as the file read whole has:
    a key of only some records (a field added or dropped mid-file) was missing from a piece, so
    a mapping that renames it was refused ("renames column(s) body_lr not in the file"). The keys
    cost one more pass over the file, paid only by a file of more than one piece (~1 s a million
    records)."""
    records = _reading(path, "jsonl", lambda: _jsonl_records(path))
    start = 0
    columns: list[str] | None = None
    while True:
        piece = _reading(path, "jsonl", lambda: [r for _, r in zip(range(rows), records)])
        if not piece:
            break
        if columns is None and len(piece) == rows:     # more may follow: the file is read in pieces
            columns = _reading(path, "jsonl", lambda: _jsonl_all_keys(path))
        frame = _integers_kept(pd.DataFrame.from_records(piece), piece)
        yield start, (frame if columns is None else frame.reindex(columns=columns))
        start += len(piece)
    if start == 0 and not empty_ok:
        raise _no_rows(path, "jsonl")


def _reading(path: str, fmt: str | None, fn: Callable[[], Any]) -> Any:
    """``fn()``, with a read or parse error turned into one :class:`UserError` naming the file."""
    try:
        return fn()
    except UserError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        # EOFError: a truncated .gz (it must not reach click, which turns it into "Aborted")
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        extra = _EXTRA_FIELDS.search(msg) if isinstance(e, pd.errors.ParserError) else None
        if extra is not None:
            n, line, saw = (int(x) for x in extra.groups())
            # pandas counts a quoted field's line breaks as no line: the record's first line in the file
            scanner = RecordScanner(path, fmt or "csv")
            where = scanner.line_of_parser_line(line)
            scanner.close()
            at = f"line {where}" if where is not None else f"record {line}"
            first = _preamble(path)    # "# exported by x, y": the comment was taken for a 2-column header
            why = (f"; {_preamble_said(first)}" if first is not None
                   else " (a value too many, or a separator at the end of the line?)")
            raise UserError(printable(f"{path}: {at} has {saw} fields but the header has {n}{why}; {NOTHING_STORED}")
                            ) from None
        eof = _EOF_IN_QUOTE.search(msg) if isinstance(e, pd.errors.ParserError) else None
        if eof is not None and int(eof.group(1)) > 0:
            # "EOF inside string starting at row 2" counted from 0, blank lines in, quoted line breaks
            # not: the record after pandas' line 2 (1-based), as the file numbers its lines
            row = int(eof.group(1))
            scanner = RecordScanner(path, fmt or "csv")
            where = scanner.end_line + 1 if scanner.line_of_parser_line(row) is not None else None
            scanner.close()
            at = f"line {where}" if where is not None else f"record {row}"
            raise UserError(f"{path}: {at} opens a quoted value (\") that is never closed, so the rest of the file "
                            f"would be one value; {NOTHING_STORED}") from None
        if isinstance(e, EOFError):
            msg = f"truncated compressed file: {msg}"
        if fmt == "parquet" and not isinstance(e, EOFError):
            said = _not_parquet(path)
            if said is not None:
                raise UserError(f"{path}: {said}") from None
        if type(e).__name__ == "BadGzipFile" and path.lower().endswith(".gz") and not _starts_with(path, b"\x1f\x8b"):
            # a plain file named .gz ("Not a gzipped file (b'ru')" named no way out)
            raise UserError(f"{path}: not gzip-compressed, though its name ends in .gz; name it without .gz") from None
        if isinstance(e, UnicodeDecodeError) and fmt in ("csv", "tsv"):
            # pandas' "byte 0xe9 in position 3" counts from a buffer it read, not from the file
            where = _not_utf8(path)
            if where is not None:
                raise UserError(f"{path}: {where}") from None
        raise UserError(f"{path}: cannot read {fmt} ({msg})") from None


#: pandas' C parser on a quote that is never closed (a value cut short, or a stray ``"``).
_EOF_IN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")


def _not_parquet(path: str) -> str | None:
    """What a file under a Parquet name that pyarrow cannot read is instead, and what to do, or
    None (a Parquet file, damaged or cut short, or unknown bytes): a CSV saved as ``x.parquet``
    was "cannot read parquet (Parquet magic bytes not found in footer ...)", naming no way out.
    Reads the first 4 kB, only when the read failed."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4))
            tail = f.read(4)
    except OSError:
        return None
    if head.startswith(b"PAR1") and len(head) > 4 and tail != b"PAR1":
        return ("a Parquet file cut short (it ends without its footer: a copy or an export interrupted, or still "
                "being written); export or copy it again")
    if not head or head.startswith(b"PAR1"):
        return None
    for magic, what, _ in _MAGIC:
        if head.startswith(magic) and not (_is_text(magic) and _is_utf8(head[:64])):
            return f"it is {what}, not a Parquet file"
    text = head.removeprefix(b"\xef\xbb\xbf")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(text) - 3:       # not a character cut at 4 kB
            return None
    first = text.lstrip().split(b"\n", 1)[0]
    kind = ("JSON Lines", ".jsonl") if first.startswith(b"{") else (
        ("TSV", ".tsv") if b"\t" in first else ("CSV", ".csv") if b"," in first else (None, None))
    if kind[0] is None:
        return None
    return f"it is {kind[0]} text, not a Parquet file; name it {kind[1]}"


def _starts_with(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _not_utf8(path: str) -> str | None:
    """Where a file first is not UTF-8 text, and what to do (``"line 5002 is not UTF-8 text (byte
    0xe9 at column 27); save ..."``), or None. Reads the file up to there, line by line: paid only
    when a read failed."""
    import gzip

    try:
        with (gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")) as f:
            for lineno, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES), b""), 1):
                if lineno == 1 and line.startswith((b"\xff\xfe", b"\xfe\xff")):
                    return ("it is UTF-16 text (a spreadsheet's \"Unicode text\"), not UTF-8; save it as UTF-8 "
                            "(e.g. iconv -f utf-16 -t utf-8)")
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    if e.end == len(line) and len(line) == MAX_LINE_BYTES:   # a character cut at the cap
                        continue
                    return (f"line {lineno} is not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1}); "
                            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    except (OSError, EOFError, zlib.error):
        return None
    return None


def read_export(path: str) -> pd.DataFrame:
    """Read one export file into a DataFrame of raw values (strings for CSV/TSV).

    Raises:
        UserError: the file cannot be read or parsed, a CSV/TSV row has more fields than the
            header, or the file holds no rows (a header alone, an empty Parquet or JSONL file):
            a file of results that holds none is cut short, not a success that stores nothing.
    """
    fmt = _format_of(path)
    if dataset_parts(path) is not None:
        return pd.concat([f for _, f in read_export_chunks(path)], ignore_index=True)
    frame = _reading(path, fmt, lambda: _read_whole(path, fmt))
    if not len(frame):
        raise _no_rows(path, fmt)
    return frame


def _no_rows(path: str, fmt: str | None) -> UserError:
    what = "only a header" if fmt in ("csv", "tsv") else "no record"
    return UserError(f"{path}: no rows ({what}): nothing to ingest; an export cut short?")


#: pandas' C parser on a row with more fields than the first line (read as data, ``header=None``).
_EXTRA_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _csv_body_kwargs(fmt: str) -> dict:
    # The header line is read as a row of data (header=None) and dropped (_with_header), so that
    # it fixes the number of fields: a row with more fields is a ParserError naming its line. With
    # header=0, pandas instead takes a first row with one field too many as an index column (every
    # value stored shifted by one column), and with index_col=False it drops the extra field
    # silently (always when it is empty: a trailing separator).
    return dict(_csv_kwargs(fmt), header=None, index_col=False)


def _csv_columns(path: str, fmt: str) -> list[str]:
    """The column names of a CSV/TSV as pandas names them (an empty name is ``Unnamed: i``),
    after :func:`_check_header`."""
    _check_header(path, "\t" if fmt == "tsv" else ",")
    with _open_capped(path) as f:
        return column_names(pd.read_csv(f, nrows=0, index_col=False, **_csv_kwargs(fmt)).columns)


def column_names(names: Sequence[Any]) -> list[str]:
    """Column names without spaces at either end (``"us_accuracy "`` is ``us_accuracy``), as
    string values are stored (:func:`~meta_study.validation.validate`): a space a spreadsheet
    left after a name never makes a column unknown, in any format."""
    return [str(c).strip() for c in names]


def _with_header(frame: pd.DataFrame, columns: list[str], *, first: bool) -> pd.DataFrame:
    """A piece read with ``header=None``: without the header line (in the first piece), with the
    header's column names."""
    if first:
        frame = frame.iloc[1:].reset_index(drop=True)
    frame.columns = columns
    return frame


class _ShortRows:
    """Refuses a CSV/TSV record with fewer fields than the header, in one line naming the line
    where it starts: pandas pads such a record with empty values, so a line cut short (an export
    copied while written, a line break in a value that is not quoted, which splits a record in
    two) was stored with its last values missing (``seed`` null), or half of it quarantined and
    the other half stored in the wrong columns. pandas cannot tell a missing field from an empty
    one, so once a piece has a record whose last field is empty, the file is read once more with
    the csv module, as pandas reads it (:class:`RecordScanner`), counting fields: a file whose
    last column is filled costs nothing, any other one pass (~1 s per million rows). Missing
    fields of unnamed columns at the end of the header (a header that alone ends in a separator)
    are no loss: nothing of them is stored."""

    def __init__(self, path: str, fmt: str, columns: Sequence[str]) -> None:
        self.path, self.sep, self.n = path, "\t" if fmt == "tsv" else ",", len(columns)
        self.named = max((i + 1 for i, c in enumerate(columns) if not re.fullmatch(r"Unnamed: \d+", c)), default=0)
        self.scanned = False

    def refuse(self, frame: pd.DataFrame) -> None:
        """Raises :class:`UserError` when ``frame`` (a piece of the file) may hold a short record
        and the file does."""
        if self.scanned or self.n < 2 or not len(frame) or not frame.iloc[:, -1].isna().any():
            return
        self.scanned = True
        found = self._first_short()
        if found is not None:
            line, fields = found
            raise UserError(printable(
                f"{self.path}: line {line} has {fields} fields but the header has {self.n} (cut short, or a line "
                f"break in a value that is not quoted?); {NOTHING_STORED}"))

    def _first_short(self) -> tuple[int, int] | None:
        """(first line, fields) of the file's first data record with fewer than ``named`` fields, or
        None (also when the csv module cannot read the file: pandas' reading says what)."""
        import gzip

        csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
        opener: Any = gzip.open if self.path.lower().endswith(".gz") else open
        try:
            with opener(self.path, "rt", encoding="utf-8-sig", newline="") as f:
                reader = csv.reader(f, delimiter=self.sep, skipinitialspace=True)
                end, header = 0, False
                for row in reader:
                    start, end = end + 1, reader.line_num
                    if len(row) >= self.named:
                        header = True
                    elif row and (len(row) > 1 or row[0].strip(" \t")):   # a blank line: pandas skips it too
                        if header:
                            return start, len(row)
                        header = True
        except (OSError, EOFError, csv.Error, UnicodeDecodeError, zlib.error):
            return None
        return None


def _read_whole(path: str, fmt: str | None) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        columns = _csv_columns(path, fmt)
        with _open_capped(path) as f:
            frame = _with_header(pd.read_csv(f, **_csv_body_kwargs(fmt)), columns, first=True)
        short = _ShortRows(path, fmt, columns)
        short.refuse(frame)
        return frame
    if fmt == "parquet":
        return _parquet_frame(path, pq.read_table(path))
    if fmt == "jsonl":
        return _read_jsonl(path)
    raise UserError(f"{path}: unknown file type")


def _parquet_frame(path: str, table: pa.Table) -> pd.DataFrame:
    """A Parquet file's table (or a piece of it) as a frame of its values as written."""
    table = _without_pandas_index(table)
    names = column_names(table.column_names)
    _refuse_duplicate_names(path, names)
    # an integer column with nulls as Python ints and None: pandas' default, float64, stored the
    # seed 9007199254740993 as ...992 and made an integer run_id 1.0, "not a string" (every row
    # quarantined); cost: a Python int a cell of such a column, none for other columns
    return _float32_as_written(table.rename_columns(names)).to_pandas(integer_object_nulls=True)


def _parquet_chunks(path: str, rows: int, empty_ok: bool = False) -> Iterator[tuple[int, pd.DataFrame]]:
    """A Parquet file in pieces of at most ``rows`` rows (read whole, a file of tens of millions
    of rows needed its whole table, then its frame, in memory at once)."""
    pf = _reading(path, "parquet", lambda: pq.ParquetFile(path))
    metadata = pf.schema_arrow.metadata      # pandas' index columns are named there
    batches = _reading(path, "parquet", lambda: pf.iter_batches(batch_size=rows))
    start = 0
    while True:
        batch = _reading(path, "parquet", lambda: next(batches, None))
        if batch is None:
            break
        table = pa.Table.from_batches([batch]).replace_schema_metadata(metadata)
        frame = _reading(path, "parquet", lambda: _parquet_frame(path, table))
        if len(frame):
            yield start, frame
            start += len(frame)
    if start == 0 and not empty_ok:
        raise _no_rows(path, "parquet")


def _parquet_columns(path: str) -> tuple[int, list[str]]:
    """(rows, column names as read) of a Parquet file, from its footer."""
    pf = pq.ParquetFile(path)
    schema = _without_pandas_index(pa.Table.from_batches([], schema=pf.schema_arrow)).schema
    return pf.metadata.num_rows, column_names(schema.names)


def _without_pandas_index(table: pa.Table) -> pa.Table:
    """``table`` without the row numbers pandas writes as ``__index_level_0__`` (the index of a
    filtered or concatenated frame, ``to_parquet(index=True)``): they are no value of a run, and
    were stored in every row's extra, differing between two exports of the same rows (every row
    "updated"). Only columns that pandas' own metadata lists as an unnamed index are dropped; a
    named index (``set_index("run_id")``) is a column like the others."""
    meta = (table.schema.metadata or {}).get(b"pandas")
    if meta is None:
        return table
    try:
        index = json.loads(meta).get("index_columns", [])
    except (ValueError, AttributeError):
        return table
    drop = [c for c in index if isinstance(c, str) and re.fullmatch(r"__index_level_\d+__", c)
            and c in table.column_names]
    return table.drop_columns(drop) if drop else table


def _float32_as_written(table: pa.Table) -> pa.Table:
    """``table`` with its float32 and float16 columns as float64 of their shortest decimal text:
    the float32 0.9 is 0.9, not 0.8999999761581421, which it widens to exactly. The same table as
    CSV gives 0.9, so a float32 Parquet export and its CSV were two sets of values (every row
    "updated" when one replaced the other), and a hyper-parameter 1e-4 was 9.999999747378752e-05.
    Both casts are Arrow's, shortest round-trip text and correctly rounded parsing: ~0.1 s per
    million cells, for these columns only. A float16 column is written as its float16 shortest
    text (numpy's, as pandas' ``to_csv`` writes it: 0.8, where float32's text of the same value is
    0.7998047), one conversion per distinct value (at most 65,536)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_float16(f.type):
            col = table.column(i)
            values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float16)
            uniq, inverse = np.unique(values, return_inverse=True)
            shortest = np.array([float(str(u)) for u in uniq], dtype=np.float64)[inverse.reshape(-1)]
            nulls = col.is_null().to_numpy(zero_copy_only=False)
            table = table.set_column(i, f.with_type(pa.float64()), pa.array(shortest, pa.float64(), mask=nulls))
        elif pa.types.is_float32(f.type):
            column = table.column(i).cast(pa.float32()).cast(pa.string()).cast(pa.float64())
            table = table.set_column(i, f.with_type(pa.float64()), column)
    return table


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    pairs = [(k.strip(), v) for k, v in pairs]   # names as column_names() has them
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(dup)
    return d


def _read_jsonl(path: str) -> pd.DataFrame:
    """One JSON object a line, as a frame (:func:`_jsonl_records`)."""
    records = list(_jsonl_records(path))
    return _integers_kept(pd.DataFrame.from_records(records), records)


def _jsonl_records(path: str) -> Iterator[dict[str, Any]]:
    """The objects of a JSON Lines file, one a line. A line longer than :data:`MAX_LINE_BYTES`,
    invalid JSON, a line that is not an object, and a key repeated in one object are refused,
    naming the line: a repeated key would otherwise keep its last value silently (a CSV's
    repeated header is refused the same way)."""
    import gzip

    with (gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")) as f:
        for lineno, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(line) > MAX_LINE_BYTES:
                raise UserError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES >> 20} MB "
                                "(a JSON object of that size is not a result; is it the right file?)")
            if lineno == 1:   # a BOM (PowerShell's UTF-8, Notepad): json refused the whole file for it
                _refuse_binary(path, line, "jsonl")
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"), object_pairs_hook=_object_without_duplicates)
            except _DuplicateKey as e:
                raise UserError(f"{path}:{lineno}: key {printable(repr(e.args[0]))} appears twice in one object "
                                "(which value is meant?)") from None
            except UnicodeDecodeError as e:
                # "byte 0" named a position, not a byte; UTF-16 is what Windows PowerShell's `>` writes
                if lineno == 1 and line.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise UserError(f"{path}: it is UTF-16 text (what Windows PowerShell's '>' writes), not UTF-8; "
                                    "save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8)") from None
                raise UserError(f"{path}:{lineno}: not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1}); "
                                "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
            except RecursionError:
                raise UserError(f"{path}:{lineno}: invalid JSON (nested too deeply)") from None
            except ValueError as e:
                if lineno == 1 and line.strip() in (b"[", b"{"):    # json.dump(..., indent=2) of a list or object
                    raise UserError(f"{path}: {_NOT_JSON_LINES}") from None
                if m := _LONG_INTEGER.search(str(e)):
                    # (Python's limit on reading an integer's text, whose advice was to call
                    # sys.set_int_max_str_digits(): no value of a run has that many digits)
                    raise UserError(f"{path}:{lineno}: an integer of {m[2]} digits (more than {m[1]}): no result has "
                                    "that many; is it the right file?") from None
                raise UserError(f"{path}:{lineno}: invalid JSON ({e})") from None
            if lineno == 1 and isinstance(rec, list) and all(isinstance(r, dict) for r in rec):
                raise UserError(f"{path}: {_NOT_JSON_LINES}")
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{lineno}: each line must be a JSON object")
            yield rec


#: json's error on an integer past Python's limit on the digits of int("...") (4,300 by default).
_LONG_INTEGER = re.compile(r"Exceeds the limit \((\d+) digits\) for integer string conversion: value has (\d+) digits")

#: A JSON document (``df.to_json(orient="records")``, ``json.dump(rows, f, indent=2)``) under a
#: JSON Lines name: it was "x.jsonl:1: invalid JSON (Expecting value: line 2 column 1 (char 2))".
_NOT_JSON_LINES = ("it is one JSON document (a list, or an object over several lines), not JSON Lines (one object "
                   "a line); write it with df.to_json(orient='records', lines=True), or one json.dumps(row) a line")


def _jsonl_all_keys(path: str) -> list[str]:
    """Every key of a JSON Lines file's objects, in the order first seen (one pass)."""
    seen: dict[str, None] = {}
    for rec in _jsonl_records(path):
        for k in rec:
            seen.setdefault(k, None)
    return list(seen)


def _jsonl_keys(path: str) -> list[str]:
    """The keys of a JSON Lines file's first object (for :func:`near_miss_note`), or none."""
    records = _jsonl_records(path)
    try:
        return column_names(next(records, {}).keys())
    finally:
        records.close()


def _integers_kept(frame: pd.DataFrame, records: list[dict[str, Any]]) -> pd.DataFrame:
    """``frame`` with each float64 column whose values are all JSON integers or null, or that
    holds an integer float64 cannot (beyond 2**53), as its values as written in an object column.
    pandas makes such a column float64: the seed 9007199254740993 was stored as ...992, and an
    integer run_id beside a null became 1.0, "not a string" (every row quarantined). One pass over
    the records per float64 column."""
    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for c in frame.columns:
        if frame[c].dtype != np.float64:
            continue
        values = [r.get(c) for r in records]
        if (all(v is None or integer(v) for v in values)
                or any(integer(v) and abs(v) >= 2 ** 53 for v in values)):
            frame[c] = pd.Series(values, index=frame.index, dtype=object)
    return frame


def _refuse_duplicate_names(path: str, names: Sequence[str], *, unnamed_ok: bool = False) -> None:
    """A column name twice in one file: pandas would rename the second (``ds_accuracy.1``) and
    ingest would move it to ``extra`` silently, keeping the first. Which one is meant?
    ``unnamed_ok``: columns without a name are not the same column (a CSV's: pandas names each
    ``Unnamed: i``; a spreadsheet leaves ``,,`` at the end of every line)."""
    seen: dict[str, int] = {}
    for i, n in enumerate(names, 1):
        if unnamed_ok and not n:
            continue
        if n in seen:
            raise UserError(f"{path}: column {printable(repr(n))} appears twice in the header (columns {seen[n]} "
                            f"and {i}); rename one")
        seen[n] = i


#: A header line longer than this, or with more columns, is refused before parsing: pandas needs
#: minutes and gigabytes for a 16 MB header (its duplicate-name handling), and a file with no
#: newline at all would be read whole as one header.
MAX_HEADER_BYTES = 1 << 20
MAX_COLUMNS = 20_000


#: What a file whose bytes start so is, and what to do: a gzip download saved as ``x.csv``, an
#: ``.xlsx`` renamed ``.csv`` or a Parquet file named ``.jsonl`` was "line 1 is not UTF-8 text ...
#: (e.g. iconv -f latin1 -t utf-8)", a fix that turns the bytes into garbage.
_MAGIC = ((b"\x1f\x8b", "gzip-compressed", "name it {name}.gz, or decompress it (gunzip)"),
          (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it (zstd -d)"),
          (b"BZh", "bzip2-compressed", "decompress it (bunzip2)"),
          (b"\xfd7zXZ\x00", "xz-compressed", "decompress it (unxz)"),
          (b"\x04\x22\x4d\x18", "lz4-compressed", "decompress it (lz4 -d)"),
          (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "unpack it"),
          (b"PK\x03\x04", "a ZIP archive (an .xlsx spreadsheet is one)", "export the sheet as CSV, or unpack it"),
          (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel .xls spreadsheet", "export the sheet as CSV"),
          (b"PAR1", "a Parquet file", "name it .parquet"))


def _refuse_binary(path: str, head: bytes, fmt: str) -> None:
    """A :class:`UserError` when ``head`` (the first bytes of the text to parse, decompressed for
    a ``.gz``) is the start of a compressed file, an archive, a spreadsheet or a Parquet file: its
    magic bytes, and bytes that are not UTF-8 (a header named ``PAR1,PAR2,...`` is text)."""
    for magic, what, fix in _MAGIC:
        if head.startswith(magic) and not (_is_text(magic) and _is_utf8(head)):
            inside = " (inside its gzip compression)" if path.lower().endswith(".gz") else ""
            fix = ("it was compressed twice: decompress it once (gunzip)" if inside and magic == b"\x1f\x8b"
                   else fix.format(name=os.path.basename(path)))
            raise UserError(f"{path}: it is {what}{inside}, not {fmt.upper()} text; {fix}")


def _is_text(magic: bytes) -> bool:
    """Whether a file's magic bytes could start a text header (``PAR1``: a column named so), so
    that only bytes past them that are not UTF-8 tell the binary file. ZIP's ``PK\\x03\\x04`` and
    gzip's ``\\x1f\\x8b`` cannot: an .xlsx renamed .csv whose first line (up to its first 0x0A
    byte, a few bytes into the header on some clock times) happened to be UTF-8 was parsed as CSV
    text ("no column for run_id ..."), and the test of it failed at some times of day."""
    return all(32 <= b < 127 for b in magic)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_header(path: str, sep: str) -> None:
    """Refuse, in one line, a CSV/TSV whose header line is absurdly long or wide, or names a
    column twice (reads <= 1 MB)."""
    import gzip

    opener = gzip.open if path.lower().endswith(".gz") else open
    # pandas skips blank lines (spaces and, in a CSV, tabs) before the header: so does this check,
    # or a blank first line let a repeated name through (stored as "ds_accuracy.1" in extra)
    blank = b" \r\n" + (b"\t" if sep == "," else b"")
    with opener(path, "rb") as f:
        head = f.readline(MAX_HEADER_BYTES + 1)
        _refuse_binary(path, head, "tsv" if sep == "\t" else "csv")
        head = head.removeprefix(b"\xef\xbb\xbf")
        while head and not head.strip(blank):
            head = f.readline(MAX_HEADER_BYTES + 1)
    if not head:
        raise UserError(f"{path}: the file is empty (no header line): nothing to ingest; an export cut short?")
    if b"\n" not in head and re.match(rb"[^\r]*\r(?!\n)", head):
        # classic Mac line ends (a carriage return alone, no \n: the csv module raised a traceback):
        # pandas reads them, but the whole file is one "line" to the line cap
        if os.path.getsize(path) > MAX_LINE_BYTES:
            raise UserError(f"{path}: lines end in a carriage return alone (classic Mac line ends); "
                            r"convert them to \n (e.g. tr '\r' '\n')")
        head = next((line for line in re.split(rb"\r\n?|\n", head) if line.strip(blank)), b"")
    if len(head) > MAX_HEADER_BYTES:
        raise UserError(f"{path}: the first line is longer than {MAX_HEADER_BYTES >> 20} MB (no header, "
                        "or not a CSV/TSV file)")
    n = head.count(sep.encode()) + 1
    if n > MAX_COLUMNS:
        raise UserError(f"{path}: the header has {n:,} columns (at most {MAX_COLUMNS:,})")
    # as pandas reads it: a BOM dropped, quotes removed, spaces after a separator skipped
    text = head.decode("utf-8").rstrip("\r\n")
    names = column_names(next(csv.reader([text], delimiter=sep, skipinitialspace=True), []))
    if len(names) == 1 and _PREAMBLE.fullmatch(text):    # "looks ';'-separated" misled for "# a; b"
        raise UserError(printable(f"{path}: {_preamble_said(text)}"))
    _refuse_other_separator(path, names, sep)
    _refuse_duplicate_names(path, names, unnamed_ok=True)


#: A first line that is no header: a comment (``# exported by ...``) or the ``sep=,`` line some
#: exports write for Excel. Ingest reads the first line as the column names. (A header whose first
#: column is named ``#``, ``#,run_id,...``, is no comment.)
_PREAMBLE = re.compile(r"# .*|#[^,\t]*|sep=.", re.S)


def _preamble_said(text: str) -> str:
    shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
    return (f"the first line, {shown}, looks like a comment or Excel's 'sep=' line, not the column names: "
            "ingest reads the first line as the header; delete the lines above the column names")


def _preamble(path: str) -> str | None:
    """The first non-blank line of a CSV/TSV when it is a comment or a ``sep=`` line
    (:data:`_PREAMBLE`), or None. Read only when the file failed."""
    import gzip

    try:
        with (gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")) as f:
            for line in iter(lambda: f.readline(MAX_HEADER_BYTES), b""):
                text = line.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").rstrip("\r\n")
                if text.strip():
                    return text if _PREAMBLE.fullmatch(text) else None
    except (OSError, EOFError, zlib.error):
        return None
    return None


def _refuse_other_separator(path: str, names: Sequence[str], sep: str) -> None:
    """A header that is one column holding ``;``, a tab or a comma: the file uses another separator
    (a European spreadsheet's ``;``), and every row would be one value or a field count error.
    No file of results has a single column, so this refuses nothing that could be read."""
    if len(names) != 1:
        return
    for other, what, fix in ((";", "';'-separated", "export it with ',' between values and '.' as the decimal mark"),
                             ("\t", "tab-separated", "name it .tsv"),
                             (",", "','-separated", "name it .csv")):
        if other != sep and other in names[0]:
            shown = printable(repr(names[0][:40])) + ("..." if len(names[0]) > 40 else "")
            raise UserError(f"{path}: the header is one column, {shown}: the file looks {what}; {fix} (ingest reads "
                            "',' in .csv and tabs in .tsv files)")


class RecordScanner:
    """Where each record of a CSV/TSV starts in the file, and the text of its fields as written,
    read with Python's csv module on demand, forward only, for quarantined rows and errors.

    pandas numbers neither: a quoted field with a line break makes its record span two lines. Read
    as pandas reads (``skipinitialspace``: ``a, "b,c"`` is two fields, and the spaces right after
    a separator are not part of a field), so that both split the file into the same records.
    Cost: ~0.4 s per million rows read up to the last one asked for, paid only when a file has a
    rejected row (a clean file is never scanned); 8 bytes a record for the line numbers."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path, self.sep = path, "\t" if fmt == "tsv" else ","
        self._reader: Any = None
        self._file: Any = None
        self.starts = array.array("q")   # data record i (0: the first after the header) -> its first line
        self.parser_lines = 0            # rows read, blank lines included: pandas' "line N" in its errors
        self.end_line = 0                # the last line of the last row read
        self.header_seen = False
        self.broken = False              # the csv module could not read on (then: record numbers)

    def _next(self) -> tuple[int, list[str]] | None:
        """(first line, fields) of the next row of the file (a blank line: no fields), or None."""
        if self.broken:
            return None
        try:
            if self._reader is None:
                import gzip

                csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
                opener: Any = gzip.open if self.path.lower().endswith(".gz") else open
                self._file = opener(self.path, "rt", encoding="utf-8-sig", newline="")
                # as pandas reads it (skipinitialspace): without it `x1, "a<newline>b"` was two
                # records here and one there, and every later line number was off
                self._reader = csv.reader(self._file, delimiter=self.sep, skipinitialspace=True)
            row = next(self._reader, None)
        except (OSError, EOFError, csv.Error, UnicodeDecodeError, zlib.error):
            row = None
        if row is None:   # the end, or a file the csv module cannot read on
            self.close()
            return None
        start, self.end_line = self.end_line + 1, self._reader.line_num
        self.parser_lines += 1
        return start, row

    def close(self) -> None:
        """Stop: the file is closed, and records not read yet have no line."""
        self.broken = True
        if self._file is not None:
            self._file.close()

    def records(self, wanted: Sequence[int]) -> dict[int, tuple[int, list[str] | None]]:
        """Data record index -> (its first line, its fields as written; None for a record the
        scan had passed already), for the ``wanted`` records that the file has."""
        out: dict[int, tuple[int, list[str] | None]] = {}
        todo = set(wanted)
        for i in sorted(todo):
            if i < len(self.starts):
                out[i] = (self.starts[i], None)
        todo -= set(out)
        last = max(todo, default=-1)
        while len(self.starts) <= last:
            got = self._next()
            if got is None:
                break
            start, row = got
            # a blank line, or one of spaces (and tabs, in a CSV): pandas skips it too; a line of
            # spaces before the header was taken as the header, and every _line was one too low
            if not row or (len(row) == 1 and not row[0].strip(" \t")):
                continue
            if not self.header_seen:
                self.header_seen = True
                continue
            i = len(self.starts)
            self.starts.append(start)
            if i in todo:
                out[i] = (start, row)
        return out

    def line_of_parser_line(self, n: int) -> int | None:
        """The first line in the file of pandas' "line ``n``" (it counts blank lines, but not the
        line breaks inside quoted fields), or None when the scan does not reach it."""
        while self.parser_lines < n:
            got = self._next()
            if got is None:
                return None
            if self.parser_lines == n:
                return got[0]
        return None


def _payload(path: str, rec: dict, *, scanned: tuple[int, list[str] | None] | None = None,
             scanner: RecordScanner | None = None, **more: object) -> str:
    """A raw row for the quarantine: the file, where the row is and its values as read.

    CSV/TSV: ``_line``, the record's first line in the file (header: line 1), from ``scanned``
    (:class:`RecordScanner`), with the fields as written where the scan has them; ``_record``
    (1: the first after the header) when the scan could not place it. An empty cell is ``""``:
    only an empty cell is missing in a CSV, and ``"nan"`` would read as the text NaN. Other
    formats: ``_row``, the row's position (0: the first). ``scanner``: the file's, to find
    ``scanned`` for this one row."""
    row = rec.get("_row")
    if scanned is None and scanner is not None and row is not None:
        scanned = scanner.records([int(row)]).get(int(row))
    values = {k: v for k, v in rec.items() if not str(k).startswith("_")}
    where: dict[str, int] = {}
    if row is not None and _format_of(path) in ("csv", "tsv"):
        values = {k: "" if isinstance(v, float) and np.isnan(v) else v for k, v in values.items()}
        if scanned is None:
            where = {"_record": int(row) + 1}
        else:
            where = {"_line": scanned[0]}
            values = _as_written(values, scanned[1])
    elif row is not None:
        where = {"_row": int(row)}
    # _path: the quarantine settles a file's keyless rows when that file is read again; by bare name
    # a/res.csv's rows were cleared by reading b/res.csv under the same source
    return row_json({"_file": os.path.basename(path), "_path": os.path.realpath(path), **where, **more, **values})


def _as_written(values: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """``values`` (as pandas read them) with each field's text as written in the file (spaces
    after a separator kept), where the field is that value: a field ``  "b,c"`` that pandas read
    as ``b,c`` keeps pandas' value."""
    if fields is None or len(fields) != len(values):
        return values
    out = {}
    for (k, v), f in zip(values.items(), fields):
        out[k] = f if isinstance(v, str) and (f == v or f.lstrip(" ") == v or (v == "" and not f.strip(" "))) else v
    return out


def _raw_payloads(frame: pd.DataFrame, path: str, offset: int = 0,
                  scanner: RecordScanner | None = None, **more: object) -> Callable[[np.ndarray], list[str]]:
    """The quarantine payloads of the rows at given positions, built only for rejected rows;
    ``offset``: the frame's first row in the file (a piece of a large file); ``scanner``: the
    file's, shared by its pieces (CSV/TSV); ``more``: keys of every payload (a dataset's part)."""
    def payloads(idx: np.ndarray) -> list[str]:
        recs = frame.iloc[idx].to_dict("records")
        rows = [offset + int(i) for i in idx]
        found = scanner.records(rows) if scanner is not None else {}
        return [_payload(path, {"_row": r, **rec}, scanned=found.get(r), **more) for r, rec in zip(rows, recs)]
    return payloads


class MissingColumns(UserError):
    """Rows that lack a column of :data:`REQUIRED_AFTER_MAPPING` after mapping: ``missing``."""

    def __init__(self, message: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


def _check_required(rows: pd.DataFrame, where: str, mapping: IngestMapping | None) -> None:
    missing = [c for c in REQUIRED_AFTER_MAPPING if c not in rows.columns]
    if missing:
        hint = ADD_MAPPING if mapping is None else ""
        raise MissingColumns(f"{where}: no column for {', '.join(missing)} after mapping{hint}", missing)


def map_long(frame: pd.DataFrame, mapping: IngestMapping | None, *, where: str, source: str,
             tally: PercentTally | None = None) -> pd.DataFrame:
    """Rows of a long export (one row per evaluation) -> raw canonical rows; ``tally`` counts the
    raw values of columns declared in percent (the caller refuses the batch on them)."""
    mapping = mapping or IngestMapping(name="none")
    if mapping.join is not None:
        raise UserError(f"{where}: mapping {mapping.name} is a join mapping; it needs all its files at once")
    missing_src = [c for c in mapping.rename if c not in frame.columns]
    if missing_src:
        raise UserError(f"{where}: mapping {mapping.name} renames column(s) {', '.join(missing_src)} "
                        f"not in the file (columns: {', '.join(map(str, frame.columns))})")
    targets = list(mapping.rename.values())
    clash = sorted({t for t in targets if targets.count(t) > 1} |
                   {t for t in targets if t in frame.columns and t not in mapping.rename and t not in mapping.drop})
    if clash:
        raise UserError(f"{where}: more than one column maps to {', '.join(clash)}")
    canon = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        if col in mapping.drop:   # left out (drop: [model_name] beside rename: {name: model_name} frees the name)
            continue
        target = mapping.rename.get(col, col)
        if target in COLUMN_BY_NAME:
            canon[target] = frame[col]
    extra_cols = [c for c in frame.columns if c not in mapping.rename and c not in COLUMN_BY_NAME]
    rows = finish_rows(canon, frame, mapping, extra_columns=extra_cols, source=source, where=where, tally=tally)
    _check_required(rows, where, mapping if mapping.name != "none" else None)
    return rows


def _squashed(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def near_misses(columns: Sequence[Any], mapping: IngestMapping | None) -> list[tuple[str, str]]:
    """(column, the canonical column it looks like) for each of ``columns`` that the mapping does
    not name and that looks like a canonical column missing from them (``DS_Accuracy``)."""
    import difflib

    rename = mapping.rename if mapping is not None else {}
    present = {rename.get(c, c) for c in map(str, columns)} & set(COLUMN_BY_NAME)
    wanted = [c for c in COLUMN_BY_NAME if c not in present and c not in ("extra", "ingested_at", "schema_version")]
    by_squashed = {_squashed(c): c for c in wanted}
    out = []
    for col in map(str, columns):
        if col in rename or col in COLUMN_BY_NAME or col.startswith("_"):
            continue
        guess = by_squashed.get(_squashed(col)) or next(iter(difflib.get_close_matches(col.lower(), wanted, 1, 0.85)), None)
        if guess is not None:
            out.append((col, guess))
    return out


def near_miss_note(where: str, columns: Sequence[Any], mapping: IngestMapping | None) -> list[str]:
    """A line naming the file's columns that go to ``extra`` but look like a canonical column
    the file lacks (``DS_Accuracy``, ``model name``, ``param_cout``): a typo there stores every
    row without that column, silently. Empty when there is none. Costs a string comparison per
    column pair (~30 x columns)."""
    extra = "rest" if mapping is None else mapping.extra     # where an unmapped column goes
    hits: dict[bool, list[str]] = {True: [], False: []}       # kept in extra or not stored at all
    for col, guess in near_misses(columns, mapping):
        kept = extra == "rest" or (not isinstance(extra, str) and col in extra)
        hits[kept].append(f"{col!r} (did you mean {guess!r}?)")
    return [printable(f"{where}: column(s) {', '.join(cols)} are not meta-study columns and were "
                      f"{'kept in extra' if kept else 'not stored (the mapping keeps no such extra column)'}; "
                      "rename them in the file or a mapping (docs/ingest.md) to use them")
            for kept, cols in hits.items() if cols]


def _match_table(spec: TableSpec, paths: Sequence[str], where: str, special: Mapping[str, str]) -> str:
    hits = [p for p in paths if fnmatch.fnmatch(os.path.basename(p), spec.file)]
    if not hits:
        passed = [(p, why) for p, why in special.items() if fnmatch.fnmatch(os.path.basename(p), spec.file)]
        if passed:
            raise UserError(f"{where}: join table {spec.file!r} ({spec.task}) is {passed[0][0]}, which is "
                            f"{passed[0][1]}: ingest reads regular files only")
        raise UserError(f"{where}: join table {spec.file!r} ({spec.task}) matched no input file{_beside(spec, paths)}")
    if len(hits) > 1:
        raise UserError(f"{where}: join table {spec.file!r} matched several files: {', '.join(hits)}")
    return hits[0]


_BESIDE = "is beside the input, not given"


def _beside(spec: TableSpec, paths: Sequence[str]) -> str:
    """A clause naming a file of the table that lies beside the input files, unread (one file of
    the join given, ``results-imagenet.csv``, not its directory), or ``""``. Lists the input
    files' directories, only when a table matched no file."""
    for d in dict.fromkeys(os.path.dirname(p) for p in paths):
        try:
            names = sorted(os.listdir(d or "."))
        except OSError:
            continue
        hit = next((n for n in names if fnmatch.fnmatch(n, spec.file) and os.path.isfile(os.path.join(d, n))), None)
        if hit is not None:
            return (f"; {os.path.join(d, hit)} {_BESIDE}: a join reads every table's file in "
                    f"one ingest, so give their directory ({d or '.'}) or all of them")
    return ""


def map_join(frames: dict[str, pd.DataFrame], mapping: IngestMapping, *, where: str, source: str,
             special: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, list[str], pd.DataFrame, list[str]]:
    """Join wide per-task files on key columns into long canonical rows.

    Args:
        special: directory entries passed over as not regular files (path -> what it is): a
            table that names one is refused saying what it is.

    Returns:
        (rows, raw payload per row, rejected rows, files the mapping did not use).

    Raises:
        UserError: a table matches no file or several, lacks a column, or a column declared in
            percent holds fractions (:meth:`PercentTally.refuse_fractions`).
    """
    join: JoinSpec = mapping.join  # type: ignore[assignment]
    paths = list(frames)
    up_path, ds_paths = _join_files(join, frames, where, special or {})
    on = list(join.on)
    frames = {p: (_join_keys(f, on) if p in (up_path, *ds_paths) else f) for p, f in frames.items()}
    rejected: list[dict] = []
    up_rows = _unique_keys(frames[up_path], on, up_path, source, rejected, scanner_of(up_path))
    up = _Upstream(path=up_path, task=join.upstream.task, rows=up_rows, accuracy=up_rows[join.upstream.accuracy],
                   model_cols={raw: canon for raw, canon in mapping.rename.items() if raw in up_rows.columns})
    parts, raws, tally = [], [], PercentTally()
    for spec, p in zip(join.downstream, ds_paths):
        scanner = scanner_of(p)
        d = _unique_keys(frames[p], on, p, source, rejected, scanner)
        # a file that serves several tables: each row's payload names its table, or the rejected
        # rows of two tasks of one model were one quarantine entry (one payload, one hash)
        shared = ds_paths.count(p) > 1 or p == up_path
        rows, payloads = _join_downstream(d, p, spec, up, on, mapping, rejected, source=source, where=where,
                                          tally=tally, scanner=scanner, table=spec.task if shared else None)
        parts.append(rows)
        raws.extend(payloads)
    tally.refuse_fractions()
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


def join_tables(join: JoinSpec, paths: Sequence[str], where: str,
                special: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """The files the join's tables name, by file name only (upstream, then one per downstream
    table): a :class:`UserError` when a table matches no file or several. The other files are
    not read at all (a broken ``notes.csv`` beside the tables failed the join)."""
    up_path = _match_table(join.upstream, paths, where, special or {})
    return up_path, [_match_table(s, paths, where, special or {}) for s in join.downstream]


def _join_files(join: JoinSpec, frames: Mapping[str, pd.DataFrame], where: str,
                special: Mapping[str, str]) -> tuple[str, list[str]]:
    """The files the join's tables match (upstream, then one per downstream table); a
    :class:`UserError` if one of them lacks a key or accuracy column."""
    up_path, ds_paths = join_tables(join, list(frames), where, special)
    # One wide file may serve several tables (each task a column of it): every table's accuracy
    # column is needed, not only the first one's, or a wrong name failed later as a KeyError.
    need: dict[str, list[str]] = {}
    for spec, p in [(join.upstream, up_path), *zip(join.downstream, ds_paths)]:
        cols = need.setdefault(p, list(join.on))
        if spec.accuracy not in cols:
            cols.append(spec.accuracy)
    for p, cols in need.items():
        missing = [c for c in cols if c not in frames[p].columns]
        if missing:
            have = [str(c) for c in frames[p].columns]
            shown = ", ".join(have[:12]) + (f", ... ({len(have)} in all)" if len(have) > 12 else "")
            raise UserError(printable(f"{p}: no column(s) {', '.join(map(repr, missing))} needed by the join "
                                      f"(columns: {shown})"))
    return up_path, ds_paths


#: A number as text in a join key: no leading zero before digits ("007" stays text, an id), no
#: thousands separators, no nan or inf.
_KEY_NUMBER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")


def _key_value(v: Any) -> Any:
    """One join key value as the text that equal keys share, or None (missing): a string without
    spaces at either end (as names are stored), a number in its shortest form, integral ones as
    integers (``224``, ``224.0`` and the Parquet integer 224 are all ``"224"``; ``0.50`` is
    ``"0.5"``). Exact (``Decimal``), so distinct numbers never meet."""
    from decimal import Decimal, InvalidOperation

    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        d = Decimal(repr(float(v)))          # the float's shortest text: 0.1 is 0.1, not 0.1000000000000000055...
    else:
        text = str(v).strip()
        if not text:                         # a cell of spaces, JSON's "": no value
            return None
        if not _KEY_NUMBER.fullmatch(text):
            return text
        try:
            d = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            return text
    if not d.is_finite():
        return str(v).strip()
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _join_keys(frame: pd.DataFrame, on: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its key columns as :func:`_key_value` text. The files of a join come in any
    mix of formats: a Parquet integer column beside a CSV's text failed pandas' merge (``You are
    trying to merge on str and int64 columns``), ``224.0`` never met ``224``, and ``"model_03 "``
    never met ``model_03`` (its row was quarantined as without an upstream row). The run_id
    template and ``extra`` read these values too, so one run has one id in every table."""
    f = frame.copy()
    for c in on:
        f[c] = pd.Series([_key_value(v) for v in f[c].tolist()], index=f.index, dtype=object)
    return f


def scanner_of(path: str) -> RecordScanner | None:
    """A :class:`RecordScanner` for a CSV/TSV file, None for other formats."""
    fmt = _format_of(path)
    return RecordScanner(path, fmt) if fmt in ("csv", "tsv") and not os.path.isdir(path) else None


def _unique_keys(frame: pd.DataFrame, on: list[str], path: str, source: str, rejected: list[dict],
                 scanner: RecordScanner | None = None) -> pd.DataFrame:
    """``frame`` with its row numbers (``_row``), without the rows whose key lacks a value or
    repeats: those go to ``rejected``, every copy of the key. (A row without a key value met every
    other table's row without one: stored as run ``@224`` with no model name.)"""
    f = frame.copy()
    f["_row"] = range(len(f))
    empty = f[on].isna().any(axis=1)
    for rec in f[empty].to_dict("records"):
        lacking = ", ".join(c for c in on if pd.isna(rec.get(c)))
        rejected.append({"source": source, "run_id": None,
                         "reason": f"missing join key: no {lacking} in {os.path.basename(path)} ({_key_text(rec, on)})",
                         "raw": _payload(path, rec, scanner=scanner)})
    f = f[~empty]
    dup = f.duplicated(on, keep=False)
    for rec in f[dup].to_dict("records"):
        rejected.append({"source": source, "run_id": None,
                         "reason": f"duplicate join key in {os.path.basename(path)}: {_key_text(rec, on)}",
                         "raw": _payload(path, rec, scanner=scanner)})
    return f[~dup]


def _join_downstream(d: pd.DataFrame, path: str, spec: TableSpec, up: _Upstream, on: list[str],
                     mapping: IngestMapping, rejected: list[dict], *, source: str, where: str,
                     tally: PercentTally | None = None, scanner: RecordScanner | None = None,
                     table: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One downstream table joined to the upstream one: canonical rows and their raw payloads.
    Rows with no upstream row go to ``rejected`` (missing US metric). ``table``: the downstream
    task, named in every payload (a file that serves several tables)."""
    named = {"_table": table} if table is not None else {}
    m = d.merge(up.rows[on].assign(_us_accuracy=up.accuracy.to_numpy(), **{
        f"_m_{raw}": up.rows[raw].to_numpy() for raw in up.model_cols}), on=on, how="left", indicator=True)
    orphan = m["_merge"] == "left_only"
    for rec in d.loc[d.index[orphan.to_numpy()]].to_dict("records"):
        rejected.append({"source": source, "run_id": None,
                         "reason": f"missing US metric: no row for {_key_text(rec, on)} in "
                                   f"{os.path.basename(up.path)} (downstream {spec.task})",
                         "raw": _payload(path, rec, scanner=scanner, **named)})
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
    # a renamed column that only the downstream file has (its shots, its data_fraction) is the
    # downstream row's own: it was neither stored nor kept in extra (`shots: missing`, or lost)
    for raw, canon_col in mapping.rename.items():
        if (raw in d_ok.columns and raw not in up.model_cols and raw != spec.accuracy and canon_col not in canon.columns
                and canon_col not in ("us_accuracy", "ds_accuracy", "us_task", "ds_task")):
            canon[canon_col] = d_ok[raw].to_numpy()
    index = pandas_index_column(d, mapping)     # df.to_csv(path)'s row numbers: no value of a run
    extra_cols = [c for c in d_ok.columns if not c.startswith("_") and c != spec.accuracy
                  and c not in mapping.rename and c not in index]
    rows = finish_rows(canon, d_ok, mapping, extra_columns=extra_cols, source=source, where=where, tally=tally)
    return rows, [_payload(path, rec, scanner=scanner, _upstream_file=os.path.basename(up.path), **named)
                  for rec in d_ok.to_dict("records")]


def _key_text(rec: dict, on: Sequence[str]) -> str:
    return ", ".join(f"{k}={rec.get(k)}" for k in on)


def files_label(paths: Sequence[str]) -> str:
    """How a summary line names files: the one path, or their directory and how many."""
    if len(paths) == 1:
        return paths[0]
    try:
        common = os.path.commonpath(paths)
    except ValueError:     # absolute and relative paths mixed (`/data/up.csv down.csv`): a traceback
        common = os.path.commonpath([os.path.abspath(q) for q in paths])
    return f"{common}/ ({len(paths)} files)" if common else f"{len(paths)} files"


@dataclass
class RefusedFiles:
    """Input files refused before reading, in one summary line for them all: their columns
    (a CSV/TSV header, a Parquet footer) do not fit the mapping, or without one lack meta-study's,
    the same way in each (:func:`refuse_unfit`). ``error``: what is wrong, without the label."""

    paths: list[str]
    error: str
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return files_label(self.paths)

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:  # noqa: ARG002
        raise UserError(f"{self.label}: {self.error}")


@dataclass
class FileSource:
    """One or more export files ingested with one mapping."""

    paths: list[str]
    mapping: IngestMapping | None
    source_name: str | None = None
    drop_missing: bool = False          # also remove stored runs of its sources that the file lacks
    #: lines for the user (skipped directory entries): the pipeline shows them with the source's
    #: summary line before reading anything, so whether or not the source fails
    notes: tuple[str, ...] = ()
    special: Mapping[str, str] = field(default_factory=dict)   # skipped entries: path -> what it is
    #: shared by the file sources of one call: the store's file states as they were before the
    #: call committed anything (:func:`_peer_states`), read once, on first need
    peers: dict[str, Any] = field(default_factory=dict)
    #: named by an entry of a --sources-file: a line that says to add or change a mapping names the
    #: entry's ``mapping:`` (there is no --mapping to give it)
    in_sources_file: bool = False

    @property
    def label(self) -> str:
        return files_label(self.paths)

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        """One batch per file (a join: one for all its files). Each holds every row of the runs it
        contains (``replace_runs``): the pipeline removes that source's stored rows of those runs
        that the file no longer has (a key value corrected in the file, say ``shots`` 1 -> 10)."""
        try:
            yield from self._batches(store, progress)
        except MissingColumns as e:
            # found while reading (a dataset directory, a header read only then): worded for its origin
            raise (MissingColumns(said_for_entry(str(e)), e.missing) if self.in_sources_file else e) from None

    def _batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        if self.mapping is not None and self.mapping.join is not None:
            source = self.source_name or self.mapping.source or self.mapping.name
            try:
                up, ds = join_tables(self.mapping.join, self.paths, self.mapping.name, self.special)
            except UserError as e:
                # a long table given a join mapping (timm_us_ds.csv with timm_wide.yaml): the
                # shipped mapping that fits its columns, as a file without a fitting mapping is told
                use = self._fitting_mappings()
                if use and _BESIDE in str(e):     # two ways out: the join's other files, or another mapping
                    use = "; or " + use.removeprefix("; ")
                raise UserError(f"{e}{use}") from None
            used = list(dict.fromkeys([up, *ds]))     # one wide file may serve several tables
            # the files no table names are neither read nor hashed: their state is no part of the rows
            name, seen, earlier = _file_state(store, source, used, self.mapping, self.drop_missing,
                                              rows_source=source, peers=self._peers(store))
            if seen is None:
                yield SourceBatch(rows=pd.DataFrame(), stats={"unchanged_files": len(self.paths)})
                return
            batch = self._join_batch(source, progress, {name: seen}, used)
            batch.earlier_inputs = earlier
            yield batch
            return
        for i, p in enumerate(self.paths):
            progress(f"reading {os.path.basename(p)}", i, len(self.paths))
            source = self.source_name or file_key(p, self.mapping)
            # a key of the file's own name (no source given): another file of that name is another table
            own_key = self.source_name is None and (self.mapping is None or self.mapping.source is None)
            rows_source = None if own_key else self.source_name or self.mapping.source  # type: ignore[union-attr]
            stamp = _stamp(p)     # before the hash that the state records
            name, seen, earlier = _file_state(store, source, [p], self.mapping, self.drop_missing, own_key=own_key,
                                              rows_source=rows_source,
                                              peers=self._peers(store) if rows_source is not None else None)
            if seen is None:  # unchanged since its last ingest into this store: nothing to read
                yield SourceBatch(rows=pd.DataFrame(), stats={"unchanged_files": 1})
            else:
                if own_key:
                    self._refuse_stored_elsewhere(store, p, name, seen)
                # built in a helper so that this generator holds no reference to the frames while the
                # pipeline commits (they are half of an ingest's peak memory)
                yield self._long_batch(p, state={name: seen}, earlier=earlier, stamp=stamp)
        progress("read", len(self.paths), len(self.paths))

    def _fitting_mappings(self) -> str:
        """``"; use --mapping X (...)"``: the shipped mappings (other than this one) that fit the
        input files by their columns (:func:`_shipped_fits`), or ``""``. Only when the join failed."""
        headers = {p: h for p in self.paths if (h := _header(p)) is not None}
        if not headers:
            return ""
        return printable(_use_mappings(_shipped_fits(headers, self.mapping, {}), self.paths, self.paths,
                                       self.in_sources_file))

    def _peers(self, store: Store) -> dict[str, list[tuple[str, int | None]]]:
        if "states" not in self.peers:
            self.peers["states"] = _peer_states(store)
        return self.peers["states"]

    def _refuse_stored_elsewhere(self, store: Store, p: str, name: str, seen: pa.Table) -> None:
        """A :class:`UserError` when the runs of file ``p`` (about to be read as the file state
        ``name``, whose source is the file's name or its ``source`` column) are stored under
        another source by an earlier call: from a file of the same content and mapping (a copy,
        ``results (1).csv``, or the file renamed), or from this very path when its rows named
        another source (a ``source`` column added, removed or changed since). Ingested, every
        such run was stored twice, once under each source, with exit code 0 and no word; in one
        call, copies are refused before anything is stored (:func:`_refuse_copies`).

        A run counts only when the store still holds it under the other source (its rows deleted
        since, nothing is refused). Cost: the store's file states, read once per call (on the
        first file read), and, only for a file that matches one, its run ids and the other
        source's stored run ids."""
        try:
            fp = json.loads(seen.column("fingerprint")[0].as_py())
            ((_, sha),) = fp["files"].items()
        except (KeyError, TypeError, ValueError, IndexError, pa.ArrowException):
            return
        if "all" not in self.peers:
            self.peers["all"] = _all_file_states(store)
        real = os.path.realpath(p)
        for other, (old_path, old_sha, mapping_fp, theirs) in self.peers["all"].items():
            if other == name:
                continue
            copy = old_sha == sha and mapping_fp == fp.get("mapping")
            if not copy and os.path.realpath(old_path) != real:
                continue
            stored = set(store.read(filters={"source": theirs}, columns=["run_id"]).column("run_id").to_pylist())
            runs = sorted(r for s, r in _runs_of(p, self.mapping, None) if s != theirs and r in stored)
            if not runs:
                continue
            more = f" and {len(runs) - 1} more" if len(runs) > 1 else ""
            mine = declared_source(p, self.mapping) or source_stem(p)
            what = (f"the same content as {old_path}, whose runs are stored as source {theirs!r} (a copy?)"
                    if copy else f"its runs are stored as source {theirs!r}, read from this file when its rows said so; "
                    f"they now say source {mine!r}")
            other_runs = "" if copy else f"; if they are other runs under the same ids, pass --source {mine!r}"
            raise UserError(printable(
                f"{p}: {what}, so run {runs[0]!r}{more} would be stored twice, as {theirs!r} and as {mine!r}. Nothing "
                f"was stored: to keep them as {theirs!r}, pass --source {theirs!r}; to store them as {mine!r}, delete "
                f"them from source {theirs!r} first (Store(uri).commit(delete_runs=...), docs/ingest.md){other_runs}"))

    def _join_batch(self, source: str, progress: Progress, state: dict, used: Sequence[str]) -> SourceBatch:
        """The join of the files ``used`` (those its tables name); every other input file is
        skipped, and the batch names it (:attr:`SourceBatch.skipped`)."""
        assert self.mapping is not None
        frames = {}
        for i, p in enumerate(used):
            progress(f"reading {os.path.basename(p)}", i, len(used))
            frames[p] = read_export(p)
        rows, raws, rejected, _ = map_join(frames, self.mapping, where=self.mapping.name, source=source,
                                           special=self.special)
        progress("joined", len(used), len(used))
        unused = [p for p in self.paths if p not in frames]
        why = f"no table of mapping {self.mapping.name!r} names them"
        return SourceBatch(rows=rows, raw=raws, rejected=rejected, state=state, stats={"skipped_files": len(unused)},
                           replace_runs=True, drop_missing=self.drop_missing,
                           skipped={self._shown(p): why for p in unused})

    def _shown(self, path: str) -> str:
        """``path`` as the summary line names it: relative to the directory :attr:`label` names."""
        try:
            common = os.path.commonpath(self.paths)
            return os.path.relpath(path, common) if len(self.paths) > 1 else path
        except ValueError:     # absolute and relative paths mixed
            return path

    def _long_batch(self, p: str, state: dict, earlier: Callable[[], tuple[str, ...]] | None = None,
                    stamp: tuple[int, int] | None = None) -> SourceBatch:
        """The file as one batch, read in pieces when it is large (committed once).
        A column declared in percent that holds fractions refuses the file (after its last piece,
        inside the commit: nothing is stored), and so does a file whose size or time of change is
        no longer ``stamp`` (:func:`_refuse_changed`)."""
        fmt = _format_of(p)
        header: list[str] | None = None
        parts = dataset_parts(p)
        if parts is not None:      # a dataset directory, read part after part, in pieces
            first = next((q for q in parts if os.path.getsize(q)), parts[0])
            fmt = _part_format(os.path.basename(first))
            header = _reading(first, fmt, lambda: _parquet_columns(first)[1] if fmt == "parquet"
                              else _jsonl_keys(first) if fmt == "jsonl" else _csv_columns(first, fmt))
            header = [*header, *partition_values(p, first)]
        elif fmt in ("csv", "tsv", "jsonl") and _text_bytes(p) > CHUNK_ROWS * 60:   # ~60 B/row or more
            header = _reading(p, fmt, lambda: _csv_columns(p, fmt) if fmt != "jsonl" else _jsonl_keys(p))
        elif fmt == "parquet":
            n, names = _reading(p, fmt, lambda: _parquet_columns(p))
            header = names if n > CHUNK_ROWS else None
        if header is not None:
            index: tuple[str, ...] = ()
            candidates = index_candidate(header, self.mapping)
            if candidates:
                index = _reading(p, fmt, lambda: _index_in_every_piece(p, candidates))
            return SourceBatch(rows=pd.DataFrame(), state=state, chunks=self._pieces(p, stamp, index),
                               replace_runs=True, drop_missing=self.drop_missing, earlier_inputs=earlier,
                               notes=near_miss_note(p, header, self.mapping) + _index_note(p, index))
        tally = PercentTally()
        try:
            frame = read_export(p)
        except UserError:
            _refuse_changed(p, stamp)    # a file still being written: that, rather than its last line cut short
            raise
        _refuse_changed(p, stamp)
        index = pandas_index_column(frame, self.mapping)
        rows, raw = self._mapped(p, 0, frame, tally, index=index)
        tally.refuse_fractions()
        return SourceBatch(rows=rows, raw=raw, state=state, replace_runs=True, drop_missing=self.drop_missing,
                           earlier_inputs=earlier,
                           notes=near_miss_note(p, frame.columns, self.mapping) + _index_note(p, index))

    def _pieces(self, p: str, stamp: tuple[int, int] | None = None, index: tuple[str, ...] = (),
                ) -> Iterator[tuple[pd.DataFrame, Callable[[np.ndarray], list[str]]]]:
        tally = PercentTally()
        parts = dataset_parts(p)
        if parts is None:
            scanner = scanner_of(p)
            try:
                for start, frame in read_export_chunks(p):
                    yield self._mapped(p, start, frame, tally, scanner, index=index)
            except UserError:
                _refuse_changed(p, stamp)    # a file still being written: that, rather than its last line cut short
                raise
        else:
            # each part's rows, with their payloads' place in the part (_file: the dataset, _part)
            scanners: dict[str, RecordScanner | None] = {}
            n = 0
            for part, start, frame in _part_pieces(p, parts, CHUNK_ROWS):
                scanner = scanners.setdefault(part, scanner_of(part))
                n += len(frame)
                yield self._mapped(part, start, frame, tally, scanner, index=index, dataset=p)
            if n == 0:
                raise _no_rows(p, _format_of(p))
        _refuse_changed(p, stamp)
        tally.refuse_fractions()

    def _mapped(self, p: str, start: int, frame: pd.DataFrame, tally: PercentTally,
                scanner: RecordScanner | None = None, *, index: tuple[str, ...] = (), dataset: str | None = None,
                ) -> tuple[pd.DataFrame, Callable[[np.ndarray], list[str]]]:
        """The piece's canonical rows and the payloads of its rows; ``index``: the pandas index
        columns to leave out of the rows (its payloads keep every cell as written); ``dataset``: the
        dataset directory ``p`` is a part of (its name is the rows' source and the payloads' file)."""
        mapped = frame.drop(columns=[c for c in index if c in frame.columns]) if index else frame
        rows = map_long(mapped, self.mapping, where=p, source=source_stem(dataset or p), tally=tally)
        if self.source_name:
            rows["source"] = self.source_name
        # _part: its path in the dataset (pyarrow names the parts of every partition alike)
        more = {"_file": os.path.basename(dataset), "_part": os.path.relpath(p, dataset)} if dataset else {}
        return rows, _raw_payloads(frame, p, offset=start, scanner=scanner or scanner_of(p), **more)


#: The name pandas gives a CSV's first column when the header leaves it unnamed: ``df.to_csv(path)``
#: without ``index=False`` writes the frame's row numbers there. Read back and written again the
#: same way, the file leads with ``Unnamed: 0.1, Unnamed: 0`` (pandas suffixes a repeated name),
#: a third time ``Unnamed: 0.2, Unnamed: 0.1, Unnamed: 0``: :data:`_PANDAS_INDEX_RE`.
PANDAS_INDEX = "Unnamed: 0"
_PANDAS_INDEX_RE = re.compile(r"Unnamed: 0(\.[1-9][0-9]*)?")
_ROW_NUMBER = re.compile(r"0|[1-9][0-9]*")


def _named_by(mapping: IngestMapping | None, col: str) -> bool:
    """The mapping names the column (``rename: {"Unnamed: 0": seed}``, a ``run_id`` template, a join
    key or an ``extra:`` list keeps it as the user said)."""
    return mapping is not None and (col in mapping.rename or col in (mapping.run_id or "")
                                    or (not isinstance(mapping.extra, str) and col in mapping.extra)
                                    or (mapping.join is not None and col in mapping.join.on))


def index_candidate(columns: Sequence[Any], mapping: IngestMapping | None) -> tuple[str, ...]:
    """The columns ``columns`` leads with that pandas names an index it wrote (:data:`PANDAS_INDEX`,
    or ``Unnamed: 0.1`` and so on of a file exported again), less any the mapping names; ``()``:
    none. Only the leading run: an ``Unnamed: 0`` further right is a column left unnamed."""
    out = []
    for c in columns:
        if not _PANDAS_INDEX_RE.fullmatch(str(c)):
            break
        out.append(str(c))
    return tuple(c for c in out if not _named_by(mapping, c))


def _row_numbers(values: pd.Series) -> bool:
    """Whether every value is a row number, an integer >= 0 (text without a leading zero)."""
    if not len(values) or values.isna().any():
        return False
    if pd.api.types.is_bool_dtype(values.dtype):
        return False
    if pd.api.types.is_integer_dtype(values.dtype):
        return bool((values >= 0).all())
    return all((isinstance(v, str) and _ROW_NUMBER.fullmatch(v) is not None)
               or (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0)
               for v in values.tolist())


def pandas_index_column(frame: pd.DataFrame, mapping: IngestMapping | None) -> tuple[str, ...]:
    """The columns that are an index pandas wrote (``df.to_csv(path)`` without ``index=False``,
    once per export: :func:`index_candidate`) whose every value is a row number; ``()``: none. They
    are no value of a run: they were stored in every row's extra, and differed between two exports
    of the same rows (a filtered or sorted frame: every row "updated")."""
    return tuple(c for c in index_candidate(list(frame.columns), mapping) if _row_numbers(frame[c]))


def _index_in_every_piece(path: str, columns: Sequence[str]) -> tuple[str, ...]:
    """:func:`pandas_index_column` over a large file's pieces, read before its rows so that every
    piece leaves a column out, or none does (one read of the file). A piece without the column (a
    dataset's part written with ``index=False``: a KeyError traceback) says nothing against it."""
    keep = list(columns)
    for _, frame in read_export_chunks(path):
        keep = [c for c in keep if c not in frame.columns or frame[c].isna().all() or _row_numbers(frame[c])]
        if not keep:
            break
    return tuple(keep)


#: What a gzip file's text may be, at most, per byte: results CSVs (task names, protocols and
#: model names repeated on every line) compress 5-20x, so a 29 MB .csv.gz, judged by its size,
#: was read whole: ~300 MB of text, several GB as pandas strings. Reading a smaller file in
#: pieces costs nothing (the pieces are one file, one commit).
GZIP_RATIO = 20


def _text_bytes(path: str) -> int:
    """An upper estimate of a CSV/TSV/JSONL file's text in bytes: its size, times
    :data:`GZIP_RATIO` when gzip-compressed. One ``stat``."""
    size = os.path.getsize(path)
    return size * GZIP_RATIO if path.lower().endswith(".gz") else size


def _index_note(path: str, index: tuple[str, ...]) -> list[str]:
    if not index:
        return []
    if len(index) == 1:
        return [f"{path}: its first column, unnamed and holding row numbers, is the index pandas writes "
                "(to_csv without index=False): not stored"]
    return [f"{path}: its first {len(index)} columns ({', '.join(index)}), unnamed and holding row numbers, are "
            "the index pandas writes, once per export (to_csv without index=False): not stored"]


def _stamp(path: str) -> tuple[int, int]:
    """A file's size and time of last change (ns); a dataset directory's: its parts' total size
    and a hash of each part's name, size and time of change (a part added, removed or rewritten)."""
    parts = dataset_parts(path)
    if parts is None:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    stats = [(q, os.stat(q)) for q in parts]
    return sum(st.st_size for _, st in stats), hash(tuple((q, st.st_size, st.st_mtime_ns) for q, st in stats))


def _sha256(path: str) -> str:
    """The sha256 of a file's content; a dataset directory's: of each part's name and content."""
    import hashlib

    h = hashlib.sha256()
    parts = dataset_parts(path)
    for q in ([path] if parts is None else parts):
        if parts is not None:
            h.update(os.path.relpath(q, path).encode() + b"\0")   # a Hive part's: its partition directories
        with open(q, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _refuse_changed(path: str, stamp: tuple[int, int] | None) -> None:
    """A :class:`UserError` when ``path`` changed since ``stamp`` was taken, before its hash: an
    export still being written. Its rows (a half-written last line among them) were stored under
    the state of the content hashed before, so that the file, back at that content, was
    "unchanged" and never read again. Costs one ``stat``."""
    if stamp is not None and _stamp(path) != stamp:
        raise UserError(f"{path}: changed while it was read (still being written?); nothing of it was stored: "
                        "ingest it again once it is complete")


#: Bump when the way a file becomes rows changes, so that unchanged files are read again.
#: 2: nested ``extra`` values as JSON, non-ASCII digits refused, stale rows of a file's runs removed.
#: 3: a CSV row with more fields than the header refused (it was stored shifted by a column), a
#: file without rows refused, a percent unit on fractions refused.
#: 4: strings and column names without spaces at either end, a lone fraction among a task's
#: percents quarantined.
#: 5: join keys compared as normalised text (224.0 is 224, spaces at either end dropped), text
#: NaN / NA in an optional integer column stored as null, strings in Unicode's composed form (NFC).
#: 6: pandas' unnamed index (``__index_level_0__``) of a Parquet file no longer stored in extra.
#: 7: pandas' index of a CSV (an unnamed first column of row numbers) no longer stored in extra.
#: 8: a count in thousands rounded (1.001 thousand is 1001); a large file's day/month order,
#: per-task percent decision and task spelling decided over the whole file, not per piece.
#: 9: a CSV/TSV row with fewer fields than the header refused (its missing values were stored empty).
#: 10: a Parquet float16 value as its own shortest text (0.8), not float32's (0.7998047).
#: 11: a join's row without a key value quarantined (it met other rows without one), and a renamed
#: column that only a downstream file has stored (it was dropped); a join's state hashes only the
#: files its tables name.
FILE_STATE_VERSION = 11


def _file_state(store: Store, source: str, paths: Sequence[str], mapping: IngestMapping | None,
                drop_missing: bool = False, *, own_key: bool = False, rows_source: str | None = None,
                peers: Mapping[str, Sequence[tuple[str, int | None]]] | None = None,
                ) -> tuple[str, pa.Table | None, Callable[[], tuple[str, ...]] | None]:
    """(state name, the state to commit with the file's rows), or (name, None) when the store's
    state says that this very file, with the same content, mapping and schema, was the last one
    ingested as ``source``: re-ingesting it would change nothing, so it is not even read.

    The content is identified by its sha256 (~0.1 s for 100 MB), not by its mtime, so a copy or a
    touched file is still recognized and an edited one never is. The state is per source, so a
    different file ingested as the same source in between (which replaced these rows) makes the
    next ingest of this one read it again. ``store check --repair`` drops every state when data
    was lost, so that the next ingest restores it.

    ``own_key``: the source is the file's name (:func:`file_key`, no ``source`` given), and a file
    of that name at another path, with other content, is another table that would replace this
    one's rows: refused (:func:`_refuse_other_file`).

    ``rows_source``: the ``source`` of every row, when it is given (``--source``, ``source:``):
    recorded in the state, so that another file of that source is found (:func:`_earlier_inputs`).
    ``peers``: the file states of each such source before this call (:func:`_peer_states`): an
    unchanged file is read again when another file of its source was ingested after it, since that
    file replaced the rows of the runs they share (this one's, which its ingest restores).
    The third value says, when called, which earlier inputs of the source are not these files:
    the pipeline calls it only when the ingest removes stale rows (they may be those inputs'
    rows), to say so in the summary line."""
    from ..schema import SCHEMA_VERSION

    files = {os.path.abspath(path): _sha256(path) for path in paths}
    fp = json.dumps({"files": files, "schema": SCHEMA_VERSION,
                     "v": FILE_STATE_VERSION, "mapping": mapping.fingerprint() if mapping is not None else None,
                     **({"drop_missing": True} if drop_missing else {}),
                     **({"source": rows_source} if rows_source is not None else {})}, sort_keys=True)
    name = f"files/{source}"
    # when, beside what: which of a source's files was ingested last (_earlier_inputs); only the
    # fingerprint says whether a file is unchanged
    table = pa.table({"fingerprint": [fp], "ingested_ns": pa.array([time.time_ns()], pa.int64())})
    old = store.read_state(name) if store.exists() else None
    if old is not None and "fingerprint" in old.column_names and old.column("fingerprint").to_pylist() == [fp]:
        mine = _state_files(old)[2]
        overtaken = rows_source is not None and peers is not None and any(
            other != name and at is not None and (mine is None or at > mine) for other, at in peers.get(rows_source, ()))
        if not overtaken:
            return name, None, None
    if own_key and old is not None and len(paths) == 1:
        _refuse_other_file(paths[0], files, old, source)
    return name, table, lambda: _earlier_inputs(store, name, old, files, rows_source)


def _state_files(state: pa.Table | None) -> tuple[dict[str, str], Any, int | None]:
    """(path -> sha256, the rows' source or None, when it was ingested or None) of a file state;
    empty for any other table (a state written before these were recorded has no source or time)."""
    if state is None or "fingerprint" not in state.column_names or not state.num_rows:
        return {}, None, None
    at = state.column("ingested_ns")[0].as_py() if "ingested_ns" in state.column_names else None
    try:
        fp = json.loads(state.column("fingerprint")[0].as_py())
    except (TypeError, ValueError, pa.ArrowException):
        return {}, None, at
    if not isinstance(fp, dict):
        return {}, None, at
    files = fp.get("files")
    return (files if isinstance(files, dict) else {}), fp.get("source"), at


def _peer_states(store: Store) -> dict[str, list[tuple[str, int | None]]]:
    """The store's file states that recorded the source of their rows: source -> [(state name,
    when it was ingested)]. One read per file state."""
    out: dict[str, list[tuple[str, int | None]]] = {}
    if not store.exists():
        return out
    for name in store.state_names("files/*"):
        _, src, at = _state_files(store.read_state(name))
        if isinstance(src, str):
            out.setdefault(src, []).append((name, at))
    return out


def _all_file_states(store: Store) -> dict[str, tuple[str, str, Any, str]]:
    """The store's file states of one file each: state name -> (its path, its sha256, its
    mapping's fingerprint, the source of its rows: recorded, else the ``source`` column's value
    of a ``files/<source>/<name>`` state (:func:`file_key`), else the state's key). One read
    per file state."""
    out: dict[str, tuple[str, str, Any, str]] = {}
    if not store.exists():
        return out
    for name in store.state_names("files/*"):
        state = store.read_state(name)
        files, src, _ = _state_files(state)
        if len(files) != 1:
            continue
        try:
            mapping_fp = json.loads(state.column("fingerprint")[0].as_py()).get("mapping")  # type: ignore[union-attr]
        except (TypeError, ValueError, AttributeError, pa.ArrowException):
            continue
        key = name[len("files/"):]
        ((path, sha),) = files.items()
        out[name] = (str(path), str(sha), mapping_fp, src if isinstance(src, str) else key.rsplit("/", 1)[0])
    return out


def _earlier_inputs(store: Store, name: str, old: pa.Table | None, files: Mapping[str, str],
                    rows_source: str | None) -> tuple[str, ...]:
    """The inputs ingested before under this source that ``files`` (path -> sha256) are not: not
    the same path (a corrected file) and not the same content (a moved file). Stale rows that an
    ingest of ``files`` removes came from them: a new export of that table replacing it, or a
    file of other tasks of the same runs (which needs a join), which must not pass in silence.

    Those are the files of the state ``old`` (this key's last ingest) and, with ``rows_source``,
    of every file state that recorded that source and was ingested after ``old`` (one read per
    file state, paid only when stale rows are removed): a file corrected at its path removes its
    own stale rows, unless another file of its runs came in since. None found for a file never
    ingested here: "another input" (an MLflow run, a file ingested before sources were recorded)."""
    real = {os.path.realpath(p) for p in files}

    def others(state: pa.Table | None) -> list[str]:
        return [str(p) for p, sha in _state_files(state)[0].items()
                if os.path.realpath(str(p)) not in real and sha not in files.values()]

    out = others(old)
    mine = _state_files(old)[2] if old is not None else None
    if rows_source is not None:
        for other in store.state_names("files/*"):
            if other != name:
                state = store.read_state(other)
                _, src, at = _state_files(state)
                if src == rows_source and (old is None or (at is not None and (mine is None or at > mine))):
                    out.extend(p for p in others(state) if p not in out)
    if not out and old is None:
        out = ["another input"]
    return tuple(out)


def _refuse_other_file(path: str, files: Mapping[str, str], old: pa.Table, source: str) -> None:
    """A :class:`UserError` when the last file ingested as ``source`` (the state ``old``) was
    another file: another path, other content. Both are named ``x.csv``, so both are source
    ``x``, and this one would replace the other's rows of every run they share (``a/results.csv``
    then ``b/results.csv``), as two such files in one call would (:func:`_refuse_shared_stems`).
    The same path (a corrected file) and the same content (a file moved) are the same table. A
    state without a path (written before paths were compared, or not by a file) refuses nothing."""
    try:
        before = json.loads(old.column("fingerprint")[0].as_py())["files"]
    except (KeyError, TypeError, ValueError, IndexError, pa.ArrowException):
        return
    if not isinstance(before, dict) or len(before) != 1:
        return
    (old_path, old_sha), = before.items()
    if os.path.realpath(old_path) == os.path.realpath(path) or old_sha in files.values():
        return
    own = source == source_stem(path)
    alike = ("another file of the same name" if own else
             f"another file of the same name that names the source {source.rsplit('/', 1)[0]!r} in a column")
    rows_source = source if own else source.rsplit("/", 1)[0]     # what its rows' `source` column holds
    raise UserError(f"{path}: this store's source {source!r} came from {old_path}, {alike}; "
                    "ingesting this one would replace its rows of every run they share. Rename this file, or give it "
                    "its own source (--source NAME, 'source:' in a --mapping, a 'name:' in a --sources-file, or a "
                    f"'source' column); if it is a new export of that file, pass --source {rows_source!r} (its rows "
                    "replace the other's)")


def _claims(spec: str) -> bool:
    return is_local_path(spec)


@register_source("files", _claims)
def _make(specs: Sequence[str], mapping: IngestMapping | None, options: SourceOptions) -> list[FileSource]:
    found = expand_paths(specs)
    notes = tuple(found.skipped)
    # one file named twice (``dir dir/x.csv``, ``x.csv ./x.csv``) is one input: a join said it
    # "matched several files", and --drop-missing that "2 files share the source"
    first: dict[str, str] = {}
    for p in found.paths:
        first.setdefault(os.path.realpath(p), p)
    paths = list(first.values())
    # named by a --sources-file entry: its lines say the entry's 'mapping:', not --mapping
    entry = bool(getattr(options, "from_sources_file", False))
    if mapping is not None and mapping.join is not None:
        return [FileSource(paths=paths, mapping=mapping, source_name=options.source_name,
                           drop_missing=options.drop_missing, notes=notes, special=dict(found.special),
                           in_sources_file=entry)]
    paths, refused = refuse_unfit(paths, mapping, in_sources_file=entry)
    if refused:
        refused[0].notes = notes
        notes = ()
        if not paths:
            return refused
    peers: dict[str, Any] = {}   # one snapshot of the store's file states for every file of the call
    explicit = options.source_name or (mapping.source if mapping is not None else None)
    if explicit is None:
        paths = _refuse_shared_stems(paths, mapping)
    elif options.drop_missing and len(paths) > 1:
        raise UserError(f"--drop-missing: {len(paths)} files share the source {explicit!r}, and each would remove the "
                        "runs of the others; ingest them one source a file, or as one join")
    _refuse_shared_runs(paths, mapping, options.source_name, explicit)
    if explicit is None:
        _refuse_copies(paths)
    return [*refused, *(FileSource(paths=[p], mapping=mapping, source_name=options.source_name,
                                   drop_missing=options.drop_missing, notes=notes if i == 0 else (), peers=peers,
                                   in_sources_file=entry)
                        for i, p in enumerate(paths))]


def _header(path: str) -> list[str] | None:
    """The column names of a CSV/TSV file (its header), a Parquet file (its footer) or a JSON Lines
    file (its first object's keys: :func:`_jsonl_columns` reads every object's only for a file
    those do not fit), or None for other inputs (a dataset directory) and for a header that cannot
    be read (reading the file then says why, in its own line)."""
    fmt = _format_of(path)
    if fmt not in ("csv", "tsv", "parquet", "jsonl") or not os.path.isfile(path):
        return None
    if fmt in ("csv", "tsv") and _preamble(path) is not None:
        return None   # a comment or `sep=,` line taken for the header: reading the file says so
    try:
        if fmt == "jsonl":
            return _jsonl_columns(path, every=False)
        return _csv_columns(path, fmt) if fmt != "parquet" else _parquet_columns(path)[1]
    except Exception:  # noqa: BLE001 - a broken file: reading it says what, in one line
        return None


def _jsonl_columns(path: str, *, every: bool) -> list[str] | None:
    """A JSON Lines file's columns as reading it makes them: its first object's keys, or
    (``every``) every object's, in the order first seen (one pass, ~1 s a million objects); None
    for a file without an object or with a key twice once stripped (reading it says what)."""
    if every:
        names = column_names(_jsonl_all_keys(path))
    else:
        records = _jsonl_records(path)
        try:
            first = next(records, None)
        finally:
            records.close()
        if first is None:
            return None
        names = column_names(first.keys())
    return names if names and len(set(names)) == len(names) else None


def _jsonl_columns_or_none(path: str) -> list[str] | None:
    try:
        return _jsonl_columns(path, every=True)
    except Exception:  # noqa: BLE001 - a broken file: reading it says what, in one line
        return None


class _HeaderProblem(UserError):
    """A problem of a file's columns under a mapping, without the file's name; ``missing``: the
    required columns it lacks when that is the problem (:class:`MissingColumns`), else None."""

    def __init__(self, message: str, missing: tuple[str, ...] | None) -> None:
        super().__init__(message)
        self.missing = missing


def _header_problem(columns: Sequence[str], mapping: IngestMapping | None,
                    cache: dict[tuple[Any, ...], _HeaderProblem | None]) -> _HeaderProblem | None:
    """What refuses every row of a file with these columns under ``mapping`` (a renamed column
    that is not there; without a mapping, no ``run_id`` column...), found by mapping no rows; None
    when its columns fit (its rows are then validated one by one). ``cache``: the answers of one
    call by columns and mapping (a directory's files share a few headers; ~10 ms each)."""
    key = (tuple(columns), None if mapping is None else mapping.fingerprint())
    if key not in cache:
        cache[key] = _columns_problem(key[0], mapping)
    return cache[key]


def _columns_problem(columns: tuple[str, ...], mapping: IngestMapping | None) -> _HeaderProblem | None:
    if mapping is None:    # exactly what map_long finds without a mapping
        missing = tuple(c for c in REQUIRED_AFTER_MAPPING if c not in columns)
        return _HeaderProblem(f"no column for {', '.join(missing)} after mapping", missing) if missing else None
    where = "\0"
    try:
        map_long(pd.DataFrame(columns=list(columns), dtype=object), mapping, where=where, source="x")
    except MissingColumns as e:
        return _HeaderProblem(str(e).removeprefix(f"{where}: "), e.missing)
    except UserError as e:
        return _HeaderProblem(str(e).removeprefix(f"{where}: "), None)
    except Exception:  # noqa: BLE001 - not a problem of the columns: reading the file says what
        return None
    return None


#: A shipped mapping that fits some input files (:func:`_shipped_fits`): its path, whether it is a
#: join, the input files it reads, and for a join that needs the tables beside them (one of its
#: files given alone, ``results-imagenet.csv``), the directory to give it instead, else None.
_Fit = tuple[str, bool, list[str], "str | None"]


def _shipped_fits(headers: Mapping[str, Sequence[str]], mapping: IngestMapping | None,
                  cache: dict[tuple[Any, ...], _HeaderProblem | None]) -> list[_Fit]:
    """The shipped mappings (:func:`~meta_study.ingest.mapping.shipped_mappings`) other than
    ``mapping`` that fit some of these files (:data:`_Fit`), those that read the most first. A join
    fits when every table finds its file and columns among them, or among them and the files
    beside them in one directory (their headers read only then, ~3 ms a file)."""
    from .mapping import shipped_mappings

    given = mapping.fingerprint() if mapping is not None else None
    out = []
    for path, m in shipped_mappings():
        if m.fingerprint() == given:
            continue
        on: str | None = None
        if m.join is not None:
            reads = _join_reads(headers, m)
            if reads is None:
                on, reads = _join_reads_beside(headers, m)
        else:
            reads = [p for p, h in headers.items() if _header_problem(h, m, cache) is None]
        if reads:
            out.append((path, m.join is not None, reads, on))
    return sorted(out, key=lambda f: (-len(f[2]), f[0]))


def _join_reads(headers: Mapping[str, Sequence[str]], m: IngestMapping) -> list[str] | None:
    """The files of ``headers`` that the join mapping ``m`` reads, or None when it does not fit them."""
    frames = {p: pd.DataFrame(columns=list(h), dtype=object) for p, h in headers.items()}
    try:
        unused = map_join(frames, m, where=m.name, source=m.source or m.name)[3]
    except Exception:  # noqa: BLE001 - any failure: it does not fit
        return None
    return [p for p in headers if p not in unused]


def _join_reads_beside(headers: Mapping[str, Sequence[str]], m: IngestMapping) -> tuple[str | None, list[str]]:
    """(a directory of the input files, those of them the join ``m`` reads) when it fits them with
    the files beside them there that its tables name (one table given alone: the wide
    ``results-imagenet.csv`` with the long mapping), else (None, [])."""
    assert m.join is not None
    tables = [m.join.upstream, *m.join.downstream]
    for d in dict.fromkeys(os.path.dirname(p) for p in headers):
        mine = {p: h for p, h in headers.items() if os.path.dirname(p) == d}
        if not any(fnmatch.fnmatch(os.path.basename(p), t.file) for p in mine for t in tables):
            continue
        try:
            names = sorted(os.listdir(d or "."))
        except OSError:
            continue
        given = {os.path.basename(p) for p in mine}
        beside = {}
        for n in names:
            q = os.path.join(d, n)
            if n not in given and any(fnmatch.fnmatch(n, t.file) for t in tables) and os.path.isfile(q):
                h = _header(q)
                if h is not None:
                    beside[q] = h
        reads = _join_reads({**mine, **beside}, m) if beside else None
        if reads:
            return d or ".", [p for p in reads if p in mine]
    return None, []


def _use_mappings(fits: Sequence[_Fit], group: Sequence[str], paths: Sequence[str], in_sources_file: bool) -> str:
    """``"; use --mapping X (shipped with meta-study; it fits its columns)"`` for the shipped
    mappings of ``fits`` (:func:`_shipped_fits`) that read some of ``group`` (of the call's
    ``paths``), or ``""``. For a source of a ``--sources-file`` (``in_sources_file``), the entry's
    ``mapping:`` key with the absolute path (a relative one there is relative to that file)."""
    from .mapping import shown_path

    said = []
    for path, join, reads, on in fits:
        reads = [p for p in reads if p in group]
        if not reads:
            continue
        # which of them, by name: "it joins 6 of them" of 29 files in 26 folders (examples/data/*/)
        # read as a timm mapping for all of them
        which = ("its columns" if len(group) == 1 else "them" if join else "their columns"
                 ) if len(reads) == len(group) else _names(reads, paths) if len(reads) < 3 \
            else f"{len(reads)} of them: {_names(reads, paths)}"
        what = f"'mapping: {os.path.abspath(path)}'" if in_sources_file else f"--mapping {shown_path(path)}"
        if on is not None:    # the join needs the tables beside them: their directory is the input
            what = f"'uri: {os.path.abspath(on)}' with {what}" if in_sources_file else f"{what} on {on}"
            which = "this file with the tables beside it" if len(reads) == 1 else \
                f"{'these' if len(reads) == len(group) else _names(reads, paths)} with the tables beside them"
        said.append(f"{what} ({'shipped with meta-study; ' if not said else ''}"
                     f"it {'joins' if join else 'fits'} {which})")
    if not said:
        return ""
    return (f"; give its entry in the sources file {' or '.join(said)}" if in_sources_file
            else f"; use {' or '.join(said)}")


def _unfitted(fits: Sequence[_Fit], group: Sequence[str], paths: Sequence[str], problems: Collection[str]) -> str:
    """``"; the other 21 (a/raw.tsv, ...) fit no shipped mapping: ..."`` for the files of ``group``
    that no shipped mapping of ``fits`` reads, beside those that some do, or ``""``: the mappings
    named for some of a group were read as advice for all of it (the timm mappings for BigCode's
    table). Names the files of the call that ingest as they are (``paths`` not in ``problems``)
    in the directories of those files, when there are such: ``us_ds.csv`` beside raw tables."""
    read = {p for _, _, reads, _ in fits for p in reads}
    other = [p for p in group if p not in read]
    if not other:
        return ""
    dirs = {os.path.dirname(p) for p in other}
    fine = [p for p in paths if p not in problems and os.path.dirname(p) in dirs]
    names = sorted({os.path.basename(p) for p in fine})
    like = (f": the {names[0]} given beside them" if len(names) == 1 else f": {_names(fine, paths)}" if fine else "")
    return (f"; the other {len(other)} ({_names(other, paths)}) fit no shipped mapping: they lack those columns "
            f"(a file that has them ingests as it is{like})")


def _names(paths: Sequence[str], within: Sequence[str], shown: int = 3) -> str:
    """A few of ``paths`` by name relative to the directory of ``within``, then "and N more"."""
    try:
        common = os.path.commonpath([os.path.abspath(q) for q in within]) if len(within) > 1 else None
    except ValueError:
        common = None
    names = [os.path.relpath(os.path.abspath(p), common) if common else os.path.basename(p) for p in paths]
    more = len(names) - shown
    if more <= 0:
        return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]
    return f"{', '.join(names[:shown])} and {more} more"


def refuse_unfit(paths: Sequence[str], mapping: IngestMapping | None, *,
                 in_sources_file: bool = False) -> tuple[list[str], list[RefusedFiles]]:
    """(the files to read, those refused by their columns alone, as one source per problem).

    A file whose columns cannot give rows under ``mapping`` (without one: a file without
    meta-study's columns, such as a directory of raw timm results) failed in a line of its own,
    the same line once per file (9 for ``examples/data/timm/``), and named no mapping. Such files
    now fail in one line per problem (every "no column for ..." is one), which names the shipped
    mappings that fit them (``use --mapping examples/mappings/timm_wide.yaml``; for a source of a
    sources file, ``in_sources_file``: its entry's ``mapping:``). CSV/TSV, Parquet and JSON Lines
    files are checked, from their header, footer or first object (~3 ms a file; a JSON Lines file
    whose first object does not fit, by every object's keys); a join mapping is not (its tables
    need each other's files)."""
    if mapping is not None and mapping.join is not None:
        return list(paths), []
    headers = {p: h for p in paths if (h := _header(p)) is not None}
    cache: dict[tuple[Any, ...], _HeaderProblem | None] = {}
    problems = {p: e for p, h in headers.items() if (e := _header_problem(h, mapping, cache)) is not None}
    for p in [p for p in problems if _format_of(p) == "jsonl"]:
        # its first object's keys do not fit: judged by every object's keys, as reading it would
        # (a key of later objects only is a column of the file, empty in the rows without it)
        every = _jsonl_columns_or_none(p)
        problem = None if every is None else _header_problem(every, mapping, cache)
        if problem is None:
            del problems[p], headers[p]
        else:
            headers[p], problems[p] = every, problem
    if not problems:
        return list(paths), []
    groups: dict[str, list[str]] = {}
    for p, e in problems.items():
        # one line for every file without a required column; else one per message (its own path left out)
        key = "" if e.missing is not None else str(e)
        groups.setdefault(key, []).append(p)
    fits = _shipped_fits(headers, mapping, cache)
    refused = []
    for key, group in groups.items():
        # the files, when the label does not say which (some of a directory's)
        where = "" if len(group) in (1, len(paths)) else f" in {_names(group, paths)}"
        if key:
            what = key if len(group) == 1 else f"in each {f'of{where[3:]}' if where else 'file'}: {key}"
        else:
            lacked = [problems[p].missing or () for p in group]
            lacks = [c for c in REQUIRED_AFTER_MAPPING if any(c in m for m in lacked)]
            same = all(len(m) == len(lacks) for m in lacked)
            what = (f"no column for {', '.join(lacks)} after mapping{where}"
                    + ("" if same else " (each file lacks some of them)"))
        near: list[tuple[str, str]] = []
        if not key:
            # `Run ID` for run_id: a rename in the file or a mapping is all it needs, and the line said nothing of it
            near = list(dict.fromkeys(m for p in group for m in near_misses(headers[p], mapping)))
        if near:
            guesses = ", ".join(f"{c!r} for {g}" for c, g in near[:4]) + (f" and {len(near) - 4} more"
                                                                               if len(near) > 4 else "")
            what += f"; did you mean {guesses}? {RENAME_HINT}"
        use = _use_mappings(fits, group, paths, in_sources_file)
        if use:
            what += use + _unfitted(fits, group, paths, problems) + ("" if near else "; see docs/ingest.md")
        elif mapping is None and not key and not near:
            what += ADD_MAPPING
        refused.append(RefusedFiles(paths=group, error=printable(said_for_entry(what) if in_sources_file else what)))
    return [p for p in paths if p not in problems], refused


def refuse_shared_files(sources: Sequence[Any]) -> None:
    """Refuse, before anything is stored, files of different entries of a sources file that would
    be one source or are copies, as :func:`_make` refuses them among one call's files: each entry
    is opened on its own, so ``results.csv`` and its copy ``results (1).csv`` in two entries stored
    every run twice, under two sources, and ``a/x.csv`` and ``b/x.csv`` stored the first and then
    failed on the second. Only files whose source is their name (no ``name:``, ``source:`` or
    ``--source``; no join) are compared: a source given is the user's word that they differ."""
    own = [s for s in sources if isinstance(s, FileSource) and s.source_name is None and len(s.paths) == 1
           and (s.mapping is None or (s.mapping.source is None and s.mapping.join is None))]
    if len(own) < 2:
        return
    mappings = {s.paths[0]: s.mapping for s in own}
    _refuse_copies(_refuse_shared_stems(list(mappings), mappings=mappings))


def _refuse_copies(paths: Sequence[str]) -> None:
    """Refuse two files of one call with the same content (``results.csv`` and ``results (1).csv``,
    a download saved twice): each is its own source, so every run was stored twice, under two
    names, and counted twice by every analysis. Files of the same size are hashed (sha256, ~0.1 s
    per 100 MB); others cost one ``stat``."""
    by_size: dict[int, list[str]] = {}
    for p in paths:
        try:
            by_size.setdefault(_stamp(p)[0], []).append(p)
        except OSError:
            continue       # it fails on its own, in its line
    for same in (g for size, g in by_size.items() if len(g) > 1 and size):   # empty files fail on their own
        seen: dict[str, str] = {}
        for p in same:
            try:
                digest = _sha256(p)
            except OSError:
                continue
            if digest in seen and _has_rows(seen[digest]):   # else each fails on its own
                first = seen[digest]
                raise UserError(f"{first} and {p}: the same content (a copy?); every run would be stored twice, "
                                f"once as source {source_stem(first)!r} and once as {source_stem(p)!r}. Nothing was "
                                "stored: ingest one of them")
            seen[digest] = p


def _has_rows(path: str) -> bool:
    """Whether a file can be read and holds a row (reads its first piece of one row)."""
    try:
        pieces = read_export_chunks(path, rows=1)
        got = next(pieces, None) is not None
        pieces.close()
        return got
    except (UserError, OSError, ValueError):
        return False


def _refuse_shared_runs(paths: Sequence[str], mapping: IngestMapping | None, source_name: str | None,
                        explicit: str | None) -> None:
    """Refuse, before anything is stored, files of one call that share a source and a run.

    A file is the whole truth about its runs: its commit removes the source's stored rows of
    every run it holds that it lacks. Two files of one source with the same runs (one file per
    downstream task, ``source: lab`` in the mapping) therefore left only the last file's rows,
    with exit code 0 ("39 deleted"). Making them work file by file would need each to replace
    only its own (run, task) rows, and then a corrected file (a task renamed) would keep the old
    task's rows beside the new ones; they are one table, and a ``join:`` mapping (or a source a
    file) says so.

    Only groups of two or more files with one source are read (all of them when the source is
    given, ``source:`` or ``--source``; otherwise files whose ``source`` column names the same
    one): their run ids, piece by piece, ~1 s per million rows. A file that cannot be read or
    mapped is passed over here: it fails on its own, in its line, when it is ingested."""
    if len(paths) < 2:
        return
    if explicit is not None:
        groups = [list(paths)]
    else:
        by_source: dict[str, list[str]] = {}
        for p in paths:
            declared = declared_source(p, mapping)
            if declared is not None:
                by_source.setdefault(declared, []).append(p)
        groups = [g for g in by_source.values() if len(g) > 1]
    for group in groups:
        owner: dict[tuple[str, str], str] = {}    # (source, run_id) -> the first file that holds it
        real: set[str] = set()
        for p in group:
            if os.path.realpath(p) in real:        # one file named twice is ingested once, then unchanged
                continue
            real.add(os.path.realpath(p))
            mine = _runs_of(p, mapping, source_name)
            clash = sorted(k for k in mine if k in owner)
            if clash:
                (src, run), first = clash[0], owner[clash[0]]
                more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
                raise UserError(printable(
                    f"{first} and {p}: both hold run {run!r}{more} of source {src!r}; a file replaces its source's "
                    "rows of every run it holds, so the second would delete the first's rows of those runs. "
                    "Nothing was stored: if they hold other tasks of the same runs, join them (a 'join:' mapping, "
                    "docs/ingest.md); otherwise give each file its own source (a mapping with its own 'source:' "
                    "per file, --source in a call per file, or a 'name:' per file in a --sources-file)"))
            owner.update((k, p) for k in mine)


def _runs_of(path: str, mapping: IngestMapping | None, source_name: str | None) -> set[tuple[str, str]]:
    """The ``(source, run_id)`` pairs of a file's rows as ingest would store them (stripped, as
    validation strips them), or an empty set when the file cannot be read or mapped."""
    out: set[tuple[str, str]] = set()
    try:
        for _, frame in read_export_chunks(path):
            rows = map_long(frame, mapping, where=path, source=source_stem(path))
            sources = ([source_name] * len(rows) if source_name else rows["source"].tolist())
            out.update((str(s).strip(), str(r).strip()) for s, r in zip(sources, rows["run_id"].tolist())
                       if s is not None and r is not None and not pd.isna(s) and not pd.isna(r))
    except (UserError, OSError, ValueError, KeyError):
        return set()
    return out


def declared_source(path: str, mapping: IngestMapping | None) -> str | None:
    """The ``source`` a file names for its rows in a column of that name (its first row's value),
    or None: no such column, an empty first value, or a mapping that renames a column to or from
    it. It tells files apart (:func:`file_key`); each row keeps its own value. Cost: the header and
    one row (CSV/TSV), one column's first batch (Parquet), the first object (JSON Lines)."""
    if mapping is not None and ("source" in mapping.rename or "source" in mapping.rename.values()):
        return None
    path = (dataset_parts(path) or [path])[0]     # a dataset directory: its first part
    fmt = _part_format(os.path.basename(path))    # Spark's part-*.json: JSON Lines
    try:
        if fmt in ("csv", "tsv"):
            columns = _csv_columns(path, fmt)
            if "source" not in columns:
                return None
            with _open_capped(path) as f:   # by position: the header's own name may have spaces around it
                first_row = pd.read_csv(f, usecols=[columns.index("source")], nrows=1, index_col=False,
                                        **_csv_kwargs(fmt))
            values = first_row.iloc[:, 0]
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            names = column_names(pf.schema_arrow.names)
            if "source" not in names:
                return None
            first = next(pf.iter_batches(batch_size=1, columns=[pf.schema_arrow.names[names.index("source")]]), None)
            values = first.column(0).to_pandas() if first is not None else pd.Series([], dtype=object)
        elif fmt == "jsonl":
            # its first object's (keys stripped as column_names() strips them): without it, two
            # openclip/us_ds.jsonl and dclm/us_ds.jsonl naming their sources were refused as "both
            # would be source 'us_ds'", where the same tables as CSV or Parquet went in
            records = _jsonl_records(path)
            try:
                values = pd.Series([next(records, {}).get("source")], dtype=object)
            finally:
                records.close()
        else:
            return None
    except Exception:  # noqa: BLE001 - a broken file (truncated gzip: EOFError): reading it says what, in one line
        return None
    # stripped as validation strips the stored value: "  openclip " is source openclip
    first_value = str(values.iloc[0]).strip() if len(values) and pd.notna(values.iloc[0]) else ""
    return first_value or None


def file_key(path: str, mapping: IngestMapping | None) -> str:
    """What identifies a file among the inputs and keys its ingest state: its name without its
    suffixes (:func:`source_stem`), under its own source when it names one
    (:func:`declared_source`): ``openclip/us_ds`` and ``dclm/us_ds`` are two tables, where two
    ``us_ds.csv`` without a source of their own would be one."""
    declared = declared_source(path, mapping)
    return f"{declared}/{source_stem(path)}" if declared else source_stem(path)


def _refuse_shared_stems(paths: Sequence[str], mapping: IngestMapping | None = None,
                         mappings: Mapping[str, IngestMapping | None] | None = None) -> list[str]:
    """``paths`` without repeats of one file. Each file's rows get its name without its suffix as
    their ``source`` (:func:`source_stem`) unless the file names its own: two files with one key
    (:func:`file_key`: ``a/x.csv`` and ``b/x.csv``, or ``x.csv`` and ``x.csv.gz``) would store every
    run twice or replace each other's rows, so refuse them. ``mappings``: each path's own mapping
    (the entries of a sources file), instead of ``mapping``."""
    seen: dict[str, str] = {}
    out = []
    for p in paths:
        stem = file_key(p, mappings[p] if mappings is not None else mapping)
        if not stem.strip():
            # `.csv`, ` .csv`: every row was quarantined as "source: missing required field"
            raise UserError(printable(f"{p}: the file's name without its suffix is {stem!r}, and a file's name is "
                                      "the source of its rows; rename it, or give it a source (--source NAME, "
                                      "'source:' in a --mapping, or a 'source' column)"))
        if stem in seen:
            if os.path.realpath(seen[stem]) == os.path.realpath(p):
                continue
            what = (f"both would be source {stem!r} (a file's name without its suffixes)" if stem == source_stem(p)
                    else f"both name the source {stem.rsplit('/', 1)[0]!r} in a column and are named alike")
            raise UserError(f"{seen[stem]} and {p}: {what} and store the same runs twice or replace each other's rows; "
                            "remove or rename one, set 'source:' in the mapping, or give each a 'name:' in a "
                            "--sources-file")
        seen[stem] = p
        out.append(p)
    return out
