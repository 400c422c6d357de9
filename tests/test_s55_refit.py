"""Review (session 55) of what a refit publishes for a headline value that is ``inf``: an end of the
``us_needed`` interval is inf ("never": the band's edge never reaches the ``--ds-target`` below 100%
US), and the run logged metrics of finite values only, so that end was not logged at all and a
dashboard could not tell "never" from "no target given" (NaN). It is now the param ``never`` under
the metric's own key (``meta_study.refit.INF_WORDS``); NaN stays unlogged. On a fits.parquet a
refit wrote, and against a real ``mlflow server``."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import make_rows, quick_refit_config  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: The calculator's DS target: the trusted group's trend band reaches it within 100% US (both ends
#: finite); the untrusted group's prediction interval's lower edge never does (us_needed_hi = inf).
TARGET = 0.85
#: The untrusted group's DS task: long and with a "/", so its keys are cut and hashed
#: (:func:`~meta_study.refit.metric_key`) and the server sees the longest keys a group gets.
NOISY = "noisy/" + "x" * 120
SMOOTH = "smooth"


def _store(path: Path):
    """A local store of 40 models on two DS tasks: DS follows 0.9 - 0.8 (1 - us)^1.5 (fractions)
    plus normal noise of SD 0.003 (SMOOTH: trusted) or 0.06 (NOISY: not trusted)."""
    from meta_study.store import Store
    from meta_study.validation import validate

    tasks = {SMOOTH: 0.003, NOISY: 0.06}
    rows = make_rows(40, ds_tasks=tuple(tasks))
    rng = np.random.default_rng(1)
    us = rows["us_accuracy"].to_numpy()
    noise = rows["ds_task"].map(tasks).to_numpy()
    rows["ds_accuracy"] = np.clip(0.9 - 0.8 * (1 - us) ** 1.5 + rng.normal(0.0, 1.0, len(us)) * noise, 0.0, 1.0)
    s = Store(str(path))
    s.commit(validate(rows).table)
    return s


def _refit(store, out: Path, ds_target: float | None, **kw):
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.selection import SelectionOptions
    from meta_study.refit import refit

    cfg = quick_refit_config(store, out, fit=FitOptions(selection=SelectionOptions(ds_target=ds_target)), **kw)
    res = refit(cfg, log=lambda m: None)
    assert res.status == "refitted", res
    return cfg, res


def _key(task: str, name: str) -> str:
    from meta_study.refit import metric_key

    return metric_key(("up", task, "fewshot", 5), "headline", name)


def _heads(version_dir: str) -> pd.DataFrame:
    return pd.read_parquet(Path(version_dir) / "fits.parquet").query("headline").set_index("ds_task")


def _check_the_setting(heads: pd.DataFrame) -> None:
    """The groups are what the tests need: NOISY's interval ends in "never", SMOOTH's is finite."""
    assert not bool(heads.loc[NOISY, "trusted"]) and bool(heads.loc[SMOOTH, "trusted"]), heads["trust_reason"]
    assert heads.loc[NOISY, "us_needed_hi"] == math.inf and math.isfinite(heads.loc[NOISY, "us_needed_lo"])
    assert np.isfinite(heads.loc[SMOOTH, ["us_needed", "us_needed_lo", "us_needed_hi"]].astype(float)).all()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("s55-refit") / "st")


def test_an_end_that_is_never_is_the_param_never_under_its_key(store, tmp_path):
    from meta_study.refit import _run_values

    cfg, res = _refit(store, tmp_path / "out", TARGET)
    heads = _heads(res.version_dir)
    _check_the_setting(heads)
    info = json.loads((Path(res.version_dir) / "refit.json").read_text())
    params, metrics = _run_values(cfg, Path(res.version_dir), info)
    logged = {k: v for k, v, _ in metrics}

    # the end that is inf: a param saying so, no metric (MLflow holds no inf)
    assert params[_key(NOISY, "us_needed_hi")] == "never", params
    assert _key(NOISY, "us_needed_hi") not in logged
    # its finite end and its band are as before
    assert logged[_key(NOISY, "us_needed_lo")] == pytest.approx(heads.loc[NOISY, "us_needed_lo"])
    assert _key(NOISY, "us_needed_lo") not in params
    assert params[_key(NOISY, "us_needed_band")] == "prediction"
    # a group whose ends are finite gets metrics only
    for name in ("us_needed", "us_needed_lo", "us_needed_hi"):
        assert logged[_key(SMOOTH, name)] == pytest.approx(heads.loc[SMOOTH, name]), name
        assert _key(SMOOTH, name) not in params, name
    # a key is a metric or a param, never both; a point that is inf is a param too (stop_paying_us
    # here: "never", NaN before 2026-12-07 and unlogged: test_s56_never)
    assert not set(params) & set(logged)
    assert heads.loc[NOISY, "stop_paying_us"] == math.inf
    assert params[_key(NOISY, "stop_paying_us")] == "never" and _key(NOISY, "stop_paying_us") not in logged
    # within MLflow's limits (mlflow.utils.validation): keys of 250 characters, values of 6000
    assert all(len(k) <= 250 for k in params) and all(len(str(v)) <= 6000 for v in params.values())


def test_without_a_target_no_end_is_logged_as_either(store, tmp_path):
    from meta_study.refit import _run_values

    cfg, res = _refit(store, tmp_path / "out", None)
    info = json.loads((Path(res.version_dir) / "refit.json").read_text())
    params, metrics = _run_values(cfg, Path(res.version_dir), info)
    assert not [k for k in params if "/us_needed" in k], params
    assert not [k for k, _, _ in metrics if "/us_needed" in k]


@pytest.mark.slow(20)
def test_the_server_keeps_never_beside_the_metrics(store, tmp_path, mlflow_server):
    """Published to a real server: the param ``never`` under a cut and hashed key of the longest
    kind is accepted (MLflow's key and value limits and characters), and read back beside the
    finite end's metric."""
    from mlflow.tracking import MlflowClient

    _, res = _refit(store, tmp_path / "out", TARGET, tracking_uri=mlflow_server.uri, experiment="s55-never")
    assert res.mlflow_run_id, res
    _check_the_setting(_heads(res.version_dir))
    run = MlflowClient(mlflow_server.uri).get_run(res.mlflow_run_id)
    params, metrics = run.data.params, run.data.metrics
    hi = _key(NOISY, "us_needed_hi")
    assert "-" in hi.split("/")[4], hi    # the hashed shots segment: the name was cut
    assert params[hi] == "never" and hi not in metrics
    assert _key(NOISY, "us_needed_lo") in metrics and _key(NOISY, "us_needed_lo") not in params
    assert _key(SMOOTH, "us_needed_hi") in metrics and _key(SMOOTH, "us_needed_hi") not in params
