"""A row's key as one value: a string per row (``key_strings``), an Arrow array of them
(``key_array``), or for one row (``key_of``). Unambiguous for any values, nulls included, so that
two different keys never encode alike.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import KEY

def key_strings(table: pa.Table, columns: Iterable[str] = KEY) -> np.ndarray:
    """One string per row that identifies its key, unambiguously for any values.

    Each value is written as ``<length>:<value>`` (length in code points) and a null as ``-``,
    so no value, whatever characters it holds, can run into the next one (a separator alone
    would let ``"s\x1fx" + "y"`` equal ``"s" + "x\x1fy"``). :func:`key_of` is the same for
    Python values."""
    return np.asarray(key_array(table, columns).to_numpy(zero_copy_only=False), dtype=object)


def key_array(table: pa.Table, columns: Iterable[str] = KEY) -> pa.ChunkedArray:
    """:func:`key_strings` as Arrow strings (no Python string per row: ~4x cheaper to count)."""
    parts = []
    for c in columns:
        a = table.column(c).cast(pa.string())
        n = pc.cast(pc.utf8_length(a), pa.string())
        parts.append(pc.fill_null(pc.binary_join_element_wise(n, a, ":"), "-"))
    return pc.binary_join_element_wise(*parts, "|")


def key_of(values: Iterable[Any]) -> str:
    """:func:`key_strings` of one row given as Python values (None for null)."""
    return "|".join("-" if v is None else f"{len(str(v))}:{v}" for v in values)
