"""The canonical meta-study record: one row = one downstream evaluation of one run.

Every part of meta-study agrees on these names. A sweep logs a config key ``head_wd`` as the
MLflow param ``head_wd``; ingest maps it to the Parquet column ``head_wd``; the analysis reads
``us_accuracy`` / ``ds_accuracy`` and turns them into errors ``e_us = 1 - us_accuracy`` and
``e_ds = 1 - ds_accuracy``. ``docs/schema.md`` is the human-readable copy of this module.

Only pyarrow is imported here: ``import meta_study.schema`` stays light. What turns raw input
into these columns is :mod:`meta_study.validation`; what encodes a row's key is
:mod:`meta_study.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

#: Bumped when a column is added, removed or changes meaning. Stored in every row.
SCHEMA_VERSION = 1

EVAL_PROTOCOLS = ("fewshot", "finetune", "linear", "zeroshot", "shift", "other")
ARCH_FAMILIES = ("vit", "mixer", "resnet", "other")

#: A row's identity. Writing a row whose key exists replaces the stored row (upsert).
#: ``shots`` and ``representation_layer`` may be null; null compares equal to null in the key.
KEY = ("source", "run_id", "us_task", "ds_task", "eval_protocol", "shots", "representation_layer")

#: Hive partition columns of the store, outermost first.
PARTITION = ("us_task", "ds_task")

#: The analysis groups: models evaluated on the same (US task, DS task, protocol, shots).
GROUP = ("us_task", "ds_task", "eval_protocol", "shots")

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One column of the canonical record.

    Attributes:
        name: the column name, also the MLflow param/tag name where one exists.
        type: the Arrow type stored in Parquet.
        required: rows with a null here are rejected.
        group: the table group in ``docs/schema.md``.
        doc: one line, with units.
        lo, hi: inclusive numeric bounds, or None.
        choices: the allowed values of a categorical column, or None.
    """

    name: str
    type: pa.DataType
    required: bool
    group: str
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None


COLUMNS: tuple[Column, ...] = (
    # Identity
    Column("source", pa.string(), True, "identity",
           "where the row came from: an MLflow tracking URI (without credentials) or an export's name"),
    Column("run_id", pa.string(), True, "identity", "the run's id within its source (MLflow run id, or a key built by the mapping)"),
    Column("experiment", pa.string(), False, "identity", "MLflow experiment name, or the export's grouping"),
    Column("researcher", pa.string(), False, "identity", "who trained the model"),
    # Model
    Column("model_name", pa.string(), False, "model", "timm model name (with pretrained tag where known)"),
    Column("arch_family", pa.string(), False, "model", "architecture family", choices=ARCH_FAMILIES),
    Column("param_count", pa.int64(), False, "model", "number of parameters (not millions)", lo=0),
    # Upstream result
    Column("us_task", pa.string(), True, "upstream", "upstream (pre-training) task, e.g. imagenet21k"),
    Column("us_accuracy", pa.float64(), True, "upstream", "upstream top-1 accuracy, a fraction in [0, 1]", lo=0.0, hi=1.0),
    # Downstream result
    Column("ds_task", pa.string(), True, "downstream", "downstream task, e.g. cifar100"),
    Column("eval_protocol", pa.string(), True, "downstream", "how the DS accuracy was measured", choices=EVAL_PROTOCOLS),
    Column("shots", pa.int32(), False, "downstream", "examples per class for few-shot; null where it does not apply", lo=0),
    Column("representation_layer", pa.int32(), False, "downstream",
           "block index whose output was probed; null = pre-logits", lo=0),
    Column("ds_accuracy", pa.float64(), True, "downstream", "downstream top-1 accuracy, a fraction in [0, 1]", lo=0.0, hi=1.0),
    Column("seed", pa.int64(), False, "downstream", "the run's random seed"),
    # Hyper-parameters
    Column("lr", pa.float64(), False, "hparams", "body learning rate (peak)", lo=0.0),
    Column("wd", pa.float64(), False, "hparams", "body weight decay", lo=0.0),
    Column("head_lr", pa.float64(), False, "hparams", "head learning rate (peak)", lo=0.0),
    Column("head_wd", pa.float64(), False, "hparams", "head weight decay", lo=0.0),
    Column("epochs", pa.float64(), False, "hparams", "upstream epochs (may be fractional)", lo=0.0),
    Column("data_fraction", pa.float64(), False, "hparams", "fraction of the upstream training set used: in (0, 1] for meta-study's own trials; 0 (an untrained baseline) only in rows from other sources", lo=0.0, hi=1.0),
    Column("batch_size", pa.int64(), False, "hparams", "upstream batch size (global)", lo=1),
    Column("optimizer", pa.string(), False, "hparams", "optimizer name, e.g. adam, sgd"),
    # Provenance
    Column("checkpoint_uri", pa.string(), False, "provenance", "URI of the final checkpoint (stored as a string, never loaded)"),
    Column("started_at", UTC_TIMESTAMP, False, "provenance", "run start time (UTC)"),
    Column("ended_at", UTC_TIMESTAMP, False, "provenance", "run end time (UTC)"),
    Column("ingested_at", UTC_TIMESTAMP, True, "provenance", "when this row was written to the store (UTC)"),
    Column("schema_version", pa.int32(), True, "provenance", "SCHEMA_VERSION the row was written with"),
    # Other
    Column("extra", pa.map_(pa.string(), pa.string()), False, "other", "anything else, as string -> string"),
)

#: The key of ``extra`` that holds a row's DS test-set size (examples evaluated on, a count):
#: the analysis floors its intervals at that test set's binomial noise. Without it the size is
#: read off the accuracies where they are exact fractions ``k / n`` (never a power of ten, which
#: rounding gives). The shipped public tables carry it as a ``ds_n`` column, which ingest puts here.
#: Validation stores it as the text of a whole number, at least 1, or empty (unknown).
EXTRA_DS_TEST_SIZE = "ds_n"

COLUMN_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
SCHEMA: pa.Schema = pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in COLUMNS])
#: The columns a store reads from a data file; the partition columns come from its manifest entry
#: (format-2 files hold them too, as strings; format-1 files only in their directory names).
FILE_SCHEMA: pa.Schema = pa.schema([f for f in SCHEMA if f.name not in PARTITION])
#: Columns filled in by the store, not by a source.
STORE_FILLED = ("ingested_at", "schema_version")


def empty_table() -> pa.Table:
    """A zero-row table with the canonical schema."""
    return SCHEMA.empty_table()


def schema_markdown() -> str:
    """The column table of ``docs/schema.md``, generated from :data:`COLUMNS`."""
    lines = ["| Column | Type | Required | Group | Meaning |", "|---|---|---|---|---|"]
    for c in COLUMNS:
        rng = ""
        if c.choices:
            rng = " One of " + ", ".join(f"`{x}`" for x in c.choices) + "."
        elif c.lo is not None or c.hi is not None:
            rng = f" Range [{c.lo:g}, {c.hi:g}]." if c.hi is not None else f" At least {c.lo:g}."
        lines.append(f"| `{c.name}` | `{c.type}` | {'yes' if c.required else ''} | {c.group} | {c.doc}.{rng} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# MLflow naming convention (docs/tracking.md). Sweeps log these keys; ingest's default mapping
# reads them. Values are fractions in [0, 1].
# --------------------------------------------------------------------------------------------

#: Params logged by every sweep trial, under the same names as the columns they fill.
PARAM_NAMES = ("model_name", "lr", "wd", "head_lr", "head_wd", "epochs", "data_fraction", "batch_size",
               "optimizer", "seed")

#: The upstream epochs a trial trained, among its final metrics. Its ``epochs`` param is logged when
#: the trial starts: the configured value (10, the default, for a trial planned in ``steps``), more
#: than was trained for a trial a scheduler (ASHA) stopped early. Ingest fills ``epochs`` from it.
TRAINED_EPOCHS_KEY = "train/epochs"

#: The upstream batch size a trial trained with, among its final metrics: its ``batch_size`` param
#: is the configured one, more than was used where the training split is smaller (40 images at
#: ``batch_size=128`` train at 40). Ingest fills ``batch_size`` from it.
TRAINED_BATCH_SIZE_KEY = "train/batch_size"


#: Every accuracy metric key of a trial: :func:`us_metric_key`, :func:`ds_metric_key` (with its
#: layers) and :func:`finetune_metric_key` (fractions, higher is better), as a regular expression.
ACCURACY_KEY_PATTERN = r"(us|ds)/.+/top1"


def us_metric_key(us_task: str) -> str:
    """``us/{us_task}/top1``: upstream top-1 accuracy on the held-out upstream split."""
    return f"us/{us_task}/top1"


def ds_metric_key(ds_task: str, shots: int, layer: int | None = None) -> str:
    """``ds/{ds_task}/{shots}shot/top1`` (pre-logits) or ``ds/{ds_task}/{shots}shot/layer{L}/top1``."""
    if layer is None:
        return f"ds/{ds_task}/{shots}shot/top1"
    return f"ds/{ds_task}/{shots}shot/layer{layer}/top1"


def l2_text(l2: float) -> str:
    """An l2 regularizer as a metric key writes it: ``f"{l2:g}"`` (1024, 1e-05) when that is exact
    and a valid MLflow name, else every digit without an exponent (1048576, 0.0009765625). The
    ``:g`` of 2**20, "1.04858e+06", was refused by MLflow ('+') and shared by 2**20 + 1."""
    import numpy as np

    short = f"{l2:g}"
    if "+" not in short and float(short) == l2:
        return short
    return np.format_float_positional(l2, trim="-")


def l2sweep_metric_key(ds_task: str, shots: int, layer: int | None, l2: float) -> str:
    """``diag/l2sweep/{ds_task}/{shots}shot[/layer{L}]/l2_{l2}/top1``: the few-shot probe's accuracy
    at one l2 of its sweep (a diagnostic; the DS accuracy is at the chosen l2)."""
    where = f"{ds_task}/{shots}shot" + ("" if layer is None else f"/layer{layer}")
    return f"diag/l2sweep/{where}/l2_{l2_text(l2)}/top1"


def finetune_metric_key(ds_task: str) -> str:
    """``ds/{ds_task}/finetune/top1``: full fine-tuning transfer accuracy."""
    return f"ds/{ds_task}/finetune/top1"
