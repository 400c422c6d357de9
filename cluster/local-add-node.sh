#!/usr/bin/env bash
# Add a Ray worker node on this machine to the cluster that cluster/local-up.sh started: a second
# node to try (and test) what changes with more than one node. cluster/local-down.sh stops it.
#
#   cluster/local-add-node.sh [STATE_DIR] [NAME]   # default: $META_STUDY_LOCAL_DIR, else ./meta-study-local; node2
#
# Settings (environment):
#   PYTHON                      interpreter with ray (default: the cluster's, STATE_DIR/bin/python, which
#                               local-up.sh wrote: the head's Ray, whatever this shell's PATH)
#   META_STUDY_NODE_ARGS        extra `ray start` arguments, e.g. "--num-cpus=2 --resources='{\"big\": 1}'"
#   META_STUDY_UP_TIMEOUT       seconds to wait for the node to join (default 120); one that has not
#                               joined by then (or when this script is interrupted) is stopped again
#   META_STUDY_LOCK_WAIT        seconds to wait for another local-up, local-add-node or local-down on
#                               the same STATE_DIR (default 300; 0: do not wait)
#
# The node joins with the head's address and token from STATE_DIR/env.sh (RAY_ADDRESS,
# RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH): without the token, Ray refuses it (InvalidAuthToken). It
# inherits this shell's environment (object-store credentials and endpoint, for instance), as a
# node on another machine would get its own; CUDA_VISIBLE_DEVICES=1 gives it GPU 1 only. Its ports
# are picked free, so several nodes fit on one machine. Its Ray temp dir (session logs, sockets,
# runtime envs) is its own, STATE_DIR/ray-node-NAME (a link to a short one under /tmp where that
# path is long), never the head's. It writes STATE_DIR/NAME.pid, NAME.log and NAME.temp_dir;
# what an earlier start of NAME left running (its `ray start` killed, its raylet living on) is
# stopped first. It may run inside the cluster (a Ray task or job that adds a node, on the head or
# on any other node): only a caller inside NAME's own leftovers is refused there, and the node
# leaves out what Ray set for that caller's worker where it differs from what the caller's node was
# started with: OMP_NUM_THREADS, RAY_JOB_ID, RAY_RAYLET_PID, PYTHONBREAKPOINT, SPT_NOENV, a job
# driver's RAY_JOB_CONFIG_JSON_ENV_VAR and RAY_worker_niceness, and the caller's GPUs
# (CUDA_VISIBLE_DEVICES: the task's, or "") or a job driver's
# RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES (other accelerators' alike). Ray sets those inside
# its worker, never in its raylet's environment (read from /proc/PID/environ; the raylet is the
# parent of the caller's nearest ancestor below one), so a shell outside the cluster keeps its own;
# a value the task set itself cannot be told from Ray's and is left out too (pick a node's GPUs or
# threads from outside the cluster).
#
# On another machine, the same `ray start --address HEAD_IP:PORT` with the token file copied there
# (mode 0600) joins the cluster, where HEAD_IP is an address of the head that machine reaches (not
# 127.0.0.1): docs/cluster.md, "Adding nodes".
set -euo pipefail

# --help prints the comment above; another option is refused (`--help` was taken for a state
# directory: mkdir's "unrecognized option '--help/mlflow/artifacts'", or "--help/env.sh not found").
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^set -euo pipefail/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
  -*) echo "local-add-node: error: unknown option $1 (usage: cluster/local-add-node.sh [STATE_DIR] [NAME]; --help)" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
state="${1:-${META_STUDY_LOCAL_DIR:-./meta-study-local}}"
name="${2:-node2}"
timeout_s="${META_STUDY_UP_TIMEOUT:-120}"

note() { echo "local-add-node: $*" >&2; }
die() { note "error: $*"; exit 1; }

[[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || die "node name $name: letters, digits, - and _ only"
# said at once: "2m" was bash's "value too great for base" three times over a node started and
# stopped again, "abc" an "unbound variable", and "-5" a node started only to be stopped
if [[ ! "$timeout_s" =~ ^[0-9]{1,9}$ ]] || [ "$((10#$timeout_s))" -eq 0 ]; then
  die "META_STUDY_UP_TIMEOUT=$timeout_s: not a whole number of seconds > 0"
fi
timeout_s=$((10#$timeout_s))
lock_wait="${META_STUDY_LOCK_WAIT:-300}"
# flock's own "invalid timeout value" was reported as another script holding the lock
[[ "$lock_wait" =~ ^[0-9]{1,9}$ ]] || die "META_STUDY_LOCK_WAIT=$lock_wait: not a whole number of seconds"
# the head's and MLflow's PID and log files have these names: a node named so overwrote mlflow.pid,
# and local-down.sh then stopped neither
case "$name" in ray|mlflow|env|boot_id) die "node name $name is reserved (the head's own files); pick another" ;; esac
[ -f "$state/env.sh" ] || die "$state/env.sh not found: start the head with cluster/local-up.sh $state first"
state="$(cd "$state" && pwd -P)"
# The head's interpreter (local-up.sh's $PYTHON): python3 on this shell's PATH was used before, and
# one without Ray (no venv active) made `ray status` fail until the timeout (120 s), reported as
# "the head reports no nodes"; a node on another Ray version than the head's cannot join at all.
PY="${PYTHON:-$state/bin/python}"
command -v "$PY" > /dev/null || die "$PY: not found (set PYTHON, or start the head with local-up.sh)"
"$PY" -c 'import ray' 2>/dev/null || die "$PY cannot import ray; set PYTHON to the interpreter local-up.sh ran with"
# One of local-up, local-add-node, local-down at a time per state directory: two local-up at once
# raced MLflow's database migration, and each one's cleanup stopped the other's services, leaving a
# Ray head and an MLflow server running with no PID file. The lock is fd 9; services never inherit it.
if [ -z "${META_STUDY_LOCK_HELD:-}" ] && command -v flock > /dev/null; then
  exec 9> "$state/.lock"
  # said before the wait: beside a local-up that is starting (~30 s) this waited without a word
  flock -n 9 || echo "local-add-node: waiting for another local-up, local-add-node or local-down on $state (up to $lock_wait s)" >&2
  flock -w "$lock_wait" 9 || { echo "local-add-node: another local-up, local-add-node or local-down holds $state/.lock (waited $lock_wait s)" >&2; exit 1; }
fi
# shellcheck disable=SC1091
. "$state/env.sh"
[ -n "${RAY_ADDRESS:-}" ] || die "$state/env.sh has no RAY_ADDRESS"
unset RAY_AUTH_TOKEN   # the cluster's token is the file env.sh names (an env.sh before this line: unset here)

# A path named whole: at the start of an argument or after = : , a quote or a / (sqlite:////PATH),
# and followed by the end of one, / : , or a quote; never inside a longer name (/srv/x/ms is no
# mention of /x/ms, nor /tmp/msray.ab1 of /tmp/msray.ab).
path_pre='(^|[[:space:]=:,"'\''/])'
path_post='($|[[:space:]/:,"'\''])'
# running PIDFILE PATH: alive, this user's, and naming PATH as a whole (as local-down.sh's `names`)
running() {
  local out uid args
  [ -f "$1" ] && out="$(ps -ww -o uid= -o args= -p "$(cat "$1")" 2>/dev/null)" || return 1
  read -r uid args <<< "$out"
  [ "$uid" = "$(id -u)" ] && [[ "$args" =~ $path_pre"$2"$path_post ]]
}
# Moved (or renamed) while the head ran: the head names the old paths (its bin/ on its PATH, MLflow's
# database), and a node added here would name the new ones. This said "the head is not running".
started_in="$(head -n 1 "$state/started_in" 2>/dev/null || true)"
if [ -n "$started_in" ] && [ "$started_in" != "$state" ] && [ -f "$state/ray.pid" ]; then
  die "$state was $started_in when its head was started; start it again here first: cluster/local-up.sh $state"
fi
# The head must be running: env.sh outlives a head that crashed (or was killed), and `ray status`
# against its address then waits ~40 s per call for the GCS, ~2 min before "reports no nodes".
head_down="the head in $state is not running (no live ray.pid); start it with cluster/local-up.sh $state"
[ -d "$state/ray" ] || die "$head_down"
ray_tmp="$(cd "$state/ray" && pwd -P)"
marker="--temp-dir=$ray_tmp"
running "$state/ray.pid" "$marker" || die "$head_down"
# --- this node's own Ray temp dir ----------------------------------------------------------------
# STATE_DIR/ray-node-NAME, as local-up.sh makes the head's STATE_DIR/ray: never the head's. In the
# head's, node2's raylet joined the head's session directory (its log's "raylet.out tail" and "Last
# 20 lines of the Raylet logs" were the head's), and its runtime-env agent unpacked and
# garbage-collected the same runtime_resources/working_dir_files/_ray_pkg_* that a job's driver on
# the head ran in: the driver's working directory was deleted under it (`ray job submit` of a Tune
# sweep ended in "[Errno 2] No such file or directory" from os.getcwd()). `ray start --temp-dir`
# is per node. "ray-node-": a node named auth-token must not take the token file's name.
# Unix socket paths are limited to 107 bytes (Ray's sockets are ~62 bytes below the temp dir): a
# path over 44 characters gets a short stand-in under /tmp that STATE_DIR/ray-node-NAME links to,
# kept across restarts. A link whose target is gone, or not ours, or that a copy of another state
# directory (`cp -a`) took along (the stand-in records the directory it was made for), is replaced.
# STATE_DIR/NAME.temp_dir records the directory the node was started with (local-down.sh matches
# its processes by it, also after its stand-in was deleted under it).
node_dir="$state/ray-node-$name"
if [ -L "$node_dir" ] && { [ ! -d "$node_dir" ] || [ ! -O "$node_dir" ]; }; then
  [ ! -d "$node_dir" ] || note "$node_dir links to $(readlink "$node_dir"), which is not yours; making a new one"
  rm -f "$node_dir"
fi
if [ -L "$node_dir" ]; then
  made_for="$(head -n 1 "$node_dir/.meta-study-state" 2>/dev/null || true)"
  if [ -n "$made_for" ] && [ "$made_for" != "$state" ] && [ "$made_for/ray-node-$name" -ef "$node_dir" ]; then
    rm -f "$node_dir"   # the original's stand-in, copied along: its sessions are not this cluster's
  fi
fi
if [ -d "$node_dir" ]; then
  node_tmp="$(cd "$node_dir" && pwd -P)"
elif [ "${#node_dir}" -le 44 ]; then
  node_tmp="$node_dir"
  mkdir -p "$node_tmp"
else
  node_tmp="$(mktemp -d "${TMPDIR:-/tmp}/msray.XXXXXX")"
  ln -s "$node_tmp" "$node_dir"
fi
node_tmp="$(cd "$node_tmp" && pwd -P)"  # canonical, as local-down.sh matches it against `ps`
[ "${#node_tmp}" -le 44 ] || die "Ray temp dir path too long for Unix sockets: $node_tmp"
[ -O "$node_tmp" ] || die "$node_tmp is not yours; remove it (or $node_dir) and run this again"
chmod 700 "$node_tmp"
[ ! -L "$node_dir" ] || printf '%s\n' "$state" > "$node_tmp/.meta-study-state"
node_marker="--temp-dir=$node_tmp"
if running "$state/$name.pid" "$node_marker"; then
  note "$name is already running (pid $(cat "$state/$name.pid"))"
  exit 0
fi
# Run inside the cluster (a Ray task, or a job's driver, on any node), this shell's environment is a
# Ray worker's, and it became the node's (every worker there inherits its raylet's environment):
# - the OMP_NUM_THREADS Ray set for the caller (1 for its one CPU), which every worker of the node
#   kept (Ray sets it only where it is unset): a trial of 8 CPUs there ran PyTorch on one thread;
# - Ray's internal RAY_JOB_ID, RAY_RAYLET_PID (Ray strips them from a job's environment too), and
#   its PYTHONBREAKPOINT, SPT_NOENV; a job driver's RAY_JOB_CONFIG_JSON_ENV_VAR (the job's runtime
#   env: a driver started on the node took it for its own) and RAY_worker_niceness=0 (the node's
#   workers ran at niceness 0, not Ray's 15);
# - the GPUs Ray gave the caller (or a job: `ray job submit --entrypoint-num-gpus`): a node added
#   from a 1-GPU task saw that GPU only, or did not start with --num-gpus=2 ("Attempting to start
#   raylet with 2 GPU, but CUDA_VISIBLE_DEVICES contains ['0']"), and "" from a task of none
#   (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1) hid every GPU; a job driver's (no entrypoint resources)
#   RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1, meant for its supervisor only: the node's workers
#   kept it, and Ray gave none of its GPU tasks its own GPUs (each saw them all). The same for the
#   other accelerators Ray manages (their visible-device variable, RAY_EXPERIMENTAL_NOSET_*).
# Only the head's callers were told before (the head's leader among this script's ancestors): a
# task on node2 adding node3 passed all of them on. Ray sets these inside its worker (os.environ,
# or the worker's start), never in its raylet's environment (read from /proc/PID/environ; these
# are what Ray 2.60's worker and job driver have that their raylet has not): inside a Ray worker,
# on any node, a value other than the one the caller's node was started with is Ray's, and left
# out. The node's own value (what the shell that started it had), and whatever a shell outside
# the cluster sets, is kept. Costs: 2 `ps` per ancestor of this script (~10), once.
ray_set=(OMP_NUM_THREADS RAY_JOB_ID RAY_RAYLET_PID RAY_OVERRIDE_NODE_ID_FOR_TESTING PYTHONBREAKPOINT
         SPT_NOENV RAY_JOB_CONFIG_JSON_ENV_VAR RAY_worker_niceness CUDA_VISIBLE_DEVICES
         HIP_VISIBLE_DEVICES ASCEND_RT_VISIBLE_DEVICES NEURON_RT_VISIBLE_CORES TPU_VISIBLE_CHIPS
         HABANA_VISIBLE_MODULES ONEAPI_DEVICE_SELECTOR)
# callers_raylet: the PID of the raylet whose worker runs this script (on any node): the parent of
# the nearest ancestor whose parent is a raylet (a job's driver, below its supervisor, has no
# RAY_RAYLET_PID to read it from); else, for a process a task left running (its parent gone, it is
# init's now), the raylet in its session where a node of STATE_DIR leads that session (the head's
# or a NAME's `ray start`, as their PID files say). Nothing outside the cluster.
callers_raylet() {
  local p=$$ parent sid f
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    parent="$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')"
    [ -n "$parent" ] || break
    if [ "$(ps -o comm= -p "$parent" 2>/dev/null)" = raylet ]; then echo "$parent"; return 0; fi
    p="$parent"
  done
  sid="$(ps -o sid= -p $$ 2>/dev/null | tr -d ' ')"
  for f in "$state"/*.pid; do
    [ "$f" != "$state/mlflow.pid" ] && [ -n "$sid" ] && [ "$(cat "$f" 2>/dev/null)" = "$sid" ] || continue
    # awk reads to the end: ps, cut short (SIGPIPE), failed the pipeline under pipefail
    ps -e -o pid= -o sid= -o comm= | awk -v s="$sid" '!found && $2 == s && $3 == "raylet" {print $1; found=1}
                                                     END {exit !found}' && return 0
  done
  return 1
}
# started_with PID VAR: "=VALUE" where PID was started with VAR set, "" where without; 1 where its
# environment cannot be read (then any value of VAR counts as Ray's)
started_with() {
  local e
  [ -r "/proc/$1/environ" ] || return 1
  while IFS= read -r -d '' e; do
    if [[ "$e" == "$2="* ]]; then printf '=%s' "${e#*=}"; return 0; fi
  done 2>/dev/null < "/proc/$1/environ"
}
worker_env=()
if raylet="$(callers_raylet)"; then
  for var in "${ray_set[@]}" $(compgen -e RAY_EXPERIMENTAL_NOSET_ || true); do
    mine="${!var+=${!var}}"
    if [ -n "$mine" ] && { ! node_had="$(started_with "$raylet" "$var")" || [ "$mine" != "$node_had" ]; }; then
      worker_env+=(-u "$var")
    fi
  done
fi
# A NAME.pid whose leader is gone (its `ray start --block` SIGKILLed or OOM-killed): its raylet and
# workers outlive it in its session, and this start overwrote NAME.pid, so local-down.sh never knew
# them again (they ran for good). What is left of it is stopped first, as local-down.sh stops it.
if [ -f "$state/$name.pid" ]; then
  note "stopping what is left of an earlier start of $name"
  META_STUDY_LOCK_HELD=1 META_STUDY_DOWN_ONLY_NODE="$name" "$here/local-down.sh" "$state" \
    || die "could not stop what is left of an earlier start of $name (above)"
fi

# nodes now, to see this one join. `ray status` fails for a few seconds after the head starts
# ("No cluster status") and under load: a failed call counts as "unknown" (-1), never as an exit
# (under `set -e -o pipefail` a failing pipeline here would end this script without a word).
status_err="$state/$name.status-err"
# removed whatever the outcome: it was left in STATE_DIR after every run, joined or not
trap 'rm -f "$status_err"' EXIT
count_nodes() {
  local out
  out="$("$PY" -m ray.scripts.scripts status --address "$RAY_ADDRESS" 2>"$status_err")" || { echo -1; return 0; }
  awk '/^Active:/ {a=1; next} /^Pending:/ {a=0} a && /node_/ {n++} END {print n+0}' <<< "$out"
}
deadline=$((SECONDS + timeout_s))
before="$(count_nodes)"
while [ "$before" -lt 1 ]; do
  if grep -q InvalidAuthToken "$status_err" 2>/dev/null; then
    die "the head at $RAY_ADDRESS refuses this node's token ($RAY_AUTH_TOKEN_PATH): InvalidAuthToken"
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "the head at $RAY_ADDRESS reports no nodes after ${timeout_s} s (ray status: $(grep -v '^\s*$' "$status_err" | tail -n 1))"
  sleep 1
  before="$(count_nodes)"
done

read -r p_agent_http p_agent_grpc p_metrics p_runtime_env p_manager p_object < <(
  "$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
ray_args=(
  start --address="$RAY_ADDRESS" --block
  --temp-dir="$node_tmp"
  --dashboard-agent-listen-port="$p_agent_http" --dashboard-agent-grpc-port="$p_agent_grpc"
  --metrics-export-port="$p_metrics" --runtime-env-agent-port="$p_runtime_env"
  --node-manager-port="$p_manager" --object-manager-port="$p_object"
  --disable-usage-stats
)
# Split as a shell splits a command line: quotes group words and are removed, so the usage's
# --resources='{"big": 1}' is one argument (split at spaces only, it was three, and `ray start`
# refused the node: "Got unexpected extra argument (1}')"); no globbing.
if [ -n "${META_STUDY_NODE_ARGS:-}" ]; then
  "$PY" -c 'import shlex, sys; shlex.split(sys.argv[1])' "$META_STUDY_NODE_ARGS" 2>/dev/null \
    || die "META_STUDY_NODE_ARGS=$META_STUDY_NODE_ARGS: a quote is not closed"
  mapfile -d '' -t extra < <("$PY" -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "$META_STUDY_NODE_ARGS")
  ray_args+=("${extra[@]}")
fi

# A node that did not join (the timeout, Ctrl-C) is stopped again: left running, it could still join
# and take tasks after this script said it failed, and a rerun then said "already running".
node_pid=""
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -n "$node_pid" ]; then
    note "stopping $name (pid $node_pid), which did not join"
    kill -TERM "$node_pid" 2>/dev/null || true   # `ray start --block` stops its processes (<= 30 s)
    for _ in $(seq 60); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.5; done
    # what is left of its process group (it called setsid: the group's id is its PID, which Linux
    # does not reuse while the group has members)
    kill -KILL -- "-$node_pid" 2>/dev/null || true
    rm -f "$state/$name.pid"
  fi
  rm -f "$status_err"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# a closed terminal or SSH session: untrapped, bash ran on_exit with status 0 and left the node
# running (its own session: the hangup never reached it), still joining after the script was gone
trap 'exit 129' HUP

echo "=== local-add-node $(date -u +%FT%TZ)" >> "$state/$name.log"
note "starting Ray node $name, joining $RAY_ADDRESS (log: $state/$name.log)"
# the leader of its own session, like the head: local-down.sh stops exactly its processes
PATH="$state/bin:$PATH" "$PY" -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' \
  env -u RAY_ADDRESS ${worker_env[@]+"${worker_env[@]}"} RAY_enable_metrics_collection=0 "$PY" -m ray.scripts.scripts "${ray_args[@]}" \
  < /dev/null >> "$state/$name.log" 2>&1 9>&- &
node_pid=$!
echo "$node_pid" > "$state/$name.pid"
printf '%s\n' "$node_tmp" > "$state/$name.temp_dir"

deadline=$((SECONDS + timeout_s))
while [ "$(count_nodes)" -le "$before" ]; do
  if ! kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
    tail -n 20 "$state/$name.log" >&2 || true
    rm -f "$state/$name.pid"
    die "$name exited before joining (log: $state/$name.log)"
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "$name did not join in ${timeout_s} s (log: $state/$name.log)"
  sleep 1
done
# Ray makes --temp-dir world-writable (0777) at every `ray start`: the node's own closed again, as
# local-up.sh closes the head's (the head's too, as before: a node of an older start could open it).
chmod 700 "$node_tmp" "$ray_tmp"
note "$name joined ($((before + 1)) nodes); stop everything with cluster/local-down.sh $state"
