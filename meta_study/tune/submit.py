"""``python -m meta_study.tune.submit -- python sweeps/<name>.py ...``: ``ray job submit`` with the
provenance a job cannot find for itself.

``ray job submit --working-dir .`` uploads every file of the tree that no ``.gitignore`` or
``.rayignore`` in it excludes (Ray 2.60 leaves out only ``.git``, ``.venv``, ``venv`` and
``__pycache__`` by default, and not where ``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES`` says
otherwise), and the job runs as the cluster's user. So this wrapper, on the submitting machine:

- takes the commit (``git rev-parse HEAD``, ``-dirty`` when tracked files have changes or files
  that are not ignored are untracked: both are uploaded) and the
  submitting person (``--researcher``, else ``$META_STUDY_RESEARCHER``, else the login name), and
  hands them to the job as ``META_STUDY_GIT_SHA`` and ``META_STUDY_RESEARCHER`` in its
  ``runtime_env`` (not secrets: the job API shows them);
- refuses secrets before anything is submitted: in ``--runtime-env-json`` env_vars (the job API
  serves a job's runtime_env in clear text), in URIs on the job's command line (its
  entrypoint is shown too), and secrets files in the upload (``.env``, ``.netrc``, a Ray token
  file, an SSH key: :data:`SECRET_FILE`; Ray keeps the upload on the cluster for any job to read);
- refuses a job whose command names a Python file of the working dir that the upload leaves out
  (:func:`left_out_scripts`: an ignored sweep script failed on the cluster, after the upload);
- refuses a job whose command runs a script (``python sweeps/x.py``) that is not in the working
  dir at all (:func:`absent_scripts`: a typo, or the wrong ``--working-dir``);
- refuses an upload over :data:`UPLOAD_MAX_BYTES` (100 MiB: the dashboard's request limit; Ray's
  traceback came after the whole zip was built), naming its largest top-level parts;
- leaves ``.git`` out of the upload (the commit goes in ``META_STUDY_GIT_SHA``; the history cost
  upload time toward the 100 MiB a job can upload, and ``.git/config`` may hold a remote's credentials),
  and what git ignores that Ray does not read (:func:`git_only_excludes`);
- then runs ``ray job submit`` with the rest (``--no-wait``; ``--address``, else Ray's own
  ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``: ``--address`` wins here, where Ray's job client
  lets the variables win over it; the ``RAY_AUTH_*`` token variables apply as usual).

The working directory is ``--working-dir`` or the ``working_dir`` of ``--runtime-env-json`` (not
both); the commit is that directory's.

Exit status: ``ray job submit``'s, or 2 for a refusal (one line), including a working dir that is
not a directory, an http(s) job API address that does not answer as Ray's or refuses the Ray
token (or finds none), and a cluster address (``HOST:PORT``) that takes no connection, or whose
GCS wants a Ray token that is not set here or refuses this one, or that is an HTTP server (the
dashboard's port without ``http://``) or a gRPC server that is no GCS (a raylet's), a
``ray://`` address without a port or where a GCS or an HTTP server answers, an empty
``--address``, and no address at all with no cluster found on this machine (checked first, in
at most 10 s each: a wrong address was Ray's traceback, or a wait of minutes or for good).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import UserError
from ..ray_session import ask_gcs, mask_user_info, shown_address
from . import provenance
from .preflight import has_credentials, refuse_runtime_env_secrets


def job_runtime_env(working_dir: str, user_env: dict | None, *, git_sha: str, researcher: str) -> dict:
    """The runtime_env to submit: the user's, with the working dir and the provenance variables
    (UserError for secrets in the user's env_vars)."""
    env = dict(user_env or {})
    refuse_runtime_env_secrets(env)
    env.setdefault("working_dir", working_dir)
    env["env_vars"] = {**dict(env.get("env_vars") or {}), provenance.GIT_SHA_ENV: git_sha,
                       provenance.RESEARCHER_ENV: researcher}
    return env


RUNTIME_ENV_EXAMPLE = """'{"env_vars": {"NAME": "value"}, "pip": ["pkg"]}'"""


def runtime_env_arg(text: str) -> dict:
    """``--runtime-env-json``'s value: a JSON object whose ``env_vars``, if any, is an object too
    (Ray's runtime_env). UserError, naming the option, for anything else: a list or a string was a
    TypeError traceback, text that is not JSON a message that did not say which option."""
    what = "--runtime-env-json"
    try:
        env = json.loads(text)
    except ValueError as e:
        raise UserError(f"{what}: not JSON ({e}); expected a JSON object such as {RUNTIME_ENV_EXAMPLE}") from None
    if not isinstance(env, dict):
        raise UserError(f"{what}: expected a JSON object (a runtime_env) such as {RUNTIME_ENV_EXAMPLE}, not "
                        f"{_json_kind(env)}")
    if env.get("env_vars") is not None and not isinstance(env["env_vars"], dict):
        raise UserError(f"{what}: expected a JSON object of NAME: value pairs for env_vars, not "
                        f"{_json_kind(env['env_vars'])}")
    # said here without the value: Ray's message shows it, and it may be a secret's
    bad = [k for k, v in (env.get("env_vars") or {}).items() if not isinstance(v, str)]
    if bad:
        raise UserError(f"{what}: env_vars {bad[0]}: expected a string value, not {_json_kind(env['env_vars'][bad[0]])}")
    # Ray's own checks of each field, as ray job submit makes them: {"env_vars": {"A": 1}},
    # {"excludes": "x"} or {"pip": 5} were its TypeError traceback (exit 1)
    try:
        from ray.runtime_env import RuntimeEnv
    except ImportError:
        return env
    try:   # working_dir aside: uploaded_dir and main check it, and say which input named it
        RuntimeEnv(**{k: v for k, v in env.items() if k != "working_dir"})
    except (TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what}: {first}") from None
    return env


def _json_kind(v: object) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null", dict: "an object"}.get(
        type(v), "a number")


def refuse_secret_args(cmd: Sequence[str]) -> None:
    """UserError for a URI with credentials anywhere in the job's command line, or a secret's
    value assigned in it (``env AWS_SECRET_ACCESS_KEY=... python ...``)."""
    from ..mlflow_client import shown_uri
    from .preflight import PATH_VALUED, SECRET_NAME

    for arg in cmd:
        # environment assignments (``env NAME=value cmd``); a *_PATH or *_FILE (and
        # GOOGLE_APPLICATION_CREDENTIALS) names a file, no secret: as in a runtime_env's env_vars
        name, eq, value = str(arg).partition("=")
        if (eq and value and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) and SECRET_NAME.search(name)
                and not PATH_VALUED.fullmatch(name)):
            raise UserError(f"the job's command line holds a secret ({name}=...): Ray's job API shows a job's "
                            "entrypoint to anyone who can list jobs; give it to the nodes' environment (or the "
                            "runtime_env of the cluster's own config) instead")
        for part in str(arg).split("="):
            if "://" in part and has_credentials(part):
                raise UserError(f"the job's command line holds credentials ({shown_uri(part)}): Ray's job API shows a "
                                "job's entrypoint to anyone who can list jobs; use MLFLOW_TRACKING_USERNAME / "
                                "MLFLOW_TRACKING_PASSWORD and the nodes' own credentials instead")


def git_only_excludes(working_dir: str) -> list[str]:
    """The ignore patterns git applies and ``ray job submit`` does not: ``.git/info/exclude`` and
    the user's ``core.excludesFile`` (Ray reads only the ``.gitignore`` and ``.rayignore`` files in
    the tree), for a working dir that is a checkout's top (their patterns are relative to it).
    A data directory listed there was uploaded with the job (up to the 100 MiB a job can upload, then a
    failed upload), and a script listed there ran under a commit recorded as clean."""
    root = Path(working_dir).resolve()
    top = provenance.git_output(root, "rev-parse", "--show-toplevel")
    if top is None or Path(os.fsdecode(top.strip())).resolve() != root:
        return []
    files = []
    info = provenance.git_output(root, "rev-parse", "--git-path", "info/exclude")
    if info is not None:
        files.append(root / os.fsdecode(info.strip()))
    user = provenance.git_output(root, "config", "--path", "core.excludesFile")
    if user is not None and user.strip():
        files.append(Path(os.fsdecode(user.strip())).expanduser())
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        files.append(Path(xdg) / "git" / "ignore")
    patterns = []
    for f in files:
        try:
            lines = f.read_text(errors="surrogateescape").splitlines()
        except OSError:
            continue
        patterns += [line for line in lines if line.strip() and not line.startswith("#")]
    return patterns


#: Always left out of the upload: the job gets the commit in ``META_STUDY_GIT_SHA`` and never
#: needs the history, which Ray uploads where its default excludes do not name it (a Ray without
#: them, or ``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES`` set: 11 MB of this repository's, a
#: large history or LFS store up to the 100 MiB a job can upload and a failed upload) with ``.git/config``,
#: where a remote's URL may hold a token.
ALWAYS_EXCLUDED = (".git",)

#: Files that hold secrets by their name: dotenv files (not ``.env.example`` and its kind), netrc,
#: pgpass, ``.git-credentials`` and ``.pypirc``, a Ray token file (``local-up.sh``'s ``ray-auth-token``, Ray's ``auth_token``), SSH
#: private keys, AWS's credentials file. Ray keeps a job's upload on the cluster (the GCS), where
#: any job of the cluster can read it, and unpacks it on every node that runs the job.
SECRET_FILE = re.compile(r"\.env(\.(?!(example|sample|template|dist|defaults)$)[^/]+)?|\.netrc|\.pgpass|"
                         r"ray-auth-token|auth_token|id_(rsa|dsa|ecdsa|ed25519)|\.aws/credentials|"
                         r"\.git-credentials|\.pypirc")   # git's credential store, PyPI's upload token: in clear text


def upload_excludes(working_dir: str, user_excludes: Sequence[str] = ()) -> list[str]:
    """The runtime_env ``excludes`` of ``working_dir``'s upload: the user's, then
    :data:`ALWAYS_EXCLUDED` and :func:`git_only_excludes` (each once)."""
    out = list(user_excludes)
    for x in (*ALWAYS_EXCLUDED, *git_only_excludes(working_dir)):
        if x not in out:
            out.append(x)
    return out


def uploaded_secret_files(working_dir: str, excludes: Sequence[str]) -> list[str]:
    """The files of ``working_dir`` that Ray would upload with ``excludes`` (and the tree's
    ``.gitignore`` / ``.rayignore`` files, walked as Ray walks them) whose name says they hold a
    secret (:data:`SECRET_FILE`), relative to ``working_dir``; [] where Ray's walk is not there to
    ask (a Ray release without it: nothing is refused). One walk of the upload, as Ray makes two."""
    return secret_files(_walk_upload(working_dir, excludes)[0])


def secret_files(files: Iterable[str]) -> list[str]:
    """The ``files`` (relative, ``/``-separated) whose name says they hold a secret (:data:`SECRET_FILE`)."""
    return sorted(rel for rel in files
                  if SECRET_FILE.fullmatch(rel.rsplit("/", 1)[-1]) or SECRET_FILE.fullmatch("/".join(rel.split("/")[-2:])))


def _walk_upload(working_dir: str, excludes: Sequence[str]) -> tuple[set[str], bool]:
    """The files (relative to ``working_dir``, ``/``-separated) that Ray would upload with
    ``excludes``, Ray's default excludes (:func:`ray_default_excludes`) and the tree's
    ``.gitignore`` / ``.rayignore`` files, walked as Ray walks them, and whether the walk is
    complete (not where Ray's walk is not there to ask, or failed: an unreadable directory, which
    Ray then reports itself)."""
    import logging

    try:
        from ray._private.runtime_env.packaging import _dir_travel, _get_excludes
    except ImportError:
        return set(), False
    excludes = [*ray_default_excludes(), *excludes]
    root = Path(working_dir).absolute()
    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"   # as ray job submit
    found: set[str] = set()

    def look(path: Path) -> None:
        if path.is_file():
            found.add(path.relative_to(root).as_posix())

    quiet = logging.getLogger("meta_study.tune.submit.upload")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        _dir_travel(root, [_get_excludes(root, list(excludes))], look, include_gitignore=include_gitignore,
                    logger=quiet)
    except Exception:  # noqa: BLE001 - an unreadable directory, a symlink loop, excludes Ray refuses: Ray says so
        return found, False
    return found, True


def ray_default_excludes() -> list[str]:
    """What Ray leaves out of every working-directory upload besides the user's excludes: Ray 2.60's
    ``.git``, ``.venv``, ``venv`` and ``__pycache__`` (``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES``
    changes them), as ``ray job submit`` reads them here; [] for a Ray without them. Walked
    without them, a virtualenv in an unignored ``venv/`` counted toward the 100 MiB limit (and was
    refused as too large: thousands of MiB that Ray never uploads), and a secrets-named file in it
    was refused as uploaded. Not added to the job's own excludes: the override then still holds."""
    try:
        from ray._private.ray_constants import get_runtime_env_default_excludes
    except ImportError:
        return []
    return list(get_runtime_env_default_excludes())


#: The largest working-directory upload a Ray job can take, in bytes: Ray 2.60 zips the files
#: uncompressed (ZIP_STORED) and PUTs the zip to the dashboard, whose aiohttp app reads at most
#: DASHBOARD_CLIENT_MAX_SIZE (100 MiB) per request. Over it, the upload failed after the whole zip
#: was built, in a RuntimeError traceback ("status code 413: Maximum request body size 104857600
#: exceeded"); Ray's own check names its 512 MiB GCS limit, which is not the one that binds.
try:
    from ray._private.ray_constants import DASHBOARD_CLIENT_MAX_SIZE as UPLOAD_MAX_BYTES
except ImportError:    # a Ray without it (or none here): the 2.60 value
    UPLOAD_MAX_BYTES = 100 * 2**20
#: A zip's bytes per file besides its data: a local header (30) and a central directory entry
#: (46), each with the name, and Ray's extended-timestamp fields; a bound, not an exact count.
ZIP_FILE_OVERHEAD = 128


def upload_size(working_dir: str, files: Iterable[str]) -> int:
    """About how many bytes the zip of ``files`` (relative to ``working_dir``) that Ray uploads
    holds: the files' sizes, uncompressed as Ray stores them, plus a zip's per-file overhead. Cost:
    one stat per file (the walk has been made already)."""
    root = Path(working_dir)
    total = 0
    for f in files:
        try:
            total += (root / f).stat().st_size + ZIP_FILE_OVERHEAD + 2 * len(f.encode())
        except OSError:   # gone since the walk: Ray's own walk will say
            pass
    return total


def largest_parts(working_dir: str, files: Iterable[str], n: int = 3) -> str:
    """The ``n`` top-level entries of the upload that weigh most, "data/ (240 MiB), x.bin (9 MiB)":
    what to leave out of a too-large upload."""
    root = Path(working_dir)
    parts: dict[str, int] = {}
    for f in files:
        head, sep, _ = f.partition("/")
        key = head + "/" if sep else head
        try:
            parts[key] = parts.get(key, 0) + (root / f).stat().st_size
        except OSError:
            pass
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} ({v / 2**20:.0f} MiB)" for k, v in top)


def left_out_scripts(cmd: Sequence[str], working_dir: str, uploaded: set[str]) -> list[str]:
    """The Python files the job's command names (``python sweeps/mine.py``, ``--config=x.py``) that
    are in ``working_dir`` here but not in its upload (``uploaded``): a sweep script a .gitignore,
    ``.git/info/exclude`` or an ``excludes`` entry matched was left behind, and the job failed on
    the cluster ("can't open file") after the upload, in the job's log alone with ``--no-wait``.
    Only ``.py`` files: an ignored output file the job writes is no input it needs."""
    root = Path(working_dir).resolve()
    out = []
    for arg in cmd:
        for part in str(arg).split("="):
            if not part.endswith(".py") or part.startswith("-") or os.path.isabs(part):
                continue
            p = (root / part).resolve()
            if not p.is_file() or not p.is_relative_to(root):
                continue
            rel = p.relative_to(root).as_posix()
            if rel not in uploaded and rel not in out:
                out.append(rel)
    return out


#: A Python interpreter as a job's command names it (``python``, ``python3``, ``python3.11``, a path to one).
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")


def absent_scripts(cmd: Sequence[str], working_dir: str) -> list[str]:
    """The scripts the job's command runs with a Python interpreter (``python sweeps/zoo.py``: the
    argument right after it) by a relative path that names no file in ``working_dir``: the job
    runs in the upload of that directory, where it is not either (a typo, ``sweeps/head-wd.py``,
    or the wrong ``--working-dir``). The job was submitted, uploaded, and failed on the cluster
    ("can't open file"), in the job's log alone with ``--no-wait``."""
    root = Path(working_dir).resolve()
    out = []
    for prog, arg in zip(cmd, cmd[1:]):
        arg = str(arg)
        if (_PYTHON.fullmatch(os.path.basename(str(prog))) and arg.endswith(".py") and not arg.startswith("-")
                and not os.path.isabs(arg) and not (root / arg).exists()):
            out.append(arg)
    return out


def submit_git_sha(working_dir: str) -> str:
    """The commit of ``working_dir`` (``-dirty`` appended when tracked files have changes or
    untracked files are not ignored: the upload holds both; ``-unknown-state`` when ``git status``
    gives no answer), or ``unknown`` outside a git checkout."""
    return provenance.checkout_sha(Path(working_dir).resolve())


#: seconds to wait for the job API's /api/version. ``ray job submit``'s requests have no timeout:
#: a port that accepts and never answers hung it for good, an address that drops packets for the
#: TCP connect timeout (~2 min), each before a traceback
JOB_API_TIMEOUT_S = 10.0


#: What :func:`check_job_api` names as the source of ``auto`` when no address is given at all.
NO_ADDRESS = "no --address (nor RAY_API_SERVER_ADDRESS or RAY_ADDRESS), so"


def job_api_address(flag: str | None, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The job API address ``ray job submit`` will use and where it came from (``--address``,
    ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``), or None (Ray then looks for a cluster on
    this machine)."""
    env = os.environ if environ is None else environ
    for source, value in (("--address", flag), ("RAY_API_SERVER_ADDRESS", env.get("RAY_API_SERVER_ADDRESS")),
                          ("RAY_ADDRESS", env.get("RAY_ADDRESS"))):
        if value and value.strip():
            return source, value.strip()
    return None


def check_job_api(source: str, address: str, *, timeout_s: float | None = None) -> None:
    """UserError, naming the option or variable, when an http(s) ``address`` is not a Ray job API
    that answers: nothing listening, no answer within ``timeout_s`` (a wrong address; the default
    is :data:`JOB_API_TIMEOUT_S`), or another server there (MLflow's port for the dashboard's).
    Each was ``ray job submit``'s traceback. 401/403 count as Ray's: the token is Ray's to check
    (and to explain). A cluster address (``HOST:PORT``, ``ray://``) goes to :func:`check_gcs_address`."""
    import urllib.error
    import urllib.request

    import http.client

    from ..mlflow_client import shown_uri

    timeout = JOB_API_TIMEOUT_S if timeout_s is None else timeout_s
    if not address.startswith(("http://", "https://")):
        check_gcs_address(source, address, timeout_s=timeout)
        return
    shown = f"{source} {shown_uri(address)}"
    hint = "local-up.sh's env.sh exports it as RAY_API_SERVER_ADDRESS; is the cluster up?"
    url = address.rstrip("/") + "/api/version"
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                body = r.read(65536)
        except urllib.error.HTTPError as e:
            if e.code not in (401, 403):
                raise
            # token authentication (Ray's default since 2.60): ask again as ray job submit will,
            # with Ray's token; a refusal then was Ray's traceback (exit 1) after the upload's wait
            headers, where = _ray_auth_headers()
            if not headers:
                raise UserError(f"{shown}: the cluster wants a Ray token (HTTP {e.code}) and none is set: "
                                f"{where}") from None
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                body = r.read(65536)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise UserError(f"{shown}: the cluster refused the Ray token (HTTP {e.code}) of {_ray_token_source()}; "
                            "is it this cluster's? (local-up.sh's env.sh sets RAY_AUTH_TOKEN_PATH to it)") from None
        raise UserError(f"{shown}: not Ray's job API (HTTP {e.code} for /api/version); {hint}") from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        # URLError is an OSError; a timeout too; ValueError: a bad URL; HTTPException: InvalidURL (a
        # user:password@ without a port: "nonnumeric port: 'password@host'", a traceback that
        # showed the password), or a server that answered no HTTP (BadStatusLine)
        reason = getattr(e, "reason", e)
        why = ("no answer in time" if isinstance(reason, TimeoutError) or "timed out" in str(reason)
               else mask_user_info(str(reason) or type(reason).__name__, address))
        raise UserError(f"{shown}: cannot reach Ray's job API ({why}); {hint}") from None
    try:
        ok = "ray_version" in json.loads(body)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise UserError(f"{shown}: not Ray's job API (/api/version is no Ray version); {hint}")


def _ray_token_source() -> str:
    """Where Ray takes its token from, in its own order: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
    else ``~/.ray/auth_token`` (``RAY_JOB_HEADERS`` before all of them)."""
    if "authorization" in os.environ.get("RAY_JOB_HEADERS", "").lower():
        return "RAY_JOB_HEADERS"
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip():
        return f"RAY_AUTH_TOKEN_PATH {os.environ['RAY_AUTH_TOKEN_PATH']}"
    return "~/.ray/auth_token"


def _ray_auth_headers() -> tuple[dict[str, str], str]:
    """The headers ``ray job submit`` sends (``RAY_JOB_HEADERS``, and Ray's token unless those
    hold an Authorization), or none and why (one clause naming the variables to set)."""
    headers: dict[str, str] = {}
    user = os.environ.get("RAY_JOB_HEADERS", "").strip()
    if user:
        try:
            parsed = json.loads(user)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return {}, "RAY_JOB_HEADERS is no JSON object of headers"
        headers = {str(k): str(v) for k, v in parsed.items()}
        if any(k.lower() == "authorization" for k in headers):
            return headers, ""
    token, why = _ray_token_header()
    return ({**headers, **token}, "") if token else ({}, why)


def _ray_token_header() -> tuple[dict[str, str], str]:
    """Ray's own token as the header it sends (``{"authorization": "Bearer ..."}``: HTTP, and gRPC
    metadata to the GCS), or none and why. Ray sends one only with ``RAY_AUTH_MODE=token``."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        given = [n for n in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH") if os.environ.get(n, "").strip()]
        if given:
            return {}, (f"{given[0]} is set, but Ray sends a token only with RAY_AUTH_MODE=token; export it "
                        "(local-up.sh's env.sh exports both)")
        return {}, ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file "
                    "(local-up.sh's env.sh exports both)")
    try:
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
    except ImportError:   # a Ray without token authentication
        return {}, "this Ray has no token authentication; use the cluster's Ray version"
    try:
        token = get_auth_headers_if_auth_enabled({})
    except Exception:  # noqa: BLE001 - Ray 2.60 raises AuthenticationError when it finds no token (a traceback)
        token = {}
    if not token:
        return {}, (f"RAY_AUTH_MODE is token but {_ray_token_source()} holds no token; set RAY_AUTH_TOKEN_PATH "
                    "to the cluster's token file (local-up.sh's env.sh exports it)")
    return dict(token), ""


def check_gcs_address(source: str, address: str, *, timeout_s: float | None = None) -> None:
    """UserError, naming the option or variable, when a cluster address (``HOST:PORT``, or
    ``ray://HOST:PORT``) does not accept a connection within ``timeout_s``: ``ray job submit``
    asked the GCS there for the job API's address for ~45 s, then printed a traceback
    (``RpcError: Timed out while waiting for GCS``); then a ``HOST:PORT``'s GCS is asked as Ray
    asks it (:func:`check_gcs_answers`: the token, an HTTP port, a gRPC server that is no GCS),
    and what answers at a ``ray://`` address is checked to be no GCS or HTTP server
    (:func:`check_client_server`). ``auto`` is the cluster Ray finds on this machine, checked the
    same way. An address without a port is refused (Ray's ``ValueError`` traceback; for
    ``ray://``, 30 s of retries on gRPC's port 443, then a traceback)."""
    import socket

    hint = ("local-up.sh's env.sh exports RAY_ADDRESS and RAY_API_SERVER_ADDRESS; is the cluster up?")
    shown = shown_address(address)   # a message never repeats a user:password@ (Ray's addresses hold none)
    if address == "auto":
        # the cluster Ray finds on this machine (the last `ray start`, else the one GCS running),
        # checked as a named one: another user's token cluster was Ray's AuthenticationError traceback
        found = _find_local_cluster(source, address)
        if found is None:
            return
        address, rest = f"auto (found {found} on this machine)", found
        shown = address
    else:
        rest = address[len("ray://"):] if address.startswith("ray://") else address
    if "://" in rest:
        return
    host, sep, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        if address.startswith("ray://"):
            # Ray's client has no default port: gRPC dialled 443, and ray job submit gave up after
            # ~30 s of retries in a traceback ("ray client connection timeout")
            raise UserError(f"{source} {shown}: no port; give the cluster's client server as ray://host:port "
                            "(10001 by default)")
        # Ray's "ValueError: Invalid address format" traceback (a GCS address needs its port)
        raise UserError(f"{source} {shown}: not a Ray address; give the cluster's GCS as host:port (6379 by "
                        "default) or its job API as http://host:port (8265 by default)")
    timeout = JOB_API_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, OverflowError, ValueError) as e:
        why = "no answer in time" if isinstance(e, TimeoutError) else mask_user_info(e.strerror or str(e), address)
        raise UserError(f"{source} {shown}: cannot reach a Ray cluster there ({why}); {hint}") from None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if address.startswith("ray://"):
        check_client_server(source, shown, target, timeout)
    else:
        check_gcs_answers(source, shown, target, timeout)


def _find_local_cluster(source: str, address: str) -> str | None:
    """``HOST:PORT`` of the cluster ``ray job submit`` finds for ``auto``, as Ray finds it; None
    where Ray's private resolver moved (then Ray is left to it). UserError for none found, or
    several (Ray's ConnectionError traceback)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:
        return None
    import logging

    log = logging.getLogger(canonicalize_bootstrap_address_or_die.__module__)
    level = log.level
    log.setLevel(logging.ERROR)
    # Ray's finder takes RAY_ADDRESS over "auto"; with --address, ray job submit runs without it
    # (main takes it out), so it is not read here either: --address auto with env.sh's
    # RAY_ADDRESS set checked that cluster, and the job went to the one found on this machine
    hidden = os.environ.pop("RAY_ADDRESS", None) if source == "--address" else None
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as e:
        first = (str(e).strip().splitlines() or ["no Ray cluster found"])[0]
        raise UserError(f"{source} {address}: {first.split('. Please')[0]} on this machine; give the cluster's "
                        "address with --address (local-up.sh's env.sh exports RAY_API_SERVER_ADDRESS)") from None
    except Exception:  # noqa: BLE001 - an address Ray cannot parse: its own error says so
        return None
    finally:
        log.setLevel(level)
        if hidden is not None:
            os.environ["RAY_ADDRESS"] = hidden


def check_gcs_answers(source: str, address: str, target: str, timeout: float) -> None:
    """UserError, naming the option or variable, unless the GCS at ``target`` (``HOST:PORT``) gives
    ``ray job submit`` the job API's address, asked as it asks (:func:`ask_gcs`): each failure was
    Ray's traceback, after ~5 s for a cluster that wants a token none is set for, or refuses this
    one (``AuthenticationError``; with ``RAY_AUTH_MODE=token`` and no token a C++ check failure and
    a core dump), after ~45 s for an HTTP port (the dashboard's, given without http://: "Timed
    out while waiting for GCS"), at once for a gRPC server that is no GCS (a raylet's port, or the
    client server's given without ray://: ``RpcError``). Left to Ray: TLS (``RAY_USE_TLS``), a
    Ray without grpcio, and any other answer."""
    from ..mlflow_client import shown_uri

    token, why = _ray_token_header()
    answer = ask_gcs(target, timeout, token)
    if answer is None:
        return
    code, detail = answer
    if code == "UNAUTHENTICATED":
        if not token:
            raise UserError(f"{source} {address}: the cluster wants a Ray token and none is set: {why}")
        raise UserError(f"{source} {address}: the cluster refused the Ray token of {_ray_token_source()}; "
                        "is it this cluster's? (local-up.sh's env.sh sets RAY_AUTH_TOKEN_PATH to it)")
    if code == "UNAVAILABLE" and re.search(r"http1|HTTP/2", detail):
        raise UserError(f"{source} {address}: an HTTP server answers there, not a Ray cluster's GCS; "
                        f"for Ray's job API (the dashboard) give {shown_uri(f'http://{target}')}")
    if code == "DEADLINE_EXCEEDED":
        raise UserError(f"{source} {address}: no answer from a Ray cluster's GCS there in {timeout:g} s; "
                        "is it a Ray cluster's address (host:6379)?")
    if code == "UNIMPLEMENTED":
        # a gRPC server without the GCS's calls: a raylet's port, or the client server's given
        # without ray:// (both measured, Ray 2.60)
        raise UserError(f"{source} {address}: a gRPC server answers there, but not a Ray cluster's GCS (a raylet's "
                        f"port? a client server's is given as ray://{target}); give the GCS as host:port (6379 by "
                        "default)")
    # another answer (or none to read: a cluster without a dashboard): Ray's to explain


def check_client_server(source: str, address: str, target: str, timeout: float) -> None:
    """UserError, naming the option or variable, when what answers at ``target`` (``HOST:PORT`` of
    a ``ray://`` address) is surely no Ray client server: a cluster's GCS (``ray://host:6379``) or
    an HTTP server (the dashboard's port). ``ray job submit`` retried either for ~30 s, then
    printed a traceback ("ray client connection timeout"). A client server does not know the
    GCS's calls (UNIMPLEMENTED, measured with Ray 2.60, with a token or without): that answer,
    like any other, is left to Ray."""
    from ..mlflow_client import shown_uri

    answer = ask_gcs(target, timeout, _ray_token_header()[0])
    if answer is None:
        return
    code, detail = answer
    if code in ("OK", "UNAUTHENTICATED"):
        raise UserError(f"{source} {address}: a Ray cluster's GCS answers there, not its client server; give the GCS "
                        f"without ray:// ({target}), or the client server's port (ray://host:10001 by default)")
    if code == "UNAVAILABLE" and re.search(r"http1|HTTP/2", detail):
        raise UserError(f"{source} {address}: an HTTP server answers there, not a Ray client server; for Ray's job "
                        f"API (the dashboard) give {shown_uri(f'http://{target}')}")


def uploaded_dir(flag: str | None, user_env: Mapping | None) -> tuple[str, str]:
    """The working dir the job gets and the input that named it: ``--runtime-env-json``'s
    ``working_dir`` (Ray uploads that one), else ``--working-dir``, else ``.``. The commit was
    taken from ``--working-dir`` (``.``) whatever was uploaded: another checkout's code ran under
    this one's commit. UserError when both are given and differ, or the runtime_env's is no path."""
    user = (user_env or {}).get("working_dir")
    if user is None:
        return flag or ".", "--working-dir"
    what = "--runtime-env-json's working_dir"
    if not isinstance(user, str) or not user.strip():
        raise UserError(f"{what}: expected a directory (or a package URI), not {_json_kind(user)} {user!r}")
    if flag is not None and ("://" in user or Path(flag).resolve() != Path(user).resolve()):
        raise UserError(f"--working-dir {flag} and {what} {user} differ: give the job's working directory once")
    return user, what


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meta_study.tune.submit",
                                description="ray job submit with the commit and the submitting person")
    p.add_argument("--address", default=None, help="the job API (default: Ray's RAY_API_SERVER_ADDRESS / RAY_ADDRESS)")
    p.add_argument("--working-dir", default=None, help="uploaded as the job's working directory (default: .)")
    p.add_argument("--runtime-env-json", default=None, help="more runtime_env (no secrets: they are refused)")
    p.add_argument("--researcher", default=None, help="who submits (default: $META_STUDY_RESEARCHER, else the login)")
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the job's command, e.g. python sweeps/zoo.py ...")
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    try:
        if not cmd:
            raise UserError("no job command: put it after --, e.g. -- python sweeps/head_wd.py --smoke")
        if a.address is not None and not a.address.strip():
            # `--address "$HEAD"` with the variable unset: the job went to RAY_API_SERVER_ADDRESS's
            # cluster, RAY_ADDRESS's, or one found on this machine, without a word
            raise UserError(f"--address {a.address!r}: empty; give the job API as http://host:port (8265 by default) "
                            "or the cluster's GCS as host:port, or leave it out for RAY_API_SERVER_ADDRESS, else "
                            "RAY_ADDRESS")
        refuse_secret_args(cmd)
        user_env = runtime_env_arg(a.runtime_env_json) if a.runtime_env_json is not None else None
        working_dir, what = uploaded_dir(a.working_dir, user_env)
        remote = "://" in working_dir    # a package Ray fetches (s3://.../code.zip): no checkout here
        env = job_runtime_env(working_dir, user_env, git_sha="unknown" if remote else submit_git_sha(working_dir),
                              researcher=a.researcher or provenance.researcher())
        # after the refusals above, which need no network: a secret is refused whatever the address
        if not remote and not Path(working_dir).is_dir():
            raise UserError(f"{what} {working_dir}: not a directory (it is uploaded as the job's working "
                            "directory)")
        absent = [] if remote else absent_scripts(cmd, working_dir)
        if absent:
            raise UserError(f"the job's command runs {absent[0]}, which is not in {what} {working_dir} (the job runs "
                            "in its upload, where it would not be found either); check the script's path")
        if not remote and isinstance(env.get("excludes") or [], list):   # another type is Ray's to refuse
            env["excludes"] = upload_excludes(working_dir, env.get("excludes") or [])
            uploaded, complete = _walk_upload(working_dir, env["excludes"])   # one walk, as Ray makes two
            secrets = secret_files(uploaded)
            missing = left_out_scripts(cmd, working_dir, uploaded) if complete else []
            if secrets:
                shown = ", ".join(secrets[:3]) + (f" and {len(secrets) - 3} more" if len(secrets) > 3 else "")
                kind, it = (("a secrets file by its name", "it") if len(secrets) == 1 else
                            ("secrets files by their names", "them"))
                raise UserError(f"{what} {working_dir}: the upload would hold {shown}, {kind}: Ray "
                                f"keeps a job's working directory on the cluster, where any job can read it; leave {it} "
                                "out (a line in .gitignore or .rayignore, or --runtime-env-json "
                                f"'{{\"excludes\": [\"{secrets[0]}\"]}}') and give the nodes credentials through "
                                "their own environment")
            if missing:
                raise UserError(f"{what} {working_dir}: the job's command names {missing[0]}, which the upload leaves "
                                "out (a .gitignore or .rayignore line, .git/info/exclude, git's core.excludesFile "
                                "or the runtime_env's excludes matches it): the job would fail on the cluster; "
                                "take it out of that list")
            size = upload_size(working_dir, uploaded)
            if complete and size > UPLOAD_MAX_BYTES:
                raise UserError(f"{what} {working_dir}: the upload would be {size / 2**20:.0f} MiB, over the "
                                f"{UPLOAD_MAX_BYTES / 2**20:.0f} MiB a Ray job's working directory can take (the "
                                f"dashboard refuses larger requests: HTTP 413); largest: {largest_parts(working_dir, uploaded)}; "
                                "leave data out (a line in .rayignore, or --runtime-env-json '{\"excludes\": "
                                "[...]}') and read it on the nodes from a shared path or object storage")
        # none given: ray job submit looks for a cluster on this machine, as for auto (none there
        # was its ConnectionError traceback)
        check_job_api(*(job_api_address(a.address) or (NO_ADDRESS, "auto")))
    except (UserError, ValueError) as e:
        print(f"submit: {e}", file=sys.stderr)
        return 2
    ray = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit"]
    child_env = dict(os.environ)
    if a.address:
        ray += ["--address", a.address]
        # Ray's job client takes RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, over --address: with
        # local-up.sh's env.sh sourced, --address of another cluster was checked here and the job
        # then went to the local one
        for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            child_env.pop(name, None)
    if a.no_wait:
        ray.append("--no-wait")
    print(f"submit: git {env['env_vars'][provenance.GIT_SHA_ENV]}, researcher "
          f"{env['env_vars'][provenance.RESEARCHER_ENV]}", file=sys.stderr)
    return run_forwarding_signals([*ray, "--runtime-env-json", json.dumps(env), "--", *cmd], env=child_env)


def run_forwarding_signals(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` and pass SIGTERM, SIGHUP and SIGINT on to it; its exit status (128 + N for
    signal N). The wrapper killed alone (``kill PID``, a CI job cancelled) left ``ray job submit``
    running, re-parented to init, and it went on to upload and submit the job. SIGINT too: Ctrl-C
    reaches both (one process group), and the wrapper's KeyboardInterrupt was a traceback."""
    proc = subprocess.Popen(list(argv), env=dict(os.environ if env is None else env))
    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    except ValueError:   # not the main thread: no handlers there, nothing to forward
        pass
    try:
        rc = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main())
