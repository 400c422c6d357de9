"""Cluster configs (cluster/): what can be checked without a cloud or a Kubernetes cluster.

- The Ray cluster-launcher YAML validates against the schema shipped in the installed ray
  (ray/autoscaler/ray-schema.json) and passes Ray's own config preparation; broken copies fail.
  Its secret-fetching initialization command runs for real against a stub `aws`.
- The Kubernetes manifests parse and have the structure the operator and scripts rely on: the
  ray.io/v1 fields, GPU limits, autoscaling, secrets only by reference, images on this Ray.
- The refit CronJob's submitter (cluster/kuberay/submit_refit.py) runs against a fake API server
  and uses only the verbs its Role grants.
- cluster/local-up.sh and local-down.sh run for real: a Ray head and an MLflow server come up on
  free ports, answer, and are gone afterwards, also when startup fails half-way.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import psutil
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "ray-cluster-aws.yaml"
KUBE = {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(CLUSTER.glob("*/*.yaml"))}
NAMESPACE = "meta-study"
TRACKING_URI = "http://mlflow.meta-study.svc:5000"
RAY_TOKEN_SECRET = "ray-auth-token"
#: `meta-study refit`'s arguments: ingest MLflow, publish there, keep versions on a volume (--out is a
#: local directory), fan out to the job's own cluster.
REFIT = ("python analysis/refit.py --store s3://BUCKET/meta-study/store --source http://mlflow.meta-study.svc:5000 "
         "--tracking-uri http://mlflow.meta-study.svc:5000 --out /refits --address auto")
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|ACCESS_KEY|PGPASS", re.I)
#: Ray-running images must carry this Ray and this Python: a cluster needs both to match its drivers.
RAY_IMAGE = re.compile(r"(?:^rayproject/ray:|/meta-study:[\w.]+-ray)(\d+\.\d+\.\d+)-py(\d)(\d+)-(cpu|gpu)$")
PY_TAG = (str(sys.version_info.major), str(sys.version_info.minor))


# --- (a) the Ray cluster launcher -------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_schema() -> dict:
    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


@pytest.fixture
def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def test_launcher_validates_against_rays_schema(launcher, ray_schema):
    jsonschema.Draft7Validator.check_schema(ray_schema)
    jsonschema.validate(launcher, ray_schema)
    # What `ray up` does before touching the cloud: defaults, merged setup commands, cross-field checks.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(launcher))
    validate_config(prepared)
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def _drop_provider(c): del c["provider"]
def _typo_top_level(c): c["max_worker"] = c.pop("max_workers")
def _gpu_count_as_string(c): c["available_node_types"]["gpu"]["resources"]["GPU"] = "1"
def _no_node_config(c): del c["available_node_types"]["cpu"]["node_config"]
def _command_not_string(c): c["setup_commands"].append({"pip": "install"})
def _unknown_docker_key(c): c["docker"]["gpus"] = "all"


@pytest.mark.parametrize("breakage", [_drop_provider, _typo_top_level, _gpu_count_as_string, _no_node_config,
                                      _command_not_string, _unknown_docker_key])
def test_broken_launcher_copies_fail_validation(launcher, ray_schema, breakage):
    broken = copy.deepcopy(launcher)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_schema)


def test_launcher_node_types(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # drivers only; tasks never land on the head
    assert "InstanceMarketOptions" not in head["node_config"]  # the head is never spot
    gpu = types["gpu"]
    assert gpu["min_workers"] == 0 and 0 < gpu["max_workers"] <= launcher["max_workers"]
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert types["cpu"]["min_workers"] == 0 and "GPU" not in types["cpu"]["resources"]
    assert sum(t.get("max_workers", 0) for t in types.values()) <= launcher["max_workers"]
    images = [launcher["docker"]["image"], gpu["docker"]["worker_image"]]
    for image in images:
        m = RAY_IMAGE.search(image)
        assert m and m.group(1) == ray.__version__ and m.groups()[1:3] == PY_TAG, image
    assert gpu["docker"]["worker_image"].endswith("-gpu")


def test_launcher_installs_the_project_and_sets_mlflow_env(launcher):
    # the repository is mounted, and every node installs that mount with the training extra (nodes
    # run sweeps; the core alone has no torch)
    (mount,) = [k for k, v in launcher["file_mounts"].items() if v == "."]
    assert f"pip install --quiet -e {mount}'[train]'" in launcher["setup_commands"]
    assert f"pip install --quiet -e {mount}'[train]'" in launcher["available_node_types"]["gpu"]["worker_setup_commands"]
    # Credentials only by reference: nothing in the file assigns a secret-looking variable.
    text = LAUNCHER.read_text()
    assert not re.search(r"(MLFLOW_TRACKING_(PASSWORD|TOKEN)|RAY_AUTH_TOKEN|AWS_SECRET_ACCESS_KEY)\s*[=:]\s*\S", text)
    starts = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts and "--autoscaling-config=~/ray_bootstrap_config.yaml" in starts


def test_launcher_initialization_command_writes_a_private_env_file(launcher, tmp_path):
    """Run the secret-fetching command with a stub `aws` that returns a secret as Secrets Manager would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    secret = {"MLFLOW_TRACKING_USERNAME": "sweeper", "MLFLOW_TRACKING_PASSWORD": "p@ss w=rd", "RAY_AUTH_TOKEN": "ab" * 32}
    (bin_dir / "aws").write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "secretsmanager get-secret-value" ] || exit 3\n'
        'case "$*" in *"--secret-id meta-study/cluster"*"--query SecretString --output text"*) ;; *) exit 4 ;; esac\n'
        f"cat <<'EOF'\n{json.dumps(secret)}\nEOF\n")
    (bin_dir / "aws").chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home)}
    for cmd in launcher["initialization_commands"]:
        subprocess.run(["bash", "-c", cmd], env=env, check=True, timeout=60)
    env_file = home / ".meta-study" / "cluster.env"
    assert env_file.read_text().splitlines() == [f"{k}={v}" for k, v in secret.items()]  # docker --env-file format
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700


def test_aws_iam_policies_are_valid_json():
    for path in sorted((CLUSTER / "aws").glob("*.json")):
        policy = json.loads(path.read_text())
        assert policy["Version"] == "2012-10-17" and policy["Statement"], path
    head = json.loads((CLUSTER / "aws" / "head-policy.json").read_text())
    actions = {a for s in head["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "iam:PassRole", "ssm:GetParameters"} <= actions


# --- (b) Kubernetes manifests -------------------------------------------------------------------------

# ray.io/v1 fields used here (ray-operator/apis/ray/v1/raycluster_types.go, rayjob_types.go): a typo
# would be pruned silently by the API server, so it is caught here.
RAYCLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                   "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams",
                "template", "scaleStrategy"}
AUTOSCALER = {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext",
              "idleTimeoutSeconds", "upscalingMode"}
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
               "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
               "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend"}


def docs_of(kind: str) -> list[dict]:
    return [d for docs in KUBE.values() for d in docs if d["kind"] == kind]


def one(kind: str) -> dict:
    (doc,) = docs_of(kind)
    return doc


def containers(obj) -> list[dict]:
    """Every container spec anywhere in a manifest."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += value
            else:
                found += containers(value)
    elif isinstance(obj, list):
        for value in obj:
            found += containers(value)
    return found


def check_ray_cluster_spec(spec: dict) -> None:
    assert set(spec) <= RAYCLUSTER_SPEC
    assert spec["rayVersion"] == ray.__version__
    # Ray's job API runs arbitrary code: every cluster takes requests with the token only
    assert spec["authOptions"] == {"mode": "token", "secretName": RAY_TOKEN_SECRET}
    assert spec["enableInTreeAutoscaling"] is True and set(spec["autoscalerOptions"]) <= AUTOSCALER
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP and isinstance(head["rayStartParams"], dict)
    assert head["rayStartParams"]["num-cpus"] == "0"
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"]
    workdir = re.search(r"^WORKDIR (\S+)", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    for c in containers(spec):
        assert c["workingDir"] == workdir  # the image's checkout: job drivers resolve sweeps/, analysis/ there
        assert {"secretRef": {"name": "mlflow-credentials"}} in c["envFrom"]   # credentials by reference
        # object-store keys and endpoint (MinIO, Ceph) from a Secret every Ray pod reads, where one
        # exists (on EKS the ServiceAccount's role instead): never in a job's runtime_env
        assert {"secretRef": {"name": "object-store-credentials", "optional": True}} in c["envFrom"]


def test_every_manifest_has_the_basics():
    for docs in KUBE.values():
        for d in docs:
            assert d["apiVersion"] and d["metadata"]["namespace"] == NAMESPACE
            assert d["metadata"].get("name") or d["metadata"].get("generateName")
            assert d["kind"] != "Secret"  # secrets are created with kubectl, never committed


def test_ray_pods_take_connections_only_from_their_peers():
    """The NetworkPolicy fences every Ray pod: Ray pods reach each other on any port, this
    namespace's pods and the KubeRay operator reach the job API only, nobody else anything."""
    pol = one("NetworkPolicy")
    ray_pods = {"ray.io/is-ray-node": "yes"}   # the label KubeRay gives every Ray pod
    assert pol["spec"]["podSelector"] == {"matchLabels": ray_pods}
    assert "Ingress" in pol["spec"]["policyTypes"]
    rules = pol["spec"]["ingress"]
    for rule in rules:
        assert rule.get("from"), "a rule without 'from' admits every source"
        for peer in rule["from"]:
            assert "ipBlock" not in peer, peer
            if "namespaceSelector" in peer:   # one named namespace, never all of them
                assert list(peer["namespaceSelector"]["matchLabels"]) == ["kubernetes.io/metadata.name"]
        unrestricted = rule["from"] == [{"podSelector": {"matchLabels": ray_pods}}]
        if not unrestricted:
            assert rule.get("ports") == [{"protocol": "TCP", "port": 8265}], rule
    # every Ray pod of the manifests carries no opt-out of the token
    for d in docs_of("RayCluster") + docs_of("RayJob"):
        for c in containers(d):
            assert all(e["name"] not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN") for e in c.get("env", [])), c["name"]
    # the token's Secret is created by hand, as the docs say
    assert f"create secret generic {RAY_TOKEN_SECRET}" in (REPO / "docs" / "cluster.md").read_text()


def test_raycluster_autoscales_cpu_and_gpu_workers():
    rc = one("RayCluster")
    check_ray_cluster_spec(rc["spec"])
    # GPU workers ask for GPUs and run the CUDA image; CPU workers ask for none
    kinds = {bool(c["resources"]["limits"].get("nvidia.com/gpu")): c for g in rc["spec"]["workerGroupSpecs"]
             for c in containers(g)}
    assert set(kinds) == {True, False} and kinds[True]["image"].endswith("-gpu") and not kinds[False]["image"].endswith("-gpu")
    (account,) = [d["metadata"]["name"] for d in KUBE["raycluster.yaml"] if d["kind"] == "ServiceAccount"]
    assert all(g["template"]["spec"]["serviceAccountName"] == account for g in rc["spec"]["workerGroupSpecs"])


def test_rayjob_runs_the_refit_contract_and_cleans_up():
    job = one("RayJob")
    assert set(job["spec"]) <= RAYJOB_SPEC
    assert job["spec"]["entrypoint"] == REFIT     # the render test fills it in; the local test runs it
    assert job["metadata"]["generateName"] == "meta-study-refit-"   # what the submitter prunes by
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["activeDeadlineSeconds"] > 0
    check_ray_cluster_spec(job["spec"]["rayClusterSpec"])
    # --out lives on the volume, mounted where the driver runs (the head).
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == "/refits"]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == one("PersistentVolumeClaim")["metadata"]["name"]


def test_cronjob_never_overlaps_and_has_least_privilege():
    cron = one("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["activeDeadlineSeconds"] > one("RayJob")["spec"]["activeDeadlineSeconds"]
    pod = job["template"]["spec"]
    (role,) = docs_of("Role")
    (rule,) = role["rules"]
    assert rule == {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list", "delete"]}
    binding = one("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}]
    (c,) = pod["containers"]
    template = c["command"][c["command"].index("--template") + 1]
    assert (REPO / c["command"][1]).is_file()  # the script the image runs is in the repo
    (mount,) = c["volumeMounts"]
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and template == f"{mount['mountPath']}/rayjob-refit.yaml"
    assert volume["configMap"]["name"] in (REPO / "docs" / "cluster.md").read_text()   # docs say how to create it


def test_mlflow_server_uses_postgres_and_s3_with_secrets_by_reference():
    dep = one("Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = " ".join(c["args"])
    services = {s["metadata"]["name"]: s for s in docs_of("Service")}
    # the backend is the postgres Service, with no password in the URI (PGPASSWORD, below)
    backend = urllib.parse.urlsplit(next(a for a in c["args"] if a.startswith("--backend-store-uri=")).split("=", 1)[1])
    assert backend.hostname.split(".")[0] in services and backend.password is None
    assert backend.port == services[backend.hostname.split(".")[0]]["spec"]["ports"][0]["port"]
    assert "--serve-artifacts" in args
    # MLflow 3's host check must accept the name the Ray pods use.
    allowed = next(a for a in c["args"] if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert urllib.parse.urlsplit(TRACKING_URI).netloc in allowed
    env = {e["name"]: e for e in c["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-postgres"
    assert {"secretRef": {"name": "mlflow-s3", "optional": True}} in c["envFrom"]
    # the URI the Ray pods use reaches the mlflow Service on its port
    uri = urllib.parse.urlsplit(TRACKING_URI)
    assert uri.port == services[uri.hostname.split(".")[0]]["spec"]["ports"][0]["port"]
    pg = one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e for e in pg["env"]}["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-postgres"


def test_no_secret_values_inline():
    for name, docs in KUBE.items():
        for c in containers(docs):
            for e in c.get("env", []):
                if SECRETISH.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], (name, e["name"])
    for path in [*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.service"), LAUNCHER]:
        text = path.read_text()
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), path  # user:password@ in a URI
        assert not re.search(r"(?i)\b(password|secret|token)\s*[:=]\s*['\"][^'\"$]+['\"]", text), path


def test_ray_images_pin_this_ray_and_python():
    ray_images = [c["image"] for d in docs_of("RayCluster") + docs_of("RayJob") + docs_of("CronJob")
                  for c in containers(d)]
    assert len(ray_images) == 6  # RayCluster: head, cpu, gpu; RayJob: head, cpu; CronJob: submitter
    for image in ray_images:
        m = RAY_IMAGE.search(image)
        assert m and m.group(1) == ray.__version__ and m.groups()[1:3] == PY_TAG, image
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py{''.join(PY_TAG)}-${{FLAVOR}}" in dockerfile
    assert "['optional-dependencies']['train']" in dockerfile     # the image trains: torch, timm


def test_render_fills_in_site_names(tmp_path):
    env = dict(os.environ, BUCKET="lab-bucket", REGISTRY="123456789012.dkr.ecr.us-west-2.amazonaws.com")
    subprocess.run(["bash", str(CLUSTER / "render.sh"), str(tmp_path)], env=env, check=True, timeout=60)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
            assert "BUCKET" not in code and "REGISTRY" not in code, path
    job = yaml.safe_load((tmp_path / "kuberay" / "rayjob-refit.yaml").read_text())
    assert job["spec"]["entrypoint"] == REFIT.replace("BUCKET", "lab-bucket")
    images = {c["image"] for c in containers(yaml.safe_load((tmp_path / "kuberay" / "rayjob-refit.yaml").read_text()))}
    (image,) = images
    assert image.startswith("123456789012.dkr.ecr.us-west-2.amazonaws.com/meta-study:") and RAY_IMAGE.search(image)
    policy = json.loads((tmp_path / "aws" / "worker-policy.json").read_text())
    assert "arn:aws:s3:::lab-bucket/meta-study/*" in json.dumps(policy)
    bad = subprocess.run(["bash", str(CLUSTER / "render.sh"), str(tmp_path / "x")], capture_output=True, text=True,
                         env=dict(env, BUCKET="Bad#Bucket"), timeout=60)
    assert bad.returncode == 2 and "not an S3 bucket name" in bad.stderr


# --- the refit CronJob's submitter against a fake Kubernetes API ------------------------------------

class FakeRayJobApi:
    """Just enough of the Kubernetes API for rayjobs.ray.io in one namespace. A created RayJob
    moves one deployment state further on every GET, ending with ``final_job_status``."""

    STATES = ["", "Initializing", "Running", "Complete"]

    def __init__(self, final_job_status: str = "SUCCEEDED") -> None:
        self.jobs: dict[str, dict] = {}
        self.calls: list[str] = []
        self.final = final_job_status
        self.created = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                url = urllib.parse.urlsplit(self.path)
                prefix = f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayjobs"
                assert url.path.startswith(prefix), url.path
                assert self.headers["Authorization"] == "Bearer t0ken"
                return url.path[len(prefix):].lstrip("/"), urllib.parse.parse_qs(url.query)

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

            def do_GET(self):
                name, query = self._route()
                if not name:
                    api.calls.append("list")
                    key, value = query["labelSelector"][0].split("=")
                    items = [j for j in api.jobs.values() if j["metadata"].get("labels", {}).get(key) == value]
                    return self._reply(200, {"kind": "RayJobList", "items": items})
                api.calls.append("get")
                if name not in api.jobs:
                    return self._reply(404, {"kind": "Status", "code": 404})
                job = api.jobs[name]
                status = job.setdefault("status", {})
                i = api.STATES.index(status.get("jobDeploymentStatus", ""))
                status["jobDeploymentStatus"] = api.STATES[min(i + 1, len(api.STATES) - 1)]
                status["jobStatus"] = {"Running": "RUNNING", "Complete": api.final}.get(status["jobDeploymentStatus"], "")
                return self._reply(200, job)

            def do_POST(self):
                self._route()
                api.calls.append("create")
                job = self._body()
                api.created += 1
                job["metadata"]["name"] = f"{job['metadata'].pop('generateName')}{api.created:05d}"
                job["metadata"]["creationTimestamp"] = f"2026-02-01T00:00:{api.created:02d}Z"
                api.jobs[job["metadata"]["name"]] = job
                return self._reply(201, job)

            def do_DELETE(self):
                name, _ = self._route()
                api.calls.append("delete")
                assert self._body() == {"propagationPolicy": "Background"}
                del api.jobs[name]
                return self._reply(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, name: str, deployment: str, stamp: str, labels: dict | None = None) -> None:
        labels = {"app.kubernetes.io/name": "meta-study-refit"} if labels is None else labels
        self.jobs[name] = {"metadata": {"name": name, "creationTimestamp": stamp, "labels": labels},
                           "status": {"jobDeploymentStatus": deployment}}


@pytest.fixture
def submit_refit():
    spec = importlib.util.spec_from_file_location("submit_refit", CLUSTER / "kuberay" / "submit_refit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_submitter(module, api: FakeRayJobApi, tmp_path: Path, *extra: str) -> int:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    return module.main(["--template", str(CLUSTER / "kuberay" / "rayjob-refit.yaml"), "--api", api.url,
                        "--token-file", str(token), "--poll", "0.01", *extra])


def role_verbs() -> set[str]:
    return set(one("Role")["rules"][0]["verbs"])


def test_submitter_creates_waits_and_prunes(submit_refit, tmp_path):
    api = FakeRayJobApi()
    for i in range(12):
        api.add(f"meta-study-refit-old{i:02d}", "Complete" if i % 2 else "Failed", f"2026-01-{i + 1:02d}T03:17:00Z")
    api.add("someone-elses-job", "Complete", "2025-01-01T00:00:00Z", labels={})
    try:
        assert run_submitter(submit_refit, api, tmp_path, "--keep", "3") == 0
    finally:
        api.server.shutdown()
    kept_old = sorted(n for n in api.jobs if "old" in n)
    assert kept_old == ["meta-study-refit-old09", "meta-study-refit-old10", "meta-study-refit-old11"]
    assert "someone-elses-job" in api.jobs
    (created,) = [j for n, j in api.jobs.items() if n.startswith("meta-study-refit-0")]
    template = yaml.safe_load((CLUSTER / "kuberay" / "rayjob-refit.yaml").read_text())
    assert created["spec"] == template["spec"] and created["metadata"]["namespace"] == NAMESPACE
    assert created["status"]["jobStatus"] == "SUCCEEDED"
    assert set(api.calls) <= role_verbs() and api.calls.count("create") == 1


def test_submitter_does_not_overlap_a_running_refit(submit_refit, tmp_path, capsys):
    api = FakeRayJobApi()
    api.add("meta-study-refit-abcde", "Running", "2026-01-01T03:17:00Z")
    try:
        assert run_submitter(submit_refit, api, tmp_path) == 0
    finally:
        api.server.shutdown()
    assert api.calls == ["list"] and "still running" in capsys.readouterr().out


def test_submitter_fails_when_the_refit_fails(submit_refit, tmp_path):
    api = FakeRayJobApi(final_job_status="FAILED")
    try:
        assert run_submitter(submit_refit, api, tmp_path) == 1
    finally:
        api.server.shutdown()
    assert set(api.calls) <= role_verbs()


# --- (c) cluster/local-up.sh and local-down.sh, for real ----------------------------------------------

def run_script(name: str, state: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    # no venv on the PATH, as with PYTHON set in a plain shell: PYTHON alone picks the interpreter
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d != venv_bin)
    e = dict(os.environ, PYTHON=sys.executable, PATH=path, **env)
    e.pop("VIRTUAL_ENV", None)
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "META_STUDY_LOCAL_DIR"):
        e.pop(var, None)
    return subprocess.run(["bash", str(CLUSTER / name), str(state)], env=e, capture_output=True, text=True,
                          timeout=timeout)


def processes_under(*paths: Path) -> list[str]:
    """Live (non-zombie) processes whose command line mentions one of ``paths``."""
    ps = subprocess.run(["ps", "-e", "-ww", "-o", "stat=", "-o", "args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines()
            if not line.lstrip().startswith("Z") and any(str(p) in line for p in paths)]


def alive(pid: int) -> bool:
    ps = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return ps.returncode == 0 and not ps.stdout.strip().startswith("Z")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def state_dir(tmp_path):
    state = tmp_path / "meta-study-local"
    yield state
    run_script("local-down.sh", state, timeout=120)  # whatever happened, leave nothing running
    ray_tmp = state / "ray"
    if ray_tmp.is_symlink():  # the short stand-in under /tmp for a deep state dir
        subprocess.run(["rm", "-rf", os.path.realpath(ray_tmp)], check=False)


@pytest.mark.slow(85)
def test_local_up_and_down(state_dir):
    up = run_script("local-up.sh", state_dir)
    assert up.returncode == 0, up.stderr
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", up.stdout, re.M))
    assert set(exports) >= {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"}
    assert re.search(r"^# MLflow UI: http://127\.0\.0\.1:\d+$", up.stdout, re.M)
    assert (state_dir / "env.sh").read_text() == up.stdout
    assert stat.S_IMODE((state_dir / "ray-auth-token").stat().st_mode) == 0o600
    # Ray makes its --temp-dir 0777 at start: other users of the machine kept out
    assert stat.S_IMODE(os.stat(os.path.realpath(state_dir / "ray")).st_mode) == 0o700
    # a shell after `. env.sh`: its one unset (another cluster's token would beat the file), its exports
    assert "unset RAY_AUTH_TOKEN" in up.stdout
    client_env = {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}, **exports}

    status = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", "--address", exports["RAY_ADDRESS"]],
                            env=client_env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "Resources" in status.stdout, status.stderr
    # a second node joins with the head's address and token (local-add-node.sh); local-down.sh stops it
    add = run_script("local-add-node.sh", state_dir, timeout=240, META_STUDY_NODE_ARGS="--num-cpus=1")
    assert add.returncode == 0 and "node2 joined (2 nodes)" in add.stderr, add.stderr[-2000:]
    node2 = int((state_dir / "node2.pid").read_text())
    # A driver connects with the printed address, and its tasks see the MLflow URI the raylet got.
    probe = ("import os, ray\n"
             "ray.init(address=os.environ['RAY_ADDRESS'], log_to_driver=False)\n"
             "@ray.remote\n"
             "def uri():\n"
             "    return os.environ.get('MLFLOW_TRACKING_URI')\n"
             "print(ray.get(uri.remote()))")
    task = subprocess.run([sys.executable, "-c", probe], env=client_env, capture_output=True, text=True, timeout=120)
    assert task.returncode == 0 and task.stdout.strip().splitlines()[-1] == exports["MLFLOW_TRACKING_URI"], task.stderr
    with urllib.request.urlopen(exports["MLFLOW_TRACKING_URI"] + "/health", timeout=10) as r:
        assert r.status == 200
    search = urllib.request.Request(exports["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search",
                                    data=b'{"max_results": 1}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(search, timeout=10) as r:
        assert "experiments" in json.load(r)

    # `ray job submit` works with the printed lines (token mode and the private token file), and is
    # refused without them: Ray 2.60 turns token authentication on for `ray start --head`.
    assert "RAY_API_SERVER_ADDRESS" in exports
    # `python` in a job is $PYTHON (here: this interpreter), though no venv is on local-up's PATH
    submit = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address",
              exports["RAY_API_SERVER_ADDRESS"], "--", "python", "-c", "import sys; print('job-ran-' + sys.prefix)"]
    job = subprocess.run(submit, env=client_env, capture_output=True, text=True, timeout=180)
    assert job.returncode == 0 and f"job-ran-{sys.prefix}\n" in job.stdout, job.stdout[-2000:] + job.stderr[-2000:]
    no_token = {k: v for k, v in client_env.items() if not k.startswith("RAY_AUTH")}
    job = subprocess.run(submit, env=no_token, capture_output=True, text=True, timeout=180)
    assert job.returncode != 0 and "job-ran-" not in job.stdout
    assert "token" in (job.stdout + job.stderr).lower()

    # The demo's embedded defaults are its own: with this cluster up and RAY_ADDRESS exported, it
    # still starts a Ray of its own (before, its analysis joined the cluster through RAY_ADDRESS)
    # (Ray's own lines are quiet: a GCS server among the demo's own processes says it)
    log = state_dir / "demo.log"
    with open(log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "meta_study.cli", "demo", "--synthetic", "--workdir",
                                 str(state_dir / "demo")], env=client_env, stdout=out, stderr=subprocess.STDOUT)
        own_gcs, t_end = False, time.monotonic() + 600
        while demo.poll() is None and time.monotonic() < t_end:
            with contextlib.suppress(psutil.Error):
                own_gcs = own_gcs or any("gcs_server" in c.name() for c in psutil.Process(demo.pid).children(recursive=True))
            time.sleep(0.2)
        rc = demo.wait(timeout=max(1.0, t_end - time.monotonic()))
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert own_gcs, text[-4000:]
    assert "Connecting to existing Ray cluster" not in text and "Started a local Ray instance" not in text

    again = run_script("local-up.sh", state_dir)  # idempotent: reports the running setup
    assert again.returncode == 0 and again.stdout == up.stdout and "already running" in again.stderr

    leaders = [int((state_dir / f"{s}.pid").read_text()) for s in ("ray", "mlflow")] + [node2]
    ray_tmp = Path(os.path.realpath(state_dir / "ray"))
    assert processes_under(state_dir, ray_tmp)
    down = run_script("local-down.sh", state_dir, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not any(alive(p) for p in leaders)
    assert processes_under(state_dir, ray_tmp) == []
    for uri in (exports["MLFLOW_TRACKING_URI"], "http://" + exports["RAY_ADDRESS"]):
        assert not port_open(urllib.parse.urlsplit(uri).port)
    assert not (state_dir / "env.sh").exists() and (state_dir / "mlflow" / "mlflow.db").exists()

    twice = run_script("local-down.sh", state_dir)  # idempotent
    assert twice.returncode == 0 and "not running" in twice.stderr
    # a restart keeps MLflow's port: a sweep records its tracking URI, and `--resume` after a
    # restart named a server that was gone
    back = run_script("local-up.sh", state_dir)
    assert back.returncode == 0, back.stderr[-2000:]
    assert f"export MLFLOW_TRACKING_URI={exports['MLFLOW_TRACKING_URI']}\n" in back.stdout, back.stdout


@pytest.mark.slow(20)
def test_local_up_leaves_nothing_behind_when_startup_fails(state_dir):
    up = run_script("local-up.sh", state_dir, META_STUDY_MLFLOW_ARGS="--no-such-option")
    assert up.returncode != 0 and "mlflow exited during startup" in up.stderr
    assert "ray: stopped" in up.stderr  # Ray had been started and was stopped again
    assert up.stdout == ""
    ray_tmp = Path(os.path.realpath(state_dir / "ray"))
    assert processes_under(state_dir, ray_tmp) == []
    assert not (state_dir / "ray.pid").exists() and not (state_dir / "mlflow.pid").exists()


@pytest.mark.slow(30)
def test_local_up_is_not_fooled_by_another_server_on_the_mlflow_port(state_dir):
    """Another program holds MLflow's port and answers ``/health`` with 200 (in a test run, a
    server another test started took a port local-up.sh had picked). MLflow cannot bind and exits;
    local-up.sh must not take the other server for MLflow and export its address: with the port
    fixed it is refused in one line before anything starts (it started Ray, stopped it again and
    said "a port was taken during startup" after ~40 s); with a picked port it starts again on
    new ones."""
    import http.server
    import threading

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        up = run_script("local-up.sh", state_dir, META_STUDY_MLFLOW_PORT=str(port))
        assert up.returncode != 0, up.stdout + up.stderr[-2000:]
        last = up.stderr.strip().splitlines()[-1]
        assert last.endswith(f"META_STUDY_MLFLOW_PORT={port}: the port is in use (another program holds it); choose "
                             "another, or unset META_STUDY_MLFLOW_PORT for a free one"), up.stderr[-2000:]
        assert "starting Ray" not in up.stderr, up.stderr[-2000:]
        assert up.stdout == "" and not (state_dir / "env.sh").exists() and not (state_dir / "ray.pid").exists()
    finally:
        server.shutdown()


def test_local_down_never_signals_a_session_it_did_not_start(tmp_path):
    """A stale ray.pid whose PID a program reused for a session of its own, its leader gone and a
    child still running: local-down.sh killed the child ("terminating leftover processes")."""
    state = tmp_path / "st"
    state.mkdir()
    leader = tmp_path / "leader"
    subprocess.run(["setsid", "sh", "-c", f"sleep 4242 & echo $$ > {leader}; exit"], check=True, timeout=30)
    sid = leader.read_text().strip()
    child = next(int(line.split()[0]) for line in subprocess.run(
        ["ps", "-e", "-o", "pid=", "-o", "sid=", "-o", "args="], capture_output=True, text=True).stdout.splitlines()
        if line.split()[1] == sid and "sleep 4242" in line)
    try:
        (state / "ray.pid").write_text(sid + "\n")
        r = run_script("local-down.sh", state, timeout=60)
        assert r.returncode == 0, r.stderr
        assert alive(child) and f"leaving pid {child} alone (not ours)" in r.stderr, r.stderr
        # written before a reboot: no PID of it is believed at all
        (state / "ray.pid").write_text(sid + "\n")
        (state / "boot_id").write_text("00000000-0000-0000-0000-000000000000\n")
        r = run_script("local-down.sh", state, timeout=60)
        assert alive(child) and "stale pid file (written before a reboot)" in r.stderr, r.stderr
    finally:
        os.kill(child, 9)


@pytest.mark.parametrize("state", ["ValidationFailed", "Suspended"])
def test_submitter_is_not_blocked_for_ever_by_a_refit_that_can_never_finish(submit_refit, tmp_path, state):
    """A RayJob in ValidationFailed (a bad spec: no cluster, for good) or Suspended counted as
    still running: every later schedule skipped with exit 0, and nightly refits stopped silently."""
    api = FakeRayJobApi()
    api.add("meta-study-refit-stuck", state, "2026-01-01T03:17:00Z")
    try:
        assert run_submitter(submit_refit, api, tmp_path) == 0
    finally:
        api.server.shutdown()
    assert api.calls.count("create") == 1


def test_local_up_refuses_a_token_others_can_read_and_add_node_a_reserved_name(tmp_path):
    # an empty 0644 token file was refilled in place: a world-readable token; a non-empty one of
    # any mode was used without a word
    state = tmp_path / "st"
    state.mkdir()
    token = state / "ray-auth-token"
    token.write_text("0" * 64)
    token.chmod(0o644)
    r = run_script("local-up.sh", state, timeout=120)
    assert r.returncode == 1 and "ray-auth-token: must be yours with mode 0600" in r.stderr, r.stderr
    assert not (state / "ray.pid").exists() and not (state / "mlflow.pid").exists()
    # a node named like the head's own files overwrote mlflow.pid (local-down then stopped neither)
    for name in ("mlflow", "ray"):
        r = subprocess.run(["bash", str(CLUSTER / "local-add-node.sh"), str(state), name], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and f"node name {name} is reserved" in r.stderr, r.stderr


def test_the_local_scripts_take_turns_on_one_state_directory(tmp_path):
    # two local-up at once raced MLflow's migration and stopped each other's services
    import fcntl

    state = tmp_path / "st"
    state.mkdir()
    with open(state / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = run_script("local-down.sh", state, timeout=60, META_STUDY_LOCK_WAIT="1")
    assert r.returncode == 1 and "another local-up, local-add-node or local-down holds" in r.stderr, r.stderr
    r = run_script("local-down.sh", state, timeout=60, META_STUDY_LOCK_WAIT="1")
    assert r.returncode == 0, r.stderr
