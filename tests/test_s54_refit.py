"""Review (session 54) of what a refit publishes about the calculator's interval: since 2026-12-07 a
trusted group's ``us_needed_lo/hi`` are the ends of the trend's band and an untrusted group's those
of the prediction interval, and the run said neither: a dashboard saw a step change in the trusted
groups with no marker, and two groups' intervals meant different things under one name. Each group
with an interval now has the param ``fit/<group>/headline/us_needed_band`` (``trend`` or
``prediction``); the metric names are as before. Against a real ``mlflow server``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import make_rows, quick_refit_config  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: The calculator's DS target: both groups below reach it within the data, so both ends are finite.
TARGET = 0.55


def _store(path: Path, tasks: dict[str, float], runs: int = 40):
    """A local store of ``runs`` models on DS tasks ``{name: noise}``: DS follows a smooth law of US
    (0.9 - 0.8 (1 - us)^1.5) plus normal noise of that SD (fractions). At 0.003 the back-tests miss
    by < 1 pt (trusted at the 3 pt tolerance), at 0.06 by ~8 pt (not trusted)."""
    from meta_study.store import Store
    from meta_study.validation import validate

    rows = make_rows(runs, ds_tasks=tuple(tasks))
    rng = np.random.default_rng(1)
    us = rows["us_accuracy"].to_numpy()
    noise = rows["ds_task"].map(tasks).to_numpy()
    rows["ds_accuracy"] = np.clip(0.9 - 0.8 * (1 - us) ** 1.5 + rng.normal(0.0, 1.0, len(us)) * noise, 0.0, 1.0)
    s = Store(str(path))
    s.commit(validate(rows).table)
    return s


def _refit(store, out: Path, uri: str, experiment: str, ds_target: float | None, **sel):
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.selection import SelectionOptions
    from meta_study.refit import refit

    fit = FitOptions(selection=SelectionOptions(ds_target=ds_target, **sel))
    res = refit(quick_refit_config(store, out, tracking_uri=uri, experiment=experiment, fit=fit), log=lambda m: None)
    assert res.status == "refitted" and res.mlflow_run_id, res
    return res


def _band_ends(row: pd.Series, band: str) -> tuple[float, float]:
    """``us_needed_lo/hi`` recomputed from the row with ``band``: the US accuracies at which the
    band's upper and lower edges reach the target (what the selection does; no clamp applies here:
    the target is below every group's best visible DS)."""
    from meta_study.analysis import predict_interval
    from meta_study.analysis.payoff import U_GRID, us_needed_from_values

    lo_c, hi_c = predict_interval(row.to_dict(), U_GRID, band=band)
    return (float(us_needed_from_values(hi_c[None], TARGET)[0]), float(us_needed_from_values(lo_c[None], TARGET)[0]))


@pytest.mark.slow(30)
def test_the_run_says_which_band_each_group_s_us_needed_interval_is(tmp_path, mlflow_server):
    """One trusted and one untrusted group: the param says trend and prediction, the metrics
    us_needed_lo/hi (names unchanged) are the ends of the band it names."""
    from mlflow.tracking import MlflowClient

    from meta_study.refit import metric_key

    s = _store(tmp_path / "st", {"smooth": 0.003, "noisy": 0.06})
    res = _refit(s, tmp_path / "out", mlflow_server.uri, "s54-band", TARGET)
    run = MlflowClient(mlflow_server.uri).get_run(res.mlflow_run_id)
    params, metrics = run.data.params, run.data.metrics
    heads = pd.read_parquet(Path(res.version_dir) / "fits.parquet").query("headline").set_index("ds_task")
    assert bool(heads.loc["smooth", "trusted"]) and not bool(heads.loc["noisy", "trusted"]), heads["trust_reason"]
    logged = {}
    for task, band in (("smooth", "trend"), ("noisy", "prediction")):
        row, group = heads.loc[task], ("up", task, "fewshot", 5)
        assert params[metric_key(group, "headline", "us_needed_band")] == band, (task, params)
        assert metrics[metric_key(group, "headline", "trusted")] == float(band == "trend")
        logged[task] = (metrics[metric_key(group, "headline", "us_needed_lo")],
                        metrics[metric_key(group, "headline", "us_needed_hi")])
        assert logged[task] == pytest.approx((row["us_needed_lo"], row["us_needed_hi"])), task
        # the marker is true: the ends are those of the band it names
        assert logged[task] == pytest.approx(_band_ends(row, band), abs=1e-9), (task, band)
    # the trusted group's are not its prediction interval's (what they were before 2026-12-07: the
    # step change a dashboard saw), but narrower; an untrusted group's trend band may be cut to
    # its prediction interval, so the two can agree there
    lo, hi = logged["smooth"]
    p_lo, p_hi = _band_ends(heads.loc["smooth"], "prediction")
    assert p_lo < lo < hi < p_hi, (lo, hi, p_lo, p_hi)

    # without --ds-target there is no interval, and no band is logged
    res = _refit(s, tmp_path / "out2", mlflow_server.uri, "s54-band", None)
    run = MlflowClient(mlflow_server.uri).get_run(res.mlflow_run_id)
    assert not [k for k in run.data.params if k.endswith("/us_needed_band")], run.data.params
    assert not [k for k in run.data.metrics if "/us_needed" in k]
