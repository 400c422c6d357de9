"""Analysis groups: models evaluated on the same (us_task, ds_task, eval_protocol, shots)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..schema import EXTRA_DS_TEST_SIZE, GROUP

GROUP_COLUMNS = GROUP  # ("us_task", "ds_task", "eval_protocol", "shots")
#: The key of ``extra`` that holds an export's own name of its protocol (the public tables'
#: ``protocol`` column: ``helm-em``, ``open-llm-v1``), and the column :func:`with_test_sizes` puts it in.
EXTRA_PROTOCOL, EXTRA_PROTOCOL_COLUMN = "protocol", "extra_protocol"
#: Sources a ``mixed_sources`` warning names, at most; the rest are counted ("and 2 more").
MAX_SOURCES_NAMED = 3


#: The readable part of a file name: at most 80 characters and 160 bytes of UTF-8. 80 characters
#: alone let 80 four-byte letters ("𝐀") make 320 bytes, past the 255-byte limit of a file name
#: once the hash and the suffix were added; ASCII names are cut where they were.
NAME_CHARS, NAME_BYTES = 80, 160


def cut_name(text: str) -> str:
    """``text`` cut to :data:`NAME_CHARS` characters and :data:`NAME_BYTES` bytes, on a character
    boundary (``text`` holds no lone surrogate: the names are made of letters, digits and ``-_.``)."""
    text = text[:NAME_CHARS]
    data = text.encode()
    return text if len(data) <= NAME_BYTES else data[:NAME_BYTES].decode(errors="ignore")


def group_slug(key: tuple[str, str, str, int | None]) -> str:
    """A file-name-safe name for a group's figures, from its (us_task, ds_task, eval_protocol,
    shots) key; also the report's anchor of the group's figure. The hash of the whole key tells
    apart the keys that differ only in punctuation or past the cut (:func:`cut_name`)."""
    raw = "_".join(str(x) for x in key if x is not None)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in raw)
    return f"{cut_name(safe)}-{stable_hash(key) % 10**6:06d}"


@dataclass(frozen=True)
class Group:
    """One analysis group: a cloud of (US accuracy, DS accuracy) points, one per model run.

    Attributes:
        us_task, ds_task, eval_protocol, shots: the group key (shots None where not applicable).
        us_accuracy, ds_accuracy: accuracies (fractions), one per run.
        run_ids: the runs' ids, aligned with the accuracies.
        model_names: the runs' ``model_name`` (None where the store has none), aligned likewise;
            empty when the rows had no such column. Only the report uses it, to name points.
    """

    us_task: str
    ds_task: str
    eval_protocol: str
    shots: int | None
    us_accuracy: np.ndarray = field(repr=False)
    ds_accuracy: np.ndarray = field(repr=False)
    run_ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, object))
    model_names: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, object))
    repeated: str = ""      # a `repeated` warning: rows of another source that repeated a run, dropped
    #: each run's DS test-set size (``extra.ds_n``; NaN where unknown), aligned; empty: none known
    ds_test_size: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, float))
    #: each run's ``source``, aligned; empty when the rows had no such column
    sources: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, object))
    #: each run's own protocol name (``extra.protocol``; None where it has none), aligned; empty: none known
    protocols: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, object))

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        return (self.us_task, self.ds_task, self.eval_protocol, self.shots)

    @property
    def key_dict(self) -> dict[str, Any]:
        return dict(zip(GROUP_COLUMNS, self.key))

    @property
    def label(self) -> str:
        shots = f", {self.shots}-shot" if self.shots is not None else ""
        return f"{self.us_task} -> {self.ds_task} ({self.eval_protocol}{shots})"

    @property
    def slug(self) -> str:
        """A file-name-safe name for the group's figures (:func:`group_slug`)."""
        return group_slug(self.key)

    @property
    def n(self) -> int:
        return int(self.us_accuracy.size)

    def data_warnings(self, threshold: float) -> tuple[str, ...]:
        """The warnings of the group's rows for its headline row: ``repeated`` and
        ``mixed_sources`` (:func:`mixed_sources_warning`, which reads the hold-out ``threshold``,
        a US accuracy: the models above it are held out), each where it applies."""
        mixed = mixed_sources_warning(self.us_accuracy, self.sources, self.protocols, threshold)
        return tuple(w for w in (self.repeated, mixed) if w)


def stable_hash(key: Iterable[Any]) -> int:
    """A 64-bit hash of a group key that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(tuple(key)).encode()).digest()[:8], "little")


def layers_only_note(layers: Iterable[Any]) -> str:
    """Why rows made no pre-logits group when each of them probes an intermediate layer
    (``representation_layer`` set, a layer-wise sweep): one clause naming the layers, or "" when
    some row is at the pre-logits layer or there is none. "The store is empty" said of such a
    store sent its owner looking for lost data."""
    vals = list(layers)
    if not vals or any(v is None or (isinstance(v, float) and np.isnan(v)) for v in vals):
        return ""
    found = sorted({int(v) for v in vals})
    shown = ", ".join(map(str, found[:8])) + (", ..." if len(found) > 8 else "")
    return f"every row is a probe of an intermediate layer ({shown}); fit, report, ... --layer N analyse one"


def groups_from_frame(df: pd.DataFrame, *, layer: int | None = None) -> list[Group]:
    """Split canonical rows into groups (pre-logits rows only unless ``layer`` is given).

    Rows with a non-finite accuracy are dropped here; the store never holds them anyway.
    """
    if df.empty:
        return []
    if "representation_layer" in df.columns:
        rl = df["representation_layer"]
        df = df[rl.isna()] if layer is None else df[rl == layer]
    elif layer is not None:   # no such column: every row is a pre-logits row, none of ``layer``'s
        df = df.iloc[0:0]     # (they were all analysed as that layer's)
    df = df[np.isfinite(df["us_accuracy"].astype(float)) & np.isfinite(df["ds_accuracy"].astype(float))]
    # one label per row: ``df.loc[idx]`` of a frame with repeated labels (two frames concatenated
    # without ignore_index) took every row of each label, putting DS task b's points in a's group
    df = df.reset_index(drop=True)
    out = []
    keys = df[list(GROUP_COLUMNS)].astype(object).where(df[list(GROUP_COLUMNS)].notna(), None)
    for key, idx in keys.groupby(list(GROUP_COLUMNS), dropna=False, sort=True).groups.items():
        us, ds_, proto, shots = key
        g = df.loc[idx]
        g, repeated = _drop_repeats(g)
        shots_v = None if shots is None or (isinstance(shots, float) and np.isnan(shots)) else int(shots)
        out.append(Group(us_task=str(us), ds_task=str(ds_), eval_protocol=str(proto), shots=shots_v,
                         us_accuracy=g["us_accuracy"].to_numpy(float), ds_accuracy=g["ds_accuracy"].to_numpy(float),
                         run_ids=g["run_id"].to_numpy(object) if "run_id" in g else np.zeros(0, object),
                         model_names=g["model_name"].to_numpy(object) if "model_name" in g else np.zeros(0, object),
                         repeated=repeated, ds_test_size=_sizes(g), sources=_column(g, "source"),
                         protocols=_column(g, EXTRA_PROTOCOL_COLUMN)))
    # one order whatever the rows' order: with null and numbered shots under one (us_task, ds_task,
    # eval_protocol), pandas could not sort the object keys and kept the shots in the order the rows
    # came in (5, None, 1, 10 from one store layout, 10, None, 1, 5 from another), and with it
    # fits.csv's order and which groups got the first --max-group-figures figures. Null shots last.
    out.sort(key=lambda g: (g.us_task, g.ds_task, g.eval_protocol, g.shots is None, g.shots or 0))
    return out


def _column(g: pd.DataFrame, col: str) -> np.ndarray:
    """A group's text column as an object array (None where missing), or empty without the column."""
    if col not in g.columns:
        return np.zeros(0, object)
    return g[col].astype(object).where(g[col].notna(), None).to_numpy(object)


def _sizes(g: pd.DataFrame) -> np.ndarray:
    """A group's ``ds_test_size`` column (see :func:`with_test_sizes`) when any is known, else empty."""
    if "ds_test_size" not in g.columns:
        return np.zeros(0, float)
    n = pd.to_numeric(g["ds_test_size"], errors="coerce").to_numpy(float, copy=True)
    n[~(n > 0)] = np.nan
    return n if np.isfinite(n).any() else np.zeros(0, float)


def with_test_sizes(table: Any) -> pd.DataFrame:
    """Store rows (an Arrow table) as pandas, with ``extra``'s DS test-set size as a number column
    ``ds_test_size`` (NaN: unknown or not a number) and its protocol name as a text column
    :data:`EXTRA_PROTOCOL_COLUMN` (None: none) instead of the ``extra`` map. Two vectorised map
    lookups (~10 ms each per 100,000 rows)."""
    import pyarrow.compute as pc

    size = proto = None
    if "extra" in table.column_names:
        size = pc.map_lookup(table.column("extra"), EXTRA_DS_TEST_SIZE, "first")
        proto = pc.map_lookup(table.column("extra"), EXTRA_PROTOCOL, "first")   # a second lookup, ~10 ms
        table = table.drop_columns(["extra"])
    df = table.to_pandas(use_threads=False)
    if size is not None:
        df["ds_test_size"] = pd.to_numeric(pd.Series(size.to_pandas().to_numpy(), index=df.index), errors="coerce")
    if proto is not None:
        df[EXTRA_PROTOCOL_COLUMN] = proto.to_pandas().to_numpy(object)
    return df


def _drop_repeats(g: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One group's rows without the ones that repeat a run's accuracies from another source (the
    same export ingested twice under two names, an MLflow run beside its CSV export): counted
    twice they would halve the back-tests' apparent noise and narrow every interval. A run with
    other accuracies in another source is another measurement and stays. Returns the rows kept
    and a ``repeated`` warning ("" when nothing repeats)."""
    if "source" not in g.columns or "run_id" not in g.columns or len(g) < 2:
        return g, ""
    dup = g.duplicated(["run_id", "us_accuracy", "ds_accuracy"], keep="first")
    if not dup.any():
        return g, ""
    first = g[dup].iloc[0]
    # the sources that repeated these very accuracies, not every source with a run of that id
    same = ((g["run_id"] == first["run_id"]) & (g["us_accuracy"] == first["us_accuracy"])
            & (g["ds_accuracy"] == first["ds_accuracy"]))
    sources = sorted(str(v) for v in g.loc[same, "source"].unique())
    n = int(dup.sum())
    return g[~dup], (f"repeated: {n} row{'s' if n != 1 else ''} repeated a run's accuracies from another source "
                     f"and {'were' if n != 1 else 'was'} counted once (e.g. run {first['run_id']} in "
                     f"{' and '.join(sources[:2])})")


def mixed_sources_warning(us: np.ndarray, sources: np.ndarray, protocols: np.ndarray, threshold: float) -> str:
    """A ``mixed_sources`` warning for a group whose models come from two or more sources, else "".

    Pooling exports that share a US and a DS task name is intended (several labs measuring one
    task), but two harnesses measure one task differently: helm_classic's hellaswag -> mmlu (32
    models, 43-82% US) beside the Open LLM Leaderboard's (87 models, 83-89% US) drew a change of
    harness as a scaling curve, with every held-out model from the second. The warning counts the
    models of each source (largest first, :data:`MAX_SOURCES_NAMED` named) with its US range, says
    whether the held-out models (US above ``threshold``) or the best visible one come from another
    source than most of the visible models, whether their ``extra.protocol`` names differ, and how
    to fit one source. ``us``, ``sources`` and ``protocols`` are aligned (``protocols`` may be empty).
    It describes the data only: no fit, trust or interval reads it. No ";" in it (readers split on it)."""
    us = np.asarray(us, float)
    if sources.size != us.size or us.size == 0:
        return ""
    names = np.array(["(no source)" if s is None else str(s) for s in sources], dtype=object)
    if len(set(names)) < 2:
        return ""
    order = _by_count(names)
    shown = [f"{s} {int(np.sum(names == s))} (US {_range(us[names == s])})" for s in order[:MAX_SOURCES_NAMED]]
    rest = order[MAX_SOURCES_NAMED:]
    if rest:
        shown.append(f"and {len(rest)} more ({int(np.isin(names, rest).sum())} models)")
    held = us > threshold                        # NaN threshold: nothing held out
    main = _by_count(names[~held])[0] if (~held).any() else order[0]
    text = f"mixed_sources: {us.size} models from {len(order)} sources pooled in one group: {', '.join(shown)}"
    text += f". {_top_sources(us, names, held, main, threshold)}"
    apart = _apart(us, names, order[:MAX_SOURCES_NAMED])
    text += f". {apart}" if apart else ""
    differ = _protocol_names(names, protocols, order)
    text += f". {differ}" if differ else ""
    # a mapping's constant is refused on a file with an eval_protocol column of its own (the
    # public tables have one) unless its drop: leaves that column out (docs/ingest.md)
    return (text + ". To fit one source, ingest it into a store of its own (meta-study ingest FILE --store S2), or give "
            "it another eval_protocol at ingest (a mapping with constants: {eval_protocol: VALUE}, VALUE one of "
            "fewshot, finetune, linear, zeroshot, shift, other, beside drop: [eval_protocol] where the file has an "
            "eval_protocol column, fewshot needs shots too) and fit with --eval-protocol VALUE")


def _by_count(names: np.ndarray) -> list[str]:
    """The distinct names, the most frequent first (ties by name)."""
    vals, counts = np.unique(names.astype(str), return_counts=True)
    return [str(v) for _, v in sorted(zip(-counts, vals))]


def _range(us: np.ndarray) -> str:
    """A US range in percent, one decimal ("43.0-82.0%"; one value: "82.0%")."""
    lo, hi = float(np.nanmin(us)), float(np.nanmax(us))
    return f"{100 * lo:.1f}%" if f"{100 * lo:.1f}" == f"{100 * hi:.1f}" else f"{100 * lo:.1f}-{100 * hi:.1f}%"


def _top_sources(us: np.ndarray, names: np.ndarray, held: np.ndarray, main: str, threshold: float) -> str:
    """Where the sources meet the answer: whether the held-out models (above ``threshold``) and
    the best visible model come from ``main``, the source of most visible models, or another. A
    change of source at the top reads as a trend: the answer extrapolates from the best visible
    model, and the held-out models check it."""
    n_vis = int((~held).sum())
    if not n_vis:          # a --holdout-above below every model: nothing fitted, nothing to compare
        return f"Every model is held out (above {100 * threshold:.1f}% US)"
    n_main = int(np.sum(names[~held] == main))
    counts = sorted((int(np.sum(names[~held] == s)) for s in set(names[~held])), reverse=True)
    if len(counts) > 1 and counts[1] == n_main:   # no largest part: "the largest part is from a" named one by its name
        tied = [s for s in _by_count(names[~held]) if int(np.sum(names[~held] == s)) == n_main]
        text = f"The fit is from {' and '.join(tied)} alike ({n_main} each of {n_vis} visible models)"
        main_said = False
    else:
        main_said = True
        most = "Most" if 2 * n_main > n_vis else "The largest part"
        text = f"{most} of the fit is from {main} ({n_main} of {n_vis} visible models)"
    same, other, at_top, off_held = [], [], False, False
    if held.any():
        n, off = int(held.sum()), held & (names != main)
        what = f"held-out model{'s' if n != 1 else ''} above {100 * threshold:.1f}% US"
        if not off.any():
            same.append(f"the {n} {what}")
        else:
            per = ", ".join(f"{s} {int(np.sum(names[off] == s))}" for s in _by_count(names[off])[:MAX_SOURCES_NAMED])
            k = int(off.sum())
            other.append(f"{'the' if k == n else f'{k} of the'} {n} {what} ({per})")
            # a change at the top only where the other sources hold more of the held-out models
            # than of the fit: half of them from b where b is half of the fit too (interleaved
            # sources, one US range) said "a change of source at the top"
            at_top, off_held = k / n > 1 - n_main / n_vis, True
    vis = np.flatnonzero(~held & np.isfinite(us))
    if vis.size:
        best = vis[np.argmax(us[vis])]
        if names[best] == main:
            same.append(f"the best visible model ({100 * us[best]:.1f}% US)")
        else:
            other.append(f"the best visible model ({100 * us[best]:.1f}% US, {names[best]})")
    if same and main_said:
        one = len(same) == 1 and same[0].startswith(("the 1 ", "the best"))
        text += f", as {'is' if one else 'are'} {' and '.join(same)}"
    elif same:   # no largest part to be "as": the source by name
        text += f". From {main}: {' and '.join(same)}"
    if other:
        text += f". From another source: {' and '.join(other)}"
        text += (": a change of source at the top (another harness, prompt or scoring) reads as a trend" if at_top
                 else ": the check on the held-out models mixes sources" if off_held else "")
    return text


def _apart(us: np.ndarray, names: np.ndarray, shown: list[str]) -> str:
    """"Their US ranges do not overlap (...)" for the first two of the ``shown`` sources (largest
    first) whose US ranges are disjoint, else "": the curve between them is a change of source
    (helm_classic up to 82.2% US, the Open LLM Leaderboard from 83.2%)."""
    for i, a in enumerate(shown):
        for b in shown[i + 1:]:
            low, high = sorted((a, b), key=lambda s: float(us[names == s].min()))
            top_of_low, bottom_of_high = float(us[names == low].max()), float(us[names == high].min())
            if top_of_low < bottom_of_high:
                return (f"Their US ranges do not overlap ({low} up to {100 * top_of_low:.1f}%, {high} from "
                        f"{100 * bottom_of_high:.1f}%): the curve from one to the other is a change of source")
    return ""


def _protocol_names(names: np.ndarray, protocols: np.ndarray, order: list[str]) -> str:
    """"Their extra.protocol names differ (a: x, b: y)" where the sources that name their
    protocols (``extra.protocol``) do not all name the same ones, else ""."""
    if protocols.size != names.size:
        return ""
    per = {s: sorted({str(p) for p in protocols[names == s] if p is not None and str(p)}) for s in order}
    per = {s: v for s, v in per.items() if v}       # sources that name none are left out
    if len({tuple(v) for v in per.values()}) < 2:
        return ""
    shown = ", ".join(f"{s}: {' '.join(v[:2])}{' ...' if len(v) > 2 else ''}" for s, v in
                      list(per.items())[:MAX_SOURCES_NAMED])
    return f"Their extra.protocol names differ ({shown}{', ...' if len(per) > MAX_SOURCES_NAMED else ''})"


def load_groups(store: Any, *, us_task: Sequence[str] | None = None, ds_task: Sequence[str] | None = None,
                eval_protocol: Sequence[str] | None = None, shots: Sequence[int] | None = None,
                layer: int | None = None) -> list[Group]:
    """Read the groups of a store, filtered; see :func:`groups_from_frame`."""
    filters: dict[str, Any] = {}
    if us_task:
        filters["us_task"] = list(us_task)
    if ds_task:
        filters["ds_task"] = list(ds_task)
    if eval_protocol:
        filters["eval_protocol"] = list(eval_protocol)
    if shots:
        filters["shots"] = list(shots)
    return groups_from_frame(with_test_sizes(store.read(filters, columns=ROW_COLUMNS)), layer=layer)


#: The store columns an analysis reads: the groups' and the correlation tables' (``extra`` for
#: the DS test-set size and the export's protocol name only: :func:`with_test_sizes`).
ROW_COLUMNS = ["source", "run_id", "model_name", *GROUP_COLUMNS, "representation_layer", "us_accuracy", "ds_accuracy",
               "extra"]


@dataclass(frozen=True)
class Snapshot:
    """A selection's rows of one store version, read from one manifest: its groups, the rows
    themselves (:data:`ROW_COLUMNS`; the correlation tables read them) and the version's
    :attr:`~meta_study.store.Store.snapshot_id` (``"<version>:<transaction>"``)."""

    groups: list[Group]
    rows: pd.DataFrame = field(repr=False)
    snapshot_id: str

    @property
    def version(self) -> int:
        return int(self.snapshot_id.split(":", 1)[0])


@dataclass(frozen=True)
class Selection:
    """Which groups to analyse (empty = all) and which representation layer (None = pre-logits)."""

    us_task: tuple[str, ...] = ()
    ds_task: tuple[str, ...] = ()
    eval_protocol: tuple[str, ...] = ()
    shots: tuple[int, ...] = ()
    layer: int | None = None

    def filters(self) -> dict[str, list[Any]]:
        """The store filters of this selection (the layer is filtered after reading)."""
        return {col: list(vals) for col, vals in (("us_task", self.us_task), ("ds_task", self.ds_task),
                                                  ("eval_protocol", self.eval_protocol), ("shots", self.shots)) if vals}

    def load(self, store: Any) -> list[Group]:
        return load_groups(store, us_task=self.us_task, ds_task=self.ds_task, eval_protocol=self.eval_protocol,
                           shots=self.shots, layer=self.layer)

    def snapshot(self, store: Any) -> Snapshot:
        """The selection's groups and rows of the store's latest version, and which version."""
        table, sid = store.snapshot(self.filters(), columns=ROW_COLUMNS)
        rows = with_test_sizes(table)
        return Snapshot(groups_from_frame(rows, layer=self.layer), rows, sid)


def selected_values(sel: Any) -> tuple[tuple[str, str, tuple[Any, ...]], ...]:
    """(option, column, values given) of a :class:`Selection`'s group options."""
    return (("--us-task", "us_task", sel.us_task), ("--ds-task", "ds_task", sel.ds_task),
            ("--eval-protocol", "eval_protocol", sel.eval_protocol), ("--shots", "shots", sel.shots))


def store_values(groups: Any, col: str) -> list[str]:
    """A group column's values in the store, as a user types them (shots in numeric order)."""
    return sorted({str(int(v)) if col == "shots" else str(v) for v in groups[col].dropna()},
                  key=lambda v: (len(v), v) if col == "shots" else v)


def shown_values(vals: list[str]) -> str:
    """The first 20 values, comma-separated, and how many there are in all beyond that."""
    return ", ".join(vals[:20]) + (f", ... ({len(vals)} in all)" if len(vals) > 20 else "")


def closest_values(given: Sequence[str], have: Sequence[str]) -> str:
    """" did you mean X?" for the given values that are near one the store has (difflib, case
    ignored: ``ImageNet-A`` for ``imagenet-a``), naming the given value when several are; "" when
    none is near. A typo among a hundred task names is then found without reading the list."""
    import difflib

    lower = {h.lower(): h for h in have}
    hits = []
    for v in given:
        near = difflib.get_close_matches(str(v).lower(), list(lower), n=1, cutoff=0.6)
        if near:
            hits.append((str(v), lower[near[0]]))
    if not hits:
        return ""
    if len(given) == 1:
        return f"did you mean {hits[0][1]}?"
    return "did you mean " + ", ".join(f"{h} for {v}" for v, h in hits) + "?"


def _missing(col: str, given: Sequence[Any], have: Sequence[str]) -> list[str]:
    """The given values of a group column that the store does not have, as typed."""
    return [str(v) for v in given if (str(int(v)) if col == "shots" else str(v)) not in have]


def _together(groups: pd.DataFrame, present: Sequence[tuple[str, str, tuple[Any, ...]]]) -> bool:
    """Whether some group of the store has one of the given values of every option at once."""
    keep = pd.Series(True, index=groups.index)
    for _, col, given in present:
        want = {str(int(v)) if col == "shots" else str(v) for v in given}
        shown = [None if pd.isna(v) else str(int(v)) if col == "shots" else str(v) for v in groups[col]]
        keep &= pd.Series([x in want for x in shown], index=groups.index)
    return bool(keep.any())


def matches_no_group(store_obj: Any, sel: Any) -> bool:
    """Whether the selection's named values (US/DS task, protocol, shots) match no group of the
    store at all (False when none is named: nothing is read; False for an empty store or one
    without such a column: the analysis says what is wrong there)."""
    given = [(opt, col, vals) for opt, col, vals in selected_values(sel) if vals]
    if not given:
        return False
    groups = store_obj.summary().groups
    if not len(groups) or any(col not in groups for _, col, _ in given):
        return False
    return not _together(groups, given)


def no_match(store_uri: str, store_obj: Any, sel: Any) -> str:
    """'no rows match the selection', and why: the given values the store does not have (each
    named, with the closest name it has and what it has), values each in the store but in no
    group together, the layers of a store whose rows all probe an intermediate layer, or "(the
    store is empty)". What ``meta-study``'s commands say (``cli._no_match``, the same words) and the
    ``analysis/*.py`` scripts; "(--ds-task: the store has ...)" named what the store has, not which
    of the given values matched nothing."""
    summary = store_obj.summary()   # reads every row's group columns: once
    groups = summary.groups
    if not summary.rows:
        return f"{_shown_store(store_uri)}: no rows match the selection (the store is empty)"
    have, present = [], []
    for opt, col, given in selected_values(sel):
        if not given or col not in groups:
            continue
        values = store_values(groups, col)
        missing = _missing(col, given, values)
        if missing:
            near = closest_values(missing, values) if col != "shots" else ""
            listed = f"it has {shown_values(values)}" if values else "it has none"
            have.append(f"{opt} {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in the store "
                        f"({near + ' ' if near else ''}{listed})")
        else:
            present.append((opt, col, given))
    if not have and len(present) > 1 and len(groups) and not _together(groups, present):
        # each value is there, never with the others: `--us-task jft --ds-task cifar10` where only
        # imagenet models were evaluated on cifar10
        shown = " with ".join(f"{opt} {', '.join(str(v) for v in given)}" for opt, _, given in present)
        have.append(f"no group has {shown} (each is in the store, not together)")
    layer = getattr(sel, "layer", None)
    if layer is not None:   # layer rows are no pre-logits rows: it said "no pre-logits rows of that layer"
        layers = sorted({int(v) for v in store_obj.read(columns=["representation_layer"])
                        .column("representation_layer").to_pylist() if v is not None})
        shown = ", ".join(map(str, layers[:20])) + (f", ... ({len(layers)} in all)" if len(layers) > 20 else "")
        have.append(f"--layer {layer}: the store has probes of layer{'s' if len(layers) != 1 else ''} {shown}"
                    if layers else f"--layer {layer}: the store has no layer-wise probe rows (pre-logits only)")
    if not have:
        # rows, none of them at the pre-logits layer the analysis reads by default: "the store is
        # empty" sent a researcher with a layer-wise sweep looking for lost data. The selection's
        # rows: a DS task probed layer-wise only, in a store with pre-logits rows of others
        filters = sel.filters() if hasattr(sel, "filters") else {}
        note = layers_only_note(store_obj.read(filters, columns=["representation_layer"])
                                .column("representation_layer").to_pylist())
        if note:
            have.append(note)
    if not have:   # the given values are there and together (their rows all probe a layer, say): what it has
        have = [f"{opt}: the store has {shown_values(store_values(groups, col)) or 'none'}" for opt, col, _ in present]
    return f"{_shown_store(store_uri)}: no rows match the selection" + (f": {'; '.join(have)}" if have
                                                                        else " (the store is empty)")


def _shown_store(store_uri: str) -> str:
    """The store as a message names it: as typed, its secrets masked (:func:`~meta_study.store.display_uri`).
    ``s3://KEY:SECRET@lab/x`` (or ``?secret_key=...``), a store URI the commands accept, printed
    the secret in "no rows match the selection" and "no such value in the store"."""
    from ..store import display_uri

    return display_uri(str(store_uri))


def unknown_selection(store_uri: str, store_obj: Any, sel: Any) -> str | None:
    """A value given to a selection option that no group of the store has (a typo among several
    names dropped its group silently): one line naming it, with what the store has. The CLI's
    commands and the ``analysis/*.py`` scripts (which went on without the group, exit 0) both ask."""
    if not any(given for _, _, given in selected_values(sel)):
        return None                       # nothing named: no summary to read (a manifest read on s3)
    groups = store_obj.summary().groups
    for opt, col, given in selected_values(sel):
        if given and col in groups and len(groups):
            have = store_values(groups, col)
            missing = _missing(col, given, have)
            if missing and len(missing) < len(given):     # none matching at all: _no_match says it
                near = closest_values(missing, have) if col != "shots" else ""
                return (f"{_shown_store(store_uri)}: {opt} {', '.join(missing)}: no such value in the store "
                        f"(it has {shown_values(have) or 'none'})" + (f"; {near}" if near else ""))
    return None
