"""Where a sweep's code, person and checkpoints come from, recorded so that they survive a cluster.

- **git commit**: the job's working directory is a copy of the upload, which ``python -m
  meta_study.tune.submit`` makes without ``.git`` (as Ray 2.60 does by default, unless
  ``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES`` is set), so a job cannot ask git. The commit is taken on the submitting machine (the wrapper puts it in
  ``META_STUDY_GIT_SHA``), else from git where the code runs (a checkout), else ``unknown``.
- **code version**: a sha256 of the code that runs (``meta_study/`` and the sweep's script),
  computed wherever it runs, so it is never unknown. ``--resume`` compares it with the version
  that started the sweep.
- **researcher**: ``--researcher``, else ``META_STUDY_RESEARCHER`` (set by the submit wrapper to
  the submitting user), else the user running the driver.
- **environment**: where a trial ran and with what: the host, Python, the versions of the packages
  that decide its numbers (torch, timm, numpy, ray, mlflow, meta-study) and its accelerator (CUDA
  and cuDNN versions, device names), read in the trial's own process (a worker node may have
  other versions than the driver's), :func:`trial_environment`.
- **checkpoint URIs**: a full URI with the scheme, the bucket and, for an endpoint that is not
  AWS's (MinIO, Ceph), the endpoint as ``pyarrow.fs.FileSystem.from_uri`` reads it back.

Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping

GIT_SHA_ENV = "META_STUDY_GIT_SHA"
RESEARCHER_ENV = "META_STUDY_RESEARCHER"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]      # meta_study/


def git_sha(repo: Path | None = None) -> str:
    """The commit the code came from: ``$META_STUDY_GIT_SHA`` (set at submit time), else
    ``git rev-parse HEAD`` in the checkout with ``-dirty`` when it differs from that commit (as the
    submit wrapper marks it; a sweep run from an edited checkout was recorded as the clean commit;
    :data:`UNKNOWN_STATE` when ``git status`` gives no answer), else ``unknown`` (the submit
    wrapper uploads a job's working dir without .git). The checkout is meta_study's parent, or a
    larger one above it that tracks meta_study (a monorepo; it was ``unknown``), owned by this user
    or not. One ``git status``: ~20 ms on this repo."""
    env = os.environ.get(GIT_SHA_ENV, "").strip()
    if env:
        return env
    root = repo or PACKAGE_ROOT.parent
    if (root / ".git").exists():     # a directory, or a worktree's file
        return checkout_sha(root)
    if repo is None and enclosing_checkout(root) is not None and git_output(
            root, "ls-files", "--error-unmatch", "--", f"{PACKAGE_ROOT.name}/__init__.py") is not None:
        # meta_study inside a larger checkout (a monorepo) that tracks it: that checkout's commit. Not a
        # copy that a checkout holds untracked (a job's upload, a venv's site-packages): "unknown"
        return checkout_sha(root)
    return "unknown"


def enclosing_checkout(path: Path) -> Path | None:
    """The nearest directory at or above ``path`` that holds ``.git`` (the checkout ``path`` is in),
    or None."""
    path = Path(path).resolve()
    return next((d for d in (path, *path.parents) if (d / ".git").exists()), None)


#: seconds ``git rev-parse`` / ``git status`` may take (a huge untracked tree, a slow filter or
#: fsmonitor hook); then the commit, or whether the tree is clean, is recorded as unknown
GIT_TIMEOUT_S = {"rev-parse": 10.0, "status": 20.0}
#: the suffix of a commit whose tree could not be compared with it (``git status`` failed or took
#: longer than :data:`GIT_TIMEOUT_S`); such a tree was recorded as clean, edited or not
UNKNOWN_STATE = "-unknown-state"


def checkout_sha(root: Path) -> str:
    """``git rev-parse HEAD`` in ``root`` with ``-dirty`` when the tree differs from it
    (:func:`git_dirty`), :data:`UNKNOWN_STATE` when that could not be told; ``unknown`` when there
    is no commit to name (no checkout, no git, no answer in time)."""
    out = git_output(root, "rev-parse", "HEAD")
    sha = out.decode("ascii", "replace").strip() if out is not None else ""
    if not sha:
        return "unknown"
    dirty = git_dirty(root)
    return sha + ("-dirty" if dirty else UNKNOWN_STATE if dirty is None else "")


def git_output(cwd: Path, *args: str) -> bytes | None:
    """``git ARGS`` in ``cwd``: its stdout as bytes (file names need not be UTF-8, and with
    ``core.quotePath=false`` git prints them raw: decoding them was a UnicodeDecodeError), or None
    when git is missing, fails or outlives its timeout. It runs in a session of its own, killed
    whole at the timeout: a filter or hook that git started held the output pipes open, and the
    wait went on until it exited. Without git's optional locks (``GIT_OPTIONAL_LOCKS=0``, what
    editors and prompts set): ``git status`` otherwise takes ``.git/index.lock`` to write back the
    index it refreshed, and a ``git commit`` or ``git add`` the user ran meanwhile in that checkout
    failed ("Unable to create '.git/index.lock': File exists"); reading is all provenance needs."""
    import signal

    # A checkout owned by another user (a container running as root on a bind-mounted checkout, a
    # lab's shared one) is refused by git ("detected dubious ownership"): every sweep from it was
    # recorded as git "unknown". Trusted here for this checkout only: its code is what runs.
    top = enclosing_checkout(cwd)
    trust = ["-c", f"safe.directory={top}"] if top is not None else []
    try:
        proc = subprocess.Popen(["git", *trust, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=GIT_TIMEOUT_S.get(args[0], 20.0))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        return None
    return out if proc.returncode == 0 else None


def git_dirty(repo: Path) -> bool | None:
    """Whether the checkout differs from its commit: changes to tracked files, or untracked files
    that are not ignored (None: not known: not a git checkout, or ``git status`` failed or took
    longer than :data:`GIT_TIMEOUT_S`). Untracked files count: ``ray job submit --working-dir``
    uploads every file .gitignore does not exclude, so a new sweep script ran under a commit that
    does not hold it, recorded as clean."""
    out = git_output(repo, "status", "--porcelain", "--untracked-files=normal")
    return None if out is None else bool(out.strip())


def researcher(flag: str | None = None) -> str:
    """Who ran the sweep: the flag, else ``$META_STUDY_RESEARCHER``, else ``$USER``, else the login."""
    for v in (flag, os.environ.get(RESEARCHER_ENV), os.environ.get("USER")):
        if v and v.strip():
            return v.strip()
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (a container's arbitrary uid)
        return "unknown"


def code_files(extra: Iterable[str | Path] = ()) -> list[Path]:
    """The files whose content is the code version: meta_study's Python and YAML, plus ``extra``
    (the sweep script)."""
    files = sorted(p for p in PACKAGE_ROOT.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()
                   and "__pycache__" not in p.parts)
    return files + sorted(Path(e).resolve() for e in extra if Path(e).is_file())


def code_version(extra: Iterable[str | Path] = ()) -> str:
    """sha256 (first 16 hex digits) of the code that runs: ~150 files, ~10 ms. Paths are relative
    to meta_study's parent, so the same tree gives the same version wherever it is unpacked."""
    h = hashlib.sha256()
    base = PACKAGE_ROOT.parent
    for p in code_files(extra):
        try:
            rel = p.relative_to(base).as_posix()
        except ValueError:
            rel = p.name
        # os.fsencode: a file name that is not UTF-8 (café.py saved as Latin-1) is bytes it cannot
        # encode (UnicodeEncodeError: every sweep's start crashed); the same bytes for UTF-8 names
        h.update(os.fsencode(rel) + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


#: The packages whose versions a trial's ``environment`` records: what decides its numbers.
ENV_PACKAGES = ("meta-study", "torch", "timm", "numpy", "ray", "mlflow", "pyarrow")


def trial_environment() -> dict[str, str]:
    """Where this process runs and with what, as the ``environment`` tag of a trial's run: the
    host, Python, :data:`ENV_PACKAGES`' installed versions (``missing`` where one is not
    installed), and, where torch is already imported (a trial has), its CUDA and cuDNN versions
    and the devices it sees (``cpu`` without a GPU). Never imports torch itself: the core install
    has none, and importing it costs ~1 s. 4-16 ms (package metadata; the trial reads it once)."""
    import importlib.metadata as md
    import platform
    import socket

    env = {"host": socket.gethostname(), "python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in ENV_PACKAGES:
        try:
            env[name] = md.version(name)
        except md.PackageNotFoundError:
            env[name] = "missing"
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            env["torch"] = str(torch.__version__)      # with its build: 2.14.1+cu130, not 2.14.1
            env["cuda"] = str(torch.version.cuda or "none")
            cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
            env["cudnn"] = str(cudnn or "none")
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            names = [torch.cuda.get_device_name(i) for i in range(n)]
            # "NVIDIA H100 80GB HBM3 x2": one entry per kind, in order of first appearance
            env["devices"] = ", ".join(f"{d} x{names.count(d)}" for d in dict.fromkeys(names)) or "cpu"
        except Exception as e:  # noqa: BLE001 - a broken driver must not fail the trial: say it instead
            env["devices"] = f"unknown ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
    return env


def script_of(obj: Any) -> str | None:
    """The file a sweep spec's search space was defined in (its script), if there is one."""
    mod = sys.modules.get(getattr(obj, "__module__", "") or "")
    f = getattr(mod, "__file__", None)
    return f if f and Path(f).is_file() else None


def s3_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint the AWS SDKs (boto3, pyarrow) use when it is not AWS's: ``AWS_ENDPOINT_URL_S3``,
    else ``AWS_ENDPOINT_URL``; None for AWS itself."""
    env = os.environ if environ is None else environ
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def full_uri(path: str, filesystem_type: str, storage_uri: str, environ: Mapping[str, str] | None = None) -> str:
    """A full URI of ``path`` (as a Ray ``Checkpoint`` holds it: ``bucket/key`` on an object
    store, an absolute path locally) on the filesystem of ``storage_uri``.

    ``s3://bucket/key`` gets ``?endpoint_override=...`` when the endpoint is not AWS's (from the
    storage URI's own query, else the environment), which ``pyarrow.fs.FileSystem.from_uri`` reads.
    """
    if filesystem_type == "local" or "://" not in storage_uri:
        return Path(path).resolve().as_uri() if not path.startswith("file://") else path
    parts = urllib.parse.urlsplit(storage_uri)
    scheme = parts.scheme
    if path.startswith(f"{scheme}://"):
        path = path[len(scheme) + 3:]     # a URI already
    else:
        # a path (as pyarrow gives it, unescaped): percent-encoded as a URI's path. A sweep named
        # "lr sweep" or "café" gave s3://lab/tune/lr sweep/..., which from_uri refuses ("Cannot
        # parse URI"), and a name with "%20" in it was read back as another path
        path = urllib.parse.quote(path, safe="/=,:+@")
    query = dict(urllib.parse.parse_qsl(parts.query))
    keep = {k: v for k, v in query.items() if k in ("endpoint_override", "scheme", "region")}
    if scheme == "s3" and "endpoint_override" not in keep:
        endpoint = s3_endpoint(environ)
        if endpoint:
            keep["endpoint_override"] = endpoint
    q = urllib.parse.urlencode(sorted(keep.items()))
    return f"{scheme}://{path.lstrip('/')}" + (f"?{q}" if q else "")
