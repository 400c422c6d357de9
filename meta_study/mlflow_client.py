"""MLflow helpers every part shares (sweeps, the demo, refits), with meta-study's defaults: one
client, where a sqlite store keeps artifacts, experiments tagged as model training, and UI
addresses that open on their runs (:func:`experiment_url`). Nothing
here imports Ray, so the core install (no ``ray[tune]``) publishes refits too.

MLflow 3 sends usage telemetry from a background thread, and that thread sets and unsets an
environment variable while other threads may be iterating ``os.environ`` (``urllib`` does, for
proxies), which fails intermittently with ``KeyError``. A lab's tracking tool should not phone
home unasked either, so telemetry is off unless the user set ``MLFLOW_DISABLE_TELEMETRY`` themselves.
The "View run at ..." lines that ``set_terminated`` prints (one extra request each) are off too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import urllib.parse
from typing import Any, Iterator


def safe_uri(uri: str) -> str:
    """The URI without user info, query or fragment: what may appear in the store and in messages.

    ``sqlite:////abs/path.db`` and ``file:///x`` have no host and stay as they are (an empty netloc
    must not swallow a slash of the path), a ``#`` of their path included: SQLAlchemy and MLflow
    read it as part of the file name, and ``sqlite:////data/run#1/mlflow.db`` and
    ``.../run#2/mlflow.db`` were both ``sqlite:////data/run``, one source name for two databases
    (their rows under one name, the second refused as "another database under the same source
    name"; a store's older names are kept: :func:`~meta_study.ingest.mlflow_runs.fragment_cut_source`).
    A prefixed URL (``mlflow-sql:postgresql://u@h/db``) has its inner URL made safe. User info
    runs to the last ``@`` (:data:`_ANY_USER_INFO`): a password may hold ``@``, ``/``, ``?`` and ``#``.
    """
    uri = without_user_info(uri)
    try:
        p = urllib.parse.urlsplit(uri)
        port = p.port
    except ValueError:
        # malformed (a port out of range, an unclosed IPv6 bracket): urllib's ValueError became a
        # traceback where an error line named the URI; the user info and the query cut as text
        return _USER_INFO.sub("", uri.split("?", 1)[0].split("#", 1)[0])
    if not p.netloc and "://" in p.path:
        return f"{p.scheme}:{safe_uri(uri[len(p.scheme) + 1:])}"   # the inner URL whole: its '#' is its own
    if not p.netloc:
        return uri.split("?", 1)[0]
    host = p.hostname or ""
    if port:
        host = f"{host}:{port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


def shown_uri(uri: str) -> str:
    """The URI as a message shows it: :func:`safe_uri` (no user info, query or fragment), but
    naming what the user typed. A path URI (``sqlite:////data/run#1/mlflow.db``, ``file:///x``)
    keeps a ``#`` of its path (SQLAlchemy and MLflow read it as part of the file name) and an IPv6
    host keeps its brackets (``http://[::1]:5000``): :func:`safe_uri` gave ``sqlite:////data/run``
    and ``http://::1:5000``, and a command a message gave to copy named another database or no
    server. Names stored from :func:`safe_uri` (sources, records) keep the brackets out."""
    uri = without_user_info(uri)
    try:
        p = urllib.parse.urlsplit(uri)
        port = p.port
    except ValueError:   # malformed: as safe_uri shows it
        return safe_uri(uri)
    if not p.netloc and "://" in p.path:
        return f"{p.scheme}:{shown_uri(uri[len(p.scheme) + 1:])}"
    if not p.netloc:
        return uri.split("?", 1)[0]
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


#: A URL's user info (``user:password@`` after ``scheme://``), for a URI urllib cannot parse.
_USER_INFO = re.compile(r"(?<=://)[^/?#]*@")
#: A database URL's user info as SQLAlchemy reads it (``make_url``): the password runs to the first
#: ``@``, a ``/``, ``?`` or ``#`` in it included, where urllib ends the host at the first of those
#: and saw no user info: ``postgresql://u:12/34@h/db`` was no credentials, its password connected
#: and was stored as the source's name, and ``postgresql://u:p#ss@h/db`` was shown as
#: ``postgresql://u:p``. (A database name holding ``@`` after a port reads as user info too: refused.)
#: An http(s) URL is read alike: ``http://u:12/34@h:5000`` was no credentials to urllib (host ``u``,
#: port 12), was not refused, and its password was printed with every line naming the server
#: (requests, too, connects to ``u:12``: the URL never reached ``h``). A ``/``, ``?`` or ``#`` of
#: a password is written ``%2F``, ``%3F``, ``%23``, an ``@`` of a path ``%40``; as typed it is refused.
#: A user name holding ``/`` (``dom/user``, a domain account) ends the authority for urllib and
#: SQLAlchemy alike: ``postgresql://dom/user:pw@h/db`` connected to host ``dom`` (database
#: ``user:pw@h/db``), was no credentials, and was shown and stored whole, its password with it.
#: Read as user info (refused, cut from what is shown); written ``dom%2Fuser`` it is a user name.
_DB_USER_INFO = re.compile(r"^((?:mlflow-sql:)?(?:(?:postgres(?:ql)?|mysql|mssql|mariadb|oracle)(?:\+[^:/@]*)?"
                           r"|https?)://)(?:[^:/@?#]*(?::.*)?|[^/:@?#][^:@?#]*:.*)@", re.IGNORECASE | re.DOTALL)
#: A database URL's user name holding ``/`` without a password (``postgresql://dom/user@h/db``):
#: SQLAlchemy read host ``dom`` and database ``user@h/db``; read as user info, to its first ``@``.
_DB_SLASHED_USER = re.compile(r"^((?:mlflow-sql:)?(?:postgres(?:ql)?|mysql|mssql|mariadb|oracle)(?:\+[^:/@]*)?://)"
                              r"[^:@?#]*/[^:@?#]*@", re.IGNORECASE)
#: What :func:`without_user_info` cuts from any ``scheme://`` URL (a prefix such as ``mlflow-sql:``
#: included): from the ``//`` to the LAST ``@``, where the authority (up to the first ``/``, ``?``
#: or ``#``) holds an ``@`` or a ``:``. A password may hold ``@`` as well as ``/``, ``?`` and ``#``:
#: cut at the first ``@``, ``postgresql://u:p@ss#x@h/db`` was shown and stored as
#: ``postgresql://ss``, a part of its password as the host (and ``ftp://u:pa/ss@h`` whole, a port
#: to urllib). An ``@`` of a path after a port (``http://h:5000/a@b``) is cut too: such a URL is
#: refused as credentials (:func:`has_credentials`) and reads as one; a path's ``@`` is ``%40``.
#: A user name holding ``/`` before a password (``http://dom/user:pw@h``) is cut too (``_DB_USER_INFO``),
#: but only after a host: a URI with none (``sqlite:////data/run:1/x@lab/mlflow.db``, ``file:///a:b/c@d``)
#: has no user info, and its path names an ingested source as it stands.
_ANY_USER_INFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?[A-Za-z][A-Za-z0-9+.-]*://)(?=[^/?#]*[@:]|[^/:@?#][^:@?#]*:.*@).*@",
                            re.DOTALL)


def without_user_info(uri: str) -> str:
    """``uri`` without its user info, up to the last ``@`` (:data:`_ANY_USER_INFO`): also the
    part urllib does not see (a password holding ``/``, ``?``, ``#`` or ``@``)."""
    return _ANY_USER_INFO.sub(r"\1", _DB_SLASHED_USER.sub(r"\1", uri, count=1), count=1)


#: Ports a URL may leave out: ``http://h`` is ``http://h:80``.
DEFAULT_PORTS = {"http": 80, "https": 443}


def source_uri(uri: str) -> str:
    """:func:`safe_uri` in one spelling per tracking server: the name an MLflow source's rows and
    state carry in the store when no name is given. ``http://h:5000``, ``http://h:5000/``,
    ``HTTP://h:5000`` and ``http://h:80/`` against ``http://h`` each name one server; as names they
    were two sources, and one server ingested under both stored every run twice. Scheme lowercased,
    default port and trailing slashes dropped; URIs other than http(s) are :func:`safe_uri`'s."""
    s = safe_uri(uri)
    try:
        p = urllib.parse.urlsplit(s)
    except ValueError:     # malformed (see safe_uri): the client refuses the URI; the name stays as typed
        return s
    scheme = p.scheme.lower()
    if scheme not in DEFAULT_PORTS or not p.netloc:
        return s
    host = p.hostname or ""
    try:
        port = p.port
    except ValueError:     # not a number: the client refuses the URI; the name stays as typed
        return s
    if port and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, host, p.path.rstrip("/"), "", ""))


def has_credentials(uri: str) -> bool:
    """Whether the URI carries a user, a password or a token (in its user info or its query)."""
    if _DB_USER_INFO.match(uri) or _DB_SLASHED_USER.match(uri):
        return True
    try:
        p = urllib.parse.urlsplit(uri)
        user = bool(p.username or p.password)
        q = (p.query or "").lower()
    except ValueError:   # malformed (see safe_uri): the same parts, found as text
        user = bool(_USER_INFO.search(uri.split("?", 1)[0].split("#", 1)[0]))
        q = uri.split("?", 1)[1].lower() if "?" in uri else ""
    return user or "token=" in q or "password=" in q


def refuse_credentials(tracking_uri: str, where: str = "--tracking-uri") -> None:
    """UserError, in one line that does not repeat them, for a tracking URI with credentials in it
    (user info, or a token or password in its query): they would reach process lists, logs,
    records and tracebacks. ``where`` names where the URI came from."""
    from .errors import UserError

    if has_credentials(tracking_uri):
        # MLflow reads its MLFLOW_TRACKING_* variables for http(s) servers only: a database store's
        # password comes from the database client's own (the hint named variables MLflow ignores there)
        scheme = tracking_uri.partition(":")[0].lower()
        if scheme.startswith("postgres"):
            how = "give them through PostgreSQL's client environment (PGUSER, PGPASSWORD or ~/.pgpass)"
        elif scheme.startswith(("mysql", "mssql")):
            how = "serve the database with `mlflow server` (as cluster/ does) and pass that server's address"
        else:
            how = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        shown, why = shown_uri(tracking_uri), ""
        if _hidden_user_info(tracking_uri):
            # user info urllib (and requests) do not see: the URI as it reads, for an '@' of a path
            scheme, _, rest = shown.partition("://")
            shown = f"{scheme}://***@{rest}"
            why = (" (what comes before the '@' reads as user info, a password holding '/', '?' or '#', or a "
                   "user name holding '/', written %2F; an '@' of the path is written %40)")
        raise UserError(f"{where + ' ' if where else ''}{shown}: credentials in the tracking URI are refused{why}; {how}")


def _hidden_user_info(uri: str) -> bool:
    """Whether ``uri`` has user info that only :data:`_DB_USER_INFO` sees (urllib sees none)."""
    if not (_DB_USER_INFO.match(uri) or _DB_SLASHED_USER.match(uri)):
        return False
    try:
        p = urllib.parse.urlsplit(uri)
        return not (p.username or p.password)
    except ValueError:
        return True


def mlflow_client(tracking_uri: str) -> Any:
    """``MlflowClient(tracking_uri)`` with telemetry off by default (see the module doc)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # set_terminated would print "View run ... at ..." and make an extra get_run call to do so
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import logging

    # a new sqlite database printed "Creating initial MLflow database tables..." and "Updating
    # database tables" (INFO) from every process that opened it first: a quiet sweep's driver and
    # its writer. A level the user set for that logger is kept.
    db_log = logging.getLogger("mlflow.store.db.utils")
    if db_log.level == logging.NOTSET:
        db_log.setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


#: How long :func:`unanswered` waits for a tracking server's answer, in seconds (refit's check of
#: its server waits as long, ``refit.CHECK_TIMEOUT_S``): a live server answers one experiment
#: lookup in milliseconds, and a loaded one in a second or two.
PROBE_TIMEOUT_S = 10
#: The experiment :func:`unanswered` looks up: every MLflow server has it (an absent one is an answer too).
_PROBE_EXPERIMENT = "Default"
#: The words of a request that nothing answered (requests' and urllib3's texts -> a few words),
#: as refit's ``--tracking-uri`` check says them: anything else is an answer of some kind.
NO_ANSWER_WORDS = (("timed out", "no answer in time"), ("Connection refused", "connection refused"),
              ("Name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
              ("Temporary failure in name resolution", "unknown host"))


@contextlib.contextmanager
def http_settings(retries: int, timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP settings for the requests inside (MLflow reads them at each request):
    ``retries`` retries 1 s apart, ``timeout_s`` seconds a request. A user's own
    ``MLFLOW_HTTP_REQUEST_*`` settings win."""
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    mine = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(mine)
    try:
        yield
    finally:
        for k in mine:
            os.environ.pop(k, None)


def unanswered(tracking_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why no tracking server answers at an ``http(s)://`` ``tracking_uri``, in a few words
    ("no answer in time", "connection refused", "unknown host"), or None when something answered:
    one experiment lookup, no retry, at most ``timeout_s`` seconds (a user's own
    ``MLFLOW_HTTP_REQUEST_*`` settings win). Any answer counts, an HTTP error too: the caller's own
    requests say what it is. Nothing is asked of another kind of URI (None).

    For a check before long work: a port that takes the connection and never answers kept an
    ingest waiting ~3 minutes (its retries of 60 s reads, which a live server's large search may
    need) before "timed out". The caller's own requests keep their timeouts."""
    if not tracking_uri.lower().startswith(("http://", "https://")):
        return None
    try:
        with http_settings(0, timeout_s):
            mlflow_client(tracking_uri).get_experiment_by_name(_PROBE_EXPERIMENT)
    except Exception as e:  # noqa: BLE001 - any failure: only those of no answer are said
        text = " ".join(str(e).split())
        if re.search(r"error code \d+", text):      # an HTTP status: the server answered
            return None
        return next((why for needle, why in NO_ANSWER_WORDS if needle in text), None)
    return None


def artifact_location(tracking_uri: str, name: str) -> str | None:
    """For a local sqlite tracking store, where an experiment's artifacts go: next to the
    database (MLflow would otherwise use ./mlruns relative to wherever the job runs); None for
    servers, which choose for themselves."""
    import re
    from pathlib import Path

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        if safe in ("", ".", ".."):   # "mlartifacts/.." is the database's own directory
            safe = "_" * max(1, len(safe))
        return (db.parent / "mlartifacts" / safe).resolve().as_uri()
    return None


#: The experiment kind MLflow 2.22-3.x reads from an experiment's tags; meta-study's experiments
#: are model training. MLflow 3.17's UI ignores it (see :func:`experiment_url`) but keeps it, and
#: other versions and tools read it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The UI's query parameter that picks its "Model training" view. MLflow 3.17's UI chooses the
#: view of every experiment from one browser-wide switch ("GenAI" / "Model training" at the top of
#: its sidebar, default GenAI, remembered in the browser's localStorage) or from this parameter,
#: and no longer from the experiment's tag: without it an experiment opens on the GenAI overview
#: (traces, token usage: all empty) and a sweep's parent run sits under "Evaluation runs".
#: Measured in Chromium against `mlflow server` 3.17.2 (tests/test_mlflow_ui.py).
UI_VIEW = "workflowType=machine_learning"


def experiment_url(tracking_uri: str, experiment_id: str, run_id: str | None = None, *,
                   ui: str | None = None) -> str | None:
    """The MLflow UI address of an experiment's runs (or of one run), in the UI's model-training
    view. ``ui``: the UI's base address when the tracking URI is not one (a sqlite file browsed
    with ``mlflow ui``); None when there is no UI to name. Never holds credentials."""
    base = ui or (safe_uri(tracking_uri) if tracking_uri.startswith(("http://", "https://")) else None)
    if base is None:
        return None
    p = urllib.parse.urlsplit(ui or tracking_uri)
    if p.hostname and ":" in p.hostname:
        # an IPv6 address keeps its brackets in an address a browser opens (safe_uri drops them,
        # and the names it gives sources stay as they are): http://::1:5000/#/... opened nothing
        host = f"[{p.hostname}]" + (f":{p.port}" if p.port else "")
        base = urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))
    page = f"experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}/#/{page}?{UI_VIEW}"


def get_or_create_experiment(client: Any, tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, created if absent, tagged as a model-training experiment
    (an existing experiment gets the tag only if it has none: a user's choice is kept)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None and getattr(exp, "lifecycle_stage", "active") == "deleted":
        _refuse_deleted(tracking_uri, exp)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name),
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:  # noqa: BLE001 - another driver created it between the two calls
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        if getattr(exp, "lifecycle_stage", "active") == "deleted":
            _refuse_deleted(tracking_uri, exp)
        return exp.experiment_id


def _refuse_deleted(tracking_uri: str, exp: Any) -> None:
    """UserError, in one line, for an experiment deleted in MLflow: MLflow keeps it by name, and it
    takes no runs (its id was returned, and the first ``create_run`` failed as a traceback)."""
    from .errors import UserError

    raise UserError(f"MLflow experiment {exp.name!r} (id {exp.experiment_id}) at {shown_uri(tracking_uri)} is deleted "
                    f"and takes no runs: restore it with `MLFLOW_TRACKING_URI={shlex.quote(shown_uri(tracking_uri))} mlflow "
                    f"experiments restore --experiment-id {exp.experiment_id}`, or use another experiment name")
