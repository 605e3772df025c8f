#!/usr/bin/env bash
# Local Kubernetes control plane for dev and tests: etcd, kube-apiserver, kube-controller-manager.
# The binaries are built from the Go module proxy by the consumer module deploy/dev/k8sbins (no
# tarballs, no images); no scheduler, and no kubelet here: the API, RBAC, admission and the
# controllers below are the real ones (PVCs bind, namespaces finalize, GC cascades). deploy/dev/node.sh
# adds a node (a kubelet with client certificate system:node:<name> of this CA; the Node authorizer and
# NodeRestriction admission hold it to its own objects); pods run there when they name it (nodeName).
# kubectl is built from the same module as a tool (never started): tests apply the manifests of
# deploy/kubernetes/ with it, and it is at hand for poking at the control plane.
#
#   deploy/dev/kube.sh install   build the three binaries and kubectl into $CACHE_DIR/k8s-<version>;
#                                only what is missing is built, running processes are left alone
#   deploy/dev/kube.sh up        (install if needed,) fresh certs and etcd, start, wait ready;
#                                a healthy control plane is left alone (a missing kubectl is built)
#   deploy/dev/kube.sh down      stop the three processes (pid files), drop etcd data and certs
#   deploy/dev/kube.sh status    exit 0 and print "kube ... up" when all three run and /readyz is 200
#
# `up` writes $DEV_STATE/kube/kubeconfig (https://127.0.0.1:16443, CA embedded, admin token in
# group system:masters) and $DEV_STATE/kube/env (KUBECONFIG=<abs path>, KUBECTL=<abs path>).
#
# Environment (all optional):
#   DEV_STATE            state root (default <repo>/.dev); control-plane state in $DEV_STATE/kube
#   CACHE_DIR            binary cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner)
#   KUBE_APISERVER_PORT  kube-apiserver secure port on 127.0.0.1 (default 16443)
#   KUBE_KCM_PORT        kube-controller-manager secure (health) port on 127.0.0.1 (default 16457)
#   KUBE_ETCD_PORT       etcd client port on 127.0.0.1 (default 12379)
#   KUBE_ETCD_PEER_PORT  etcd peer port on 127.0.0.1 (default 12380)
#   KUBE_READY_TIMEOUT   seconds `up` waits for each component (default 120)
#   GO                   go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

LOG_PREFIX=kube
# shellcheck source=deploy/dev/lib.sh
. "$SCRIPT_DIR/lib.sh"

DEV_STATE="${DEV_STATE:-$REPO_ROOT/.dev}"
STATE="$(realpath -m -- "$DEV_STATE")/kube"
PKI="$STATE/pki"
ETCD_DATA="$STATE/etcd"
KUBECONFIG_FILE="$STATE/kubeconfig"
KCM_KUBECONFIG="$STATE/kcm.kubeconfig"
TOKENS="$STATE/tokens.csv"
AUTH_HEADER="$STATE/auth-header"
ENV_FILE="$STATE/env"

CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner}"
k8s_init
BIN_DIR="$K8S_BIN_DIR"

HOST=127.0.0.1
APISERVER_PORT="${KUBE_APISERVER_PORT:-16443}"
KCM_PORT="${KUBE_KCM_PORT:-16457}"
ETCD_PORT="${KUBE_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${KUBE_ETCD_PEER_PORT:-12380}"
READY_TIMEOUT="${KUBE_READY_TIMEOUT:-120}"
SERVER="https://$HOST:$APISERVER_PORT"
ETCD_URL="http://$HOST:$ETCD_PORT"
SERVICE_CIDR=10.0.0.0/24
STOP_TIMEOUT=20
STARTING=0

COMPONENTS=(etcd kube-apiserver kube-controller-manager)
# Built and cached with the components, never started.
TOOLS=(kubectl)
# The controllers that make the API behave like a cluster's for our use: PV/PVC binding and
# protection, namespace deletion, garbage collection, service accounts (+ legacy token secrets,
# the kube-root-ca.crt config map) and aggregated cluster roles (admin/edit/view); for the node of
# node.sh: node lifecycle (the not-ready taint goes once it is Ready; an unreachable node is tainted),
# taint eviction and pod GC (pods of a deleted node go).
CONTROLLERS=persistentvolume-binder-controller,persistentvolume-protection-controller
CONTROLLERS+=,persistentvolumeclaim-protection-controller,namespace-controller,garbage-collector-controller
CONTROLLERS+=,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller
CONTROLLERS+=,clusterrole-aggregation-controller
CONTROLLERS+=,node-lifecycle-controller,taint-eviction-controller,pod-garbage-collector-controller

# --- install --------------------------------------------------------------------------------

installed() { k8s_installed "${COMPONENTS[@]}" "${TOOLS[@]}"; }

cmd_install() { k8s_install "${COMPONENTS[@]}" "${TOOLS[@]}"; }

# --- probes (processes: lib.sh) --------------------------------------------------------------

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
apiserver_get() { http_code --cacert "$PKI/ca.crt" -H "@$AUTH_HEADER" "$SERVER$1"; }

etcd_ready() { [[ "$(http_code "$ETCD_URL/readyz")" == 200 ]]; }
apiserver_ready() { [[ -f "$AUTH_HEADER" && "$(apiserver_get /readyz)" == 200 ]]; }
default_ns() { [[ "$(apiserver_get /api/v1/namespaces/default)" == 200 ]]; }
kcm_healthy() { [[ "$(http_code --cacert "$PKI/ca.crt" "https://$HOST:$KCM_PORT/healthz")" == 200 ]]; }

all_up() {
  local c
  for c in "${COMPONENTS[@]}"; do comp_pid "$c" >/dev/null || return 1; done
  apiserver_ready
}

# --- certificates and credentials -----------------------------------------------------------

gen_pki() {
  local t0
  t0="$(now)"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=gluster-provisioner-dev-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    # Serving cert of kube-apiserver (and of the controller manager's health port).
    openssl req -newkey rsa:2048 -nodes -keyout serving.key -out serving.csr -subj "/CN=kube-apiserver"
    cat >serving.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile serving.ext -out serving.crt
    # Front proxy (request-header authentication): what the aggregation layer uses to call
    # extension API servers, and what delegated authentication (the controller manager) reads.
    openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 \
      -subj "/CN=gluster-provisioner-dev-front-proxy-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
      -subj "/CN=front-proxy-client"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
      >front-proxy-client.ext
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
      -CAcreateserial -days 3650 -extfile front-proxy-client.ext -out front-proxy-client.crt
    # The apiserver's client certificate for the kubelets (logs, exec, port-forward); RBAC binds the
    # user to system:kubelet-api-admin once the apiserver is up.
    openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
      -subj "/CN=kube-apiserver-kubelet-client"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
      >kubelet-client.ext
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile kubelet-client.ext -out kubelet-client.crt
    # Service-account token signing key.
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    rm -f ./*.csr ./*.ext ./*.srl
  ) >"$STATE/openssl.log" 2>&1 || { cat "$STATE/openssl.log" >&2; die "openssl failed"; }
  log "certificates generated in $(since "$t0")s"

  local admin_token kcm_token
  admin_token="$(openssl rand -hex 32)"
  kcm_token="$(openssl rand -hex 32)"
  (
    umask 077
    # token,user,uid,"groups"
    printf '%s,admin,admin,"system:masters"\n' "$admin_token" >"$TOKENS"
    printf '%s,system:kube-controller-manager,kcm,"system:masters"\n' "$kcm_token" >>"$TOKENS"
    printf 'Authorization: Bearer %s\n' "$admin_token" >"$AUTH_HEADER"
    write_kubeconfig "$KUBECONFIG_FILE" admin "$admin_token"
    write_kubeconfig "$KCM_KUBECONFIG" kube-controller-manager "$kcm_token"
  )
}

write_kubeconfig() {
  local file=$1 user=$2 token=$3
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gluster-dev
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user@gluster-dev
  context:
    cluster: gluster-dev
    user: $user
    namespace: default
current-context: $user@gluster-dev
EOF
  mv -f "$file.tmp" "$file"
}

write_env() { printf 'KUBECONFIG=%s\nKUBECTL=%s\n' "$KUBECONFIG_FILE" "$BIN_DIR/kubectl" >"$ENV_FILE"; }

# --- up / down / status ---------------------------------------------------------------------

cmd_up() {
  local t0 c p
  t0="$(now)"
  if all_up; then
    # Only the tools can be missing here (a set installed before kubectl was one); building them
    # does not touch the running processes.
    installed || cmd_install
    write_env
    log "already running (etcd pid $(comp_pid etcd), kube-apiserver pid $(comp_pid kube-apiserver)," \
      "kube-controller-manager pid $(comp_pid kube-controller-manager); $SERVER)"
    return 0
  fi
  # A partial control plane (one part died, or a machine restart) is rebuilt from scratch.
  for c in kube-controller-manager kube-apiserver etcd; do
    if comp_pid "$c" >/dev/null; then log "not healthy as a whole; restarting from scratch"; break; fi
  done
  for c in kube-controller-manager kube-apiserver etcd; do stop_comp "$c"; done
  for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT"; do
    port_busy "$HOST" "$p" && die "port $HOST:$p is already in use by another process"
  done
  installed || cmd_install
  command -v openssl >/dev/null || die "openssl not found"
  command -v curl >/dev/null || die "curl not found"

  rm -rf "$ETCD_DATA"
  rm -f "$ENV_FILE" "$KUBECONFIG_FILE" "$KCM_KUBECONFIG" "$TOKENS" "$AUTH_HEADER"
  for c in "${COMPONENTS[@]}"; do rm -f "$(log_file "$c")"; done
  mkdir -p "$STATE"
  gen_pki

  STARTING=1
  start_comp etcd "$BIN_DIR/etcd" \
    --name=kube-dev --data-dir="$ETCD_DATA" \
    --listen-client-urls="$ETCD_URL" --advertise-client-urls="$ETCD_URL" \
    --listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster="kube-dev=http://$HOST:$ETCD_PEER_PORT" --initial-cluster-state=new \
    --unsafe-no-fsync --quota-backend-bytes=$((512 * 1024 * 1024)) \
    --snapshot-count=5000 --log-level=warn
  wait_for etcd "/readyz 200" etcd_ready

  start_comp kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="$ETCD_URL" \
    --bind-address="$HOST" --advertise-address="$HOST" --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI/serving.crt" --tls-private-key-file="$PKI/serving.key" \
    --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$TOKENS" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/kubelet-client.crt" --kubelet-client-key="$PKI/kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --endpoint-reconciler-type=none \
    --service-account-issuer="$SERVER" \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --allow-privileged=true \
    --profiling=false \
    --event-ttl=30m
  wait_for kube-apiserver "/readyz 200" apiserver_ready
  wait_for kube-apiserver "namespace default" default_ns
  "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" create clusterrolebinding kube-apiserver-kubelet-client \
    --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client >/dev/null ||
    fail_with_log kube-apiserver "cannot bind kube-apiserver-kubelet-client to system:kubelet-api-admin"

  start_comp kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$KCM_KUBECONFIG" \
    --authentication-kubeconfig="$KCM_KUBECONFIG" --authorization-kubeconfig="$KCM_KUBECONFIG" \
    --bind-address="$HOST" --secure-port="$KCM_PORT" \
    --tls-cert-file="$PKI/serving.crt" --tls-private-key-file="$PKI/serving.key" \
    --controllers="$CONTROLLERS" \
    --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --profiling=false
  wait_for kube-controller-manager "/healthz 200" kcm_healthy

  STARTING=0
  write_env
  log "ready in $(since "$t0")s ($SERVER, kubernetes $K8S_VERSION; KUBECONFIG=$KUBECONFIG_FILE)"
}

cmd_down() {
  local c
  for c in kube-controller-manager kube-apiserver etcd; do stop_comp "$c"; done
  rm -rf "$ETCD_DATA" "$PKI"
  rm -f "$ENV_FILE" "$KUBECONFIG_FILE" "$KCM_KUBECONFIG" "$TOKENS" "$AUTH_HEADER" "$STATE/openssl.log"
}

cmd_status() {
  local c pid pids=()
  for c in "${COMPONENTS[@]}"; do
    if ! pid="$(comp_pid "$c")"; then
      echo "kube $SERVER down ($c not running)" >&2
      return 1
    fi
    pids+=("$c=$pid")
  done
  if ! apiserver_ready; then
    echo "kube $SERVER down (/readyz not 200)" >&2
    return 1
  fi
  echo "kube $SERVER up ${pids[*]}"
}

case "${1:-}" in
  install) cmd_install ;;
  up)
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 600 9 || die "another kube.sh up/down holds $STATE/.lock"
    cmd_up
    ;;
  down)
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 600 9 || die "another kube.sh up/down holds $STATE/.lock"
    cmd_down
    ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 {install|up|down|status}" >&2
    exit 2
    ;;
esac
