"""Small defects found while merging this stop's reviews, each with the test that failed before
its fix: the fits grid's title names the paper's Eq. 1 only where it was fitted; a broken
symbolic link named to ingest says it is one."""

from __future__ import annotations

import os

import numpy as np
import pytest

from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.groups import Group
from meta_study.analysis.selection import SelectionOptions
from meta_study.analysis.tables import fit_table
from meta_study.errors import UserError


def _groups() -> list[Group]:
    rng = np.random.default_rng(0)
    out = []
    for d in ("alpha-task", "beta-task"):
        us = rng.uniform(0.3, 0.9, 30)
        ds = 0.95 - 0.8 * (1 - us) ** 1.3 + rng.normal(0, 0.01, 30)
        out.append(Group("up", d, "fewshot", 5, us, np.clip(ds, 0, 1)))
    return out


@pytest.mark.parametrize("laws, says_eq1", [(("power", "logit-linear"), False), (None, True)])
def test_the_fits_grid_title_names_eq1_only_where_it_was_fitted(tmp_path, monkeypatch, laws, says_eq1):
    """``fit --laws power,logit-linear`` drew no Eq. 1, yet its grid's title said "headline and
    Eq. 1 on the hull"."""
    from meta_study.analysis import figures, outputs

    opts = FitOptions() if laws is None else FitOptions(selection=SelectionOptions(laws=laws))
    df, panels = fit_table(_groups(), opts)
    titles = []
    real = figures.plot_fit_grid

    def spy(panels, stem, **kw):
        titles.append(kw.get("title"))
        return real(panels, stem, **kw)

    monkeypatch.setattr(figures, "plot_fit_grid", spy)
    outputs.write_fits(df, panels, str(tmp_path), max_group_figures=0)
    assert len(titles) == 1 and titles[0].startswith("DS vs US accuracy: headline")
    assert ("Eq. 1" in titles[0]) is says_eq1, titles[0]


def test_a_broken_symbolic_link_is_named_as_one(tmp_path):
    from meta_study.ingest.sources import kind_of

    link = tmp_path / "latest.csv"
    os.symlink(tmp_path / "gone.csv", link)
    with pytest.raises(UserError) as e:
        kind_of(str(link))
    assert str(e.value) == f"{link}: a symbolic link to {tmp_path / 'gone.csv'}, which does not exist (or is a loop of links)"
    loop = tmp_path / "loop.csv"
    os.symlink(loop, loop)
    with pytest.raises(UserError, match="a symbolic link to .*loop of links"):
        kind_of(str(loop))
    with pytest.raises(UserError, match="no such file or directory"):
        kind_of(str(tmp_path / "never.csv"))


_UNWIND_UNDER_RAY = r"""
import os, signal, sys
from meta_study.cli import stop_signals_unwind
from meta_study.errors import Terminated
from meta_study.ray_session import start_or_connect
with stop_signals_unwind():
    mine = signal.getsignal(signal.SIGTERM)
    ray = start_or_connect("local", num_cpus=1, quiet=True)
    try:
        kept = signal.getsignal(signal.SIGTERM) is mine
        os.kill(os.getpid(), signal.SIGTERM)
        print("not unwound", flush=True)
    except Terminated as e:
        print(f"kept={kept} code={e.code}", flush=True)
    finally:
        ray.shutdown()
"""


@pytest.mark.slow(40)     # a Ray of its own: ~10 s idle, more on 2 busy cores
def test_the_clis_sigterm_handler_survives_ray_init(tmp_path):
    """``ray.init`` installs Ray's own SIGTERM handler (``sys.exit(15)``): a Ray command killed with
    ``kill PID`` exited 15, not 143, and a ``refit --every`` stopped between rounds failed."""
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "RAY_ADDRESS": ""}
    r = subprocess.run([sys.executable, "-c", _UNWIND_UNDER_RAY], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=180)
    assert "kept=True code=143" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert REPO   # the package is importable from anywhere (an editable install)


def _noend_experiment(server_uri: str, dated: int, no_end: int) -> tuple[str, set[str]]:
    import time
    import uuid

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    c = MlflowClient(server_uri)
    name = f"s40-noend-{uuid.uuid4().hex[:8]}"
    exp = c.create_experiment(name)
    ids = set()
    for i in range(dated + no_end):
        rid = c.create_run(exp).info.run_id
        now = int(time.time() * 1000)
        c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4, now, 0), Metric("ds/pets/10shot/top1", 0.3 + i / 100, now, 0)],
                    params=[Param("model_name", "vit_tiny_cpu")])
        if i < dated:
            c.set_terminated(rid)
        else:
            c.update_run(rid, "FINISHED")      # finished, no end time
        ids.add(rid)
    return name, ids


@pytest.mark.slow(30)
@pytest.mark.parametrize("token_refused, shifted", [(False, False), (True, False), (False, True)])
def test_a_rest_full_read_lists_the_runs_without_an_end_time_from_where_they_start(
        mlflow_server, tmp_path, monkeypatch, token_refused, shifted):
    """A full REST read over pages listed every run a second time to find the finished runs
    without an end time (MLflow sorts them last; its filters have no IS NULL): a full ingest of
    10,000 runs took 32 s where search_runs reads them in 16 s. Now the second listing starts
    where they start (a page earlier); a server refusing the offset token is read from the first
    run, as before."""
    from mlflow.tracking import MlflowClient

    from meta_study.ingest import mlflow_source
    from meta_study.ingest.pipeline import ingest_sources
    from meta_study.ingest.sources import SourceOptions, open_sources
    from meta_study.store import Store

    name, ids = _noend_experiment(mlflow_server.uri, dated=12, no_end=2)
    listed = []
    real = MlflowClient.search_runs

    def counting(self, *a, **k):
        page = real(self, *a, **k)
        listed.append(len(page))
        return page

    monkeypatch.setattr(MlflowClient, "search_runs", counting)
    if token_refused:
        monkeypatch.setattr(mlflow_source, "_offset_token", lambda start: "not-a-token" if start else None)
    if shifted:     # as if runs were deleted meanwhile: the listing lands inside the runs without an end time
        real_token = mlflow_source._offset_token
        monkeypatch.setattr(mlflow_source, "_offset_token", lambda start: real_token(start + 2) if start else None)
    src = open_sources([mlflow_server.uri], None, SourceOptions(experiments=(name,), page_size=3))
    [rep] = ingest_sources(src, Store(str(tmp_path / "st")))
    assert set(Store(str(tmp_path / "st")).to_pandas()["run_id"]) == ids, rep
    if not token_refused and not shifted:
        assert sum(listed) < 2 * len(ids), listed     # every run listed twice before: 12 + ties, then 14
