"""Running a sweep: arguments shared by every ``sweeps/*.py``, the Tuner, resume, and finalization.

A sweep script declares a :class:`SweepSpec` (search space, defaults, resources, smoke variant)
and calls :func:`sweep_main`. What happens:

1. The Ray address comes from ``--address``, else ``$RAY_ADDRESS`` (as under ``ray job submit``),
   else a local Ray is started.
2. The sweep's MLflow parent run is created once (or found again on ``--resume``), and a
   driver-side callback logs one child run per trial (:mod:`meta_study.tune.tracking`).
3. ``Tuner(train_trial, ...)`` runs the trials with ``FailureConfig(max_failures)`` (a crashed trial
   restarts from its last checkpoint) and ``reuse_actors``; ``--resume`` is ``Tuner.restore`` with
   ``resume_errored`` (finished trials are not run again).
4. Trials an early-stopping scheduler (ASHA) stopped are evaluated from their last checkpoint in Ray
   tasks, so they log final US and DS metrics too: they are meta-study points as well.
"""

from __future__ import annotations

import argparse
import ast
import getpass
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import UserError

# Experiment state is synced at most every 60 s (default "auto" re-syncs far more often once
# thousands of trials are tracked; ray #11233, #7608). Must be set before ray.tune is imported.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "60")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_ROOT = "meta-study-sweeps"


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep script declares.

    Attributes:
        name: the sweep (Tune experiment name and MLflow experiment default).
        doc: the script's docstring (its runbook).
        space: args -> Tune param space (TrainConfig fields; ``tune.grid_search`` / samplers), or,
            with ``search="optuna"``, args -> a define-by-run function ``f(trial) -> constants``.
        base: TrainConfig overrides at full size.
        smoke: TrainConfig overrides for ``--smoke`` (tiny, CPU, minutes).
        num_samples / smoke_samples: Tune ``num_samples`` (repeats of a grid, or random draws).
        search: ``grid`` / ``random`` (both from ``space``) or ``optuna``.
        scheduler: None or ``asha`` (early stopping on the US accuracy).
    """

    name: str
    doc: str
    space: Callable[[argparse.Namespace], Any]
    base: Mapping[str, Any] = field(default_factory=dict)
    smoke: Mapping[str, Any] = field(default_factory=dict)
    num_samples: int = 1
    smoke_samples: int = 1
    search: str = "grid"
    scheduler: str | None = None


def build_parser(spec: SweepSpec) -> argparse.ArgumentParser:
    """The arguments every sweep script takes."""
    p = argparse.ArgumentParser(prog=f"sweeps/{spec.name}.py", description=spec.doc.strip().splitlines()[0],
                                epilog=spec.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--smoke", action="store_true", help="tiny models, CPU, minutes")
    a("--num-samples", type=int, default=None, help="Tune num_samples (default: the sweep's)")
    a("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
      help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under --storage-path)")
    a("--experiment", default=None, help="MLflow experiment (default: the sweep's name)")
    a("--storage-path", default=None, help=f"Tune storage: a path or URI (default: ./{DEFAULT_ROOT}/ray)")
    a("--name", default=None, help="Tune experiment name (default: the sweep's name, '-smoke' with --smoke)")
    a("--resume", action="store_true", help="continue a killed sweep (Tuner.restore); finished trials stay done")
    a("--gpus-per-trial", type=float, default=None, help="GPUs per trial (fractions allowed)")
    a("--cpus-per-trial", type=float, default=None,
      help="CPUs per trial (per Train worker with --workers-per-trial > 1); default 1")
    a("--workers-per-trial", type=int, default=1, help="> 1: data-parallel Ray Train TorchTrainer per trial")
    a("--max-concurrent", type=int, default=None, help="trials running at once")
    a("--max-failures", type=int, default=2, help="restarts of a crashed trial from its last checkpoint")
    a("--us-task", default=None, help="upstream task (default: the procedural synth_us)")
    a("--ds-task", action="append", default=None, help="downstream task (repeatable; default: the procedural suite)")
    a("--dataset", action="append", default=[], metavar="NAME=imagefolder:PATH|parquet:TRAIN[,TEST]",
      help="register a dataset on disk as a task (repeatable)")
    a("--layerwise", action="store_true", help="also probe every block (Fig. 6)")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="override any TrainConfig field")
    a("--researcher", default=os.environ.get("USER") or _user(), help="tag of every run")
    a("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    a("--quiet", action="store_true",
      help="no Tune progress tables, trial configs or TensorBoard logs (the demo); MLflow still gets every run")
    a("--fail-once", action="store_true", help=argparse.SUPPRESS)  # test hook: each trial crashes once
    return p


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit(f"--set {it!r}: expected KEY=VALUE")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def _datasets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for it in items:
        name, sep, spec = it.partition("=")
        if not sep or not spec.startswith(("imagefolder:", "parquet:")):
            raise SystemExit(f"--dataset {it!r}: expected NAME=imagefolder:PATH or NAME=parquet:TRAIN[,TEST]")
        out[name] = spec
    return out


def fixed_config(spec: SweepSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The non-searched part of every trial's config (TrainConfig fields and '_' hooks)."""
    cfg: dict[str, Any] = {**spec.base, **(spec.smoke if args.smoke else {})}
    if args.us_task:
        cfg["us_task"] = args.us_task
    if args.ds_task:
        cfg["ds_tasks"] = list(args.ds_task)
    if args.layerwise:
        cfg["layerwise"] = True
    cfg.update(_parse_set(args.set))
    if args.dataset:
        cfg["_datasets"] = _datasets(args.dataset)
    if args.workers_per_trial > 1:
        cfg["_workers"] = args.workers_per_trial
        cfg["_use_gpu"] = bool(args.gpus_per_trial)
        cfg["_worker_cpus"] = args.cpus_per_trial if args.cpus_per_trial is not None else 1.0
    if args.fail_once:
        cfg["_fail_once"] = True
    return cfg


def _resources(args: argparse.Namespace) -> dict[str, float]:
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else 0.0
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else 1.0
    if args.workers_per_trial > 1:
        # the trial function only drives its TorchTrainer, whose workers ask for their own resources
        # (--cpus-per-trial CPUs and one GPU each): 0.1 CPU is enough to wait on them
        return {"cpu": 0.1, "gpu": 0.0}
    return {"cpu": cpus, "gpu": gpus}


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parents[2]).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _storage(args: argparse.Namespace) -> str:
    s = args.storage_path or os.path.join(os.getcwd(), DEFAULT_ROOT, "ray")
    return s if "://" in s else os.path.abspath(s)


def refuse_credentials(uri: str) -> None:
    """A UserError for a tracking URI with credentials in it: they would reach the writer child's
    argv (visible in ``ps``), ``mlflow_parent.json`` and the sweep summary."""
    from ..ingest.mlflow_source import has_credentials, safe_uri

    if has_credentials(uri):
        raise UserError(f"--tracking-uri {safe_uri(uri)}: credentials in the tracking URI are refused; set "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")


def _tracking_uri(args: argparse.Namespace, storage: str) -> str:
    if args.tracking_uri:
        refuse_credentials(args.tracking_uri)
        return args.tracking_uri
    root = Path(storage).parent if "://" not in storage else Path(os.getcwd()) / DEFAULT_ROOT
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


@dataclass
class SweepResult:
    """What :func:`run_sweep` did."""

    name: str
    experiment_dir: str
    tracking_uri: str
    parent_run_id: str
    trials: int
    finished: int
    errored: int
    early_stopped: int
    seconds: float


def run_sweep(spec: SweepSpec, argv: Sequence[str] | None = None) -> SweepResult:
    """Parse arguments, run (or resume) the sweep, finalize early-stopped trials."""
    args = build_parser(spec).parse_args(argv)
    if args.tracking_uri:
        refuse_credentials(args.tracking_uri)   # before Ray starts
    t0 = time.monotonic()
    import ray
    from ray import tune

    from .tracking import MlflowSweepCallback, parent_run
    from .trial import FINAL_KEY, train_trial

    from ..ray_session import start_or_connect

    if args.quiet:
        import logging

        # Tune's default CSV/JSON/TensorBoard loggers: MLflow is the record, and TensorBoard warns
        # about every list-valued config ("invalid value ... via TBXLoggerCallback")
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.ERROR)
    start_or_connect(args.address, log_to_driver=bool(os.environ.get("META_STUDY_TRIAL_LOGS")))
    name = args.name or (f"{spec.name}-smoke" if args.smoke else spec.name)
    storage = _storage(args)
    exp_dir = storage.rstrip("/") + "/" + name
    local_state = exp_dir if "://" not in exp_dir else os.path.join(os.getcwd(), DEFAULT_ROOT, "state", name)
    os.makedirs(local_state, exist_ok=True)
    tracking = _tracking_uri(args, storage)
    fixed = fixed_config(spec, args)
    tags = {"sweep": name, "git_sha": _git_sha(), "researcher": args.researcher}
    exp_id, parent = parent_run(tracking, args.experiment or spec.name, name, local_state,
                                params={"sweep": name, "smoke": args.smoke, **{k: v for k, v in fixed.items()
                                                                                if not k.startswith("_")}},
                                tags=tags)
    callback = MlflowSweepCallback(tracking, exp_id, parent, local_state, tags=tags)
    trainable = tune.with_resources(train_trial, _resources(args))
    if args.resume and tune.Tuner.can_restore(exp_dir):
        tuner = tune.Tuner.restore(exp_dir, trainable, resume_errored=True)
    else:
        tuner = _new_tuner(spec, args, trainable, fixed, name, storage, callback)
    grid = tuner.fit()
    finished = errored = early = 0
    pending = []
    for r in grid:
        if r.error is not None:
            errored += 1
        elif r.metrics.get(FINAL_KEY) == 1.0:
            finished += 1
        elif r.checkpoint is not None:
            pending.append(r)
    early = _finalize(pending, callback, _resources(args))
    callback.flush()
    _end_parent(tracking, parent, "FAILED" if errored else "FINISHED")
    res = SweepResult(name=name, experiment_dir=exp_dir, tracking_uri=tracking, parent_run_id=parent,
                      trials=len(grid), finished=finished + early, errored=errored, early_stopped=early,
                      seconds=time.monotonic() - t0)
    return res


def _end_parent(tracking_uri: str, run_id: str, status: str) -> None:
    """Close the sweep's parent run (``--resume`` sets it running again by logging to it)."""
    from ..mlflow_client import mlflow_client

    try:
        mlflow_client(tracking_uri).set_terminated(run_id, status=status)
    except Exception as e:  # noqa: BLE001 - the trials are done and logged; say so, do not fail
        print(f"warning: could not close the MLflow parent run {run_id}: {e}", file=sys.stderr)


def _metric(fixed: Mapping[str, Any]) -> str:
    from ..schema import us_metric_key

    return us_metric_key(fixed.get("us_task", "synth_us"))


def _new_tuner(spec: SweepSpec, args: argparse.Namespace, trainable: Any, fixed: dict[str, Any], name: str,
               storage: str, callback: Any) -> Any:
    from ray import tune

    metric = _metric(fixed)
    search_alg = scheduler = None
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(space=WithFixed(spec.space(args), fixed), metric=metric, mode="max",
                                  seed=int(fixed.get("seed", 0)))
        param_space: dict[str, Any] = {}
    else:
        param_space = {**fixed, **spec.space(args)}
    if spec.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", metric=metric, mode="max", grace_period=1,
                                  reduction_factor=3, max_t=10_000)
    samples = args.num_samples or (spec.smoke_samples if args.smoke else spec.num_samples)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=samples, search_alg=search_alg, scheduler=scheduler,
                                    max_concurrent_trials=args.max_concurrent, reuse_actors=True,
                                    trial_name_creator=TrialName(spec.name), trial_dirname_creator=_trial_dir),
        run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=[callback],
                                  failure_config=tune.FailureConfig(max_failures=args.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  verbose=0 if args.quiet else 1))


class TrialName:
    """``<sweep>_<trial id>`` (a class: Tune pickles it into the experiment state)."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def __call__(self, trial: Any) -> str:
        return f"{self.sweep}_{trial.trial_id}"


def _trial_dir(trial: Any) -> str:
    return trial.trial_id


class WithFixed:
    """A define-by-run space plus the fixed config: a class, so Tune can pickle the searcher."""

    def __init__(self, define: Callable[[Any], dict[str, Any]], fixed: Mapping[str, Any]) -> None:
        self.define, self.fixed = define, dict(fixed)

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {**self.fixed, **self.define(trial)}


def _finalize(results: Sequence[Any], callback: Any, resources: Mapping[str, float]) -> int:
    """Evaluate early-stopped trials from their last checkpoint (Ray tasks) and log their final
    metrics to their MLflow runs."""
    if not results:
        return 0
    import ray

    from .trial import evaluate_trial_checkpoint

    @ray.remote(num_cpus=max(resources.get("cpu", 1.0), 0.5), num_gpus=resources.get("gpu", 0.0))
    def evaluate(config: dict[str, Any], checkpoint: Any) -> dict[str, Any]:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            return evaluate_trial_checkpoint(config, checkpoint.to_directory(d))

    refs = {evaluate.remote(r.config, r.checkpoint): r for r in results}
    done = 0
    for ref, r in refs.items():
        metrics = ray.get(ref)
        trial_id = r.metrics.get("trial_id")
        callback.on_trial_result(0, [], _TrialRef(trial_id), metrics)
        callback.log_final(trial_id, {"early_stopped": 1.0}, None)
        done += 1
    return done


@dataclass
class _TrialRef:
    """The part of a Tune Trial the callback reads, for trials finished after the Tuner."""

    trial_id: str

    def __str__(self) -> str:
        return self.trial_id


def sweep_main(spec: SweepSpec, argv: Sequence[str] | None = None) -> None:
    """Entry point of ``sweeps/<name>.py``: run, print a summary, exit non-zero if trials errored
    (a user error: one line on stderr, exit 2)."""
    try:
        res = run_sweep(spec, argv)
    except UserError as e:
        print(f"{spec.name}: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"sweep": res.name, "trials": res.trials, "finished": res.finished, "errored": res.errored,
                      "early_stopped": res.early_stopped, "seconds": round(res.seconds, 1),
                      "tune_dir": res.experiment_dir, "tracking_uri": res.tracking_uri,
                      "mlflow_parent_run": res.parent_run_id}, indent=1))
    print(f"browse: mlflow ui --backend-store-uri {res.tracking_uri}" if res.tracking_uri.startswith("sqlite")
          else f"browse: {res.tracking_uri}")
    sys.exit(1 if res.errored else 0)
