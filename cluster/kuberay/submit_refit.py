"""Submit one refit RayJob and wait for it to finish: the container of the refit CronJob.

    python cluster/kuberay/submit_refit.py --template /etc/meta-study/rayjob-refit.yaml

Runs in the meta-study image under the ServiceAccount of ``cronjob-refit.yaml``, whose Role grants
exactly create, get, list and delete on ``rayjobs.ray.io``. Steps:

1. If a refit RayJob (label ``app.kubernetes.io/name=meta-study-refit``) is not finished, submit
   nothing and exit 0. The CronJob's ``concurrencyPolicy: Forbid`` only covers its own pods; this
   also covers a refit whose waiting pod was killed (node drain, deadline). One that KubeRay has
   given no status ``UNSEEN_S`` after its creation is stuck: exit 1, submitting nothing.
2. Delete finished refit RayJobs beyond the newest ``--keep``. KubeRay already deleted their
   clusters (``shutdownAfterJobFinishes``); the objects only hold status.
3. Create the RayJob from the template. Its ``metadata.generateName`` gives every run a unique name.
4. Poll until the RayJob's deployment is Complete or Failed (exit 1 when it is stuck, as in 1).
   Exit 0 only if the Ray job SUCCEEDED, so a failed refit fails the CronJob's Job, where
   alerting sees it.

Standard library and PyYAML only (both are in every Ray image). The API server, token and CA
default to the pod's in-cluster ServiceAccount; tests point ``--api`` at a fake server.
"""

from __future__ import annotations

import argparse
import calendar
import http.client
import json
import math
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LABEL = "app.kubernetes.io/name=meta-study-refit"
#: KubeRay's JobDeploymentStatus values of a RayJob still under way ("": not seen by the operator
#: yet). Every other value is final for a refit: Complete, Failed, and also ValidationFailed (a
#: bad spec: no cluster, for good) and Suspended, which once blocked every later refit while the
#: CronJob still exited 0. Unknown future values count as final too: a refit is never skipped
#: for ever on a state this script does not know.
ACTIVE = {"", "New", "Initializing", "Running", "Retrying", "Waiting", "Suspending"}
#: Seconds a RayJob may stay without a deployment status before that counts as stuck. The operator
#: gives a new RayJob one within seconds, except when it never will: no operator (uninstalled,
#: crashed, watching other namespaces) or a RayJob it refuses (KubeRay 1.x leaves an invalid spec or
#: metadata, e.g. a name over its length limit, with an event only). That refit counted as running
#: for ever: its pod waited out its deadline, and every later schedule skipped with exit 0.
UNSEEN_S = 900


class KubeApi:
    """The few Kubernetes API calls this script makes, on ``rayjobs.ray.io`` in one namespace."""

    def __init__(self, base: str, namespace: str, token_file: Path | None, ca_file: Path | None) -> None:
        self.root = f"{base.rstrip('/')}/apis/ray.io/v1/namespaces/{namespace}/rayjobs"
        self.token_file = token_file
        self.ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    def _call(self, method: str, path: str = "", body: dict | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self.token_file:
            # Re-read on every call: projected ServiceAccount tokens are rotated (~hourly) while a
            # refit can take hours.
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.root + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
            return json.load(resp)

    def list_refits(self) -> list[dict[str, Any]]:
        return self._call("GET", "?" + urllib.parse.urlencode({"labelSelector": LABEL}))["items"]

    def create(self, rayjob: dict) -> dict[str, Any]:
        return self._call("POST", body=rayjob)

    def get(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/{name}")

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/{name}", body={"propagationPolicy": "Background"})


def deployment_status(rayjob: dict) -> str:
    """KubeRay's ``status.jobDeploymentStatus``; ``""`` for a RayJob the operator has not seen yet."""
    return (rayjob.get("status") or {}).get("jobDeploymentStatus", "")


def unseen_for(rayjob: dict, now: float) -> float:
    """Seconds since ``rayjob`` was created while the operator has given it no status; 0 when it has
    one (or its creation time is not known)."""
    stamp = rayjob.get("metadata", {}).get("creationTimestamp")
    if deployment_status(rayjob) or not isinstance(stamp, str):
        return 0.0
    try:
        created = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0.0
    return max(0.0, now - created)


def stuck(name: str, created: str, then: str) -> SystemExit:
    """Exit 1 for a RayJob the operator has given no status since ``created``."""
    return SystemExit(f"submit_refit: RayJob {name} (created {created}) has no status from the KubeRay operator "
                      f"after {UNSEEN_S // 60} min: is the operator running and watching this namespace, and does "
                      f"it accept the RayJob (kubectl describe rayjob {name})? {then}")


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} submit_refit: {msg}", flush=True)


def prune(api: KubeApi, refits: list[dict], keep: int) -> None:
    """Delete finished refit RayJobs except the newest ``keep``."""
    done = [r for r in refits if deployment_status(r) not in ACTIVE]
    done.sort(key=lambda r: r["metadata"]["creationTimestamp"], reverse=True)
    for r in done[keep:]:
        log(f"deleting finished {r['metadata']['name']}")
        try:
            api.delete(r["metadata"]["name"])
        except urllib.error.HTTPError as e:
            if e.code != 404:   # 404: deleted meanwhile (by hand, another pruner): gone as asked
                raise


def wait(api: KubeApi, name: str, poll_s: float, max_errors: int) -> dict[str, Any]:
    """Poll RayJob ``name`` until its deployment is terminal; API errors are retried
    ``max_errors`` times in a row (an API server restart must not fail a 6-hour refit)."""
    errors, last, last_error = 0, None, ""
    while True:
        try:
            rayjob = api.get(name)
            errors = 0
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise SystemExit(f"submit_refit: RayJob {name} was deleted while running") from None
            if e.code == 403:
                raise SystemExit(f"submit_refit: forbidden to get RayJob {name}; check the Role") from None
            errors, last_error = errors + 1, reason(e)
            rayjob = None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ValueError) as e:
            # HTTPException (IncompleteRead, BadStatusLine) and ValueError (JSON cut off): an answer
            # cut short by an API server restart, which once ended this wait with a traceback
            errors, last_error = errors + 1, reason(e)
            rayjob = None
        if errors > max_errors:
            # the errors are retried silently: this line is all the CronJob's log says of them (an
            # expired token's HTTP 401 was "21 API errors in a row" and nothing more)
            raise SystemExit(f"submit_refit: {errors} API errors in a row while waiting for {name} "
                             f"at {api.root} (the last: {last_error})")
        if rayjob is not None:
            status = deployment_status(rayjob)
            if status != last:
                log(f"{name}: {status or 'New'} (job {rayjob.get('status', {}).get('jobStatus') or '-'})")
                last = status
            if status not in ACTIVE:
                return rayjob
            if unseen_for(rayjob, time.time()) > UNSEEN_S:
                raise stuck(name, rayjob["metadata"]["creationTimestamp"], "stopped waiting for it")
        time.sleep(poll_s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--template", type=Path, required=True, help="RayJob manifest (rayjob-refit.yaml)")
    p.add_argument("--namespace", help="default: the pod's namespace, else the template's")
    p.add_argument("--keep", type=int, default=10, help="finished refit RayJobs to keep (default 10)")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between status checks (default 30)")
    p.add_argument("--max-api-errors", type=int, default=20, help="consecutive API errors tolerated")
    p.add_argument("--api", help="API server URL (default: in-cluster https://$KUBERNETES_SERVICE_HOST)")
    p.add_argument("--token-file", type=Path, help="bearer token (default: the pod's ServiceAccount token)")
    p.add_argument("--ca-file", type=Path, help="CA bundle of the API server (default: the pod's)")
    return p.parse_args(argv)


def connect(args: argparse.Namespace, rayjob: dict) -> KubeApi:
    """The API client: in-cluster ServiceAccount defaults unless ``--api`` is given. Sets the
    RayJob's namespace to the one the client works in."""
    in_cluster = args.api is None
    if in_cluster:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        args.api = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        args.token_file = args.token_file or SERVICE_ACCOUNT / "token"
        args.ca_file = args.ca_file or SERVICE_ACCOUNT / "ca.crt"
    namespace = args.namespace or (
        (SERVICE_ACCOUNT / "namespace").read_text().strip() if in_cluster
        else rayjob["metadata"].get("namespace") or "default")   # `namespace:` left empty: None
    rayjob["metadata"]["namespace"] = namespace
    return KubeApi(args.api, namespace, args.token_file, args.ca_file)


def refuse(msg: str) -> SystemExit:
    """A user error: one line on stderr, exit 2 (a missing template or token file, or no API
    outside a pod, was a traceback)."""
    print(f"submit_refit: {msg}", file=sys.stderr)
    return SystemExit(2)


def check_ranges(args: argparse.Namespace) -> None:
    """One line for an option out of range: ``--keep -1`` deleted the oldest finished refit only,
    ``--poll 0`` polled the API server in a busy loop (``nan``: time.sleep's ValueError after the
    RayJob was created), ``--max-api-errors -1`` gave up on the first poll."""
    for option, value in (("--keep", args.keep), ("--max-api-errors", args.max_api_errors)):
        if value < 0:
            raise refuse(f"{option} must be an integer >= 0, got {value}")
    if not (math.isfinite(args.poll) and args.poll > 0):
        raise refuse(f"--poll must be a finite number of seconds > 0, got {args.poll:g}")


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's reason and line in a few words: ``line 2: expected a single document in the stream``."""
    words = getattr(e, "context", None) or getattr(e, "problem", None) or type(e).__name__
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f"line {mark.line + 1}: {words}" if mark is not None else words


def reason(e: Exception) -> str:
    """An API call's failure in a few words: the HTTP status, else the reason (a refused connection)."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    return str(getattr(e, "reason", None) or e) or type(e).__name__   # TimeoutError() says nothing itself


def api_error(what: str, api: str, e: Exception) -> SystemExit:
    """One line for an API call that failed: the address and the HTTP status (or the reason)."""
    return SystemExit(f"submit_refit: cannot {what} at {api}: {reason(e)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_ranges(args)
    try:
        rayjob = yaml.safe_load(args.template.read_text())
    except yaml.YAMLError as e:   # said as "not YAML" alone: a template with two documents, or a typo, said no more
        raise refuse(f"--template {args.template}: not YAML ({yaml_problem(e)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise refuse(f"--template {args.template}: {getattr(e, 'strerror', None) or 'not UTF-8 text'}") from None
    metadata = rayjob.get("metadata") if isinstance(rayjob, dict) else None
    if not isinstance(metadata, dict) or rayjob.get("kind") != "RayJob" or "generateName" not in metadata:
        raise refuse(f"--template {args.template}: not a RayJob with metadata.generateName")
    # metadata.name wins over generateName: the first refit took the name, and every later create
    # failed (HTTP 409 AlreadyExists) until someone deleted it by hand
    if metadata.get("name"):
        raise refuse(f"--template {args.template}: metadata.name is set ({metadata['name']}); remove it, so "
                     "that generateName gives every refit a name of its own")
    if not isinstance(metadata.get("labels") or {}, dict):
        raise refuse(f"--template {args.template}: metadata.labels is not a mapping")
    # `labels:` left empty is None (a traceback: 'NoneType' object has no attribute 'update')
    metadata["labels"] = {**(metadata.get("labels") or {}), **dict([LABEL.split("=")])}
    if args.api is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise refuse("not in a pod (no KUBERNETES_SERVICE_HOST): pass --api and --token-file")
    if args.api is None and not os.environ.get("KUBERNETES_SERVICE_PORT"):   # a pod sets both; was a KeyError
        raise refuse("KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT is not: set it, or pass --api "
                     "and --token-file")

    for option, path in (("--token-file", args.token_file), ("--ca-file", args.ca_file)):
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise refuse(f"{option} {path}: not a readable file")
    given_ca = args.ca_file   # connect() fills in the pod's
    try:
        api = connect(args, rayjob)
    except (OSError, ssl.SSLError) as e:   # the CA bundle, or the pod's namespace file
        # a --ca-file that holds no certificate, given outside a pod, was said as "cannot read the
        # pod's ServiceAccount files"
        what = f"--ca-file {given_ca}" if given_ca else "the pod's ServiceAccount files"
        raise SystemExit(f"submit_refit: cannot read {what}: {e}") from None

    try:
        refits = api.list_refits()
    except (OSError, ValueError, http.client.HTTPException) as e:   # URLError, HTTPError, a timeout; not JSON; cut off
        raise api_error("list RayJobs", args.api, e) from None
    running = [r["metadata"]["name"] for r in refits if deployment_status(r) in ACTIVE]
    for r in refits:
        if unseen_for(r, time.time()) > UNSEEN_S:
            raise stuck(r["metadata"]["name"], r["metadata"]["creationTimestamp"], "not submitting another")
    if running:
        log(f"not submitting: refit {', '.join(running)} is still running")
        return 0
    try:
        prune(api, refits, args.keep)
    except (OSError, ValueError, http.client.HTTPException) as e:   # HTTPError (a Role without delete), URLError, a timeout
        raise api_error("delete finished RayJobs", args.api, e) from None
    try:
        name = api.create(rayjob)["metadata"]["name"]
    except (OSError, ValueError, http.client.HTTPException) as e:   # HTTPError: a Role without create, an invalid spec (422)
        raise api_error("create the RayJob", args.api, e) from None
    log(f"created RayJob {name} in {rayjob['metadata']['namespace']}")
    final = wait(api, name, args.poll, args.max_api_errors)
    status = final.get("status", {})
    job_status, reason = status.get("jobStatus", ""), status.get("reason", "")
    log(f"{name} finished: deployment {deployment_status(final)}, job {job_status or '-'}"
        + (f", reason {reason}: {status.get('message', '')}" if reason else ""))
    return 0 if job_status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
