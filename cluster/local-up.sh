#!/usr/bin/env bash
# Start meta-study's single-machine services: a Ray head node and an MLflow tracking server, with
# all of their state under one directory. Stop them with cluster/local-down.sh.
#
#   cluster/local-up.sh [STATE_DIR]           # default: $META_STUDY_LOCAL_DIR, else ./meta-study-local
#   lines="$(cluster/local-up.sh)" && eval "$lines"   # stdout is only the export lines; progress is on
#                                             # stderr (`eval "$(cluster/local-up.sh)"` is status 0
#                                             # when it fails: a script went on without a cluster)
#   . meta-study-local/env.sh                 # the same lines, for later shells
#
# Settings (environment):
#   PYTHON                      interpreter that has ray and mlflow (default: python3 on PATH, i.e.
#                               the active virtualenv's); ray and mlflow are run as `$PYTHON -m ...`,
#                               and `python` / `python3` in Ray jobs and tasks are this interpreter
#                               too (STATE_DIR/bin, first on the raylet's PATH), venv active or not
#   META_STUDY_RAY_PORT         Ray GCS port (default: a free port)
#   META_STUDY_MLFLOW_PORT      MLflow port (default: a free port)
#   META_STUDY_RAY_START_ARGS   extra `ray start` arguments, e.g. "--num-cpus=8 --num-gpus=1"
#   META_STUDY_MLFLOW_ARGS      extra `mlflow server` arguments, e.g. "--workers 4" (both split as
#                               a shell splits words: "--resources='{\"big\": 1}'" is one argument)
#   META_STUDY_UP_TIMEOUT       seconds to wait for both services to be healthy (default 180)
#   META_STUDY_LOCK_WAIT        seconds to wait for another local-up, local-add-node or local-down on
#                               the same STATE_DIR (default 300; 0: do not wait)
#
# Layout of STATE_DIR:
#   env.sh                 RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH, MLFLOW_TRACKING_URI,
#                          RAY_API_SERVER_ADDRESS (with the dashboard: `ray job submit`); with a proxy
#                          in the environment (http_proxy...), 127.0.0.1 added to no_proxy
#   bin/python, bin/python3  `exec $PYTHON "$@"`: what `python` means in jobs (`ray job submit -- python ...`)
#   ray-auth-token         this cluster's Ray token (0600)
#   ray.pid, ray.log       `ray start --head --block` (the session leader of every Ray process)
#   ray/                   Ray's --temp-dir: session logs (a link to /tmp when STATE_DIR is deep)
#   mlflow.pid, mlflow.log `mlflow server`
#   mlflow.port            its port, kept across restarts while free (a sweep records its tracking URI)
#   mlflow/mlflow.db       the tracking database (sqlite)
#   mlflow/artifacts/      the artifact store, served by the tracking server (--serve-artifacts)
#   boot_id, started_in    the boot, and the paths (STATE_DIR, Ray's temp dir), the services were
#                          started in: local-down.sh stops them after a move of STATE_DIR too
#
# Security: both services bind 127.0.0.1 where they can (MLflow, the Ray dashboard), but Ray's
# GCS and raylet listen on all interfaces (and its client server and agents on the machine's
# address: Ray 2.60 turns --node-ip-address=127.0.0.1 into that address), so the cluster runs with
# Ray token authentication and a token only this user can read. Clients need RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH (in env.sh).
#
# If anything fails, whatever this script started is stopped again (via local-down.sh).
set -euo pipefail

# --help prints the comment above; another option is refused (`--help` was taken for a state
# directory: mkdir's "unrecognized option '--help/mlflow/artifacts'", or "--help/env.sh not found").
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^set -euo pipefail/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
  -*) echo "local-up: error: unknown option $1 (usage: cluster/local-up.sh [STATE_DIR]; --help)" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
state="${1:-${META_STUDY_LOCAL_DIR:-./meta-study-local}}"
PY="${PYTHON:-python3}"
timeout_s="${META_STUDY_UP_TIMEOUT:-180}"

note() { echo "local-up: $*" >&2; }
die() { note "error: $*"; exit 1; }

# said before anything starts: "2m" failed wait_healthy's arithmetic, and local-up printed "up" and
# env.sh for services whose health was never checked
if [[ ! "$timeout_s" =~ ^[0-9]{1,9}$ ]] || [ "$((10#$timeout_s))" -eq 0 ]; then
  die "META_STUDY_UP_TIMEOUT=$timeout_s: not a whole number of seconds > 0"
fi
timeout_s=$((10#$timeout_s))
lock_wait="${META_STUDY_LOCK_WAIT:-300}"
# flock's own "invalid timeout value" was reported as another script holding the lock
[[ "$lock_wait" =~ ^[0-9]{1,9}$ ]] || die "META_STUDY_LOCK_WAIT=$lock_wait: not a whole number of seconds"

# the import's own last line is kept: "cannot import" alone hid a broken install behind "activate
# the project's environment" in one that was active
if ! import_err="$("$PY" -c 'import ray, mlflow' 2>&1)"; then
  die "$PY cannot import ray and mlflow ($(printf '%s\n' "$import_err" | tail -n 1)); activate the project's environment or set PYTHON"
fi

# A state directory this script makes is its user's only (0700): the Ray temp dir inside it is made
# world-writable again (0777) by every driver that connects, and the session logs under it (0644)
# can name what a job was started with. One the user made already keeps its mode.
[ -e "$state" ] || { mkdir -p "$state" && chmod 700 "$state"; }
mkdir -p "$state/mlflow/artifacts"
state="$(cd "$state" && pwd -P)"
# One of local-up, local-add-node, local-down at a time per state directory: two local-up at once
# raced MLflow's database migration, and each one's cleanup stopped the other's services, leaving a
# Ray head and an MLflow server running with no PID file. The lock is fd 9; services never inherit it.
if [ -z "${META_STUDY_LOCK_HELD:-}" ] && command -v flock > /dev/null; then
  exec 9> "$state/.lock"
  # said before the wait: beside a local-up that is starting (~30 s) this waited without a word
  flock -n 9 || echo "local-up: waiting for another local-up, local-add-node or local-down on $state (up to $lock_wait s)" >&2
  flock -w "$lock_wait" 9 || { echo "local-up: another local-up, local-add-node or local-down holds $state/.lock (waited $lock_wait s)" >&2; exit 1; }
fi

# `python` in jobs and tasks is $PYTHON, whatever the PATH of the shell that ran this script:
# `ray job submit -- python sweeps/...` runs in the raylet's environment, and without a venv
# active, `python` there would be another interpreter (without meta-study, or another Ray).
py_abs="$(command -v "$PY")" || die "$PY: not found"
py_abs="$(cd "$(dirname "$py_abs")" && pwd -P)/$(basename "$py_abs")"
# shq WORD: WORD as is where it needs no quotes, else in POSIX single quotes (as Python's
# shlex.quote), for /bin/sh (dash), a systemd environment file and bash alike. bash's `printf %q`
# wrote $'...' for a path with a non-ASCII letter under the C locale (cron, ssh or a container
# without LANG): dash ran `exec $'/home/jos\303\251/...'` ("not found"), so `python` failed in
# every job, and `. env.sh` from sh set a RAY_AUTH_TOKEN_PATH that named no file.
shq() {
  if [[ "$1" =~ ^[A-Za-z0-9@%+=:,./_-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
# Keeps the default ./meta-study-local out of `git status`.
[ -f "$state/.gitignore" ] || printf '*\n' > "$state/.gitignore"

# A path named whole: at the start of an argument or after = : , a quote or a / (sqlite:////PATH),
# and followed by the end of one, / : , or a quote; never inside a longer name (/srv/x/ms is no
# mention of /x/ms, nor /tmp/msray.ab1 of /tmp/msray.ab).
path_pre='(^|[[:space:]=:,"'\''/])'
path_post='($|[[:space:]/:,"'\''])'
# running PIDFILE PATH: the process is alive, this user's, and names PATH as a whole on its command
# line (a PID can be reused by another process; a substring matched another state's whose path
# ends in this one's, as local-down.sh's `names`).
running() {
  local out uid args
  [ -f "$1" ] && out="$(ps -ww -o uid= -o args= -p "$(cat "$1")" 2>/dev/null)" || return 1
  read -r uid args <<< "$out"
  [ "$uid" = "$(id -u)" ] && [[ "$args" =~ $path_pre"$2"$path_post ]]
}
ray_marker="--temp-dir=$state/ray"
[ -d "$state/ray" ] && ray_marker="--temp-dir=$(cd "$state/ray" && pwd -P)"
# log_dir PID BASE: the directory whose BASE.log PID writes its output to (as local-down.sh's: every
# leader's stdout is STATE/BASE.log, and the kernel names an open file by its path now).
log_dir() {
  local f
  f="$(readlink "/proc/$1/fd/1" 2>/dev/null)" || return 0
  [[ "$f" == /*/"$2.log" ]] && printf '%s' "${f%/*}"
  return 0
}
# copied_from SVC: the directory this one is a copy of (`cp -a`) while its SVC runs: SVC.pid's process
# writes that directory's SVC.log, and it records the same PID. Known so without started_in too (a
# setup started before local-up.sh wrote it): a deep state's copy shares its Ray temp dir link, and
# took the original's head for its own ("a half-running setup").
copied_from() {
  local pid dir
  pid="$(cat "$state/$1.pid" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  dir="$(log_dir "$pid" "$1")"
  if [ -n "$dir" ] && [ ! "$dir" -ef "$state" ] && [ "$(cat "$dir/$1.pid" 2>/dev/null)" = "$pid" ]; then
    printf '%s' "$dir"
  fi
  return 0
}
# moved_here SVC PATH: SVC.pid's process writes this directory's SVC.log but names PATH nowhere: it
# was started before this directory was moved (or renamed) here.
moved_here() {
  local pid
  pid="$(cat "$state/$1.pid" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(log_dir "$pid" "$1")" -ef "$state" ] && ! running "$state/$1.pid" "$2"
}
copy_of="$(copied_from ray)"
[ -n "$copy_of" ] || copy_of="$(copied_from mlflow)"
# Moved (or renamed) while its services ran: they name the old paths (its bin/ on their PATH, its
# MLflow database and artifacts), so they are restarted here (local-down.sh stops them, below).
started_in="$(head -n 1 "$state/started_in" 2>/dev/null || true)"
if [ -n "$started_in" ] && [ "$started_in" != "$state" ] && compgen -G "$state/*.pid" > /dev/null; then
  note "$state was $started_in when its services were started; they are started again here"
elif [ -n "$copy_of" ]; then
  note "$state is a copy of $copy_of, whose services run: they are left running, and this directory's started apart"
elif [ -z "$started_in" ] && { moved_here ray "$ray_marker" || moved_here mlflow "$state/mlflow"; }; then
  note "$state was moved (or renamed) since its services were started; they are started again here"
elif running "$state/ray.pid" "$ray_marker" || running "$state/mlflow.pid" "$state/mlflow"; then
  if running "$state/ray.pid" "$ray_marker" && running "$state/mlflow.pid" "$state/mlflow" \
      && [ -f "$state/env.sh" ]; then
    # Started before local-up.sh wrote started_in (an upgrade with the setup running): written now,
    # from the paths its services were just found to name, so a later move still stops them.
    [ -f "$state/started_in" ] || printf '%s\n%s\n' "$state" "${ray_marker#--temp-dir=}" > "$state/started_in"
    note "already running (state in $state)"
    cat "$state/env.sh"
    exit 0
  fi
  die "a half-running setup is in $state; run cluster/local-down.sh $state first"
fi
# PID files whose leaders are gone (a head's `ray start --block` SIGKILLed or OOM-killed, a crash):
# its GCS, raylet and workers outlive it in its session. They were left running for good (this start
# overwrote ray.pid, so local-down.sh never knew them again) and kept their ports: a fixed
# META_STUDY_RAY_PORT was then "in use (another program holds it)". local-down.sh stops exactly the
# members of those sessions that name this state, and removes the PID files. (Only in a directory an
# earlier local-up.sh started something in: another program's PID file is none of ours.)
if { [ -e "$state/ray.pid" ] || [ -e "$state/mlflow.pid" ] || [ -e "$state/boot_id" ]; } \
    && compgen -G "$state/*.pid" > /dev/null; then
  note "stopping what is left of an earlier start in $state"
  META_STUDY_LOCK_HELD=1 "$here/local-down.sh" "$state" || die "could not stop what is left of an earlier start in $state (above)"
fi
# Written only now, for the services this run starts: before the check above, a second local-up
# with another PYTHON (another venv) said "already running" and had changed `python` in the running
# cluster's jobs, and the interpreter local-add-node.sh runs, to an interpreter of another Ray.
mkdir -p "$state/bin"
for name in python python3; do
  printf '#!/bin/sh\nexec %s "$@"\n' "$(shq "$py_abs")" > "$state/bin/$name.tmp"
  chmod 755 "$state/bin/$name.tmp" && mv "$state/bin/$name.tmp" "$state/bin/$name"
done

# --- cleanup on failure: stop whatever was started, then exit with the original status ---------
started=0
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$started" -eq 1 ]; then
    note "failed; stopping what was started"
    META_STUDY_LOCK_HELD=1 "$here/local-down.sh" "$state" || true
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# a closed terminal or SSH session: bash ran the EXIT trap with status 0, and Ray and MLflow stayed
# running with PID files but no env.sh
trap 'exit 129' HUP

# --- ports ---------------------------------------------------------------------------------------
# Every port Ray would otherwise take at a fixed default (GCS 6379, dashboard 8265, dashboard
# agent 52365, client server 10001, the dashboard's and the autoscaler's Prometheus endpoints 44227
# and 44217) is picked free, so two setups (or a test run) never collide. Metrics collection is off:
# the agents' /metrics exporter listened on 0.0.0.0 without the token.
# All sockets are held open together so the picks are distinct; another program can still take
# one before Ray or MLflow binds it (a busy machine, tests starting servers beside this): that
# service then exits with "address already in use", and everything is started again on new ports
# (up to 3 times; ports given in the environment are kept, and such a failure is final).
# MLflow keeps the port of its last start when it is free (pick_ports keep): a sweep records its
# tracking URI, and a --resume after local-down / local-up named a server that was gone.
pick_ports() {
  local saved=""
  [ "${1:-}" = keep ] && saved="$(cat "$state/mlflow.port" 2>/dev/null || true)"
  read -r p_gcs p_mlflow p_dash p_agent_http p_agent_grpc p_metrics p_runtime_env p_client p_dash_metrics \
    p_autoscaler_metrics < <(
    "$PY" - "$saved" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
ports = [s.getsockname()[1] for s in socks]
saved = sys.argv[1] if len(sys.argv) > 1 else ""
if saved.isdigit() and int(saved) not in ports:
    t = socket.socket()
    # as MLflow binds: connections of its last run left in TIME_WAIT (a client's /health, closed by
    # the server first) are no obstacle; a plain bind refused the port for a minute, and the
    # restart moved MLflow to a new one, which a sweep's recorded tracking URI no longer named
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        t.bind(("127.0.0.1", int(saved)))
        ports[1] = int(saved)
    except OSError:
        pass
    finally:
        t.close()
print(*ports)
EOF
  )
  ray_port="${META_STUDY_RAY_PORT:-$p_gcs}"
  mlflow_port="${META_STUDY_MLFLOW_PORT:-$p_mlflow}"
  mlflow_uri="http://127.0.0.1:$mlflow_port"
}
pick_ports keep
# A port given in the environment that is not a port, or that another program holds already:
# said at once, before anything starts (Ray's GCS failed to bind it, and after a minute of waiting
# this was reported as "a port was taken during startup"; MLflow's started Ray, stopped it again
# and said the same after ~40 s).
for var in META_STUDY_RAY_PORT META_STUDY_MLFLOW_PORT; do
  [ -n "${!var:-}" ] || continue
  [[ "${!var}" =~ ^[0-9]+$ ]] && [ "${!var}" -ge 1 ] && [ "${!var}" -le 65535 ] \
    || die "$var=${!var}: not a port number (1-65535)"
  "$PY" - "${!var}" <<'EOF' || die "$var=${!var}: the port is in use (another program holds it); choose another, or unset $var for a free one"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the services bind: a closing one is no obstacle
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
done
# Both fixed to one port: Ray took it and MLflow's start failed, said after ~40 s as "a port was
# taken during startup".
if [ -n "${META_STUDY_RAY_PORT:-}" ] && [ -n "${META_STUDY_MLFLOW_PORT:-}" ] \
    && [ "$META_STUDY_RAY_PORT" -eq "$META_STUDY_MLFLOW_PORT" ]; then
  die "META_STUDY_RAY_PORT and META_STUDY_MLFLOW_PORT are both $META_STUDY_MLFLOW_PORT: give them different ports"
fi

# Extra arguments are split as a shell splits a command line: quotes group words and are removed,
# so --resources='{"big": 1}' is one argument (split at spaces only, it was three, and `ray start`
# failed: "Got unexpected extra argument (1}')"); no globbing. words VAR: its words, NUL-terminated.
words() {
  "$PY" -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "${!1:-}"
}
for var in META_STUDY_RAY_START_ARGS META_STUDY_MLFLOW_ARGS; do
  [ -n "${!var:-}" ] || continue
  words "$var" > /dev/null 2>&1 || die "$var=${!var}: a quote is not closed"
done

# --- Ray's temp dir --------------------------------------------------------------------------------
# Unix socket paths are limited to 107 bytes and Ray puts sockets ~62 bytes below --temp-dir
# (session_<date>_<pid>/sockets/plasma_store), so a deep STATE_DIR gets a short stand-in under /tmp
# that $state/ray links to (kept across restarts, like the rest of the state).
# A stand-in that is not ours is replaced: after /tmp was cleaned (a reboot), another user could
# make a directory of its name, and Ray ran in it (its sockets and session logs in a directory
# that user controls) until the chmod below failed and stopped everything again.
# So is a link whose target is gone (a state directory moved to a short path after /tmp was
# cleaned: mkdir's "File exists").
if [ -L "$state/ray" ] && { [ ! -d "$state/ray" ] || [ ! -O "$state/ray" ]; }; then
  [ ! -d "$state/ray" ] || note "$state/ray links to $(readlink "$state/ray"), which is not yours; making a new one"
  rm -f "$state/ray"
fi
# So is the stand-in of the directory this one is a copy of (`cp -a`: the link was copied): two
# clusters in one temp dir share its session_latest, and each one's processes name the other's paths.
if [ -L "$state/ray" ] && { [ -n "$copy_of" ] || { [ -n "$started_in" ] && [ "$started_in" != "$state" ] \
    && [ "$(head -n 1 "$started_in/started_in" 2>/dev/null)" = "$started_in" ]; }; }; then
  rm -f "$state/ray"
fi
if [ -d "$state/ray" ]; then
  ray_tmp="$(cd "$state/ray" && pwd -P)"
elif [ "${#state}" -le 36 ]; then
  ray_tmp="$state/ray"
  mkdir -p "$ray_tmp"
else
  rm -f "$state/ray"  # a link whose /tmp target was cleaned up
  ray_tmp="$(mktemp -d "${TMPDIR:-/tmp}/msray.XXXXXX")"
  ln -s "$ray_tmp" "$state/ray"
fi
ray_tmp="$(cd "$ray_tmp" && pwd -P)"  # canonical, as local-down.sh matches it against `ps`
[ "${#ray_tmp}" -le 44 ] || die "Ray temp dir path too long for Unix sockets: $ray_tmp"

# --- Ray auth token --------------------------------------------------------------------------------
if [ ! -s "$state/ray-auth-token" ]; then
  # written beside, then moved into place: an empty file left with mode 0644 was refilled in place,
  # a token anyone on the machine could read
  (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$state/ray-auth-token.new" \
    && mv -f "$state/ray-auth-token.new" "$state/ray-auth-token")
fi
# a token others can read, or that another user owns, is no secret of this cluster's
case "$(stat -c '%u %a' "$state/ray-auth-token")" in
  "$(id -u) 600"|"$(id -u) 400") ;;
  *) die "$state/ray-auth-token: must be yours with mode 0600 (it is $(stat -c '%U %a' "$state/ray-auth-token")); chmod 600 it, or delete it for a new token" ;;
esac
ray_auth=(RAY_AUTH_MODE=token "RAY_AUTH_TOKEN_PATH=$state/ray-auth-token")
# Ray prefers a RAY_AUTH_TOKEN in the environment to RAY_AUTH_TOKEN_PATH: one left in this shell
# (another cluster's) would become the head's token while env.sh hands clients the file's, and every
# client and node would then be refused (InvalidAuthToken). This cluster's token is the file.
if [ -n "${RAY_AUTH_TOKEN:-}" ]; then
  note "ignoring RAY_AUTH_TOKEN from this shell: this cluster's token is $state/ray-auth-token (env.sh unsets it)"
fi
unset RAY_AUTH_TOKEN

# A proxy in the environment (http_proxy, HTTPS_PROXY, ALL_PROXY...) with no no_proxy that names
# 127.0.0.1: Python clients (MLflow's, urllib's) sent the trials' requests for the MLflow server on
# 127.0.0.1 to the proxy. 127.0.0.1 is added to no_proxy for Ray's processes, and env.sh adds it in
# the shells that read it.
direct=()
proxy_set=false
for var in http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY; do
  [ -z "${!var:-}" ] || proxy_set=true
done
if [ "$proxy_set" = true ] && [[ ",${no_proxy:-${NO_PROXY:-}}," != *",127.0.0.1,"* ]]; then
  np="${no_proxy:-${NO_PROXY:-}}"
  direct=("no_proxy=127.0.0.1${np:+,$np}" "NO_PROXY=127.0.0.1${np:+,$np}")
fi

# detach LOG CMD...: run CMD as the leader of a new session (so local-down.sh can stop exactly its
# processes), stdin closed, output appended to LOG. Portable setsid via Python's os.setsid.
detach() {
  local log="$1"
  shift
  "$PY" -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' "$@" \
    < /dev/null >> "$log" 2>&1 9>&- &
}

# --- start Ray and MLflow ----------------------------------------------------------------------------
if "$PY" -c 'import sys, ray._private.utils as u; sys.exit(u.get_dashboard_dependency_error() is not None)' 2>/dev/null; then
  dashboard=true   # needs ray[default]; the job API (`ray job submit`) lives in the dashboard
else
  dashboard=false
fi
grpc=false
if "$PY" -c 'import grpc' 2>/dev/null; then grpc=true; fi
declare -A log_from   # per service: the size of its log before this attempt

start_services() {
  local svc
  local -a ray_args mlflow_args extra
  ray_args=(
    start --head --block
    --port="$ray_port"
    --temp-dir="$ray_tmp"
    --include-dashboard="$dashboard" --dashboard-host=127.0.0.1 --dashboard-port="$p_dash"
    --dashboard-agent-listen-port="$p_agent_http" --dashboard-agent-grpc-port="$p_agent_grpc"
    --metrics-export-port="$p_metrics" --runtime-env-agent-port="$p_runtime_env"
    --disable-usage-stats
  )
  # The client server (ray://) only starts when ray[client] is installed, on 10001 by default.
  if [ "$grpc" = true ]; then ray_args+=(--ray-client-server-port="$p_client"); fi
  mapfile -d '' -t extra < <(words META_STUDY_RAY_START_ARGS)
  ray_args+=("${extra[@]}")

  for svc in ray mlflow; do
    echo "=== local-up $(date -u +%FT%TZ)" >> "$state/$svc.log"
    log_from[$svc]=$(wc -c < "$state/$svc.log")
  done
  note "starting Ray head on 127.0.0.1:$ray_port (logs: $state/ray.log, $state/ray/session_latest/logs)"
  # the boot the PID files below belong to: after a reboot local-down.sh signals none of them
  cat /proc/sys/kernel/random/boot_id > "$state/boot_id" 2>/dev/null || rm -f "$state/boot_id"
  # and the paths they name: after a move of STATE_DIR, local-down.sh knows them by these
  printf '%s\n%s\n' "$state" "$ray_tmp" > "$state/started_in"
  started=1
  # Tasks and job drivers inherit the raylet's environment, so MLFLOW_TRACKING_URI set here reaches
  # every trial without any configuration in the sweep.
  detach "$state/ray.log" env -u RAY_ADDRESS "${ray_auth[@]}" ${direct[@]+"${direct[@]}"} MLFLOW_TRACKING_URI="$mlflow_uri" \
    RAY_enable_metrics_collection=0 DASHBOARD_METRIC_PORT="$p_dash_metrics" AUTOSCALER_METRIC_PORT="$p_autoscaler_metrics" \
    PATH="$state/bin:$PATH" "$PY" -m ray.scripts.scripts "${ray_args[@]}"
  echo $! > "$state/ray.pid"

  mlflow_args=(
    server --host 127.0.0.1 --port "$mlflow_port" --workers 1
    --backend-store-uri "sqlite:///$state/mlflow/mlflow.db"
    --artifacts-destination "$state/mlflow/artifacts" --serve-artifacts
  )
  mapfile -d '' -t extra < <(words META_STUDY_MLFLOW_ARGS)
  mlflow_args+=("${extra[@]}")
  note "starting MLflow on $mlflow_uri (log: $state/mlflow.log)"
  # MLflow's GenAI job runner (a runner and 7 huey consumer processes, ~0.8 GB) is not used by meta-study.
  detach "$state/mlflow.log" env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$PY" -m mlflow "${mlflow_args[@]}"
  echo $! > "$state/mlflow.pid"
}

# wait_healthy: 0 when both answer; 2 when one exited because another program had taken its port
# (start again on new ports); dies on anything else. The first MLflow start creates the database
# (~10-30 s); Ray is up in ~10 s. MLflow counts as up when its REST API answers as MLflow does: a
# /health that answers 200 can be another server that took the port (seen once in a test run).
wait_healthy() {
  local mlflow_ok=0 ray_ok=0 deadline=$((SECONDS + timeout_s)) svc ray_status
  while :; do
    for svc in ray mlflow; do
      if ! kill -0 "$(cat "$state/$svc.pid")" 2>/dev/null; then
        if tail -c "+$((log_from[$svc] + 1))" "$state/$svc.log" | grep -qiE 'address already in use|errno 98'; then
          note "$svc: another program took its port before it could bind it"
          return 2
        fi
        tail -n 20 "$state/$svc.log" >&2 || true
        die "$svc exited during startup (log: $state/$svc.log)"
      fi
    done
    if [ "$mlflow_ok" -eq 0 ] && "$PY" - "$mlflow_uri" <<'EOF' 2>/dev/null
import json, sys, urllib.request
url = sys.argv[1] + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
# never through a proxy: with http_proxy set (and no no_proxy naming 127.0.0.1) the check asked the
# proxy, and a healthy MLflow was "not healthy after 180 s", then stopped
with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as r:
    sys.exit(r.status != 200 or "experiment" not in json.load(r))
EOF
    then
      mlflow_ok=1
      note "MLflow is healthy"
    fi
    # `ray status` exits 0 as soon as the GCS answers, but prints "No cluster status" until the head
    # node has reported its resources (a few seconds later, longer on a loaded machine); a job
    # submitted before that may wait, so healthy means the resources table is there.
    if [ "$ray_ok" -eq 0 ] && ray_status="$(env "${ray_auth[@]}" "$PY" -m ray.scripts.scripts status \
        --address "127.0.0.1:$ray_port" 2>/dev/null)" && [[ "$ray_status" == *$'\nResources'* ]]; then
      ray_ok=1
      note "Ray is healthy"
    fi
    if [ "$mlflow_ok" -eq 1 ] && [ "$ray_ok" -eq 1 ]; then return 0; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      local which=""   # which one: "not healthy" alone sent users to both logs
      [ "$ray_ok" -eq 1 ] || which="Ray (ray status --address 127.0.0.1:$ray_port shows no resources)"
      [ "$mlflow_ok" -eq 1 ] || which="${which:+$which and }MLflow (its REST API does not answer at $mlflow_uri)"
      die "not healthy after ${timeout_s} s: $which (logs in $state)"
    fi
    sleep 1
  done
}

fixed="${META_STUDY_RAY_PORT:-}${META_STUDY_MLFLOW_PORT:-}"
for attempt in 1 2 3; do
  start_services
  rc=0
  wait_healthy || rc=$?
  [ "$rc" -eq 0 ] && break
  [ -z "$fixed" ] || die "a port was taken during startup (META_STUDY_RAY_PORT / META_STUDY_MLFLOW_PORT are fixed; logs in $state)"
  [ "$attempt" -lt 3 ] || die "a port was taken during startup, 3 times (logs in $state)"
  META_STUDY_LOCK_HELD=1 "$here/local-down.sh" "$state" > /dev/null 2>&1 || true
  pick_ports
  note "starting again on new ports (attempt $((attempt + 1)) of 3)"
done

# Ray makes its --temp-dir world-writable (0777) at start: another user of the machine could write
# into its session directories (logs, sockets' directory). Ours and its workers' only.
chmod 700 "$ray_tmp"

echo "$mlflow_port" > "$state/mlflow.port"

# --- print what a shell needs -----------------------------------------------------------------------------
{
  echo "unset RAY_AUTH_TOKEN  # another cluster's token would win over RAY_AUTH_TOKEN_PATH"
  echo "export RAY_ADDRESS=127.0.0.1:$ray_port"
  echo "export RAY_AUTH_MODE=token"
  echo "export RAY_AUTH_TOKEN_PATH=$(shq "$state/ray-auth-token")"
  [ "$dashboard" = true ] && echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$p_dash"
  echo "export MLFLOW_TRACKING_URI=$mlflow_uri"
  # shellcheck disable=SC2016  # expanded where env.sh is read
  [ "${#direct[@]}" -eq 0 ] || echo 'export no_proxy="127.0.0.1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1${NO_PROXY:+,$NO_PROXY}"  # the proxy in the environment: not for the servers on 127.0.0.1'
  echo "# MLflow UI: $mlflow_uri"
  [ "$dashboard" = true ] && echo "# Ray dashboard: http://127.0.0.1:$p_dash"
  echo "# stop: $(printf %q "$here/local-down.sh") $(printf %q "$state")"
} > "$state/env.sh.tmp"
mv "$state/env.sh.tmp" "$state/env.sh"
cat "$state/env.sh"
note "up; paste the lines above, or: . $(printf %q "$state/env.sh")"
