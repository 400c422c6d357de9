"""The scheduled re-fitting job: re-ingest, re-fit what changed, publish to MLflow.

One refit:

1. takes the store's refit lock (non-blocking: a refit already running on the store means this
   one is skipped, so cron, systemd timers and ``--every`` loops never overlap);
2. ingests the sources, if any;
3. fingerprints every group (sha256 of its runs and accuracies) and compares with the last refit:
   if no group and no option changed, it stops here (a no-op takes seconds);
4. fits every group (every law on every frontier, back-tested: seconds), and runs sample-size sensitivity and bootstrap
   only for groups whose data changed, reusing the last refit's rows for the others;
5. builds the correlation tables, the figures and the HTML report in a new version directory
   ``OUT/refits/<UTC time>/``, written under a temporary name and renamed into place, then points
   ``OUT/LATEST`` at it;
6. logs one MLflow run (experiment ``meta-study/refits`` by default) with the store, sources and
   fingerprint as params, every group's parameters and errors as metrics, and the version
   directory (tables, figures, report) as artifacts.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from . import __version__
from .analysis.groups import GROUP_COLUMNS, Group
from .analysis.fitting import FitOptions
from .analysis.results import Analysis, AnalysisOptions, ResultsDir
from .analysis.tables import (Selection, bootstrap_table, correlations_tables, fit_table, footer, points_table,
                           sensitivity_table)
from .analysis.bootstrap import BootstrapOptions
from .analysis.sensitivity import SensitivityOptions
from .errors import UserError
from .store import Store

Progress = Callable[[str, int, int | None], None]
DEFAULT_EXPERIMENT = "meta-study/refits"


@dataclass(frozen=True)
class RefitConfig:
    """Everything one refit needs. ``out`` is a local directory (versions are kept there)."""

    store: str
    out: str
    sources: tuple[str, ...] = ()
    mapping: str | None = None
    sources_file: str | None = None
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    fit: FitOptions = field(default_factory=FitOptions)
    sensitivity: SensitivityOptions = field(default_factory=SensitivityOptions)
    bootstrap: BootstrapOptions = field(default_factory=lambda: BootstrapOptions(samples=1000))
    address: str | None = None
    workers: int | None = None
    use_ray: bool = True
    threshold: float = 0.1            # "scaling stops paying" below this many DS points per US point
    max_group_figures: int = 60

    def options_fingerprint(self) -> str:
        """What, besides the data, decides the results: a change refits everything."""
        opts = {"fit": asdict(self.fit), "sensitivity": asdict(self.sensitivity), "bootstrap": asdict(self.bootstrap),
                "threshold": self.threshold}
        return hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RefitResult:
    """What a refit did. ``status``: ``refitted``, ``noop`` (nothing changed), ``locked`` (another
    refit holds the store) or ``empty`` (no groups)."""

    status: str
    version_dir: str | None = None
    changed: list[tuple] = field(default_factory=list)
    unchanged: int = 0
    unfittable: list[str] = field(default_factory=list)
    ingest_lines: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    seconds: float = 0.0
    message: str = ""


# --------------------------------------------------------------------------------------------
# Locking and fingerprints
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def refit_lock(store: Store, out: str) -> Iterator[bool]:
    """Yield True if this process holds the refit lock of ``store``, False if another one does.

    The lock lives in the store's ``_meta`` for local stores (so two refits writing different OUT
    directories still exclude each other) and in OUT for object stores.
    """
    local = store.local_path("_meta/REFIT.lock")
    path = Path(local) if local else Path(out) / ".refit.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {_now_iso()}".encode(), 0)
        yield True
    finally:
        os.close(fd)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _key(k: Sequence[Any]) -> tuple:
    """A group key with NA normalized to None, usable in sets and dicts."""
    return tuple(None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else
                 (int(v) if i == 3 else str(v)) for i, v in enumerate(k))


def group_fingerprint(g: Group) -> str:
    """sha256 of a group's runs and accuracies, independent of row order."""
    order = np.lexsort((g.ds_accuracy, g.us_accuracy, g.run_ids.astype(str)))
    h = hashlib.sha256(repr(g.key).encode())
    h.update("\x1f".join(g.run_ids.astype(str)[order]).encode())
    h.update(np.ascontiguousarray(g.us_accuracy[order]).tobytes())
    h.update(np.ascontiguousarray(g.ds_accuracy[order]).tobytes())
    return h.hexdigest()[:24]


def previous_refit(out: str) -> tuple[Path | None, dict[str, Any]]:
    latest = Path(out) / "LATEST"
    if not latest.exists():
        return None, {}
    d = Path(out) / "refits" / latest.read_text().strip()
    try:
        return d, json.loads((d / "refit.json").read_text())
    except (OSError, ValueError):
        return None, {}


def _rows_of(table_path: Path, keys: set[tuple]) -> pd.DataFrame | None:
    if not table_path.exists() or not keys:
        return None
    t = pd.read_parquet(table_path)
    mask = [(_key(k) in keys) for k in t[list(GROUP_COLUMNS)].itertuples(index=False)]
    return t[mask]


# --------------------------------------------------------------------------------------------
# The refit
# --------------------------------------------------------------------------------------------


def _remove_stale_tmp(refits: Path) -> None:
    """Delete the half-written version directories of refits that were killed: ``.tmp-<stamp>-<pid>``
    whose process is gone (a live one may be another store's refit writing to the same OUT)."""
    if not refits.is_dir():
        return
    for d in refits.glob(".tmp-*"):
        try:
            pid = int(d.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except (ValueError, IndexError, PermissionError):
            alive = True   # not ours to judge
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def refit(cfg: RefitConfig, *, progress: Progress | None = None, log: Callable[[str], None] = print) -> RefitResult:
    """Run one refit (see the module doc). Never raises for a group that cannot be fitted."""
    t0 = time.perf_counter()
    store = Store(cfg.store)
    res = RefitResult(status="refitted")
    with refit_lock(store, cfg.out) as held:
        if not held:
            return RefitResult(status="locked", message=f"another refit is running on {cfg.store}; skipped")
        _remove_stale_tmp(Path(cfg.out) / "refits")
        res.ingest_lines = _ingest(cfg, store, progress)
        for line in res.ingest_lines:
            log(line)
        store.require()
        groups = Selection().load(store)
        if not groups:
            return RefitResult(status="empty", message=f"{cfg.store}: no groups to fit", seconds=time.perf_counter() - t0)
        fps = {_key(g.key): group_fingerprint(g) for g in groups}
        prev_dir, prev = previous_refit(cfg.out)
        prev_fps = {_key(json.loads(k)): v for k, v in prev.get("groups", {}).items()}
        same_opts = prev.get("options_fingerprint") == cfg.options_fingerprint()
        changed = [g for g in groups if not same_opts or prev_fps.get(_key(g.key)) != fps[_key(g.key)]]
        if not changed and set(prev_fps) == set(fps):
            return RefitResult(status="noop", version_dir=str(prev_dir), unchanged=len(groups),
                               ingest_lines=res.ingest_lines, seconds=time.perf_counter() - t0,
                               message=f"nothing changed since the refit of {prev.get('time')}")
        res.changed = [g.key for g in changed]
        res.unchanged = len(groups) - len(changed)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        final = Path(cfg.out) / "refits" / stamp
        tmp = Path(cfg.out) / "refits" / f".tmp-{stamp}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            info = _analyze(cfg, store, groups, changed, prev_dir, tmp, stamp, fps, progress)
            res.unfittable = info["unfittable"]
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_latest(cfg.out, stamp)
        res.version_dir = str(final)
        if cfg.tracking_uri:
            res.mlflow_run_id = publish_to_mlflow(cfg, final, info)
    res.seconds = time.perf_counter() - t0
    return res


def _ingest(cfg: RefitConfig, store: Store, progress: Progress | None) -> list[str]:
    if not cfg.sources and not cfg.sources_file:
        return []
    from .ingest import ingest_sources, load_mapping, load_sources_file, open_source_specs, open_sources

    mapping = load_mapping(cfg.mapping) if cfg.mapping else None
    srcs = open_sources(list(cfg.sources), mapping) if cfg.sources else []
    if cfg.sources_file:
        srcs += open_source_specs(load_sources_file(cfg.sources_file))
    reports = ingest_sources(srcs, store, progress=progress or (lambda *a: None))
    return [r.line() for r in reports]


def _analyze(cfg: RefitConfig, store: Store, groups: list[Group], changed: list[Group], prev_dir: Path | None,
             out: Path, stamp: str, fps: dict[tuple, str], progress: Progress | None) -> dict[str, Any]:
    """Tables, figures and the report of refit ``stamp``, written in ``out``; returns what
    refit.json records."""
    from .report import render_report

    foot = footer(store, f"refit {stamp}")
    fits, panels = fit_table(groups, cfg.fit, progress=progress)
    changed_keys = {_key(g.key) for g in changed}
    unchanged_keys = set(fps) - changed_keys
    kw = dict(address=cfg.address, workers=cfg.workers, use_ray=cfg.use_ray, progress=progress)
    # sensitivity and bootstrap: new rows for changed groups, the last refit's rows for the others
    sens = _merge(sensitivity_table(changed, cfg.sensitivity, **kw), prev_dir, "sensitivity.parquet", unchanged_keys)
    boot = _merge(bootstrap_table(changed, cfg.bootstrap, **kw), prev_dir, "bootstrap.parquet", unchanged_keys)
    options = AnalysisOptions(fit=cfg.fit, sensitivity=cfg.sensitivity, bootstrap=cfg.bootstrap, correlations=True)
    analysis = Analysis(fits=fits, options=options, panels=panels, points=points_table(groups),
                        sensitivity=_in_group_order(sens, groups), bootstrap=_in_group_order(boot, groups),
                        correlations=correlations_tables(store, Selection(), fits),
                        provenance={"store": store.uri, "store version": store.version, "refit": stamp,
                                    "groups": len(groups), "changed": len(changed), "meta-study": __version__,
                                    "generated": _now_iso()})
    ResultsDir(out).write(analysis, Selection(), max_group_figures=cfg.max_group_figures, footer_text=foot)
    bad = fits[fits["headline"] & ~fits["status"].isin(["ok", "at_bound"])]   # groups with no usable headline
    unfittable = sorted({f"{r.us_task} -> {r.ds_task} ({r.eval_protocol}, shots={r.shots}): "
                         f"{r.status}: {r.warnings or r.message}" for r in bad.itertuples()})
    info = {
        "time": _now_iso(), "store": store.uri, "store_version": store.version, "meta_study": __version__,
        "sources": list(cfg.sources) + ([cfg.sources_file] if cfg.sources_file else []),
        "options_fingerprint": cfg.options_fingerprint(),
        "fingerprint": hashlib.sha256(json.dumps(sorted(fps.values())).encode()).hexdigest()[:24],
        "groups": {json.dumps(list(k)): v for k, v in fps.items()},
        "changed": [list(_key(g.key)) for g in changed], "unfittable": unfittable,
        "previous": prev_dir.name if prev_dir else None,
    }
    (out / "refit.json").write_text(json.dumps(info, indent=1, default=str))
    render_report(analysis, out, title="meta-study refit", threshold=cfg.threshold,
                  provenance={"fingerprint": info["fingerprint"]})
    return info


def _merge(new: pd.DataFrame, prev_dir: Path | None, name: str, keys: set[tuple]) -> pd.DataFrame:
    old = _rows_of(prev_dir / name, keys) if prev_dir else None
    parts = [t for t in (old, new) if t is not None and len(t)]
    return pd.concat(parts, ignore_index=True).astype({"shots": "Int64"}) if parts else new


def _in_group_order(table: pd.DataFrame, groups: list[Group]) -> pd.DataFrame:
    if table is None or table.empty:
        return table
    rank = {_key(g.key): i for i, g in enumerate(groups)}
    order = [rank.get(_key(k), len(rank)) for k in table[list(GROUP_COLUMNS)].itertuples(index=False)]
    return table.assign(_o=order).sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def _write_latest(out: str, stamp: str) -> None:
    tmp = Path(out) / f".LATEST.tmp-{os.getpid()}"
    tmp.write_text(stamp + "\n")
    os.replace(tmp, Path(out) / "LATEST")


# --------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------

_KEY_OK = re.compile(r"[^A-Za-z0-9_\-. :]")


def metric_key(*parts: Any) -> str:
    """An MLflow-safe metric key from group parts: other characters become '_', and no segment
    is empty, '.' or '..' (MLflow refuses keys that resolve to other paths)."""
    segs = []
    for p in parts:
        s = _KEY_OK.sub("_", "na" if p is None or p is pd.NA else str(p))
        segs.append("_" if s in ("", ".", "..") else s)
    return "/".join(segs)


def publish_to_mlflow(cfg: RefitConfig, version_dir: Path, info: dict[str, Any]) -> str:
    """One MLflow run for a refit: params, per-group metrics and the version directory as artifacts."""
    from mlflow.entities import Metric, Param, RunTag

    from .ingest.mlflow_source import safe_uri
    from .mlflow_client import mlflow_client

    client = mlflow_client(cfg.tracking_uri)
    from .mlflow_client import get_or_create_experiment

    exp_id = get_or_create_experiment(client, cfg.tracking_uri, cfg.experiment)
    run = client.create_run(exp_id, run_name=f"refit {version_dir.name}",
                            tags={"meta_study.refit": version_dir.name, "meta_study.version": __version__})
    rid = run.info.run_id
    params = {"store": info["store"], "store_version": info["store_version"], "fingerprint": info["fingerprint"],
              "options_fingerprint": info["options_fingerprint"], "n_groups": len(info["groups"]),
              "n_changed": len(info["changed"]), "n_unfittable": len(info["unfittable"]),
              "sources": ",".join(safe_uri(s) if "://" in s else s for s in info["sources"])[:6000] or "-",
              "holdout_quantile": cfg.fit.holdout_quantile, "loss": cfg.fit.loss,
              "trials": cfg.sensitivity.trials, "samples": cfg.bootstrap.samples}
    fits = pd.read_parquet(version_dir / "fits.parquet")
    now = int(time.time() * 1000)
    metrics = []
    # per group: the headline (slot "headline") and the paper's Eq. 1 on the hull vertices (slot
    # "vertices"); the other candidates are in the fits.parquet artifact
    paper = fits[(fits["law"] == "eq1") & (fits["frontier"] == "vertices")]
    for slot, rows in (("headline", fits[fits["headline"]]), ("vertices", paper)):
        names = (("saturation", "alpha", "k", "e_ir", "fit_err", "pred_err", "backtest_err", "stop_paying_us",
                  "trusted") if slot == "headline" else ("saturation", "alpha", "k", "e_ir", "fit_err", "pred_err"))
        for r in rows.itertuples():
            for name in names:
                v = float(getattr(r, name))
                if math.isfinite(v):
                    metrics.append(Metric(metric_key("fit", r.us_task, r.ds_task, r.eval_protocol,
                                                     None if pd.isna(r.shots) else int(r.shots), slot, name),
                                          v, now, 0))
    metrics.append(Metric("refit/groups", float(len(info["groups"])), now, 0))
    metrics.append(Metric("refit/changed", float(len(info["changed"])), now, 0))
    client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in params.items()], tags=[RunTag("n_metrics",
                                                                                                  str(len(metrics)))])
    for i in range(0, len(metrics), 1000):  # MLflow's per-batch limit
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    client.log_artifacts(rid, str(version_dir))
    client.set_terminated(rid)
    return rid


def parse_every(text: str) -> float:
    """'90s', '30m', '1h', '1d' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m:
        raise UserError(f"--every: {text!r} is not a duration like 30m, 1h or 1d")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if value < 1:
        raise UserError(f"--every: {text!r} is shorter than a second")
    return value
