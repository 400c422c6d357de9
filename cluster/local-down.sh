#!/usr/bin/env bash
# Stop the single-machine services that cluster/local-up.sh started: the Ray head, the nodes
# cluster/local-add-node.sh added, and the MLflow tracking server of one state directory.
# Idempotent: stopping what is not running is a no-op, and a directory local-up.sh never ran in is
# left as it is. Exit status 0, or 1 when a process outlived SIGKILL (its PID file is kept) or
# another of these scripts holds the state directory's lock.
#
#   cluster/local-down.sh [STATE_DIR]      # default: $META_STUDY_LOCAL_DIR, else ./meta-study-local
#
# State (the MLflow database and artifacts, Ray's session logs, the Ray auth token) is kept, so
# local-up.sh starts again where it stopped; delete STATE_DIR to start from scratch.
#
# Why not `ray stop`: it kills every Ray process of this user on the machine, including other
# people's clusters and test sessions. local-up.sh starts each service as the leader of its own
# session (setsid), so stopping exactly that session stops exactly what it started:
#   1. SIGTERM to the leader. `ray start --block` drains the node and stops its processes
#      (up to 30 s); `mlflow server` forwards the signal to its uvicorn workers.
#   2. Whatever is still in the session after the grace period (a hung worker, a process whose
#      leader was SIGKILLed) gets SIGTERM, then SIGKILL 5 s later.
# A PID file is believed only for the boot that wrote it (STATE_DIR/boot_id), and only for a process
# of this user whose command line names this state's directories as whole paths (`--temp-dir=DIR`:
# the head's STATE_DIR/ray, a node's own STATE_DIR/ray-node-NAME; MLflow's database); where its leader is gone, only session members that name them so (MLflow's
# worker: in its environment; Ray's agents: a file they hold open) are signalled:
# a stale file (the PID reused by a program that started a session of its own) once killed
# processes local-up.sh never started.
# A state directory moved (or renamed) while its services ran is still stopped: local-up.sh records
# where it started them (STATE_DIR/started_in), and a leader whose log (stdout) is this directory's
# ray.log / mlflow.log is its own (a setup started before started_in was written). A copy of one
# (`cp -a`) stops nothing of the original's: it says which directory to run this script on.
# Run inside the setup it would stop (a Ray task or job), it refuses (exit 2) and signals nothing;
# it never signals itself, its callers or its own session.
#
# Settings (environment):
#   META_STUDY_LOCK_WAIT   seconds to wait for another local-up, local-add-node or local-down on the
#                          same state directory (default 300; 0: do not wait)
set -euo pipefail

# --help prints the comment above; another option is refused (`--help` was taken for a state
# directory: mkdir's "unrecognized option '--help/mlflow/artifacts'", or "--help/env.sh not found").
case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^set -euo pipefail/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
  -*) echo "local-down: error: unknown option $1 (usage: cluster/local-down.sh [STATE_DIR]; --help)" >&2; exit 2 ;;
esac

state="${1:-${META_STUDY_LOCAL_DIR:-./meta-study-local}}"
if [ ! -d "$state" ]; then
  echo "local-down: nothing to stop: $state does not exist" >&2
  exit 0
fi
state="$(cd "$state" && pwd -P)"
# A directory local-up.sh never started anything in (a mistyped argument, $META_STUDY_LOCAL_DIR set
# to a project directory) is left untouched: its env.sh was deleted, and every *.pid file in it
# taken for a Ray node's (another program's PID file deleted as "stale"), exit 0. local-up.sh writes
# the token before it starts anything, and the PID files and boot_id as it starts; checked again
# under the lock below (.lock: a local-up may be under way there, not yet that far).
is_state() {
  [ -e "$state/ray-auth-token" ] || [ -e "$state/ray.pid" ] || [ -e "$state/mlflow.pid" ] || [ -e "$state/boot_id" ]
}
not_state() {
  echo "local-down: nothing to stop: $state is no state directory of cluster/local-up.sh (no ray-auth-token, ray.pid or mlflow.pid); left as it is" >&2
  exit 0
}
is_state || [ -e "$state/.lock" ] || not_state
lock_wait="${META_STUDY_LOCK_WAIT:-300}"
[[ "$lock_wait" =~ ^[0-9]{1,9}$ ]] \
  || { echo "local-down: error: META_STUDY_LOCK_WAIT=$lock_wait: not a whole number of seconds" >&2; exit 1; }
# One of local-up, local-add-node, local-down at a time per state directory: two local-up at once
# raced MLflow's database migration, and each one's cleanup stopped the other's services, leaving a
# Ray head and an MLflow server running with no PID file. The lock is fd 9; services never inherit it.
if [ -z "${META_STUDY_LOCK_HELD:-}" ] && command -v flock > /dev/null; then
  exec 9> "$state/.lock"
  # said before the wait: beside a local-up that is starting (~30 s) this waited without a word
  flock -n 9 || echo "local-down: waiting for another local-up, local-add-node or local-down on $state (up to $lock_wait s)" >&2
  flock -w "$lock_wait" 9 || { echo "local-down: another local-up, local-add-node or local-down holds $state/.lock (waited $lock_wait s)" >&2; exit 1; }
fi
is_state || not_state

note() { echo "local-down: $*" >&2; }

boot_now="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)"
boot_then="$(cat "$state/boot_id" 2>/dev/null || true)"
rebooted=0
[ -n "$boot_now" ] && [ -n "$boot_then" ] && [ "$boot_now" != "$boot_then" ] && rebooted=1

# PIDs of the processes in session $1 (Linux ps; empty when the session is gone), zombies left
# out: they are dead already, and no signal removes them (only their parent's wait does).
session_members() {
  ps -e -o pid= -o sid= -o stat= 2>/dev/null | awk -v s="$1" '$2 == s && $3 !~ /^Z/ { print $1 }'
}

# alive PID: the process runs. A zombie (exited, not yet reaped by its parent: init in a container
# takes seconds, or never) answers kill -0 but has no command line: a leader just killed was taken
# for a reused PID ("stale pid file", its session left running), and waited on for the whole grace.
alive() {
  local stat
  stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$stat" && "$stat" != Z* ]]
}

# A path named whole: at the start of an argument or after = : , a quote or a / (sqlite:////PATH),
# and followed by the end of one, / : , or a quote; never inside a longer name (/srv/x/ms is no
# mention of /x/ms, nor /tmp/msray.ab1 of /tmp/msray.ab).
path_pre='(^|[[:space:]=:,"'\''/])'
path_post='($|[[:space:]/:,"'\''])'
me="$(id -u)"
# names PID PATH: PID is alive, runs as this user, and its command line names PATH as a whole (not
# as a piece of a longer path: /data/ms/mlflow is no mention of /ms/mlflow, nor /tmp/msray.ab1 of
# /tmp/msray.ab): a PID file can outlive its process and the PID can be reused by an unrelated one,
# which must never be signalled. (A substring once matched another user's process, or another
# state directory's whose path ends in this one's.)
names() {
  local out uid args
  out="$(ps -ww -o uid= -o args= -p "$1" 2>/dev/null)" || return 1
  read -r uid args <<< "$out"
  [ "$uid" = "$me" ] && [[ "$args" =~ $path_pre"$2"$path_post ]]
}

# in_env PID PREFIX PATH: an entry of PID's environment starts with PREFIX and names PATH as a whole
# (Linux /proc; readable for our own processes only). MLflow's uvicorn worker (`python -m uvicorn
# ... mlflow.server.fastapi_app:app`) names this state only there (_MLFLOW_SERVER_FILE_STORE=...):
# with its leader gone, it was left running, holding MLflow's port and database.
in_env() {
  local e
  [ -n "$2" ] || return 1
  while IFS= read -r -d '' e; do
    [[ "$e" == "$2"* && "$e" =~ $path_pre"$3"$path_post ]] && return 0
  done 2>/dev/null < "/proc/$1/environ"
  return 1
}

# agent_in PID DIR: PID is one of Ray's agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`: their
# setproctitle overwrites the command line, and the state's directories are named nowhere in it)
# holding a file open under DIR (its session logs). With the head's leader gone, they were "left
# alone (not ours)" and kept listening on their ports, without a GCS, for minutes.
agent_in() {
  local f
  [ -n "$2" ] && [[ "$(ps -ww -o args= -p "$1" 2>/dev/null)" == ray::* ]] || return 1
  for f in /proc/"$1"/fd/*; do
    [[ "$(readlink "$f" 2>/dev/null)" == "$2"/* ]] && return 0
  done
  return 1
}

# wait_gone SECONDS PID...: poll until none of the PIDs is alive; false on timeout.
wait_gone() {
  local deadline=$((SECONDS + $1)) pid alive
  shift
  while :; do
    alive=0
    for pid in "$@"; do alive "$pid" && alive=1 && break; done
    [ "$alive" -eq 0 ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.5
  done
}

# log_dir PID BASE: the directory whose BASE.log PID writes its output to, if any. local-up.sh and
# local-add-node.sh start every leader with its stdout on STATE/BASE.log (ray.log, mlflow.log,
# NODE.log), and the kernel names an open file by its path now: after a move of STATE_DIR the new
# one, while the command line still names the old; for a PID file copied with its directory
# (`cp -a`), the original's. So it knows a leader without STATE_DIR/started_in (a setup started
# before local-up.sh wrote it). Linux /proc; readable for our own processes only; a log moved to
# another file system (or deleted) reads "PATH (deleted)" and names none.
log_dir() {
  local f
  f="$(readlink "/proc/$1/fd/1" 2>/dev/null)" || return 0
  [[ "$f" == /*/"$2.log" ]] && printf '%s' "${f%/*}"
  return 0
}

# This script's own process, its ancestors (its caller's shell, and up) and its session: never
# signalled. Run from a Ray task (its worker is in the head's session, below the head's leader), it
# killed itself with the head's session half-way, and the task's caller got "the task's local
# raylet died".
self_sid="$(ps -o sid= -p $$ 2>/dev/null | tr -d ' ')"
self_line=" $$ "
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
  p="$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')"
  [ -n "$p" ] && self_line="$self_line$p "
done
# mine PID: PID is this script, one of its ancestors, or the leader of its session.
mine() { [[ "$self_line" == *" $1 "* || "$1" == "$self_sid" ]]; }

# leader_in KIND PID STATE RAY_TMP...: PID is a leader local-up.sh (KIND ray: or local-add-node.sh)
# started with this STATE and one of the RAY_TMPs: `ray start ... --temp-dir=RAY_TMP`, `mlflow
# server` with its database under STATE/mlflow. An empty RAY_TMP names nothing (it matched any).
leader_in() {
  local t
  case "$1" in
    ray) for t in "${@:4}"; do [ -n "$t" ] && names "$2" "--temp-dir=$t" && return 0; done; return 1 ;;
    mlflow) names "$2" "$3/mlflow" ;;
  esac
}
# member_in KIND PID STATE RAY_TMP...: PID, in the session of a leader that is gone, is one of its
# processes (on its command line; MLflow's worker: in its environment; Ray's agents: a file held open).
member_in() {
  local t
  case "$1" in
    ray) for t in "${@:4}"; do [ -n "$t" ] && { names "$2" "$t" || agent_in "$2" "$t"; } && return 0; done; return 1 ;;
    mlflow) names "$2" "$3/mlflow" || in_env "$2" _MLFLOW_SERVER_ "$3/mlflow" ;;
  esac
}
# temp_dirs BASE: the Ray temp dirs that the leader of BASE.pid may name, into cur_tmps (this
# directory's) and old_tmps (where it was started, STATE_DIR/started_in: a directory moved since).
# The head's: ray_tmp. A node's (local-add-node.sh NAME): its own, STATE_DIR/ray-node-NAME (or the
# /tmp stand-in that links to), the one NAME.temp_dir records it was started with (a stand-in
# deleted under it, a directory moved since), and the head's: a node added before nodes had their
# own started with the head's temp dir, and is still stopped.
temp_dirs() {
  local d recorded=""
  cur_tmps=("$ray_tmp") old_tmps=("$o_ray_tmp")
  case "$1" in ray|mlflow) return 0 ;; esac
  d="$state/ray-node-$1"
  [ -d "$d" ] && d="$(cd "$d" && pwd -P)"
  [ -f "$state/$1.temp_dir" ] && recorded="$(head -n 1 "$state/$1.temp_dir")"
  cur_tmps=("$d" "$recorded" "$ray_tmp")
  old_tmps=("$o_ray_tmp")
  [ -z "$o_state" ] || old_tmps+=("$o_state/ray-node-$1")
}

# stop_service NAME PIDFILE KIND GRACE_SECONDS   (KIND: ray, a head's or a node's; mlflow)
stop_service() {
  local name="$1" pidfile="$2" kind="$3" grace="$4" leader members alive=0 p kept owner base cur_tmps old_tmps
  if [ ! -f "$pidfile" ]; then
    note "$name: not running"
    return 0
  fi
  leader="$(cat "$pidfile")"
  if [[ ! "$leader" =~ ^[0-9]+$ ]]; then
    note "$name: ignoring malformed pid file $pidfile"
    rm -f "$pidfile"
    return 0
  fi
  if [ "$rebooted" -eq 1 ]; then
    note "$name: stale pid file (written before a reboot): nothing to stop"
    rm -f "$pidfile"
    return 0
  fi
  # This directory moved here since its services started: they name where it was. Unless it is a
  # copy (`cp -a` of a running setup): the directory it was copied from, still there, records the
  # same process, and that directory's services are not this one's to stop.
  # (A deep state's copy even names the same Ray temp dir: its link to /tmp was copied.)
  if [ -n "$o_state" ] && [ "$o_state" != "$state" ] \
      && [ "$(cat "$o_state/${pidfile##*/}" 2>/dev/null)" = "$leader" ]; then
    if alive "$leader" || [ -n "$(session_members "$leader")" ]; then
      note "$name: pid $leader is $o_state's (this directory is a copy of it): left running; stop it with cluster/local-down.sh $o_state"
    else
      note "$name: not running"
    fi
    rm -f "$pidfile"
    return 0
  fi
  # Where the leader writes its log: another directory that records the same PID is the one it was
  # started in, and this one a copy of it (without started_in: a setup started before local-up.sh
  # wrote it; a deep state's copy names the same Ray temp dir, and its Ray was stopped as its own).
  base="${pidfile##*/}" && base="${base%.pid}"
  temp_dirs "$base"
  owner=""
  alive "$leader" && owner="$(log_dir "$leader" "$base")"
  if [ -n "$owner" ] && [ ! "$owner" -ef "$state" ] && [ "$(cat "$owner/$base.pid" 2>/dev/null)" = "$leader" ]; then
    note "$name: pid $leader is $owner's (this directory is a copy of it): left running; stop it with cluster/local-down.sh $owner"
    rm -f "$pidfile"
    return 0
  fi
  if alive "$leader" && ! leader_in "$kind" "$leader" "$state" "${cur_tmps[@]}"; then
    if [ -n "$o_state" ] && leader_in "$kind" "$leader" "$o_state" "${old_tmps[@]}"; then
      if [ "$o_state" != "$state" ]; then
        note "$name: started in $o_state (this directory was moved since)"
      else
        note "$name: started with Ray's temp dir $o_ray_tmp, which $state/ray no longer names"
      fi
    elif [ -n "$owner" ] && [ "$owner" -ef "$state" ]; then
      # no started_in (or one that does not name them): its log here says it is ours
      note "$name: started before this directory was moved here (pid $leader writes $state/$base.log)"
    else
      # The PID was reused; Linux does not reuse a PID while it names a live session, so none of
      # our processes can be left in session $leader either.
      note "$name: stale pid file (pid $leader is another process now)"
      rm -f "$pidfile"
      return 0
    fi
  fi
  if alive "$leader"; then
    alive=1
    note "$name: stopping (pid $leader)"
    kill -TERM "$leader" 2>/dev/null || true
    wait_gone "$grace" "$leader" || note "$name: still running after ${grace} s"
  fi
  members="$(session_members "$leader")"
  if [ "$alive" -eq 0 ] && [ -n "$members" ]; then
    # The leader was gone before we came: the session's members are ours only if they say so
    # (on their command line, or in their environment where given; a live leader of ours holds its
    # PID, so then every member is ours).
    kept=""
    for p in $members; do
      if member_in "$kind" "$p" "$state" "${cur_tmps[@]}" \
          || { [ -n "$o_state" ] && member_in "$kind" "$p" "$o_state" "${old_tmps[@]}"; }; then
        kept="$kept $p"
      else
        note "$name: leaving pid $p alone (not ours)"
      fi
    done
    members="$(echo "$kept" | tr ' ' '\n' | sed '/^$/d')"
  fi
  # never this script or its callers, whatever session they are in
  kept=""
  for p in $members; do mine "$p" || kept="$kept $p"; done
  members="$(echo "$kept" | tr ' ' '\n' | sed '/^$/d')"
  if [ -n "$members" ]; then
    note "$name: terminating leftover processes: $(echo "$members" | tr '\n' ' ')"
    # shellcheck disable=SC2086  # one PID per word
    kill -TERM $members 2>/dev/null || true
    # shellcheck disable=SC2086
    if ! wait_gone 5 $members; then
      # shellcheck disable=SC2086
      kill -KILL $members 2>/dev/null || true
      # shellcheck disable=SC2086
      if ! wait_gone 5 $members; then
        # Alive after SIGKILL: stuck in the kernel (a hung GPU driver or NFS call). This said "could
        # not kill all of", then "stopped", deleted the PID file and exited 0: nothing knew of them.
        kept=""
        for p in $members; do alive "$p" && kept="$kept $p"; done
        note "$name: error: still running after SIGKILL:$kept; kept $pidfile (run local-down.sh again once they are gone)"
        failed=1
        return 0
      fi
    fi
  fi
  rm -f "$pidfile"
  note "$name: stopped"
}

failed=0   # 1: a process survived SIGKILL (stop_service); the exit status
# Ray's --temp-dir is $state/ray, or a short directory under /tmp that $state/ray links to.
ray_tmp="$state/ray"
[ -d "$ray_tmp" ] && ray_tmp="$(cd "$ray_tmp" && pwd -P)"
# Where local-up.sh started the services (its lines: STATE_DIR's path then, and Ray's temp dir),
# when that is not here: a directory moved or renamed while they ran, or Ray's stand-in under /tmp
# deleted under it (a /tmp cleaner: $state/ray then names no directory). Their command lines name the
# paths they were started with, so without this they were taken for reused PIDs ("stale pid file"),
# their PID files deleted, and they ran on for good, holding their ports.
o_state="" o_ray_tmp=""
if [ -f "$state/started_in" ]; then
  { IFS= read -r o_state && IFS= read -r o_ray_tmp; } < "$state/started_in" || true
  if [ -z "$o_ray_tmp" ] || { [ "$o_state" = "$state" ] && [ "$o_ray_tmp" = "$ray_tmp" ]; }; then
    o_state="" o_ray_tmp=""
  fi
fi

# Run inside the setup it is to stop (from a Ray task, in the head's session, or a job's driver:
# either one below the head's leader): refused before anything is signalled. Stopping the head ends
# the caller (Ray kills the task's worker), and this script with it, half-way: MLflow ran on, and
# ray.pid and env.sh stayed. A live PID that names none of this state's paths is a stale PID file
# (stop_service says so), no reason to refuse.
# For local-add-node.sh (META_STUDY_DOWN_ONLY_NODE) only that node's PID file counts: what it stops
# is that node's leftovers, and a job or task that adds a node runs below the head's leader, which
# refused it ("this runs inside what it would stop (ray.pid's ..."): the node was never added.
to_stop=("$state"/*.pid)
[ -z "${META_STUDY_DOWN_ONLY_NODE:-}" ] || to_stop=("$state/$META_STUDY_DOWN_ONLY_NODE.pid")
if [ "$rebooted" -eq 0 ]; then
  for pidfile in "${to_stop[@]}"; do
    [ -f "$pidfile" ] || continue
    leader="$(cat "$pidfile")" base="$(basename "$pidfile" .pid)"
    [[ "$leader" =~ ^[0-9]+$ ]] && mine "$leader" || continue
    kind=ray
    [ "$base" != mlflow ] || kind=mlflow
    temp_dirs "$base"
    if ! alive "$leader" || leader_in "$kind" "$leader" "$state" "${cur_tmps[@]}" \
        || { [ -n "$o_state" ] && leader_in "$kind" "$leader" "$o_state" "${old_tmps[@]}"; } \
        || [ "$(log_dir "$leader" "$base")" -ef "$state" ]; then
      caller=local-down.sh
      [ -z "${META_STUDY_DOWN_ONLY_NODE:-}" ] || caller=local-add-node.sh   # NAME's leftovers: a task on them
      echo "local-down: error: $state: this runs inside what it would stop ($base.pid's $leader is this script's session or one of its callers: a Ray task or job, or a shell started from one); run cluster/$caller from outside it" >&2
      exit 2
    fi
  done
fi

# local-add-node.sh NAME, before it starts NAME again: only what is left of NAME's last start.
if [ -n "${META_STUDY_DOWN_ONLY_NODE:-}" ]; then
  stop_service "ray node $META_STUDY_DOWN_ONLY_NODE" "$state/$META_STUDY_DOWN_ONLY_NODE.pid" ray 60
  exit "$failed"
fi
# Nodes that cluster/local-add-node.sh added, then the head: its drivers and tasks may still be
# logging to MLflow while the node drains.
for pidfile in "$state"/*.pid; do
  [ -f "$pidfile" ] || continue
  node="$(basename "$pidfile" .pid)"
  case "$node" in ray|mlflow) continue ;; esac
  stop_service "ray node $node" "$pidfile" ray 60
done
stop_service ray "$state/ray.pid" ray 60
stop_service mlflow "$state/mlflow.pid" mlflow 30
rm -f "$state/env.sh"  # its addresses belong to the services just stopped
exit "$failed"
