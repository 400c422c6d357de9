"""Review (session 37) of what a refit's MLflow run and refit.json say about the refit: which
store, which fit options, and who holds the lock that skipped it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import committed_store, make_rows, quick_refit_config  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _params(db: str, run_id: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return MlflowClient(db).get_run(run_id).data.params


def test_a_store_given_as_a_relative_path_is_recorded_as_an_absolute_one(tmp_path, monkeypatch):
    """A cron job's `refit --store store --source runs.csv` logged the params `store` = "store" and
    `sources` = "runs.csv", and refit.json the same (measured), which says nothing about which
    store and file the results are of. Local paths are recorded absolute."""
    from meta_study.refit import refit
    from meta_study.store import Store

    committed_store(tmp_path / "store", runs=12, tasks=("a",))
    make_rows(6, ds_tasks=("a",), run_prefix="z").drop(columns=["extra"]).to_csv(tmp_path / "runs.csv", index=False)
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    res = refit(quick_refit_config(Store("store"), tmp_path / "out", tracking_uri=db, sources=("runs.csv",)),
                log=lambda m: None)
    assert res.status == "refitted" and not res.failed_sources, res
    info = json.loads((Path(res.version_dir) / "refit.json").read_text())
    assert info["store"] == str(tmp_path / "store")
    # a source file given relative said nothing either (refit.json and the run's `sources`)
    assert info["sources"] == [str(tmp_path / "runs.csv")]
    params = _params(db, res.mlflow_run_id)
    assert (params["store"], params["sources"]) == (str(tmp_path / "store"), str(tmp_path / "runs.csv"))


def test_a_store_given_as_a_uri_is_recorded_as_given(tmp_path):
    """A URI (file://, s3://...) is recorded as typed, less its secrets (display_uri), not as a path."""
    from meta_study.refit import refit
    from meta_study.store import Store

    committed_store(tmp_path / "store", runs=12, tasks=("a",))
    uri = f"file://{tmp_path / 'store'}"
    res = refit(quick_refit_config(Store(uri), tmp_path / "out"), log=lambda m: None)
    assert json.loads((Path(res.version_dir) / "refit.json").read_text())["store"] == uri


def test_the_refit_run_logs_the_laws_frontiers_and_bounds_it_fitted_with(tmp_path):
    """Two refits, one with `--frontiers vertices,all --laws eq1,power --nondecreasing --alpha-max 5`,
    logged the same params but `options_fingerprint` (measured: no `frontiers`, `laws`,
    `nondecreasing` or `alpha_max` param), so the run did not say what its metrics were fitted with."""
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.frontiers import FRONTIERS
    from meta_study.analysis.laws import LAWS
    from meta_study.analysis.selection import SelectionOptions
    from meta_study.refit import refit

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    fit = FitOptions(alpha_max=5.0, nondecreasing=True,
                     selection=SelectionOptions(laws=("eq1", "power"), frontiers=("vertices", "all")))
    res = refit(quick_refit_config(s, tmp_path / "out", tracking_uri=db, fit=fit), log=lambda m: None)
    p = _params(db, res.mlflow_run_id)
    assert (p["frontiers"], p["laws"], p["nondecreasing"], p["alpha_max"]) == ("vertices,all", "eq1,power", "True",
                                                                                "5.0"), p
    # the defaults: every law and frontier, by name
    res = refit(quick_refit_config(s, tmp_path / "out2", tracking_uri=db), log=lambda m: None)
    p = _params(db, res.mlflow_run_id)
    assert p["frontiers"] == ",".join(FRONTIERS) and p["laws"] == ",".join(LAWS) and p["nondecreasing"] == "False"


def test_a_refit_skipped_for_the_store_lock_names_its_holder(tmp_path):
    """`refit: locked: another refit is running on st; skipped` named no holder, though the lock
    file records one and the line for OUT's lock names it (`... (pid 4242 since ...)`)."""
    from meta_study.refit import refit, refit_lock

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    with refit_lock(s, str(tmp_path / "other-out")) as held:
        assert held
        r = refit(quick_refit_config(s, tmp_path / "out"), log=lambda m: None)
    assert r.status == "locked", r
    assert r.message.startswith(f"another refit is running on {s.uri} (pid {os.getpid()} since "), r.message
    assert r.message.endswith("); skipped"), r.message


@pytest.mark.parametrize("record", ["", "   "])
def test_a_store_lock_that_records_no_holder_says_so_without_empty_parentheses(tmp_path, record):
    """A lock file emptied (an older meta-study, a hand): the line stays as it was, with no "()"."""
    import fcntl

    from meta_study.refit import refit

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    path = Path(s.local_path("_meta/REFIT.lock"))
    path.write_text(record)
    with open(path) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = refit(quick_refit_config(s, tmp_path / "out"), log=lambda m: None)
    assert r.status == "locked" and r.message == f"another refit is running on {s.uri}; skipped", r.message


def test_a_lock_record_damaged_into_junk_bytes_is_no_traceback(tmp_path):
    """OUT's lock file damaged into bytes that are not UTF-8 (a disk fault) while another refit
    held it: the skipped refit ended in `UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff`
    (measured). The holder is shown as it can be, on one line."""
    import fcntl

    from meta_study.refit import refit

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".refit-out.lock"
    lock.write_bytes(b"\xff\xfepid 1\nsince x\x1b[31m")
    with open(lock) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = refit(quick_refit_config(s, out), log=lambda m: None)
    assert r.status == "locked", r
    assert r.message == f"another refit is writing to {out} (\ufffd\ufffdpid 1 since x\\x1b[31m); skipped", r.message


@pytest.mark.slow(30)
def test_an_object_store_is_recorded_as_given_less_its_secrets_and_its_lock_holder_named(tmp_path, s3env):
    """An s3:// store (a real S3 API on 127.0.0.1) is recorded as its URI, with its secret as ***,
    never made a local path; its refit lock lives in OUT, and a refit skipped for it names the holder."""
    pytest.importorskip("boto3")
    from dataclasses import replace

    from meta_study.refit import refit, refit_lock
    from meta_study.store import Store

    host = s3env["AWS_ENDPOINT_URL_S3"].split("://", 1)[1]
    uri = f"s3://testing:testing-secret@lab/refit-params?endpoint_override={host}&scheme=http"
    shown = uri.replace("testing-secret", "***")
    s = committed_store(uri, runs=12, tasks=("a",))
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    res = refit(quick_refit_config(Store(uri), tmp_path / "out", tracking_uri=db), log=lambda m: None)
    assert res.status == "refitted", res
    record = (Path(res.version_dir) / "refit.json").read_text()
    assert json.loads(record)["store"] == shown and "testing-secret" not in record
    assert _params(db, res.mlflow_run_id)["store"] == shown
    # the URI as typed (`refit --store s3://key:secret@...`): the line said the secret
    cfg = replace(quick_refit_config(s, tmp_path / "out2"), store=uri)
    with refit_lock(s, str(tmp_path / "out2")) as held:
        assert held
        r = refit(cfg, log=lambda m: None)
    assert r.status == "locked", r
    assert r.message.startswith(f"another refit is running on {shown} (pid {os.getpid()} since "), r.message
