"""Running a sweep: arguments shared by every ``sweeps/*.py``, the Tuner, resume, and finalization.

A sweep script declares a :class:`SweepSpec` (search space, defaults, resources, smoke variant)
and calls :func:`sweep_main`, which parses its flags into :class:`SweepOptions` and calls
:func:`run_sweep`; a program (the demo) builds the options and calls :func:`run_sweep` itself.
Importing this module does not import Ray, torch or timm. What happens:

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
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import UserError
from ..extras import require_training

# Experiment state is synced at most every 60 s (default "auto" re-syncs far more often once
# thousands of trials are tracked; ray #11233, #7608). Must be set before ray.tune is imported.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "60")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_ROOT = "meta-study-sweeps"

if TYPE_CHECKING:
    from .trial import TrialHooks


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep script declares.

    Attributes:
        name: the sweep (Tune experiment name and MLflow experiment default).
        doc: the script's docstring (its runbook).
        space: options -> Tune param space (TrainConfig fields; :func:`grid` or Tune's samplers),
            or, with ``search="optuna"``, options -> a define-by-run function
            ``f(trial) -> constants``. ``options`` is the :class:`SweepOptions` (``.smoke``...).
        base: TrainConfig overrides at full size.
        smoke: TrainConfig overrides for ``--smoke`` on top of :data:`SMOKE` (the settings every
            smoke run shares), e.g. the tiny model and its epochs.
        num_samples / smoke_samples: Tune ``num_samples`` (repeats of a grid, or random draws).
        search: ``grid`` / ``random`` (both from ``space``) or ``optuna``.
        scheduler: None or ``asha`` (early stopping on the US accuracy).
    """

    name: str
    doc: str
    space: Callable[["SweepOptions"], Any]
    base: Mapping[str, Any] = field(default_factory=dict)
    smoke: Mapping[str, Any] = field(default_factory=dict)
    num_samples: int = 1
    smoke_samples: int = 1
    search: str = "grid"
    scheduler: str | None = None


#: What every ``--smoke`` run shares (tiny, CPU, minutes): 16 px images, small procedural tasks,
#: three DS tasks at 1 and 10 shots. A sweep's ``smoke`` adds its tiny model, epochs and lr.
SMOKE: Mapping[str, Any] = dict(
    img_size=16, batch_size=128, eval_every=20, margin_examples=256, shots=[1, 10],
    us_task_kwargs={"n_train": 3000, "n_test": 600}, ds_task_kwargs={"n_train_per_class": 25, "n_test": 200},
    ds_tasks=["synth_combo", "synth_count", "synth_texture"])


def grid(values: Sequence[Any]) -> dict[str, list[Any]]:
    """``tune.grid_search(values)`` without importing Ray here (it is this dict)."""
    return {"grid_search": list(values)}


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep: every ``sweeps/*.py`` flag (``--help`` describes each), typed.

    ``tracking_uri`` None means ``$MLFLOW_TRACKING_URI`` when :func:`parse_options` reads the
    flags, else a sqlite file under the storage path; ``address`` None means ``$RAY_ADDRESS``,
    else a local Ray (``"local"``: always a Ray of our own).
    """

    smoke: bool = False
    num_samples: int | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    storage_path: str | None = None
    name: str | None = None
    resume: bool = False
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    workers_per_trial: int = 1
    torch_trainer: bool = False
    max_concurrent: int | None = None
    max_failures: int = 2
    us_task: str | None = None
    ds_tasks: tuple[str, ...] = ()
    datasets: Mapping[str, str] = field(default_factory=dict)
    layerwise: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    researcher: str = field(default_factory=lambda: os.environ.get("USER") or _user())
    address: str | None = None
    quiet: bool = False
    fail_once: bool = False

    def __post_init__(self) -> None:
        for name, spec in self.datasets.items():
            if not str(spec).startswith(("imagefolder:", "parquet:")):
                raise UserError(f"--dataset {name}={spec}: expected NAME=imagefolder:PATH or NAME=parquet:TRAIN[,TEST]")
        if self.workers_per_trial < 1:
            raise UserError(f"--workers-per-trial {self.workers_per_trial}: must be >= 1")
        if self.max_failures < 0:
            raise UserError(f"--max-failures {self.max_failures}: must be >= 0")


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
    a("--torch-trainer", action="store_true", help="a Ray Train TorchTrainer per trial even with one worker")
    a("--max-concurrent", type=int, default=None, help="trials running at once")
    a("--max-failures", type=int, default=2, help="restarts of a crashed trial from its last checkpoint")
    a("--us-task", default=None, help="upstream task (default: the procedural synth_us)")
    a("--ds-task", action="append", default=None, help="downstream task (repeatable; default: the procedural suite)")
    a("--dataset", action="append", default=[], metavar="NAME=imagefolder:PATH|parquet:TRAIN[,TEST]",
      help="register a dataset on disk as a task (repeatable)")
    a("--layerwise", action="store_true", help="also probe every block (Fig. 6)")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="override any TrainConfig field")
    a("--researcher", default=None, help="tag of every run (default: $USER)")
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


def _pairs(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise UserError(f"{flag} {it!r}: expected KEY=VALUE")
        out.append((k, v))
    return out


def _literal(v: str) -> Any:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def parse_options(spec: SweepSpec, argv: Sequence[str] | None = None) -> SweepOptions:
    """The :class:`SweepOptions` of a sweep script's command line (``--help`` exits here).

    Raises:
        UserError: a malformed ``--set`` or ``--dataset``, or an invalid value.
    """
    a = build_parser(spec).parse_args(argv)
    return SweepOptions(
        smoke=a.smoke, num_samples=a.num_samples, tracking_uri=a.tracking_uri, experiment=a.experiment,
        storage_path=a.storage_path, name=a.name, resume=a.resume, gpus_per_trial=a.gpus_per_trial,
        cpus_per_trial=a.cpus_per_trial, workers_per_trial=a.workers_per_trial, torch_trainer=a.torch_trainer,
        max_concurrent=a.max_concurrent,
        max_failures=a.max_failures, us_task=a.us_task, ds_tasks=tuple(a.ds_task or ()),
        datasets=dict(_pairs(a.dataset, "--dataset")), layerwise=a.layerwise,
        overrides={k: _literal(v) for k, v in _pairs(a.set, "--set")}, address=a.address, quiet=a.quiet,
        fail_once=a.fail_once, **({"researcher": a.researcher} if a.researcher else {}))


def fixed_config(spec: SweepSpec, options: SweepOptions) -> dict[str, Any]:
    """The non-searched TrainConfig fields of every trial."""
    cfg: dict[str, Any] = {**spec.base, **({**SMOKE, **spec.smoke} if options.smoke else {})}
    if options.us_task:
        cfg["us_task"] = options.us_task
    if options.ds_tasks:
        cfg["ds_tasks"] = list(options.ds_tasks)
    if options.layerwise:
        cfg["layerwise"] = True
    cfg.update(options.overrides)
    return cfg


def trial_hooks(options: SweepOptions) -> "TrialHooks":
    """What the machinery tells every trial besides its config (:class:`~.trial.TrialHooks`)."""
    from .trial import TrialHooks

    return TrialHooks(datasets=dict(options.datasets), workers=options.workers_per_trial,
                      torch_trainer=options.torch_trainer or options.workers_per_trial > 1,
                      use_gpu=bool(options.gpus_per_trial),
                      worker_cpus=options.cpus_per_trial if options.cpus_per_trial is not None else 1.0,
                      fail_once=options.fail_once)


def _resources(options: SweepOptions) -> dict[str, float]:
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else 0.0
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else 1.0
    if options.torch_trainer or options.workers_per_trial > 1:
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


def _storage(options: SweepOptions) -> str:
    s = options.storage_path or os.path.join(os.getcwd(), DEFAULT_ROOT, "ray")
    return s if "://" in s else os.path.abspath(s)


def refuse_credentials(uri: str) -> None:
    """A UserError for a tracking URI with credentials in it: they would reach the writer child's
    argv (visible in ``ps``), ``mlflow_parent.json`` and the sweep summary."""
    from ..ingest.mlflow_source import has_credentials, safe_uri

    if has_credentials(uri):
        raise UserError(f"--tracking-uri {safe_uri(uri)}: credentials in the tracking URI are refused; set "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")


def _tracking_uri(options: SweepOptions, storage: str) -> str:
    if options.tracking_uri:
        refuse_credentials(options.tracking_uri)
        return options.tracking_uri
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


def run_sweep(spec: SweepSpec, options: SweepOptions = SweepOptions()) -> SweepResult:
    """Run (or resume) the sweep, finalize early-stopped trials.

    Raises:
        UserError: credentials in the tracking URI, or an install without the training extra
            (both before Ray starts).
    """
    o = options
    if o.tracking_uri:
        refuse_credentials(o.tracking_uri)   # before Ray starts
    require_training(f"sweep {spec.name}")   # a core install: one line, not a worker's traceback
    t0 = time.monotonic()
    from ray import tune

    from .tracking import MlflowSweepCallback, parent_run
    from .trial import FINAL_KEY, train_trial

    from ..ray_session import start_or_connect

    if o.quiet:
        import logging

        # Tune's default CSV/JSON/TensorBoard loggers: MLflow is the record, and TensorBoard warns
        # about every list-valued config ("invalid value ... via TBXLoggerCallback")
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.ERROR)
    start_or_connect(o.address, log_to_driver=bool(os.environ.get("META_STUDY_TRIAL_LOGS")))
    name = o.name or (f"{spec.name}-smoke" if o.smoke else spec.name)
    storage = _storage(o)
    exp_dir = storage.rstrip("/") + "/" + name
    local_state = exp_dir if "://" not in exp_dir else os.path.join(os.getcwd(), DEFAULT_ROOT, "state", name)
    os.makedirs(local_state, exist_ok=True)
    tracking = _tracking_uri(o, storage)
    fixed = fixed_config(spec, o)
    hooks = trial_hooks(o)
    tags = {"sweep": name, "git_sha": _git_sha(), "researcher": o.researcher}
    exp_id, parent = parent_run(tracking, o.experiment or spec.name, name, local_state,
                                params={"sweep": name, "smoke": o.smoke, **fixed}, tags=tags)
    callback = MlflowSweepCallback(tracking, exp_id, parent, local_state, tags=tags)
    # the hooks travel beside the config (Tune's object store), so the config is TrainConfig only
    trainable = tune.with_resources(tune.with_parameters(train_trial, hooks=hooks), _resources(o))
    if o.resume and tune.Tuner.can_restore(exp_dir):
        tuner = tune.Tuner.restore(exp_dir, trainable, resume_errored=True)
    else:
        tuner = _new_tuner(spec, o, trainable, fixed, name, storage, callback)
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
    early = _finalize(pending, callback, _resources(o), hooks)
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


def _new_tuner(spec: SweepSpec, options: SweepOptions, trainable: Any, fixed: dict[str, Any], name: str,
               storage: str, callback: Any) -> Any:
    from ray import tune

    metric = _metric(fixed)
    search_alg = scheduler = None
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(space=WithFixed(spec.space(options), fixed), metric=metric, mode="max",
                                  seed=int(fixed.get("seed", 0)))
        param_space: dict[str, Any] = {}
    else:
        param_space = {**fixed, **spec.space(options)}
    if spec.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", metric=metric, mode="max", grace_period=1,
                                  reduction_factor=3, max_t=10_000)
    samples = options.num_samples or (spec.smoke_samples if options.smoke else spec.num_samples)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=samples, search_alg=search_alg, scheduler=scheduler,
                                    max_concurrent_trials=options.max_concurrent, reuse_actors=True,
                                    trial_name_creator=TrialName(spec.name), trial_dirname_creator=_trial_dir),
        run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=[callback],
                                  failure_config=tune.FailureConfig(max_failures=options.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  verbose=0 if options.quiet else 1))


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


def _finalize(results: Sequence[Any], callback: Any, resources: Mapping[str, float], hooks: "TrialHooks") -> int:
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
            return evaluate_trial_checkpoint(config, checkpoint.to_directory(d), hooks)

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
        res = run_sweep(spec, parse_options(spec, argv))
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
