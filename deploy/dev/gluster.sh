#!/usr/bin/env bash
# A local three-node GlusterFS cluster for integration tests, on one machine, as root.
#
# Each node is a network namespace on a private bridge (gsbr0, 10.77.0.0/24) plus its own
# mount, UTS and PID namespaces. Inside a node, /var/lib/glusterd, /var/log/glusterfs, /run,
# /srv, /root, /var/lib/provisioner, /etc/hosts and /etc/resolv.conf are private bind mounts
# backed by $SB/nodes/nodeN/..., and the node runs its own glusterd and its own sshd (own host
# key, key-only root login). The host reaches the nodes over the bridge: SSH for commands and
# the gluster FUSE client for mounts. Nothing is written to the host's /etc, /var/lib/glusterd,
# /var/log/glusterfs or ~/.ssh, and no host sysctl changes (IPv6 is only switched off on the
# sandbox's own interfaces).
#
# Usage: deploy/dev/gluster.sh {install|up|down|status|purge|stop-service|start-service}
#   install  apt-get install the packages whose binaries are missing
#   up       start the cluster (idempotent: a healthy cluster is left alone, a partial one is
#            torn down and rebuilt); writes $SB/env for consumers
#   down     remove everything `up` created (safe when nothing is up); the SSH keys and the
#            node logs ($SB/nodes/nodeN/log) are kept, the gluster state is not
#   status   one line per node; exit 0 only if every node is healthy
#   purge    down, then forget everything under $SB (keys included)
#   stop-service NODE glusterd|sshd
#            stop one node's glusterd, or its sshd with every SSH session, as an outage would
#            (bricks keep running); until start-service, `up` waits instead of rebuilding
#   start-service NODE glusterd|sshd
#            start it again as `up` does, and wait until it answers and every node sees its two
#            peers Connected (GLUSTER_TIMEOUT seconds, then fail saying what is missing)
#
# Environment: DEV_STATE (default <repo>/.dev; the sandbox lives in $DEV_STATE/gluster),
# GLUSTER_TIMEOUT (seconds each step of `up` may take, default 60),
# GLUSTER_KEEP_FAILED=1 (leave a failed `up` in place for inspection instead of tearing it down),
# GLUSTER_STOPPED_WAIT (seconds `up` waits for services stopped by stop-service, default 300).
set -Eeuo pipefail
export LC_ALL=C
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

SCRIPT=$(readlink -f -- "${BASH_SOURCE[0]}")
REPO_ROOT=$(dirname -- "$(dirname -- "$(dirname -- "$SCRIPT")")")
DEV_STATE=${DEV_STATE:-$REPO_ROOT/.dev}
SB=$(realpath -m -- "$DEV_STATE")/gluster

NODES=(node1 node2 node3)
BRIDGE=gsbr0
BRIDGE_ADDR=10.77.0.1/24
TIMEOUT=${GLUSTER_TIMEOUT:-60}

SSH_DIR=$SB/ssh
CLIENT_KEY=$SSH_DIR/id_ed25519
KNOWN_HOSTS=$SSH_DIR/known_hosts
SSH_CONFIG=$SSH_DIR/ssh_config
HOSTKEY_DIR=$SSH_DIR/hostkeys
NODES_DIR=$SB/nodes
MARKS=$SB/host        # which host paths the sandbox created, so `down` removes only those
ENV_FILE=$SB/env
STOPPED_DIR=$SB/stopped   # NODE.SERVICE while stop-service keeps a service down on purpose

# binary -> Debian package that provides it
PACKAGES=(glusterd:glusterfs-server glusterfs:glusterfs-client mount.glusterfs:glusterfs-client
          gluster:glusterfs-cli sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client
          mkfs.xfs:xfsprogs getfattr:attr setfattr:attr ip:iproute2)
# part of every Debian base system; checked, never installed
BASE_TOOLS=(unshare nsenter setsid flock losetup findmnt mountpoint timeout realpath hostname)

# PID 1 of a node: private bind mounts (sources relative to the node dir and not canonicalized,
# so they resolve even when the sandbox lives under a path a bind covers, e.g. /root), then hold
# the namespaces open and reap orphans. $1 = node dir, $2 = node name.
# shellcheck disable=SC2016 # expanded by the node's bash
HOLDER='set -e
cd "$1"
umount -n -l /run/netns 2>/dev/null || true
bind() { mount -n -c --bind "$1" "$2"; }
bind lib /var/lib/glusterd
bind log /var/log/glusterfs
bind provisioner /var/lib/provisioner
bind etc/hosts /etc/hosts
bind etc/resolv.conf /etc/resolv.conf
bind srv /srv
bind root /root
bind run /run
hostname "$2"
cd /
echo "$2" >/run/holder.ready
sleep infinity &
wait'

# shellcheck disable=SC2016 # expanded by the node's bash
GLUSTERD_START='ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -c 0
exec /usr/sbin/glusterd -p /run/glusterd.pid'

# Daemons start with a clean environment, as under an init system on a real node.
NODE_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

declare -A INIT=()     # node -> host PID of the node's PID-namespace init
declare -A SSH_OK=()   # node -> 1 when `ssh nodeN hostname` answered nodeN

# ---------------------------------------------------------------- helpers

LOG_PREFIX=gluster
# shellcheck source=deploy/dev/lib.sh
. "$(dirname -- "$SCRIPT")/lib.sh"

on_err() { log "ERROR: command failed (exit $1) at line $2: $3"; }
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

node_ip() { echo "10.77.0.1${1#node}"; }

# wait_until WHAT STARTER_PID LOG CMD...: poll CMD until it succeeds. Fail with the tail of LOG
# when GLUSTER_TIMEOUT passes, or at once when the starter process exited with an error.
wait_until() {
    local what=$1 pid=$2 logf=$3 rc deadline
    shift 3
    deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            rc=0
            wait "$pid" || rc=$?
            if [ "$rc" -ne 0 ]; then die "$what: its starter exited with status $rc" "$logf"; fi
            pid=
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then die "$what: not ready after ${TIMEOUT}s" "$logf"; fi
        sleep 0.05
    done
}

# Host PID of node $1's init, found among the processes of its network namespace: the one
# that is PID 1 one PID-namespace level below ours.
find_init() {
    local n=$1 p line
    local -a f
    [ -e "/run/netns/$n" ] || return 1
    for p in $(ip netns pids "$n" 2>/dev/null); do
        line=
        { while IFS= read -r line; do [[ $line == NSpid:* ]] && break; done <"/proc/$p/status"; } 2>/dev/null || continue
        read -ra f <<<"${line#NSpid:}"
        if [ "${#f[@]}" -eq $(( SELF_NSDEPTH + 1 )) ] && [ "${f[-1]}" = 1 ]; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Fill INIT[] with the live node inits.
load_inits() {
    local n p
    INIT=()
    for n in "${NODES[@]}"; do
        if p=$(find_init "$n"); then INIT[$n]=$p; fi
    done
}

in_node() {
    local n=$1
    shift
    nsenter -t "${INIT[$n]}" -m -n -u -p --wd=/ -- "$@"
}

ssh_node() {
    local n=$1
    shift
    ssh -n -F "$SSH_CONFIG" "$n" -- "$@"
}

# alive PID: exists and is not a zombie
alive() {
    local s
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}

gluster_ok() { in_node "$1" timeout 10 gluster --mode=script pool list >/dev/null 2>&1; }

# During start-up glusterd spends seconds running gsyncd (geo-replication set-up) before it
# logs its final graph; polling the CLI only after that keeps the polls off the busy CPUs.
glusterd_started() {
    grep -qF 'Final graph' "$NODES_DIR/$1/log/glusterd.log" 2>/dev/null && gluster_ok "$1"
}

# Number of peers node $1 sees "Peer in Cluster (Connected)"; fails when its glusterd does not answer.
peer_count() {
    local out
    out=$(in_node "$1" timeout 10 gluster --mode=script peer status 2>/dev/null) || return 1
    grep -c 'Peer in Cluster (Connected)' <<<"$out" || true
}

all_peers_connected() {
    local n
    for n in "${NODES[@]}"; do
        [ "$(peer_count "$n")" = 2 ] || return 1
    done
}

sshd_pidfile_ok() { [ -s "$NODES_DIR/$1/run/sshd.pid" ]; }
holder_ready() { [ -e "$NODES_DIR/$1/run/holder.ready" ]; }

# Run `ssh nodeN hostname` against every node with a live init, in parallel; fill SSH_OK[].
ssh_check_all() {
    local n
    local -A pid=()
    SSH_OK=()
    [ -r "$SSH_CONFIG" ] || return 0
    for n in "${NODES[@]}"; do
        [ -n "${INIT[$n]:-}" ] || continue
        mkdir -p "$SB/tmp"
        timeout 15 ssh -n -F "$SSH_CONFIG" "$n" hostname >"$SB/tmp/ssh-$n.out" 2>&1 &
        pid[$n]=$!
    done
    for n in "${!pid[@]}"; do
        if wait "${pid[$n]}" && [ "$(<"$SB/tmp/ssh-$n.out")" = "$n" ]; then SSH_OK[$n]=1; fi
    done
}

# Print one line per node (to stdout when $1 = print); return 0 only when all are healthy.
check_health() {
    local n g s p healthy=0
    load_inits
    ssh_check_all
    for n in "${NODES[@]}"; do
        g=down s=down p=0
        if [ -n "${INIT[$n]:-}" ] && p=$(peer_count "$n"); then g=up; else p=0; fi
        if [ -n "${SSH_OK[$n]:-}" ]; then s=up; fi
        if [ "$g" != up ] || [ "$s" != up ] || [ "$p" != 2 ]; then healthy=1; fi
        if [ "${1:-}" = print ]; then
            printf '%s %s glusterd=%s sshd=%s peers=%s%s\n' "$n" "$(node_ip "$n")" "$g" "$s" "$p" "$(stopped_note "$n")"
        fi
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 || healthy=1
    return "$healthy"
}

# ---------------------------------------------------------------- install

missing_packages() {
    local e
    for e in "${PACKAGES[@]}"; do
        command -v "${e%%:*}" >/dev/null 2>&1 || echo "${e#*:}"
    done | sort -u
}

do_install() {
    local -a pkgs
    local t
    mapfile -t pkgs < <(missing_packages)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these by hand: ${pkgs[*]}"
        log "installing ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >&2
        mapfile -t pkgs < <(missing_packages)
        [ "${#pkgs[@]}" -eq 0 ] || die "still missing after apt-get install: ${pkgs[*]}"
    fi
    for t in "${BASE_TOOLS[@]}"; do
        command -v "$t" >/dev/null 2>&1 || die "missing $t (util-linux, mount, coreutils or hostname)"
    done
}

# ---------------------------------------------------------------- up

check_location() {
    case $SB in
        *[[:space:]\"\'\\%#]*) die "sandbox path must not contain spaces, quotes, backslashes, % or #: $SB" ;;
    esac
    case $SB/ in
        /run/* | /var/run/* | /srv/* | /proc/* | /sys/* | /dev/* | /etc/* | /var/lib/glusterd/* \
            | /var/log/glusterfs/* | /var/lib/provisioner/*)
            die "DEV_STATE must not be under a path the nodes replace or the system owns: $SB" ;;
    esac
}

# Record that the sandbox is about to create host path $2 (marker $1), unless it exists.
mark_if_absent() {
    if [ ! -e "$MARKS/$1" ] && [ ! -e "$2" ]; then : >"$MARKS/$1"; fi
}

gen_key() {
    if [ -s "$1" ] && [ -s "$1.pub" ]; then return 0; fi
    rm -f -- "$1" "$1.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1" </dev/null
}

write_client_files() {
    local n type key _ tmp
    mkdir -p "$HOSTKEY_DIR"
    chmod 700 "$SSH_DIR"
    gen_key "$CLIENT_KEY" gluster-sandbox-client
    tmp=$KNOWN_HOSTS.tmp
    : >"$tmp"
    for n in "${NODES[@]}"; do
        gen_key "$HOSTKEY_DIR/$n" "$n"
        read -r type key _ <"$HOSTKEY_DIR/$n.pub"
        echo "$(node_ip "$n") $type $key" >>"$tmp"
    done
    mv -f -- "$tmp" "$KNOWN_HOSTS"
    {
        echo "# Generated by deploy/dev/gluster.sh. Use as: ssh -F $SSH_CONFIG node1"
        for n in "${NODES[@]}"; do
            printf 'Host %s\n    HostName %s\n' "$n" "$(node_ip "$n")"
        done
        printf 'Host %s' "${NODES[*]}"
        for n in "${NODES[@]}"; do printf ' %s' "$(node_ip "$n")"; done
        printf '\n'
        cat <<EOF
    User root
    IdentityFile $CLIENT_KEY
    IdentitiesOnly yes
    UserKnownHostsFile $KNOWN_HOSTS
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    CheckHostIP no
    HashKnownHosts no
    BatchMode yes
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    ConnectTimeout 5
    KexAlgorithms curve25519-sha256
    LogLevel ERROR
EOF
    } >"$SSH_CONFIG"
    write_env
}

write_env() {
    local n
    local -a ips=()
    for n in "${NODES[@]}"; do ips+=("$(node_ip "$n")"); done
    {
        printf 'GLUSTER_NODES=%s\n' "$(IFS=,; echo "${ips[*]}")"
        printf 'GLUSTER_SSH_KEY=%s\n' "$CLIENT_KEY"
        printf 'GLUSTER_KNOWN_HOSTS=%s\n' "$KNOWN_HOSTS"
        printf 'GLUSTER_SSH_CONFIG=%s\n' "$SSH_CONFIG"
    } >"$ENV_FILE"
}

# Host-side files of node $1, seen inside the node through the bind mounts.
prepare_node() {
    local n=$1 d=$NODES_DIR/$1
    mkdir -p "$d"/{lib,log,root,provisioner,etc} "$d"/run/{sshd,sandbox,gluster} "$d"/srv/devices/{dev1,dev2}
    chmod 0755 "$d/run/sshd"
    chmod 0700 "$d/root" "$d/run/sandbox"
    if [ -d /var/lib/glusterd/groups ]; then cp -a /var/lib/glusterd/groups "$d/lib/"; fi
    printf '127.0.0.1\tlocalhost\n%s\t%s\n' "$(node_ip "$n")" "$n" >"$d/etc/hosts"
    echo 'nameserver 127.0.0.1' >"$d/etc/resolv.conf"
    install -m 0600 "$HOSTKEY_DIR/$n" "$d/run/sandbox/ssh_host_ed25519_key"
    install -m 0644 "$HOSTKEY_DIR/$n.pub" "$d/run/sandbox/ssh_host_ed25519_key.pub"
    install -m 0644 "$CLIENT_KEY.pub" "$d/run/sandbox/authorized_keys"
    cat >"$d/run/sandbox/sshd_config" <<'EOF'
# sshd of one sandbox node; paths are as the node sees them.
Port 22
AddressFamily inet
ListenAddress 0.0.0.0
HostKey /run/sandbox/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthorizedKeysFile /run/sandbox/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 200:30:400
MaxSessions 100
X11Forwarding no
PrintMotd no
PrintLastLog no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

disable_ipv6() {  # interface, optionally in netns $2
    local path=/proc/sys/net/ipv6/conf/$1/disable_ipv6
    if [ -n "${2:-}" ]; then
        nsenter --net="/run/netns/$2" -- sh -c "if [ -w $path ]; then echo 1 >$path; fi"
    elif [ -w "$path" ]; then
        echo 1 >"$path"
    fi
}

setup_network() {
    local n i
    ip link add "$BRIDGE" type bridge
    disable_ipv6 "$BRIDGE"
    ip addr add "$BRIDGE_ADDR" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for n in "${NODES[@]}"; do
        i=${n#node}
        ip netns add "$n"
        ip link add "gsveth$i" type veth peer name eth0 netns "$n"
        disable_ipv6 "gsveth$i"
        disable_ipv6 eth0 "$n"
        ip link set "gsveth$i" master "$BRIDGE" up
        ip -n "$n" addr add "$(node_ip "$n")/24" dev eth0
        ip -n "$n" link set lo up
        ip -n "$n" link set eth0 up
    done
}

on_up_exit() {
    local rc=$?
    [ "$UP_DONE" = 1 ] && return 0
    trap - ERR
    log "up FAILED (exit $rc)"
    if [ "${GLUSTER_KEEP_FAILED:-0}" = 1 ]; then
        log "left in place for inspection (GLUSTER_KEEP_FAILED=1); remove it with: $SCRIPT down"
    else
        log "tearing the partial sandbox down (node logs stay in $NODES_DIR/nodeN/log)"
        do_down || true
    fi
}

do_up() {
    local t0 t n d i out
    local -A pid=()
    t0=$(now)
    do_install
    check_location
    if check_health; then
        [ -s "$ENV_FILE" ] || write_env
        log "already up and healthy; nothing to do (status: $SCRIPT status)"
        return 0
    fi
    if await_stopped_services; then
        [ -s "$ENV_FILE" ] || write_env
        log "healthy again; nothing to do"
        return 0
    fi
    if [ -n "$(leftovers)" ] || [ "${#INIT[@]}" -gt 0 ]; then
        log "partially up or unhealthy; tearing down first"
        do_down || die "cannot tear down the old sandbox"
    else
        do_down quiet || die "cannot clean up the old sandbox"
    fi
    out=$(ip -4 -o addr show | grep -E ' inet 10\.77\.0\.' || true)
    [ -z "$out" ] || die "10.77.0.0/24 is already used on this host: $out"

    UP_DONE=0
    trap on_up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # 1. keys, configs and node directories
    t=$(now)
    rm -rf --one-file-system -- "$NODES_DIR" "$SB/tmp"
    mkdir -p "$MARKS" "$NODES_DIR" "$SB/mnt"
    write_client_files
    for n in "${NODES[@]}"; do prepare_node "$n"; done
    log "keys and node files ready ($(since "$t")s)"

    # 2. network; remember the host paths we are about to create
    t=$(now)
    mark_if_absent run-netns /run/netns
    mark_if_absent run-mount /run/mount
    mark_if_absent srv /srv
    mark_if_absent var-lib-provisioner /var/lib/provisioner
    mkdir -p /srv /var/lib/provisioner
    setup_network
    log "network ready: $BRIDGE $BRIDGE_ADDR, ${NODES[*]} ($(since "$t")s)"

    # 3. node namespaces, in parallel
    t=$(now)
    for n in "${NODES[@]}"; do
        d=$NODES_DIR/$n
        setsid ip netns exec "$n" unshare --mount --uts --pid --fork --mount-proc --propagation private \
            bash -c "$HOLDER" holder "$d" "$n" </dev/null >>"$d/holder.log" 2>&1 9<&- &
        pid[$n]=$!
    done
    for n in "${NODES[@]}"; do
        wait_until "$n namespaces" "${pid[$n]}" "$NODES_DIR/$n/holder.log" holder_ready "$n"
        INIT[$n]=$(find_init "$n") || die "$n: cannot find the PID-namespace init" "$NODES_DIR/$n/holder.log"
        echo "${INIT[$n]}" >"$NODES_DIR/$n/init.pid"
    done
    log "node namespaces ready ($(since "$t")s)"

    # 4. sshd, then glusterd on all nodes in parallel
    t=$(now)
    for n in "${NODES[@]}"; do
        d=$NODES_DIR/$n
        in_node "$n" "${NODE_ENV[@]}" /usr/sbin/sshd -f /run/sandbox/sshd_config -E /var/log/glusterfs/sshd.log \
            </dev/null >>"$d/log/sshd.log" 2>&1 9<&- || die "$n: sshd failed to start" "$d/log/sshd.log"
    done
    for n in "${NODES[@]}"; do
        wait_until "$n sshd" "" "$NODES_DIR/$n/log/sshd.log" sshd_pidfile_ok "$n"
    done
    log "sshd up on ${NODES[*]} ($(since "$t")s)"

    t=$(now)
    pid=()
    for n in "${NODES[@]}"; do
        in_node "$n" "${NODE_ENV[@]}" bash -c "$GLUSTERD_START" </dev/null >>"$NODES_DIR/$n/log/glusterd-start.log" 2>&1 9<&- &
        pid[$n]=$!
    done
    for n in "${NODES[@]}"; do
        d=$NODES_DIR/$n
        wait_until "$n glusterd" "${pid[$n]}" "$d/log/glusterd.log" glusterd_started "$n"
        log "$n glusterd ready ($(since "$t")s)"
    done

    # 5. trusted pool: probe by IP from node1 over SSH
    t=$(now)
    for n in "${NODES[@]:1}"; do
        i=$(node_ip "$n")
        out=$(ssh_node node1 gluster --mode=script peer probe "$i" 2>&1) \
            || die "peer probe $i from node1 failed: $out" "$NODES_DIR/node1/log/glusterd.log"
    done
    wait_until "peers (every node sees 2 Connected)" "" "$NODES_DIR/node1/log/glusterd.log" all_peers_connected
    log "peers connected ($(since "$t")s)"

    ssh_check_all
    for n in "${NODES[@]}"; do
        [ -n "${SSH_OK[$n]:-}" ] || die "ssh $n hostname failed" "$SB/tmp/ssh-$n.out" "$NODES_DIR/$n/log/sshd.log"
    done
    rm -rf -- "$SB/tmp"
    UP_DONE=1
    log "up in $(since "$t0")s; consumers: $ENV_FILE; ssh -F $SSH_CONFIG node1"
}

# ---------------------------------------------------------------- down

# Host mount points to remove: anything under $SB, and gluster FUSE mounts of the sandbox's nodes.
host_mounts() {
    local target source fstype
    findmnt -rn -o TARGET,SOURCE,FSTYPE 2>/dev/null | while read -r target source fstype; do
        printf -v target '%b' "$target"
        if [[ $target == "$SB"/* ]] \
            || { [[ $fstype == fuse.glusterfs ]] && [[ $source =~ ^10\.77\.0\.1[0-9]: ]]; }; then
            echo "$target"
        fi
    done | sort -r
}

# Mount points inside node $1 that hold bricks: under /srv or /var/lib/provisioner, or loop-backed.
node_brick_mounts() {
    local -a f
    while read -ra f; do
        # mountinfo: id parent maj:min root mountpoint options... - fstype source superopts
        local mp=${f[4]} i src=
        for (( i = 6; i < ${#f[@]}; i++ )); do
            if [ "${f[$i]}" = - ]; then src=${f[$((i + 2))]:-}; break; fi
        done
        if [[ $mp == /srv/* || $mp == /var/lib/provisioner/* || $src == /dev/loop* ]]; then
            printf '%b\n' "$mp"
        fi
    done <"/proc/${INIT[$1]}/mountinfo" | sort -r
}

# The processes of node $1's PID namespace, except its init and the init's `sleep`.
node_processes() {
    local init=${INIT[$1]} p s comm ppid
    for p in $(ip netns pids "$1" 2>/dev/null); do
        [ "$p" != "$init" ] || continue
        [ "/proc/$p/ns/pid" -ef "/proc/$init/ns/pid" ] || continue
        { read -r s <"/proc/$p/stat"; } 2>/dev/null || continue
        comm=${s#*(}
        comm=${comm%)*}
        s=${s##*) }
        ppid=${s#* }
        ppid=${ppid%% *}
        if [ "$ppid" = "$init" ] && [ "$comm" = sleep ]; then continue; fi
        echo "$p"
    done
}

# Host-namespace gluster FUSE clients of the sandbox's volumes.
host_fuse_clients() {
    local d p comm
    local -a args
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        { read -r comm <"$d/comm"; } 2>/dev/null || continue
        [ "$comm" = glusterfs ] || continue
        [ "$d/ns/pid" -ef /proc/self/ns/pid ] || continue
        { mapfile -d '' args <"$d/cmdline"; } 2>/dev/null || continue
        if [[ " ${args[*]} " =~ (--volfile-server=|\ -s\ )10\.77\.0\.1[0-9]\  ]]; then echo "$p"; fi
    done
}

# Detach loop devices whose backing file is a sandbox image (matched by inode, because
# losetup shows the node-side path).
detach_loops() {
    local ino dev name loop back count=0
    local -A byid=() byname=()
    local -a roots
    shopt -s nullglob
    roots=("$NODES_DIR"/*/srv "$NODES_DIR"/*/provisioner)
    shopt -u nullglob
    [ "${#roots[@]}" -gt 0 ] || { echo 0; return 0; }
    while read -r ino dev name; do
        byid["$ino $dev"]=1
        byname["$ino ${name##*/}"]=1
    done < <(find "${roots[@]}" -xdev -type f -exec stat -c '%i %Hd:%Ld %n' {} + 2>/dev/null)
    if [ "${#byid[@]}" -gt 0 ]; then
        while read -r loop ino dev back; do
            printf -v back '%b' "$back"
            if [ -n "${byid["$ino $dev"]:-}" ] || [ -n "${byname["$ino ${back##*/}"]:-}" ]; then
                losetup -d "$loop" 2>/dev/null && count=$(( count + 1 ))
            fi
        done < <(losetup -l -n --raw -O NAME,BACK-INO,BACK-MAJ:MIN,BACK-FILE 2>/dev/null)
    fi
    echo "$count"
}

remove_marked_host_paths() {
    [ -d "$MARKS" ] || return 0
    if [ -e "$MARKS/run-mount" ] && [ -d /run/mount ]; then
        if [ -s /run/mount/utab ]; then
            log "keeping /run/mount: its utab is not empty"
        else
            rm -rf /run/mount
        fi
    fi
    if [ -e "$MARKS/run-netns" ] && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
        while mountpoint -q /run/netns; do umount -n /run/netns || break; done
        rmdir /run/netns 2>/dev/null || true
    fi
    if [ -e "$MARKS/var-lib-provisioner" ]; then rmdir /var/lib/provisioner 2>/dev/null || true; fi
    if [ -e "$MARKS/srv" ]; then rmdir /srv 2>/dev/null || true; fi
    rm -f -- "$MARKS"/*
}

# What of a sandbox is still on the host (one line per thing; empty when clean).
leftovers() {
    local n
    for n in "${NODES[@]}"; do
        if [ -e "/run/netns/$n" ]; then echo "netns $n"; fi
        if ip link show "gsveth${n#node}" >/dev/null 2>&1; then echo "link gsveth${n#node}"; fi
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then echo "link $BRIDGE"; fi
    host_mounts | sed 's/^/mount /'
}

# Remove everything `up` created; best effort, then verify. $1 = quiet: no summary line
# when nothing was found.
do_down() {
    local t0 n i p deadline mounts=0 nodes=0 loops clients left_over
    local -a procs targets left
    t0=$(now)

    # 1. host-side mounts (FUSE) while the servers still answer
    mapfile -t targets < <(host_mounts)
    for p in "${targets[@]}"; do
        umount -n "$p" 2>/dev/null || umount -n -l "$p" || log "cannot unmount $p"
        mounts=$(( mounts + 1 ))
    done

    # 2. stop every process of every node (glusterd, bricks, self-heal, sshd, sessions) and
    #    give them up to 5 s to exit; the inits stay so the mount namespaces stay reachable
    load_inits
    nodes=${#INIT[@]}
    procs=()
    for n in "${!INIT[@]}"; do mapfile -t -O "${#procs[@]}" procs < <(node_processes "$n"); done
    if [ "${#procs[@]}" -gt 0 ]; then
        kill -TERM "${procs[@]}" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while :; do
            left=()
            for p in "${procs[@]}"; do if alive "$p"; then left+=("$p"); fi; done
            if [ "${#left[@]}" -eq 0 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
            sleep 0.05
        done
        if [ "${#left[@]}" -gt 0 ]; then kill -KILL "${left[@]}" 2>/dev/null || true; fi
    fi

    # 3. unmount brick filesystems inside the nodes (their loop devices clear themselves)
    for n in "${!INIT[@]}"; do
        mapfile -t targets < <(node_brick_mounts "$n")
        for p in "${targets[@]}"; do
            nsenter -t "${INIT[$n]}" -m -- umount -n "$p" 2>/dev/null \
                || nsenter -t "${INIT[$n]}" -m -- umount -n -l "$p" 2>/dev/null || log "$n: cannot unmount $p"
        done
    done

    # 4. kill the inits: the kernel kills whatever is left in each PID namespace
    if [ "${#INIT[@]}" -gt 0 ]; then
        kill -KILL "${INIT[@]}" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        for p in "${INIT[@]}"; do
            while alive "$p" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.02; done
        done
    fi
    # anything still in a node's network namespace (e.g. init.pid lost)
    for n in "${NODES[@]}"; do
        if [ -e "/run/netns/$n" ]; then
            mapfile -t procs < <(ip netns pids "$n" 2>/dev/null)
            if [ "${#procs[@]}" -gt 0 ]; then kill -KILL "${procs[@]}" 2>/dev/null || true; fi
        fi
    done
    mapfile -t procs < <(host_fuse_clients)
    clients=${#procs[@]}
    if [ "$clients" -gt 0 ]; then kill -TERM "${procs[@]}" 2>/dev/null || true; fi

    # 5. network
    for n in "${NODES[@]}"; do
        i=${n#node}
        ip link del "gsveth$i" 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true

    # 6. loop devices of sandbox images; 7. host paths the sandbox created
    loops=$(detach_loops)
    remove_marked_host_paths

    # node state (gluster UUIDs, peers, volumes, images) goes, node logs and keys stay
    if [ -d "$NODES_DIR" ] && [ -z "$(host_mounts)" ]; then
        for p in "$NODES_DIR"/*/; do
            find "$p" -mindepth 1 -maxdepth 1 ! -name log ! -name '*.log' \
                -exec rm -rf --one-file-system -- {} + 2>/dev/null || true
        done
    fi
    rm -rf -- "$SB/tmp" "$STOPPED_DIR"
    left_over=$(leftovers)
    if [ -n "$left_over" ]; then
        log "down incomplete, still present: ${left_over//$'\n'/, }"
        return 1
    fi
    if [ "${1:-}" != quiet ] || [ $(( nodes + mounts + loops + clients )) -gt 0 ]; then
        log "down: $nodes node(s) stopped, $mounts host mount(s), $loops loop device(s), $clients FUSE client(s) ($(since "$t0")s)"
    fi
}

# ---------------------------------------------------------------- one node's services

# " (stopped on purpose: glusterd sshd)" for node $1 while stop-service holds services down.
stopped_note() {
    local f list=
    for f in "$STOPPED_DIR/$1".*; do
        if [ -e "$f" ]; then list+=" ${f##*.}"; fi
    done
    if [ -n "$list" ]; then printf ' (stopped on purpose:%s)' "$list"; fi
}

# A sandbox that is unhealthy only because tests stopped services on purpose is not broken:
# wait for them to be started again instead of rebuilding it under those tests. Returns 0 when
# healthy again, 1 when nothing is stopped on purpose (any more) and the sandbox is still
# unhealthy; fails when the services stay stopped for GLUSTER_STOPPED_WAIT seconds.
await_stopped_services() {
    local wait=${GLUSTER_STOPPED_WAIT:-300} deadline
    local -a marks
    [[ $wait =~ ^[0-9]+$ ]] || die "GLUSTER_STOPPED_WAIT must be a whole number of seconds, not '$wait'"
    mapfile -t marks < <(stopped_services)
    [ "${#marks[@]}" -gt 0 ] || return 1
    log "unhealthy because of services stopped on purpose (${marks[*]}); waiting up to ${wait}s for start-service"
    deadline=$((SECONDS + wait))
    while [ "$SECONDS" -lt "$deadline" ]; do
        sleep 1
        if check_health; then return 0; fi
        mapfile -t marks < <(stopped_services)
        [ "${#marks[@]}" -gt 0 ] || return 1
    done
    die "still stopped on purpose after ${wait}s: ${marks[*]}; start them with: $SCRIPT start-service NODE SERVICE (or remove $STOPPED_DIR to let up rebuild the sandbox)"
}

stopped_services() {
    local f
    for f in "$STOPPED_DIR"/*; do
        if [ -e "$f" ]; then echo "${f##*/}"; fi
    done
}

# Host PIDs of node $1's processes whose command name is $2 (needs INIT[]).
node_pids_named() {
    local p comm
    for p in $(node_processes "$1"); do
        { read -r comm <"/proc/$p/comm"; } 2>/dev/null || continue
        if [ "$comm" = "$2" ]; then echo "$p"; fi
    done
}

check_service_args() {
    local n=$1 s=$2
    [[ " ${NODES[*]} " == *" $n "* ]] || die "unknown node '$n'; one of: ${NODES[*]}"
    case $s in
        glusterd | sshd) ;;
        *) die "unknown service '$s'; one of: glusterd sshd" ;;
    esac
    load_inits
    [ -n "${INIT[$n]:-}" ] || die "$n is not running; start the sandbox first: $SCRIPT up"
}

# Connected peers per node, e.g. "node1=2 node2=1 node3=glusterd-down".
peer_summary() {
    local n c out=()
    for n in "${NODES[@]}"; do
        c=$(peer_count "$n") || c=glusterd-down
        out+=("$n=$c")
    done
    echo "${out[*]}"
}

ssh_answers() { [ "$(ssh_node "$1" hostname 2>/dev/null)" = "$1" ]; }

# Stop service $2 of node $1: SIGTERM, then SIGKILL after 5 s. For sshd that includes every
# session process, so open connections break as when the node's sshd dies.
do_stop_service() {
    local n=$1 s=$2 p deadline
    local -a pids left
    check_service_args "$n" "$s"
    mkdir -p "$STOPPED_DIR"
    : >"$STOPPED_DIR/$n.$s"  # first: from here on `up` waits instead of rebuilding
    mapfile -t pids < <(node_pids_named "$n" "$s")
    if [ "${#pids[@]}" -eq 0 ]; then
        log "$n: $s was not running"
        return 0
    fi
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while :; do
        left=()
        for p in "${pids[@]}"; do if alive "$p"; then left+=("$p"); fi; done
        if [ "${#left[@]}" -eq 0 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
        sleep 0.05
    done
    if [ "${#left[@]}" -gt 0 ]; then kill -KILL "${left[@]}" 2>/dev/null || true; fi
    log "$n: $s stopped (${#pids[@]} process(es)); start it again with: $SCRIPT start-service $n $s"
}

# Start service $2 of node $1 the way `up` does (a no-op when it runs), then wait until it
# answers and the pool is whole again.
do_start_service() {
    local n=$1 s=$2 d=$NODES_DIR/$1 t starter='' deadline
    check_service_args "$n" "$s"
    # whatever happens next, the service is no longer held down on purpose
    STOPPED_MARK=$STOPPED_DIR/$n.$s
    trap 'rm -f -- "$STOPPED_MARK"' EXIT
    t=$(now)
    case $s in
        sshd)
            if [ -z "$(node_pids_named "$n" sshd)" ]; then
                rm -f -- "$d/run/sshd.pid"
                in_node "$n" "${NODE_ENV[@]}" /usr/sbin/sshd -f /run/sandbox/sshd_config -E /var/log/glusterfs/sshd.log \
                    </dev/null >>"$d/log/sshd.log" 2>&1 9<&- || die "$n: sshd failed to start" "$d/log/sshd.log"
            fi
            wait_until "$n sshd (ssh $n hostname)" "" "$d/log/sshd.log" ssh_answers "$n"
            ;;
        glusterd)
            if [ -z "$(node_pids_named "$n" glusterd)" ]; then
                in_node "$n" "${NODE_ENV[@]}" bash -c "$GLUSTERD_START" </dev/null >>"$d/log/glusterd-start.log" 2>&1 9<&- &
                starter=$!
            fi
            wait_until "$n glusterd (gluster pool list on $n)" "$starter" "$d/log/glusterd.log" gluster_ok "$n"
            ;;
    esac
    deadline=$((SECONDS + TIMEOUT))
    until all_peers_connected; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "$n $s started, but not every node sees its 2 peers Connected after ${TIMEOUT}s: $(peer_summary)" \
                "$d/log/glusterd.log"
        fi
        sleep 0.2
    done
    log "$n: $s started; every node sees its peers Connected ($(since "$t")s)"
}

do_purge() {
    do_down || die "down failed; not removing $SB"
    if [ -n "$(host_mounts)" ]; then die "mounts remain under $SB; not removing it"; fi
    rm -rf --one-file-system -- "$SB"
    log "purged $SB"
}

usage() {
    sed -n 's/^# \{0,1\}//; /^Usage:/,/^$/p' "$SCRIPT"
}

# ---------------------------------------------------------------- main

main() {
    local cmd=${1:-}
    case $cmd in
        install | up | down | status | purge) ;;
        stop-service | start-service)
            [ "$#" -eq 3 ] || { usage >&2; exit 2; }
            ;;
        -h | --help | help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "GLUSTER_TIMEOUT must be a whole number of seconds, not '$TIMEOUT'"
    SELF_NSDEPTH=$(awk '/^NSpid:/ { print NF - 1 }' /proc/self/status)
    case $cmd in
        up | down | purge)
            # one up/down/purge at a time; long-lived children are started with fd 9 closed
            exec 9<"$SCRIPT"
            flock -w 300 9 || die "another gluster.sh up/down/purge held the lock for 300 s"
            ;;
    esac
    case $cmd in
        install) do_install ;;
        up) do_up ;;
        down) do_down || exit 1 ;;
        status)
            local rc=0
            check_health print || rc=1
            rm -rf -- "$SB/tmp"
            exit "$rc"
            ;;
        purge) do_purge ;;
        stop-service) do_stop_service "$2" "$3" ;;
        start-service) do_start_service "$2" "$3" ;;
    esac
}

main "$@"
