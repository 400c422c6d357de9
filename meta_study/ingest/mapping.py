"""Mappings: how a source's columns (or an MLflow run's params, tags and metrics) become canonical rows.

A mapping is a small YAML file (format in ``docs/ingest.md``). The same file type serves file
exports (``rename``/``join``) and MLflow runs (``metrics``/``params``/``tags``); keys that do
not apply to a source kind are rejected when the mapping is used with it.

Units convert raw values to the canonical ones:

========== ==================================== ==============================
unit       raw value                            canonical value
========== ==================================== ==============================
fraction   accuracy in [0, 1]                   unchanged
percent    accuracy in [0, 100]                 ``x / 100``
error      error rate in [0, 1]                 ``1 - x``
error_percent error rate in [0, 100]            ``1 - x / 100``
count      a number                             unchanged
thousands  a count in thousands                 ``x * 1e3``
millions   a count in millions (timm's params)  ``x * 1e6``
========== ==================================== ==============================

A percent unit on values that are fractions would divide them silently (0.8 -> 0.008), so the
raw values of a column declared ``percent`` or ``error_percent`` are tallied
(:class:`PercentTally`) and the source is refused whole, in one line, when they cannot all be
percents (:meth:`PercentTally.refuse_fractions`): the mirror of the pipeline's refusal of a
fraction column that holds percents.
"""

from __future__ import annotations

import decimal
import difflib
import os
import re
import string
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import UserError
from ..schema import ARCH_FAMILIES, COLUMN_BY_NAME, EVAL_PROTOCOLS, STORE_FILLED
from ..validation import (SOURCE_REASON, bytes_text, SOURCE_REASON_KIND, SOURCE_UNIT, ambiguous_thousands, canonical_name,
                          extra_text, number_text, printable)

ACCURACY_UNITS = ("fraction", "percent", "error", "error_percent")
COUNT_UNITS = ("count", "thousands", "millions")
#: Accuracy units whose raw values are in [0, 100]: tallied by :class:`PercentTally`.
PERCENT_UNITS = ("percent", "error_percent")

#: Default architecture-family rules, applied to ``model_name`` when a row has no ``arch_family``.
#: Regexes are matched with ``re.search`` on the lower-cased name, ignoring case (a user's ``'^ViT'`` too);
#: the first family that matches wins.
DEFAULT_ARCH_RULES: dict[str, str] = {
    "mixer": r"(?:^|_)mixer|resmlp|gmlp",
    "vit": r"^(?:vit|deit|eva|beit|cait|crossvit|xcit|pit|tnt|levit|flexivit|naflexvit|swin|volo|twins|"
           r"davit|coat|sam2?_|dinov2|siglip|clip)",
    "resnet": r"^(?:resnet|resnext|wide_resnet|seresnet|seresnext|ecaresnet|bit|resnetv2|resnetrs|resnest|"
              r"skresnet|ig_resnext|ssl_resnet|swsl_resnet|gluon_resne|tv_resne|legacy_seresne)",
}

_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")


def _format_err(where: str, msg: str) -> UserError:
    return UserError(f"{where}: {msg}")


@dataclass(frozen=True)
class TableSpec:
    """One file of a wide join: which file, which task, which column holds the accuracy."""

    file: str          # glob on the file's base name
    task: str
    accuracy: str      # column holding the accuracy, in the mapping's accuracy unit


@dataclass(frozen=True)
class JoinSpec:
    """Several wide files (one per task) joined on key columns into long canonical rows."""

    on: tuple[str, ...]
    upstream: TableSpec
    downstream: tuple[TableSpec, ...]


@dataclass(frozen=True)
class MetricPattern:
    """An MLflow metric-key pattern such as ``ds/{ds_task}/{shots}shot/top1``.

    Captures fill canonical columns (``us_task``, ``ds_task``, ``shots``,
    ``representation_layer``); the metric's value is the accuracy of ``role``.
    """

    pattern: str
    role: str                               # "us" or "ds"
    eval_protocol: str | None = None        # for ds patterns; default fewshot if {shots} captured
    unit: str | None = None                 # overrides the mapping's accuracy unit
    constants: Mapping[str, Any] = field(default_factory=dict)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_pattern(self.pattern))

    def match(self, key: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(key)
        return None if m is None else m.groupdict()


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``ds/{ds_task}/{shots}shot/top1`` -> a regex with named groups.

    ``{shots}`` and ``{representation_layer}`` match digits; other captures match one path
    segment (no ``/``).
    """
    out, pos = [], 0
    for m in _TEMPLATE_FIELD.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        name = m.group(1)
        if not name.isidentifier():
            raise ValueError(f"bad capture {{{name}}} in pattern {pattern!r}")
        if f"(?P<{name}>" in "".join(out):   # re.compile's "redefinition of group name" was a traceback
            raise ValueError(f"{{{name}}} twice in pattern {pattern!r}")
        body = r"\d+" if name in ("shots", "representation_layer") else r"[^/]+"
        out.append(f"(?P<{name}>{body})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class IngestMapping:
    """A parsed mapping file. See ``docs/ingest.md`` for the format."""

    name: str = "default"
    source: str | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    extra: str | tuple[str, ...] = "rest"    # "rest" | "none" | explicit columns
    arch_family: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ARCH_RULES))
    join: JoinSpec | None = None
    # MLflow runs (see meta_study.ingest.mlflow)
    metrics: tuple[MetricPattern, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)   # MLflow param name -> canonical column
    tags: Mapping[str, str] = field(default_factory=dict)     # MLflow tag name -> canonical column
    accuracy_unit: str = "fraction"
    # a file's columns left out: neither a canonical column nor extra. Out of the repr, added to
    # the fingerprint only when set: a new field in the repr changed every mapping's fingerprint,
    # and every file and MLflow run was read again after the upgrade
    drop: tuple[str, ...] = field(default=(), repr=False)

    def fingerprint(self) -> str:
        """sha256 of everything the mapping says (the repr of :meth:`canonical`, and its ``drop``
        list when it has one): equal mappings, equal rows. The order of its maps' entries is no
        part of it where it means nothing: the same ``rename:`` or ``units:`` written in another
        order read every file again as "changed"."""
        import hashlib

        c = self.canonical()
        return hashlib.sha256((repr(c) + (f" drop={c.drop!r}" if c.drop else "")).encode()).hexdigest()[:24]

    def canonical(self) -> "IngestMapping":
        """This mapping with the entries whose order means nothing in sorted order: ``rename``,
        ``constants``, ``units``, ``params``, ``tags`` (one column each: two entries for one column
        are refused, or compared by value), an ``extra`` list (stored as a map, sorted by key) and ``drop``.
        ``arch_family`` (first match wins), ``metrics`` and the join's tables keep theirs. A mapping
        already in that order is returned equal, so its :meth:`fingerprint` is what it was."""
        def ordered(m: Mapping[str, Any]) -> dict[str, Any]:
            return dict(sorted(m.items(), key=lambda kv: str(kv[0])))

        extra = self.extra if isinstance(self.extra, str) else tuple(sorted(self.extra))
        return replace(self, rename=ordered(self.rename), constants=ordered(self.constants), units=ordered(self.units),
                       params=ordered(self.params), tags=ordered(self.tags), extra=extra, drop=tuple(sorted(self.drop)))

    def unit_of(self, column: str) -> str:
        if column in self.units:
            return self.units[column]
        return self.accuracy_unit if column in ("us_accuracy", "ds_accuracy") else "count"


_ALLOWED_KEYS = {"name", "source", "rename", "constants", "units", "run_id", "extra", "arch_family", "join",
                 "metrics", "params", "tags", "accuracy_unit", "description", "drop"}


def _as_str_map(v: Any, where: str, what: str, quote_values: bool = True) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _format_err(where, f"'{what}' must be a map of strings to strings")
    for k, x in v.items():
        # name the entry: YAML reads an unquoted `2012:` as a number and `on:`/`no:` as booleans,
        # and "must be a map of strings to strings" did not say which entry or why
        for at, item, may_quote in ((f"{what}: the key", k, True), (f"{what}.{printable(str(k))[:60]}:", x, quote_values)):
            if not isinstance(item, str):
                quotable = may_quote and (_scalar_name(item) or isinstance(item, bool))
                quote = "; quote it" if quotable else ""
                raise _format_err(where, f"{at} {printable(repr(item))[:60]} is {_yaml_kind(item)}, not a string{quote}")
    return dict(v)


def _yaml_kind(v: Any) -> str:
    """What YAML made of an unquoted value, for a message: ``on`` -> a boolean, ``1.5`` -> a number."""
    if isinstance(v, bool):
        return "a boolean to YAML (unquoted yes/no/on/off/true/false)"
    if isinstance(v, (int, float)):
        return "a number to YAML"
    return "empty" if v is None else f"a {type(v).__name__}"


def _canonical(col: str, where: str, what: str) -> str:
    if col != "extra" and col not in COLUMN_BY_NAME:
        raise _format_err(where, f"{what}: unknown canonical column {col!r}")
    if col in STORE_FILLED:
        raise _format_err(where, f"{what}: {col!r} is filled by the store and cannot be mapped")
    return col


def _check_constants(constants: Mapping[Any, Any], where: str, what: str) -> None:
    """Constants (the mapping's, or a metric pattern's) fill canonical columns with one value each:
    an unknown column (a typo) was dropped without a word where a metric pattern named it."""
    for c, value in constants.items():
        _canonical(c, where, what)
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise _format_err(where, f"{what}.{c}: must be a single value, not {type(value).__name__} {value!r}")
        # no column holds a boolean, and a text column no float: `ds_task: on`, `optimizer: no` or
        # `ds_task: 1.5` quarantined every row ("wrong type (bool is not a string)"), the mapping unnamed
        ctype = COLUMN_BY_NAME[c].type
        text = pa.types.is_string(ctype)
        if isinstance(value, bool) or (text and isinstance(value, float)):
            wanted = ("a name; quote it" if text else "a number" if pa.types.is_integer(ctype) or
                      pa.types.is_floating(ctype) else f"a {ctype} value")
            raise _format_err(where, f"{what}.{c}: {value!r} is {_yaml_kind(value)}, not {wanted}")
    if "eval_protocol" in constants and constants["eval_protocol"] not in EVAL_PROTOCOLS:
        raise _format_err(where, f"{what}.eval_protocol: unknown protocol {constants['eval_protocol']!r} "
                                 f"(expected one of {', '.join(EVAL_PROTOCOLS)})")


def parse_mapping(doc: Mapping[str, Any], where: str) -> IngestMapping:
    """Validate a mapping document (already parsed from YAML) and build a :class:`IngestMapping`.

    Raises:
        UserError: naming ``where`` and the offending key.
    """
    if not isinstance(doc, dict):
        raise _format_err(where, "a mapping must be a YAML map")
    unknown = sorted(map(str, set(doc) - _ALLOWED_KEYS))   # str: a key `1:` was a TypeError traceback
    if unknown:
        # a typo ("renmae") is named with the key it is close to, beside the whole list
        near = [f"{k!r}: did you mean {m[0]!r}?" for k in unknown
                if (m := difflib.get_close_matches(k.lower(), sorted(_ALLOWED_KEYS), n=1, cutoff=0.75))]
        raise _format_err(where, f"unknown key(s) {', '.join(unknown)}{' (' + '; '.join(near) + ')' if near else ''} "
                                 f"(allowed: {', '.join(sorted(_ALLOWED_KEYS))})")
    rename = _as_str_map(doc.get("rename"), where, "rename")
    for raw, canon in rename.items():
        _canonical(canon, where, f"rename.{raw}")
    constants = doc.get("constants") or {}
    if not isinstance(constants, dict):
        raise _format_err(where, "'constants' must be a map")
    constants = dict(constants)   # a copy: `source` leaves it below, not the caller's document
    _check_constants(constants, where, "constants")
    for c in ("us_accuracy", "ds_accuracy"):
        # constants are canonical values: a unit converts the input's values, never a constant
        value = constants.get(c)
        # a quoted number ('85') too: validation told it to "set its unit to percent", and a unit
        # on a constant column is refused (below)
        number = _unit_number(value) if isinstance(value, str) else value
        if isinstance(number, (int, float)) and not isinstance(number, bool) and not 0 <= number <= 1:
            hint = f" (write {round(number / 100, 12):g} for {number:g} %)" if 1 < number <= 100 else ""
            raise _format_err(where, f"constants.{c}: {value!r} is not a fraction in [0, 1]: a constant is a "
                                     f"canonical value, not converted by a unit{hint}")
    units = _as_str_map(doc.get("units"), where, "units", quote_values=False)   # a unit is a word: no "quote it"
    for col, unit in units.items():
        _canonical(col, where, "units")
        allowed = ACCURACY_UNITS if col in ("us_accuracy", "ds_accuracy") else COUNT_UNITS
        ctype = COLUMN_BY_NAME[col].type
        if not (pa.types.is_integer(ctype) or pa.types.is_floating(ctype)):
            # `units: {model_name: millions}` was accepted: a name that reads as a number ("50") was
            # multiplied (50000000.0) and its row quarantined as "wrong type (not a string)", the
            # mapping unnamed; the other names passed unconverted
            raise _format_err(where, f"units.{col}: {col} holds {ctype}, not numbers; a unit converts numbers only")
        if unit not in allowed:
            raise _format_err(where, f"units.{col}: unknown unit {unit!r} (expected {', '.join(allowed)})")
        if col in constants and unit not in ("fraction", "count"):
            # a constant is never converted: `param_count: 86` beside `millions` stored 86 parameters
            raise _format_err(where, f"units.{col}: {col} is a constant ({constants[col]!r}), which is a canonical "
                                     f"value that no unit converts; give it in canonical units and drop its unit")
    acc_unit = doc.get("accuracy_unit", "fraction")
    if acc_unit not in ACCURACY_UNITS:
        raise _format_err(where, f"accuracy_unit: unknown unit {acc_unit!r} (expected {', '.join(ACCURACY_UNITS)})")
    run_id = doc.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise _format_err(where, "'run_id' must be a column name or a template such as '{model}@{img_size}'")
    if run_id is not None:
        try:
            parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(run_id) if f is not None]
        except ValueError as e:
            raise _format_err(where, f"run_id: bad template {run_id!r} ({e})") from None
        names = [f for f, _, _ in parsed]
        bad = [f for f in names if not f or any(ch in f for ch in ".[]")]
        if bad:
            raise _format_err(where, f"run_id: {{{bad[0]}}} in {run_id!r} is not a column name (attribute, index "
                                     "and positional fields are not supported)")
        # values are text: '{size:03d}' raised "Unknown format code 'd'" (a traceback) on every file,
        # '{model!r}' quoted each id ('vit'), '{model:>10}' padded it
        spec = next(((f, sp, cv) for f, sp, cv in parsed if sp or cv), None)
        if spec is not None:
            f, sp, cv = spec
            field_text = f"{{{f}{'!' + cv if cv else ''}{':' + sp if sp else ''}}}"
            raise _format_err(where, f"run_id: {field_text} in {run_id!r} has a format spec or conversion, which "
                                     f"is not supported (a field's value is written as it is: {{{f}}})")
    extra = doc.get("extra", "rest")
    if isinstance(extra, list):
        bad_extra = [x for x in extra if not isinstance(x, str) or not x]
        if bad_extra or not extra:
            raise _format_err(where, f"extra: {bad_extra[0]!r} is not a column name" if bad_extra else
                              "extra: an empty list (use 'none' for no extra columns)")
        extra = tuple(extra)
    elif extra not in ("rest", "none"):
        raise _format_err(where, "'extra' must be 'rest', 'none' or a list of columns")
    arch = doc.get("arch_family")
    if arch is None:
        arch_rules = dict(DEFAULT_ARCH_RULES)
    else:
        arch_rules = _as_str_map(arch, where, "arch_family")
        for fam, rx in arch_rules.items():
            if fam not in ARCH_FAMILIES:
                raise _format_err(where, f"arch_family: unknown family {fam!r} (expected {', '.join(ARCH_FAMILIES)})")
            try:
                re.compile(rx)
            except re.error as e:
                raise _format_err(where, f"arch_family.{fam}: bad regex ({e})") from None
    join = _parse_join(doc.get("join"), where) if doc.get("join") is not None else None
    drop = _parse_drop(doc.get("drop"), where, rename, extra, run_id, join)
    if not isinstance(doc.get("metrics") or [], list):
        raise _format_err(where, "'metrics' must be a list of patterns")
    metrics = tuple(_parse_metric(m, where, i) for i, m in enumerate(doc.get("metrics") or []))
    params = _as_str_map(doc.get("params"), where, "params")
    tags = _as_str_map(doc.get("tags"), where, "tags")
    for what, names in (("params", params), ("tags", tags)):
        for k, v in names.items():
            _canonical(v, where, f"{what}.{k}")
            if v == "extra":   # the run's extra map replaced the value: the param was lost, not kept
                raise _format_err(where, f"{what}.{k}: 'extra' is no column for one {what[:-1]}; every "
                                         f"{what[:-1]} the mapping does not name is kept in extra already")
    source = doc.get("source")
    if source is not None and not (isinstance(source, str) and source.strip()):
        # "" or "  " quarantined every row as "source: missing required field"
        raise _format_err(where, f"'source' must be a source name, not {printable(repr(source))[:60]}")
    if "source" in constants:
        # `constants: {source: a}` is `source: a` to the rows, but the checks of a file's source
        # (two files of one source, copies) did not see it, and beside `source: b` it lost silently
        own = constants.pop("source")
        if not (isinstance(own, str) and own.strip()):
            raise _format_err(where, f"constants.source: must be a source name, not {printable(repr(own))[:60]}")
        if source is not None and source != own:
            raise _format_err(where, f"constants.source {own!r} contradicts source {source!r}: give one 'source:'")
        source = own
    _refuse_error_rates_as_accuracies(where, rename, join, metrics, units, acc_unit)
    return IngestMapping(name=str(doc.get("name") or os.path.basename(where)), source=source, rename=rename,
                    constants=dict(constants), units=units, run_id=run_id, extra=extra, arch_family=arch_rules,
                    join=join, metrics=metrics, params=params, tags=tags, accuracy_unit=acc_unit, drop=drop)


def _run_id_columns(run_id: str | None) -> list[str]:
    """The file columns a ``run_id`` reads: a template's fields, or the whole value where it has no
    brace (a column name), as :func:`render_run_ids` reads them."""
    if run_id is None:
        return []
    fields = template_fields(run_id)
    return fields if fields or "{" in run_id or "}" in run_id else [run_id]


def _parse_drop(v: Any, where: str, rename: Mapping[str, str], extra: str | tuple[str, ...],
                run_id: str | None = None, join: JoinSpec | None = None) -> tuple[str, ...]:
    """The file columns a mapping's ``drop:`` leaves out (a list of names; a single name is one).
    A column both dropped and read by another key whose values reach the rows is refused: the
    mapping says two things. Those keys: ``rename``, an ``extra`` list, ``run_id`` (each run id
    was built from the dropped column: ``drop: [model]`` beside ``run_id: '{model}@{size}'`` was
    accepted, and beside ``rename: {name: model_name}``, ``drop: [model_name]`` the template's
    ``{model_name}`` read the dropped file column, not the renamed one) and a join table's
    ``accuracy`` (stored as the accuracy all the same). A join's ``key`` may be dropped: it pairs
    the tables' rows, and dropping it keeps it out of ``extra``. ``metrics``, ``params`` and
    ``tags`` name MLflow keys, not file columns (an MLflow mapping refuses ``drop:``)."""
    if v is None:
        return ()
    names = [v] if isinstance(v, str) else v
    if not isinstance(names, list) or not names or not all(isinstance(x, str) and x for x in names):
        raise _format_err(where, f"drop: must be a list of file column names, not {printable(repr(v))[:60]}")
    for col in names:
        if col in rename:
            raise _format_err(where, f"drop: {col!r} is also renamed (rename.{col}); drop it or rename it")
        if isinstance(extra, tuple) and col in extra:
            raise _format_err(where, f"drop: {col!r} is also listed in extra; drop it or keep it in extra")
        if col in _run_id_columns(run_id):
            raise _format_err(where, f"drop: {col!r} is also read by run_id ({printable(repr(run_id))[:80]}), which "
                                     "builds each run id from it; drop it or take it out of run_id")
        tables = [] if join is None else [("join.upstream", join.upstream),
                                          *((f"join.downstream[{i}]", t) for i, t in enumerate(join.downstream))]
        read_as = next((f"{at}.accuracy (the {printable(t.task)[:60]} accuracies)" for at, t in tables
                        if t.accuracy == col), None)
        if read_as is not None:
            raise _format_err(where, f"drop: {col!r} is also {read_as}; drop it or read the accuracies from "
                                     "another column")
    return tuple(dict.fromkeys(names))


#: A raw name that says it holds error rates: ``top1_err``, ``err_rate``, ``top1-error``, ``eval/pets/error``
#: (``err`` or ``error`` as a word of the name; not ``stderr``).
_ERROR_NAME = re.compile(r"(?:^|[^a-z])err(?:or)?s?(?:[^a-z]|$)")
#: A raw name that says it holds accuracies: ``val_acc``, ``acc1``, ``eval/pets/accuracy``, ``top1_accuracy``
#: (``acc`` or ``accuracy`` as a word of the name; not ``accel`` or ``account``).
_ACCURACY_NAME = re.compile(r"(?:^|[^a-z])acc(?:uracy|uracies)?(?:[^a-z]|$)")


def _refuse_error_rates_as_accuracies(where: str, rename: Mapping[str, str], join: JoinSpec | None,
                                      metrics: Sequence[MetricPattern], units: Mapping[str, str], acc_unit: str) -> None:
    """A :class:`UserError` for a raw column (or metric key) named as an error rate that fills an
    accuracy column in a unit that is no error rate: timm's results hold ``top1`` and
    ``top1_err`` side by side, and a mapping that took ``top1_err`` in ``percent`` stored every
    error rate as an accuracy (9.944 % error as accuracy 0.09944), without a word. And the
    mirror: one named as an accuracy (``val_acc``, and no error word) in an error unit."""
    named: list[tuple[str, str, str, str | None]] = []   # (where in the mapping, raw name, column, pattern unit)
    named += [(f"rename.{raw}", raw, col, None) for raw, col in rename.items() if col in ("us_accuracy", "ds_accuracy")]
    if join is not None:
        named.append(("join.upstream.accuracy", join.upstream.accuracy, "us_accuracy", None))
        named += [(f"join.downstream[{i}].accuracy", t.accuracy, "ds_accuracy", None)
                  for i, t in enumerate(join.downstream)]
    named += [(f"metrics[{i}]", m.pattern, f"{m.role}_accuracy", m.unit) for i, m in enumerate(metrics)]
    for what, raw, col, pattern_unit in named:
        # a metric pattern's unit, else the column's (`units`, else accuracy_unit), as the readers convert
        unit = pattern_unit or units.get(col, acc_unit)
        # a pattern's captures are not its name: "{ds_task}_acc" holds no error rate for a task "err1"
        name = _TEMPLATE_FIELD.sub("/", raw).lower()
        errors, accuracies = bool(_ERROR_NAME.search(name)), bool(_ACCURACY_NAME.search(name))
        if unit in ("error", "error_percent") and accuracies and not errors:
            # the mirror: `accuracy_unit: error` for a mapping's error-rate metrics also turned its
            # `us/val_acc` (a pattern without a unit of its own) into 1 - accuracy: 0.8 stored as 0.2
            fix = "percent" if unit == "error_percent" else "fraction"
            shown_name = f"the pattern {raw!r}" if what.startswith("metrics") else f"the column {raw!r}"
            where_unit = f"{what}.unit" if what.startswith("metrics") else f"units.{col}"
            raise _format_err(where, f"{what}: {shown_name} holds accuracies by its name, but maps to {col} in unit "
                                     f"{unit}, which would store each accuracy as its error rate (0.8 as 0.2); give it "
                                     f"the unit {fix} ({where_unit}), or map an error-rate column instead")
        if unit in ("error", "error_percent") or not errors:
            continue
        fix = "error_percent" if unit == "percent" else "error"
        shown_name = f"the pattern {raw!r}" if what.startswith("metrics") else f"the column {raw!r}"
        raise _format_err(where, f"{what}: {shown_name} holds error rates by its name, but maps to {col} in unit "
                                 f"{unit}, which would store each error rate as an accuracy; give it the unit {fix} "
                                 f"(error rates in [0, {'100' if fix == 'error_percent' else '1'}]), or map the "
                                 "accuracy column instead")


def _parse_table(d: Any, where: str, what: str) -> TableSpec:
    if not isinstance(d, dict) or not {"file", "task", "accuracy"} <= set(d):
        raise _format_err(where, f"{what}: needs 'file', 'task' and 'accuracy'")
    extra = set(d) - {"file", "task", "accuracy"}
    if extra:
        raise _format_err(where, f"{what}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
    for key in ("file", "task", "accuracy"):   # `file: null` was a glob 'None', `accuracy: [a]` a column "['a']"
        if not _scalar_name(d[key]):
            raise _format_err(where, f"{what}.{key}: must be a name, not {printable(repr(d[key]))[:60]}")
    return TableSpec(file=str(d["file"]), task=str(d["task"]), accuracy=str(d["accuracy"]))


def _scalar_name(v: Any) -> bool:
    """Whether ``v`` can name a column, file or task: text, or a number YAML read from one (``2012``)."""
    return (isinstance(v, str) and v != "") or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _parse_join(d: Any, where: str) -> JoinSpec:
    # The key list is called "key", not "on": YAML 1.1 reads a bare `on:` as the boolean true.
    if not isinstance(d, dict) or "key" not in d or "upstream" not in d or "downstream" not in d:
        raise _format_err(where, "join: needs 'key', 'upstream' and 'downstream'")
    extra = set(d) - {"key", "upstream", "downstream"}
    if extra:
        raise _format_err(where, f"join: unknown key(s) {', '.join(map(str, sorted(extra, key=str)))}")
    on = d["key"] if isinstance(d["key"], list) else [d["key"]]
    bad_key = [k for k in on if not _scalar_name(k)]
    if bad_key or not on:
        raise _format_err(where, "join.key: must be a column name or a list of them, not "
                                 f"{printable(repr(d['key']))[:60]}")
    ds = d["downstream"]
    if not isinstance(ds, list) or not ds:
        raise _format_err(where, "join.downstream: must be a non-empty list")
    return JoinSpec(on=tuple(str(x) for x in on), upstream=_parse_table(d["upstream"], where, "join.upstream"),
                    downstream=tuple(_parse_table(x, where, f"join.downstream[{i}]") for i, x in enumerate(ds)))


def _parse_metric(d: Any, where: str, i: int) -> MetricPattern:
    what = f"metrics[{i}]"
    if isinstance(d, str):
        d = {"pattern": d}
    if not isinstance(d, dict) or "pattern" not in d:
        raise _format_err(where, f"{what}: needs 'pattern'")
    if not isinstance(d["pattern"], str) or not d["pattern"]:   # `pattern: null` was the metric key "None"
        raise _format_err(where, f"{what}.pattern: must be a metric key pattern such as 'ds/{{ds_task}}/top1', "
                                 f"not {printable(repr(d['pattern']))[:60]}")
    if not isinstance(d.get("constants") or {}, dict):
        raise _format_err(where, f"{what}.constants: must be a map")
    pattern = str(d["pattern"])
    try:
        rx = compile_pattern(pattern)
    except ValueError as e:
        raise _format_err(where, f"{what}: {e}") from None
    groups = set(rx.groupindex)
    for g in groups:
        _canonical(g, where, f"{what} capture")
        if g == "extra":
            raise _format_err(where, f"{what}: {{extra}} is no column for a captured name (extra is a map)")
    role = d.get("role") or ("ds" if "ds_task" in groups or "ds_task" in (d.get("constants") or {}) else "us")
    if role not in ("us", "ds"):
        raise _format_err(where, f"{what}: role must be 'us' or 'ds'")
    if role == "us" and "us_task" not in groups and "us_task" not in (d.get("constants") or {}):
        # the mapping's own `constants: {us_task: ...}` does not name a pattern's task: it said "needs a
        # us_task constant" to a mapping that had one
        raise _format_err(where, f"{what}: an upstream pattern needs a {{us_task}} capture or a us_task in its own "
                                 f"constants ({what}.constants.us_task; the mapping's constants do not name it)")
    proto = d.get("eval_protocol")
    if proto is not None and proto not in EVAL_PROTOCOLS:
        raise _format_err(where, f"{what}: unknown protocol {proto!r} (expected one of {', '.join(EVAL_PROTOCOLS)})")
    unit = d.get("unit")
    if unit is not None and unit not in ACCURACY_UNITS:
        raise _format_err(where, f"{what}: unknown unit {unit!r} (expected {', '.join(ACCURACY_UNITS)})")
    extra = set(d) - {"pattern", "role", "eval_protocol", "unit", "constants"}
    if extra:
        raise _format_err(where, f"{what}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
    _check_constants(d.get("constants") or {}, where, f"{what}.constants")
    return MetricPattern(pattern=pattern, role=role, eval_protocol=proto, unit=unit,
                         constants=dict(d.get("constants") or {}))


#: A mapping or sources file larger than this is refused unread: they are a few hundred bytes.
MAX_CONFIG_BYTES = 1 << 20


def read_yaml(path: str, what: str) -> Any:
    """The document of a small YAML config file (a mapping, a sources file), or one
    :class:`UserError` naming ``path`` and the problem.

    Read with a safe loader (no object is ever constructed) that also refuses aliases (``*name``):
    nine nested aliases expand a 400-byte file to 10**9 nodes (a "billion laughs"), which any
    code that walks the document then takes minutes and gigabytes over. Only a regular file of
    at most :data:`MAX_CONFIG_BYTES` of UTF-8 is read (not a FIFO or a device, which never end).
    """
    import stat

    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.YAMLError(f"YAML aliases (*{event.anchor}) are not allowed, at line "
                                     f"{event.start_mark.line + 1}")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            # PyYAML keeps the last of a key given twice: a second `rename:` block (or `top1:` twice
            # in one) dropped the first without a word, and its columns went to extra
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:   # an unhashable key: PyYAML's own error names it
                    break
                if first is not None:
                    raise yaml.YAMLError(f"key {printable(repr(key))[:60]} given twice in one map, at lines "
                                         f"{first} and {line}: one would be ignored")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: cannot read {what} (not a regular file)")
        if st.st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: cannot read {what} ({st.st_size:,} bytes; a {what} is at most "
                            f"{MAX_CONFIG_BYTES >> 20} MB)")
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        text = data.decode("utf-8")
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader, without aliases)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: cannot read {what} (not UTF-8 text: byte {e.start})") from None
    except RecursionError:
        raise UserError(f"{path}: cannot read {what} (nested too deeply)") from None
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read {what} ({_yaml_problem(e)})") from None


def _yaml_problem(e: BaseException) -> str:
    """A YAML error in one line, with where it is: "while parsing a flow sequence" alone (its first
    line) named no line of the file. PyYAML's marks count from 0; lines here from 1."""
    import yaml

    if isinstance(e, yaml.MarkedYAMLError) and (e.problem or e.context):
        mark = e.problem_mark or e.context_mark
        what = "; ".join(str(x) for x in (e.context, e.problem) if x)
        return f"{what}, at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else what
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_mapping(path: str) -> IngestMapping:
    """Load and validate a mapping YAML file. Raises :class:`UserError` on any problem."""
    return parse_mapping(read_yaml(path, "mapping"), path)


def shipped_mappings() -> list[tuple[str, IngestMapping]]:
    """(path, mapping) of the file-export mappings shipped in the repository's
    ``examples/mappings/`` beside this package (a checkout or an editable install; none for a
    wheel without them), for the line that refuses files no mapping fits: it names the one that
    does (``examples/data/timm/`` without ``--mapping`` failed once per file and named none).
    MLflow mappings (``metrics``/``params``/``tags``) and files that do not load are left out.
    Cost: a few small YAML files, read only when files were refused."""
    from pathlib import Path

    out = []
    for path in sorted((Path(__file__).resolve().parents[2] / "examples" / "mappings").glob("*.yaml")):
        try:
            m = load_mapping(str(path))
        except UserError:
            continue
        if not (m.metrics or m.params or m.tags):
            out.append((str(path), m))
    return out


def shown_path(path: str) -> str:
    """``path`` as a message names it for the user to type: relative to the working directory
    when it lies under it, else absolute (valid from any directory, never ``../../x``)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:     # another drive (Windows)
        return os.path.abspath(path)
    return os.path.abspath(path) if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


# --------------------------------------------------------------------------------------------
# Applying a mapping to a raw frame
# --------------------------------------------------------------------------------------------


#: Within one task, values in (0, 1] that are at least one in this many of its nonzero values,
#: beside a value above PERCENT_CLEARLY_ABOVE, are fractions among percents. Real percent
#: accuracies hold a few values <= 1 % (near-chance models on a hard task): 1 of 1,556 on timm's
#: ImageNet-A; one in ten leaves a wide margin above that, and still refuses ten rows with one
#: fraction among them.
PERCENT_MIXED_ONE_IN = 10
#: A value above this (10 %) is no fraction, and no near-chance accuracy beside which values <= 1 %
#: would be ordinary: a task whose values all lie in [0, 10] is near chance, in percent.
PERCENT_CLEARLY_ABOVE = 10.0
#: What a refusal of a whole source says of it: true of its first batch; ingest amends it for a
#: later one (``pipeline._after_commits``), so every refusal says it with this constant.
NOTHING_STORED = "nothing of this source was stored"
#: The task column whose values group each accuracy column's tally.
TASK_OF = {"us_accuracy": "us_task", "ds_accuracy": "ds_task"}


def _task_key(task: Any) -> str:
    """A task as it will be stored (:func:`~meta_study.validation.canonical_name`: spaces at either
    end and zero-width characters dropped, Unicode's composed form), "" for none: 'pets ' and
    'pets' are one task, and the percent check counted them apart (so did 'pets\u200b')."""
    if task is None or (isinstance(task, float) and np.isnan(task)) or task is pd.NA:
        return ""
    return canonical_name(str(task))


def _task_keys(tasks: Sequence[Any] | None, n: int) -> np.ndarray:
    """:func:`_task_key` of each of ``tasks`` (``n`` of "" for None), computed once per distinct
    task: one Python call per value was ~1 s per 1M values of a large file's pieces."""
    if tasks is None:
        return np.full(n, "", dtype=object)
    codes, uniq = pd.factorize(np.asarray(tasks, dtype=object), use_na_sentinel=False)
    return np.array([_task_key(u) for u in uniq] or [""], dtype=object)[codes]


@dataclass
class PercentTally:
    """The raw values of accuracy columns declared in percent (``percent``, ``error_percent``),
    counted per task across the pieces of one batch, so that a column that holds fractions is
    refused whole (:meth:`refuse_fractions`).

    ``counts[(column, unit)][task]``: values in (0, 1], values above :data:`PERCENT_CLEARLY_ABOVE`,
    and finite nonzero values (0 is 0 in either unit: it says nothing about the unit)."""

    counts: dict[tuple[str, str], dict[str, list[int]]] = field(default_factory=dict)
    #: ``(column, task)`` -> [lowest, highest] of its raw values above 1 (percent only), over the
    #: pieces read so far: what :meth:`lone_fractions` compares a value in (0, 1] with
    above_one: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: ``(column, task)`` -> [values in (0, 1] that :meth:`lone_fractions` passed (stored as
    #: percents), those it refused], and the first passed value: a large file is read in pieces,
    #: and a task's values above 1 may come in a later piece than a value <= 1 of it
    lone: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    #: ``counts``' nonzero values that were stored before (:meth:`add_stored`): an MLflow page is
    #: decided with the rows its source already holds, and its message says how many of the
    #: values counted are those
    stored: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    def add_stored(self, column: str, unit: str, accuracies: np.ndarray, tasks: Sequence[Any]) -> None:
        """Count canonical ``accuracies`` (fractions, as the store holds them) of ``column`` that
        are already stored, as the raw values they are in ``unit`` (``percent``: ``100 x``,
        ``error_percent``: ``100 (1 - x)``), so that the refusal weighs new values against them:
        a page of one new run (81 % beside 0.9 % on a near-chance task) is decided as the whole
        source is, not alone. Rounded to 10 decimals: a stored 0.1 is 10 %, not 10.000000000000002.

        Counted per distinct task with numpy (~20 ms per 300,000 values; :meth:`add`'s one call
        per value took 2 s). Not in :attr:`above_one`: only the refusals use them."""
        v = np.asarray(accuracies, dtype="float64")
        raw = np.round(100.0 * (1.0 - v if unit == "error_percent" else v), 10)
        keep = np.isfinite(raw) & (raw != 0)
        codes, uniq = pd.factorize(np.asarray(tasks, dtype=object)[keep], use_na_sentinel=False)
        raw = raw[keep]
        sums = [np.bincount(codes, weights=w.astype("float64"), minlength=len(uniq)).astype(np.int64)
                for w in ((raw > 0) & (raw <= 1), raw > PERCENT_CLEARLY_ABOVE, np.ones(len(raw), bool))]
        by_task = self.counts.setdefault((column, unit), {})
        mine = self.stored.setdefault((column, unit), {})
        for i, task in enumerate(_task_key(u) for u in uniq):
            acc = by_task.setdefault(task, [0, 0, 0])
            for j in range(3):
                acc[j] += int(sums[j][i])
            mine[task] = mine.get(task, 0) + int(sums[2][i])

    def add(self, column: str, unit: str, numbers: np.ndarray, tasks: Sequence[Any] | None = None,
            signed: np.ndarray | None = None) -> None:
        """Count raw ``numbers`` (floats, NaN where not a number) of ``column`` declared in ``unit``;
        ``tasks``: each value's task (its row's ``us_task`` or ``ds_task``; None: one group);
        ``signed``: the values written with a percent sign ("0.5%"), percents whatever their size,
        never counted as values that may be fractions."""
        v = np.asarray(numbers, dtype="float64")
        keep = np.isfinite(v) & (v != 0)
        low = (v > 0) & (v <= 1) & (True if signed is None else ~np.asarray(signed, bool))
        t = pd.Series(_task_keys(tasks, len(v)), dtype=object)
        frame = pd.DataFrame({"task": t.to_numpy(), "low": low, "big": v > PERCENT_CLEARLY_ABOVE,
                              "n": 1})[keep]
        by_task = self.counts.setdefault((column, unit), {})
        for task, (low, big, n) in frame.groupby("task")[["low", "big", "n"]].sum().iterrows():
            acc = by_task.setdefault(str(task), [0, 0, 0])
            acc[0] += int(low)
            acc[1] += int(big)
            acc[2] += int(n)
        if unit == "percent":
            high = pd.DataFrame({"task": t.to_numpy(), "v": v})[keep & (v > 1)]
            for task, (lo, hi) in high.groupby("task")["v"].agg(["min", "max"]).iterrows():
                rng = self.above_one.setdefault((column, str(task)), [lo, hi])
                rng[0], rng[1] = min(rng[0], lo), max(rng[1], hi)

    def lone_fractions(self, column: str, unit: str, numbers: np.ndarray,
                       tasks: Sequence[Any] | None = None) -> list[str | None] | None:
        """A reason for each value in (0, 1] of a ``percent`` column whose task's values above 1
        (read so far, these included: call :meth:`add` first) all lie above
        :data:`PERCENT_CLEARLY_ABOVE`, None for the others; None when there is none.

        Too few to refuse the column (:meth:`refuse_fractions`), such a value is one fraction
        among percents, and would be stored divided by 100 (0.62 as 0.0062): near-chance models
        score near each other (ImageNet-A's 0.48 % beside 1.12 %, 1.13 %, ...), so a value <= 1 %
        with nothing in (1 %, 10 %] beside it is a fraction, or a broken run: its row is
        quarantined, and the rest stored."""
        if unit != "percent":
            return None
        v = np.asarray(numbers, dtype="float64")
        lone = np.flatnonzero(np.isfinite(v) & (v > 0) & (v <= 1))
        if not len(lone):
            return None
        task_of = list(tasks) if tasks is not None else [""] * len(v)
        out: list[str | None] = [None] * len(v)
        for i in lone.tolist():
            task = _task_key(task_of[i])
            rng = self.above_one.get((column, task))
            seen = self.lone.setdefault((column, task), [0, 0, None])
            if rng is None or rng[0] <= PERCENT_CLEARLY_ABOVE:
                seen[0] += 1
                seen[2] = v[i] if seen[2] is None else seen[2]
                continue
            seen[1] += 1
            which = f"for {TASK_OF.get(column, 'task')} {printable(repr(task))} " if task else ""
            out[i] = (f"{column}: {v[i]:g} in a percent column whose other values {which}lie in "
                      f"[{rng[0]:g}, {rng[1]:g}]: a fraction? (not stored as {v[i] / 100:g})")
        return out if any(r is not None for r in out) else None

    def refuse_fractions(self) -> None:
        """A :class:`UserError` when a column declared in percent holds fractions.

        - Most of the column's nonzero values in (0, 1] (``2k > n``, the "most" of the
          pipeline's reverse check): the column is in fractions (0.8 would be stored as 0.008,
          an error rate 0.2 as accuracy 0.998). The fix: remove its percent unit.
        - ``percent`` only, per task: one in :data:`PERCENT_MIXED_ONE_IN` or more of a task's
          nonzero values in (0, 1] beside a value above :data:`PERCENT_CLEARLY_ABOVE` of the same
          task, or every value of a task in (0, 1] beside a value above it of another task: the
          column mixes fractions with percents (81.3 and 0.84), which no unit stores right.
          Near-chance models score near each other, not at 0.8 % beside 80 % on one task: a
          task whose values lie in [0, 10] (a hard one, in percent) is not refused unless most
          of the column is <= 1. Not for ``error_percent``: error rates <= 1 % beside ones above
          10 % are strong models on an easy and a hard task.

        Values of :meth:`add_stored` count with the others, but a column or task that has
        none besides them is not judged: they were decided when they were stored.
        """
        self._refuse_lone_by_pieces()
        for (col, unit), by_task in self.counts.items():
            k, big, n = (sum(c[i] for c in by_task.values()) for i in range(3))
            before = self.stored.get((col, unit), {})
            if before and n == sum(before.values()):
                continue    # no new value: stored values were decided when they came

            def stored(m: int, task: str | None = None) -> str:   # "" unless stored values were counted
                s = sum(before.values()) if task is None else before.get(task, 0)
                return f" ({s} of the {m} stored before)" if s else ""
            if n and 2 * k > n:
                raise UserError(f"{col} is declared {unit} but holds fractions: {k} of {n} nonzero values"
                                f"{stored(n)} are in (0, 1], so {NOTHING_STORED}; remove the unit "
                                f"{unit} of {col} from the mapping (accuracy_unit, units, or a metric pattern's unit)"
                                # told only "remove the unit", near-chance percents (0.5 %) went in as 50 %
                                + (". If they are percents of near-chance models (at most 1 %), no unit tells them "
                                   "from fractions: write them as fractions (divided by 100) and drop the unit"
                                   if unit == "percent" else ""))
            if unit != "percent":
                continue
            for task, (k_t, big_t, n_t) in sorted(by_task.items()):
                if before.get(task, 0) == n_t:
                    continue    # a task without new values (stored ones only) is not judged again
                if k_t and k_t * PERCENT_MIXED_ONE_IN >= n_t and (big_t or (k_t == n_t and big)):
                    which = f" for {TASK_OF.get(col, 'task')} {printable(repr(task))}" if task else ""
                    seen = (f"{k_t} of {n_t} nonzero values{stored(n_t, task)} are in (0, 1] and {big_t} above "
                            f"{PERCENT_CLEARLY_ABOVE:g}" if big_t else
                            f"all {n_t} nonzero values{stored(n_t, task)} are in (0, 1], beside {big} of other "
                            f"tasks above {PERCENT_CLEARLY_ABOVE:g}")
                    raise UserError(f"{col} is declared percent but mixes fractions with percents{which}: {seen}, so "
                                    f"{NOTHING_STORED}; give the column one unit (all fractions, "
                                    "without 'percent' in the mapping, or all percents). If they are all percents "
                                    "already (near-chance models at 0.5 beside others at 12), the two cannot be told "
                                    "apart: write the column as fractions (divided by 100) and drop its unit")


    def _refuse_lone_by_pieces(self) -> None:
        """A :class:`UserError` when :meth:`lone_fractions` decided a task's values <= 1 in an
        earlier piece of the input otherwise than its values over the whole input decide: a 0.62
        in the first piece, before the task's 40s and 50s, was stored as 0.0062 (read whole, it is
        quarantined as a fraction); the mirror refused values that read whole are stored."""
        for (col, task), (passed, refused, first) in sorted(self.lone.items()):
            rng = self.above_one.get((col, task))
            clearly = rng is not None and rng[0] > PERCENT_CLEARLY_ABOVE
            which = f"{TASK_OF.get(col, 'task')} {printable(repr(task))}" if task else col
            if clearly and passed:
                raise UserError(f"{col} is declared percent, and {passed} of its values <= 1 for {which} (such as "
                                f"{first:g}) came before the values above 1 that tell they are fractions among "
                                f"percents in [{rng[0]:g}, {rng[1]:g}] (a large file is read in pieces), so nothing "
                                f"of this source was stored; give the column one unit (all percents, or all "
                                "fractions without 'percent' in the mapping)")
            if not clearly and refused:
                raise UserError(f"{col} is declared percent, and {refused} of its values <= 1 for {which} were "
                                "refused as fractions among percents above "
                                f"{PERCENT_CLEARLY_ABOVE:g} before a value in (1, {PERCENT_CLEARLY_ABOVE:g}] of it "
                                f"came (a large file is read in pieces), so {NOTHING_STORED}; give "
                                "the column one unit (all percents, or all fractions without 'percent' in the mapping)")


def unit_numbers(values: pd.Series, percent_sign: bool = False) -> pd.Series:
    """Raw values as the numbers a unit converts (float64, NaN where not a number).
    ``percent_sign``: text such as ``"85%"`` or ``"85 %"`` reads as 85 (a column whose unit is
    percent: the sign agrees with the declared unit; nothing is guessed where no unit says so)."""
    raw = values.astype(object).tolist()
    out = pd.Series([_unit_number(v, percent_sign) for v in raw], index=values.index, dtype="float64")
    # "86,568" beside "86,57" is 86.568 or 86568: no number (validation names it); x 1e6 as millions,
    # it was 86,568 million parameters
    out.iloc[ambiguous_thousands(raw)] = np.nan
    return out


def convert_unit(values: pd.Series, unit: str, numbers: pd.Series | None = None) -> pd.Series:
    """Convert raw values to canonical units. Non-numeric values pass through for validation to flag.

    ``numbers``: the values as :func:`unit_numbers` reads them, when the caller has them already.
    """
    if unit in ("fraction", "count"):
        return values
    num = unit_numbers(values) if numbers is None else numbers
    # Rounded to 1e-12 so that 90.056 % and 0.90056 give the same float (upserts stay no-ops).
    conv = {"percent": lambda x: np.round(x / 100.0, 12), "error": lambda x: np.round(1.0 - x, 12),
            "error_percent": lambda x: np.round(1.0 - x / 100.0, 12),
            # rounded too: 1.001 thousand was 1000.9999999999999, "not an integer" in batch_size
            "thousands": lambda x: np.round(x * 1e3, 9), "millions": lambda x: np.round(x * 1e6)}[unit](num)
    # keep the raw value where it was not a number, so validation reports it as the wrong type
    return conv.astype(object).where(num.notna(), values.astype(object))


def _unit_number(v: Any, percent_sign: bool = False) -> float:
    """A raw value as the number a unit converts, or NaN (the raw value then reaches validation,
    which names the problem): text as :func:`~meta_study.schema.number_text` reads it (ASCII only,
    commas only as thousands separators: ``"0,5"`` is never 5), never a boolean."""
    if isinstance(v, (bool, np.bool_)) or v is None:
        return np.nan
    if isinstance(v, (int, float, np.integer, np.floating, decimal.Decimal)):   # Decimal: Parquet decimal128
        try:
            return float(v)
        except OverflowError:
            return np.nan
    if isinstance(v, str):
        if percent_sign:
            v = v.strip().removesuffix("%").strip()
        t = number_text(v)
        try:
            return float(t) if t else np.nan
        except ValueError:
            return np.nan
    return np.nan


def template_fields(template: str) -> list[str]:
    """The ``{column}`` fields of a run_id template; ``{{`` and ``}}`` are literal braces."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError:   # unbalanced braces: parse_mapping refuses them; a bare column name here
        return []


def _name_text(v: Any) -> str:
    """A name cell as text: bytes (a Parquet binary column) as their UTF-8 text, not Python's repr
    (``b'r1'`` was a run id "b'r1'"); what is no UTF-8 is left for validation's reason."""
    return bytes_text(v) if isinstance(v, (bytes, bytearray, memoryview)) else str(v)


def _is_name_value(v: Any) -> bool:
    """Whether a raw cell can be (part of) a run id: a scalar, not a list or an object (JSON Lines)."""
    return not isinstance(v, (list, tuple, dict, set, np.ndarray, Mapping))


def render_template(template: str, frame: pd.DataFrame, where: str) -> pd.Series:
    """Fill ``{column}`` placeholders row by row; a bare column name selects that column.
    See :func:`render_run_ids`."""
    return render_run_ids(template, frame, where)[0]


def render_run_ids(template: str, frame: pd.DataFrame, where: str) -> tuple[pd.Series, list[str | None] | None]:
    """(the run ids of ``template`` over ``frame``, the reason of each row whose template field
    holds no name or None, None when no row has one).

    Each field's value is a name as validation stores one (:func:`~meta_study.validation.canonical_name`:
    no whitespace at either end): validation trims only the whole id, so ``{model}@{img_size}``
    gave ``vit @224`` for a CSV cell ``vit ,224`` and ``vit@224`` for the same row in JSON, two runs.
    A list or an object (a JSON Lines cell) is no name (``pd.isna`` of a list raised a traceback):
    with a bare column it is passed on for validation to name (``run_id: wrong type``); in a
    template it is written as JSON, and the row gets a reason."""
    fields = template_fields(template)
    if not fields and "{" not in template and "}" not in template:
        if template not in frame.columns:
            raise _format_err(where, f"run_id: column {template!r} not found (columns: {', '.join(map(str, frame.columns))})")
        return frame[template].astype(object).map(
            lambda v: v if not _is_name_value(v) else None if _na(v) else _name_text(v)), None
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise _format_err(where, f"run_id: template column(s) {', '.join(missing)} not found")
    fmt = string.Formatter()
    problems: list[str | None] = [None] * len(frame)

    def text(f: str, i: int, v: Any) -> str:
        if _is_name_value(v):
            return "" if _na(v) else canonical_name(_name_text(v))
        shown = extra_text(v)
        problems[i] = problems[i] or (f"run_id: field {{{f}}} of the template {printable(repr(template))} holds a "
                                      f"{type(v).__name__} ({printable(shown)[:80]}), not a name")
        return shown
    cols = {f: [text(f, i, v) for i, v in enumerate(frame[f].astype(object).tolist())] for f in fields}
    ids = pd.Series([fmt.vformat(template, (), {f: cols[f][i] for f in fields}) for i in range(len(frame))],
                    index=frame.index, dtype=object)
    return ids, (problems if any(r is not None for r in problems) else None)


def infer_arch_family(model_names: pd.Series, rules: Mapping[str, str]) -> pd.Series:
    """``vit``/``mixer``/``resnet``/``other`` from timm model names, by the mapping's regex rules."""
    out = pd.Series("other", index=model_names.index, dtype=object)
    # as validation stores the name (canonical_name): a byte order mark or zero-width space at a
    # cell's start ("\ufeffvit_b16", a spreadsheet's export) made '^vit' miss, and the model "other"
    names = model_names.astype(object).map(lambda v: canonical_name(v).lower() if isinstance(v, str) else "")
    assigned = pd.Series(False, index=model_names.index)
    for fam, rx in rules.items():
        # case=False: a rule such as '^ViT' never matched a lower-cased name, and every model was "other"
        hit = names.str.contains(rx, case=False, regex=True) & ~assigned
        out[hit] = fam
        assigned |= hit
    out[model_names.isna()] = None
    return out


def finish_rows(canon: pd.DataFrame, raw: pd.DataFrame, mapping: IngestMapping, *, extra_columns: Sequence[str],
                source: str, where: str, tally: PercentTally | None = None) -> pd.DataFrame:
    """Common tail of every mapping: constants, units, arch family, run_id, source and ``extra``.

    Args:
        canon: canonical columns gathered so far (renamed raw columns), indexed like ``raw``.
        raw: the raw columns; ``run_id`` templates and ``extra`` read from here.
        extra_columns: raw columns that go to ``extra`` when the mapping says ``extra: rest``.
        source: the ``source`` value when neither the data nor the mapping sets one.
        tally: counts the raw values of columns declared in percent; the caller refuses the
            batch (:meth:`PercentTally.refuse_fractions`) once all of its pieces are mapped.
    """
    mlflow_only = [k for k in ("metrics", "params", "tags") if getattr(mapping, k)]
    if mlflow_only:   # ignored without a word: `params: {learning_rate: lr}` left lr empty, the column in extra
        raise _format_err(where, f"mapping {mapping.name}: {', '.join(mlflow_only)} are for MLflow runs; a file "
                                 "export's columns are mapped with 'rename' (or 'join')")
    absent = [c for c in mapping.drop if c not in raw.columns] if mapping.join is None else []
    if absent:   # a typo left the column in: its values stored, or the constant beside it refused
        raise _format_err(where, f"drop: column(s) {', '.join(map(repr, absent))} not in the input "
                                 f"(columns: {', '.join(map(str, raw.columns))})")
    # a canonical column that a rename fills is that column's, not the dropped one's
    out = canon.drop(columns=[c for c in mapping.drop if c in canon.columns and c not in mapping.rename.values()])
    extra_columns = [c for c in extra_columns if c not in mapping.drop]
    for col, v in mapping.constants.items():
        if col in out.columns:   # the input has its own values: overwriting them without a word lost them
            own = out[col][out[col].notna()]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not pa.types.is_string(COLUMN_BY_NAME[col].type):
                # a number column: 1 and "1.0" are one value
                differ = own[unit_numbers(own).to_numpy() != float(v)]
            else:   # compared as validation stores them: without spaces at either end
                differ = own[own.astype(str).str.strip() != str(v).strip()]
            if len(differ):
                raise UserError(f"{where}: constants.{col}={v!r} would overwrite the input's own {col} values "
                                f"({len(differ)} rows, e.g. {differ.iloc[0]!r}) in mapping {mapping.name}; "
                                f"{_overwrite_advice(col, mapping)}")
        out[col] = v
    if mapping.source is not None:
        out["source"] = mapping.source
    elif "source" not in out.columns or out["source"].isna().all():
        out["source"] = source
    if mapping.run_id is not None:
        out["run_id"], problems = render_run_ids(mapping.run_id, raw, where)
        _add_reasons(out, problems, "run_id: a template field holds no name")
    for col in list(out.columns):
        if col in COLUMN_BY_NAME and col not in mapping.constants:
            unit = mapping.unit_of(col)
            if unit not in ("fraction", "count"):
                num = unit_numbers(out[col], percent_sign=unit in PERCENT_UNITS)
                if tally is not None and unit in PERCENT_UNITS:
                    task = TASK_OF.get(col)
                    tasks = out[task].to_numpy() if task in out.columns else None
                    # "0.5%" says its unit: a near-chance percent, never "a fraction?" (it was quarantined
                    # as one beside its task's 40s, and counted towards refusing the source)
                    signed = out[col].astype(object).map(
                        lambda x: isinstance(x, str) and x.strip().endswith("%")).to_numpy(bool)
                    tally.add(col, unit, num.to_numpy(), tasks, signed=signed)
                    _add_reasons(out, tally.lone_fractions(col, unit, np.where(signed, np.nan, num.to_numpy()), tasks),
                                 f"{col}: a fraction in a percent column?")
                out[col] = convert_unit(out[col], unit, num)
                if col in SOURCE_UNIT:   # validation names a value out of range as written, in its unit
                    out[SOURCE_UNIT[col]] = unit
    if "model_name" in out.columns:
        # per row, as for MLflow runs: a file whose arch_family column was empty in some rows left
        # those rows without a family (the column was inferred only where it was empty in every row)
        need = out["arch_family"].isna() if "arch_family" in out.columns else None
        if need is None or need.all():
            out["arch_family"] = infer_arch_family(out["model_name"], mapping.arch_family)
        elif need.any():
            out["arch_family"] = out["arch_family"].astype(object).where(
                ~need, infer_arch_family(out["model_name"][need], mapping.arch_family))
    if mapping.extra == "none":
        cols: list[str] = []
    elif mapping.extra == "rest":
        cols = [c for c in extra_columns if c not in COLUMN_BY_NAME]
    else:
        missing = [c for c in mapping.extra if c not in raw.columns]
        if missing:
            raise _format_err(where, f"extra: column(s) {', '.join(map(repr, missing))} not in the input "
                                     f"(columns: {', '.join(map(str, raw.columns))})")
        cols = list(mapping.extra)
    if cols:
        vals = {c: raw[c].astype(object).to_numpy() for c in cols}
        rest = [{c: extra_text(vals[c][i]) for c in cols if not _na(vals[c][i])} for i in range(len(raw))]
        if "extra" in out.columns:  # the source has an `extra` column of its own: merge into it
            rest = [_merge_extra(e, r) for e, r in zip(out["extra"].astype(object).to_numpy(), rest)]
        out["extra"] = rest
    return out[[c for c in out.columns if c in COLUMN_BY_NAME or c in (SOURCE_REASON, SOURCE_REASON_KIND)
                or c in SOURCE_UNIT.values()]]


def _overwrite_advice(col: str, mapping: IngestMapping) -> str:
    """What a user can write so that a constant fills ``col``, where the input's own values differ.
    Each way named here works: "rename the column away" was advised, and ``rename:`` takes
    canonical columns only (``rename.eval_protocol: unknown canonical column``)."""
    keep = "remove the constant to keep them"
    renamed = sorted(raw for raw, target in mapping.rename.items() if target == col)
    if renamed:   # the values come from a renamed column: the rename is what to take out
        return f"{keep}, or remove the entry rename.{renamed[0]} so that the constant fills every row"
    if mapping.join is not None:   # the join fills its tasks and accuracies, not a file column of that name
        return f"{keep}: the join's tables give {col}"
    return (f"{keep}, or add 'drop: [{col}]' to the mapping to leave the input's column out and fill every row "
            "with the constant")


def _add_reasons(out: pd.DataFrame, reasons: list[str | None] | None, kind: str) -> None:
    """Give rows of ``out`` a reason for validation to quarantine them with (:data:`SOURCE_REASON`)."""
    if reasons is None:
        return
    new = pd.Series(reasons, index=out.index, dtype=object)
    kinds = new.where(new.isna(), kind)
    if SOURCE_REASON in out.columns:   # both accuracy columns: one reason after the other
        old, old_kind = out[SOURCE_REASON], out[SOURCE_REASON_KIND]
        new = old.where(new.isna(), old.where(old.isna(), old + "; ").fillna("") + new)
        kinds = old_kind.where(kinds.isna(), kinds)
    out[SOURCE_REASON] = new
    out[SOURCE_REASON_KIND] = kinds


def _merge_extra(existing: Any, rest: dict[str, str]) -> Any:
    """Merge unmapped columns into an existing ``extra`` value (a dict or a JSON object string).
    Anything else is left as it is, for validation to reject as the wrong type."""
    if _na(existing):
        return rest
    if isinstance(existing, str):
        import json
        try:
            existing = json.loads(existing)
        except (ValueError, RecursionError):
            return existing
    if isinstance(existing, dict):
        return {**{_name_text(k): "" if v is None else extra_text(v) for k, v in existing.items()}, **rest}
    return existing


def _na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False

