#!/usr/bin/env bash
# Local single-node Apache Kafka broker (KRaft, combined broker+controller) for dev and tests.
# The broker classpath comes from Maven Central through deploy/dev/kafka/pom.xml; no tarball.
#
#   deploy/dev/kafka.sh install   fetch the broker jars into $CACHE_DIR/kafka-<version>/libs
#   deploy/dev/kafka.sh up        (install if needed,) format fresh storage, start, wait ready
#   deploy/dev/kafka.sh down      stop the broker (SIGTERM, SIGKILL after 20 s), drop its data
#   deploy/dev/kafka.sh status    exit 0 and print "kafka HOST:PORT up pid N" when ready
#
# Environment (all optional):
#   DEV_STATE              state root (default <repo>/.dev); broker state in $DEV_STATE/kafka
#   CACHE_DIR              jar cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner)
#   KAFKA_PORT             PLAINTEXT port on 127.0.0.1 (default 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default 19093)
#   KAFKA_HEAP_OPTS        default "-Xms256m -Xmx512m"
#   KAFKA_READY_TIMEOUT    seconds `up` waits for readiness (default 60)
#   KAFKA_LOG_LEVEL        broker root log level (default WARN, see kafka/log4j2.properties)
#   JAVA_HOME              java to use (default: java on PATH; needs 17+)
#   PYTHON                 python with aiokafka for the readiness probe (default python3)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
KAFKA_CONF_DIR="$SCRIPT_DIR/kafka"
POM="$KAFKA_CONF_DIR/pom.xml"
PROBE="$SCRIPT_DIR/kafka_ready.py"

DEV_STATE="${DEV_STATE:-$REPO_ROOT/.dev}"
STATE="$DEV_STATE/kafka"
DATA_DIR="$STATE/data"
PROPS="$STATE/server.properties"
LOG_FILE="$STATE/broker.log"
PID_FILE="$STATE/broker.pid"
ENV_FILE="$STATE/env"

CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner}"
KAFKA_VERSION="$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM" | head -n1)"
[[ -n "$KAFKA_VERSION" ]] || { echo "kafka: cannot read kafka.version from $POM" >&2; exit 1; }
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
LIB_DIR="$KAFKA_HOME/libs"
MARKER="$KAFKA_HOME/.complete"

KAFKA_HOST=127.0.0.1
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-60}"
PYTHON="${PYTHON:-python3}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
STOP_TIMEOUT=20

LOG_PREFIX=kafka
# shellcheck source=deploy/dev/lib.sh
. "$SCRIPT_DIR/lib.sh"

# --- install --------------------------------------------------------------------------------

# The cache is keyed by version; the marker also records the pom's hash so an edited pom
# (e.g. another log4j version) is picked up. Same pom + marker present => no network, no mvn.
install_key() { echo "kafka=$KAFKA_VERSION pom=$(sha256sum "$POM" | cut -d' ' -f1)"; }

installed() { [[ -d "$LIB_DIR" && -f "$MARKER" && "$(cat "$MARKER")" == "$(install_key)" ]]; }

cmd_install() {
  if installed; then
    log "kafka $KAFKA_VERSION already installed ($(ls "$LIB_DIR" | wc -l) jars in $LIB_DIR)"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch the broker jars)"
  mkdir -p "$KAFKA_HOME"
  exec 8>"$KAFKA_HOME/.install.lock"
  flock -w 600 8 || die "another install holds $KAFKA_HOME/.install.lock"
  if installed; then log "kafka $KAFKA_VERSION installed by a concurrent run"; return 0; fi

  local t0 tmp
  t0="$(now)"
  tmp="$(mktemp -d "$KAFKA_HOME/.install.XXXXXX")"
  log "resolving kafka_2.13 $KAFKA_VERSION with maven into $LIB_DIR"
  # build directory and output folder both point into the cache: nothing lands in the repo.
  if ! (cd "$tmp" && mvn -B -q -f "$POM" package \
        -Dkafka.libs.dir="$tmp/libs" -Dkafka.build.dir="$tmp/build") >"$tmp/mvn.log" 2>&1; then
    tail -n 40 "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "maven could not resolve the broker classpath"
  fi
  local missing=()
  compgen -G "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null || missing+=("kafka_2.13")
  # SLF4J 1.x binding: without it the broker runs silently (slf4j NOP logger).
  compgen -G "$tmp/libs/log4j-slf4j-impl-*.jar" >/dev/null || missing+=("log4j-slf4j-impl")
  compgen -G "$tmp/libs/log4j-core-*.jar" >/dev/null || missing+=("log4j-core")
  compgen -G "$tmp/libs/slf4j-api-1.*.jar" >/dev/null || missing+=("slf4j-api 1.x")
  if ((${#missing[@]})); then
    ls "$tmp/libs" >&2 || true
    rm -rf "$tmp"
    die "broker classpath incomplete, missing: ${missing[*]}"
  fi
  if compgen -G "$tmp/libs/log4j-slf4j2-impl-*.jar" >/dev/null; then
    log "warning: log4j-slf4j2-impl present; Kafka uses SLF4J 1.7 and needs log4j-slf4j-impl"
  fi
  rm -rf "$LIB_DIR"
  mv "$tmp/libs" "$LIB_DIR"
  rm -rf "$tmp"
  install_key >"$MARKER"
  log "installed kafka $KAFKA_VERSION ($(ls "$LIB_DIR" | wc -l) jars) in $(since "$t0")s"
}

# --- process helpers ------------------------------------------------------------------------

# Pid from the pid file, if that process is alive and is our broker (guards against pid reuse).
broker_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline_has "$pid" "kafka.Kafka $PROPS" || return 1
  echo "$pid"
}

probe() { "$PYTHON" "$PROBE" --bootstrap "$BOOTSTRAP" "$@"; }


# JVM flags as in Kafka's kafka-run-class.sh; the log4j2 config writes to stderr.
BROKER_JVM_FLAGS=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$KAFKA_CONF_DIR/log4j2.properties")

# Short-lived tools: small heap, C1 only, faster JVM start.
tool_cmd() {
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_CONF_DIR/log4j2.properties" \
    -cp "$LIB_DIR/*" "$@"
}

stop_broker() {
  local pid
  pid="$(broker_pid)" || return 0
  stop_pid "$pid" broker
  log "broker pid $pid stopped"
}

fail_with_log() {
  log "$1"
  show_log "$LOG_FILE" 40
  exit 1
}

# --- up / down / status ---------------------------------------------------------------------

cmd_up() {
  local t0 pid
  t0="$(now)"
  if pid="$(broker_pid)"; then
    if probe --timeout 5 --quiet >/dev/null; then
      write_env
      log "already running, pid $pid ($BOOTSTRAP)"
      return 0
    fi
    log "pid $pid alive but not answering metadata requests; restarting"
    stop_broker
  fi
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_busy "$KAFKA_HOST" "$p" && die "port $KAFKA_HOST:$p is already in use by another process"
  done
  installed || cmd_install
  command -v "$JAVA" >/dev/null || die "java not found (need Java 17+)"

  rm -rf "$DATA_DIR"
  rm -f "$PID_FILE" "$ENV_FILE"
  mkdir -p "$DATA_DIR"
  sed -e "s|@HOST@|$KAFKA_HOST|g" -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@LOG_DIR@|$DATA_DIR|g" \
      "$KAFKA_CONF_DIR/server.properties.in" >"$PROPS"

  local cluster_id t1
  t1="$(now)"
  cluster_id="$(tool_cmd kafka.tools.StorageTool random-uuid 2>"$LOG_FILE" | tail -n1)" || true
  [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] || fail_with_log "StorageTool random-uuid failed"
  # Static quorum (controller.quorum.voters): format WITHOUT --standalone.
  tool_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >>"$LOG_FILE" 2>&1 \
    || fail_with_log "StorageTool format failed"
  log "storage formatted (cluster $cluster_id) in $(since "$t1")s"

  # New session (setsid), immune to the caller's hangup, output to broker.log, no stdin, and
  # without our lock fds (8, 9): the broker must not hold the install/state locks.
  # $! is the java pid: setsid execs directly because a background job of this
  # non-interactive shell is never a process-group leader (broker_pid() double-checks).
  local heap
  read -r -a heap <<<"$KAFKA_HEAP_OPTS"
  setsid "$JAVA" "${heap[@]}" "${BROKER_JVM_FLAGS[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" \
    </dev/null >>"$LOG_FILE" 2>&1 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  log "broker started, pid $pid"

  # Readiness: a real metadata request (plus one committed transaction). Give up early if the
  # broker dies meanwhile.
  local probe_pid rc=0
  # (python directly, not the probe() function: $! must be python's pid, not a subshell's)
  "$PYTHON" "$PROBE" --bootstrap "$BOOTSTRAP" --timeout "$KAFKA_READY_TIMEOUT" \
    --check-transactions >/dev/null 8>&- 9>&- &
  probe_pid=$!
  while kill -0 "$probe_pid" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      kill "$probe_pid" 2>/dev/null || true
      wait "$probe_pid" 2>/dev/null || true
      rm -f "$PID_FILE"
      fail_with_log "broker pid $pid exited during startup"
    fi
    sleep 0.2
  done
  wait "$probe_pid" || rc=$?
  if ((rc != 0)); then
    stop_broker
    fail_with_log "broker not ready within ${KAFKA_READY_TIMEOUT}s (probe exit $rc)"
  fi
  write_env
  log "ready in $(since "$t0")s ($BOOTSTRAP, transactions ok)"
}

write_env() { echo "KAFKA_BOOTSTRAP=$BOOTSTRAP" >"$ENV_FILE"; }

cmd_down() {
  stop_broker
  rm -rf "$DATA_DIR"
  rm -f "$PID_FILE" "$ENV_FILE"
}

cmd_status() {
  local pid
  if pid="$(broker_pid)" && probe --timeout 3 --quiet >/dev/null 2>&1; then
    echo "kafka $BOOTSTRAP up pid $pid"
    return 0
  fi
  echo "kafka $BOOTSTRAP down" >&2
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  up)
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 180 9 || die "another kafka.sh up/down holds $STATE/.lock"
    cmd_up
    ;;
  down)
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 180 9 || die "another kafka.sh up/down holds $STATE/.lock"
    cmd_down
    ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 {install|up|down|status}" >&2
    exit 2
    ;;
esac
