# Shared helpers of the dev stack scripts (kafka.sh, kube.sh, node.sh, prometheus.sh, gluster.sh); sourced, not run.
# The sourcing script sets LOG_PREFIX (e.g. "kafka") before sourcing; STOP_TIMEOUT may be preset.
# shellcheck shell=bash

STOP_TIMEOUT="${STOP_TIMEOUT:-20}"

log() { echo "${LOG_PREFIX:-dev}: $*" >&2; }
# die MESSAGE [LOG...]: say what failed, show the last lines of each LOG, exit 1.
die() {
  log "$1"
  shift
  local file
  for file in "$@"; do show_log "$file" 15; done
  exit 1
}
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

# cmdline_has PID TEXT: the process's command line (arguments joined by spaces) contains TEXT. Read
# into an array, not piped: `tr | grep -q` dies of SIGPIPE under pipefail and calls a live process dead.
cmdline_has() {
  local args=()
  mapfile -d '' args <"/proc/$1/cmdline" 2>/dev/null || return 1
  [[ "${args[*]}" == *"$2"* ]]
}

# show_log FILE [LINES]: the last lines of a log on stderr, if it exists.
show_log() {
  local file=$1 lines=${2:-40}
  if [[ -f "$file" ]]; then
    log "last lines of $file:"
    tail -n "$lines" "$file" >&2
  fi
}

# --- components: processes with a pid file and a log in $STATE ---------------------------------
# For kube.sh and node.sh: the sourcing script sets STATE (its state dir) and READY_TIMEOUT, sets
# STARTING=1 while `up` runs, and defines cmd_down (what a failed `up` undoes).

pid_file() { echo "$STATE/$1.pid"; }
log_file() { echo "$STATE/$1.log"; }

# Pid from the pid file, if that process is alive and runs our binary with our state (pid reuse).
comp_pid() {
  local f pid args=()
  f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || return 1  # not `tr | head`: see cmdline_has
  ((${#args[@]})) || return 1
  [[ "$(basename -- "${args[0]}")" == "$1" ]] || return 1
  [[ "${args[*]}" == *"$STATE/"* ]] || return 1
  echo "$pid"
}

stop_comp() {
  local name=$1 pid
  if pid="$(comp_pid "$name")"; then
    stop_pid "$pid" "$name"
  fi
  rm -f "$(pid_file "$name")"
}

fail_with_log() {
  local name=$1
  shift
  log "$*"
  show_log "$(log_file "$name")" 40
  # A failed `up` leaves nothing behind it: the sourcing script's cmd_down undoes it.
  if ((STARTING)); then
    STARTING=0
    cmd_down || true
  fi
  exit 1
}

# New session, no stdin, output to its log, without our lock fds. $! is the binary's pid once setsid
# has exec'd it: wait for that (up to 5 s), or comp_pid would take it for another process.
start_comp() {
  local name=$1 bin=$2 pid i
  shift 2
  setsid "$bin" "$@" </dev/null >>"$(log_file "$name")" 2>&1 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$(pid_file "$name")"
  for ((i = 0; i < 50; i++)); do
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$bin")" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "$name started, pid $pid"
}

wait_for() {
  local name=$1 what=$2 t0
  shift 2
  t0="$(now)"
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@"; do
    comp_pid "$name" >/dev/null || fail_with_log "$name" "$name exited while waiting for $what"
    ((SECONDS < deadline)) || fail_with_log "$name" "$name: no $what within ${READY_TIMEOUT}s"
    sleep 0.3
  done
  log "$name: $what after $(since "$t0")s"
}

# --- Kubernetes binaries (kube.sh, node.sh) -------------------------------------------------
# Every binary is a main package pinned in the consumer module deploy/dev/k8sbins (tools.go), built
# from the Go module proxy into $CACHE_DIR/k8s-<version>, <version> being k8s.io/kubernetes in its
# go.mod. k8s_init sets K8S_MOD_DIR, K8S_VERSION, K8S_MINOR and K8S_BIN_DIR (CACHE_DIR must be set).

DEV_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

k8s_init() {
  K8S_MOD_DIR="$DEV_SCRIPTS_DIR/k8sbins"
  K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$K8S_MOD_DIR/go.mod")"
  [[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || die "cannot read k8s.io/kubernetes from $K8S_MOD_DIR/go.mod"
  K8S_MINOR="${BASH_REMATCH[1]}"
  K8S_BIN_DIR="$CACHE_DIR/k8s-$K8S_VERSION"
}

go_cmd() {
  if [[ -n "${GO:-}" ]]; then echo "$GO"
  elif command -v go >/dev/null; then command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
  else return 1
  fi
}

k8s_package() {
  case "$1" in
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kube-apiserver | kube-controller-manager | kubectl | kubelet) echo "k8s.io/kubernetes/cmd/$1" ;;
    *) die "no package known for $1 (add it to k8s_package in lib.sh and to k8sbins/tools.go)" ;;
  esac
}

# k8s_installed NAME...: all of them are in the cache.
k8s_installed() {
  local c
  for c in "$@"; do [[ -x "$K8S_BIN_DIR/$c" ]] || return 1; done
}

# go_build_bin NAME PKG OUT_DIR MOD_DIR GO [LDFLAGS...]: one binary, at lowest CPU priority, with a
# progress line every minute (a cold kube-apiserver build takes many minutes on 2 cores). Written to a
# temp file and renamed: never half a binary. PKG is built in the module MOD_DIR, or, as PATH@VERSION
# (MOD_DIR then ignored), with its own module's go.mod (`go install`, its binary named after PATH).
go_build_bin() {
  local name=$1 pkg=$2 out=$3 mod=$4 go=$5 t0 pid rc=0 next=60
  shift 5
  local ldflags=(-s -w "$@")
  t0="$(now)"
  log "building $name ($pkg) ..."
  if [[ "$pkg" == *@* ]]; then
    rm -rf "$out/.$name.gobin"
    (cd / && CGO_ENABLED=0 GOBIN="$out/.$name.gobin" nice -n 19 "$go" install -trimpath -buildvcs=false \
      -ldflags "${ldflags[*]}" "$pkg" && mv -f "$out/.$name.gobin/$(basename -- "${pkg%@*}")" "$out/.$name.tmp" &&
      rm -rf "$out/.$name.gobin") >"$out/.$name.build.log" 2>&1 8>&- 9>&- &
  else
    (cd "$mod" && CGO_ENABLED=0 exec nice -n 19 "$go" build -trimpath -buildvcs=false \
      -ldflags "${ldflags[*]}" -o "$out/.$name.tmp" "$pkg") >"$out/.$name.build.log" 2>&1 8>&- 9>&- &
  fi
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (($(printf '%.0f' "$(since "$t0")") >= next)); then
      log "  still building $name ($(since "$t0")s)"
      next=$((next + 60))
    fi
  done
  wait "$pid" || rc=$?
  if ((rc != 0)); then
    tail -n 40 "$out/.$name.build.log" >&2
    rm -f "$out/.$name.tmp"
    die "go build of $name failed (exit $rc); full log: $out/.$name.build.log"
  fi
  mv -f "$out/.$name.tmp" "$out/$name"
  rm -f "$out/.$name.build.log"
  log "built $name in $(since "$t0")s ($(du -h "$out/$name" | cut -f1))"
}

k8s_build_one() {
  local name=$1 go=$2 ldflags=()
  if [[ "$name" == kube* ]]; then
    # What `make` stamps; without it /version (and `kubectl version`) reports v0.0.0-master.
    local v=k8s.io/component-base/version
    ldflags+=(-X "$v.gitMajor=1" -X "$v.gitMinor=$K8S_MINOR" -X "$v.gitVersion=$K8S_VERSION"
      -X "$v.gitTreeState=clean" -X "$v.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  fi
  go_build_bin "$name" "$(k8s_package "$name")" "$K8S_BIN_DIR" "$K8S_MOD_DIR" "$go" "${ldflags[@]}"
}

# k8s_install NAME...: build those missing, one install at a time per version (a lock in the cache:
# kube.sh and node.sh may run at once, and each waits for the other's build).
k8s_install() {
  if k8s_installed "$@"; then
    log "kubernetes $K8S_VERSION already installed in $K8S_BIN_DIR ($*)"
    return 0
  fi
  local go t0 c
  go="$(go_cmd)" || die "go not found (set GO=, or install Go 1.26+ at /usr/local/go)"
  mkdir -p "$K8S_BIN_DIR"
  exec 8>"$K8S_BIN_DIR/.install.lock"
  if ! flock -n 8; then
    log "waiting for another build in $K8S_BIN_DIR (lock $K8S_BIN_DIR/.install.lock)"
    flock -w 3600 8 || die "another install holds $K8S_BIN_DIR/.install.lock"
  fi
  if k8s_installed "$@"; then log "kubernetes $K8S_VERSION installed by a concurrent run ($*)"; exec 8>&-; return 0; fi
  t0="$(now)"
  log "building kubernetes $K8S_VERSION from the Go module proxy into $K8S_BIN_DIR ($("$go" version | cut -d' ' -f3))"
  for c in "$@"; do
    [[ -x "$K8S_BIN_DIR/$c" ]] || k8s_build_one "$c" "$go"
  done
  exec 8>&-
  log "installed kubernetes $K8S_VERSION in $(since "$t0")s ($*)"
}
