"""The one step every ``*/derive.py`` ends with: meta-study's column names and protocol vocabulary,
so that ``meta-study ingest examples/data/*/us_ds.csv --store S`` needs no mapping (one source per
table). The table's own protocol name stays in ``protocol``, which ingest keeps in ``extra``."""

import pandas as pd

COLUMNS = ["source", "run_id", "model_name", "us_task", "ds_task", "eval_protocol", "protocol", "shots",
           "us_accuracy", "ds_accuracy", "us_n", "ds_n"]


def canonical(df: pd.DataFrame, table: str, protocols: dict) -> pd.DataFrame:
    """``df`` (columns model, us_task, ds_task, eval_protocol, shots, us_accuracy, ds_accuracy, us_n,
    ds_n) with ``source`` = ``table``, ``run_id`` = the model, ``eval_protocol`` mapped through
    ``protocols`` (the table's name -> meta-study's: zeroshot, linear, shift, other, ...)."""
    assert set(df["eval_protocol"]) <= set(protocols), set(df["eval_protocol"]) - set(protocols)
    df = df.assign(source=table, run_id=df["model"], protocol=df["eval_protocol"],
                   eval_protocol=df["eval_protocol"].map(protocols)).rename(columns={"model": "model_name"})
    return df[COLUMNS]
