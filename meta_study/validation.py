"""Validation: raw input rows (strings from CSV, numbers from MLflow, ...) into canonical rows of
:mod:`meta_study.schema`, and a reason for every row that cannot be.

Each column is coerced to its Arrow type; every row that cannot be coerced, or whose value breaks a
rule, gets a reason that names the column and the problem. Checks are vectorized per column:
~0.3 s per 100k rows for already-typed input, a few times that for object columns.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .schema import (COLUMNS, COLUMN_BY_NAME, EXTRA_DS_TEST_SIZE, KEY, Column, PARTITION, SCHEMA, SCHEMA_VERSION, STORE_FILLED,
                     UTC_TIMESTAMP)

#: What :func:`validate` returns: store-filled columns may still be null.
_INPUT_SCHEMA: pa.Schema = pa.schema([f.with_nullable(True) if f.name in STORE_FILLED else f for f in SCHEMA])


# --------------------------------------------------------------------------------------------
# Validation
#
# Input is a pandas DataFrame of *raw* values (object columns, strings from CSV, numbers from
# MLflow, ...). Each column is coerced to its Arrow type; every row that cannot be coerced, or
# whose value breaks a rule, gets a reason. Checks are vectorized per column: ~0.3 s per 100k
# rows for already-typed input, a few times that for object columns.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validated:
    """Result of :func:`validate`.

    Attributes:
        table: the good rows, coerced to :data:`SCHEMA` (``ingested_at`` and ``schema_version``
            are filled by the store on write if absent).
        rejected: one row per bad input row: ``row`` (position in the input), ``source``,
            ``run_id``, ``reason`` and ``raw`` (the input row as JSON).
    """

    table: pa.Table
    rejected: pd.DataFrame
    #: reason kind (the reason without the row's value, e.g. ``"ds_accuracy: out of range [0, 1]"``)
    #: -> rows that have it: the summary line's "most for ..." (each rejected row counts once per kind).
    reason_kinds: Mapping[str, int] = field(default_factory=dict)
    #: column with a [0, 1] range -> (values in (1, 100], finite values): a column whose values are
    #: mostly in (1, 100] is in percent, and ingest refuses it as a whole (the pipeline's
    #: ``refuse_percent``); values a source converted from another unit (:data:`SOURCE_UNIT`) are
    #: not counted.
    above_one: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: the same columns -> (values written with a % sign, zeros): more evidence of a unit
    #: (:func:`_mostly_percent_masks`), which the pipeline weighs beside ``above_one`` for a file
    percent_evidence: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: (good rows whose ``ended_at`` is before their ``started_at``, the first as text), or None.
    #: Such rows are kept: the times are provenance, which no analysis reads, and an MLflow run
    #: terminated with an ``end_time`` before its creation (a run logged after the fact) has them;
    #: quarantined, its accuracies left every fit. Ingest says so in a note
    #: (:func:`ends_before_start_note`).
    ends_before_start: tuple[int, str] | None = None

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)


def _is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _is_missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or _is_nan(v)


#: Optional columns of a frame given to :func:`validate`: a reason that the source gives a row
#: (a value only the source can judge: a fraction among a task's percents), and the reason
#: without its value for the summary's counts (default: the reason). Neither is stored.
SOURCE_REASON = "_reason"
SOURCE_REASON_KIND = "_reason_kind"
#: Optional columns: the unit an accuracy column's raw value was converted from (``percent``,
#: ``error``, ``error_percent``; missing: ``fraction``), so that a value out of range is named as
#: its source wrote it, in its unit's range (``100.5 out of range [0, 100] (unit percent)``, not
#: ``1.005``), and is not counted as a percent in a fraction column. Not stored.
SOURCE_UNIT = {"us_accuracy": "_us_accuracy_unit", "ds_accuracy": "_ds_accuracy_unit"}
_SOURCE_COLUMNS = (SOURCE_REASON, SOURCE_REASON_KIND, *SOURCE_UNIT.values())
#: Raw value of a converted accuracy ``v`` (a fraction), and the raw range, per unit.
_FROM_FRACTION: dict[str, tuple[Callable[[float], float], str]] = {
    "percent": (lambda v: v * 100.0, "[0, 100]"), "error": (lambda v: 1.0 - v, "[0, 1]"),
    "error_percent": (lambda v: (1.0 - v) * 100.0, "[0, 100]")}


def shown(v: Any) -> str:
    """A raw value for a reason, as its source wrote it: ``1.5``, ``'abc'``, ``True``, never a
    numpy repr (``np.float64(1.5)``) that no user wrote."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, decimal.Decimal):   # 3.5, not Decimal('3.5')
        return str(v)
    text = repr(v)
    if len(text) > MAX_SHOWN:
        # a reason is one line of `store quarantine` and of the summary (the value is whole in
        # the row's payload): a 1 MB cell in a number column made a 1 MB reason
        n = f" ({len(v)} characters)" if isinstance(v, str) else ""
        return text[:MAX_SHOWN - 20] + "..." + n
    return text


#: The longest value a reason shows whole, in characters.
MAX_SHOWN = 200


#: A partition directory is ``ds_task=<percent-encoded name>``; file systems allow 255 bytes a name.
MAX_PARTITION_NAME_BYTES = 240
_RESERVED_PARTITION = "__HIVE_DEFAULT_PARTITION__"   # Hive's name for null: readers would fail on it


def _partition_problem(value: str | None) -> str | None:
    """Why a task name cannot be a partition directory, or None."""
    if value is None:
        return None
    if value == _RESERVED_PARTITION:
        return f"{value!r} is reserved (Hive's name for a null partition)"
    n = len(urllib.parse.quote(value, safe=""))
    if n > MAX_PARTITION_NAME_BYTES:
        return f"name too long for a partition directory ({n} bytes percent-encoded, at most {MAX_PARTITION_NAME_BYTES})"
    return None


#: Standard thousands grouping: the first group has no leading zero ("0,001" is a decimal comma,
#: and was read as 1: an export's lr 0,001 was stored as 1.0, wd 0,050 as 50.0).
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d*)?([eE][+-]?\d+)?")


def number_text(v: str) -> str | None:
    """The text of a number as ``float`` should read it, or None when it is not one we accept.

    Commas are accepted only as thousands separators in the standard grouping (``"1,014.45"``);
    any other comma (``"0,1"``: a decimal comma?) is ambiguous and rejected, as are underscores
    (``"0.8_5"``: Python's ``float`` would take it as 0.85) and every non-ASCII character: Python's
    ``float`` reads Arabic-Indic (``"١٠"``) and full-width (``"１０"``) digits as 10, a guess.
    """
    t = v.strip()
    if "_" in t or not t.isascii():
        return None
    if "," in t:
        return t.replace(",", "") if _THOUSANDS.fullmatch(t) else None
    return t


#: One thousands group and nothing after it ("1,500", "86,568"): 1500, or 1.5 written with a decimal
#: comma; the column tells which (:func:`ambiguous_thousands`).
_ONE_GROUP = re.compile(r"[+-]?[1-9]\d{0,2},\d{3}", re.ASCII)


def ambiguous_thousands(values: Sequence[Any]) -> list[int]:
    """The positions of the texts of one group of thousands ("1,500") among ``values`` (one
    column), when another text of the column has a decimal comma ("0,5", "86,57"): such a column
    is written with decimal commas, and its "86,568" is 86.568, not 86568. Read as thousands, a
    German export's param_count "86,568" (millions) was stored as 86,568 million parameters while
    "86,57" beside it was refused ("a decimal comma?"). Python per text with a comma (none in most
    columns); what a column without a decimal comma holds is read as before."""
    one_group: list[int] = []
    decimal_comma = False
    for i, v in enumerate(values):
        if not isinstance(v, str) or "," not in v:
            continue
        if _ONE_GROUP.fullmatch(v.strip()):
            one_group.append(i)
        elif not decimal_comma and _comma_hint(v):
            decimal_comma = True
    return one_group if decimal_comma else []


def _comma_hint(v: Any) -> str:
    """"; a decimal comma? ..." for a text number with a comma that is no thousands grouping."""
    if not (isinstance(v, str) and v.count(",") == 1):
        return ""
    if _ONE_GROUP.fullmatch(v.strip()):   # refused by ambiguous_thousands
        t = v.strip()
        return (f"; a decimal comma, as elsewhere in the column ({t.replace(',', '.')}), or thousands "
                f"({t.replace(',', '')})? write the number without a comma")
    t = number_text(v.replace(",", ".", 1))
    try:
        float(t or "x")
    except ValueError:   # "1,014.45" in an integer column: thousands, not a comma ("write 1.014.45")
        return ""
    return f"; a decimal comma? write {v.strip().replace(',', '.')}"


#: Texts that mean "no value" in exports (pandas' default na_values, case-insensitive, and a
#: spreadsheet's errors that say the same): missing in an optional number column.
MISSING_TOKENS = frozenset({"nan", "-nan", "+nan", "na", "n/a", "#n/a", "#n/a n/a", "#na", "<na>", "null", "none",
                            "nat"})


def _missing_tokens(s: pd.Series, cells: np.ndarray) -> np.ndarray:
    """A mask of the ``cells`` (positions) of ``s`` that hold a text of :data:`MISSING_TOKENS`;
    only cells already wrong or NaN are looked at (a few, or none, in a clean column)."""
    out = np.zeros(len(s), bool)
    if not len(cells) or pd.api.types.is_numeric_dtype(s.dtype):
        return out
    for i, v in zip(cells.tolist(), s.iloc[cells].astype(object).tolist()):
        out[i] = isinstance(v, str) and v.strip().lower() in MISSING_TOKENS
    return out


#: Integers a column type can hold (a float64 beyond them would wrap around in the cast).
_INT_LIMITS = {pa.int32(): 2 ** 31 - 1, pa.int64(): 2 ** 63 - 1}


def _coerce_numeric(s: pd.Series, integer: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coerce to float64. Returns (values, wrong_type, is_nan); missing values become NaN too,
    and are the NaNs that are neither wrong nor ``is_nan``."""
    n = len(s)
    if pd.api.types.is_bool_dtype(s.dtype):
        return np.full(n, np.nan), s.notna().to_numpy(), np.zeros(n, bool)
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.astype("float64").to_numpy()
        # A float column cannot tell "missing" from "NaN"; a NaN measurement is the safer reading.
        nan = np.isnan(vals)
        if isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            # a nullable column (Float64, Int64, Arrow's double: Parquet read with pandas' nullable
            # dtypes) can: its NA is a missing value ("us_accuracy: NaN" said otherwise)
            nan &= ~s.isna().to_numpy()
        wrong = np.zeros(n, bool)
    else:
        # Object or text columns: in a text column (CSV read as str) a NaN is an empty cell.
        text_col = pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype)
        vals = np.full(n, np.nan)
        wrong = np.zeros(n, bool)
        nan = np.zeros(n, bool)
        # Fast path (CSV cells): plain decimal numbers parsed by Arrow, which rounds correctly, as
        # Python's float does, so the values are the same bit for bit. ~50x faster than the
        # loop below, which still sees every other cell (commas, NaN, inf, wrong types).
        plain = _plain_numbers(s)
        if plain is not None:
            ok, parsed, null = plain
            vals[ok] = parsed
            # Missing cells (None, NA; NaN too in a text column) give nothing in the loop below:
            # left out of it (an absent column is all None: ~1 us a cell for nothing). An object
            # column's NaN or NaT is null in Arrow too, but a NaN measurement or a wrong type there.
            if not text_col and null.any():
                at = np.flatnonzero(null)
                cells = s.to_numpy(dtype=object)[at]
                null[at] = _none_or_na(cells)
            rest = np.flatnonzero(~ok & ~null)
            obj = s.iloc[rest].astype(object).to_numpy()
        else:
            rest = np.arange(n)
            obj = s.astype(object).to_numpy()
        for j, i in enumerate(rest.tolist()):
            v = obj[j]
            if v is None or v is pd.NA:
                continue
            if isinstance(v, (bool, np.bool_)):
                wrong[i] = True
            elif isinstance(v, (int, float, np.integer, np.floating, decimal.Decimal)):
                # Decimal: a Parquet decimal128 column (decimal(5, 4) accuracies), quarantined
                # whole as "Decimal('0.8100') is not a number"; float() rounds it correctly
                try:
                    f = float(v)
                except OverflowError:   # a JSON integer past float64 (10**400): beyond any column
                    f = math.inf if v > 0 else -math.inf
                if math.isnan(f):
                    nan[i] = not text_col
                else:
                    vals[i] = f
            elif isinstance(v, str):
                t = number_text(v)
                if t == "":
                    continue
                try:
                    vals[i] = float(t) if t is not None else math.nan
                except ValueError:
                    t = None
                if t is None:
                    wrong[i] = True
                    vals[i] = math.nan
                    continue
                if math.isnan(vals[i]):
                    nan[i] = True
            else:
                wrong[i] = True
        at = rest[ambiguous_thousands(obj)]   # "1,500" among "0,5"s: 1.5 or 1500?
        wrong[at], vals[at] = True, math.nan
    if integer:
        frac = np.isfinite(vals) & (np.floor(vals) != vals)
        wrong = wrong | frac
    return vals, wrong, nan


def _none_or_na(cells: np.ndarray) -> np.ndarray:
    """A mask of the ``cells`` (an object array) that are None or pd.NA: vectorized for None
    (~10 ms per million), one by one for the other missing values (NaN, NaT, NA)."""
    try:
        out = np.equal(cells, None).astype(bool)   # (NaN, NaT, NA: False)
    except (TypeError, ValueError):   # a cell whose == is no bool (an array: a list column's cell)
        return np.fromiter((v is None or v is pd.NA for v in cells), bool, len(cells))
    other = np.flatnonzero(pd.isna(cells) & ~out)
    if len(other):
        out[other] = np.fromiter((v is pd.NA for v in cells[other]), bool, len(other))
    return out


#: A decimal number as Arrow's cast parses it: no spaces, commas, underscores, nan or inf.
_PLAIN_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def _as_strings(s: pd.Series) -> pa.Array | None:
    """The series as an Arrow string array when every cell is a string or missing (None, NaN,
    NA), else None. Zero-copy for pandas' Arrow-backed ``str`` columns (CSV read as text)."""
    if len(s) and s.dtype == object and s.iloc[0] is None and _none_or_na(s.to_numpy()).all():
        # an absent column (validate's None a row): ~3x cheaper than Arrow's look at every cell
        return pa.nulls(len(s), pa.string())
    try:
        arr = pa.array(s, from_pandas=True)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        # OverflowError: a JSON integer >= 2**63 (Arrow converts ints to int64 first); the slow
        # path of the caller takes such cells one by one
        return None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    return arr if pa.types.is_string(arr.type) else None


def _plain_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(mask of the cells that are plain decimal numbers of a finite value, their float64 values,
    mask of the cells that are null in Arrow: None, NA, NaN, NaT), or None when the cells are not
    all strings or missing (JSON values, numbers in object columns)."""
    arr = _as_strings(s)
    if arr is None:
        return None
    null = arr.is_null().to_numpy(zero_copy_only=False)
    if arr.null_count == len(arr):   # an absent column: nothing to match
        return np.zeros(len(arr), bool), np.zeros(0), null
    try:
        # Most columns: every cell a number to Arrow, in one cast (the regex below costs ~0.2 s per
        # million cells). Arrow reads exactly the plain numbers and the spellings of NaN and
        # infinity ("nan", "Inf", "nan(1)"; "1e400" overflows): the cells it reads as no finite
        # number are left to the caller, as the regex leaves them.
        parsed = arr.cast(pa.float64())
    except pa.ArrowInvalid:   # a cell of another text ("0,5", " 1", "85%"): the regex tells which
        ok = pc.fill_null(pc.match_substring_regex(arr, _PLAIN_NUMBER), False)
        return ok.to_numpy(zero_copy_only=False), pc.filter(arr, ok).cast(pa.float64()).to_numpy(), null
    ok = pc.fill_null(pc.is_finite(parsed), False)
    return ok.to_numpy(zero_copy_only=False), pc.filter(parsed, ok).to_numpy(), null


def _is_utf8(text: str) -> bool:
    """Whether ``text`` can be stored (UTF-8): a lone surrogate, such as JSON's ``"\\ud800"``
    escape gives, cannot, and Arrow raised on it (a traceback for the whole input)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _coerce_string(s: pd.Series) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(an Arrow string array, mask of cells of a wrong type, mask of texts that are no valid
    Unicode: :func:`_is_utf8`); integers become their text."""
    arr = _as_strings(s)
    if arr is not None:  # fast path: every cell a string or missing
        return arr, np.zeros(len(s), bool), np.zeros(len(s), bool)
    obj = s.astype(object).to_numpy()
    out: list[str | None] = []
    wrong = np.zeros(len(s), bool)
    bad_text = np.zeros(len(s), bool)
    for i, v in enumerate(obj):
        if isinstance(v, (bytes, bytearray)):   # a Parquet binary column: its text ("b'c'" was "bytes is not a string")
            v = bytes_text(v)
        if _is_missing(v):
            out.append(None)
        elif isinstance(v, str) and not _is_utf8(v):
            out.append(None)
            bad_text[i] = True
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            out.append(str(v))
        else:
            out.append(None)
            wrong[i] = True
    return pa.array(out, type=pa.string()), wrong, bad_text


def _is_in(arr: pa.Array, values: Sequence[str]) -> np.ndarray:
    return pc.fill_null(pc.is_in(arr, value_set=pa.array(values, pa.string())), False).to_numpy(zero_copy_only=False)


#: A time of day and a zone after a date: "T10:00", " 10:00:00.5 PM", "Z", "+02:00", " UTC".
_TIME = (r"(?:(?:T|\s+)\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s*[AaPp][Mm])?)?"
         r"(?:\s*(?:Z|[+-]\d{2}(?::?\d{2})?|UTC|GMT))?")
#: Dates that say which number is the day: year first (ISO 8601, or with slashes or dots) ...
_YMD = re.compile(rf"(\d{{4}})([-/.])(\d{{1,2}})\2(\d{{1,2}})({_TIME})")
_ISO = rf"^\s*\d{{4}}-\d{{2}}-\d{{2}}{_TIME}\s*$"
#: ... or a month name ("3 Apr 2024", "April 3, 2024", "Wed, 03 Apr 2024 10:00:00 GMT").
_NAMED = re.compile(rf"(?:[A-Za-z]{{3,9}},?\s+)?(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s+(?P<m1>[A-Za-z]{{3,9}})\.?"
                    rf"|(?P<m2>[A-Za-z]{{3,9}})\.?\s+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?),?\s+(?P<y>\d{{4}})(?P<rest>{_TIME})")
#: Day and month as numbers, year last ("03/04/2024"): which is the day is read from the column.
_DMY = re.compile(rf"(\d{{1,2}})([-/.])(\d{{1,2}})\2(\d{{2}}|\d{{4}})({_TIME})")
#: Go's ``time.Time.String()`` ("2024-05-01 12:00:00.123456789 +0000 UTC", "... +0200 CEST m=+0.000012345"):
#: its offset says the instant; the zone's abbreviation after it (a name, or the offset's hours,
#: "+03", where the zone has none) and the monotonic clock's reading ("m=+0.001") say nothing more.
_GO = re.compile(r"(\d{4}-\d{2}-\d{2}\s+\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\s+([+-])(\d{2})(\d{2}))"
                 r"\s+(?:([A-Za-z]{1,6})|([+-])(\d{2})(\d{2})?)(?:\s+m=[+-]?\d+(?:\.\d+)?)?")


def _go_time(m: re.Match) -> str | None:
    """A :data:`_GO` time without its zone's name, or None where the name contradicts the offset
    ("+0200 UTC", "+0200 +03"): which of the two is right is unknown."""
    sign, hh, mm, name, sign2, hh2, mm2 = m.group(2, 3, 4, 5, 6, 7, 8)
    if name is not None and name.upper() in ("UTC", "GMT", "Z") and (hh, mm) != ("00", "00"):
        return None
    if sign2 is not None and (sign2, hh2, mm2 or "00") != (sign, hh, mm):
        return None
    return m[1]


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass
class _DateOrder:
    """The day/month order of one timestamp column, over the pieces of one input read so far: the
    first text that told each order, the first day/month text read by the order told, and the
    first refused because no order was told yet."""

    day_first: str | None = None
    month_first: str | None = None
    read: str | None = None
    undecided: str | None = None

    def problem(self, column: str) -> str | None:
        """Why the pieces were read otherwise than the whole input would have been, or None."""
        if self.day_first is not None and self.month_first is not None and self.read is not None:
            return (f"{column}: the input has dates day first ({self.day_first!r}) and month first "
                    f"({self.month_first!r}), so which number is the day is unknown: write dates as ISO 8601 "
                    "(YYYY-MM-DD)")
        told = self.day_first or self.month_first
        if told is not None and self.undecided is not None:
            return (f"{column}: {self.undecided!r} is ambiguous, and {told!r}, the first date that tells the "
                    "day/month order, comes after it (a large input is read in pieces, and the order was not known "
                    "yet): write dates as ISO 8601 (YYYY-MM-DD)")
        return None


@dataclass
class WholeInput:
    """What the validated pieces of one input (a large file, read in pieces) decided so
    far, given to :func:`validate` for each piece: a piece follows the decisions of the pieces before
    it (a day/month order), and :meth:`problem` says when an earlier piece was read otherwise than
    the whole input would have been (then nothing of the input may be stored). Each piece read on
    its own, one file stored '03/04/2024' as April 3 in one piece and as March 4 in the next."""

    dates: dict[str, _DateOrder] = field(default_factory=dict)
    #: (accuracy column, task) -> [values in (1, 100], finite values, values in (0, 1] read as
    #: fractions, values in (0, 1] refused as percents], over the pieces read so far: a task is in
    #: percent when most of its values are in (1, 100] (:func:`_flag_percent_tasks`)
    percent_tasks: dict[tuple[str, Any], list[int]] = field(default_factory=dict)
    #: partition column -> name -> rows so far, and the names whose rows were not refused for
    #: their case (:func:`_flag_case_variants`)
    names: dict[str, dict[str, int]] = field(default_factory=dict)
    kept_names: dict[str, set[str]] = field(default_factory=dict)
    #: count column -> [values with a fraction, values, whole values stored, whole values refused],
    #: over the pieces read so far (:func:`_flag_counts_in_units`)
    counts_in_units: dict[str, list[int]] = field(default_factory=dict)
    #: fraction column without a task (data_fraction) -> [percents, values counted, values in (0, 1]
    #: read as fractions, values in (0, 1] refused as percents], over the pieces read so far
    #: (:func:`_flag_percent_column`): as :attr:`percent_tasks`, for the whole column
    percent_columns: dict[str, list[int]] = field(default_factory=dict)

    def problem(self) -> str | None:
        for col, order in self.dates.items():
            why = order.problem(col)
            if why is not None:
                return why
        for col, counts in self.names.items():
            by_fold: dict[str, list[str]] = {}
            for x in sorted(counts, key=lambda x: (-counts[x], x)):
                by_fold.setdefault(x.casefold(), []).append(x)
            for spellings in by_fold.values():
                if len(spellings) < 2:
                    continue
                # read whole, the input keeps only the spelling most rows use (none on a tie)
                top = spellings[0] if counts[spellings[0]] > counts[spellings[1]] else None
                kept = [x for x in spellings if x != top and x in self.kept_names.get(col, ())]
                if kept:
                    x = kept[0]
                    other = next(y for y in spellings if y != x)
                    rows = lambda n: f"{n} row{'s' if n != 1 else ''}"  # noqa: E731
                    return (f"{col}: {printable(repr(x))} ({rows(counts[x])}) differs only in case from "
                            f"{printable(repr(other))} ({rows(counts[other])}): one task, written two ways? Rows of "
                            f"{printable(repr(x))} were read before the other spelling came (a large input is read "
                            "in pieces): write it one way")
        for col, (k, n, read, refused) in self.counts_in_units.items():
            if 2 * k > n and read:
                return (f"{col}: its values mostly have a fraction ({k} of {n}), a count in a unit (millions?), but "
                        f"{read} whole value(s) were read as counts before that was known (a large input is read in "
                        f"pieces): set its unit ('units: {{{col}: millions}}' or thousands in a --mapping)")
            if 2 * k <= n and refused:
                return (f"{col}: {refused} whole value(s) were refused in a piece where most values had a fraction, "
                        f"but most of the input's are whole ({n - k} of {n}; a large input is read in pieces): give "
                        "the column one unit")
        for (col, task), (k, n, read, refused) in self.percent_tasks.items():
            which = f"{_TASK_OF[col]} {printable(repr(task))}"
            if 2 * k > n and read:
                return (f"{col}: the values of {which} are mostly in (1, 100] ({k} of {n}), percents, but {read} of "
                        f"its values <= 1 {'were' if read != 1 else 'was'} read as fractions before that was known "
                        "(a large input is read in pieces): 0.5 % would be stored as 50 %; give the column one unit "
                        f"(fractions, or percents with 'units: {{{col}: percent}}' in a --mapping)")
            if 2 * k <= n and refused:
                return (f"{col}: {which} mixes fractions and percents ({k} of {n} values in (1, 100]; {refused} of "
                        f"its values <= 1 {'were' if refused != 1 else 'was'} refused as percents in a piece where "
                        "most of its values were above 1, a large input is read in pieces): give the column one unit "
                        f"(fractions, or percents with 'units: {{{col}: percent}}' in a --mapping)")
        for col, (k, n, read, refused) in self.percent_columns.items():
            if 2 * k > n and read:
                return (f"{col}: its values are mostly in (1, 100] ({k} of {n}), percents, but {read} of its values "
                        f"<= 1 {'were' if read != 1 else 'was'} read as fractions before that was known (a large input "
                        f"is read in pieces): 0.5 % would be stored as 50 %; {col} is a fraction: write its values "
                        "as fractions (50 % as 0.5)")
            if 2 * k <= n and refused:
                return (f"{col}: mixes fractions and percents ({k} of {n} values in (1, 100]; {refused} of its values "
                        f"<= 1 {'were' if refused != 1 else 'was'} refused as percents in a piece where most values "
                        f"were above 1, a large input is read in pieces): {col} is a fraction: write its values as "
                        "fractions (50 % as 0.5)")
        return None


def _timestamp_texts(texts: Sequence[str], order: _DateOrder | None = None,
                     ) -> tuple[list[str | None], dict[int, tuple[str, str]]]:
    """Date texts as texts pandas reads without a guess (ISO 8601, or a month name), None where
    a text is no date we read, and the reason and kind of each text refused for its day/month order.

    pandas' ``format="mixed"`` read each value on its own, guessing: '03/04/2024' was March 4
    and '13/04/2024' of the same column April 13; '1 2 3' was 2003-01-02, 'April' 0001-04-01 and
    '12:30' today. Here a date whose day and month are both numbers takes its column's order,
    told by the values with a day above 12 (among ``texts``: one validated input); with none to
    tell it, its ambiguous dates are refused, never guessed, and with both orders all of its
    day/month dates are. Two-digit years are refused (03/04/24:
    2003-04-24?), as are texts of no date (a year, a month, a time alone). ``order``: what the
    pieces of the same input read before told (updated with these texts)."""
    out: list[str | None] = [None] * len(texts)
    dmy: list[tuple[int, int, int, str, str]] = []   # position, first, second, year, rest
    order = order if order is not None else _DateOrder()
    day_first, month_first = order.day_first, order.month_first
    for i, t in enumerate(texts):
        t = t.strip()
        if m := _YMD.fullmatch(t):
            out[i] = f"{m[1]}-{int(m[3]):02d}-{int(m[4]):02d}{m[5]}"
        elif m := _GO.fullmatch(t):
            out[i] = _go_time(m)
        elif m := _NAMED.fullmatch(t):
            # pandas (dateutil) reads a year below 100 as two digits even when written with four:
            # "01 Jan 0001", the unknown-time placeholder, was 2001-01-01 and "3 Jan 0024" 2024
            out[i] = t if int(m["y"]) >= 100 else _named_iso(m)
        elif (m := _DMY.fullmatch(t)) and len(m[4]) == 4:
            a, b = int(m[1]), int(m[3])
            dmy.append((i, a, b, m[4], m[5]))
            if 31 >= a > 12 >= b >= 1 and day_first is None:   # (no date, such as 13/00, tells nothing)
                day_first = t
            elif 31 >= b > 12 >= a >= 1 and month_first is None:
                month_first = t
    why: dict[int, tuple[str, str]] = {}
    for i, a, b, y, rest in dmy:
        t = texts[i].strip()
        if day_first is not None and month_first is not None:
            why[i] = (f"{t!r}: the column has dates day first ({day_first!r}) and month first ({month_first!r}), "
                      "so which number is the day is unknown: write dates as ISO 8601 (YYYY-MM-DD)",
                      "day/month order differs within the column")
        elif day_first is not None or month_first is not None:
            d, mo = (a, b) if day_first is not None else (b, a)
            out[i] = f"{y}-{mo:02d}-{d:02d}{rest}"
            order.read = order.read or t
        elif a == b or a > 12 or b > 12:   # the same either way, or no date (left to pandas: NaT)
            out[i] = f"{y}-{b:02d}-{a:02d}{rest}"
        else:
            order.undecided = order.undecided or t
            why[i] = (f"{t!r} is ambiguous: {a} {_MONTHS[b - 1]} or {_MONTHS[a - 1]} {b}? (no date in its column "
                      f"has a day above 12 to tell the order) write it as ISO 8601 ({y}-{b:02d}-{a:02d} or {y}-{a:02d}-{b:02d})",
                      "ambiguous day and month (write ISO 8601)")
    order.day_first, order.month_first = day_first, month_first
    return out, why


def _named_iso(m: re.Match) -> str | None:
    """A :data:`_NAMED` date as ISO 8601 with its year as written, or None for no month name
    (the names dateutil reads: the full name, its first three letters, "Sept")."""
    name = (m["m1"] or m["m2"]).lower()
    month = next((k for k, full in enumerate(_MONTHS, 1)
                  if name in (full.lower(), full[:3].lower()) or (k == 9 and name == "sept")), None)
    return None if month is None else f"{m['y']}-{month:02d}-{int(m['d1'] or m['d2']):02d}{m['rest']}"


#: The digits of a second past its microseconds, in a time of day ("10:00:00.123456789").
_SUB_MICRO = re.compile(r"(:\d{2}[.,]\d{6})\d+")


def _in_microseconds(v: Any) -> Any:
    """A time cell without its digits past microseconds (a text's, or a pandas or numpy time's in
    nanoseconds, as a ``datetime``): pandas reads no cell of it in nanoseconds then."""
    if isinstance(v, str):
        return _SUB_MICRO.sub(r"\1", v)
    if isinstance(v, np.datetime64) and not np.isnat(v):
        v = pd.Timestamp(v)
    if isinstance(v, pd.Timestamp) and v is not pd.NaT:
        return v.floor("us").to_pydatetime()
    return v


def _coerce_timestamp(s: pd.Series, order: _DateOrder | None = None,
                      ) -> tuple[pd.Series, np.ndarray, dict[int, tuple[str, str]]]:
    """(UTC timestamps, mask of cells that are no timestamp, {cell: (reason, kind)} of the dates
    refused for their day/month order); see :func:`_timestamp_texts`."""
    if isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_date(s.dtype.pyarrow_dtype):
        s = s.astype(object)   # datetime.date cells: `.dt.tz` raised NotImplementedError on Arrow's dates
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ts = s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
        return ts.dt.tz_convert("UTC"), np.zeros(len(s), bool), {}
    if s.isna().all():   # a column the input does not have: no parsing
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]"), np.zeros(len(s), bool), {}
    obj = s.astype(object)
    # a blank text is no value, as in a number column ("" from JSON Lines was a wrong type), and
    # so are the usual "not recorded" texts (MISSING_TOKENS): pandas' `to_csv(na_rep='NaN')` writes
    # a missing timestamp as "NaN", and each such row was quarantined for its optional started_at
    # where its number columns stored null (every timestamp column an input fills is optional)
    missing = obj.map(lambda v: _is_missing(v) or (isinstance(v, str) and (
        not v.strip() or v.strip().lower() in MISSING_TOKENS))).to_numpy(bool)
    # Only text and datetimes are timestamps: pandas would read a number as nanoseconds since 1970.
    arr = _as_strings(s)
    texty = (np.ones(len(s), bool) if arr is not None else   # text (a CSV column): no loop
             obj.map(lambda v: isinstance(v, (str, _dt.datetime, _dt.date, np.datetime64))).to_numpy(bool))
    cells = obj.where(~missing & texty, None)
    if arr is not None:   # ISO 8601 cells (most, or all) need no reading over in Python: ~5x faster
        iso = pc.fill_null(pc.match_substring_regex(arr, _ISO), True).to_numpy(zero_copy_only=False)
        text_at = np.flatnonzero(~iso & ~missing)
    else:
        text_at = np.flatnonzero(cells.map(lambda v: isinstance(v, str)).to_numpy(bool))
    why: dict[int, tuple[str, str]] = {}
    if len(text_at):
        read, refused = _timestamp_texts(cells.iloc[text_at].tolist(), order)
        cells.iloc[text_at] = read
        why = {int(text_at[j]): r for j, r in refused.items()}
    ts = pd.to_datetime(cells, errors="coerce", utc=True, format="mixed")
    if (ts.isna().to_numpy() & ~missing).any():
        # one text with more than 6 digits of a second (Go's RFC 3339 nano, .NET's 7-digit ticks)
        # makes pandas read the whole column in nanoseconds, whose range is years 1677 to 2262:
        # every other time outside it was "no such date or time", Go's and .NET's unknown-time
        # placeholders (0001-01-01, stored as null) among them. The column keeps microseconds:
        # read again without the digits past them (as flooring them does). Only when a cell
        # was no time (none, in most columns).
        short = cells.map(_in_microseconds)
        if not short.equals(cells):
            ts = pd.to_datetime(short, errors="coerce", utc=True, format="mixed")
    wrong = ts.isna().to_numpy() & ~missing
    wrong[list(why)] = False
    return ts, wrong, why


def _coerce_map(s: pd.Series) -> tuple[list[list[tuple[str, str]] | None], np.ndarray, dict[int, str]]:
    """(each cell as sorted (key, value) pairs, or None; mask of cells that are no map; the
    reason of a cell that is a map the store cannot hold, :func:`_map_problem`)."""
    out: list[list[tuple[str, str]] | None] = []
    wrong = np.zeros(len(s), bool)
    why: dict[int, str] = {}
    cells = s.to_numpy(dtype=object)
    if not len(cells) or _none_or_na(cells).all():   # an absent column (most inputs have no extra): ~1 us a row for nothing
        return [None] * len(cells), wrong, why
    prev: Any = None
    for i, v in enumerate(cells):
        if i and v is prev:
            # the rows of one MLflow run share one dict: convert it once (~5 us a row, 0.7 s for
            # 160,000 rows otherwise)
            out.append(out[-1])
            wrong[i] = wrong[i - 1]
            if i - 1 in why:
                why[i] = why[i - 1]
            continue
        prev = v
        pairs: Any = None
        # pd.NA (a nullable string column's missing cell), a blank text and the usual "not
        # recorded" texts are no map, as in the other columns: each was "wrong type", its row lost
        if _is_missing(v) or (isinstance(v, str) and (not v.strip() or v.strip().lower() in MISSING_TOKENS)):
            out.append(None)
            continue
        if isinstance(v, Mapping):
            pairs = v.items()
        elif isinstance(v, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in v):
            pairs = v
        elif isinstance(v, str):
            try:
                d = json.loads(v)
            except (ValueError, RecursionError):
                d = None
            pairs = d.items() if isinstance(d, dict) else None
        if pairs is None:
            out.append(None)
            wrong[i] = True
            continue
        # a missing value is "" whatever the input's shape (NaN was "nan" in a list of pairs)
        m = sorted((_key_text(k), "" if _is_missing(x) else extra_text(x)) for k, x in pairs)
        problem = _map_problem(m)
        if problem is None:
            m, problem = _ds_test_size(m)
        if problem is not None:
            out.append(None)
            wrong[i] = True
            why[i] = problem
        else:
            out.append(list(dict(m).items()))   # repeats of one pair once
    return out, wrong, why


def _ds_test_size(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str | None]:
    """``pairs`` with the DS test-set size (:data:`~meta_study.schema.EXTRA_DS_TEST_SIZE`, the one
    key of ``extra`` the analysis reads) as the integer text it reads ("1,000", "1e4" and "10000.0",
    a float column's, are "1000", "10000" and "10000"), and why a size that is no whole number of
    examples, at least 1, is none (else None). Stored as written, "1,000" and "10k" were an unknown
    size (no binomial floor under the task's intervals, without a word) and "0.5" a size of half
    an example (a floor of +-100 points). Empty, or a "not recorded" text: unknown, stored empty."""
    out = []
    for k, x in pairs:
        if k == EXTRA_DS_TEST_SIZE:
            t = x.strip()
            if not t or t.lower() in MISSING_TOKENS:
                x = ""
            else:
                try:
                    d = decimal.Decimal(number_text(t) or "x")
                except decimal.InvalidOperation:
                    d = None
                # (past int64, no test set: "1e5000" failed the whole ingest with a traceback, int's
                # 4300-digit limit, and "1e400000000" hung it building a 166 MB integer)
                if d is None or not d.is_finite() or d < 1 or d > _INT_LIMITS[pa.int64()] or d != d.to_integral_value():
                    return pairs, (f"{k} {printable(repr(x))} is no test-set size (a whole number of examples, at "
                                   "least 1; leave it empty where unknown)")
                x = str(int(d))
        out.append((k, x))
    return out, None


def _map_problem(pairs: list[tuple[str, str]]) -> str | None:
    """Why sorted (key, value) pairs are no string -> string map the store can hold, or None: a
    key given twice with different values (a list of pairs, or ``{1: .., "1": ..}``, whose keys are
    one text) was stored twice, and a reader that takes the map as a dict keeps either (the
    analysis reads ``ds_n`` from it); a lone surrogate cannot be stored (Arrow raised)."""
    for (k, a), (k2, b) in zip(pairs, pairs[1:]):
        if k == k2 and a != b:
            return f"key {printable(repr(k))} given twice, with different values ({printable(repr(a))}, {printable(repr(b))})"
    for k, x in pairs:
        if not _is_utf8(k):
            return f"key {_bad_text(k)}"
        if not _is_utf8(x):
            return f"{printable(repr(k))}: {_bad_text(x)}"
    return None


def bytes_text(v: bytes | bytearray | memoryview) -> str:
    """Bytes (a Parquet ``binary`` column's cell, pyarrow gives them as ``bytes``) as the text they
    hold: UTF-8 decoded, not Python's repr (``b'caf\\xc3\\xa9'``, which no reader takes for
    "café"). Bytes that are no UTF-8 keep each such byte as a lone surrogate (``\\udcff`` for 0xff,
    Python's ``surrogateescape``): no text the store can hold, so :func:`validate` gives the row a
    reason (:func:`_bad_text`) rather than storing a guess."""
    return bytes(v).decode("utf-8", "surrogateescape")


def _bad_text(text: str) -> str:
    """A text that cannot be stored (:func:`_is_utf8`), shown for a reason: bytes that are no UTF-8
    (:func:`bytes_text`) as those bytes, a lone surrogate from a JSON escape as its escape."""
    if all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return (f"{printable(repr(text.encode('utf-8', 'surrogateescape')))} is no valid Unicode text (bytes that are "
                "no UTF-8: a binary column? store them as text, or as hex)")
    return f"{printable(repr(text))} is no valid Unicode text (a lone surrogate)"


def _json_default(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes_text(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (pd.Timestamp, _dt.datetime, _dt.date)):
        return v.isoformat()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def extra_text(v: Any) -> str:
    """A value for ``extra`` (string -> string): a string as it is, anything else as JSON, so a
    nested object from a JSONL export is stored as ``{"a": [1, 2]}`` and a boolean as ``true``,
    never as a Python repr (``{'a': [1, 2]}``, ``True``) that no other reader parses."""
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):   # a Parquet binary column: its text, not "b'...'"
        return bytes_text(v)
    if v is None:                 # a missing value: empty, as a missing cell of an extra column
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        # exact, past Python's 4,300-digit limit on str(int) too (its ValueError failed the whole
        # input); Decimal's text has no such limit
        v = int(v)
        return str(v) if v.bit_length() <= 14_000 else format(decimal.Decimal(v), "f")
    if isinstance(v, (float, np.floating)):
        return str(v.item() if isinstance(v, np.generic) else v)
    if isinstance(v, (Mapping, list, tuple, np.ndarray)):
        return json.dumps(_finite(v), default=_json_default, ensure_ascii=False)
    d = _json_default(v)          # a timestamp as ISO 8601 text, anything else as its str
    return d if isinstance(d, str) else json.dumps(d)


def _key_text(k: Any) -> str:
    """A key of ``extra`` (or of a JSON object) as text: bytes decoded (:func:`bytes_text`), not "b'...'"."""
    return bytes_text(k) if isinstance(k, (bytes, bytearray, memoryview)) else str(k)


def int_text(v: int) -> str:
    """An integer's decimal text, or past Python's limit on it (4,300 digits: ``str`` raises
    "Exceeds the limit ... for integer string conversion", and the quarantine payload of a row
    holding one failed the whole input) its first and last digits and how many there are:
    ``"999999...999999 (5000 digits)"``."""
    try:
        return str(v)
    except ValueError:
        pass
    a = abs(v)
    d = int(math.log10(a)) + 1
    d = d + 1 if a >= 10 ** d else d - 1 if a < 10 ** (d - 1) else d   # (the float's rounding)
    return f"{'-' if v < 0 else ''}{a // 10 ** (d - 6)}...{a % 10 ** 6:06d} ({d} digits)"


def printable(text: str) -> str:
    """``text`` with every character that a terminal acts on (control characters such as ANSI
    escapes and line breaks, bidi overrides, other invisible format characters) written as its
    Python escape (``\\x1b``, ``\\n``, ``\\u202e``): values from a source printed on one line,
    as written."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def row_json(row: Mapping[str, Any]) -> str:
    """A row as compact JSON, for quarantine payloads. NaN is written as the string "NaN"."""
    return json.dumps(_finite(row), default=_json_default, sort_keys=True, allow_nan=False)


def _finite(v: Any) -> Any:
    """NaN and infinities (at any depth) as the strings "nan" / "inf" / "-inf": JSON has no such
    numbers; an integer past Python's limit on its decimal text as :func:`int_text` writes it."""
    if isinstance(v, (float, np.floating)) and not math.isfinite(v):
        return str(float(v))
    if isinstance(v, int) and v.bit_length() > 14_000:   # (4,300 digits: ~14,284 bits)
        t = int_text(v)
        return v if t.lstrip("-").isdigit() else t   # (within the limit: the number, as written)
    if isinstance(v, Mapping):
        return {_key_text(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


#: Quarantine payloads of the rows at the given positions: a list, or a function that builds only
#: the payloads of the rejected rows (JSON for every row costs ~70 us each, most of an ingest).
RawPayloads = Union[Sequence[str], Callable[[np.ndarray], Sequence[str]]]


class _Flags:
    """The reasons of one :func:`validate`: ``flag(mask, message, kind)`` gives every row in
    ``mask`` a reason (a string, or a function of the row's position that builds it) and counts
    it under ``kind``, the reason without the row's value (default: the message itself)."""

    def __init__(self) -> None:
        self.reasons: dict[int, list[str]] = {}   # only rejected rows have an entry: most rows have none
        self.kinds: dict[int, set[str]] = {}
        self.above_one: dict[str, tuple[int, int]] = {}
        #: fraction column -> its cells that are a percent written with its sign ("85%") in a row
        #: no unit converted: quarantined, and percents to the "mostly percent" rules
        self.signed: dict[str, np.ndarray] = {}
        self.zeros: dict[str, int] = {}    # fraction column -> its zeros (not converted from a unit)

    def __call__(self, mask: np.ndarray, msg: Any, kind: str | None = None) -> None:
        k = kind if kind is not None else (msg if isinstance(msg, str) else "?")
        for i in np.flatnonzero(mask).tolist():
            self.reasons.setdefault(i, []).append(msg(i) if callable(msg) else msg)
            self.kinds.setdefault(i, set()).add(k)

    def one(self, i: int, msg: str, kind: str) -> None:
        """Row ``i`` gets the reason ``msg``, counted under ``kind``."""
        self.reasons.setdefault(i, []).append(msg)
        self.kinds.setdefault(i, set()).add(kind)

    def kind_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ks in self.kinds.values():
            for k in ks:
                out[k] = out.get(k, 0) + 1
        return out



def validate(frame: pd.DataFrame, *, raw: RawPayloads | None = None, whole: WholeInput | None = None) -> Validated:
    """Coerce raw rows to the canonical schema and give a reason for each bad row.

    Args:
        frame: raw rows with canonical column names. Missing columns are treated as null;
            unknown columns are an error (put them in ``extra`` first).
        raw: optional payload per row for the quarantine (defaults to the row as JSON): a list,
            or a function of the rejected rows' positions.
        whole: for one piece of a larger input, what the pieces before it decided (updated);
            the caller refuses the input when :meth:`WholeInput.problem` says so after its last piece.

    Returns:
        :class:`Validated` with the good rows as an Arrow table and the rejected rows with reasons.
        Reasons name the column and the problem, e.g. ``"ds_accuracy: 87.5 out of range [0, 1]"``.
    """
    unknown = [c for c in frame.columns if c not in COLUMN_BY_NAME and c not in _SOURCE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; map them to canonical names or to 'extra'")
    twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if twice:   # frame[name] would be a frame: an AttributeError deep inside
        raise ValueError(f"columns given twice: {twice}; map one input column to each canonical name")
    n = len(frame)
    frame = frame.reset_index(drop=True)
    flag = _Flags()
    reasons = flag.reasons

    arrays: dict[str, pa.Array] = {}
    units: dict[str, np.ndarray | None] = {}
    for col in COLUMNS:
        # The store owns ingested_at and schema_version: whatever an input says is ignored.
        present = col.name in frame.columns and col.name not in STORE_FILLED
        s = frame[col.name] if present else pd.Series(np.full(n, None, dtype=object))   # (not from a list: ~5 ms a column)
        unit = units[col.name] = _converted(frame, col.name)
        order = (whole.dates.setdefault(col.name, _DateOrder())
                 if whole is not None and present and pa.types.is_timestamp(col.type) else None)
        arrays[col.name] = _column_array(col, s, flag, unit, order, whole)
    _check_across_columns(frame, arrays, flag)
    for acc, task in (("us_accuracy", "us_task"), ("ds_accuracy", "ds_task")):
        _flag_percent_tasks(acc, arrays[acc], task, arrays[task], units[acc], flag, whole)
    _flag_percent_column("data_fraction", arrays["data_fraction"], flag, whole)
    _flag_source_reasons(frame, flag)

    bad = np.zeros(n, bool)
    bad[list(reasons)] = True
    ends_early = _ends_before_start(frame, arrays, ~bad)
    table = pa.table(arrays, schema=_INPUT_SCHEMA)
    good_idx = np.flatnonzero(~bad)
    if len(good_idx) < n:  # a take copies every column: ~0.15 s for 160,000 rows, for nothing when all are good
        table = table.take(pa.array(good_idx, type=pa.int64()))
    return Validated(table=table, rejected=_rejected_rows(frame, np.flatnonzero(bad), reasons, raw),
                     reason_kinds=flag.kind_counts(), above_one=dict(flag.above_one), ends_before_start=ends_early,
                     percent_evidence={c: (int(flag.signed[c].sum()) if c in flag.signed else 0, flag.zeros.get(c, 0))
                                       for c in {*flag.signed, *flag.zeros}})


def _converted(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    """Each row's unit of ``column`` (:data:`SOURCE_UNIT`) where it was converted from one, else
    None; None when no row was."""
    if SOURCE_UNIT.get(column) not in frame.columns:
        return None
    u = frame[SOURCE_UNIT[column]].to_numpy(dtype=object)
    u = np.where(pd.Series(u).isin(list(_FROM_FRACTION)).to_numpy(), u, None)
    return u if (u != None).any() else None  # noqa: E711 (elementwise)


def _column_array(col: Column, s: pd.Series, flag: _Flags, unit: np.ndarray | None = None,
                  order: _DateOrder | None = None, whole: WholeInput | None = None) -> pa.Array:
    """One input column as the Arrow array of ``col``'s type; its bad cells are flagged (and null).
    ``unit``: each cell's :data:`SOURCE_UNIT` (an accuracy column), or None; ``order``: a timestamp
    column's day/month order told by the pieces of its input before, ``whole``: what they decided
    (:class:`WholeInput`)."""
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        return _numeric_array(col, s, flag, unit, whole)
    if pa.types.is_string(t):
        return _string_array(col, s, flag, whole)
    if pa.types.is_timestamp(t):
        return _timestamp_array(col, s, flag, order)
    if pa.types.is_map(t):
        vals_m, wrong, why = _coerce_map(s)
        wrong[list(why)] = False
        flag(wrong, f"{col.name}: wrong type (expected a string -> string map)")
        for i, reason in why.items():
            kind = ("key given twice" if "given twice" in reason else
                    f"{EXTRA_DS_TEST_SIZE} is no test-set size" if "no test-set size" in reason else "no valid Unicode text")
            flag.one(i, f"{col.name}: {reason}", f"{col.name}: {kind}")
        return pa.array(vals_m, type=t)
    raise TypeError(f"unsupported column type {t}")  # pragma: no cover - the schema has no other types


def _numeric_array(col: Column, s: pd.Series, flag: _Flags, unit: np.ndarray | None = None,
                   whole: WholeInput | None = None) -> pa.Array:
    """A number column: wrong types, NaN where it is not allowed, missing required values,
    infinities, values out of range and integers too large for the column are flagged."""
    t = col.type
    integer = pa.types.is_integer(t)
    v, wrong, nan = _coerce_numeric(s, integer)
    optional = not (col.required and col.name not in STORE_FILLED)
    if optional:
        # The usual "not recorded" texts (pandas' `to_csv(na_rep='NaN')`, R's `NA`, a spreadsheet's
        # `#N/A`) are missing values in an optional column, integer or float alike: an integer
        # column quarantined every row of such a file ("shots: NaN") where a float column stored
        # null. A required column keeps its reason (NaN, wrong type).
        token = _missing_tokens(s, np.flatnonzero(wrong | nan))
        wrong, nan = wrong & ~token, nan & ~token
    what = 'an integer' if integer else 'a number'
    pct = _percent_texts(col, s, wrong)
    if pct.any():
        flag.signed[col.name] = pct if unit is None else pct & (unit == None)  # noqa: E711 (elementwise)
    flag(wrong & ~pct, lambda i, c=col.name, ss=s: f"{c}: wrong type ({shown(ss.iloc[i])} is not {what}"
                                                   f"{_comma_hint(ss.iloc[i])})",
         f"{col.name}: wrong type (not {what})")
    flag(pct, lambda i, c=col.name, ss=s, u=unit: _percent_text_reason(c, ss.iloc[i], None if u is None else u[i]),
         f"{col.name}: a percent written as text"
         + (" (set its unit to percent)" if col.name in SOURCE_UNIT else f" ({col.name} is a fraction)"))
    if col.name in _COUNTS_IN_UNITS:
        _flag_counts_in_units(col.name, v, wrong, flag, whole)
    missing = np.isnan(v) & ~wrong & ~nan
    if not optional:
        flag(nan, f"{col.name}: NaN")
        flag(missing, f"{col.name}: missing required field")
    elif not integer:
        # NaN in an optional hyper-parameter column means "not recorded" (pandas' CSV
        # convention); it is stored as null.
        pass
    else:
        flag(nan & ~s.isna().to_numpy(), f"{col.name}: NaN")
    inf = np.isinf(v)
    flag(inf, lambda i, c=col.name, ss=s, v=v: f"{c}: not finite ({_infinity(ss.iloc[i], v[i])})", f"{col.name}: not finite")
    finite = np.isfinite(v)
    _flag_out_of_range(col, v, finite, flag, unit)
    good = finite
    if integer:
        limit = _INT_LIMITS[t]
        # float64 holds 2**63 exactly; anything at or past it does not fit an int64
        over = finite & ((v > limit) | (v < -limit - 1) | (np.abs(v) >= 2.0 ** 63))
        # float64 holds integers exactly only up to 2**53: a seed 9007199254740993 was stored as
        # ...992 and int64's largest, 2**63 - 1, was refused. Those few cells are read again exactly.
        # So is a text of more digits than float64 keeps (~15): "1.0000000000000001" was read as 1
        # and stored as the integer 1. (Texts only: Arrow counts their lengths, ~ms per million.)
        texts = _as_strings(s) if not pd.api.types.is_numeric_dtype(s.dtype) else None
        long = (np.zeros(len(v), bool) if texts is None else
                pc.fill_null(pc.greater(pc.utf8_length(texts), 15), False).to_numpy(zero_copy_only=False))
        exact = _exact_integers(s, np.flatnonzero(finite & ~wrong & ((np.abs(v) >= 2.0 ** 53) | long)))
        fraction = [i for i, x in exact.items() if x is None]   # "9007199254740993.5": float64 saw an integer
        flag(np.isin(np.arange(len(v)), fraction),
             lambda i, c=col.name, ss=s: f"{c}: wrong type ({shown(ss.iloc[i])} is not an integer)",
             f"{col.name}: wrong type (not an integer)")
        for i, x in exact.items():
            over[i] = x is not None and not -limit - 1 <= x <= limit
        flag(over, lambda i, c=col.name, v=v, t=t, ex=exact: f"{c}: {ex.get(i) or v[i]:g} does not fit the "
             f"column's {t} type", f"{col.name}: does not fit the column's {t} type")
        good = finite & ~over
        good[fraction] = False
        ints = np.where(good & (np.abs(v) < 2.0 ** 63), v, 0).astype("int64")   # 2**63 - 1 is read as 2**63
        for i, x in exact.items():
            if good[i] and x is not None:
                ints[i] = x
        return pa.array(ints, type=pa.int64(), mask=~good).cast(t, safe=False)
    # (+ 0.0: -0.0 is 0.0, as it is stored; "-0.0" was stored as written, printed "-0")
    return pa.array(np.where(good, v, 0.0) + 0.0, type=t, mask=~good)


def _infinity(raw: Any, value: float) -> str:
    """Which infinity a cell read as (``inf``, ``-inf``), for its reason, and what it was where its
    source did not write an infinity: a number beyond float64 (a JSON integer such as ``10**400``,
    a text ``1e400``)."""
    which = "inf" if value > 0 else "-inf"
    if isinstance(raw, np.generic):
        raw = raw.item()
    if isinstance(raw, float) or (isinstance(raw, str) and raw.strip().lstrip("+-").lower() in ("inf", "infinity")):
        return which
    if isinstance(raw, int):   # (its digits: past 4300 of them, str() raises)
        return f"{which}: an integer beyond float64's range"
    return f"{which}: {shown(raw)} is beyond float64's range"


#: Count columns that exports often give in a unit (timm: parameters in millions, 86.57).
_COUNTS_IN_UNITS = ("param_count",)


def _flag_counts_in_units(column: str, v: np.ndarray, wrong: np.ndarray, flag: _Flags,
                          whole_input: WholeInput | None = None) -> None:
    """In a count column whose values mostly have a fraction (86.57: millions, as timm writes
    them, each quarantined as no integer), its whole values are counts in that unit too: stored,
    a 22 (million) among them was 22 parameters. They are quarantined with the unit to set, as a
    fraction column's values <= 1 among percents are (:func:`_flag_percent_column`).
    ``whole_input``: the counts of the pieces of the same input before (updated)."""
    finite = np.isfinite(v)
    fraction = finite & (np.floor(v) != v)
    whole = finite & ~wrong
    k, n = int(fraction.sum()), int((fraction | whole).sum())
    if whole_input is not None:
        acc = whole_input.counts_in_units.setdefault(column, [0, 0, 0, 0])
        acc[0], acc[1] = acc[0] + k, acc[1] + n
        k, n = acc[0], acc[1]
        acc[3 if 2 * k > n else 2] += int(whole.sum())
    if not whole.any() or 2 * k <= n:
        return
    e = f", e.g. {_num(float(v[np.flatnonzero(fraction)[0]]))}" if fraction.any() else ""
    flag(whole, lambda i: (
        f"{column}: {_num(float(v[i]))} among values mostly with a fraction ({k} of {n}{e}): a count in "
        f"millions? {column} is a number of parameters: set its unit ('units: {{{column}: millions}}' or "
        "thousands in a --mapping)"), f"{column}: a whole number among counts with a fraction (a unit?)")


#: (``\d+(?:\.\d*)?``, not ``\d+\.?\d*``: the two ways to split a run of digits backtracked
#: quadratically on a cell of digits that is no number, 8 s for 16,000 of them)
_PERCENT_TEXT = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*%\s*")


def _percent_texts(col: Column, s: pd.Series, wrong: np.ndarray) -> np.ndarray:
    """The ``wrong`` cells of a fraction column (an accuracy, data_fraction) that are a percent
    written as text ("85%", "90.5 %"): their reason says what to do with the unit."""
    out = np.zeros(len(s), bool)
    if col.hi != 1.0 or not wrong.any():
        return out
    for i in np.flatnonzero(wrong).tolist():
        v = s.iloc[i]
        out[i] = isinstance(v, str) and _PERCENT_TEXT.fullmatch(v) is not None
    return out


def _percent_text_reason(column: str, v: str, unit: str | None) -> str:
    """Why a percent written as text ("85%") is not stored, and what to write: no unit is
    guessed (a column with "85%" and "0.9" is half percents, half fractions, or a typo)."""
    m = _PERCENT_TEXT.fullmatch(v)
    assert m is not None
    num = m[1]
    head = f"{column}: {v!r} is a percent written as text: "
    if column not in SOURCE_UNIT:
        return head + f"{column} is a fraction: write {_num(round(float(num) / 100, 12))}"
    frac = _num(round(float(num) / 100, 12))
    if unit in ("percent", "error_percent"):
        return head + f"write {num}, without the % sign (the column's unit is {unit})"
    if unit == "error":
        return head + (f"write {num} and set the column's unit to error_percent, or write the error as the "
                       f"fraction {frac}")
    return head + (f"write {num} and set the column's unit to percent ('units: {{{column}: percent}}' or "
                   f"'accuracy_unit: percent' in a --mapping), or write the fraction {frac}")


def _exact_integers(s: pd.Series, cells: np.ndarray) -> dict[int, int | None]:
    """The exact integer of each of the ``cells`` (positions) of ``s``, or None for a value with a
    fraction that float64 rounded away; a cell read only as a float (a float column) keeps its
    float's value. Python's ``int`` and ``Decimal`` per cell: only cells at or beyond 2**53 in
    magnitude are given (none in most files)."""
    out: dict[int, int | None] = {}
    for i in cells.tolist():
        raw = s.iloc[i]
        if isinstance(raw, (int, np.integer)) and not isinstance(raw, (bool, np.bool_)):
            out[i] = int(raw)
        elif isinstance(raw, (str, decimal.Decimal)):
            try:
                d = raw if isinstance(raw, decimal.Decimal) else decimal.Decimal(number_text(raw) or "x")
            except decimal.InvalidOperation:
                continue
            out[i] = int(d) if d.is_finite() and d == d.to_integral_value() else None
    return out


def _num(x: float) -> str:
    """A number for a reason: ``87.5``, ``100``, ``1e+20``, and every digit that tells it from its
    bound (``1.0000000001``, which ``:g`` wrote as ``1``, "out of range [0, 1]")."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _flag_out_of_range(col: Column, v: np.ndarray, finite: np.ndarray, flag: _Flags,
                       unit: np.ndarray | None = None) -> None:
    """Finite values outside ``[col.lo, col.hi]``. A value converted from another unit (``unit``,
    :data:`SOURCE_UNIT`) is named as its source wrote it, in that unit's range: under a percent
    unit 100.5 was "1.005 out of range [0, 1] (a percent in a fraction field? set its unit to
    percent)", and an error rate 1.2 was "-0.2"."""
    if col.lo is None and col.hi is None:
        return
    bounds = f"[{col.lo if col.lo is not None else -math.inf:g}, {col.hi if col.hi is not None else math.inf:g}]"
    kind = f"{col.name}: out of range {bounds}"
    conv = np.zeros(len(v), bool) if unit is None else (unit != None)  # noqa: E711 (elementwise)
    if col.lo is not None:
        flag(finite & (v < col.lo) & ~conv, lambda i, c=col, v=v: f"{c.name}: {_num(v[i])} out of range {bounds}",
             kind)
    if col.hi is not None:
        # 1 < v <= 100 in a fraction column is almost always a percent: say so. Only an accuracy
        # can have a percent unit (a mapping refuses one on data_fraction).
        hint = (" (a percent in a fraction field? set its unit to percent)" if col.name in SOURCE_UNIT else
                f" (a percent? {col.name} is a fraction: {{}} % is {{}})")
        flag(finite & (v > col.hi) & ~conv, lambda i, c=col, v=v: f"{c.name}: {_num(v[i])} out of range {bounds}"
             + (hint.format(_num(v[i]), _num(round(v[i] / 100, 12))) if c.hi == 1.0 and v[i] <= 100 else ""),
             kind)
        if col.hi == 1.0:
            plain = finite & ~conv   # a converted value above 1 is no percent in a fraction column
            flag.above_one[col.name] = (int((plain & (v > 1) & (v <= 100)).sum()), int(plain.sum()))
            flag.zeros[col.name] = int((plain & (v == 0)).sum())
    if unit is not None:
        out = finite & conv & ((v < (col.lo or 0.0)) | (v > (col.hi if col.hi is not None else math.inf)))
        for u in _FROM_FRACTION:
            raw, rng = _FROM_FRACTION[u]
            flag(out & (unit == u), lambda i, c=col.name, v=v, raw=raw, rng=rng, u=u:
                 f"{c}: {_num(round(raw(float(v[i])), 10))} out of range {rng} (unit {u})",
                 f"{col.name}: out of range {rng} (unit {u})")


#: The task column of each accuracy column.
_TASK_OF = {"us_accuracy": "us_task", "ds_accuracy": "ds_task"}


def _mostly_percent_masks(column: str, v: np.ndarray, plain: np.ndarray,
                          flag: _Flags) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(percents, counted, zeros, signed)`` of a fraction column for the "mostly in (1, 100]"
    rules: a value in (1, 100], or a percent written with its sign ("85%", quarantined for that
    already), is a percent; zeros are 0 in either unit and are not counted (85, 90, a 0.5 % run's
    0.5 and three crashed runs' 0 were "2 of 6", no percent column, and 0.5 % was stored as 50 %;
    "85%", "90%", "70%" beside that 0.5 were counted as no values at all). The pipeline's refusal
    of a file counts the same way."""
    signed = flag.signed.get(column, np.zeros(len(v), bool))
    zeros = plain & (v == 0)
    return (plain & (v > 1) & (v <= 100)) | signed, (plain & ~zeros) | signed, zeros, signed


def _of(k: int, n: int, zeros: int, signed: int) -> str:
    """``3 of 5``, ``3 of 4 nonzero``, ``3 of 4 nonzero, 2 written with a % sign``."""
    return (f"{k} of {n}{' nonzero' if zeros else ''}"
            + (f", {signed} written with a % sign" if signed else ""))


def _task_sums(tasks: pa.Array, rows: np.ndarray, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per task, the sums of ``columns`` (masks) over ``rows`` (a mask), as pandas'
    ``DataFrame({"task": tasks, **columns})[rows].groupby("task", dropna=False).sum()`` gives them
    (the tasks with a row, sorted, a null task last as NaN), by the tasks' codes: every piece of a
    large input is counted, and the groupby over Python strings cost ~0.15 s per 500,000 rows."""
    if isinstance(tasks, pa.ChunkedArray):
        tasks = tasks.combine_chunks()
    enc = pc.dictionary_encode(tasks)
    k = len(enc.dictionary)
    codes = pc.fill_null(enc.indices, k).to_numpy(zero_copy_only=False)[rows]
    size = np.bincount(codes, minlength=k + 1)
    names: list[Any] = enc.dictionary.to_pylist() + [np.nan]
    order = [j for j in sorted(range(k), key=names.__getitem__) if size[j]] + ([k] if size[k] else [])
    sums = {c: np.bincount(codes, weights=m[rows], minlength=k + 1).astype(np.int64)[order] for c, m in columns.items()}
    return pd.DataFrame(sums, index=pd.Index([names[j] for j in order], name="task"))


def _flag_percent_tasks(column: str, values: pa.Array, task_column: str, tasks: pa.Array, unit: np.ndarray | None,
                        flag: _Flags, whole: WholeInput | None = None) -> None:
    """In a fraction column, the values in (0, 1] of a task whose values are mostly percents
    (in (1, 100], or written with a % sign; zeros not counted, :func:`_mostly_percent_masks`):
    that task is in percent (its values above 1 are quarantined as such), and its values <= 1 are
    percents of near-chance models, which were stored as fractions (0.5 % as 50 %). The rule of
    ingest's refusal of a column in percent (most values in (1, 100]), per task; ``whole``: the
    counts of the pieces of the same input before (updated), so that a task's near-chance values in
    a piece of their own are percents too."""
    v = values.to_numpy(zero_copy_only=False).astype("float64")   # null (not finite, wrong): NaN
    plain = np.isfinite(v) if unit is None else np.isfinite(v) & (unit == None)  # noqa: E711 (elementwise)
    pct, counted, zeros, signed = _mostly_percent_masks(column, v, plain, flag)
    if whole is None and not pct.any():
        return
    lows = plain & (v > 0) & (v <= 1)
    counts = _task_sums(tasks, counted | zeros, {"pct": pct, "n": counted, "low": lows, "zero": zeros, "signed": signed})
    if whole is None:
        by_task = {task: (int(k), int(n), int(z), int(m)) for task, (k, n, _, z, m) in counts.iterrows()
                   if 2 * k > n}
    else:
        totals = whole.percent_tasks
        counts = counts[counts.index.notna()]   # a row without its task is quarantined for that
        for task, (k, n, *_) in counts.iterrows():
            acc = totals.setdefault((column, task), [0, 0, 0, 0])
            acc[0] += int(k)
            acc[1] += int(n)
        by_task = {task: (totals[(column, task)][0], totals[(column, task)][1], int(z), int(m))
                   for task, (*_, z, m) in counts.iterrows()
                   if 2 * totals[(column, task)][0] > totals[(column, task)][1]}
        for task, (_, _, n_low, *_) in counts.iterrows():
            totals[(column, task)][3 if task in by_task else 2] += int(n_low)
    if not by_task:
        return
    t = pd.Series(tasks.to_numpy(zero_copy_only=False), dtype=object)
    low = lows & t.isin(list(by_task)).to_numpy()
    flag(low, lambda i, v=v, t=t: (
        f"{column}: {_num(v[i])} in {task_column} {printable(repr(t[i]))}, whose values are mostly in (1, 100] "
        f"({_of(*by_task[t[i]])}): a percent? (not stored as {_num(v[i] * 100)} %)"),
        f"{column}: a value <= 1 among its task's percents")


def _flag_percent_column(column: str, values: pa.Array, flag: _Flags, whole: WholeInput | None = None) -> None:
    """In a fraction column without a task (``data_fraction``), the values in (0, 1] of an input
    whose values are mostly percents (in (1, 100], or written with a % sign; zeros not counted):
    the column is in percent (its values above 1 are quarantined as such), so its values <= 1 are
    percents too. Stored, a 1 % run's ``1`` was full data (1.0) and a 0.5 % run's ``0.5`` half of
    it. A mapping gives this column no unit. ``whole``: the counts of the pieces of the same input
    before (updated): judged by one piece alone, a piece of mostly percents refused the values
    <= 1 that the whole input, mostly fractions, stores (:meth:`WholeInput.problem` says so)."""
    v = values.to_numpy(zero_copy_only=False).astype("float64")   # null: NaN
    plain = np.isfinite(v)
    pct, counted, zeros, signed = _mostly_percent_masks(column, v, plain, flag)
    k, n = int(pct.sum()), int(counted.sum())
    lows = plain & (v > 0) & (v <= 1)
    if whole is not None:
        acc = whole.percent_columns.setdefault(column, [0, 0, 0, 0])
        acc[0], acc[1] = acc[0] + k, acc[1] + n
        k, n = acc[0], acc[1]
        acc[3 if 2 * k > n else 2] += int(lows.sum())
    if 2 * k <= n:
        return
    of = _of(k, n, int(zeros.sum()), int(signed.sum()))
    flag(lows, lambda i, v=v: (
        f"{column}: {_num(v[i])} among values mostly in (1, 100] ({of}): a percent? {column} is a fraction: "
        f"{_num(v[i])} % is {_num(round(v[i] / 100, 12))} (not stored as {_num(v[i] * 100)} %)"),
        f"{column}: a value <= 1 among percents")


#: Characters that show nothing: zero-width space, non-joiner and joiner, word joiner, and the
#: byte order mark (a spreadsheet's export writes it at a file's, or a cell's, start).
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")


def canonical_name(text: str) -> str:
    """A name (a task, run, source, protocol) as the store holds it: without zero-width
    characters, in Unicode's composed form (NFC), without whitespace at either end. For names a
    user types to select stored rows (``--ds-task``), which must match as the rows were stored."""
    return unicodedata.normalize("NFC", _ZERO_WIDTH.sub("", text)).strip()


def _nfc(arr: pa.Array) -> pa.Array:
    """``arr`` in Unicode's composed form (NFC) and without zero-width characters, by its distinct
    values (a few names in a million rows: ~ms). Not ``pc.utf8_normalize``: pyarrow 25's gave 5
    characters for NFC "Café". "cifar\u200b10" and "cifar10" look the same and were two tasks."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pc.all(pc.string_is_ascii(arr)).as_py() is not False:   # (ASCII is NFC, with no zero-width character: ~10x cheaper)
        return arr
    d = arr.dictionary_encode()
    values = d.dictionary.to_pylist()
    fixed = [v if v is None or v.isascii() else unicodedata.normalize("NFC", _ZERO_WIDTH.sub("", v)) for v in values]
    if fixed == values:
        return arr
    return pa.DictionaryArray.from_arrays(d.indices, pa.array(fixed, pa.string())).cast(pa.string())


def _string_array(col: Column, s: pd.Series, flag: _Flags, whole: WholeInput | None = None) -> pa.Array:
    """A string column, without whitespace at either end of its values: wrong types, empty
    required values, task names that cannot be a partition directory and values outside the
    column's choices are flagged.

    ``"  pets "`` is ``pets``: CSV readers skip the spaces after a separator but keep those before
    the next one, and JSON and Parquet keep both, so without this one name would be two tasks (or
    runs, or sources) depending on the file's format. Spaces inside a value are kept. Values are
    in Unicode's composed form (NFC): "Café" typed on one machine (é) and exported on another
    (e + a combining accent) looked the same and were two tasks; zero-width characters are
    removed for the same reason."""
    arr, wrong, bad_text = _coerce_string(s)
    arr = _nfc(arr)   # first: "\ufeff pets" is " pets" then
    arr = pc.utf8_trim_whitespace(arr)   # Unicode whitespace, as str.strip(); ~10 ms per million cells
    flag(wrong, lambda i, c=col.name, ss=s: f"{c}: wrong type ({type(ss.iloc[i]).__name__} is not a string)",
         f"{col.name}: wrong type (not a string)")
    flag(bad_text, lambda i, c=col.name, ss=s: (
        f"{c}: {_bad_text(bytes_text(ss.iloc[i]))}" if isinstance(ss.iloc[i], (bytes, bytearray)) else
        f"{c}: {shown(ss.iloc[i])} is no valid Unicode text (a lone surrogate, such as a JSON \\ud800 escape, cannot "
        "be stored)"), f"{col.name}: no valid Unicode text")
    wrong = wrong | bad_text   # (not also "missing required field")
    text = lambda i, a=arr: a[i].as_py()  # noqa: E731 (one cell, for a message)
    if col.required:
        empty = pc.fill_null(pc.equal(arr, ""), True).to_numpy(zero_copy_only=False)
        flag(empty & ~wrong, f"{col.name}: missing required field")
    elif pc.any(pc.equal(arr, "")).as_py():
        # an empty value is no value: null, as an empty CSV cell is ("" from JSONL or Parquet was
        # stored as "", so one export in two formats gave two different rows)
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    if col.name in PARTITION or col.choices is not None:
        # a few distinct names in a million rows: check each name once
        names = pc.unique(arr.drop_null()).to_pylist()
        if col.name in PARTITION:
            problems = [x for x in names if _partition_problem(x) is not None]
            if problems:
                flag(_is_in(arr, problems), lambda i, c=col.name, tx=text: f"{c}: {_partition_problem(tx(i))}",
                     f"{col.name}: cannot be a partition directory")
            _flag_case_variants(col.name, arr, names, flag, whole)
        if col.choices is not None:
            unknown = [x for x in names if x not in col.choices]
            label = "unknown protocol" if col.name == "eval_protocol" else f"unknown {col.name}"
            expected = f"(expected one of {', '.join(col.choices)})"
            if len(unknown) <= 20:   # a kind per value: "unknown protocol 'kfold' (4104 rows)"
                for x in unknown:
                    flag(_is_in(arr, [x]), f"{col.name}: {label} {shown(x)} {expected}")
            elif unknown:            # (one pass over the rows, whatever the number of values)
                flag(_is_in(arr, unknown), lambda i, c=col.name, tx=text: f"{c}: {label} {shown(tx(i))} {expected}",
                     f"{col.name}: {label} {expected}")
    return arr


def _flag_case_variants(column: str, arr: pa.Array, names: list[str], flag: _Flags,
                        whole: WholeInput | None = None) -> None:
    """Task names of one input that differ only in case (``CIFAR100`` and ``cifar100``) were two
    tasks: two groups, two fits. The rows of the name most rows use are kept; those of the other
    spellings are quarantined (all of them when no spelling has the most rows). ``whole``: the
    names of the pieces of the same input before (updated), counted with these."""
    counts = {d["values"]: d["counts"] for d in pc.value_counts(arr.drop_null()).to_pylist()}
    if whole is not None:
        seen = whole.names.setdefault(column, {})
        for x, n in counts.items():
            seen[x] = seen.get(x, 0) + n
        counts, here = dict(seen), names
        names = list(seen)
    else:
        here = names
    by_fold: dict[str, list[str]] = {}
    for x in names:
        by_fold.setdefault(x.casefold(), []).append(x)
    clashes = [v for v in by_fold.values() if len(v) > 1]
    refused: set[str] = set()
    for spellings in clashes:
        spellings.sort(key=lambda x: (-counts[x], x))
        top = [x for x in spellings if counts[x] == counts[spellings[0]]]
        for x in spellings:
            if (len(top) == 1 and x == top[0]) or x not in here:
                continue
            refused.add(x)
            other = next(y for y in spellings if y != x)
            n = counts[other]
            flag(_is_in(arr, [x]), f"{column}: {printable(repr(x))} differs only in case from {printable(repr(other))} "
                 f"(the name of {n} other row{'s' if n != 1 else ''}): one task, written two ways? write it one way",
                 f"{column}: differs only in case from another name")
    if whole is not None:
        whole.kept_names.setdefault(column, set()).update(x for x in here if x not in refused)


def _iso_hint(v: Any) -> str:
    """"; write it as ISO 8601 ..." for a text that is no timestamp we read; for one in ISO 8601
    already ('2024-02-30', '2024-04-03T25:00'), that the date or time does not exist."""
    if not isinstance(v, str) or not v.strip():
        return ""
    if re.fullmatch(_ISO, v) or _YMD.fullmatch(v.strip()):
        return ": no such date or time"
    return "; write it as ISO 8601, e.g. 2024-04-03T10:00:00Z"


def _timestamp_array(col: Column, s: pd.Series, flag: _Flags, order: _DateOrder | None = None) -> pa.Array:
    """A timestamp column, in UTC: wrong types and missing required values are flagged."""
    ts, wrong, why = _coerce_timestamp(s, order)
    flag(wrong, lambda i, c=col.name: f"{c}: wrong type ({shown(s.iloc[i])} is not a timestamp{_iso_hint(s.iloc[i])})",
         f"{col.name}: wrong type (not a timestamp)")
    for i, (reason, kind) in why.items():
        flag.one(i, f"{col.name}: {reason}", f"{col.name}: {kind}")
    # floored to the column's microseconds: "…T00:00:00.0000001" would not cast otherwise
    naive_utc = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("us").to_numpy()
    arr = pa.array(naive_utc, type=pa.timestamp("us"), from_pandas=True)
    unknown = _unknown_times(arr)
    if unknown.any():
        arr = pc.if_else(pa.array(unknown), pa.scalar(None, arr.type), arr)
    if col.required:
        flag((ts.isna().to_numpy() | unknown) & ~wrong & (col.name not in STORE_FILLED),
             f"{col.name}: missing required field")
    # pandas reads years 0 and 10000 ("0000-01-01", "9999-12-31T23:00:00-02:00" in UTC): stored,
    # such a value failed every reader of the store (to_pandas: "toordinal not yet supported",
    # to_pylist: "date value out of range"), the whole analysis with it
    out = pc.fill_null(pc.or_(pc.less(arr, pa.scalar(_TS_MIN, arr.type)), pc.greater(arr, pa.scalar(_TS_MAX, arr.type))),
                       False).to_numpy(zero_copy_only=False)
    if out.any():
        flag(out, lambda i, c=col.name: f"{c}: {shown(s.iloc[i])} is out of range (a time in UTC in years 1 to 9999)",
             f"{col.name}: out of range (years 1 to 9999)")
        arr = pc.if_else(pa.array(out), pa.scalar(None, arr.type), arr)
    return arr.cast(col.type)


#: The times a timestamp column holds (Python's ``datetime`` range, which every reader converts to), in
#: microseconds since 1970 UTC.
_TS_MIN = -62_135_596_800_000_000            # 0001-01-01T00:00:00
_TS_MAX = 253_402_300_799_999_999            # 9999-12-31T23:59:59.999999
#: The instants exporters write for a time they do not know (a run not ended), in the same
#: microseconds: stored, they were runs of 2,023 or 54 years, and a run "ending" before it started.
#: - 0001-01-01T00:00:00: Go's zero ``time.Time`` and .NET's ``DateTime.MinValue``;
#: - 1970-01-01T00:00:00Z exactly: the Unix epoch, 0, a C/Java/JavaScript exporter's unset time.
#:   MLflow's own ``start_time``/``end_time`` of 0 means "not set", and the MLflow reader maps it
#:   to null (``ingest/mlflow_runs.py``): the same run exported to a file and read from its server
#:   is stored alike. No run this store holds trained at that instant, to the microsecond.
#: Both are a missing value, as "NA" is, whichever path a row comes by (:func:`validate`,
#: :func:`conform`).
_TS_UNKNOWN = (_TS_MIN, 0)


def _unknown_times(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The cells of a timestamp column in microseconds (any zone) that hold an unknown-time
    placeholder (:data:`_TS_UNKNOWN`), as a boolean mask."""
    us = arr.cast(pa.int64())
    return pc.fill_null(pc.is_in(us, value_set=pa.array(_TS_UNKNOWN, pa.int64())), False).to_numpy(zero_copy_only=False)


def _flag_source_reasons(frame: pd.DataFrame, flag: _Flags) -> None:
    """The reasons a source gave rows (:data:`SOURCE_REASON`), counted under their kind."""
    if SOURCE_REASON not in frame.columns:
        return
    reasons = frame[SOURCE_REASON].to_numpy(dtype=object)
    kinds = (frame[SOURCE_REASON_KIND].to_numpy(dtype=object) if SOURCE_REASON_KIND in frame.columns
             else reasons)
    for i in np.flatnonzero([isinstance(r, str) and r != "" for r in reasons]).tolist():
        flag.one(i, reasons[i], kinds[i] if isinstance(kinds[i], str) else reasons[i])


def _check_across_columns(frame: pd.DataFrame, arrays: Mapping[str, pa.Array], flag: _Flags) -> None:
    """Rules between columns: a few-shot row needs its shots."""
    few = pc.fill_null(pc.equal(arrays["eval_protocol"], "fewshot"), False).to_numpy(zero_copy_only=False)
    if "shots" in frame:
        raw = frame["shots"]
        missing = np.array(raw.isna().to_numpy(), dtype=bool)
        if "shots" in arrays:
            # "NA", "#N/A", "nan" or blank texts became null without a reason of their own (a wrong type
            # has one): few-shot rows without shots were stored, a group with no shot count
            cells = np.flatnonzero(arrays["shots"].is_null().to_numpy(zero_copy_only=False) & ~missing)
            missing |= _missing_tokens(raw, cells)
            missing[cells] |= np.array([isinstance(v, str) and not v.strip() for v in raw.iloc[cells].tolist()], bool)
    else:
        missing = np.ones(len(frame), bool)
    flag(few & missing, "shots: missing (required when eval_protocol is 'fewshot')")
    if "shots" in arrays:
        # a probe on 0 examples per class fits nothing: a zero-shot result written as few-shot, or a
        # metric pattern's {shots} that caught another number; stored, it was a group of its own
        zero = pc.fill_null(pc.equal(arrays["shots"], 0), False).to_numpy(zero_copy_only=False)
        flag(few & zero, "shots: 0 with eval_protocol 'fewshot' (a few-shot probe needs at least 1 "
             "example per class; a zero-shot result is eval_protocol 'zeroshot')")


def _ends_before_start(frame: pd.DataFrame, arrays: Mapping[str, pa.Array], kept: np.ndarray,
                       ) -> tuple[int, str] | None:
    """(rows of ``kept`` whose ``ended_at`` is before their ``started_at``, the first as text), or
    None. Times are shown as written (a text), or as ISO 8601 in UTC (a datetime: MLflow's)."""
    start, end = arrays["started_at"], arrays["ended_at"]
    if not (start.null_count < len(start) and end.null_count < len(end)):
        return None
    before = pc.fill_null(pc.less(end, start), False).to_numpy(zero_copy_only=False) & kept
    if not before.any():
        return None
    i = int(np.flatnonzero(before)[0])

    def written(column: str) -> str:
        v = frame[column].iloc[i]
        if isinstance(v, str):
            return shown(v)
        # the arrays hold naive UTC times: astimezone() read them as the machine's local time
        return arrays[column][i].as_py().replace(tzinfo=None).isoformat() + "Z"

    run = printable(repr(arrays["run_id"][i].as_py()))
    return int(before.sum()), f"run {run}: ended_at {written('ended_at')}, started_at {written('started_at')}"


def ends_before_start(table: pa.Table) -> tuple[int, str] | None:
    """(rows of a canonical table, e.g. :func:`conform`'s, whose ``ended_at`` is before their
    ``started_at``, the first as text), or None: what :attr:`Validated.ends_before_start` says of
    the rows :func:`validate` passes, for rows that came by another path (``Store.commit``'s
    ``CommitResult.ends_before_start``). Times are shown as ISO 8601 in UTC."""
    if "started_at" not in table.column_names or "ended_at" not in table.column_names:
        return None
    before = pc.fill_null(pc.less(table.column("ended_at"), table.column("started_at")), False)
    n = pc.sum(before).as_py() or 0
    if not n:
        return None
    i = pc.index(before, True).as_py()

    def written(column: str) -> str:   # (aware or naive: the canonical columns are UTC)
        return table.column(column)[i].as_py().replace(tzinfo=None).isoformat() + "Z"

    run = printable(repr(table.column("run_id")[i].as_py()))
    return int(n), f"run {run}: ended_at {written('ended_at')}, started_at {written('started_at')}"


def ends_before_start_note(rows: int, example: str) -> str:
    """The ingest summary's note for :attr:`Validated.ends_before_start`."""
    return (f"{rows} row(s) end before they start (e.g. {example}), stored as given: started_at and ended_at "
            "swapped, written in different time zones, or an MLflow run given an end_time before its creation?")


def payloads_of(frame: pd.DataFrame, idx: np.ndarray, raw: RawPayloads | None) -> list[str]:
    """The quarantine payloads of the rows of ``frame`` (the raw rows given to :func:`validate`) at
    positions ``idx``: from ``raw`` as :func:`validate` takes it, or the rows themselves as JSON."""
    if not len(idx):
        return []
    if raw is None:
        records = frame.drop(columns=[c for c in _SOURCE_COLUMNS if c in frame.columns]).iloc[idx].to_dict("records")
        return [row_json(r) for r in records]
    if callable(raw):
        return list(raw(idx))
    return [raw[i] for i in idx]


def _rejected_rows(frame: pd.DataFrame, bad_idx: np.ndarray, reasons: Mapping[int, list[str]],
                   raw: RawPayloads | None) -> pd.DataFrame:
    """The rejected rows: position, source, run_id, reasons and the payload for the quarantine."""
    raw_bad = payloads_of(frame, bad_idx, raw)

    def ident(c: str) -> list[Any]:
        if c not in frame.columns:
            return [None] * len(bad_idx)
        # trimmed as the stored rows' are (_string_array): the quarantine and the replacement of
        # a source's runs must name a rejected row's run as its stored rows name it
        # (and in NFC, without zero-width characters, as _string_array stores them)
        # (a lone surrogate, which cannot be stored, as its escape: the row's reason names it)
        return [None if _is_missing(x) else canonical_name(str(x).encode("utf-8", "backslashreplace").decode("utf-8"))
                for x in frame[c].iloc[bad_idx].to_numpy(dtype=object)]   # (not every row's Python str)

    return pd.DataFrame({
        "row": bad_idx.astype("int64"),
        "source": ident("source"),
        "run_id": ident("run_id"),
        "reason": ["; ".join(reasons[i]) for i in bad_idx],
        "raw": raw_bad,
    })


def conform(table: pa.Table, *, ingested_at: _dt.datetime | None = None) -> pa.Table:
    """Fill store-managed columns and cast to :data:`SCHEMA` (column order included).

    An unknown-time placeholder in a timestamp column (``0001-01-01T00:00:00``, the Unix epoch:
    :data:`_TS_UNKNOWN`) is null, as :func:`validate` stores it (``ingested_at``: now); rows that
    end before they start are kept, as there (:func:`ends_before_start` finds them).

    The rows' values are checked against the schema's rules, as :func:`validate` checks them:
    ``Store.commit`` takes a table from any caller, and stored ``ds_accuracy`` 87.5, NaN, an
    ``eval_protocol`` 'kfold' or a column the schema does not have (dropped without a word) as
    they came. Names are stored as :func:`validate` stores them (NFC, without zero-width
    characters or whitespace at either end; an empty optional one as null): ``" c "`` was a task
    of its own beside ``c``; so is ``extra`` (a key repeated with one value once, a ``ds_n`` as its
    integer text, :func:`_conform_extra`), and a -0.0 as 0.0.

    Raises:
        ValueError: a column the schema does not have, or one given twice; a required column
            holding nulls (rows that did not go through :func:`validate`: the cast does not check
            nullability, and the table failed later, in the Parquet writer, as ``ArrowInvalid:
            Column 'us_accuracy' is declared non-nullable``); a value :func:`validate` never
            passes (NaN, an infinity, out of the column's range, not among its choices, an empty
            required name, a task name that cannot be a partition directory, a time outside years
            1 to 9999, a few-shot row without shots or on 0 shots, a key of ``extra`` given twice with
            different values or an ``extra`` ``ds_n`` that is no test-set size) or one the column's
            type cannot hold. The message names the column, how many values and one of them.
    """
    # (table.column(name) of a name given twice raised a KeyError)
    twice = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if twice:
        raise ValueError(f"columns given twice: {twice}; validate the rows first (see validation.validate)")
    n = table.num_rows
    for f in SCHEMA:
        if f.nullable or f.name in STORE_FILLED:
            continue
        nulls = table.column(f.name).null_count if f.name in table.column_names else n
        if nulls:
            raise ValueError(f"{f.name}: {nulls} null value(s) in a required column"
                             f"{'' if f.name in table.column_names else ' (the table has no such column)'}; "
                             "validate the rows first (see validation.validate)")
    unknown = [c for c in table.column_names if c not in COLUMN_BY_NAME]
    if unknown:
        raise ValueError(f"unknown columns {unknown} (not stored); map them to canonical names or to 'extra', "
                         "and validate the rows first (see validation.validate)")
    now = ingested_at or _dt.datetime.now(_dt.timezone.utc)
    cols = []
    for f in SCHEMA:
        if f.name in table.column_names:
            a = table.column(f.name)
            if f.name == "ingested_at":
                a = a.fill_null(pa.scalar(now, type=UTC_TIMESTAMP))
            elif f.name == "schema_version":
                a = a.fill_null(pa.scalar(SCHEMA_VERSION, type=pa.int32()))
            try:
                a = a.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                # ("Float value 2.5 was truncated": which column?)
                raise ValueError(f"{f.name}: its {a.type} values cannot be stored as {f.type} ({e}); "
                                 "validate the rows first (see validation.validate)") from None
            if pa.types.is_timestamp(f.type):
                # an unknown-time placeholder is null here too, as validate() stores it: a table
                # built by hand (or read from an export) kept runs of 2,023 years
                unknown = _unknown_times(a)
                if unknown.any():
                    a = pc.if_else(pa.array(unknown), pa.scalar(None, f.type), a)
                    if f.name == "ingested_at":
                        a = a.fill_null(pa.scalar(now, type=UTC_TIMESTAMP))
            if f.nullable and pa.types.is_floating(f.type) and a.null_count < len(a):
                # a missing optional number spelled NaN (pandas' way) is null, as validate() stores
                # it; refusing it refused every hand-built table with a missing learning rate
                a = pc.if_else(pc.is_nan(a), pa.scalar(None, f.type), a)
            if pa.types.is_floating(f.type) and a.null_count < len(a):
                a = pc.add(a, pa.scalar(0.0, f.type))   # -0.0 is 0.0, as validate() stores it
            if pa.types.is_string(f.type) and len(a):
                a = _conform_names(a, f.nullable)
            problem = None
            if pa.types.is_map(f.type) and a.null_count < len(a):
                a, problem = _conform_extra(a, table.column("run_id") if "run_id" in table.column_names else None)
            problem = problem or _value_problem(COLUMN_BY_NAME[f.name], a)
            if problem is not None:
                raise ValueError(f"{f.name}: {problem}; validate the rows first (see validation.validate)")
            cols.append(a)
        elif f.name == "ingested_at":
            cols.append(pa.array([now] * n, type=UTC_TIMESTAMP))
        elif f.name == "schema_version":
            cols.append(pa.array([SCHEMA_VERSION] * n, type=pa.int32()))
        else:
            cols.append(pa.nulls(n, type=f.type))
    out = pa.Table.from_arrays(cols, schema=SCHEMA)
    problem = _few_shot_problem(out)
    if problem is not None:
        raise ValueError(f"{problem}; validate the rows first (see validation.validate)")
    return out


def _conform_names(a: pa.ChunkedArray | pa.Array, optional: bool) -> pa.Array:
    """A string column as :func:`_string_array` stores it: without zero-width characters, in NFC,
    without whitespace at either end, and (``optional``) an empty value as null. Rows built in code
    with ``" c "`` or a decomposed "Café" were a task (a run, a source) of their own beside the
    validated rows' ``c``: two partitions and two fits of one task. ~40 ms per million ASCII cells."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if pc.all(pc.string_is_ascii(a)).as_py():   # (true of a column of nulls, too)
        a = pc.ascii_trim_whitespace(a)
    else:
        a = pc.utf8_trim_whitespace(_nfc(a))
    if optional and pc.any(pc.equal(a, "")).as_py():
        a = pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a)
    return a


#: A DS test-set size as :func:`_ds_test_size` stores it: a whole number, at least 1, within int64.
_SIZE_TEXT = r"^([1-9][0-9]{0,17})?$"


def _conform_extra(a: pa.ChunkedArray | pa.Array, run_ids: pa.ChunkedArray | None,
                   ) -> tuple[pa.Array, str | None]:
    """``extra`` (a map column) as :func:`validate` stores it, and what in it :func:`validate` never
    passes (else None): a key given twice with different values, or a ``ds_n`` that is no test-set
    size (:func:`_ds_test_size`; the analysis read "0.5" as half an example, a floor of +-100
    points under the task's intervals). Identical repeats of a key are one pair, a null value is ""
    and a size is its integer text ("1,000": 1000), as there. Vectorized over the map's entries
    (~10 ms per 100,000 rows of sorted keys, as validate writes them); the column is built again in
    Python only where one of those is to clean."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    # (Arrow's list kernels have no map kernels, and a map's .keys ignore a slice: as a list of entries)
    lists = a.cast(pa.list_(pa.struct([pa.field("key", pa.string(), nullable=False), ("value", pa.string())])))
    entries = lists.flatten()
    if not len(entries):
        return a, None
    parent = pc.list_parent_indices(lists).to_numpy()
    keys, values = entries.field("key"), entries.field("value")
    m = len(keys)
    same_row = parent[1:] == parent[:-1]
    if not (same_row & ~pc.less(keys.slice(0, m - 1), keys.slice(1)).to_numpy(zero_copy_only=False)).any():
        dup = np.zeros(m, bool)   # each map's keys in increasing order (validate's rows): no key twice
    else:
        codes = keys.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
        dup = pd.Series(parent.astype(np.int64) * (int(codes.max()) + 1) + codes).duplicated(keep=False).to_numpy()
    odd_size = pc.equal(keys, EXTRA_DS_TEST_SIZE).to_numpy(zero_copy_only=False)
    at = np.flatnonzero(odd_size)
    if len(at):
        sizes = values.take(pa.array(at))
        odd_size[at] = ~pc.fill_null(pc.match_substring_regex(sizes, _SIZE_TEXT), True).to_numpy(zero_copy_only=False)
    null_value = values.null_count > 0
    if not (dup.any() or odd_size.any() or null_value):
        return a, None


    rows = np.unique(parent[dup | odd_size]).tolist() if not null_value else range(len(a))
    cells = a.to_pylist()
    problems: dict[str, list[int]] = {}
    for i in rows:
        if cells[i] is None:
            continue
        pairs = [(k, "" if x is None else x) for k, x in cells[i]]
        problem = _map_problem(sorted(pairs))
        if problem is None:
            fixed, problem = _ds_test_size(pairs)
            cells[i] = list(dict(fixed).items())   # repeats of one pair once, in their first place
        if problem is not None:
            problems.setdefault(problem, []).append(i)
    if problems:
        problem, at = next(iter(problems.items()))
        others = sum(len(v) for v in problems.values()) - 1
        where = [] if run_ids is None else [f"run {printable(repr(run_ids[at[0]].as_py()))}"]
        where += [f"and {others} other row(s) with a problem in it"] if others else []
        return a, problem + (f" ({', '.join(where)})" if where else "")
    return pa.array(cells, type=a.type), None


def _few_shot_problem(table: pa.Table) -> str | None:
    """What :func:`_check_across_columns` quarantines in canonical rows: a few-shot row without
    shots, or on 0 shots (stored, it was a group of its own that no few-shot probe has), with how
    many and the first row's run; or None."""
    few = pc.fill_null(pc.equal(table.column("eval_protocol"), "fewshot"), False)
    if not pc.any(few).as_py():
        return None
    shots = table.column("shots")
    for what, bad in (("missing", pc.is_null(shots)), ("0", pc.fill_null(pc.equal(shots, 0), False))):
        rows = pc.and_(few, bad)
        k = pc.sum(rows).as_py() or 0
        if k:
            run = table.column("run_id")[pc.index(rows, True).as_py()].as_py()
            return (f"shots: {k} few-shot row(s) with {what} shots (run {printable(repr(run))}); a few-shot probe needs "
                    "at least 1 example per class")
    return None


def _value_problem(col: Column, a: pa.ChunkedArray | pa.Array) -> str | None:
    """What in a column already cast to ``col``'s type :func:`validate` never passes, with how many
    values and the first of them, or None. One pass per rule over the column (a min/max, the
    distinct names), the values found only where a rule is broken: ~0.1 s per 500,000 rows on a busy
    2-core machine, where validating them takes ~7 s."""
    t = col.type
    checks: list[tuple[Callable[[], Any], str]] = []   # (the mask of the values that break it, the rule)
    number = pa.types.is_floating(t) or pa.types.is_integer(t)
    mm = pc.min_max(a).as_py() if number else None
    if pa.types.is_floating(t) and not pc.all(pc.is_finite(a)).as_py():
        checks += [(lambda: pc.is_nan(a), "NaN"), (lambda: pc.is_inf(a), "not finite")]
    if number and mm["min"] is not None:
        bounds = f"[{col.lo if col.lo is not None else -math.inf:g}, {col.hi if col.hi is not None else math.inf:g}]"
        # (min/max skip NaN: a NaN broke the rule above)
        if col.lo is not None and mm["min"] < col.lo:
            checks.append((lambda: pc.less(a, pa.scalar(col.lo, pa.float64()).cast(t)), f"out of range {bounds}"))
        if col.hi is not None and mm["max"] > col.hi:
            checks.append((lambda: pc.greater(a, pa.scalar(col.hi, pa.float64()).cast(t)), f"out of range {bounds}"))
    if pa.types.is_string(t) and col.choices is not None:
        unknown = [x for x in pc.unique(a).to_pylist() if x is not None and x not in col.choices]   # a few names
        if unknown:
            checks.append((lambda: pc.is_in(a, value_set=pa.array(unknown, pa.string())),
                           f"not one of {', '.join(col.choices)}"))
    if pa.types.is_string(t) and col.required and pc.any(pc.equal(a, "")).as_py():
        checks.append((lambda: pc.equal(a, ""), "empty"))
    if col.name in PARTITION:
        # (a few distinct names: each checked once) a name too long for a directory failed deep in
        # the commit with the OS's "[Errno 36] File name too long: '.../_staging/...'"
        bad_names = [x for x in pc.unique(a).to_pylist() if _partition_problem(x) is not None]
        if bad_names:
            return (f"{pc.sum(pc.is_in(a, value_set=pa.array(bad_names, pa.string()))).as_py()} value(s) cannot be a "
                    f"partition directory (e.g. {shown(bad_names[0])}: {_partition_problem(bad_names[0])})")
    if pa.types.is_timestamp(t):
        lo, hi = pa.scalar(_TS_MIN, pa.int64()).cast(t), pa.scalar(_TS_MAX, pa.int64()).cast(t)
        # (min_max's scalars as Python datetimes: out of their range, they raise)
        mm = pc.min_max(a.cast(pa.int64()))
        if mm["min"].as_py() is not None and (mm["min"].as_py() < _TS_MIN or mm["max"].as_py() > _TS_MAX):
            checks.append((lambda: pc.or_(pc.less(a, lo), pc.greater(a, hi)), "out of range (years 1 to 9999)"))
    for mask, what in checks:
        bad = pc.filter(a, pc.fill_null(mask(), False))
        if len(bad):
            # (a time out of Python's range has no datetime: its text, from Arrow)
            example = bad[:1].cast(pa.string())[0].as_py() if pa.types.is_timestamp(t) else shown(bad[0].as_py())
            if what == "empty":     # as the null check words it: "us_task: 1 empty value(s) ..."
                return f"{len(bad)} empty value(s) (a required name)"
            return f"{len(bad)} value(s) {what}" + ("" if what == "NaN" else f" (e.g. {example})")
    return None


def dedupe_keys(table: pa.Table, *, payloads: Callable[[np.ndarray], Sequence[str]] | None = None,
                ) -> tuple[pa.Table, pd.DataFrame]:
    """Collapse rows that repeat a key with identical values; quarantine keys with conflicting ones.

    Args:
        payloads: the quarantine payloads of the rows of ``table`` at given positions (the input's
            rows as written: a file's ``_file`` and ``_line``); default: each row as JSON.

    Returns:
        (rows with unique keys, rejected rows with source, run_id, reason, raw).
    """
    empty = pd.DataFrame(columns=["source", "run_id", "reason", "raw"])
    if table.num_rows < 2:
        return table, empty
    from .keys import key_array

    if _keys_distinct(table):   # the usual case, without a key string per row
        return table, empty
    arr = key_array(table)
    if pc.count_distinct(arr).as_py() == table.num_rows:
        return table, empty
    keys = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
    codes, uniques = pd.factorize(keys)
    counts = pd.Series(codes).value_counts()
    dup_codes = set(counts[counts > 1].index)
    if not dup_codes:
        return table, empty
    keep = []
    rejected = []
    seen: dict[int, list[int]] = {}
    for i, c in enumerate(codes):
        if c in dup_codes:
            seen.setdefault(c, []).append(i)
        else:
            keep.append(i)
    content_cols = [c for c in table.column_names if c != "ingested_at"]
    for c, idx in seen.items():
        rows = table.select(content_cols).take(pa.array(idx)).to_pylist()
        if all(r == rows[0] for r in rows[1:]):
            keep.append(idx[0])
        else:
            differ = _conflict_text(rows, content_cols)
            # the rows as their input wrote them, where that tells them apart (which file, which line);
            # one payload for several rows (an MLflow run's, a wide file's line) would be one entry
            raws = list(payloads(np.asarray(idx, np.int64))) if payloads is not None else []
            if len(set(raws)) < len(rows):
                raws = [row_json(r) for r in rows]
            for r, raw in zip(rows, raws):
                rejected.append({"source": r["source"], "run_id": r["run_id"],
                                 "reason": f"conflicting duplicate key: {len(idx)} rows share this key{differ}",
                                 "raw": raw})
    keep.sort()
    return table.take(pa.array(keep, pa.int64())), pd.DataFrame(rejected, columns=["source", "run_id", "reason", "raw"])


def _keys_distinct(table: pa.Table) -> bool:
    """Whether no two rows of ``table`` share a key (:data:`~meta_study.schema.KEY`), exactly:
    each key column as its dictionary's codes (null a code of its own), combined into one integer
    per row, renumbered whenever the next column's codes could overflow it. ~0.1 s per 500,000
    rows, where joining the key strings of :func:`~meta_study.keys.key_array` and counting them
    took ~1 s. False where it cannot tell (a key column of another type: the caller's
    :func:`~meta_study.keys.key_array` refuses it)."""
    combined = np.zeros(table.num_rows, np.int64)
    size = 1   # the number of distinct values combined can hold so far
    for name in KEY:
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_integer(col.type)
                or pa.types.is_null(col.type)):
            return False
        if pa.types.is_null(col.type):
            continue   # one value in every row
        enc = pc.dictionary_encode(col.combine_chunks())
        k = len(enc.dictionary) + 1
        codes = pc.fill_null(enc.indices, k - 1).to_numpy(zero_copy_only=False).astype(np.int64)
        if size * k >= 2 ** 62:
            combined, uniques = pd.factorize(combined)
            size = max(len(uniques), 1)
        combined = combined * k + codes
        size *= k
    return not pd.Series(combined).duplicated().any()


def _conflict_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """`` (ds_task 'c', eval_protocol 'fewshot', shots 5) with different values of ds_accuracy (0.6,
    0.7)``: the key of conflicting rows past their run (which the quarantine lists), and each
    column that differs with its values. "different values of ds_accuracy" named no task: a run of
    a wide export has one row per task, and which two rows conflicted was in their payloads only."""
    def text(v: Any) -> str:
        if isinstance(v, _dt.datetime):
            return v.isoformat()
        if isinstance(v, list):   # a map (extra)
            return shown(dict(v))
        return shown(v)

    first = rows[0]
    key = ", ".join(f"{k} {printable(text(first[k]))}" for k in ("us_task", "ds_task", "eval_protocol", "shots",
                                                                   "representation_layer")
                    if first.get(k) is not None)
    differ = []
    for c in columns:
        if any(r[c] != first[c] for r in rows[1:]):
            values: list[Any] = []
            for r in rows:
                if r[c] not in values:
                    values.append(r[c])
            shown_ = [printable(text(v)) for v in values[:3]] + (["..."] if len(values) > 3 else [])
            differ.append(f"{c} ({', '.join(shown_)})")
    return (f" ({key})" if key else "") + " with different values of " + ", ".join(differ)
