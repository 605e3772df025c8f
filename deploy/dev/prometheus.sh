#!/usr/bin/env bash
# Local Prometheus for dev and tests: scrapes the daemons registered in its targets directory and
# evaluates deploy/prometheus/rules.yml, so dashboards and alerts are checked against the real thing.
#
#   deploy/dev/prometheus.sh install   apt-get install Debian's `prometheus` package if it is missing
#   deploy/dev/prometheus.sh up        (install if needed,) check the config, start with empty storage, wait ready
#   deploy/dev/prometheus.sh down      stop it (SIGTERM, SIGKILL after 20 s), drop its data and targets
#   deploy/dev/prometheus.sh status    exit 0 and print "prometheus http://HOST:PORT up pid N" when ready
#
# Scrape targets: every $DEV_STATE/prometheus/targets/*.json file (Prometheus file_sd format), e.g.
#   [{"targets": ["127.0.0.1:9464"], "labels": {"source": "demo"}}]
# Write one file per daemon (to a temporary name, then rename); Prometheus notices within seconds,
# and removing the file removes the target. Job name: gluster-provisioner.
#
# Environment (all optional):
#   DEV_STATE               state root (default <repo>/.dev); Prometheus state in $DEV_STATE/prometheus
#   PROMETHEUS_PORT         listen port on 127.0.0.1 (default 19090)
#   PROMETHEUS_INTERVAL     scrape and rule evaluation interval (default 2s)
#   PROMETHEUS_READY_TIMEOUT seconds `up` waits for readiness (default 60)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
RULES="$REPO_ROOT/deploy/prometheus/rules.yml"

DEV_STATE="${DEV_STATE:-$REPO_ROOT/.dev}"
STATE="$DEV_STATE/prometheus"
DATA_DIR="$STATE/data"
TARGETS_DIR="$STATE/targets"
CONFIG="$STATE/prometheus.yml"
LOG_FILE="$STATE/prometheus.log"
PID_FILE="$STATE/prometheus.pid"

HOST=127.0.0.1
PORT="${PROMETHEUS_PORT:-19090}"
URL="http://$HOST:$PORT"
INTERVAL="${PROMETHEUS_INTERVAL:-2s}"
READY_TIMEOUT="${PROMETHEUS_READY_TIMEOUT:-60}"
PROMETHEUS=/usr/bin/prometheus
PROMTOOL=/usr/bin/promtool
STOP_TIMEOUT=20

LOG_PREFIX=prometheus
# shellcheck source=deploy/dev/lib.sh
. "$SCRIPT_DIR/lib.sh"

cmd_install() {
  if [[ -x "$PROMETHEUS" && -x "$PROMTOOL" ]]; then
    log "$("$PROMETHEUS" --version 2>&1 | head -n1)"
    return 0
  fi
  [[ "$(id -u)" == 0 ]] || die "prometheus is not installed and installing it needs root"
  log "installing Debian's prometheus package (apt)"
  apt-get update -qq
  # RUNLEVEL=1: the package's own service must not start (we run our own instance on $PORT).
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [[ -x "$PROMETHEUS" && -x "$PROMTOOL" ]] || die "apt installed prometheus but $PROMETHEUS or $PROMTOOL is missing"
}

# Pid from the pid file, if that process is alive and is our Prometheus (guards against pid reuse).
server_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline_has "$pid" "--config.file=$CONFIG" || return 1
  echo "$pid"
}

ready() { curl -fsS --max-time 2 "$URL/-/ready" >/dev/null 2>&1; }


write_config() {
  cat >"$CONFIG" <<YAML
# Written by deploy/dev/prometheus.sh; edits are lost at the next \`up\`.
global:
  scrape_interval: $INTERVAL
  scrape_timeout: $INTERVAL
  evaluation_interval: $INTERVAL
rule_files:
  - $RULES
scrape_configs:
  - job_name: gluster-provisioner
    file_sd_configs:
      - files: ["$TARGETS_DIR/*.json"]
        refresh_interval: 5s
YAML
}

stop_server() {
  local pid
  pid="$(server_pid)" || return 0
  stop_pid "$pid" prometheus
  log "pid $pid stopped"
}

fail_with_log() {
  log "$1"
  show_log "$LOG_FILE" 30
  exit 1
}

cmd_up() {
  local pid
  if pid="$(server_pid)"; then
    if ready; then
      log "already running, pid $pid ($URL)"
      return 0
    fi
    log "pid $pid alive but not ready; restarting"
    stop_server
  fi
  port_busy "$HOST" "$PORT" && die "port $HOST:$PORT is already in use by another process"
  cmd_install
  command -v curl >/dev/null || die "curl not found (needed for the readiness probe)"

  rm -rf "$DATA_DIR"
  rm -f "$PID_FILE"
  mkdir -p "$DATA_DIR" "$TARGETS_DIR"
  write_config
  "$PROMTOOL" check config "$CONFIG" >"$LOG_FILE" 2>&1 || fail_with_log "promtool rejects $CONFIG"

  # New session, no stdin, output to the log, without our lock fd: the server must not hold it.
  setsid "$PROMETHEUS" \
    --config.file="$CONFIG" \
    --storage.tsdb.path="$DATA_DIR" \
    --storage.tsdb.retention.time=1d \
    --web.listen-address="$HOST:$PORT" \
    --web.enable-lifecycle \
    --log.level=warn \
    </dev/null >>"$LOG_FILE" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  log "started, pid $pid"

  local deadline=$((SECONDS + READY_TIMEOUT))
  until ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      fail_with_log "pid $pid exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      stop_server
      fail_with_log "not ready within ${READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
  log "ready: $URL (targets: $TARGETS_DIR/*.json, every $INTERVAL)"
}

cmd_down() {
  stop_server
  rm -rf "$DATA_DIR" "$TARGETS_DIR"
  rm -f "$PID_FILE"
}

cmd_status() {
  local pid
  if pid="$(server_pid)" && ready; then
    echo "prometheus $URL up pid $pid"
    return 0
  fi
  echo "prometheus $URL down" >&2
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  up | down)
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 120 9 || die "another prometheus.sh up/down holds $STATE/.lock"
    "cmd_$1"
    ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 {install|up|down|status}" >&2
    exit 2
    ;;
esac
