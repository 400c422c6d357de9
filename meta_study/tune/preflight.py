"""Checks before a sweep starts anything: each refusal is one line that says what to pass instead.

- :func:`refuse_secrets`: credentials on the command line (a tracking URI, a storage path or a
  dataset with a user, password or token in it) would reach ``ps``, the job API and the records.
- :func:`check_tracking_uri`: a tracking URI MLflow's client can use (a scheme it knows, a URI that parses).
- :func:`refuse_runtime_env_secrets`: secrets in a job's ``runtime_env`` (``ray job submit
  --runtime-env-json '{"env_vars": {...}}'``), which Ray's job API serves to anyone who can list
  jobs (``ray job list``, the dashboard).
- :func:`check_local_storage`: a local storage path is a directory this process can write.
- :func:`check_script_tree`: a sweep script from a checkout runs that checkout's ``meta_study``.
- :func:`check_dataset_paths`: ``--dataset`` paths exist (refused on our own Ray, a warning on a cluster),
  and no ``--dataset`` takes a built-in task's name (:func:`refuse_builtin_names`).
- :func:`check_searched_tasks`: the tasks a search space gives trials exist, and their metric keys
  are ones MLflow takes (as the fixed config's).
- :func:`default_storage`: no default storage inside a Ray job's working directory (a per-upload
  copy: a code change moves it, and Ray deletes it).
- :func:`plan_session`: what ``--resume``, ``--name`` and ``--experiment`` mean against the sweep
  record in the storage (pure: no Ray, no MLflow).
- :func:`check_storage_on_nodes`: every Ray node that can run a trial reads and writes the storage
  path (needs Ray). A path on the head's disk fails on the other nodes, an object store without
  credentials or endpoint on a node fails there; both are refused before any trial starts.
- :func:`check_trials_fit`, :func:`check_workers_fit`: some node holds a trial (a data-parallel
  trial's worker), and the nodes hold a data-parallel trial's workers together (needs Ray's nodes).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..dirs import missing_dirs, remove_made_dirs
from ..errors import UserError
from .state import SweepRecord, filesystem, is_remote, join

#: Environment variable names that hold secrets (matched anywhere in the name, any case).
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN(?!IZER)|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|API_KEY|SESSION_KEY",
                         re.IGNORECASE)   # not TOKENIZERS_PARALLELISM (Hugging Face's, no secret)
JOB_DIR_MARK = "/runtime_resources/working_dir_files/"
CREDENTIALS_DOC = "docs/cluster.md#object-storage-credentials"
STORAGE_HINT = ("pass --storage-path s3://BUCKET/PATH, gs://BUCKET/PATH or a path every node mounts "
                "(NFS, EFS, Filestore)")


#: Query keys of a pyarrow filesystem URI that hold a secret (``s3://b/p?access_key=..&secret_key=..``:
#: pyarrow reads them, and the path reached the sweep record and the printed summary).
SECRET_QUERY_KEYS = frozenset({"access_key", "secret_key", "session_token"})


def _query_has_secret(uri: str) -> bool:
    """A secret key of :data:`SECRET_QUERY_KEYS` in ``uri``'s query, or a value that is a URI with
    credentials (``?endpoint_override=http://user:pw@minio:9000``)."""
    import urllib.parse

    from ..mlflow_client import has_credentials as uri_has

    query = uri.split("?", 1)[1].split("#", 1)[0] if "?" in uri else ""
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key.lower() in SECRET_QUERY_KEYS and value:
            return True
        if "://" in value and uri_has(value):
            return True
    return False


def has_credentials(uri: str) -> bool:
    """Whether a URI (or ``kind:URI`` dataset spec) carries a user, a password or a token (in its
    user info, or its query: :func:`_query_has_secret`)."""
    from ..mlflow_client import has_credentials as uri_has

    inner = uri.split(":", 1)[1] if re.match(r"^(imagefolder|parquet):", uri) else uri
    return any(uri_has(part) or _query_has_secret(part) for part in inner.split(",") if "://" in part)


def refuse_secrets(*, tracking_uri: str | None, storage_path: str | None,
                   datasets: Mapping[str, str] = {}) -> None:  # noqa: B006 - read only
    """UserError for credentials in any URI given on the command line."""
    from ..mlflow_client import shown_uri

    if tracking_uri:
        from ..mlflow_client import refuse_credentials

        # credentials first: urllib's parse error of http://u:pa/ss@h:5000 quoted the password's
        # first part ("Port could not be cast to integer value as 'pa'")
        refuse_credentials(tracking_uri)
        check_tracking_uri(tracking_uri)     # one that does not parse: one line here, not urllib's traceback
    if storage_path and has_credentials(storage_path):
        raise UserError(f"--storage-path {shown_uri(storage_path)}: credentials in the storage URI are refused (they "
                        f"would be in ps, the job API and every record); give the nodes credentials through their "
                        f"environment or role ({CREDENTIALS_DOC})")
    for name, spec in datasets.items():
        if has_credentials(str(spec)):
            raise UserError(f"--dataset {name}: credentials in the dataset URI are refused; give the nodes "
                            f"credentials through their environment or role ({CREDENTIALS_DOC})")


#: Tracking-store schemes MLflow 3's client takes (its registry), besides plugins' (entry points
#: ``mlflow.tracking_store``); a database scheme may name its driver (``postgresql+psycopg2``).
TRACKING_SCHEMES = frozenset({"http", "https", "databricks", "databricks-uc", "uc", "sqlite", "postgresql", "mysql",
                              "mssql"})
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
TRACKING_URI_HINT = "e.g. http://HOST:5000, https://..., sqlite:///PATH/mlflow.db, postgresql://..., databricks"


def _shown_uri(uri: str) -> str:
    """A URI for a message without its user info, also when it does not parse (``safe_uri`` raises)."""
    from ..mlflow_client import shown_uri, without_user_info
    from ..validation import printable

    try:
        return printable(shown_uri(uri))
    except ValueError:
        return printable(without_user_info(uri.strip()).split("?", 1)[0])   # to the last @ (a password may hold one)


def check_tracking_uri(tracking_uri: str) -> None:
    """A tracking URI MLflow's client cannot use is one line naming ``--tracking-uri``, before Ray
    starts: ``127.0.0.1:5000`` (no scheme: MLflow took it for a directory), ``ftp://x`` (no such
    store), ``http://[::1`` (does not parse), ``http://h:abc`` (no port). They were tracebacks when
    the parent run was created, after Ray had started. A plain path (or ``file://``) is MLflow's
    file store, which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``: refused here
    likewise. Nothing is contacted.

    Raises:
        UserError: one line naming the URI (without credentials) and what is wrong.
    """
    import urllib.parse
    from importlib.metadata import entry_points

    uri = tracking_uri.strip()
    shown = _shown_uri(tracking_uri)
    if not uri:   # "--tracking-uri ' '" was told it is "a plain path"
        raise UserError(f"--tracking-uri {tracking_uri!r}: empty; {TRACKING_URI_HINT}")
    if uri != tracking_uri:
        # the URI goes on verbatim (MLflow, the writer, the sweep record): "http://h:5000 " was a
        # ValueError traceback (its port "5000 "), and " http://h:5000" skipped the reachability
        # check, so a server that was down hung the sweep while MLflow retried
        from ..mlflow_client import without_user_info

        raw = without_user_info(tracking_uri.strip()).split("?", 1)[0]    # as _shown_uri: no user info
        raise UserError(f"--tracking-uri {raw!r}: spaces or line breaks around the URI; give it without them")
    try:
        p = urllib.parse.urlsplit(uri)
        p.port   # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        raise UserError(f"--tracking-uri {shown}: not a valid URI ({e}); {TRACKING_URI_HINT}") from None
    if uri in ("databricks", "databricks-uc", "uc"):      # MLflow's names without a scheme
        return
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*:\d+(/.*)?", uri):
        raise UserError(f"--tracking-uri {shown}: no scheme (MLflow would take it for a directory or an unknown "
                        f"store); a tracking server is http://{shown} (or https://...)")
    scheme = p.scheme.lower()
    scheme = next((db for db in DB_SCHEMES if scheme.startswith(db)), scheme)
    if len(scheme) == 1:      # a Windows drive letter: a path
        scheme = ""
    if scheme in ("http", "https"):
        if not p.hostname:
            raise UserError(f"--tracking-uri {shown}: no host; {TRACKING_URI_HINT}")
        return
    if p.scheme.lower() == "sqlite":
        # sqlite://mlflow.db was SQLAlchemy's ArgumentError traceback; sqlite:// and
        # sqlite:///:memory: a database in each process's memory: the writer's runs in none on disk
        path = p.path.removeprefix("/")
        if p.netloc or not path or path == ":memory:":
            why = (f"a host ({p.netloc}) where SQLAlchemy takes none" if p.netloc else "an in-memory database, "
                   "which nothing is kept in and the sweep's writer process does not share")
            raise UserError(f"--tracking-uri {shown}: {why}; a sqlite file is sqlite:///RELATIVE/mlflow.db or "
                            "sqlite:////ABSOLUTE/mlflow.db (three or four slashes)")
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1"):
            return
        raise UserError(f"--tracking-uri {shown}: a plain path is MLflow's file store, which MLflow 3 refuses unless "
                        "MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///PATH/mlflow.db (or a tracking server, "
                        "http://HOST:PORT)")
    try:
        plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
    except Exception:  # noqa: BLE001 - broken package metadata: the built-in stores only
        plugins = set()
    if scheme not in TRACKING_SCHEMES | plugins:
        raise UserError(f"--tracking-uri {shown}: MLflow has no tracking store for {scheme}:// URIs; "
                        f"{TRACKING_URI_HINT}")


def check_tracking_reachable(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """An http(s) tracking server that answers no TCP connection is one line before Ray starts (the
    sweep hung without a word: MLflow's client retries a refused connection for minutes). A server
    that goes away later is the writer's business: it spools and replays. One connect (to the
    proxy, where the environment's HTTP(S)_PROXY / NO_PROXY send the server's requests) and, for
    plain http, one ``GET /health`` that must get an HTTP answer (any status) within ``timeout_s``.
    A database server (``postgresql://``, ``mysql://``, ``mssql://``) gets one connect too
    (:func:`check_database_answers`), and a sqlite file that exists must be one
    (:func:`check_sqlite_file`): MLflow retries either for ~100 s of warnings before a traceback."""
    import socket
    import urllib.parse

    from ..mlflow_client import shown_uri

    if tracking_uri.lower().startswith("sqlite:"):
        check_sqlite_file(tracking_uri)
        return
    check_database_answers(tracking_uri, timeout_s)
    # any case: MLflow takes HTTP://HOST:PORT as a server (and retried a down one for minutes)
    if not tracking_uri.lower().startswith(("http://", "https://")):
        return
    u = urllib.parse.urlsplit(tracking_uri)
    try:
        port = u.port or (443 if u.scheme.lower() == "https" else 80)
    except ValueError as e:   # a port that is no number: one line, as check_tracking_uri says it
        raise UserError(f"--tracking-uri {_shown_uri(tracking_uri)}: not a valid URI ({e}); "
                        f"{TRACKING_URI_HINT}") from None
    # through the proxy MLflow's client (requests) and the writer take from HTTP(S)_PROXY and
    # NO_PROXY: a server only the proxy reaches was refused ("Name or service not known")
    from requests.utils import get_environ_proxies, select_proxy

    proxy = select_proxy(tracking_uri, get_environ_proxies(tracking_uri))
    host, via = u.hostname or "", ""
    if proxy:
        pu = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        try:
            host, port = pu.hostname or "", pu.port or (443 if pu.scheme.lower() == "https" else 80)
        except ValueError:    # a proxy setting that does not parse: MLflow's own error says it
            return
        via = f" through the proxy {_shown_uri(proxy)} (HTTP_PROXY / HTTPS_PROXY)"
    tls_error = None
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            answer = _http_answer(conn, u, proxy) if u.scheme.lower() == "http" else b"HTTP/"
            if u.scheme.lower() == "https" and not proxy:
                tls_error = _tls_error(conn, u.hostname or host)
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise UserError(f"--tracking-uri {shown_uri(tracking_uri)}: cannot reach the tracking server{via} ({why}); "
                        "is it running, and is the address right?") from None
    if tls_error == TLS_CLOSED:
        answer = b""                      # said as for plain http: took it and closed it
    elif tls_error is not None:
        # a plain-http server given as https:// (or another service on the port): MLflow's client
        # retried the handshake for ~4 minutes in silence, then failed in a line of urllib3's
        raise UserError(f"--tracking-uri {shown_uri(tracking_uri)}: the server there does not speak TLS "
                        f"({tls_error}); a plain HTTP server is http://{u.netloc.rpartition('@')[2]}")
    if not answer.startswith(b"HTTP/"):
        # a `kubectl port-forward` whose pod is gone takes the connection and closes it, and MLflow's
        # client retried that for minutes: the sweep hung as for a server that was down
        why = "closed it without an answer" if not answer else "answered, but not in HTTP"
        raise UserError(f"--tracking-uri {shown_uri(tracking_uri)}: the tracking server{via} took the connection and "
                        f"{why}; is it running, and is the address right?")


#: Default ports of the database servers MLflow keeps runs in (SQLAlchemy's URL schemes).
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_database_answers(tracking_uri: str, timeout_s: float = 10.0,
                           then: str = "is it running, and is the address right?") -> None:
    """A database tracking store (``postgresql+psycopg://db:5432/mlflow``) whose server answers no
    TCP connection within ``timeout_s`` is one line: MLflow's engine check retries it 10 times
    (~100 s of "Operation will be retried" warnings, each connect up to the kernel's ~2 minutes
    for a host that drops packets) and the sweep then ended in SQLAlchemy's traceback. One
    connect, no query, no credentials; a Unix socket (no host, or ``?host=/run/postgresql``) and
    an ODBC data source name (``mssql+pyodbc://DSN``) are the driver's to check.

    Raises:
        UserError: one line naming the URI (without credentials) and the connect's error, then
            ``then`` (the refit says "nothing was refitted").
    """
    import socket
    import urllib.parse

    from ..mlflow_client import shown_uri

    p = urllib.parse.urlsplit(tracking_uri)
    scheme, _, driver = p.scheme.lower().partition("+")
    query = {k.lower() for k, _ in urllib.parse.parse_qsl(p.query, keep_blank_values=True)}
    if scheme not in DB_PORTS or not p.hostname or query & {"host", "hostaddr", "unix_socket", "odbc_connect"}:
        return
    try:
        port = p.port
    except ValueError:
        return                            # not a port (several hosts): the driver says so
    if scheme == "mssql" and driver in ("", "pyodbc") and port is None and "driver" not in query:
        return                            # a data source name, not a host
    try:
        with socket.create_connection((p.hostname, port or DB_PORTS[scheme]), timeout=timeout_s):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise UserError(f"--tracking-uri {shown_uri(tracking_uri)}: no database server answers there ({why}); "
                        f"{then}") from None


#: The first bytes of every SQLite database file (an empty file is a new database too).
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_sqlite_file(tracking_uri: str) -> None:
    """A ``sqlite:///PATH`` tracking URI whose PATH is a directory, or a file that is not a SQLite
    database (``sqlite:////shared/mlflow``, the directory meant for it), is one line: MLflow retried
    opening it for ~100 s of warnings, and the sweep then ended in SQLAlchemy's traceback ("unable
    to open database file", "file is not a database"). A PATH that does not exist yet is fine
    (the sweep makes its directory). Nothing is created or written.

    Raises:
        UserError: one line naming the URI and the path.
    """
    import urllib.parse

    p = urllib.parse.urlsplit(tracking_uri)
    path = p.path.removeprefix("/")       # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
    if p.netloc or not path or path == ":memory:":
        return                            # check_tracking_uri's to refuse
    import stat

    shown = _shown_uri(tracking_uri)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        check_sqlite_dir_writable(shown, path)
        return                            # made by the sweep (a file on the way: the sweep says so)
    except OSError as e:
        raise UserError(f"--tracking-uri {shown}: {path}: {e.strerror or type(e).__name__}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"--tracking-uri {shown}: {path} is a directory, not a sqlite database file; give the file, "
                        f"e.g. sqlite:///{os.path.join(path, 'mlflow.db')}")
    if not stat.S_ISREG(mode):            # a FIFO: open() would wait for a writer
        raise UserError(f"--tracking-uri {shown}: {path} is not a regular file, so not a sqlite database")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise UserError(f"--tracking-uri {shown}: {path} cannot be read ({e.strerror or type(e).__name__})") from None
    if head and head != SQLITE_MAGIC:
        raise UserError(f"--tracking-uri {shown}: {path} is not a sqlite database (another kind of file); give "
                        "the path of MLflow's database file, or of one to be created")
    if not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"--tracking-uri {shown}: {path} is not writable by this user (MLflow writes every run into "
                        "it); give a sqlite file of your own")
    check_sqlite_dir_writable(shown, path)


def _nearest_existing(path: str) -> str:
    """The nearest part of an absolute ``path`` that exists (itself, a parent, or the root)."""
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def check_sqlite_dir_writable(shown: str, path: str) -> None:
    """The directory of a sqlite database ``path`` (or, where it does not exist yet, the nearest
    directory on its way that does) is one this user can write: SQLite creates the file there,
    and its journal beside it at every write. A default database beside a ``--storage-path``
    whose parent is not the user's (``/shared/alice/ray``: ``/shared/mlflow.db``) was ~100 s of
    MLflow's "engine could not be created" warnings, then SQLAlchemy's traceback ("unable to open
    database file"). Something else in the way (a file where a directory goes) is left to the
    caller, which says so.

    Raises:
        UserError: one line naming the URI and the directory.
    """
    target = os.path.dirname(os.path.abspath(path))
    probe = _nearest_existing(target)
    if not os.path.isdir(probe) or os.access(probe, os.W_OK | os.X_OK):
        return
    what = (f"its directory {probe}" if probe == target
            else f"its directory {target} cannot be made: {probe}")
    raise UserError(f"--tracking-uri {shown}: {what} is not writable by this user (SQLite makes the database and "
                    "its journal there); give a sqlite path in a directory of your own, or a tracking server "
                    "(--tracking-uri http://HOST:PORT)")


def _tls_error(conn: Any, hostname: str) -> str | None:
    """Why a TLS handshake on ``conn`` failed, or None when the peer speaks TLS. The certificate
    is not verified here: that is MLflow's own call's, with the CA and client certificate its
    variables name (``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``REQUESTS_CA_BUNDLE``...); only a peer
    that answers no TLS at all (a plain-http server: "wrong version number") is said. A handshake
    that times out is left to MLflow too."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with ctx.wrap_socket(conn, server_hostname=hostname or None, do_handshake_on_connect=False) as tls:
            tls.do_handshake()
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
        return TLS_CLOSED
    except ssl.SSLError as e:
        return (getattr(e, "reason", None) or str(e)).replace("_", " ").lower()
    except OSError:
        return None
    return None


#: :func:`_tls_error`'s answer for a peer that closed the connection in the handshake.
TLS_CLOSED = "closed"


def _http_answer(conn: Any, u: Any, proxy: str | None) -> bytes:
    """The first bytes of the answer to one ``GET .../health`` (MLflow's; any HTTP status will do)
    on ``conn``, b"" when the peer closes without one. A plain-http server only: a TLS handshake
    would need the client's certificates and CA, which MLflow's own call checks."""
    netloc = u.netloc.rpartition("@")[2]
    path = f"{u.path.rstrip('/')}/health"
    target = f"http://{netloc}{path}" if proxy else path     # a proxy takes the absolute URI
    conn.sendall(f"GET {target} HTTP/1.0\r\nHost: {netloc}\r\nConnection: close\r\n\r\n".encode())
    got = b""
    while len(got) < 5:
        try:
            more = conn.recv(5 - len(got))
        except ConnectionResetError:
            return got
        if not more:
            return got
        got += more
    return got


def runtime_env_of_job(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``runtime_env`` a Ray job was submitted with ({} outside a job). Ray hands it to the
    job's driver in ``RAY_JOB_CONFIG_JSON_ENV_VAR``."""
    env = os.environ if environ is None else environ
    raw = env.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError, TypeError):
        return {}


#: Secret-sounding names whose value is a file's path, not a secret: ``*_FILE`` / ``*_PATH`` (as
#: :func:`~.submit.refuse_secret_args` has it) and Google's key-file variable. Pointing the nodes at
#: a mounted credentials file through the runtime_env (``AWS_SHARED_CREDENTIALS_FILE=/mnt/aws``)
#: shows Ray's job API a path only; it was refused as a secret.
PATH_VALUED = re.compile(r".*_(FILE|PATH)|GOOGLE_APPLICATION_CREDENTIALS", re.IGNORECASE)


def secret_names(env_vars: Mapping[str, Any]) -> list[str]:
    """The names among ``env_vars`` that hold secrets (by name; :data:`PATH_VALUED` ones hold paths)."""
    return sorted(k for k, v in env_vars.items() if SECRET_NAME.search(k) and str(v) and not PATH_VALUED.fullmatch(k))


def refuse_runtime_env_secrets(runtime_env: Mapping[str, Any]) -> None:
    """UserError if a runtime_env carries secrets in its ``env_vars``."""
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, Mapping):   # Ray refuses it; nothing here to look through
        return
    names = secret_names(dict(env_vars))
    if names:
        raise UserError(f"the job's runtime_env sets {', '.join(names)}: Ray's job API shows a job's runtime_env "
                        f"in clear text to anyone who can list jobs; give the nodes credentials through their own "
                        f"environment (a Kubernetes Secret, an env file, an instance role) instead ({CREDENTIALS_DOC})")


def in_job_package(cwd: str | None = None) -> bool:
    """Whether the current directory is a Ray job's working-dir package (``_ray_pkg_<hash>``)."""
    return JOB_DIR_MARK in (cwd or os.getcwd()) + "/"


def default_storage(root: str, cwd: str | None = None) -> str:
    """``<cwd>/<root>/ray``, unless the current directory is a Ray job's working-dir package:
    that directory is named after a hash of the uploaded code and deleted with the job's session,
    so checkpoints there are lost, and a code change would start the sweep over (UserError)."""
    here = cwd or os.getcwd()
    if in_job_package(here):
        raise UserError("no --storage-path: under `ray job submit` the working directory is a per-upload copy of "
                        "the code (a code change moves it, and Ray deletes it with the session); " + STORAGE_HINT)
    return os.path.join(here, root, "ray")


def check_local_storage(path: str) -> None:
    """A local ``--storage-path`` must be a directory this process can create and write: a file,
    a FIFO or a read-only directory in the way otherwise gave a pyarrow traceback from reading
    the sweep record, or failed later inside Tune with the parent run left RUNNING.

    Raises:
        UserError: one line naming the path and what is wrong with it.
    """
    p = os.path.abspath(path)
    probe = _nearest_existing(p)
    if not os.path.isdir(probe):
        what = "is not a directory" if probe == p else f"cannot be made: {probe} is not a directory"
        raise UserError(f"--storage-path {path}: {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--storage-path {path}: {probe} is not writable by this user")


def check_script_tree(script: str | None) -> None:
    """A sweep script from a checkout of meta-study runs that checkout's code. ``python
    other/sweeps/zoo.py`` puts ``other/sweeps`` on ``sys.path``, not ``other``: ``meta_study`` then
    came from the installed (editable) tree, so the trials ran, and the runs recorded as
    ``code_version``, another checkout's code than the one the user ran.

    Raises:
        UserError: one line naming both trees and the fix.
    """
    from pathlib import Path

    if not script:
        return
    root = Path(script).resolve().parent.parent
    here = Path(__file__).resolve().parents[2]          # the tree meta_study was imported from
    if (root / "meta_study" / "__init__.py").is_file() and root != here:
        raise UserError(f"{script} belongs to the checkout {root}, but meta_study was imported from {here} (the "
                        f"installed one): the trials would run that code; run it as PYTHONPATH={root} python "
                        f"{script} ..., or pip install -e {root}")


def refuse_builtin_names(datasets: Mapping[str, str]) -> None:
    """A ``--dataset`` may not take the name of a built-in task (``synth_combo=imagefolder:/data/x``):
    each trial registered it over the built-in one without a word, so it trained or probed on the
    user's images, and its results went to MLflow and the store as the procedural task's, beside
    every other sweep's real ``synth_combo`` rows.

    Raises:
        UserError: one line naming the dataset and what to do.
    """
    if not datasets:
        return      # importing the engine (torch, timm) costs seconds: only when there is work
    from ..train import data, synth

    # the procedural suite's, not a task this process registered itself (a notebook's, or a
    # --dataset of an earlier sweep in it): those are the user's own names
    builtin = {n for n in data.list_tasks() if getattr(data._TASKS[n], "__module__", None) == synth.__name__}
    for name, spec in datasets.items():
        if name in builtin:
            raise UserError(f"--dataset {name}={spec}: {name} is a built-in task; a dataset under its name would "
                            f"replace it in every trial and its results would be stored as the built-in task's: give "
                            f"the dataset another name")


def check_dataset_paths(datasets: Mapping[str, str], *, on_this_machine: bool) -> None:
    """The local paths of ``--dataset NAME=imagefolder:PATH`` / ``parquet:TRAIN[,TEST]`` are
    absolute and exist. A relative path is refused anywhere: Tune runs each trial in a working
    directory of its own (``RAY_CHDIR_TO_TRIAL_DIR``; Ray Train's workers likewise), where it names
    nothing, so every trial failed on a path the driver could see. With a Ray of our own (this
    machine runs every trial) a missing path is refused: every trial failed on it instead, retried
    ``--max-failures`` times, each with a traceback. On a cluster the trials' nodes may mount what
    the driver's does not: one warning line on stderr.

    Raises:
        UserError: one line naming the dataset and the path (relative: the absolute one to give),
            or a dataset named after a built-in task (:func:`refuse_builtin_names`).
    """
    import sys

    refuse_builtin_names(datasets)
    for name, spec in datasets.items():
        kind, _, paths = str(spec).partition(":")
        parts = paths.split(",") if kind == "parquet" else [paths]
        if not parts[0].strip() or len(parts) > 2:
            # an empty path passed, and every trial failed on it; a third parquet path was read
            # as part of the test file's name
            want = "PATH" if kind == "imagefolder" else "TRAIN[,TEST] (one or two paths)"
            raise UserError(f"--dataset {name}={spec}: expected {kind}:{want}")
        for path in parts:
            if not path or "://" in path:
                continue
            if not os.path.isabs(path):
                raise UserError(f"--dataset {name}={spec}: {path} is a relative path, which no trial finds (Tune "
                                f"runs each trial in a directory of its own); give it as "
                                f"{os.path.abspath(os.path.expanduser(path))}")
            if os.path.exists(path) and (kind != "imagefolder" or os.path.isdir(path)):
                continue
            # an imagefolder that is a file (an archive, a parquet file): every trial failed on it
            # ("no images in class subdirectories"), retried --max-failures times
            msg = f"--dataset {name}={spec}: {path} " + ("is not a directory" if os.path.exists(path)
                                                         else "does not exist")
            if on_this_machine:
                raise UserError(msg + (" (imagefolder: PATH/<class>/*.png, or PATH/train/<class>/... beside "
                                       "PATH/test/<class>/...)" if os.path.exists(path) else ""))
            print(f"warning: {msg} on this machine; the trials fail unless their nodes have it", file=sys.stderr)


#: The trial settings the metric keys are made of (:func:`~.runner.check_metric_names`).
KEY_SETTINGS = ("us_task", "ds_tasks", "shots", "layerwise", "finetune", "l2", "l2_sweep")
#: The most combinations of searched key settings :func:`check_searched_tasks` checks one by one.
MAX_COMBINATIONS = 4096


def space_values(value: Any) -> list[Any] | None:
    """The values a search space's entry can give a trial: a grid's (``tune.grid_search``), a
    choice's (``tune.choice``), or the entry itself when it is a plain value. None for a domain
    whose values cannot be listed (``tune.uniform``, ``tune.sample_from``)."""
    if isinstance(value, Mapping) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    categories = getattr(value, "categories", None)      # ray.tune.search.sample.Categorical
    if isinstance(categories, (list, tuple)):
        return list(categories)
    if type(value).__module__.startswith("ray.tune"):    # another domain: nothing to list
        return None
    return [value]


def check_searched_tasks(space: Any, cfg: Mapping[str, Any], options: Any) -> None:
    """The tasks a search space gives trials (``"ds_tasks": tune.choice([["pets"], ["synth_shape"]])``,
    a grid over ``us_task``) are checked as the fixed config's are: each is a registered task or a
    ``--dataset`` name, ``ds_tasks`` is a list (a string was read letter by letter) without a
    task twice, and every metric key a trial logs under them (with the searched ``shots``,
    ``layerwise``, ``finetune``, ``l2_sweep`` too) is one MLflow takes. Only the fixed config was
    checked: every trial of a misspelt searched task failed at its first evaluation (retried
    ``--max-failures`` times), and a layer-wise key over 250 characters lost the trial's DS
    accuracies. A define-by-run (Optuna) space is not drawn here: nothing to list.

    Raises:
        UserError: one line naming the searched setting, the value and what is wrong.
    """
    import itertools

    from ..train.data import list_tasks
    from .runner import check_metric_names

    if not isinstance(space, Mapping):
        return
    listed = {k: space_values(space[k]) for k in KEY_SETTINGS if k in space}
    searched = {k: v for k, v in listed.items() if v}
    if not searched:
        return
    tasks = set(list_tasks()) | set(options.datasets)

    def known(key: str, name: Any) -> None:
        if name not in tasks:
            raise UserError(f"search space {key}: no such task {name!r} (tasks: {', '.join(sorted(tasks))}; on-disk "
                            "datasets come with --dataset NAME=...)")

    for name in searched.get("us_task", []):
        known("us_task", name)
    for value in searched.get("ds_tasks", []):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"search space ds_tasks: {value!r} is not a list of task names (give each choice as a "
                            f"list, e.g. [{value!r}])")
        twice = sorted({t for t in value if list(value).count(t) > 1})
        if twice:
            raise UserError(f"search space ds_tasks: {twice[0]!r} given twice in {list(value)!r}: give each "
                            "downstream task once")
        for name in value:
            known("ds_tasks", name)
    for combo in itertools.islice(itertools.product(*searched.values()), MAX_COMBINATIONS):
        try:
            check_metric_names({**cfg, **dict(zip(searched, combo))}, options)
        except (ValueError, TypeError):     # shots=["x"]: no key to check; the trial's TrainConfig says why
            continue


@dataclass(frozen=True)
class SessionPlan:
    """What this start of a sweep does.

    Attributes:
        resume: continue the recorded sweep (its parent run, run map and experiment).
        restore_tune: Tune's experiment state exists: ``Tuner.restore``; else a new Tuner in the
            same directory (a driver that died before Tune's first save).
        experiment: the MLflow experiment.
        code_changed: resumed with other code than the previous session's.
    """

    resume: bool
    restore_tune: bool
    experiment: str
    code_changed: bool = False


#: This process's claim on each sweep it resumes (state URI -> claim): a later resume of the same
#: sweep in this process (a program, a test) takes over from it instead of waiting it out.
_CLAIMS: dict[str, Any] = {}


def wait_for_previous_writer(state: Any, sweep: str, *, max_wait_s: float | None = None) -> str:
    """Before a resume reads anything: wait while the sweep's writer heartbeat (``writer.json``)
    still advances, as the new writer process does, and refuse when it still beats after
    ``max_wait_s`` (default :data:`~.state.WRITER_WAIT_S`); then claim the sweep for this driver
    until its own writer beats (:class:`~.state.DriverClaim`). Returns why it stopped waiting for
    the previous writer.

    A resume read the run map and started trials while the old writer was still sending its
    queue (it flushes for up to 5 minutes after its driver dies): a run it created after that read
    was unknown to the resume (a configuration drawn again got a second run; the old one was closed
    as an orphan). And a ``--resume`` of a sweep whose driver was still alive started a second
    driver on the same trials and runs. Its heartbeat stops within ~15 s of its death. Two
    ``--resume`` started together both found no writer (a driver's starts after Ray) and both ran
    the sweep's trials: the claim lets exactly one of them go on.

    Raises:
        UserError: the heartbeat (or another resuming driver's claim) still advances after
            ``max_wait_s``, or another driver claimed the sweep at the same moment.
    """
    import sys
    import time

    from .state import DRIVER, WRITER_WAIT_S, DriverClaim, Heartbeat, read_heartbeat

    wait = WRITER_WAIT_S if max_wait_s is None else max_wait_s
    deadline = time.monotonic() + wait
    mine = _CLAIMS.pop(state.uri, None)
    if mine is not None:
        mine.stop()

    def log(m: str) -> None:
        if m.startswith("waiting"):
            print(f"sweep {sweep}: {m}", file=sys.stderr)

    while True:
        why = Heartbeat(state, log=log).wait_for_previous(max(0.0, deadline - time.monotonic()))
        if why == "timeout":
            owner = (read_heartbeat(state) or {}).get("owner", "?")
            raise UserError(f"sweep {sweep}: its writer {owner} (host:pid) still logs after {wait:.0f} s: another "
                            "driver of this sweep is running, or a dead driver's writer is still sending its queue; "
                            "nothing was started: let it end (or stop that driver), then --resume again")
        other = Heartbeat(state, log=log, name=DRIVER).wait_for_previous(max(0.0, deadline - time.monotonic()))
        if other == "timeout":
            owner = (read_heartbeat(state, DRIVER) or {}).get("owner", "?")
            raise UserError(f"sweep {sweep}: the driver {owner} (host:pid) is resuming it and has not started its "
                            f"writer after {wait:.0f} s; nothing was started: let it run (or stop it), then --resume "
                            "again")
        if other != "finished":
            break
        # its claim ended: its writer beats now (look again), or it stopped before starting one
    claim = DriverClaim(state)
    won = claim.take()
    if won is not None:
        raise UserError(f"sweep {sweep}: another driver ({won}, host:pid) resumed it at the same moment; nothing was "
                        "started here: let that one run")
    _CLAIMS[state.uri] = claim
    return why


#: Settings of a sweep record that come from a flag of the runner, not from ``--set``: a resume
#: cannot change them (Tune restores its TuneConfig and FailureConfig as the first session made them).
SESSION_FLAGS = {"num_samples": "--num-samples", "max_concurrent": "--max-concurrent",
                 "max_failures": "--max-failures"}
#: Trial settings with a flag of their own (every other one comes from ``--set`` or ``--smoke``).
SETTING_FLAGS = {"us_task": "--us-task", "ds_tasks": "--ds-task", "layerwise": "--layerwise", "datasets": "--dataset"}
#: Settings that records written before them lack (compared only when the record has them): the
#: ``--dataset`` paths behind the task names (a resume with ``pets=imagefolder:/data/pets-v2``
#: trained the restored trials on other images under the same name), and ``search_space``, the
#: fingerprint of a search space that is a plain mapping (a notebook's sweep).
LATER_SETTINGS = frozenset({"datasets", "search_space"})


def plan_session(*, record: SweepRecord | None, tune_state: bool, resume: bool, experiment: str | None,
                 default_experiment: str, code: str, allow_code_change: bool, experiment_dir: str,
                 tracking_uri: str, settings: Mapping[str, Any] | None = None) -> SessionPlan:
    """Decide between a new sweep and a resume, or refuse (UserError, one line).

    - ``--resume`` with nothing to restore fails: it never starts a new sweep quietly.
    - A sweep that exists is never started over: it needs ``--resume`` or another ``--name``.
    - A resume logs where the sweep always did: another ``--experiment`` or tracking server is
      refused (the record's experiment is the default).
    - A resume with other code than the last session's is refused with both versions, unless
      ``allow_code_change`` (then it is recorded in the sweep record and on the parent run).
    - A resume with other ``settings`` than the sweep's (``--set``, ``--num-samples``, tasks, and
      ``--max-concurrent``, ``--max-failures`` when given) is refused, naming the first that
      differs: ``Tuner.restore`` would go on with the old ones without a word.
    """
    if not resume:
        if record is None and tune_state:
            # --resume refuses it too (below): "pass --resume" sent the user round in a circle
            raise UserError(f"sweep {experiment_dir} exists already as a Tune experiment without a meta-study sweep "
                            "record (meta_study/sweep.json), which --resume cannot continue: pass another --name for "
                            "a new sweep")
        if record is not None:
            raise UserError(f"sweep {experiment_dir} exists already: pass --resume to continue it, or --name for a "
                            "new sweep")
        return SessionPlan(resume=False, restore_tune=False, experiment=experiment or default_experiment)
    if record is None:
        if tune_state:
            raise UserError(f"--resume: nothing to restore at {experiment_dir} (Tune state but no meta-study sweep "
                            "record, meta_study/sweep.json: not a meta-study sweep, or its record was deleted); pass "
                            "another --name, without --resume, for a new sweep")
        raise UserError(f"--resume: nothing to restore at {experiment_dir} (no sweep there); check --storage-path and "
                        "--name, or drop --resume to start a new sweep")
    if experiment and experiment != record.experiment:
        raise UserError(f"--resume: sweep {record.sweep} logs to MLflow experiment {record.experiment!r}, not "
                        f"{experiment!r}: drop --experiment (or pass {record.experiment!r}), or start a new sweep "
                        "with --name")
    if tracking_uri != record.tracking_uri:
        raise UserError(f"--resume: sweep {record.sweep} logs to {record.tracking_uri}, not {tracking_uri}: its "
                        "parent run and trial runs are there; pass --tracking-uri " + record.tracking_uri)
    if settings is not None and record.settings:
        was, now = json.loads(json.dumps(record.settings, default=str)), json.loads(json.dumps(settings, default=str))
        for key in sorted(set(was) | set(now)):
            if (key in SESSION_FLAGS and (key not in was or key not in now)) or (key in LATER_SETTINGS
                                                                                 and key not in was):
                # a record from before it was kept (unknown), or a flag this resume leaves out (it
                # goes on with the sweep's own value, as Tune does): nothing to compare
                continue
            if was.get(key) != now.get(key):
                flag = SESSION_FLAGS.get(key) or SETTING_FLAGS.get(key, "--set")
                # "started with layerwise=None" for a sweep started without --layerwise
                then = f"{key}={was[key]!r}" if was.get(key) is not None else f"{key} unset"
                given = repr(now[key]) if now.get(key) is not None else "none"
                raise UserError(f"--resume: sweep {record.sweep} was started with {then}, this command "
                                f"gives {given}: a resume continues the sweep as it was started (Tune keeps "
                                f"its search space, sample count, concurrency and retries); pass the same {flag} and options, or start a new "
                                "sweep with --name")
    last = record.sessions[-1].code if record.sessions else code
    changed = last != code
    if changed and not allow_code_change:
        raise UserError(f"--resume: the code changed since sweep {record.sweep} last ran (code version {last} -> "
                        f"{code}): its finished trials came from the old code; pass --allow-code-change to go on "
                        "with the new code (recorded on the sweep), or start a new sweep with --name")
    return SessionPlan(resume=True, restore_tune=tune_state, experiment=record.experiment, code_changed=changed)


# ---- storage reachable from every node (Ray) ---------------------------------------------------


@dataclass(frozen=True)
class NodeCheck:
    """One node's answer to the storage probe: ``error`` None means it read and wrote."""

    node_id: str
    address: str
    error: str | None


def _probe(uri: str, name: str, token: str) -> str | None:
    """On a node: read the driver's probe object and write one of our own (None: fine)."""
    try:
        fs, base = filesystem(uri)
        path = f"{base.rstrip('/')}/{name}"
        try:
            with fs.open_input_stream(path) as f:
                got = f.read().decode()
        except (FileNotFoundError, OSError) as e:
            if isinstance(e, FileNotFoundError) or "does not exist" in str(e) or "NoSuchKey" in str(e):
                return "the driver's probe file is not there (another disk)"
            raise
        if got != token:
            return "the probe file there is not the driver's (another disk)"
        mine = f"{path}-{uuid.uuid4().hex[:8]}"
        try:
            with fs.open_output_stream(mine) as f:
                f.write(b"ok")
        except BaseException:
            # a write that failed partway (a full disk, a quota) left a part of the file
            try:
                fs.delete_file(mine)
            except Exception:  # noqa: BLE001 - never made: nothing to remove
                pass
            raise
        fs.delete_file(mine)
        return None
    except Exception as e:  # noqa: BLE001 - any failure is this node's answer
        return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def trial_nodes(nodes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The alive nodes that can run a trial (they have CPUs or GPUs)."""
    return [n for n in nodes if n.get("Alive") and (float(n.get("Resources", {}).get("CPU", 0)) > 0
                                                    or float(n.get("Resources", {}).get("GPU", 0)) > 0)]


def _amounts(res: Mapping[str, float]) -> str:
    """``{"GPU": 1, "memory": 2**33}`` as ``1 GPU, 8 GiB of memory`` (Ray's names and units)."""
    def one(k: str, v: float) -> str:
        if k == "memory":
            return f"{v / 2**30:g} GiB of memory"
        return f"{v:g} {k}" + ("s" if k in ("CPU", "GPU") and v != 1 else "")
    return ", ".join(one(k, v) for k, v in res.items())


def check_trial_fits(request: Mapping[str, float], nodes: Sequence[Mapping[str, Any]], *, what: str,
                     on_this_machine: bool, sized_by_model: bool = False, warn: bool = True) -> str | None:
    """Some alive Ray node holds one trial's resources (``request``: a Tune resource dict, ``cpu``,
    ``gpu``, ``memory`` in bytes and custom names, or Ray's own names; for a data-parallel trial,
    one worker's). Tune waits for good on a trial that no node can hold (``--gpus-per-trial 1`` on
    a machine without a GPU, a share of memory larger than any node's): its only word is a warning
    every 60 s, which ``--quiet`` hides, and the sweep hung without one. On a Ray of our own
    (``on_this_machine``) it is refused; on a cluster an autoscaler may still add such a node: one
    warning line on stderr. Returns that warning (``None`` where a node can hold the trial); with
    ``warn=False`` it is not printed (a caller with many requests says them in one line).

    Raises:
        UserError: one line: ``what``, what a trial needs, and what the nodes have.
    """
    import sys

    need = {({"cpu": "CPU", "gpu": "GPU"}.get(k, k)): float(v) for k, v in request.items() if float(v) > 0}
    alive = [dict(n.get("Resources") or {}) for n in nodes if n.get("Alive")]
    if not need or any(all(float(r.get(k, 0)) >= v - 1e-9 for k, v in need.items()) for r in alive):
        return None
    most = {k: max((float(r.get(k, 0)) for r in alive), default=0.0) for k in need}
    short = {k: v for k, v in most.items() if v < need[k] - 1e-9}
    has = (f"the most any node has: {_amounts(short)}" if short else
           f"no node has all of them at once ({len(alive)} node{'s' if len(alive) != 1 else ''})")
    msg = f"{what}: a trial needs {_amounts(need)}, and no Ray node can hold it ({has})"
    if on_this_machine:
        # a sweep that sizes trials to their model (SweepSpec.resources): --cpus-per-trial does not
        # lower the model's memory, which "ask for less (--gpus-per-trial, --cpus-per-trial)" implied
        less = ("ask for less (--gpus-per-trial scales each model's GPU share; its memory comes with the model)"
                if sized_by_model else "ask for less (--gpus-per-trial, --cpus-per-trial)")
        raise UserError(f"{msg}; nothing was started: {less}, or run on a cluster that has it (--address)")
    line = f"warning: {msg}; its trials wait until a node that can joins the cluster (an autoscaler's)"
    if warn:
        print(line, file=sys.stderr)
    return line


def check_trials_fit(requests: Sequence[tuple[str, Mapping[str, float]]], nodes: Sequence[Mapping[str, Any]], *,
                     sweep: str, on_this_machine: bool, sized_by_model: bool) -> None:
    """:func:`check_trial_fits` for each of a sweep's distinct requests (``(label, request)``, the
    label naming the searched values that make it, e.g. ``model_name='vit_b'``): refused at the
    first that no node holds on a Ray of our own; on a cluster one warning line for all of them,
    not one per model size (a zoo of 40 models that a GPU node to come would hold gave 40 lines)."""
    import sys

    waits = [w for label, request in requests
             if (w := check_trial_fits(request, nodes, on_this_machine=on_this_machine, sized_by_model=sized_by_model,
                                       what=f"sweep {sweep}" + (f" (its trials of {label})" if label else ""),
                                       warn=False))]
    if waits:
        more = len(waits) - 1
        print(waits[0] + (f" (and {more} more trial size{'s' if more > 1 else ''} that no node can hold)"
                          if more else ""), file=sys.stderr)


def check_workers_fit(workers: int, request: Mapping[str, float], nodes: Sequence[Mapping[str, Any]], *,
                      sweep: str, on_this_machine: bool, actor_cpus: float = 0.1) -> None:
    """A data-parallel trial's ``workers`` Train workers (``request``: one worker's, as for
    :func:`check_trial_fits`) fit on the alive nodes together, each node taking as many whole
    workers as its resources hold, beside the trial's own actor (``actor_cpus``: runner's
    ``DRIVER_CPUS``) on one of them. :func:`check_trial_fits` checks one worker: with
    ``--workers-per-trial 4`` on a 2-CPU machine each worker fit, no trial's four ever did, and Ray
    Train retried its worker group every 60 s for good (its controller failures are unlimited): the
    sweep waited in silence. Refused on a Ray of our own; one warning line on a cluster.

    Raises:
        UserError: one line naming ``--workers-per-trial``, what the workers need and what fits.
    """
    import math
    import sys

    need = {({"cpu": "CPU", "gpu": "GPU"}.get(k, k)): float(v) for k, v in request.items() if float(v) > 0}
    if workers <= 1 or not need:
        return
    alive = [dict(n.get("Resources") or {}) for n in nodes if n.get("Alive")]

    def held(r: Mapping[str, Any]) -> int:
        return min(math.floor(float(r.get(k, 0)) / v + 1e-9) for k, v in need.items())

    # the trial's actor on the node where it costs the fewest workers (2 CPUs hold 2 workers of 1
    # CPU, not beside the actor's 0.1)
    fits = max((sum(held({**r, "CPU": float(r.get("CPU", 0)) - actor_cpus} if i == j else r)
                    for j, r in enumerate(alive))
                for i, a in enumerate(alive) if float(a.get("CPU", 0)) >= actor_cpus - 1e-9), default=0)
    if fits >= workers:
        return
    msg = (f"sweep {sweep}: --workers-per-trial {workers}: a trial's workers need {_amounts(need)} each beside the "
           f"trial's own {actor_cpus:g} CPU, and the Ray nodes hold {fits} such worker{'s' if fits != 1 else ''} at once")
    if on_this_machine:
        raise UserError(f"{msg}; nothing was started: ask for fewer workers or less per worker (--workers-per-trial, "
                        "--cpus-per-trial), or run on a cluster that has them (--address)")
    print(f"warning: {msg}; its trials wait until nodes that can join the cluster (an autoscaler's)", file=sys.stderr)


def _raise_if_storage_refused(storage: str, e: OSError) -> None:
    """The one-line :class:`UserError` (exit 2) for the driver's first write to an object store's
    ``storage`` failing for what the user must fix: a bucket the endpoint does not have (pyarrow
    said "Bucket 'b' not found. To create buckets, enable the allow_bucket_creation option.", a
    pyarrow option, exit 1), or credentials it refused. Anything else (no network, 5xx) stays."""
    from ..store._files import credentials_refused, credentials_refused_error, display_uri, missing_bucket
    from ..store._s3 import missing_bucket_error

    if not is_remote(storage):
        return
    shown = f"--storage-path {display_uri(storage)}"
    if (bucket := missing_bucket(e)) is not None:
        raise missing_bucket_error(shown, bucket or _bucket_of(storage)) from None
    if why := credentials_refused(e):
        raise credentials_refused_error(shown, why) from None


def _bucket_of(uri: str) -> str:
    """The bucket (host part) of an object store URI, without any ``KEY:SECRET@``, as written (as
    ``store._s3.S3Objects`` reads it: urlsplit's hostname lowercases it)."""
    import urllib.parse

    return urllib.parse.unquote(urllib.parse.urlsplit(uri).netloc.rpartition("@")[2])


def check_storage_on_nodes(storage: str, *, timeout_s: float = 120.0) -> list[NodeCheck]:
    """Probe ``storage`` (a path or a URI) from every Ray node that can run a trial, and refuse
    (UserError) if any of them cannot read what the driver wrote there, or cannot write.

    Cost: one zero-CPU task per node (a worker start each, ~1-3 s, in parallel) and two small
    writes per node. Nodes that join later (an autoscaler) are not checked: on an autoscaling
    cluster, use an object store or a path every node mounts. With no node that can run a
    trial yet (a head that takes none, workers still to come), a local path is refused.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = trial_nodes(ray.nodes())
    if not nodes:
        if not is_remote(storage):
            raise UserError(f"--storage-path {storage}: no Ray node can run a trial yet (nodes the autoscaler adds "
                            "later cannot be checked), so a local path is refused; " + STORAGE_HINT)
        return []
    fs, base = filesystem(storage)
    made = [] if is_remote(storage) else missing_dirs(base)
    name = f".meta-study-probe-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    path = f"{base.rstrip('/')}/{name}"
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    passed = False
    try:
        # inside the try: a write that fails partway (a full disk) leaves no part of the probe file
        try:
            fs.create_dir(base, recursive=True)
            with fs.open_output_stream(path) as f:
                f.write(token.encode())
        except OSError as e:
            _raise_if_storage_refused(storage, e)
            raise
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(storage, name, token): n for n in nodes}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        for ref in pending:      # a probe still waiting for a worker there: not left behind
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - it finished meanwhile, or its node is gone: nothing to stop
                pass
        out = []
        for ref, n in refs.items():
            if ref not in ready:
                err = f"did not answer in {timeout_s:.0f} s"
            else:
                try:
                    err = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the probe's worker died there (OOM, a crash, a
                    # runtime_env it could not set up): that node's answer, not a traceback
                    err = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
            out.append(NodeCheck(n["NodeID"], n.get("NodeManagerAddress", "?"), err))
        passed = not any(c.error for c in out)
    finally:
        try:
            fs.delete_file(path)
        except OSError:
            pass
        if not passed:
            # a refused storage path keeps no directory this check made (a path on the head's disk
            # that the other nodes lack was left there, empty, by the refusal)
            remove_made_dirs(made)
    bad = [c for c in out if c.error]
    if bad:
        where = "; ".join(f"node {c.node_id[:8]} at {c.address}: {c.error}" for c in bad[:3])
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        from ..mlflow_client import shown_uri

        if is_remote(storage):
            raise UserError(f"--storage-path {shown_uri(storage)}: {len(bad)} of {len(out)} Ray nodes cannot use it "
                            f"({where}{more}); give every node the object store's credentials and endpoint "
                            f"(a role, or AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL_S3 in the "
                            f"nodes' environment: {CREDENTIALS_DOC})")
        raise UserError(f"--storage-path {storage}: {len(bad)} of {len(out)} Ray nodes cannot use it ({where}{more}): "
                        f"trials and their checkpoints run on every node; " + STORAGE_HINT)
    return out


def experiment_dir(storage: str, name: str) -> str:
    """Tune's experiment directory of sweep ``name`` under ``storage`` (a path or a URI)."""
    return join(storage, name)


#: What a sweep name on an object store may hold (:func:`check_name_in_uri`): ASCII letters and
#: digits and characters a URI's path holds as they are, which pyarrow reads back as they are.
NAME_IN_URI_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~=,")


def check_name_in_uri(name: str, storage: str) -> None:
    """A sweep name on an object store (``s3://``, ``gs://``) is part of the URIs of the sweep's
    state and of ``Tuner.restore``'s (``STORAGE/NAME``), which pyarrow parses: a space or a
    non-ASCII letter was pyarrow's ArrowInvalid traceback ("Cannot parse URI"), a ``#`` cut the
    path there (the state of ``zoo#2`` in ``zoo``'s directory), and a ``%`` was decoded (``a%20b``
    read as ``a b``). Percent-encoded, the state is found, but ``Tuner.restore`` takes the encoded
    name as the directory's own: a ``--resume`` ran its trials in another directory. Names on a
    local or shared path are directory names, any of them.

    Raises:
        UserError: one line naming the name, the character and what a name may hold.
    """
    bad = next((c for c in name if c not in NAME_IN_URI_CHARS), None)
    if bad is not None:
        from ..mlflow_client import shown_uri

        raise UserError(f"--name {name!r}: holds {bad!r}, which a sweep's name on an object store "
                        f"({shown_uri(storage)}) cannot: its state and Tune's are found by URIs made of it; give a "
                        "name of letters, digits and - _ . ~ = , only")
