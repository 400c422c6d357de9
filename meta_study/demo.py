"""``meta-study demo``: the whole system on embedded defaults, in one working directory.

1. a local Ray and MLflow tracking in a sqlite file (``WORKDIR/mlflow.db``, artifacts beside it);
2. a sweep of real training runs on the procedural suite: ViT / Mixer sizes x epochs x upstream
   data fraction (18 models, ~1-3 minutes on 2 cores) on a 24-way version of the upstream task,
   one MLflow run per model, probed on a DS task that tracks the upstream one (``synth_combo``),
   with 1,000 test images (+-1.5 points of binomial noise at 30%, where 200 gave +-3.2), its US
   accuracy measured on 2,400 (+-1 point);
   ``--synthetic`` instead logs a simulated meta-study with a known law (1-2 minutes on 2 cores);
3. ``meta-study ingest`` of those runs into ``WORKDIR/store``, and beside them the shipped public
   timm results (``examples/data/timm``: ~1,550 ImageNet models on five shifted test sets), so that
   the analysis has groups large enough to answer (from the working directory, the checkout this
   package is in or the one it was installed from: :func:`examples_dir`; without one, a line says
   so and how to add them);
4. ``meta-study refit`` with sample-size sensitivity and bootstrap, published to MLflow; the top
   20% of each group's models (by US accuracy) are hidden from the fit;
5. the held-out check: every trusted answer against the models it did not see, judged as the
   report judges those it flags ``held_out`` (right, but less precise than trusted: within 5 points
   and closer than the flat guess, but off by more than the trust tolerance);
6. the HTML report, and where to find everything.

Everything lives under ``WORKDIR`` (the command's default ``./meta-study-demo``, with ``--synthetic``
``./meta-study-demo-synthetic``). Running it again reuses what
is there: finished trials are not retrained, ingest and refit are no-ops, the report stays. A
``WORKDIR`` that is not empty and holds anything no demo writes (the results of ``meta-study fit
--out``, a refit's ``--out``, anyone's files) is refused in one line before anything is written
(:func:`refuse_foreign_workdir`); one whose report would mix two demos' models is refused in one line before anything is
trained (:func:`refuse_mixed_workdir`): the other kind of demo's (``--synthetic`` or not), one
moved or copied from another path, or one whose MLflow database or sweep state was removed; so
is a ``WORKDIR`` another demo is running in (:func:`workdir_lock`). A ``--synthetic`` demo stopped
while it logged its runs leaves some of them: the next one logs the rest (:func:`log_synthetic`).
A demo stopped while it trained (Ctrl-C, which Tune takes as a stop) ends there, exit 130, and the
next one resumes its sweep as it was started (``--serial`` on a sweep started without it is refused
in one line: :func:`refuse_serial_resume`); one whose sweep could not log everything to MLflow (a flush that
spooled) ends there too, exit 1, and the next one sends the rest before it ingests.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

# a refit's OUT entries, which a demo's workdir holds (the demo runs a refit anyway)
from .refit import LATEST, LATEST_TMP, LEDGERS, OUT_LOCK, STORE_LOCK, VERSIONS

if TYPE_CHECKING:
    from .refit import RefitConfig
    from .tune.runner import SweepOptions, SweepProgress

EXPERIMENT = "meta-study-demo"
SYNTH_EXPERIMENT = "meta-study-demo-synthetic"
#: The simulated meta-study's law per DS task: (k, alpha, e_ir). Saturation = 1 - e_ir. Every
#: alpha is > 1: with alpha < 1 the frontier is convex in accuracy, and no upper hull follows it.
SYNTH_LAWS = {"near": (0.9, 1.3, 0.05), "mid": (0.8, 1.6, 0.20), "far": (0.6, 2.2, 0.45)}
SYNTH_SHOTS = (1, 5, 10, 25)
#: The ``source`` of the shipped timm results' rows (``examples/mappings/timm_wide.yaml``'s ``source:``).
TIMM_SOURCE = "timm-results"


class DemoStepFailed(OSError):
    """A step of the demo failed on its own inputs (a trial of its sweep, a source of its ingest):
    the machine's failure (a full disk, memory), not the user's, so the command says it in one
    line and exits 1 (an :class:`OSError`, as the CLI treats one); it was a RuntimeError's traceback."""


@dataclass
class DemoResult:
    workdir: Path
    tracking_uri: str
    store: Path
    report: Path
    models: int
    seconds: float


def _sweep_spec():
    from .tune.runner import SweepSpec, grid

    return SweepSpec(
        name="demo",
        doc=__doc__,
        space=lambda options: {
            "model_name": grid(["vit_tiny_cpu", "mixer_tiny_cpu", "vit_small_cpu"]),
            "epochs": grid([1, 2, 4]),
            "data_fraction": grid([0.3, 1.0]),
        },
        # A 24-way upstream task (12 of synth_us's 120 triples): tiny models trained for seconds then
        # spread from ~7% to ~75% US accuracy, a range a law can be fitted to; on the full 240-way
        # task they would all sit below 10%.
        # A DS task that tracks the upstream one: synth_combo, US-DS rank correlation 0.96-0.99 in
        # 18 models (DS 14-52%). Measured on these settings (docs/data.md): synth_shape, synth_count
        # and synth_xpos 0.78 but only 4-8 points above chance; synth_texture 0.28 (its textures
        # alias at 16 px; it was the demo's second task, a task that does not track US); synth_orient
        # 0.04. 1,000 DS test images so that binomial noise (+-1.5 points) does not dominate the
        # back-tests, and 2,400 US ones (the x-axis of every fit: +-1 point, where 800 gave +-1.7)
        smoke=dict(lr=2e-3, eval_every=0, fewshot_seeds=2,   # on top of runner.SMOKE (16 px, batch 128)
                   us_task_kwargs={"n_train": 4000, "n_test": 2400, "n_triples": 12},
                   ds_task_kwargs={"n_train_per_class": 25, "n_test": 1000}, shots=[1, 5, 10, 25],
                   ds_tasks=["synth_combo"]),
    )


def _quiet_mlflow() -> None:
    """The demo's own lines only: MLflow's sqlite set-up ("Creating initial MLflow database
    tables...", alembic's migrations) is logged at INFO on every fresh database."""
    import logging

    import mlflow  # noqa: F401 - configures its loggers on import; ours are set after

    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_demo(workdir: str = "meta-study-demo", *, synthetic: bool = False, serial: bool = False,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the demo (see the module doc); every step prints one line with its time."""
    t0 = time.monotonic()
    if not synthetic:
        from .extras import require_training

        require_training("meta-study demo (without --synthetic)")
    wd = Path(workdir).resolve()
    if wd.exists() and not wd.is_dir():     # mkdir said "[Errno 17] File exists", exit 1
        from .errors import UserError

        raise UserError(f"--workdir {workdir}: exists and is not a directory")
    if "?" in str(wd) or "%" in str(wd):
        # the MLflow database is the URL sqlite:///WORKDIR/mlflow.db: "?" starts its query (the
        # database was written to a file named after the path up to the "?", outside WORKDIR), and
        # "%20" is read as a space
        from .errors import UserError

        raise UserError(f"--workdir {workdir}: a path with '?' or '%' cannot hold the demo's MLflow database "
                        "(sqlite:///WORKDIR/mlflow.db is a URL); choose a directory without them")
    # before anything is written into it: the demo's files beside another command's results
    refuse_foreign_workdir(wd, workdir)
    _quiet_mlflow()
    try:
        wd.mkdir(parents=True, exist_ok=True)
    except OSError as e:    # a parent that is a file, no permission: "[Errno 20] Not a directory", exit 1
        from .errors import UserError

        raise UserError(f"--workdir {workdir}: cannot be created ({e.strerror or e})") from None
    # one demo at a time in a workdir: a second one started while the first was logging its
    # simulated runs said "reused the runs of an earlier demo", ingested 145 of the 240 and
    # reported on them (exit 0) while the first ended "refit locked" (exit 2), or failed in a
    # traceback from MLflow's half-made sqlite database; two trained demos shared one Tune state
    with workdir_lock(wd, workdir):
        return _run_demo(wd, synthetic, serial, log, t0, workdir)


#: The lock file of a demo's workdir (:func:`workdir_lock`).
DEMO_LOCK = ".demo.lock"
#: What a demo writes at the top of its workdir, and all a workdir it reuses may hold
#: (:func:`refuse_foreign_workdir`): its lock, MLflow's database and artifacts, the store, the
#: sweep's state (``ray``, trained demo only) and the refit's versions, LATEST, publish records and
#: locks (``.refit.lock`` where the store's own cannot hold it). Finder's ``.DS_Store`` is no one's data.
DEMO_ENTRIES = frozenset({DEMO_LOCK, OUT_LOCK, STORE_LOCK, LATEST, "mlartifacts", "mlflow.db",
                          LEDGERS, "ray", VERSIONS, "store", ".DS_Store"})
#: What a refit writes into its ``--out``: a workdir with them and no store is a refit's, not a demo's.
_REFIT_ENTRIES = frozenset({LATEST, LEDGERS, VERSIONS})


def refuse_foreign_workdir(wd: Path, workdir: str) -> None:
    """Refuse a ``--workdir`` that exists, is not empty and is no demo's workdir, before anything
    is written into it: the demo wrote ``mlflow.db``, ``store/`` and ``refits/`` beside the results
    of ``meta-study fit --out DIR`` (or anyone's files) and refitted into them. A demo's workdir
    holds only :data:`DEMO_ENTRIES` (SQLite's ``mlflow.db-journal`` beside its database too), and
    refits only beside its store; which demo made it is :func:`refuse_mixed_workdir`'s to say.
    Costs one directory listing (and, for analysis results, one read of their ``results.json``).

    Raises:
        UserError: one line naming ``--workdir``, what it holds and what to do.
    """
    from .errors import UserError

    try:
        names = sorted(p.name for p in wd.iterdir()) if wd.is_dir() else []
    except OSError:
        return      # one that cannot be listed cannot be locked either: workdir_lock says so
    # SQLite's journal beside its database; refit's LATEST written aside first (OUT/.LATEST.tmp-<pid>,
    # left by a refit killed before its rename: a demo's own, which refused its workdir ever after)
    foreign = [n for n in names if n not in DEMO_ENTRIES and not n.startswith(("mlflow.db-", LATEST_TMP))]
    if not foreign and ("store" in names or not _REFIT_ENTRIES & set(names)):
        return
    what = (_foreign_entries(wd, foreign) if foreign else
            f"a refit's versions without a store ({', '.join(sorted(_REFIT_ENTRIES & set(names)))}: the --out of "
            "`meta-study refit`?)")
    raise UserError(f"--workdir {workdir}: is not empty and no demo's workdir: it holds {what}; the demo would write "
                    "mlflow.db, store/ and refits/ among them; give a new or empty directory")


def _foreign_entries(wd: Path, foreign: list[str]) -> str:
    """What a workdir's entries that no demo writes are, in a few words: an analysis's results
    (their ``results.json`` names its parts: "fits, sensitivity") or the first few names."""
    import json

    from .validation import printable

    if "results.json" in foreign:
        try:
            parts = json.loads((wd / "results.json").read_text()).get("parts")
        except (OSError, ValueError, AttributeError):
            parts = None
        of = f" of {', '.join(printable(str(p)) for p in parts)}" if isinstance(parts, dict) and parts else ""
        return f"the results of an analysis{of} (results.json: the --out of `meta-study fit`?)"
    more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
    return f"{len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} no demo writes ({', '.join(printable(n) for n in foreign[:3])}{more})"


@contextlib.contextmanager
def workdir_lock(wd: Path, workdir: str) -> Iterator[None]:
    """Hold the demo's lock of ``wd`` (``WORKDIR/.demo.lock``, a non-blocking ``flock`` that records
    its holder) for the block; the kernel drops it when the process dies.

    Raises:
        UserError: one line naming ``--workdir`` and the holder, when another demo holds it.
    """
    from .errors import UserError
    from .validation import printable

    try:
        fd = os.open(wd / DEMO_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        # a workdir that exists but cannot be written (another user's, a read-only mount): it was
        # "[Errno 13] Permission denied: '.../.demo.lock'" and exit 1, where one that cannot be
        # created says which input is wrong and exits 2 (the store says the same of its lock file)
        import errno

        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise UserError(f"--workdir {workdir}: cannot be written ({e.strerror}: {wd / DEMO_LOCK}); "
                        "give a directory you can write to") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = printable(" ".join(os.pread(fd, 200, 0).decode(errors="replace").split()))[:80]
            raise UserError(f"--workdir {workdir}: another demo is running there" + (f" ({holder})" if holder else "")
                            + "; wait for it to end, or give another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _run_demo(wd: Path, synthetic: bool, serial: bool, log: Callable[[str], None], t0: float,
              workdir: str) -> DemoResult:
    """:func:`run_demo` once it holds the workdir's lock."""
    tracking = f"sqlite:///{wd / 'mlflow.db'}"
    store = wd / "store"
    if (wd / "mlflow.db").exists():
        refuse_unreadable_database(wd, workdir, tracking)
    # before any training or logging: a report of this workdir's store would mix two demos' models
    logged = refuse_mixed_workdir(wd, workdir, tracking, synthetic=synthetic)
    step = _Steps(log)
    if synthetic:
        with step(synthetic_step(tracking, logged=logged)):
            models = log_synthetic(tracking, logged=logged)
        experiment = SYNTH_EXPERIMENT
    else:
        resumed = (wd / "ray" / "demo").exists()       # what _train resumes: finished trials are reused
        with step("sweep: the last demo's 18 models, resumed (finished trials are not trained again)" if resumed
                  else "sweep: 18 models trained on the procedural suite, one MLflow run each"):
            models = _train(wd, tracking, serial, log)
        experiment = EXPERIMENT
    examples = examples_dir()
    with step("ingest: MLflow runs" + (" and the shipped timm results" if examples else "") + " -> Parquet store"):
        from .ingest import SourceOptions, ingest_sources, load_mapping, open_sources
        from .store import Store
        from .validation import printable as _printable

        sources = open_sources([tracking], None, SourceOptions(experiments=(experiment,)))
        own = {src.source for src in sources}      # the store's `source` of the demo's MLflow runs
        if examples is not None:
            sources += open_sources([str(examples / "data" / "timm")],
                                    load_mapping(str(examples / "mappings" / "timm_wide.yaml")))
        reports = ingest_sources(sources, Store(str(store)))
        for rep in reports:
            log(f"  {rep.line()}")
            for note in rep.notes:   # as `meta-study ingest` shows them: they were dropped
                log(f"    {_printable(note)}")
        failed = [rep for rep in reports if not rep.ok]
        if failed:
            # the demo's sources are its own (its MLflow database, the shipped files): one that
            # failed met the machine (a full disk: "[Errno 28] ... '.../store/...'"), said in one
            # line, exit 1, as every command says it; it was a RuntimeError's traceback
            raise DemoStepFailed(f"--workdir {workdir}: the demo's ingest failed ({failed[0].error}); "
                                  "nothing was refitted")
        if examples is None:
            log(f"  {no_examples_line(Store(str(store)), own)}")
    with step("refit: back-tested fits of every law and frontier, sensitivity, bootstrap, report, MLflow run"):
        res = _refit(wd, store, tracking, serial, synthetic)
        log(f"  refit: {res.status}" + (f" ({res.message})" if res.message else ""))   # "refitted (no earlier refit ...)"
    if not res.version_dir:
        # skipped ("locked": another demo or refit is writing WORKDIR): there is no report to show
        # (it ended "done ... report None", exit 0). Another writer is no wrong input: exit 1, as
        # every command that meets a store's held lock (it was exit 2: "fix your arguments")
        from .errors import StoreLockedError, UserError

        error = StoreLockedError if res.status == "locked" else UserError
        raise error(f"--workdir {workdir}: no report was made (refit {res.status}: {res.message})")
    report = Path(res.version_dir) / "index.html"
    with step("held-out check: every trusted answer against the models the fit did not see"):
        for line in held_out_check(Path(res.version_dir)):
            log(f"  {line}")
    if synthetic:
        _compare_known_laws(Path(res.version_dir), log)
    if (Path(res.version_dir) / "fits.parquet").exists():    # a refit always writes it
        log(answer_summary(Path(res.version_dir)))   # the question across tasks, as the report says it
    out = DemoResult(workdir=wd, tracking_uri=tracking, store=store, report=report, models=models,
                     seconds=time.monotonic() - t0)
    log("")
    log(f"done in {out.seconds:.0f} s. Everything is under {wd}:")
    log(f"  report     {report}")
    log(f"  store      {store}   (pandas.read_parquet works on it)")
    # quoted for the shell: a WORKDIR with a space ("/Users/Jane Doe/...") split the command in two
    log(f"  MLflow UI  mlflow ui --backend-store-uri {shlex.quote(tracking)} --port 5000   then "
        f"{_ui_url(tracking, experiment)}")
    return out


def refuse_mixed_workdir(wd: Path, workdir: str, tracking: str, *, synthetic: bool) -> bool | None:
    """Refuse a ``--workdir`` whose report would mix two demos' models, before anything is
    trained or logged. The refit reports every group of ``WORKDIR/store``, and ingest adds runs
    beside what is there (a row's key holds its source, the MLflow database's path, and its run
    id), so models there that this demo does not read from MLflow went into its report too:

    - the other kind of demo's (``demo --synthetic``, then ``demo``: the simulated tasks in the
      trained models' report and in its held-out count);
    - the demo's runs ingested from another MLflow database path (a workdir moved or copied: every
      run ingested again under the new path, each model twice; 480 simulated models of 240), or,
      before any ingest, a sweep state (``WORKDIR/ray/demo``) that logs to another database;
    - the demo's runs that MLflow no longer has (``mlflow.db`` removed: the simulated runs were
      logged again under new ids), or, for the trained demo, models whose sweep state
      (``WORKDIR/ray``) is gone: a second training's 18 models beside the first's;
    - anyone's models in a store that no demo made (none of its rows a demo's, some not the shipped
      timm results): ``--workdir .`` in a project whose own store is ``./store``.

    Costs one read of two store columns and, when ``mlflow.db`` exists, one or two MLflow queries.

    Returns:
        For ``synthetic``, whether the simulated runs are in MLflow already (:func:`synthetic_logged`,
        asked once here); None otherwise.

    Raises:
        UserError: one line naming ``--workdir``, what it holds and what to do.
    """
    import pandas as pd

    from .errors import UserError
    from .ingest import SourceOptions, open_sources
    from .store import Store

    experiment, other = (SYNTH_EXPERIMENT, EXPERIMENT) if synthetic else (EXPERIMENT, SYNTH_EXPERIMENT)
    redo = f"give another --workdir, or remove {wd} to start again"
    source = open_sources([tracking], None, SourceOptions(experiments=(experiment,)))[0].source
    store = Store(str(wd / "store"))
    pairs: set[tuple[str, str]] = set()
    if store.exists():
        rows = store.to_pandas(columns=["source", "experiment"]).drop_duplicates()
        pairs = {(str(s), str(e)) for s, e in rows.itertuples(index=False)
                 if not pd.isna(e) and e in (EXPERIMENT, SYNTH_EXPERIMENT)}
        # a store no demo made (`--workdir .` in a project whose store is ./store): the demo added
        # its models to the user's, reported them together and took over the refits beside it
        foreign = sorted({str(s) for s in rows["source"].dropna() if str(s) != TIMM_SOURCE})
        if not pairs and foreign:
            raise UserError(f"--workdir {workdir}: {wd / 'store'} is a store that no demo made (it holds rows of "
                            f"{foreign[0]!r}{f' and {len(foreign) - 1} more sources' if len(foreign) > 1 else ''}); "
                            "the demo would add its models to them and report them together; give the demo a "
                            "directory of its own (another --workdir)")
    if any(e == other for _, e in pairs):
        made_by = "meta-study demo" + ("" if synthetic else " --synthetic")
        raise UserError(f"--workdir {workdir}: holds the results of `{made_by}`, which this demo's report would mix "
                        f"with its own models; {redo}")
    moved = sorted(s for s, _ in pairs if s != source)
    if moved:
        raise UserError(f"--workdir {workdir}: its store holds the demo's runs ingested from another MLflow database "
                        f"({moved[0]}: a workdir moved or copied from there?), which this demo would ingest again "
                        f"and count twice; {redo}")
    stored = (source, experiment) in pairs
    db = (wd / "mlflow.db").exists()   # none: nothing to ask (a fresh workdir makes no database here)
    if synthetic:
        logged = db and synthetic_logged(tracking)
        if stored and not logged:
            raise UserError(f"--workdir {workdir}: its store holds simulated runs that its MLflow database no longer "
                            f"has; logging them again would put every model in the store twice; {redo}")
        return logged
    if not (wd / "ray" / "demo").exists() and (stored or (db and _trained_runs(tracking))):
        raise UserError(f"--workdir {workdir}: holds the models of an earlier demo whose sweep state ({wd / 'ray'}) "
                        f"is gone; training again would report both sets of models; {redo}")
    if (wd / "ray" / "demo").exists():
        # a workdir moved or copied before its first ingest (a demo stopped while it trained): the
        # sweep's record names the old MLflow database, and the runner's refusal told the user to
        # "pass --tracking-uri", which the demo has no option for
        from .mlflow_client import safe_uri
        from .tune.state import StateDir

        record = StateDir(str(wd / "ray" / "demo")).read_record()
        if record is not None and record.tracking_uri != safe_uri(tracking):
            raise UserError(f"--workdir {workdir}: its sweep state ({wd / 'ray' / 'demo'}) logs to another MLflow "
                            f"database ({record.tracking_uri}: a workdir moved or copied from there?); {redo}")
    return None


def refuse_unreadable_database(wd: Path, workdir: str, tracking: str) -> None:
    """Refuse a ``--workdir`` whose ``mlflow.db`` MLflow cannot open (not a database, damaged, or
    made by a newer MLflow), in one line before anything is done: it was a traceback of
    SQLAlchemy's or alembic's. Costs one MLflow query.

    Raises:
        UserError: one line naming ``--workdir``, the database, MLflow's reason and what to do.
    """
    from .errors import UserError
    from .mlflow_client import mlflow_client

    try:
        mlflow_client(tracking).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - whatever MLflow, SQLAlchemy or alembic raise: one line
        why = " ".join((str(e).strip().splitlines() or [type(e).__name__])[0].split())
        why = re.sub(r"^\([\w.]+\)\s*", "", why)[:200]    # SQLAlchemy's "(sqlite3.DatabaseError) " prefix
        raise UserError(f"--workdir {workdir}: MLflow cannot open its database {wd / 'mlflow.db'} ({why}); "
                        f"give another --workdir, or remove {wd} to start again") from None


def _trained_runs(tracking: str) -> bool:
    """Whether the MLflow database holds a trial run of the demo's sweep."""
    from .mlflow_client import mlflow_client

    client = mlflow_client(tracking)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return exp is not None and bool(client.search_runs([exp.experiment_id], max_results=1,
                                                       filter_string="tags.`meta_study.role` = 'trial'"))


def _ui_url(tracking: str, experiment: str) -> str:
    """The local MLflow UI's address of the demo's runs, in its model-training view."""
    from .mlflow_client import experiment_url, mlflow_client

    exp = mlflow_client(tracking).get_experiment_by_name(experiment)
    ui = "http://127.0.0.1:5000"
    return (experiment_url(tracking, exp.experiment_id, ui=ui) or ui) if exp is not None else ui


class _Steps:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.log, self.n = log, 0

    def __call__(self, what: str) -> "_Steps":
        self.n += 1
        self.what = what
        return self

    def __enter__(self) -> None:
        self.t = time.monotonic()
        self.log(f"[{self.n}] {self.what} ...")

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.log(f"    ok ({time.monotonic() - self.t:.0f} s)")


def examples_dir() -> Path | None:
    """The repository's ``examples/`` (the working directory's, else the one beside this package,
    else the one of the checkout it was installed from), when it holds the timm results and their
    mapping; None for an install without them."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1], installed_from()):
        d = base / "examples" if base is not None else None
        if d and (d / "data" / "timm" / "results-imagenet.csv").is_file() and (d / "mappings" / "timm_wide.yaml").is_file():
            return d
    return None


def installed_from() -> Path | None:
    """The local directory this meta-study was installed from (``pip install /path/to/clone``,
    not editable: the package is a copy in site-packages, without ``examples/``), from the
    install's ``direct_url.json`` (PEP 610); None for an install from an index, a wheel or a URL."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlsplit

    try:
        info = json.loads(metadata.distribution("meta-study").read_text("direct_url.json") or "{}")
    except Exception:  # noqa: BLE001 - no record, not installed, unreadable: nothing to look in
        return None
    url = urlsplit(str(info.get("url", ""))) if isinstance(info, dict) and "dir_info" in info else None
    return Path(unquote(url.path)) if url is not None and url.scheme == "file" and url.path else None


def no_examples_line(store: Any, own_sources: set[str]) -> str:
    """The demo's line when it found no ``examples/`` (:func:`examples_dir`): the shipped timm
    results were not ingested, what the report then holds (``store``'s sources besides the demo's
    MLflow database's, ``own_sources``: an earlier demo's timm rows stay there), and how to add them.
    It said "not found beside this install: only the demo's own models are analysed", with no
    way to add them, also beside a store that held them."""
    others: list[str] = []
    if store.exists():
        sources = store.to_pandas(columns=["source"])["source"].dropna().astype(str).unique()
        others = sorted(s for s in sources if s not in own_sources)
    holds = ("the report holds the demo's own models only; to analyse them beside ~1,550 public ImageNet models, "
             "run the demo from the root of a meta-study checkout" if not others else
             f"the report holds the demo's models and the rows of {', '.join(others[:3])}"
             f"{f' and {len(others) - 3} more sources' if len(others) > 3 else ''} that an earlier ingest left in "
             "its store, as they were then")
    return (f"(the shipped timm results were not ingested: no examples/data/timm in the working directory "
            f"({Path.cwd()}) nor beside the installed meta-study; {holds})")


def held_out_verdict(rmse: float, flat: float, held_out: bool, tolerance_pt: float | None = None) -> str:
    """One held-out check's verdict: "right" only within :data:`~meta_study.report.RIGHT_WITHIN`
    points (the report judges its ``held_out`` answers by the same measure) and at or below the
    flat guess's error (an answer that lost to "no further gain" is not right, however close); the
    report's ``held_out`` warning said beside it. ``tolerance_pt``: the back-test error (points) a
    trusted answer was trusted at, where known (:func:`trust_tolerance_pt`)."""
    from .report import RIGHT_WITHIN, beats_flat

    near, beat = rmse <= RIGHT_WITHIN, beats_flat(rmse, flat)
    verdict = ("right" if near and beat else
               f"within {RIGHT_WITHIN:g} pt, but worse than the flat guess" if near else
               f"MISSED (more than {RIGHT_WITHIN:g} pt off)" + ("" if beat else ", worse than the flat guess"))
    # the flag also marks a trusted answer off by more than its trust tolerance (3 pt), one that is
    # "right" here (within 5): "right; the report flags it held_out" read as two verdicts at odds,
    # and "right within 5 pt, but off by more than the tolerance its back-tests were trusted at"
    # named neither tolerance's number
    if held_out and near and beat:
        tol = f"its {tolerance_pt:g} pt" if tolerance_pt is not None else "its"
        return f"right (within {RIGHT_WITHIN:g} pt), but off by more than {tol} trust tolerance; the report flags it held_out"
    return verdict + ("; the report flags it held_out" if held_out else "")


def less_precise_note(n_loose: int, tolerance_pt: float | None) -> str:
    """The held-out check's count of right answers qualified by the ``n_loose`` of them the report
    flags ``held_out`` (within :data:`~meta_study.report.RIGHT_WITHIN` points and no worse than the
    flat guess, but off by more than the trust tolerance, ``tolerance_pt`` where known), in the
    report's words (:func:`~meta_study.report.held_out_words`: "right, but less precise than
    trusted"), or "" where there are none. "5 of 5 trusted answers right" stood beside a report
    that said 3 of them were "contradicted by the newest models"."""
    if not n_loose:
        return ""
    tol = f"{tolerance_pt:g} pt " if tolerance_pt is not None else ""
    them, their = ("it", "its") if n_loose == 1 else ("them", "their")
    return (f", {n_loose} of them less precise than trusted (off by more than {their} "
            f"{tol}trust tolerance; the report flags {them} held_out)")


def trust_tolerance_pt(results: Path) -> float | None:
    """The back-test error (points) the refit in ``results`` trusted an answer at: its
    ``refit.json``'s ``options.tolerance`` (a fraction); None where it does not say (a results
    directory no refit made)."""
    import json

    try:
        tol = json.loads((results / "refit.json").read_text())["options"]["tolerance"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return round(100 * float(tol), 6) if isinstance(tol, (int, float)) and math.isfinite(tol) else None


def answer_summary(results: Path) -> str:
    """The report's one line across groups (:func:`~meta_study.analysis.answers.payoff_summary`)
    from a results directory's ``fits.parquet``: what the trusted answers say more US accuracy
    buys. Costs one read of the fits."""
    import pandas as pd

    from .analysis.answers import payoff_summary

    fits = pd.read_parquet(results / "fits.parquet")
    return payoff_summary(fits[fits["headline"].astype(bool)].to_dict("records"))


def held_out_check(results: Path) -> list[str]:
    """Per trusted group of a results directory: the headline against the frontier of the models
    above the hold-out line (which no part of the fit saw), beside the flat guess; each line says
    whether the answer was right (:func:`held_out_verdict`: within :data:`~meta_study.report.RIGHT_WITHIN` points and
    no worse than the flat guess) and whether the report flags it ``held_out``, and a last line
    counts them. A trusted answer can miss: trust is a back-test record, not a guarantee."""
    import pandas as pd

    from .analysis import predict_fit, predict_interval
    from .analysis.answers import flags, level_pct, pct, row_level
    from .analysis.selection import target_frontier
    from .explorer import KEYS, group_key, points_by_group
    from .report import RIGHT_WITHIN, beats_flat

    fits = pd.read_parquet(results / "fits.parquet")
    points = points_by_group(pd.read_parquet(results / "points.parquet"))
    heads = fits[fits["headline"] & fits["trusted"]]
    tolerance = trust_tolerance_pt(results)
    out: list[str] = []
    checked: list[tuple[bool, bool, bool]] = []
    for r in heads.to_dict("records"):
        pts = points.get(group_key(r[c] for c in KEYS))
        if pts is None:
            continue
        us, ds = pts["us_accuracy"].to_numpy(float), pts["ds_accuracy"].to_numpy(float)
        held = us > float(r["holdout_threshold"])
        if not held.any():
            continue
        tx, ty = target_frontier(us[held], ds[held])
        pred = predict_fit(r, tx)
        lo, hi = predict_interval(r, tx)
        rmse = 100 * float(np.sqrt(np.mean((pred - ty) ** 2)))
        flat = 100 * float(np.sqrt(np.mean((float(r["flat"]) - ty) ** 2)))
        # a row without an interval (its back-tests hit exactly) read "0 of 9 inside the 90%
        # interval: right"; named at the level the row's intervals were made at (a results
        # directory fitted at SelectionOptions(level=0.5) read "inside the 90% interval" of 50% ones)
        has_iv = np.isfinite(lo) & np.isfinite(hi)
        L = level_pct(row_level(r))
        inside = (f"{int(np.sum((ty >= lo) & (ty <= hi) & has_iv))} of {int(has_iv.sum())} inside the {L} interval"
                  if has_iv.any() else f"no {L} interval to check them against")
        shots = "" if pd.isna(r["shots"]) else f", {int(r['shots'])}-shot"
        flagged = any(label == "held_out" for label, _ in flags(r.get("warnings")))
        checked.append((rmse <= RIGHT_WITHIN, beats_flat(rmse, flat), flagged))
        n_held = int(held.sum())
        out.append(f"{r['us_task']} -> {r['ds_task']}{shots}: {n_held} model{'s' if n_held != 1 else ''} above "
                   f"{pct(r['holdout_threshold'])} US hidden from the fit; at their frontier ({tx.size} points, up to "
                   f"{pct(tx.max())} US) the prediction is off by {rmse:.1f} pt RMSE (flat guess {flat:.1f} pt), "
                   f"{inside}: {held_out_verdict(rmse, flat, flagged, tolerance)}")
    if not out and len(heads):
        # trusted groups none of whose models are above the hold-out line ("no trusted group" beside
        # a report that counted them trusted)
        out.append(f"{len(heads)} trusted group{'s' if len(heads) != 1 else ''} ({len(fits[fits['headline']])} groups), "
                   "none with models above its hold-out line: nothing to check against hidden models")
    elif not out:
        out.append(f"no trusted group ({len(fits[fits['headline']])} groups): nothing to check against hidden models")
    else:
        n = len(checked)
        n_right = sum(near and beat for near, beat, _ in checked)
        n_near, n_beat = sum(c[0] for c in checked), sum(c[1] for c in checked)
        n_flagged = sum(c[2] for c in checked)
        n_loose = sum(near and beat and flagged for near, beat, flagged in checked)
        # what "right" and "the flat guess" mean said once, here; why each was flagged is on its own line
        out.append(f"{n_right} of {n} trusted answers right about the models they did not see (within "
                   f"{RIGHT_WITHIN:g} pt RMSE, and no worse than the flat guess: no gain past the best DS accuracy the fit saw)"
                   f"{less_precise_note(n_loose, tolerance)}; "
                   f"{n_near} of {n} within {RIGHT_WITHIN:g} pt, {n_beat} of {n} no worse than the flat guess; "
                   f"{n_flagged} of {n} flagged held_out in the report"
                   # the report counts them all: "2 of 2 trusted answers" beside a page with 3 trusted
                   + (f"; {len(heads) - n} more trusted with no model above the hold-out line to check"
                      if len(heads) > n else ""))
    return out


#: Seconds between step [1]'s progress lines while the demo's models train (~10 lines in the
#: ~200 s its 18 models take on 2 cores).
PROGRESS_EVERY_S = 20.0


def progress_line(p: "SweepProgress", seconds: float) -> str:
    """Step [1]'s line while its models train, ``seconds`` into the step:
    "  7 of 18 models trained, 2 training (92 s)" (", 1 failed" where a trial failed)."""
    more = ([f"{p.running} training"] if p.running else []) + ([f"{p.errored} failed"] if p.errored else [])
    return f"  {p.finished} of {p.total} models trained{''.join(', ' + m for m in more)} ({seconds:.0f} s)"


def _train(wd: Path, tracking: str, serial: bool, log: Callable[[str], None] = print) -> int:
    from .errors import UserError
    from .tune.runner import SweepOptions, run_sweep, sweep_progress

    storage = wd / "ray"
    options = SweepOptions(
        smoke=True, tracking_uri=tracking, experiment=EXPERIMENT, storage_path=str(storage), name="demo",
        cpus_per_trial=1.0, quiet=True,
        address="local",                           # its own Ray, never a cluster `ray start` left running
        resume=(storage / "demo").exists(),        # a second demo reuses the trained models,
        allow_code_change=True,                    # also after an upgrade of meta-study (recorded)
        max_concurrent=1 if serial else None)
    done = finished_sweep(storage / "demo", tracking, options) if options.resume else None
    if done is not None:
        return done
    if options.resume and serial:
        refuse_serial_resume(storage / "demo", wd)
    t0 = time.monotonic()
    try:
        # a line every PROGRESS_EVERY_S while the models train: step [1] said nothing for ~200 s
        with sweep_progress(lambda p: log(progress_line(p, time.monotonic() - t0)), every_s=PROGRESS_EVERY_S):
            res = run_sweep(_sweep_spec(), options)
    except UserError as e:
        if "the search space of sweep" not in str(e):
            raise
        # a demo trained by a meta-study whose demo sweep searched another space: Tune would go on
        # with the old one, and the refusal's advice (another --name) is no option of the demo's
        # (removing WORKDIR/ray alone trained 18 more models beside the old ones in MLflow and the
        # store, and the report held both: refuse_mixed_workdir now refuses that)
        raise UserError(f"--workdir {wd}: its models were trained by another version of the demo's sweep (another "
                        f"search space); give a new --workdir, or remove {wd} to train them again") from None
    if res.stop_signal:
        # Ctrl-C (or SIGUSR1) while trials trained: Tune stops them and returns, as at a sweep's
        # end; the demo went on to ingest, refit and report a part of its sweep (exit 0). It stops
        # as an interrupted command does (exit 130: "meta-study: aborted"); the next demo resumes
        _raise_stop(res.stop_signal, res.finished, res.trials, log)
    if res.errored:
        raise DemoStepFailed(f"{res.errored} demo trial(s) failed; their errors are in {res.experiment_dir}")
    if res.unsent:
        # a flush gave up: operations the runs need (final metrics, run ends) are in the sweep's
        # spool, not in MLflow; ingest took the runs MLflow held and the report lacked the rest
        raise DemoStepFailed(f"--workdir {wd}: the demo's sweep could not log all of its runs to {tracking} (the "
                             "line above says why); nothing was ingested; run the demo again to send the rest")
    if res.dropped:
        # MLflow refused operations for good (nothing spooled to send again): runs the report would
        # lack, said before any ingest, as the sweep itself says (exit 1)
        raise DemoStepFailed(f"--workdir {wd}: MLflow ({tracking}) refused {res.dropped} operation(s) of the demo's "
                             "sweep for good (the lines above say which); nothing was ingested")
    if res.unreconciled:
        # the end-of-sweep check of MLflow's runs against Tune's record could not run: runs may be
        # left RUNNING, which ingest does not read; the report would lack them without a word
        raise DemoStepFailed(f"--workdir {wd}: the demo's sweep could not check its runs in {tracking} at its end "
                             f"({res.unreconciled}); nothing was ingested; run the demo again once MLflow answers")
    return res.finished


def refuse_serial_resume(exp_dir: Path, wd: Path) -> None:
    """Refuse ``demo --serial`` on a sweep that a demo without it started and was stopped in (Ctrl-C),
    in the demo's words: Tune resumes a sweep with the concurrency it started with, and the runner's
    refusal named ``--resume``, ``--max-concurrent`` and ``--name``, none of them the demo's options.
    A record that does not say (an older one) or says one at a time resumes as before.

    Raises:
        UserError: one line naming ``--workdir`` and what to run instead.
    """
    from .errors import UserError
    from .tune.state import StateDir

    try:
        record = StateDir(str(exp_dir)).read_record()
    except UserError:
        return              # the runner's resume says what is wrong with it
    settings = record.settings if record is not None else {}
    if "max_concurrent" in settings and settings["max_concurrent"] != 1:
        raise UserError(f"--workdir {wd}: its sweep was stopped before its end and was started without --serial; a "
                        "sweep resumes as it was started (Tune keeps how many trials run at once): run the demo "
                        "again without --serial, or give another --workdir to train one trial at a time")


def _raise_stop(signal_name: str, finished: int, trials: int, log: Callable[[str], None]) -> None:
    """End the demo for the stop its sweep met (``SweepResult.stop_signal``), after a line of what
    it trained: a KeyboardInterrupt for SIGINT (the CLI's one line ``meta-study: aborted``, exit
    130), :class:`~.errors.Terminated` for another signal (SIGUSR1, Tune's other stop: exit 128 +
    its number)."""
    import signal

    from .errors import Terminated

    log(f"  interrupted ({signal_name}) with {finished} of {trials} models trained; nothing was ingested: run the "
        "demo again to go on (finished trials are not trained again)")
    signum = getattr(signal.Signals, signal_name, None) if signal_name.startswith("SIG") else None
    if signal_name == "SIGINT" or signum is None:
        raise KeyboardInterrupt
    raise Terminated(int(signum))


def finished_sweep(exp_dir: Path, tracking: str, options: "SweepOptions") -> int | None:
    """The trained models of the demo's sweep at ``exp_dir`` when it already ran to its end: its
    record names this MLflow database and experiment and the demo's search space, and its parent
    run is FINISHED with every trial finished and none errored. A resume of such a sweep started
    Ray and Tune to train nothing (27-42 s of a second demo's 2 minutes; 3 s now); None: run the sweep (a
    resume goes on, a sweep of another search space is refused, in the runner's words)."""
    from .errors import UserError
    from .mlflow_client import mlflow_client, safe_uri
    from .tune.runner import SPACE_KEY, space_fingerprint
    from .tune.state import StateDir

    try:
        record = StateDir(str(exp_dir)).read_record()
    except UserError:
        return None
    if (record is None or record.experiment != EXPERIMENT or record.tracking_uri != safe_uri(tracking)
            or record.settings.get(SPACE_KEY) != space_fingerprint(_sweep_spec().space(options))):
        return None
    try:
        run = mlflow_client(tracking).get_run(record.parent_run_id)
    except Exception:  # noqa: BLE001 - a parent run gone or unreadable: the runner's resume says what is wrong
        return None
    m = run.data.metrics
    trials, finished = m.get("sweep/trials", 0.0), m.get("sweep/finished", -1.0)
    if (run.info.status == "FINISHED" and trials > 0 and finished == trials and not m.get("sweep/errored")
            and not m.get("sweep/eval_failed")):
        return int(finished)
    return None


def report_title(synthetic: bool) -> str:
    """The title of the demo's report page (and of its MLflow artifact): the refit job's page is
    "meta-study refit", which named no demo."""
    return f"meta-study demo{' --synthetic' if synthetic else ''}: report"


def refit_config(wd: Path, store: Path, tracking: str, serial: bool, synthetic: bool = False) -> "RefitConfig":
    """The demo's refit of ``store`` into ``wd``: the defaults, but for what the comments say."""
    from .analysis.fitting import FitOptions
    from .analysis.bootstrap import BootstrapOptions
    from .analysis.sensitivity import SensitivityOptions
    from .refit import RefitConfig

    fit = FitOptions()                          # the defaults: hide the top 20% of each group's models
    # the demo's one choice of its own: 300 bootstrap resamples (the refit's 1,000 take longer than
    # the rest of the demo together), and figures for its first 24 groups
    return RefitConfig(store=str(store), out=str(wd), tracking_uri=tracking, fit=fit,
                       sensitivity=SensitivityOptions(fit=fit), bootstrap=BootstrapOptions(samples=300, fit=fit),
                       use_ray=not serial, max_group_figures=24, address="local", title=report_title(synthetic))


def _refit(wd: Path, store: Path, tracking: str, serial: bool, synthetic: bool = False):
    from .refit import refit

    cfg = refit_config(wd, store, tracking, serial, synthetic)
    res = refit(cfg, log=lambda m: None)
    if res.status == "noop":  # nothing changed since the last demo: point at its report
        from .refit import previous_refit

        prev_dir, _ = previous_refit(cfg.out)
        res.version_dir = str(prev_dir) if prev_dir else None
    return res


# --------------------------------------------------------------------------------------------
# The simulated meta-study
# --------------------------------------------------------------------------------------------


def synthetic_runs(n_models: int = 240, seed: int = 0) -> list[dict]:
    """Simulated models: each a run with US accuracy and few-shot DS accuracies below a frontier
    that follows the task's known law (SYNTH_LAWS); more shots move the frontier up a little."""
    from .schema import ds_metric_key, us_metric_key

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_models):
        us = float(rng.uniform(0.35, 0.93))
        metrics = {us_metric_key("sim_up"): us}
        for task, (k, a, c) in SYNTH_LAWS.items():
            for shots in SYNTH_SHOTS:
                boost = 1.0 - 0.04 * math.log(shots)          # more shots: smaller error
                frontier = 1.0 - boost * (k * (1.0 - us) ** a + c)
                gap = float(rng.exponential(0.04))            # most models sit below the frontier
                metrics[ds_metric_key(task, shots)] = float(np.clip(frontier - gap, 0.0, 1.0))
        family = ("vit", "mixer", "resnet")[i % 3]
        out.append({"metrics": metrics, "params": {"model_name": f"{family}_sim_{i % 7}", "seed": i,
                                                    "lr": 8e-4, "head_wd": float(rng.choice([0.0, 0.01, 0.1]))},
                    "tags": {"researcher": "simulator", "arch_family": family}})
    return out


def synthetic_logged(tracking_uri: str) -> bool:
    """Whether the simulated runs are in MLflow already, every one of them FINISHED (an earlier
    demo logged them). A demo interrupted while it logged them left some (132 of 240, say): the
    next one said "reused the runs of an earlier demo" and reported on those alone, every time."""
    from .mlflow_client import mlflow_client

    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(SYNTH_EXPERIMENT)
    return (exp is not None and getattr(exp, "lifecycle_stage", "active") != "deleted"
            and _synthetic_seeds() <= _logged_seeds(client, exp.experiment_id))


def _synthetic_seeds() -> set[str]:
    """The ``seed`` params of :func:`synthetic_runs`, as MLflow stores them (one per run)."""
    return {str(r["params"]["seed"]) for r in synthetic_runs()}


def _logged_seeds(client: Any, exp_id: str) -> set[str]:
    """The ``seed`` params of the FINISHED runs of the simulated experiment ``exp_id`` (one query)."""
    runs = client.search_runs([exp_id], filter_string="attributes.status = 'FINISHED'", max_results=10_000)
    return {r.data.params["seed"] for r in runs if "seed" in r.data.params}


def synthetic_step(tracking_uri: str, *, logged: bool | None = None) -> str:
    """Step [1]'s line of ``demo --synthetic``: what :func:`log_synthetic` will do (a second demo
    said "logged to MLflow" where it reused the first one's runs and logged nothing). ``logged``:
    :func:`synthetic_logged`'s answer when the caller has it (None: ask MLflow)."""
    if synthetic_logged(tracking_uri) if logged is None else logged:
        return "simulated meta-study: reused the runs of an earlier demo, already in MLflow (nothing logged)"
    return "simulated meta-study logged to MLflow (known law per task)"


def log_synthetic(tracking_uri: str, *, logged: bool | None = None) -> int:
    """Log the simulated runs to MLflow once (a second demo finds them there). ``logged``:
    :func:`synthetic_logged`'s answer when the caller has it (None: ask MLflow; the demo asked
    it twice, for the step's line and here)."""
    from mlflow.entities import Metric, Param, RunTag

    from .mlflow_client import mlflow_client
    from .mlflow_client import get_or_create_experiment

    client = mlflow_client(tracking_uri)
    exp = get_or_create_experiment(client, tracking_uri, SYNTH_EXPERIMENT)   # refuses a deleted one
    runs = synthetic_runs()
    if synthetic_logged(tracking_uri) if logged is None else logged:
        return len(runs)
    # the runs an interrupted demo finished are kept, the rest logged: logging all 240 again put
    # its models in the store twice. One it left RUNNING (killed mid-run) is ended KILLED, which
    # ingest never reads, and logged again
    have = _logged_seeds(client, exp)
    for r in client.search_runs([exp], filter_string="attributes.status = 'RUNNING'", max_results=10_000):
        client.set_terminated(r.info.run_id, status="KILLED")
    now = int(time.time() * 1000)
    for r in runs:
        if str(r["params"]["seed"]) in have:
            continue
        run = client.create_run(exp, tags=r["tags"])
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in r["metrics"].items()],
                         params=[Param(k, str(v)) for k, v in r["params"].items()],
                         tags=[RunTag("meta_study.role", "simulated")])
        client.set_terminated(run.info.run_id)
    return len(runs)


def _us_or_never(u: float, unit: str = " US") -> str:
    """A stop-paying US accuracy (fraction) as the comparison prints it, "80.0% US"; "never" for inf
    (:func:`~meta_study.analysis.payoff.stop_paying_us`: it still pays at 100% US), "none" for NaN."""
    if math.isfinite(u):
        return f"{100 * u:.1f}%{unit}"
    return "never" if u == math.inf else "none"


def _compare_known_laws(results: Path, log: Callable[[str], None]) -> None:
    """Each simulated task's known law against the report's own headline rows (``fits.parquet``
    of the refit's results directory, 10 shots, the top 20% of models held out as the report
    says): the truth at +1 and +3 US points and at the tested horizon inside the 90% interval that
    :func:`~meta_study.analysis.predict_interval` gives for that row (the interval the report
    shows), and where a stop-paying point is stated, the true one inside its interval. The trust
    word is the row's. (A separate fit with every model visible printed "trusted" and intervals
    beside a report that said "not trusted", at other US points.)"""
    import pandas as pd

    from .analysis import predict_fit, predict_interval
    from .analysis.answers import pct
    from .analysis.laws import LawFit
    from .analysis.payoff import stop_paying_us
    from .analysis.selection import PLUS_POINTS

    fits = pd.read_parquet(results / "fits.parquet")
    heads = fits[fits["headline"].astype(bool) & (fits["shots"] == 10) & fits["ds_task"].isin(list(SYNTH_LAWS))]
    log("  the known laws against the headline rows of the report (10 shots; its top 20% of models held out; "
        "truth inside the 90% interval?):")
    for r in heads.sort_values("ds_task", key=lambda s: s.map(list(SYNTH_LAWS).index)).to_dict("records"):
        k, a, c = SYNTH_LAWS[r["ds_task"]]
        boost = 1.0 - 0.04 * math.log(10)
        truth = LawFit("eq1", {"k": boost * k, "alpha": a, "e_ir": boost * c}, math.nan, 0, "ok")
        best, hus, trusted = float(r["best_us"]), float(r["horizon_us"]), bool(r["trusted"])
        checks = [(f"+{p} pt", best + p / 100.0) for p in PLUS_POINTS[:2] if best + p / 100.0 <= 1.0]
        checks.append(("horizon", float(r["predict_us"])))
        parts = []
        for name, u in checks:
            if not (math.isfinite(u) and 0.0 <= u <= 1.0):
                continue
            answer = float(predict_fit(r, [u])[0])
            lo, hi = (float(v[0]) for v in predict_interval(r, [u]))
            if not (math.isfinite(answer) and math.isfinite(lo) and math.isfinite(hi)):
                continue
            t = float(truth.predict_accuracy(np.array([u]))[0])
            # a point only where the report states one: a trusted row within the tested horizon
            # ("answer 87.2%" for a group whose report answer is the interval alone)
            said = trusted and math.isfinite(hus) and u <= hus + 1e-12
            point = f", answer {100 * answer:.1f}% in" if said else " in"
            parts.append(f"{name} ({pct(u)} US): truth {100 * t:.1f}%{point} "
                         f"[{100 * lo:.1f}, {100 * hi:.1f}] {'yes' if lo <= t <= hi else 'NO'}")
        if bool(r["stop_paying_supported"]):
            # at the threshold the row's point was found with; against the laws' spread, which the
            # report says as "(spread of the laws: a-b)", not a 90% interval (the header's question),
            # an upper end of inf being "past the data" ("in [80.0, inf]" under "inside the 90% interval?")
            # a truth of inf never stops paying (a law with alpha < 1): "never", not "inf% US" (with
            # NaN, payoff's "never" before, it read "nan% US"), inside a spread that ends past the data
            thr = float(r.get("payoff_threshold", math.nan))
            t = stop_paying_us(truth, thr if math.isfinite(thr) else 0.1)
            lo, hi = float(r["stop_paying_lo"]), float(r["stop_paying_hi"])
            ok = lo <= t <= hi
            parts.append(f"stops paying: truth {_us_or_never(t)}, answer {_us_or_never(float(r['stop_paying_us']), '')}, "
                         f"in the laws' spread (no 90% interval) [{100 * lo:.1f}, "
                         f"{'past the data' if hi == math.inf else f'{100 * hi:.1f}'}] {'yes' if ok else 'NO'}")
        trust = "trusted" if trusted else f"not trusted: {str(r['trust_reason']).split(' (')[0]}"
        log(f"    {r['ds_task']:5s} ({trust}): " + ("; ".join(parts) or "no usable fit, no interval to check"))
