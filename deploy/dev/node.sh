#!/usr/bin/env bash
# A real Kubernetes node for the dev stack, joined to the control plane of kube.sh: a kubelet built
# from the same module set (deploy/dev/k8sbins), Debian's containerd 1.6 and runc, and Debian's CNI
# plugins (one bridge network for the pods). No registry is reached: the pause and busybox images are
# built here (deploy/dev/node-images.sh) and imported into containerd. No scheduler runs: pods name
# the node (spec.nodeName) and use images that are present (imagePullPolicy: Never).
#
#   deploy/dev/node.sh install   apt packages, the kubelet (into $CACHE_DIR/k8s-<version>, beside the
#                                control plane), crictl ($CACHE_DIR/cri-tools-<version>) and the images
#                                ($CACHE_DIR/images-<key>); only what is missing is built
#   deploy/dev/node.sh up        (install if needed,) containerd, the images, the node's certificates,
#                                the kubelet; wait until the Node is Ready. A healthy node is left alone;
#                                anything else (one part died, the control plane was recreated) is
#                                taken down and started afresh. Needs the control plane up.
#   deploy/dev/node.sh down      remove the pods' sandboxes and containers, stop the kubelet and
#                                containerd (pid files), unmount everything under /var/lib/kubelet and
#                                the containerd dirs, remove netns, veths and the bridge, restore the
#                                sysctls the kubelet and the bridge plugin change, delete the Node (and
#                                pods bound to it) if the apiserver is up, remove the state; then print
#                                what is left (and exit 1 if anything is)
#   deploy/dev/node.sh status    exit 0 and print "node ... up" when containerd and the kubelet run and
#                                the Node is Ready
#
# The node, "kube-node": InternalIP = the IPv4 address of the default route's interface; kubelet on
# that address, port 10250 (client certs of the control plane's CA, webhook authn/authz; anonymous off),
# healthz on 127.0.0.1:10248. Its credential is a client certificate CN=system:node:kube-node,
# O=system:nodes signed by the control plane's CA (authorized by the Node authorizer, limited by the
# NodeRestriction admission plugin). Kubelet root: /var/lib/kubelet, where CSI drivers expect it
# (plugins/<driver>/csi.sock, plugins_registry/). Pods: bridge gpcni0, 10.244.0.0/24 (host-local IPAM).
# cgroup v1 only, no systemd as PID 1: failCgroupV1 false, cgroupDriver cgroupfs, no QoS cgroups; root
# may not lower oom_score_adj here, hence containerd's restrict_oom_score_adj.
#
# `up` writes $DEV_STATE/node/env: NODE_NAME, NODE_IP, KUBELET_ROOT, KUBELET_KUBECONFIG, KUBELET_LOG,
# CONTAINERD_SOCK, CONTAINERD_NAMESPACE, CONTAINERD_LOG, CTR and CRICTL (wrappers that point ctr and
# crictl at this containerd), IMAGE_PAUSE, IMAGE_BUSYBOX, POD_CIDR, POD_LOGS_DIR, CNI_BRIDGE.
#
# Environment (all optional):
#   DEV_STATE            state root (default <repo>/.dev); node state in $DEV_STATE/node, the control
#                        plane's in $DEV_STATE/kube
#   CACHE_DIR            binary cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner)
#   KUBE_NODE_NAME       Node name (default kube-node)
#   KUBE_NODE_IP         the node's address (default: the IPv4 address of the default route's interface)
#   KUBELET_PORT         kubelet API port (default 10250)
#   KUBELET_HEALTHZ_PORT kubelet healthz port on 127.0.0.1 (default 10248)
#   NODE_READY_TIMEOUT   seconds `up` waits for each step (default 120)
#   GO                   go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

LOG_PREFIX=node
# shellcheck source=deploy/dev/lib.sh
. "$SCRIPT_DIR/lib.sh"

DEV_STATE="${DEV_STATE:-$REPO_ROOT/.dev}"
DEV_STATE="$(realpath -m -- "$DEV_STATE")"
STATE="$DEV_STATE/node"
KUBE_STATE="$DEV_STATE/kube"
PKI="$STATE/pki"
CTRD_DIR="$STATE/containerd"
CTRD_SOCK="$CTRD_DIR/containerd.sock"
CTRD_NS=k8s.io
CNI_CONF_DIR="$STATE/cni/net.d"
CNI_IPAM_DIR="$STATE/cni/ipam"
CNI_BIN_DIR=/usr/lib/cni
CNI_BRIDGE=gpcni0
POD_CIDR=10.244.0.0/24
KUBELET_DIR="$STATE/kubelet"
KUBELET_ROOT=/var/lib/kubelet
POD_LOGS_DIR="$STATE/pod-logs"
ENV_FILE="$STATE/env"
SYSCTL_SAVED="$STATE/sysctl.saved"
# What the kubelet (its kernel tunables: protectKernelDefaults is false) and the bridge plugin
# (isGateway) set machine-wide; `up` records them first and `down` puts them back.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)

CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner}"
k8s_init
BIN_DIR="$K8S_BIN_DIR"
CRICTL_VERSION=v1.37.0
CRICTL_BIN="$CACHE_DIR/cri-tools-$CRICTL_VERSION/crictl"

NODE_NAME="${KUBE_NODE_NAME:-kube-node}"
KUBELET_PORT="${KUBELET_PORT:-10250}"
HEALTHZ_PORT="${KUBELET_HEALTHZ_PORT:-10248}"
READY_TIMEOUT="${NODE_READY_TIMEOUT:-120}"
STOP_TIMEOUT=20
STARTING=0

# --- install --------------------------------------------------------------------------------

install_apt() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x "$CNI_BIN_DIR/bridge" && -x "$CNI_BIN_DIR/host-local" && -x "$CNI_BIN_DIR/loopback" ]] ||
    missing+=(containernetworking-plugins)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep "ok installed" >/dev/null || missing+=(busybox-static)
  command -v gcc >/dev/null || missing+=(gcc)
  compgen -G '/usr/lib/*/libc.a' >/dev/null || missing+=(libc6-dev)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
      "${missing[@]}" >/dev/null
  fi
}

# Source of the k8s.io/kubernetes module the binaries are built from (for the pause program).
k8s_source() {
  local go
  go="$(go_cmd)" || die "go not found (set GO=, or install Go 1.26+ at /usr/local/go)"
  (cd "$K8S_MOD_DIR" && "$go" mod download k8s.io/kubernetes && "$go" list -m -f '{{.Dir}}' k8s.io/kubernetes)
}

# $CACHE_DIR/images-<key>, the key naming the versions and hashing every input of node-images.sh;
# sets IMAGES_DIR, PAUSE_C, PAUSE_VERSION.
images_init() {
  [[ -n "${IMAGES_DIR:-}" ]] && return 0
  local src busybox hash
  src="$(k8s_source)" || die "cannot find the source of k8s.io/kubernetes $K8S_VERSION"
  PAUSE_C="$src/build/pause/linux/pause.c"
  PAUSE_VERSION="$(awk '$1 == "TAG" && $2 == "?=" { print $3; exit }' "$src/build/pause/Makefile")"
  [[ -n "$PAUSE_VERSION" && -f "$PAUSE_C" ]] || die "no pause.c or no pause TAG in $src/build/pause"
  busybox="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null | sed -e 's/^[0-9]*://' -e 's/[+~]/-/g')"
  hash="$( {
    cat "$SCRIPT_DIR/node-images.sh" "$PAUSE_C"
    gcc --version | head -n1
    dpkg-query -W -f='${Version}\n' libc6-dev busybox-static
    dpkg --print-architecture
  } | sha256sum | cut -c1-12)"
  IMAGES_DIR="$CACHE_DIR/images-pause-$PAUSE_VERSION-busybox-$busybox-$hash"
}

install_images() {
  images_init
  if [[ -f "$IMAGES_DIR/images.env" ]]; then
    log "images already built in $IMAGES_DIR"
    return 0
  fi
  log "building the pause and busybox images into $IMAGES_DIR"
  "$SCRIPT_DIR/node-images.sh" "$IMAGES_DIR" "$PAUSE_C" "$PAUSE_VERSION"
}

install_crictl() {
  [[ -x "$CRICTL_BIN" ]] && return 0
  local go
  go="$(go_cmd)" || die "go not found (set GO=, or install Go 1.26+ at /usr/local/go)"
  mkdir -p "$(dirname "$CRICTL_BIN")"
  go_build_bin crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" "$(dirname "$CRICTL_BIN")" / "$go" \
    -X "sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}"
}

installed() {
  k8s_installed kubelet kubectl && [[ -x "$CRICTL_BIN" ]] && command -v containerd >/dev/null &&
    command -v runc >/dev/null && [[ -x "$CNI_BIN_DIR/bridge" ]] && command -v gcc >/dev/null &&
    dpkg-query -W busybox-static >/dev/null 2>&1 && images_init && [[ -f "$IMAGES_DIR/images.env" ]]
}

cmd_install() {
  [[ "$(id -u)" == 0 ]] || die "run as root"
  install_apt
  k8s_install kubelet kubectl
  install_crictl
  install_images
}

# --- probes (processes: lib.sh) --------------------------------------------------------------

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig="$KUBE_STATE/kubeconfig" --request-timeout=10s "$@"; }
apiserver_up() { [[ -f "$KUBE_STATE/kubeconfig" ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1; }
ctr_() { ctr --address "$CTRD_SOCK" --namespace "$CTRD_NS" "$@"; }
crictl_() { "$CRICTL_BIN" --config "$STATE/crictl.yaml" "$@"; }

containerd_ready() { [[ -S "$CTRD_SOCK" ]] && ctr_ version >/dev/null 2>&1; }
kubelet_healthy() { [[ "$(curl -s --max-time 3 "http://127.0.0.1:$HEALTHZ_PORT/healthz" || true)" == ok ]]; }
node_ready() {
  [[ "$(kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)" == True ]]
}

# The IPv4 address of the default route's interface.
default_ip() {
  local dev
  dev="$(ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')"
  [[ -n "$dev" ]] || return 1
  ip -4 -o addr show dev "$dev" scope global | awk '{ sub(/\/.*/, "", $4); print $4; exit }'
}

# --- configuration --------------------------------------------------------------------------

gen_certs() {
  local ca="$KUBE_STATE/pki/ca.crt" ca_key="$KUBE_STATE/pki/ca.key"
  [[ -f "$ca" && -f "$ca_key" ]] || die "no control-plane CA in $KUBE_STATE/pki (is kube.sh up?)"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  cp "$ca" "$PKI/ca.crt"
  (
    cd "$PKI"
    # The kubelet's credential: group system:nodes, user system:node:<name> (Node authorizer).
    openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
      -subj "/O=system:nodes/CN=system:node:$NODE_NAME"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
      >kubelet-client.ext
    openssl x509 -req -in kubelet-client.csr -CA "$ca" -CAkey "$ca_key" -CAcreateserial -CAserial ca.srl \
      -days 3650 -extfile kubelet-client.ext -out kubelet-client.crt
    # Its serving certificate, for the apiserver (logs, exec) and anyone else calling the kubelet.
    openssl req -newkey rsa:2048 -nodes -keyout kubelet.key -out kubelet.csr -subj "/CN=$NODE_NAME"
    cat >kubelet.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1,DNS:localhost
EXT
    openssl x509 -req -in kubelet.csr -CA "$ca" -CAkey "$ca_key" -CAserial ca.srl -days 3650 \
      -extfile kubelet.ext -out kubelet.crt
    rm -f ./*.csr ./*.ext ./*.srl
    chmod 600 ./*.key
  ) >"$STATE/openssl.log" 2>&1 || { cat "$STATE/openssl.log" >&2; die "openssl failed"; }
  rm -f "$STATE/openssl.log"
}

write_kubelet_config() {
  local server
  server="$(awk '$1 == "server:" { print $2; exit }' "$KUBE_STATE/kubeconfig")"
  [[ -n "$server" ]] || die "no server in $KUBE_STATE/kubeconfig"
  mkdir -p "$KUBELET_DIR" "$POD_LOGS_DIR" "$STATE/volume-plugins"
  cat >"$KUBELET_DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gluster-dev
  cluster:
    server: $server
    certificate-authority: $PKI/ca.crt
users:
- name: system:node:$NODE_NAME
  user:
    client-certificate: $PKI/kubelet-client.crt
    client-key: $PKI/kubelet-client.key
contexts:
- name: system:node:$NODE_NAME@gluster-dev
  context:
    cluster: gluster-dev
    user: system:node:$NODE_NAME
current-context: system:node:$NODE_NAME@gluster-dev
EOF
  cat >"$KUBELET_DIR/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $HEALTHZ_PORT
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
    cacheTTL: 2m0s
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 5m0s
    cacheUnauthorizedTTL: 30s
containerRuntimeEndpoint: unix://$CTRD_SOCK
imageServiceEndpoint: unix://$CTRD_SOCK
# cgroup v1 only here, and no systemd as PID 1.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
# Root may not lower oom_score_adj here: keep the kubelet's own as it is.
oomScoreAdj: 0
# The images cannot be pulled again (no registry): never collect them; evict only when really short.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
podLogsDir: $POD_LOGS_DIR
# Volume stats (kubelet_volume_stats_*, from the CSI driver's NodeGetVolumeStats) every 10 s, not 1 min.
volumeStatsAggPeriod: 10s
volumePluginDir: $STATE/volume-plugins
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
registerNode: true
shutdownGracePeriod: 0s
EOF
}

write_containerd_config() {
  mkdir -p "$CTRD_DIR" "$CNI_CONF_DIR" "$CNI_IPAM_DIR"
  local runc
  runc="$(command -v runc)"
  cat >"$CTRD_DIR/config.toml" <<EOF
# containerd of the dev node (deploy/dev/node.sh): its own root, state, socket and runc root, so it
# collides with nothing (a system containerd would use /var/lib/containerd, /run/containerd).
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CTRD_SOCK"

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$CTRD_DIR/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$IMAGE_PAUSE"
    # Root may not lower oom_score_adj here; without this every sandbox fails in runc create
    # ("can't get final child's PID from pipe: EOF").
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "$runc"
          Root = "$CTRD_DIR/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN_DIR"
      conf_dir = "$CNI_CONF_DIR"
      max_conf_num = 1
EOF
  cat >"$CNI_CONF_DIR/10-gluster-provisioner-dev.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "gluster-provisioner-dev",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_IPAM_DIR",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
EOF
}

write_wrappers() {
  mkdir -p "$STATE/bin"
  printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$CTRD_SOCK" "$CTRD_SOCK" \
    >"$STATE/crictl.yaml"
  printf '#!/bin/sh\n# ctr on the dev node'"'"'s containerd, in the namespace of the kubelet'"'"'s containers.\nexec ctr --address %s --namespace %s "$@"\n' \
    "$CTRD_SOCK" "$CTRD_NS" >"$STATE/bin/ctr"
  printf '#!/bin/sh\n# crictl on the dev node'"'"'s containerd.\nexec %s --config %s "$@"\n' \
    "$CRICTL_BIN" "$STATE/crictl.yaml" >"$STATE/bin/crictl"
  chmod 755 "$STATE/bin/ctr" "$STATE/bin/crictl"
}

write_env() {
  cat >"$ENV_FILE" <<EOF
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
KUBELET_ROOT=$KUBELET_ROOT
KUBELET_KUBECONFIG=$KUBELET_DIR/kubeconfig
KUBELET_LOG=$(log_file kubelet)
CONTAINERD_SOCK=$CTRD_SOCK
CONTAINERD_NAMESPACE=$CTRD_NS
CONTAINERD_LOG=$(log_file containerd)
CTR=$STATE/bin/ctr
CRICTL=$STATE/bin/crictl
IMAGE_PAUSE=$IMAGE_PAUSE
IMAGE_BUSYBOX=$IMAGE_BUSYBOX
POD_CIDR=$POD_CIDR
POD_LOGS_DIR=$POD_LOGS_DIR
CNI_BRIDGE=$CNI_BRIDGE
EOF
}

save_sysctls() {
  [[ -f "$SYSCTL_SAVED" ]] && return 0 # the values from before our first change
  local k
  for k in "${SYSCTLS[@]}"; do printf '%s=%s\n' "$k" "$(sysctl -n "$k")"; done >"$SYSCTL_SAVED.tmp"
  mv -f "$SYSCTL_SAVED.tmp" "$SYSCTL_SAVED"
}

restore_sysctls() {
  [[ -f "$SYSCTL_SAVED" ]] || return 0
  local line k v changed=()
  while IFS= read -r line; do
    k="${line%%=*}" v="${line#*=}"
    if [[ "$(sysctl -n "$k" 2>/dev/null)" != "$v" ]]; then
      sysctl -q -w "$k=$v" >/dev/null && changed+=("$k=$v")
    fi
  done <"$SYSCTL_SAVED"
  ((${#changed[@]} == 0)) || log "sysctls restored: ${changed[*]}"
  rm -f "$SYSCTL_SAVED"
}

# --- up / down / status ---------------------------------------------------------------------

# A control plane started by a kube.sh from before node.sh lacks what the node relies on for the
# rest (NodeRestriction, the apiserver's client certificate for kubelets): say so.
control_plane_caveats() {
  local pid args
  pid="$(cat "$KUBE_STATE/kube-apiserver.pid" 2>/dev/null)" || return 0
  args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 0
  if [[ "$args" != *NodeRestriction* || "$args" != *--kubelet-client-certificate=* ]]; then
    log "warning: the control plane was started without NodeRestriction and a kubelet client certificate" \
      "(an older kube.sh): pods run, but logs/exec through the apiserver fail and the node's credential is" \
      "not held to its own Node; restart it (kube.sh down && kube.sh up, then node.sh up)"
  fi
}

# The node is up, registered with this control plane (same CA) and Ready.
healthy() {
  comp_pid containerd >/dev/null && comp_pid kubelet >/dev/null && kubelet_healthy &&
    cmp -s "$PKI/ca.crt" "$KUBE_STATE/pki/ca.crt" && node_ready
}

cmd_up() {
  local t0 f pid
  t0="$(now)"
  [[ "$(id -u)" == 0 ]] || die "run as root"
  [[ -x "$BIN_DIR/kubectl" ]] || k8s_install kubectl
  apiserver_up || die "the control plane is not up (deploy/dev/kube.sh up first; no /readyz via $KUBE_STATE/kubeconfig)"
  if [[ -f "$ENV_FILE" ]] && healthy; then
    log "already running (containerd pid $(comp_pid containerd), kubelet pid $(comp_pid kubelet); Node $NODE_NAME Ready)"
    control_plane_caveats
    return 0
  fi
  if comp_pid containerd >/dev/null || comp_pid kubelet >/dev/null; then
    log "not healthy as a whole (or the control plane is a new one); restarting from scratch"
  fi
  if pid="$(foreign_kubelet)"; then die "another kubelet runs (pid $pid): one node per machine"; fi
  cmd_down >/dev/null 2>&1 || true
  installed || cmd_install

  NODE_IP="${KUBE_NODE_IP:-$(default_ip || true)}"
  [[ -n "$NODE_IP" ]] || die "no IPv4 address on the default route's interface; set KUBE_NODE_IP"
  ((${#CTRD_SOCK} < 100)) || die "containerd socket path too long for a unix socket: $CTRD_SOCK (shorter DEV_STATE)"
  port_busy "$NODE_IP" "$KUBELET_PORT" && die "port $NODE_IP:$KUBELET_PORT is already in use by another process"
  port_busy 127.0.0.1 "$HEALTHZ_PORT" && die "port 127.0.0.1:$HEALTHZ_PORT is already in use by another process"
  # shellcheck disable=SC1091
  . "$IMAGES_DIR/images.env"

  mkdir -p "$STATE"
  for f in containerd kubelet; do rm -f "$(log_file "$f")"; done
  STARTING=1
  save_sysctls
  gen_certs
  write_containerd_config
  write_kubelet_config
  write_wrappers

  start_comp containerd "$(command -v containerd)" --config "$CTRD_DIR/config.toml"
  wait_for containerd "its socket" containerd_ready
  local img t1
  t1="$(now)"
  for img in pause busybox; do
    ctr_ images import "$IMAGES_DIR/$img.oci.tar" >>"$(log_file containerd)" 2>&1 ||
      fail_with_log containerd "ctr images import of $img failed"
  done
  for img in "$IMAGE_PAUSE" "$IMAGE_BUSYBOX"; do
    ctr_ images ls -q | grep -xF "$img" >/dev/null || fail_with_log containerd "$img not in containerd after the import"
  done
  log "images imported in $(since "$t1")s ($IMAGE_PAUSE, $IMAGE_BUSYBOX)"

  mkdir -p "$KUBELET_ROOT"
  start_comp kubelet "$BIN_DIR/kubelet" \
    --config="$KUBELET_DIR/config.yaml" \
    --kubeconfig="$KUBELET_DIR/kubeconfig" \
    --root-dir="$KUBELET_ROOT" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --v=1
  wait_for kubelet "healthz ok" kubelet_healthy
  wait_for kubelet "Node $NODE_NAME Ready" node_ready
  STARTING=0
  write_env
  log "ready in $(since "$t0")s (Node $NODE_NAME $NODE_IP, kubelet $K8S_VERSION, $(containerd --version | awk '{ print $1, $3 }'); env $ENV_FILE)"
  control_plane_caveats
}

# Mount points at or under any of the given directories, deepest first.
mounts_under() {
  local d
  findmnt -rn -o TARGET | while IFS= read -r m; do
    m="$(printf '%b' "$m")" # findmnt -r escapes blanks as \x20
    for d in "$@"; do
      if [[ "$m" == "$d" || "$m" == "$d"/* ]]; then echo "$m"; break; fi
    done
  done | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

# Processes of our containerd: its shims (their command line carries its socket) and everything under
# them (the containers' processes), children first.
leftover_pids() {
  local shims
  shims="$(pgrep -f -- "-address $CTRD_SOCK( |\$)" | tr '\n' ' ' || true)"
  [[ -n "${shims// /}" ]] || return 0
  ps -eo pid=,ppid= | awk -v roots="$shims" '
    { parent[$1] = $2 }
    END {
      n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 0
      do { added = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = keep[parent[p]] + 1; added = 1 }
      } while (added)
      for (p in keep) print keep[p] "\t" p
    }' | sort -rn | cut -f2
}

# A kubelet that is not ours (ours is stopped first, or not started yet).
foreign_kubelet() {
  local p
  for p in $(pgrep -x kubelet || true); do
    [[ "$p" == "$(comp_pid kubelet 2>/dev/null || true)" ]] || { echo "$p"; return 0; }
  done
  return 1
}

netns_list() { compgen -G '/run/netns/cni-*' || true; }

# Host ends of the pods' veth pairs: on our bridge, or named as the bridge plugin names them
# (veth + 8 hex digits; the gluster nodes' are gsveth<n>).
cni_veths() {
  ip -o link show type veth 2>/dev/null | awk -F': ' -v br="$CNI_BRIDGE" '
    { name = $2; sub(/@.*/, "", name) }
    $0 ~ ("master " br " ") || name ~ /^veth[0-9a-f]{8}$/ { print name }'
}

# The kubelet's iptables chains (KUBE-FIREWALL with its jumps from INPUT and OUTPUT, the canaries;
# without kube-proxy nothing else makes KUBE-* chains): the jumps to them, then the chains.
kube_chains() { "$1" -w 5 -t "$2" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'; }
remove_kube_chains() {
  local ipt table chain rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle; do
      [[ -n "$(kube_chains "$ipt" "$table")" ]] || continue
      "$ipt" -w 5 -t "$table" -S | awk '$1 == "-A" && $2 !~ /^KUBE-/ && / -j KUBE-/' | while IFS= read -r rule; do
        # The rule's words as iptables -S printed them (quoted where needed), with -D for -A.
        eval "\"\$ipt\" -w 5 -t \"\$table\" -D ${rule#-A }" || log "cannot delete $ipt -t $table rule: $rule"
      done
      for chain in $(kube_chains "$ipt" "$table"); do "$ipt" -w 5 -t "$table" -F "$chain"; done
      for chain in $(kube_chains "$ipt" "$table"); do "$ipt" -w 5 -t "$table" -X "$chain"; done
    done
  done
}

cmd_down() {
  local t0 pid m ns left=0 ids
  t0="$(now)"
  # The kubelet first, so that nothing starts containers again.
  stop_comp kubelet
  if pid="$(foreign_kubelet)"; then
    log "another kubelet runs (pid $pid), not ours: leaving $KUBELET_ROOT alone"
    return 1
  fi
  if comp_pid containerd >/dev/null && [[ -x "$CRICTL_BIN" ]]; then
    # Through the CRI: stopping a sandbox kills its containers and tears its network down (CNI DEL).
    ids="$(crictl_ pods -q 2>/dev/null || true)"
    if [[ -n "$ids" ]]; then
      log "removing $(wc -w <<<"$ids") pod sandbox(es)"
      # shellcheck disable=SC2086
      crictl_ stopp $ids >/dev/null 2>&1 || log "crictl stopp failed (going on)"
      # shellcheck disable=SC2086
      crictl_ rmp -f $ids >/dev/null 2>&1 || log "crictl rmp failed (going on)"
    fi
    ids="$(ctr_ tasks ls -q 2>/dev/null || true)"
    for m in $ids; do
      ctr_ tasks kill -s SIGKILL "$m" >/dev/null 2>&1 || true
      ctr_ tasks delete -f "$m" >/dev/null 2>&1 || true
    done
  fi
  stop_comp containerd
  for pid in $(leftover_pids); do
    log "killing leftover pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100))"
    kill -KILL "$pid" 2>/dev/null || true
  done
  sleep 0.2
  # Mounts: pod volumes (tmpfs of projected tokens, CSI, ...), container rootfs, shm, netns.
  while IFS= read -r m; do
    [[ -n "$m" ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
  done < <(mounts_under "$KUBELET_ROOT" "$CTRD_DIR")
  for ns in $(netns_list); do
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  for m in $(cni_veths); do
    ip link del "$m" 2>/dev/null || true
  done
  ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && ip link del "$CNI_BRIDGE"
  remove_kube_chains
  # The containers' cgroups (cgroupfs driver, no QoS cgroups: containerd puts them under k8s.io/);
  # rmdir takes only empty ones.
  for m in /sys/fs/cgroup/*/k8s.io; do
    [[ -d "$m" ]] || continue
    find "$m" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$m" 2>/dev/null || true
  done
  restore_sysctls
  if [[ -x "$BIN_DIR/kubectl" ]] && apiserver_up; then
    # Pods bound to the node would stay (unless kube-controller-manager runs pod GC): they go with it.
    kubectl_admin delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
      --force --grace-period=0 --wait=false >/dev/null 2>&1 || true
    kubectl_admin delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 ||
      log "could not delete Node $NODE_NAME"
  fi
  rm -rf "$KUBELET_ROOT" /var/log/containers
  rm -rf "$CTRD_DIR" "$PKI" "$KUBELET_DIR" "${STATE:?}/cni" "${STATE:?}/bin" "$POD_LOGS_DIR" "${STATE:?}/volume-plugins"
  rm -f "$ENV_FILE" "$STATE/crictl.yaml"
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true

  # What is left (nothing, normally).
  for pid in $(leftover_pids); do log "left: pid $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-100)"; left=1; done
  for m in kubelet containerd; do
    if pid="$(comp_pid "$m")"; then log "left: $m pid $pid"; left=1; fi
  done
  while IFS= read -r m; do [[ -n "$m" ]] && { log "left: mount $m"; left=1; }; done < <(mounts_under "$KUBELET_ROOT" "$CTRD_DIR")
  for ns in $(netns_list); do log "left: netns $ns"; left=1; done
  for m in $(cni_veths); do
    log "left: veth $m"
    left=1
  done
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then log "left: bridge $CNI_BRIDGE"; left=1; fi
  for m in /sys/fs/cgroup/*/k8s.io; do [[ -d "$m" ]] && { log "left: cgroup $m"; left=1; }; done
  for m in iptables ip6tables; do
    command -v "$m" >/dev/null || continue
    for ns in filter nat mangle; do
      for pid in $(kube_chains "$m" "$ns"); do log "left: $m -t $ns chain $pid"; left=1; done
    done
  done
  if ((left)); then
    log "down in $(since "$t0")s, but something is left (above)"
    return 1
  fi
  log "down in $(since "$t0")s; no process, mount, netns, veth or bridge left"
}

cmd_status() {
  local c pid pids=()
  for c in containerd kubelet; do
    if ! pid="$(comp_pid "$c")"; then
      echo "node $NODE_NAME down ($c not running)" >&2
      return 1
    fi
    pids+=("$c=$pid")
  done
  if ! kubelet_healthy; then
    echo "node $NODE_NAME down (kubelet healthz not ok)" >&2
    return 1
  fi
  if ! node_ready; then
    echo "node $NODE_NAME down (Node not Ready, or the apiserver is down)" >&2
    return 1
  fi
  echo "node $NODE_NAME up ${pids[*]}"
}

case "${1:-}" in
  install) cmd_install ;;
  up | down)
    [[ "$(id -u)" == 0 ]] || die "run as root"
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 600 9 || die "another node.sh up/down holds $STATE/.lock"
    "cmd_$1"
    ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 {install|up|down|status}" >&2
    exit 2
    ;;
esac
