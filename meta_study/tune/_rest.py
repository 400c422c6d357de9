"""The writer's MLflow REST client: the three calls every trial makes, on keep-alive connections.

:mod:`._shards` sends runs/create, runs/log-batch and runs/update through :class:`_RestRuns` to
http(s) tracking servers, and everything else (artifacts, lookups, other servers) through MLflow's
own client.

Why not one long-lived ``MlflowClient`` for these three too (it would follow MLflow's transport
across releases)? Measured 2026-12-01 with ``benchmarks/bench_tracking_client.py`` (500 runs per
repetition through the writer itself, 4 threads, best of 3; BENCHMARKS.md): ``MlflowClient`` costs
5.9-7.8 ms of client CPU per run against 1.35-1.8 ms here, 3.9-4.5x, in every repetition; runs/s
came out at 0.89-1.24x, which says nothing on a 2-core machine where the server spends 17-35 ms of
CPU per run. In the sweep benchmark (200 trivial trials, ``--pin``, gunicorn) the writer with
``MlflowClient`` cost 12.3-12.8 ms of CPU per trial on Ray's core, left a 4-5 s wait at the end, and
the sweep took 2.1-2.6x bare Tune against 1.07x with this client (target 1.25x). So this client
stays. Its cost is per request: MLflow resolves its request-header providers every time (the
Databricks one probes for a notebook context by importing modules that are not installed), then
goes through ``requests`` with a retry adapter, and the writer process would also have to import
MLflow's client (1.1-1.2 s of CPU here, once per sweep). Replacing this module would take an MLflow request path without
those per-request costs; then the benchmark decides again.

Credentials and TLS follow MLflow's own resolution (``get_default_host_creds``, see
:func:`resolve_creds`). With ``MLFLOW_TRACKING_AWS_SIGV4`` or ``MLFLOW_TRACKING_AUTH`` (request-auth
plugins, which sign or authenticate each request in code) the calls go through MLflow's own
``http_request`` instead, at its cost per call: sent without them, every call was refused.

A log-batch larger than the server, or a proxy in front of it, takes (HTTP 413; nginx's default is
1 MB) is sent in halves, split again while too large; a batch that size is split before it is sent
from then on. An entity no split makes small enough is refused for good (``INVALID_PARAMETER_VALUE``,
which the writer stops retrying), after the rest of its batch is sent.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Mapping


#: MLflow's workspace header (mlflow.utils.workspace_utils.WORKSPACE_HEADER_NAME, MLflow 3.x; not
#: imported: the writer process does not import MLflow's client)
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"


class RestError(RuntimeError):
    """An MLflow REST call answered with an error: its HTTP status and MLflow's ``error_code``."""

    def __init__(self, message: str, status: int, error_code: str | None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status, self.error_code = status, error_code
        #: MLflow's whole ``message`` (``message`` cuts the answer at 300 characters): a param
        #: conflict's key and held value are read from it (``_shards.held_params``)
        self.detail = detail


#: HTTP statuses that say the server (or a proxy's upstream) is busy or down for now, not that the
#: request is wrong: a request timeout, rate limiting, and a proxy's bad gateway, service
#: unavailable and gateway timeout. Other 5xx (a 500 page) are the server failing the request itself.
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})


def transient(e: BaseException) -> bool:
    """Whether ``e``, a REST call's failure, may go away by itself: a network error (a connection
    refused, reset or timed out; an answer cut short) or a :data:`TRANSIENT_STATUSES` answer."""
    import http.client

    if isinstance(e, RestError):
        return e.status in TRANSIENT_STATUSES
    return isinstance(e, (OSError, http.client.HTTPException))


def server_error(e: BaseException) -> bool:
    """Whether ``e`` is the server failing the request (a 5xx that is not transient: MLflow's
    ``INTERNAL_ERROR``, or a proxy's or crashed application's 500 page): the same request fails
    the same way when sent again."""
    return isinstance(e, RestError) and e.status >= 500 and not transient(e)


def _error_message(text: str) -> str | None:
    """MLflow's ``message`` in an answer's JSON body; None for another body (a proxy's page)."""
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        return None
    return message if isinstance(message, str) else None


def _error_code(text: str) -> str | None:
    """MLflow's ``error_code`` in an answer's JSON body; None for another body (a proxy's page)."""
    try:
        code = json.loads(text).get("error_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


class _RestRuns:
    """The three calls every trial makes (runs/create, runs/log-batch, runs/update) over keep-alive
    HTTP connections, one per writer thread.

    Cost, measured against a local server: ~1.1 ms of client CPU per call with ``http.client``,
    ~2.8 ms with a ``requests`` session and ~5 ms through ``MlflowClient``; at three calls per
    trial that is CPU the Tune driver's machine needs for scheduling. ``requests`` is kept for
    what ``http.client`` lacks: a proxy from the environment (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY) and
    redirects (a server that answers with one is talked to through ``requests`` from then on).

    Credentials and TLS settings come from MLflow's own resolution of the environment, done by the
    driver (which has MLflow imported already) and handed to the writer process over its stdin:
    importing MLflow costs ~3 s of CPU that a writer process should not spend."""

    #: seconds a call may wait for the server's answer (a server that accepts and never answers):
    #: a flush that gives up waits this long for the calls in flight before it returns
    TIMEOUT_S = 60.0
    CRED_FIELDS = ("host", "username", "password", "token", "ignore_tls_verification", "client_cert_path",
                   "server_cert_path", "auth", "aws_sigv4")

    def __init__(self, tracking_uri: str, creds: Mapping[str, Any] | None = None) -> None:
        import base64
        import types
        import urllib.parse
        import urllib.request

        self.creds = c = types.SimpleNamespace(**(dict(creds) if creds is not None else resolve_creds(tracking_uri)))
        self.base = c.host.rstrip("/") + "/api/2.0/mlflow/"
        url = urllib.parse.urlsplit(self.base)
        self.https = url.scheme.lower() == "https"
        self.netloc, self.path = url.netloc, url.path
        self.headers = {"Content-Type": "application/json"}
        # MLflow's own order (rest_utils.http_request): Basic when both a user and a password are
        # set, else a Bearer token. Token first sent the writer's calls with another credential
        # than the driver's MlflowClient when all three were set: the parent run was created and
        # every trial's call was refused (401), silently, until the end-of-sweep flush spooled them
        if c.username and c.password:
            basic = base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        elif c.token:
            self.headers["Authorization"] = f"Bearer {c.token}"
        # the MLflow workspace (``MLFLOW_WORKSPACE``, ``mlflow.set_workspace``) the driver's client
        # sends as a header: without it a server run with --enable-workspaces looked the sweep's
        # experiment up in the default workspace, answered every runs/create "No Experiment with
        # id=N exists" (RESOURCE_DOES_NOT_EXIST, a refusal for good) and no trial got a run
        self.workspace = getattr(c, "workspace", None) or _env_workspace()
        if self.workspace:
            self.headers[WORKSPACE_HEADER] = self.workspace
        proxies = urllib.request.getproxies()
        # ALL_PROXY too, as requests (MLflow's client) takes it: only that set, the driver's client
        # went through the proxy and the writer straight to a server it could not reach
        self.via_requests = (bool(proxies.get(url.scheme) or proxies.get("all"))
                             and not urllib.request.proxy_bypass(url.hostname or ""))
        # a request-auth plugin or AWS SigV4: only MLflow's request path knows how to apply them
        self.via_mlflow = bool(getattr(c, "auth", None) or getattr(c, "aws_sigv4", None))
        self.local = threading.local()
        self.refused: set[int] = set()   # 401/403 statuses already said on stderr (once each)
        self._refused_lock = threading.Lock()   # four writer threads may be refused at once
        #: the smallest log-batch (bytes of JSON) the server answered 413 (too large): one as large
        #: is split before it is sent, not sent whole to be refused again
        self.too_large = 1 << 62

    def _ssl_context(self) -> Any:
        import os
        import ssl

        c = self.creds
        if c.ignore_tls_verification:
            ctx = ssl._create_unverified_context()  # noqa: S323 - asked for by MLFLOW_TRACKING_INSECURE_TLS
        else:
            # the CA bundle MLflow's client trusts: its own setting, else the one requests takes from
            # the environment (a lab's internal CA): without it the driver's MlflowClient created the
            # parent run and every call of the writer failed verification, retried until spooled.
            # Else certifi's, as requests: OpenSSL's default paths (the system's CAs, SSL_CERT_FILE)
            # are another set, and where they differ (an old system bundle without a newer root)
            # the writer's calls alone failed verification
            ca = (c.server_cert_path or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                  or _certifi_bundle())
            ctx = (ssl.create_default_context(capath=ca) if ca and os.path.isdir(ca)
                   else ssl.create_default_context(cafile=ca))
        if c.client_cert_path:
            ctx.load_cert_chain(c.client_cert_path)
        return ctx

    def _connection(self) -> Any:
        """This thread's connection, reopened when the server has closed it while idle (a server
        may drop keep-alive connections at any time; a request on one would fail)."""
        import http.client

        conn = getattr(self.local, "conn", None)
        if conn is not None and conn.sock is not None and _readable(conn.sock):
            conn.close()   # readable while idle: closed by the server (or stray bytes): start afresh
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.netloc, timeout=self.TIMEOUT_S, context=self._ssl_context())
            else:
                conn = http.client.HTTPConnection(self.netloc, timeout=self.TIMEOUT_S)
            self.local.conn = conn
        return conn

    def _session(self) -> Any:
        s = getattr(self.local, "session", None)
        if s is None:
            import requests

            c = self.creds
            s = requests.Session()
            s.headers.update(self.headers)
            s.verify = False if c.ignore_tls_verification else (c.server_cert_path or True)
            if c.client_cert_path:
                s.cert = c.client_cert_path
            self.local.session = s
        return s

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body, allow_nan=False, default=str).encode()
        splits = endpoint == "runs/log-batch" and _entities(body) > 1
        if splits and len(data) >= self.too_large:   # as large as one the server refused: split at once
            return self._post_halves(endpoint, body)
        status, text = self._exchange(endpoint, data)
        if status == 413 and splits:
            # more than the server, or a proxy in front of it (nginx and ingress-nginx take 1 MB by
            # default), takes in one request: it was retried as if the server were down, held every
            # flush to its timeout, and was spooled and refused again by every later session.
            # Params, tags and metrics are logged each on its own, so halves log the same
            self.too_large = min(self.too_large, len(data))
            return self._post_halves(endpoint, body)
        if status == 413:
            # no retry sends it (a batch of one entity, or another call): refused for good, in
            # the code MLflow gives a value it never takes (the writer's ``permanent``)
            what = f" (it holds {_one_entity(body)})" if endpoint == "runs/log-batch" and _entities(body) == 1 else ""
            raise RestError(f"MLflow {endpoint}: HTTP 413: the server, or a proxy in front of it, takes no request "
                            f"of {len(data):,} bytes{what}: {' '.join(text[:300].split())}", status,
                            _error_code(text) or "INVALID_PARAMETER_VALUE")
        return self._answer(endpoint, status, text)

    def get(self, endpoint: str) -> dict[str, Any]:
        """GET ``endpoint`` (with its query, e.g. ``runs/get?run_id=...``), one try: its JSON answer,
        else a :class:`RestError` (401/403 said once, as for :meth:`post`)."""
        status, text = self._exchange(endpoint, None, "GET")
        return self._answer(endpoint, status, text)

    def _answer(self, endpoint: str, status: int, text: str) -> dict[str, Any]:
        """MLflow's JSON answer to a call, or its refusal as a :class:`RestError` in one line."""
        if status != 200:
            if status in (401, 403):
                self._say_refused(status)
            # one line: a proxy's error page (nginx's 502 is "<html>" then the title on the next
            # line) was cut to its first line, "HTTP 502: <html>", wherever the writer said it
            raise RestError(f"MLflow {endpoint}: HTTP {status}: {' '.join(text[:300].split())}", status,
                            _error_code(text), _error_message(text))
        try:
            return json.loads(text)
        except ValueError:
            # a proxy's or a login portal's page answered 200: the writer said only "JSONDecodeError:
            # Expecting value: line 1 column 1 (char 0)", for every call until the end of the sweep
            raise RestError(f"MLflow {endpoint}: HTTP 200 but the answer is not MLflow's JSON (a proxy or login "
                            f"page in between?): {' '.join(text[:300].split())}", status, None) from None

    def _post_halves(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` (a log-batch) as two requests, each split again while it is too large. An entity
        no split makes small enough is refused (the first such refusal raised) once the rest is sent."""
        refused: RestError | None = None
        for half in _halves(body):
            try:
                self.post(endpoint, half)
            except RestError as e:
                if e.status != 413:
                    raise
                refused = refused or e
        if refused is not None:
            raise refused
        return {}

    def _exchange(self, endpoint: str, data: bytes | None, method: str = "POST",
                  api: str = "/api/2.0/mlflow/") -> tuple[int, str]:
        """``method`` (POST ``data``, or GET) ``endpoint`` of ``api``: the answer's HTTP status and text."""
        prefix = self.base[:-len("/api/2.0/mlflow/")]
        if self.via_mlflow:
            from mlflow.utils.rest_utils import MlflowHostCreds, http_request

            creds = MlflowHostCreds(**{f: getattr(self.creds, f, None) for f in self.CRED_FIELDS
                                       if f != "host"}, host=prefix)
            # no retries of its own (the writer retries), and this client's timeout
            extra = {"Content-Type": "application/json",
                     **({WORKSPACE_HEADER: self.workspace} if self.workspace else {})}
            r = http_request(creds, api + endpoint, method, max_retries=0, timeout=self.TIMEOUT_S,
                             raise_on_status=False, extra_headers=extra, **({"data": data} if data is not None else {}))
            return r.status_code, r.text
        if self.via_requests:
            # verify per request, as MLflow's client passes it: requests lets REQUESTS_CA_BUNDLE (or
            # CURL_CA_BUNDLE) override a session's own verify, and MLFLOW_TRACKING_INSECURE_TLS or
            # MLFLOW_TRACKING_SERVER_CERT_PATH was ignored here (every call failed verification
            # while the driver's client worked); a request's False or path wins over them
            c = self.creds
            r = self._session().request(method, prefix + api + endpoint, data=data, timeout=self.TIMEOUT_S,
                                        verify=False if c.ignore_tls_verification else (c.server_cert_path or True))
            return r.status_code, r.text
        import http.client

        conn = self._connection()
        try:
            try:
                conn.request(method, self.path[:-len("/api/2.0/mlflow/")] + api + endpoint, body=data,
                             headers=self.headers)
            except (BrokenPipeError, ConnectionResetError) as e:
                # a server or proxy may answer before it has read the whole body (a 413 for one too
                # large) and close: the send fails, and the answer is there to read, as requests
                # reads it. Unread, the 413 was a broken pipe, retried as if the server were down
                try:
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise e from None
            else:
                resp = conn.getresponse()
            status, text = resp.status, resp.read().decode("utf-8", "replace")
        except BaseException:
            conn.close()   # a half-done exchange leaves the connection unusable
            raise
        if status in (301, 302, 303, 307, 308):   # a redirecting server: requests follows those
            self.via_requests = True
            return self._exchange(endpoint, data, method, api)
        return status, text

    def appends_metrics(self) -> bool:
        """Whether the server's store logs a metric point sent again a second time. MLflow's file
        store does (``mlflow server --backend-store-uri ./mlruns``): a log-batch whose answer never
        came (a timeout, a connection cut, a proxy's 502/504) may have been logged, and the writer's
        resend appended each of its points again (a database store keeps each point once). Asked
        once, GET server-info (MLflow 3); a server that does not say is taken to append."""
        known = getattr(self, "_appends", None)
        if known is None:
            try:
                status, text = self._exchange("server-info", None, "GET", "/api/3.0/mlflow/")
                store = json.loads(text).get("store_type") if status == 200 else None
            except (OSError, ValueError, AttributeError):  # not answered now: the careful answer, asked again later
                return True
            known = self._appends = store in (None, "FileStore")
        return known

    def _say_refused(self, status: int) -> None:
        """Say once on stderr that the server refuses the writer's credentials. The writer retries
        every call until the end-of-sweep flush spools it (credentials fixed, ``--resume`` sends it),
        which said only, after the whole flush timeout, that not everything reached the server: a
        token that expired mid-sweep went unnoticed for the rest of the sweep."""

        with self._refused_lock:
            said, _ = status in self.refused, self.refused.add(status)
        if said:
            return
        what = ("denies these credentials access" if status == 403 else "refuses these credentials"
                if "Authorization" in self.headers or self.via_mlflow else "asks for credentials, and none are set")
        _say(f"meta-study writer: MLflow at {_safe(self.base)} {what} (HTTP {status}; credentials come from "
              "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, else MLFLOW_TRACKING_TOKEN); the trials' "
              "operations are retried, and spooled at the end of the sweep for --resume to send")

    @staticmethod
    def num(v: float) -> Any:
        """JSON has no NaN or infinities; MLflow's protobuf JSON takes them as strings."""
        return v if v == v and abs(v) != float("inf") else ("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))


def _entities(body: Mapping[str, Any]) -> int:
    """The params, tags and metrics of a log-batch body."""
    return sum(len(body.get(k) or ()) for k in ("params", "tags", "metrics"))


def _halves(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A log-batch body as two, its params, tags and metrics (in that order) cut in the middle."""
    items = [(k, e) for k in ("params", "tags", "metrics") for e in body.get(k) or ()]
    mid = len(items) // 2
    out = []
    for part in (items[:mid], items[mid:]):
        b: dict[str, Any] = {**{k: v for k, v in body.items() if k not in ("params", "tags", "metrics")},
                             "params": [], "tags": [], "metrics": []}
        for k, e in part:
            b[k].append(e)
        out.append(b)
    return out[0], out[1]


def _one_entity(body: Mapping[str, Any]) -> str:
    """The one param, tag or metric of a log-batch body, as a message names it."""
    for k in ("params", "tags", "metrics"):
        for e in body.get(k) or ():
            value = str(e.get("value", ""))
            return f"one {k[:-1]} {str(e.get('key'))[:300]!r}, its value {len(value.encode()):,} bytes"
    return "nothing"


def _say(line: str) -> None:
    """One line of the writer's on stderr. A stderr that cannot be written (the terminal of a closed
    SSH session answers EIO, a closed pipe) loses the line, never the operations: a line that
    raised in a writer thread killed it, with its batch marked done, and flush said all was sent."""
    import sys

    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):   # ValueError: stderr closed
        pass


def _readable(sock: Any) -> bool:
    """Whether ``sock`` has something to read (or was closed) now, without waiting. ``poll``, not
    ``select.select``: select raised "filedescriptor out of range" for a socket numbered 1024 or
    more (a driver with many files open: a big sweep's), and every call of the writer failed,
    retried until the end-of-sweep flush spooled them all."""
    import select

    if hasattr(select, "poll"):
        p = select.poll()
        p.register(sock, select.POLLIN)
        return bool(p.poll(0))
    import selectors     # Windows: no poll (select there has no such limit)

    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(0))


def _certifi_bundle() -> str | None:
    """The CA bundle requests verifies against by default (``certifi``, a dependency of requests),
    or None (OpenSSL's default paths) where it is not installed."""
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def _safe(base: str) -> str:
    """The tracking URI of a REST base address, without credentials."""
    from ..mlflow_client import safe_uri

    return safe_uri(base[:-len("/api/2.0/mlflow/")] if base.endswith("/api/2.0/mlflow/") else base)


def resolve_creds(tracking_uri: str) -> dict[str, Any]:
    """MLflow's credentials and TLS settings for an http(s) tracking URI, as a plain dict, with the
    MLflow workspace the driver's client works in (``workspace``; None outside one)."""
    from mlflow.utils.credentials import get_default_host_creds

    c = get_default_host_creds(tracking_uri)
    try:
        from mlflow.utils.workspace_context import get_request_workspace
    except ImportError:       # an MLflow without workspaces
        workspace = _env_workspace()
    else:
        workspace = get_request_workspace()
    return {**{f: getattr(c, f, None) for f in _RestRuns.CRED_FIELDS}, "workspace": workspace or None}


def _env_workspace() -> str | None:
    """``MLFLOW_WORKSPACE``, as MLflow's client reads it (stripped; None when unset or empty)."""
    import os

    return os.environ.get("MLFLOW_WORKSPACE", "").strip() or None
