# Shared helpers of the dev stack scripts (kafka.sh, kube.sh, prometheus.sh); sourced, not run.
# The sourcing script sets LOG_PREFIX (e.g. "kafka") before sourcing; STOP_TIMEOUT may be preset.
# shellcheck shell=bash

STOP_TIMEOUT="${STOP_TIMEOUT:-20}"

log() { echo "${LOG_PREFIX:-dev}: $*" >&2; }
die() { log "$*"; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# port_busy HOST PORT: something accepts connections there.
port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# stop_pid PID WHAT: SIGTERM, wait up to STOP_TIMEOUT seconds, then SIGKILL; returns once it is gone.
stop_pid() {
  local pid=$1 what=$2
  log "stopping $what pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$what pid $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
}

# show_log FILE [LINES]: the last lines of a log on stderr, if it exists.
show_log() {
  local file=$1 lines=${2:-40}
  if [[ -f "$file" ]]; then
    log "last lines of $file:"
    tail -n "$lines" "$file" >&2
  fi
}
