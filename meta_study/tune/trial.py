"""The Tune trainable: one trial = one meta-study point (``meta_study.train.run_trial``).

A trial's config is a flat dict of :class:`~meta_study.train.TrainConfig` fields (what Tune
searches and what MLflow records as params). What the sweep machinery tells a trial besides
them is a typed :class:`TrialHooks`, bound to the trainable with ``tune.with_parameters``, never
riding inside the config: on-disk datasets to register, a data-parallel TorchTrainer per trial,
and a test hook. Keys starting with ``_`` in a config are dropped before the model sees them
(Optuna's own suggestion names in ``sweeps/zoo.py``).

Reports: every pre-training report (US accuracy, loss, lr, with a checkpoint) goes to Tune, and at
the end one report with every metric of docs/tracking.md plus ``final = 1``. Each report also
carries ``resolved``: the resolved config and the model's parameter count, from which the MLflow
callback logs the run's params; and ``meta_study_env``: where the trial runs and with what
(host, package versions, devices: ``provenance.trial_environment``, JSON), the run's
``environment`` tag.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

FINAL_KEY = "final"
RESOLVED_KEY = "resolved"
#: The trial's environment (JSON text, so that Tune passes it through as one value and no
#: metric is made of it), which the MLflow callback sets as the run's ``environment`` tag.
ENV_KEY = "meta_study_env"


@functools.lru_cache(maxsize=1)
def environment_json() -> str:
    """This process's :func:`provenance.trial_environment` as compact JSON (read once: 4-16 ms)."""
    import json

    from .provenance import trial_environment

    return json.dumps(trial_environment(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TrialHooks:
    """What the sweep machinery tells every trial of a sweep, besides its TrainConfig fields.

    Attributes:
        datasets: ``{task name: "imagefolder:/path" | "parquet:/train[,/test]"}``, registered as
            tasks in the worker before training (real data on shared storage).
        workers: data-parallel workers of the trial's Ray Train ``TorchTrainer``.
        torch_trainer: run the trial as a ``TorchTrainer`` of ``workers`` workers, started inside
            the trial function (Ray Train V2: a Trainer is never passed to a Tuner); always so
            when ``workers`` > 1, and with one worker when asked (the GPU check runs that path
            on one GPU).
        use_gpu: one GPU per Train worker.
        worker_cpus: CPUs per Train worker.
        train_max_failures: restarts of the TorchTrainer inside one trial attempt.
        fail_once: a test hook; the trial raises after its first checkpoint on its first attempt,
            so FailureConfig's restart-from-checkpoint path is exercised.
        fail_eval_once: a test hook; each end-of-sweep evaluation fails on its first attempt, so
            the retry path is exercised.
        resumed: a later session of the sweep: a trial whose exact configuration already finished
            under another trial id (a trial lost with the driver's unsaved state and drawn again by
            a restored search) re-reports that result instead of training the same model again.
        sweep_storage: the driver wrote the sweep record into the storage before any trial (the
            runner always does): each trial first checks that its node sees it there, so on a
            node that joined after the driver's storage check (an autoscaler's) and has another
            disk the trial stops before training, in one line (:func:`check_sweep_storage`).
    """

    datasets: Mapping[str, str] = field(default_factory=dict)
    workers: int = 1
    torch_trainer: bool = False
    use_gpu: bool = False
    worker_cpus: float = 1.0
    train_max_failures: int = 1
    fail_once: bool = False
    fail_eval_once: bool = False
    resumed: bool = False
    sweep_storage: bool = False


def _plain(v: Any) -> Any:
    """``v`` with numpy scalars and arrays (a search space over ``np.arange``, ``np.logspace``, a
    HyperOpt or BayesOpt suggestion) as the Python numbers and lists they hold, inside lists,
    tuples and mappings too: TrainConfig refused ``batch_size=np.int64(64)`` and
    ``lr=np.float32(0.001)`` as "must be a number", and a trial config's key (:func:`config_key`)
    differed from the same config's in Python numbers."""
    if type(v).__module__ == "numpy" and hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v) if type(v) in (list, tuple) else v
    return v


def model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields of a trial config (keys starting with '_' dropped), numpy values as
    Python ones."""
    return {k: _plain(v) for k, v in config.items() if not str(k).startswith("_")}


#: A trial config's repeat index (0 .. N-1) of a grid or random sweep run with ``--num-samples N``
#: (``runner.repeat_space``): not a TrainConfig field (the '_' keeps it out of the model's config
#: and MLflow's params), but part of :func:`config_key`, so the N repeats of one grid point are N
#: trials, not one key.
REPEAT_KEY = "_repeat"


def config_key(config: Mapping[str, Any]) -> str:
    """A trial's identity: sha1 (16 hex digits) of its TrainConfig fields (keys starting with '_'
    left out) and its repeat index (:data:`REPEAT_KEY`, where the config has one). Equal keys,
    equal seeded models of the same repeat. Without the index, the repeats of a grid point with a
    fixed seed shared one key, and a resume gave a repeat that had not finished the result of its
    finished sibling (:func:`run_with_machinery`): one model twice in MLflow, one never trained."""
    import hashlib
    import json

    fields = model_config(config)
    if REPEAT_KEY in config:    # configs without it (every sweep before 2026-12-06) keep their keys
        fields[REPEAT_KEY] = _plain(config[REPEAT_KEY])
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def register_datasets(specs: Mapping[str, str]) -> None:
    """Register on-disk datasets as tasks: ``{"pets": "imagefolder:/data/pets"}``,
    ``{"jft": "parquet:/data/jft/train.parquet,/data/jft/test.parquet"}``."""
    if not specs:
        return  # importing the engine (torch, timm) costs seconds: only when there is work
    import functools

    from ..train import load_imagefolder, load_parquet, register_task

    # partials, not lambdas taking **kw: the factory's signature is the loader's, so a task's
    # kwargs meant for the procedural suite (the smoke sizes) skip it (train.data.task_kwargs)
    for name, spec in specs.items():
        kind, _, path = str(spec).partition(":")
        if kind == "imagefolder":
            register_task(name)(functools.partial(load_imagefolder, path, name=name))
        elif kind == "parquet":
            train, _, test = path.partition(",")
            register_task(name)(functools.partial(load_parquet, train, test or None, name=name))
        else:
            raise ValueError(f"dataset {name}: unknown kind {kind!r} (imagefolder:PATH or parquet:TRAIN[,TEST])")


def resolved_params(cfg: Any, info: Any) -> dict[str, Any]:
    """What the MLflow run's params and tags are made of: the resolved config and the model."""
    d = cfg.to_dict()
    d.update(param_count=info.param_count, arch_family=info.arch_family, model_name=cfg.model_name)
    return d


FINAL_FILE = "meta_study_final.json"
#: An early-stopped trial's end-of-sweep evaluation, beside its checkpoints. Never FINAL_FILE: a
#: trial whose completion record exists only re-reports it, so an evaluation of a trial that Tune
#: later trains on (a stop that was not the scheduler's) would end its training.
EVAL_FILE = "meta_study_eval.json"
EVAL_ATTEMPT_FILE = "meta_study_eval_attempt"   # the fail_eval_once test hook's marker
#: A trial whose pre-training diverged (``DivergedError``: a loss that is not finite), beside its
#: checkpoints. Its later attempts (Tune's ``max_failures`` retries, a ``--resume``) fail at once
#: with the same line: each one resumed from the last checkpoint and trained, up to ``eval_every``
#: steps (all of them with ``eval_every=0``), to the same NaN (a resumed run repeats its steps).
DIVERGED_FILE = "meta_study_diverged.json"
#: A trial the engine refused before training (``TrialConfigError``: its config, with its tasks and
#: model, cannot run: a DS class with fewer examples than the shots, a BatchNorm model on batches of
#: one, ...), beside its checkpoints, with the Ray job of that attempt. Tune's later attempts in the
#: same job (``max_failures`` retries) fail at once with the same line: each built the trial's data
#: again (minutes on a dataset on disk) to be refused the same way. A ``--resume`` (a new job) tries
#: again: the data on disk may have been fixed.
REFUSED_FILE = "meta_study_refused.json"
#: When an evaluation was made (ms since the epoch), kept in its record: a resumed sweep that logs
#: a read-back evaluation again logs it at the same time, which MLflow takes as the same point
#: (key, step, time, value), not a second one. Not a metric: the driver takes it out.
EVAL_TIME_KEY = "meta_study_eval_time_ms"
#: A data-parallel trial's Ray Train run, under its Tune trial directory on the sweep's storage:
#: its checkpoints are ``<trial>/train/checkpoint_<time>`` (Tune's are ``<trial>/checkpoint_NNNNNN``).
TRAIN_DIR = "train"
#: Checkpoints kept per trial, by Tune (runner.py's ``tune.CheckpointConfig(num_to_keep=2)``) and by
#: a data-parallel trial's Ray Train run alike: storage does not grow with the number of reports.
CHECKPOINTS_KEPT = 2


def trial_dir_of(checkpoint_path: str) -> str:
    """The Tune trial directory (on the storage filesystem) of one of its checkpoints: the parent
    of a Tune checkpoint, the grandparent of a data-parallel trial's Train checkpoint
    (``<trial>/train/checkpoint_*``). Its records (FINAL_FILE, EVAL_FILE) live there, where
    :func:`_write_final` writes them."""
    parent = checkpoint_path.rstrip("/").rsplit("/", 1)[0]
    head, _, base = parent.rpartition("/")
    return head if base == TRAIN_DIR and head else parent


def _final_marker() -> tuple[Any, str] | None:
    """(filesystem, path) of this trial's completion record in the Tune storage, next to its
    checkpoints. Tune saves its experiment state only every TUNE_GLOBAL_CHECKPOINT_S, so a driver
    killed right after a trial finished would otherwise run that trial again on ``--resume``."""
    from ray import tune

    try:
        st = tune.get_context().get_storage()
        return st.storage_filesystem, f"{st.trial_fs_path}/{FINAL_FILE}"
    except Exception:  # noqa: BLE001 - no storage context (a plain function call): no marker
        return None


def read_record(fs: Any, path: str) -> dict[str, Any] | None:
    """A completion record (JSON) on a pyarrow filesystem, or None if there is none, or none that
    reads as one (a write a crash cut short): the trial trains or evaluates again. It was a
    JSONDecodeError in every later attempt of the trial, each retry and each ``--resume`` alike."""
    import json

    import pyarrow.fs as pafs

    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        data = f.read()
    try:
        rec = json.loads(data)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def write_record(fs: Any, path: str, metrics: Mapping[str, Any]) -> None:
    """Write a completion record atomically: renamed into place on a local filesystem, one object
    upload on an object store."""
    import json

    # Tune creates a trial's directory lazily (on its first checkpoint or result sync): a trial
    # that finishes within milliseconds, an ASHA-stopped one or a fast evaluation job can get
    # here first. Creating it is idempotent (and a no-op on object stores).
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    data = json.dumps(metrics, default=str).encode()
    if fs.type_name != "local":
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    from .state import write_file_durably

    # synced before and after the rename: after a power loss the record is whole or absent
    write_file_durably(f"{path}.tmp-{os.getpid()}", path, data)


def _read_final() -> dict[str, Any] | None:
    m = _final_marker()
    return None if m is None else read_record(*m)


def _diverged_marker() -> tuple[Any, str] | None:
    """(filesystem, path) of this trial's DIVERGED_FILE; None without a storage context."""
    m = _final_marker()
    return None if m is None else (m[0], f"{m[1].rsplit('/', 1)[0]}/{DIVERGED_FILE}")


def _engine_error(e: BaseException | None, kind: str, depth: int = 0) -> str | None:
    """The first line of ``e`` when it, or what it wraps (a Ray error's ``cause``, the exception's
    ``__cause__``, a data-parallel trial's ``worker_failures``), is the engine's exception ``kind``
    (``DivergedError``, ``TrialConfigError``: classes of ``meta_study.train.loop``)."""
    import sys

    loop = sys.modules.get("meta_study.train.loop")   # not loaded: nothing was trained, nothing refused
    if e is None or loop is None or depth > 8:
        return None
    if isinstance(e, getattr(loop, kind)):
        return (str(e).strip().splitlines() or [kind])[0]
    wrapped = [getattr(e, "cause", None), e.__cause__, *dict(getattr(e, "worker_failures", None) or {}).values()]
    for w in wrapped:
        line = _engine_error(w, kind, depth + 1) if isinstance(w, BaseException) else None
        if line is not None:
            return line
    return None


def _diverged(e: BaseException | None) -> str | None:
    """The first line of ``e`` when it, or what it wraps, is the engine's DivergedError."""
    return _engine_error(e, "DivergedError")


def _refused(e: BaseException | None) -> str | None:
    """The first line of ``e`` when it, or what it wraps, is the engine's TrialConfigError."""
    return _engine_error(e, "TrialConfigError")


def _job_id() -> str | None:
    """The Ray job this attempt runs in (a sweep session: a ``--resume`` is another); None outside Ray."""
    import ray

    try:
        return ray.get_runtime_context().get_job_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - no runtime context
        return None


def _refused_marker() -> tuple[Any, str] | None:
    """(filesystem, path) of this trial's REFUSED_FILE; None without a storage context."""
    m = _final_marker()
    return None if m is None else (m[0], f"{m[1].rsplit('/', 1)[0]}/{REFUSED_FILE}")


def _raise_if_refused_before() -> None:
    """Fail at once, in the recorded line, a trial that an earlier attempt in this job found its
    config cannot run (REFUSED_FILE)."""
    m = _refused_marker()
    rec = None if m is None else read_record(*m)
    if rec is not None and rec.get("error") and rec.get("job") == _job_id():
        from ..train.loop import TrialConfigError

        raise TrialConfigError(f"{rec['error']} (an earlier attempt of this trial; not run again by this session's "
                               f"retries: {REFUSED_FILE} in its trial directory)")


def _raise_if_diverged_before() -> None:
    """Fail at once, in the recorded line, a trial whose earlier attempt diverged."""
    m = _diverged_marker()
    rec = None if m is None else read_record(*m)
    if rec is not None and rec.get("error"):
        from ..train.loop import DivergedError

        raise DivergedError(f"{rec['error']} (an earlier attempt of this trial; not trained again: {DIVERGED_FILE} "
                            "in its trial directory)")


DONE_DIR = "meta_study/done"   # under the experiment dir: <config key>/<trial id>.json per finished trial


def _done_dir(config: Mapping[str, Any]) -> tuple[Any, str] | None:
    """(filesystem, directory) of the finished results of this trial's configuration."""
    from ray import tune

    try:
        st = tune.get_context().get_storage()
        return st.storage_filesystem, f"{st.experiment_fs_path}/{DONE_DIR}/{config_key(config)}"
    except Exception:  # noqa: BLE001 - no storage context: no records
        return None


def _read_done(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """A finished result of the same configuration under another trial id, if any (the oldest)."""
    import pyarrow.fs as pafs

    d = _done_dir(config)
    if d is None:
        return None
    fs, path = d
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    for info in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.base_name):
        rec = read_record(fs, info.path)
        if rec is not None and rec.get(FINAL_KEY) == 1.0:
            return rec
    return None


def _final_records(config: Mapping[str, Any] | None = None) -> list[tuple[Any, str]]:
    """(filesystem, path) of each completion record of this trial: its FINAL_FILE and, given its
    ``config``, its entry under DONE_DIR; none without a storage context."""
    m = _final_marker()
    if m is None:
        return []
    d = _done_dir(config) if config is not None else None
    if d is None:
        return [m]
    from ray import tune

    return [m, (d[0], f"{d[1]}/{tune.get_context().get_trial_id()}.json")]


def _write_final(metrics: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                 records: list[tuple[Any, str]] | None = None) -> None:
    """Record a trial's final metrics (``records``: :func:`_final_records`, by default this trial's)."""
    for fs, path in _final_records(config) if records is None else records:
        write_record(fs, path, metrics)


#: body(cfg, hooks) -> final metrics to report, or None if the body reported them itself.
TrialBody = Callable[[dict[str, Any], TrialHooks], "dict[str, Any] | None"]


class StorageNotShared(RuntimeError):
    """This trial's node does not see the sweep's storage as the driver does."""


def check_sweep_storage() -> None:
    """Refuse to run a trial on a node that cannot see the sweep record the driver wrote into
    the storage before any trial started: a node that joined after the driver probed every node
    (an autoscaler's), with a local storage path on a disk it does not share. Ray Train refuses
    such a node only when the trial saves its first checkpoint, after training up to it, and not
    at all for a completion record written without one (a trial that re-reports a result that
    finished earlier): that record would land on the node's own disk, where the driver and a
    ``--resume`` never look. Cost: one stat (one HEAD request on an object store) per trial.

    Raises:
        StorageNotShared: one line naming the node and the path; Tune records the trial as
            errored (retried per ``--max-failures``, perhaps on another node).
    """
    import pyarrow.fs as pafs
    from ray import tune

    from .preflight import STORAGE_HINT
    from .state import RECORD, SUBDIR

    try:
        with warnings.catch_warnings():   # Ray warns, then returns None, outside a Tuner
            warnings.simplefilter("ignore")
            st = tune.get_context().get_storage()
    except Exception:  # noqa: BLE001 - no storage context (a plain function call): nothing to check
        return
    if st is None:
        return
    path = f"{st.experiment_fs_path}/{SUBDIR}/{RECORD}"
    if st.storage_filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        return
    import ray

    raise StorageNotShared(
        f"node {ray.util.get_node_ip_address()} cannot see this sweep's storage: the sweep record {path} that "
        "the driver wrote before any trial is not there (this node joined after the driver checked every node, "
        "and has another disk); " + STORAGE_HINT)


def run_with_machinery(config: dict[str, Any], body: TrialBody, hooks: TrialHooks = TrialHooks()) -> None:
    """The sweep machinery around a trial body: a trial on a node that cannot see the sweep's
    storage stops at once; a trial that already finished (its completion record exists) only
    re-reports; a trial whose earlier attempt diverged fails at once, in that attempt's line
    (DIVERGED_FILE), as does one whose config an earlier attempt of this job found cannot run
    (REFUSED_FILE); otherwise datasets are registered, the body runs, and its final metrics are
    recorded durably, then reported."""
    from ray import tune

    if hooks.sweep_storage:
        check_sweep_storage()
    done = _read_final()
    if done is not None:  # this trial finished before the driver was restarted: report, do not rerun
        tune.report(done)
        return
    if hooks.resumed:     # the same configuration finished under a trial id the restored state lost
        done = _read_done(config)
        if done is not None:
            _write_final(done)
            tune.report(done)
            return
    _raise_if_diverged_before()
    _raise_if_refused_before()
    cfg = model_config(config)
    register_datasets(hooks.datasets)
    try:
        final = body(cfg, hooks)
    except Exception as e:
        line, record = _diverged(e), {}
        m = _diverged_marker() if line is not None else None
        if m is not None:
            record = {"error": line}
        elif (line := _refused(e)) is not None:
            m, record = _refused_marker(), {"error": line, "job": _job_id()}
        if m is not None:
            try:
                write_record(*m, record)
            except OSError:   # the storage refused: later attempts train again, the error stays this one
                pass
        raise
    if final is not None:
        _write_final(final, config)
        tune.report(final)


def _engine_body(cfg: dict[str, Any], hooks: TrialHooks) -> dict[str, Any] | None:
    if hooks.torch_trainer or hooks.workers > 1:
        return _train_distributed(cfg, hooks)
    return _train_local(cfg, hooks)


def train_trial(config: dict[str, Any], hooks: TrialHooks = TrialHooks()) -> None:
    """The Tune function trainable
    (``tune.with_resources(tune.with_parameters(train_trial, hooks=...), ...)``)."""
    run_with_machinery(config, _engine_body, hooks)


def _train_local(cfg: dict[str, Any], hooks: TrialHooks) -> dict[str, Any]:
    from ray import tune

    from ..train import run_trial

    start_ckpt = tune.get_checkpoint()
    resolved: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meta-study-trial-") as work:
        resume = resume_copy(start_ckpt, work)
        ckpt_dir = os.path.join(work, "checkpoint")
        report = _reporter(tune.report, tune.Checkpoint, resolved, fail_once=hooks.fail_once and start_ckpt is None)
        result = run_trial(cfg, on_report=report, checkpoint_dir=ckpt_dir, resume_from=resume,
                           on_start=lambda c, i: resolved.update(resolved_params(c, i)))
        return {**result.metrics(), RESOLVED_KEY: resolved, ENV_KEY: environment_json(), FINAL_KEY: 1.0}


def resume_copy(checkpoint: Any, work: str) -> str | None:
    """A local copy, under ``work``, of the newest readable checkpoint of a restarted trial: its
    latest ``checkpoint`` (Tune's or Ray Train's), or, when that one cannot be read (truncated or
    damaged on the storage; every retry of the trial failed on it alike), the newest earlier
    one beside it (CHECKPOINTS_KEPT are kept), said in one line on stderr. Each is checked
    whole (its CRC-32s) and its header read: ~0.3 s a GB. None without a checkpoint.

    Raises:
        ValueError: none of them can be read: one line naming the latest on the storage and
            what is wrong with it (it named the trial's temporary copy, gone with it).
    """
    if checkpoint is None:
        return None
    import sys

    import pyarrow.fs as pafs

    from ..train.loop import UnreadableCheckpoint, checkpoint_file, read_checkpoint

    fs, latest = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, _, name = latest.rpartition("/")
    try:
        infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True)) if parent else []
    except OSError:   # a listing the storage refuses: no earlier ones to fall back on
        infos = []
    # Tune's checkpoint_000012 and Train's checkpoint_<date>_<time> both sort by age
    earlier = sorted((i.path for i in infos if i.type == pafs.FileType.Directory
                      and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
    why = ""
    for n, path in enumerate([latest, *earlier]):
        local = os.path.join(work, f"resume{n}")
        try:
            (checkpoint if n == 0 else type(checkpoint)(path, filesystem=fs)).to_directory(local)
            read_checkpoint(checkpoint_file(local), lazy=True)
        except (UnreadableCheckpoint, FileNotFoundError) as e:
            line = (str(e).strip().splitlines() or [type(e).__name__])[0].replace(local, path)
            if "Path not found: (<pyarrow" in line:
                # pyarrow's words for a checkpoint gone from the storage named its filesystem object
                # ("Path not found: (<pyarrow._fs.LocalFileSystem object at 0x7f...>, PATH)")
                line = f"{path}: not on the sweep's storage (deleted?)"
            why = why or (line if path in line else f"{path}: {line}")
            continue
        if n:
            print(f"warning: {why}; resuming from the earlier checkpoint {path}", file=sys.stderr)
        return local
    raise UnreadableCheckpoint(f"{why}; no earlier readable checkpoint beside it: nothing to resume from (remove "
                               "the trial's checkpoints to train it from the start)")


def _reporter(report: Callable[..., None], checkpoint_cls: Any, resolved: dict[str, Any], *,
              fail_once: bool) -> Callable[[int, dict[str, float], str | None], None]:
    def on_report(step: int, metrics: dict[str, float], ckpt_dir: str | None) -> None:
        ckpt = checkpoint_cls.from_directory(ckpt_dir) if ckpt_dir else None
        report({**metrics, RESOLVED_KEY: resolved, ENV_KEY: environment_json()}, checkpoint=ckpt)
        if fail_once and ckpt is not None:
            raise RuntimeError("injected failure (fail_once): the trial must resume from its checkpoint")
    return on_report


def _train_distributed(cfg: dict[str, Any], hooks: TrialHooks) -> None:  # reports via TuneReportCallback
    """A data-parallel trial: a TorchTrainer inside the trial function, its rank-0 reports
    forwarded to Tune by Ray's TuneReportCallback (Ray Train V2)."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    from ray import train, tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    # The Train run lives in the Tune trial's directory ON THE SWEEP'S STORAGE (<trial>/train/):
    # ``get_trial_dir()`` is the trial's local staging directory (/tmp/ray/session_*/...), where a
    # restart on another node or a ``--resume`` (a new session) never finds the checkpoints, and
    # which tracking.py turned into ``s3://tmp/ray/...`` on an object store. On the storage, Ray
    # Train restores the run from its checkpoint manager's snapshot there when the trial restarts.
    st = tune.get_context().get_storage()
    use_gpu = hooks.use_gpu
    trainer = TorchTrainer(
        _train_loop_per_worker,
        # rank 0 writes the completion records before its final report, as run_with_machinery does
        # for a single-process trial: written after fit() returned, a trial killed between Tune's
        # receipt of that report and the record re-ran its resume, probes and diagnostics, and
        # reported its final metrics twice
        train_loop_config={"cfg": cfg, "datasets": dict(hooks.datasets), "records": _final_records(cfg)},
        scaling_config=train.ScalingConfig(num_workers=hooks.workers, use_gpu=use_gpu,
                                           resources_per_worker={"CPU": float(hooks.worker_cpus),
                                                                 **({"GPU": 1.0} if use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=train.RunConfig(name=TRAIN_DIR, storage_path=st.trial_fs_path,
                                   storage_filesystem=st.storage_filesystem, callbacks=[TuneReportCallback()],
                                   # Train keeps every checkpoint unless told: as many as Tune's side keeps
                                   checkpoint_config=train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                                   failure_config=train.FailureConfig(max_failures=hooks.train_max_failures)),
    )
    trainer.fit()


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the same run_trial, data-parallel over the process group Ray set up."""
    from ray import train

    from ..train import run_trial

    cfg = loop_config["cfg"]
    register_datasets(loop_config["datasets"])
    rank = train.get_context().get_world_rank()
    start_ckpt = train.get_checkpoint()
    resolved: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meta-study-worker-") as work:
        resume = resume_copy(start_ckpt, work)   # every rank picks the same one: they read the same files
        report = _reporter(train.report, train.Checkpoint, resolved, fail_once=False)
        result = run_trial(cfg, on_report=report, checkpoint_dir=os.path.join(work, "checkpoint"), resume_from=resume,
                           on_start=lambda c, i: resolved.update(resolved_params(c, i)))
        # every worker reports (a collective); Tune sees rank 0's metrics, recorded first (durably)
        final = {**result.metrics(), RESOLVED_KEY: resolved, ENV_KEY: environment_json(), FINAL_KEY: 1.0} if rank == 0 else {FINAL_KEY: 1.0}
        if rank == 0:
            _write_final(final, records=loop_config.get("records", []))
        train.report(final)


def evaluate_trial_checkpoint(config: dict[str, Any], checkpoint_path: str,
                              hooks: TrialHooks = TrialHooks()) -> dict[str, Any]:
    """Final metrics of a trial stopped early (by ASHA, say), from its last checkpoint: the same
    evaluation a finished trial reports, without further training. Runs in a Ray task."""
    from ..train import evaluate_checkpoint

    cfg = model_config(config)
    register_datasets(hooks.datasets)
    resolved: dict[str, Any] = {}
    result = evaluate_checkpoint(cfg, checkpoint_path,
                                 on_start=lambda c, i: resolved.update(resolved_params(c, i)))
    return {**result.metrics(), RESOLVED_KEY: resolved, ENV_KEY: environment_json(), FINAL_KEY: 1.0, "early_stopped": 1.0}


def evaluate_stopped_trial(config: dict[str, Any], checkpoint: Any, hooks: TrialHooks = TrialHooks()) -> dict[str, Any]:
    """:func:`evaluate_trial_checkpoint` of a Tune or Train ``Checkpoint`` (a path on the sweep's
    storage, local, shared or an object store), recorded like a finished trial's result: an evaluation
    done once is read back, not run again (a retry, a resumed sweep). Any node that reaches the
    storage can run it."""
    fs = checkpoint.filesystem
    trial_dir = trial_dir_of(checkpoint.path)   # a data-parallel trial's checkpoint is one level deeper
    record = f"{trial_dir}/{EVAL_FILE}"
    for path in (f"{trial_dir}/{FINAL_FILE}", record):   # finished after all, or evaluated before
        done = read_record(fs, path)
        if done is not None and done.get(FINAL_KEY) == 1.0:
            return done
    if hooks.fail_eval_once:   # test hook: the first attempt of each evaluation fails
        marker = f"{trial_dir}/{EVAL_ATTEMPT_FILE}"
        if read_record(fs, marker) is None:
            write_record(fs, marker, {"attempt": 1})
            raise RuntimeError("injected evaluation failure (fail_eval_once): the task must be retried")
    with tempfile.TemporaryDirectory(prefix="meta-study-eval-") as d:
        try:
            local = checkpoint.to_directory(d)
        except FileNotFoundError:
            # pyarrow's words were "Path not found: (<pyarrow._fs.LocalFileSystem object at 0x...>, PATH)"
            raise FileNotFoundError(f"checkpoint {checkpoint.path}: not on the sweep's storage (deleted?); "
                                    "nothing to evaluate") from None
        try:
            metrics = evaluate_trial_checkpoint(config, local, hooks)
        except Exception as e:
            # the run's meta_study.eval_error is one line naming the checkpoint on the storage: a
            # damaged one said only "UnpicklingError: Check the documentation of torch.load ...",
            # or named this task's temporary copy, gone with it
            raise _naming_checkpoint(e, local, checkpoint.path) from e
    import time

    metrics = {**metrics, EVAL_TIME_KEY: int(time.time() * 1000)}
    write_record(fs, record, metrics)
    return metrics


def _naming_checkpoint(e: Exception, local: str, shown: str) -> Exception:
    """``e`` as one line that names the checkpoint ``shown`` (its local copy ``local`` shown as it),
    of the same type where that type takes a message. A checkpoint torch cannot read says so, not
    torch's advice to load it with ``weights_only=False``."""
    import pickle

    from ..train.loop import UnreadableCheckpoint

    if isinstance(e, UnreadableCheckpoint) and isinstance(e.__cause__, Exception):
        e = e.__cause__   # torch's own error: said below as "not a readable checkpoint (damaged?)"
    line = (str(e).strip().splitlines() or [""])[0].replace(local, shown)
    if isinstance(e, (pickle.UnpicklingError, EOFError)) or "PytorchStreamReader" in line:
        line = f"not a readable checkpoint (damaged?): {type(e).__name__}: {line.split('. ')[0]}"
    try:
        return type(e)(f"checkpoint {shown}: {line}")
    except Exception:  # noqa: BLE001 - a type that takes other arguments
        return RuntimeError(f"checkpoint {shown}: {type(e).__name__}: {line}")
