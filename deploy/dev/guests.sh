#!/usr/bin/env bash
# Storage nodes with real block devices: QEMU guests (TCG) on the gluster sandbox's bridge.
#
# Each guest is a Debian 12 system booted with -kernel/-initrd from a cached base image (built
# with mmdebstrap from this machine's apt sources), with systemd, udev, sshd, glusterd and lvm2,
# and two empty virtio data disks (/dev/vdb, /dev/vdc) for the LVM brick backend. The guests sit
# on gsbr0 (made by gluster.sh up) at 10.77.0.21.. and form their own trusted pool, separate
# from the namespace nodes' pool. Their identity (hostname, address, SSH host key, the stack's
# client key) is handed over without network through a QEMU fw_cfg blob read by a boot unit.
#
# Usage: deploy/dev/guests.sh {install|up|down|status|reboot|ssh|env} [ARGS]
#   install  apt packages (qemu, mmdebstrap), then build the base image into
#            $CACHE_DIR/guest-<key>/ unless it is there; the key is a hash of the package list,
#            the files baked into the image, the apt sources and IMAGE_VERSION
#   up       start the guests (a healthy set is left alone, a partial one is torn down first),
#            wait until each answers SSH and every guest sees its peers Connected; writes
#            $DEV_STATE/guests/env, known_hosts and ssh_config
#   down     power the guests off (ACPI, then kill after GUEST_STOP_TIMEOUT), remove their taps,
#            overlays, data disks and client files; console logs stay
#   status   one line per guest; exit 0 when every guest answers SSH and glusterd
#   reboot GUEST [--without-disk vdb|vdc]... [--hard]
#            clean power-off (ACPI) and start again with the same disks, minus the detached
#            ones; --hard kills QEMU instead (a power cut: no shutdown, what the guest had not
#            written is lost). A guest whose QEMU is gone is just started. Waits until the guest
#            answers SSH and glusterd, and every guest sees its peers Connected. The guest names
#            its disks in probe order: without vdb, the vdc image is its /dev/vdb (stable name:
#            /dev/disk/by-id/virtio-gs-GUEST-vdc)
#   ssh GUEST [COMMAND...]   run a command on a guest (ssh -F $DEV_STATE/guests/ssh_config)
#   usage [SECONDS]  CPU share and RSS of each guest's QEMU over SECONDS (default 60)
#   env      print the path of the env file
#
# Environment: DEV_STATE (default <repo>/.dev; guests in $DEV_STATE/guests), CACHE_DIR (image
# cache), GUEST_BRIDGE (default gsbr0, made by gluster.sh up), GUEST_COUNT (1-3, default 3),
# GUEST_MEM (MiB, default 1024), GUEST_TB_SIZE (TCG code cache in MiB, default 128),
# GUEST_DISK_SIZE (default 4G), GUEST_TIMEOUT (seconds to wait for boots and the pool, default
# 300), GUEST_STOP_TIMEOUT (seconds for an ACPI power-off before the kill, default 60),
# GUEST_KEEP_FAILED=1 (leave a failed up in place), GUEST_CMDLINE (extra kernel arguments),
# GUEST_APT_SOURCES (a sources file to build from instead of the machine's).
set -Eeuo pipefail
export LC_ALL=C
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

SCRIPT=$(readlink -f -- "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname -- "$SCRIPT")
REPO_ROOT=$(dirname -- "$(dirname -- "$SCRIPT_DIR")")
DEV_STATE=${DEV_STATE:-$REPO_ROOT/.dev}
STATE=$(realpath -m -- "$DEV_STATE")/guests
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner}

LOG_PREFIX=guests
# shellcheck source=deploy/dev/lib.sh
. "$SCRIPT_DIR/lib.sh"

# Bump when the way the image is built changes in a way the hashed inputs below do not show.
IMAGE_VERSION=1
SUITE=bookworm
# The guest system. systemd (not a lighter init) because the later tests need what a real storage
# node does at boot: udev-driven LVM activation, /etc/fstab mounts that wait for their devices,
# ordered start of sshd and glusterd, and a clean ACPI shutdown that unmounts the bricks. dbus is
# there for systemd-logind, which turns the ACPI power button (QMP system_powerdown) into a
# poweroff; without it the guest ignores the button.
PACKAGES=(linux-image-amd64 initramfs-tools zstd systemd systemd-sysv udev kmod dbus
          openssh-server glusterfs-server lvm2 thin-provisioning-tools xfsprogs e2fsprogs attr
          iproute2 iputils-ping netbase procps util-linux psmisc less)
# Kernel modules nothing here needs; leaving them out keeps the image and its build small.
MODULE_EXCLUDES=(drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet sound
                 drivers/infiniband drivers/staging drivers/bluetooth drivers/isdn drivers/iio
                 drivers/net/can drivers/usb/gadget net/bluetooth net/wireless net/mac80211)

BRIDGE=${GUEST_BRIDGE:-gsbr0}
GUEST_COUNT=${GUEST_COUNT:-3}
MEM=${GUEST_MEM:-1024}
DISK_SIZE=${GUEST_DISK_SIZE:-4G}
TIMEOUT=${GUEST_TIMEOUT:-300}
TB_SIZE=${GUEST_TB_SIZE:-128}
STOP_WAIT=${GUEST_STOP_TIMEOUT:-60}
DATA_DISKS=(vdb vdc)
ROOT_SIZE=4G

CLIENT_KEY=$(realpath -m -- "$DEV_STATE")/gluster/ssh/id_ed25519
KNOWN_HOSTS=$STATE/known_hosts
SSH_CONFIG=$STATE/ssh_config
HOSTKEY_DIR=$STATE/hostkeys
ENV_FILE=$STATE/env

guest_names() { local i; for (( i = 1; i <= GUEST_COUNT; i++ )); do echo "disk$i"; done; }
mapfile -t GUESTS < <(guest_names)
guest_ip() { echo "10.77.0.2${1#disk}"; }
guest_mac() { echo "52:54:00:77:00:2${1#disk}"; }
guest_tap() { echo "gstap-$1"; }
guest_dir() { echo "$STATE/$1"; }

on_err() { log "ERROR: command failed (exit $1) at line $2: $3"; }
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------- install: host packages

install_apt() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v qemu-img >/dev/null || missing+=(qemu-utils)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    command -v mke2fs >/dev/null || missing+=(e2fsprogs)
    command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    command -v ssh >/dev/null || missing+=(openssh-client)
    command -v python3 >/dev/null || missing+=(python3)
    command -v ip >/dev/null || missing+=(iproute2)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} (apt)"
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# ---------------------------------------------------------------- install: the base image

# The files baked into the image, written under $1 (a tree copied onto the root filesystem
# before any package is installed, so initramfs-tools sees its configuration on first run).
write_image_files() {
    local r=$1
    mkdir -p "$r"/etc/initramfs-tools/{conf.d,hooks} "$r"/etc/systemd/system \
        "$r"/etc/systemd/system.conf.d "$r"/etc/ssh/sshd_config.d "$r"/usr/local/sbin \
        "$r"/etc/lvm/profile "$r"/etc/systemd/journald.conf.d

    # A small initrd: only what mounts an ext4 root on virtio-blk (decompressing the stock
    # MODULES=most initrd costs seconds under TCG).
    cat >"$r/etc/initramfs-tools/conf.d/gsguest.conf" <<'EOF'
MODULES=list
COMPRESS=zstd
EOF
    cat >"$r/etc/initramfs-tools/hooks/gsguest" <<'EOF'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk ext4 crc32c_generic; do force_load "$m"; done
EOF
    chmod 0755 "$r/etc/initramfs-tools/hooks/gsguest"

    # Identity from the fw_cfg blob QEMU carries (see seed_tar): run at every boot, so the
    # image stays generic and the host stays the source of truth.
    cat >"$r/usr/local/sbin/gsguest-seed" <<'EOF'
#!/bin/sh
# Apply this guest's identity from QEMU fw_cfg (opt/gsguest/seed.tar): hostname, address,
# SSH host key, root's authorized_keys.
set -eu
raw=/sys/firmware/qemu_fw_cfg/by_name/opt/gsguest/seed.tar/raw
modprobe qemu_fw_cfg 2>/dev/null || true
i=0
while [ ! -r "$raw" ]; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then echo "gsguest-seed: no $raw" >&2; exit 1; fi
    sleep 0.1
done
d=/run/gsguest
rm -rf "$d"
mkdir -m 0700 "$d"
cat "$raw" | tar -x -C "$d"
name=$(cat "$d/hostname")
echo "$name" >/etc/hostname
hostname "$name"
printf '127.0.0.1\tlocalhost\n%s\t%s\n' "$(cat "$d/address")" "$name" >/etc/hosts
install -m 0600 "$d/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$d/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 0700 /root/.ssh
install -m 0600 "$d/authorized_keys" /root/.ssh/authorized_keys
mkdir -p /run/systemd/network
install -m 0644 "$d/10-gsbr.network" /run/systemd/network/10-gsbr.network
echo "gsguest-seed: $name $(cat "$d/address")"
EOF
    chmod 0755 "$r/usr/local/sbin/gsguest-seed"
    cat >"$r/etc/systemd/system/gsguest-seed.service" <<'EOF'
[Unit]
Description=Guest identity from QEMU fw_cfg
DefaultDependencies=no
After=systemd-remount-fs.service systemd-modules-load.service
Before=sysinit.target network-pre.target systemd-networkd.service ssh.service glusterd.service
Wants=network-pre.target
ConditionVirtualization=vm

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/gsguest-seed

[Install]
WantedBy=sysinit.target
EOF

    # Bricks the provisioner lists in /var/lib/provisioner/fstab (the dev stack's setting for
    # the namespace nodes) are mounted at boot too; /etc/fstab is honoured by systemd itself.
    cat >"$r/etc/systemd/system/provisioner-fstab.service" <<'EOF'
[Unit]
Description=Mount the bricks listed in /var/lib/provisioner/fstab
After=local-fs.target lvm2-monitor.service
Before=glusterd.service
ConditionFileNotEmpty=/var/lib/provisioner/fstab

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=-/sbin/vgchange -aay
ExecStart=/bin/mount -a -T /var/lib/provisioner/fstab

[Install]
WantedBy=multi-user.target
EOF

    # A brick whose disk is gone must not drop the guest into emergency mode (root is locked, so
    # nothing would answer): after DefaultDeviceTimeoutSec (30 s) the boot goes on without that
    # mount (left inactive, "Dependency failed" in the journal), and sshd and glusterd come up.
    # This is the packaged unit without OnFailure=emergency.target (a drop-in cannot remove a
    # dependency).
    cat >"$r/etc/systemd/system/local-fs.target" <<'EOF'
[Unit]
Description=Local File Systems
Documentation=man:systemd.special(7)
DefaultDependencies=no
Conflicts=shutdown.target
After=local-fs-pre.target
EOF
    cat >"$r/etc/systemd/system.conf.d/gsguest.conf" <<'EOF'
[Manager]
DefaultDeviceTimeoutSec=30s
DefaultTimeoutStopSec=30s
EOF
    cat >"$r/etc/systemd/journald.conf.d/gsguest.conf" <<'EOF'
[Journal]
Storage=persistent
SystemMaxUse=64M
ForwardToConsole=no
EOF

    cat >"$r/etc/ssh/sshd_config.d/gsguest.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
AddressFamily inet
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 200:30:400
MaxSessions 100
PrintMotd no
PrintLastLog no
EOF

    cat >"$r/etc/fstab" <<'EOF'
# <file system> <mount point> <type> <options> <dump> <pass>
LABEL=gsroot / ext4 rw,errors=remount-ro 0 1
EOF

    # Run in the chroot after every package is installed.
    cat >"$r/usr/local/sbin/gsguest-image-setup" <<'EOF'
#!/bin/sh
set -eu
# no identity in the base image: host keys come from the seed, machine-id is made at first boot
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
echo gsguest >/etc/hostname
usermod -p '*' root
systemctl enable gsguest-seed.service provisioner-fstab.service systemd-networkd.service \
    ssh.service glusterd.service
systemctl disable glustereventsd.service gluster-ta-volume.service 2>/dev/null || true
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer getty@tty1.service getty-static.service serial-getty@ttyS0.service \
    systemd-networkd-wait-online.service 2>/dev/null
# blkdeactivate runs one lvm command per LV at shutdown (1-2 s each under TCG: 15 s for three
# bricks). systemd unmounts the bricks and systemd-shutdown removes the DM devices anyway.
systemctl mask blk-availability.service
# Under TCG a boot is CPU-bound (~40 s of emulated CPU, most of it spawning processes), so what a
# storage node does not need is not started: ~4 s less per boot.
systemctl mask dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount modprobe@drm.service \
    modprobe@efi_pstore.service systemd-pstore.service systemd-network-generator.service \
    systemd-update-utmp.service systemd-update-utmp-runlevel.service dpkg-db-backup.timer \
    systemd-journald-audit.socket
# Geo-replication is not used here, and glusterd runs gsyncd (Python) several times whenever it
# starts: ~20 s of emulated CPU per boot under TCG. Without gsyncd glusterd starts in <1 s and
# logs that geo-replication is unavailable.
gsyncd=$(dpkg -L glusterfs-server glusterfs-common 2>/dev/null | grep '/gsyncd$' | head -n 1)
if [ -n "$gsyncd" ]; then dpkg-divert --local --rename --divert "$gsyncd.disabled" --add "$gsyncd"; fi
systemctl set-default multi-user.target
mkdir -p /var/log/journal /var/lib/provisioner
# glusterd state is made at first start, per guest
rm -f /var/lib/glusterd/glusterd.info
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
EOF
    chmod 0755 "$r/usr/local/sbin/gsguest-image-setup"
}

# The apt sources the image is built from: this machine's (deb822 and one-line files).
apt_sources() {
    if [ -n "${GUEST_APT_SOURCES:-}" ]; then echo "$GUEST_APT_SOURCES"; return; fi
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        if [ -s "$f" ] && grep -qvE '^[[:space:]]*(#|$)' "$f"; then echo "$f"; fi
    done
}

# The machine's own apt settings for fetching (one-line Acquire::* statements of its apt.conf
# files, e.g. a proxy or Check-Valid-Until), so the build reaches the archive as the host's apt does.
apt_options() {
    local f
    for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
        if [ -f "$f" ]; then grep -hE '^[[:space:]]*Acquire::[^[:space:]]+[[:space:]]+"[^"]*";' -- "$f" || true; fi
    done
}

# image_key FILES_DIR: hash of everything that decides the image's contents.
image_key() {
    local files=$1 f
    {
        echo "version=$IMAGE_VERSION suite=$SUITE arch=$(dpkg --print-architecture)"
        echo "packages=${PACKAGES[*]}"
        echo "module-excludes=${MODULE_EXCLUDES[*]}"
        echo "root-size=$ROOT_SIZE"
        (cd "$files" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        while read -r f; do cat "$f"; done < <(apt_sources)
        apt_options
    } | sha256sum | cut -c1-16
}

IMAGE_DIR=
image_paths() {
    local files
    files=$(mktemp -d)
    write_image_files "$files"
    IMAGE_DIR=$CACHE_DIR/guest-$(image_key "$files")
    rm -rf -- "$files"
}

image_ready() {
    [ -f "$IMAGE_DIR/.complete" ] && [ -s "$IMAGE_DIR/root.qcow2" ] \
        && [ -s "$IMAGE_DIR/vmlinuz" ] && [ -s "$IMAGE_DIR/initrd.img" ]
}

build_image() {
    local t0 work files root opts src k kernel initrd
    local -a mirrors=() excludes=()
    t0=$(now)
    work=$(mktemp -d "$CACHE_DIR/.guest-build.XXXXXX")
    files=$work/files
    root=$work/root
    opts=$work/apt.conf
    BUILD_WORK=$work
    trap 'rm -rf --one-file-system -- "$BUILD_WORK"' EXIT
    write_image_files "$files"
    apt_options >"$opts"
    while read -r src; do mirrors+=("$src"); done < <(apt_sources)
    [ "${#mirrors[@]}" -gt 0 ] || die "no apt sources on this machine (set GUEST_APT_SOURCES)"
    for k in "${MODULE_EXCLUDES[@]}"; do excludes+=("--dpkgopt=path-exclude=/lib/modules/*/kernel/$k/*"); done
    log "building the guest image into $IMAGE_DIR (mmdebstrap $SUITE, ${#PACKAGES[@]} packages; log $CACHE_DIR/guest-build.log)"
    # shellcheck disable=SC2016 # the hooks' $1 (the chroot) is expanded by mmdebstrap
    mmdebstrap --mode=root --variant=apt --format=directory \
        --include="$(IFS=,; echo "${PACKAGES[*]}")" \
        --aptopt="$opts" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --setup-hook="sync-in '$files' /" \
        --customize-hook='chroot "$1" /usr/local/sbin/gsguest-image-setup' \
        --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" >"$1/../packages.txt"' \
        "${excludes[@]}" "$SUITE" "$root" "${mirrors[@]}" \
        >"$CACHE_DIR/guest-build.log" 2>&1 \
        || die "mmdebstrap failed; last lines of $CACHE_DIR/guest-build.log: $(tail -n 20 "$CACHE_DIR/guest-build.log")"
    log "root filesystem ready ($(since "$t0")s, $(du -sh --one-file-system "$root" | cut -f1))"

    kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
    initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
    if [ -z "$kernel" ] || [ -z "$initrd" ]; then die "no kernel or initrd in $root/boot"; fi
    mkdir -p "$work/out"
    cp -- "$kernel" "$work/out/vmlinuz"
    cp -- "$initrd" "$work/out/initrd.img"
    basename -- "$kernel" | sed 's/^vmlinuz-//' >"$work/out/kernel-release"
    mv -- "$work/packages.txt" "$work/out/packages.txt"
    # ext4 filled from the directory, without mounting anything; then qcow2 (only used blocks)
    truncate -s "$ROOT_SIZE" "$work/root.raw"
    mke2fs -q -F -t ext4 -L gsroot -E root_owner=0:0 -d "$root" "$work/root.raw"
    qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/out/root.qcow2"
    rm -f -- "$work/root.raw"
    {
        echo "key=${IMAGE_DIR##*/guest-}"
        echo "built=$(date -u +%FT%TZ)"
        echo "build_seconds=$(since "$t0")"
        echo "suite=$SUITE"
        echo "kernel=$(cat "$work/out/kernel-release")"
        echo "packages=${PACKAGES[*]}"
    } >"$work/out/manifest"
    rm -rf -- "$IMAGE_DIR"
    mv -- "$work/out" "$IMAGE_DIR"
    touch "$IMAGE_DIR/.complete"
    rm -rf --one-file-system -- "$work"
    trap - EXIT
    log "built the guest image in $(since "$t0")s: $IMAGE_DIR ($(du -sh "$IMAGE_DIR" | cut -f1), kernel $(cat "$IMAGE_DIR/kernel-release"))"
}

do_install() {
    install_apt
    mkdir -p "$CACHE_DIR"
    image_paths
    if image_ready; then return 0; fi
    exec 8>"$CACHE_DIR/.guest-build.lock"
    flock -w 3600 8 || die "another build holds $CACHE_DIR/.guest-build.lock"
    if image_ready; then log "image built by a concurrent run"; return 0; fi
    build_image
    exec 8>&-
}

# ---------------------------------------------------------------- helpers

now_ms() {
    local t=$EPOCHREALTIME
    echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 ))
}

# alive PID: exists and is not a zombie
alive() {
    local s
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}

# gone PID: every thread of it has exited (its files, and so its image locks, are closed). The
# group leader shows Z as soon as it exits, while other threads may still hold the images.
gone() {
    local t s
    for t in /proc/"$1"/task/*/stat; do
        { read -r s <"$t"; } 2>/dev/null || continue
        s=${s##*) }
        case ${s%% *} in Z | X) ;; *) return 1 ;; esac
    done
    return 0
}

# The QEMU of guest $1, if it runs: the pid file's process, checked by its name (pid reuse).
qemu_pid() {
    local pid comm
    { read -r pid <"$(guest_dir "$1")/qemu.pid"; } 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    { read -r comm <"/proc/$pid/comm"; } 2>/dev/null || return 1
    [ "$comm" = "gsguest-$1" ] && alive "$pid" && echo "$pid"
}

# QEMU processes of this state directory that no pid file names (a lost or stale pid file).
stray_qemus() {
    local d p
    local -a args
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        { mapfile -d '' args <"$d/cmdline"; } 2>/dev/null || continue
        [[ ${args[0]:-} == *qemu-system-x86_64 ]] || continue
        if [[ " ${args[*]} " == *" -pidfile $STATE/"* ]]; then echo "$p"; fi
    done
}

# qmp GUEST JSON: one QMP command on the guest's monitor socket.
qmp() {
    python3 - "$(guest_dir "$1")/qmp.sock" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())  # greeting
for command in ({"execute": "qmp_capabilities"}, json.loads(sys.argv[2])):
    f.write(json.dumps(command) + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            break
    if "error" in reply:
        sys.exit(f"qmp: {reply['error'].get('desc')}")
PY
}

ssh_guest() {
    local n=$1
    shift
    ssh -n -F "$SSH_CONFIG" "$n" -- "$@"
}

ssh_answers() { [ "$(ssh_guest "$1" hostname 2>/dev/null)" = "$1" ]; }
glusterd_answers() { ssh_guest "$1" timeout 20 gluster --mode=script pool list >/dev/null 2>&1; }

# Number of peers guest $1 sees "Peer in Cluster (Connected)"; fails when glusterd does not answer.
peer_count() {
    local out
    out=$(ssh_guest "$1" timeout 20 gluster --mode=script peer status 2>/dev/null) || return 1
    grep -c 'Peer in Cluster (Connected)' <<<"$out" || true
}

all_peers_connected() {
    local n
    for n in "${GUESTS[@]}"; do
        [ "$(peer_count "$n")" = $(( ${#GUESTS[@]} - 1 )) ] || return 1
    done
}

# The last lines of each guest's console (without colours and systemd's progress spinner) and
# of its QEMU log.
show_console() {
    local n d
    for n in "$@"; do
        d=$(guest_dir "$n")
        if [ -s "$d/console.log" ]; then
            log "last lines of $d/console.log:"
            tr '\r' '\n' <"$d/console.log" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' \
                | grep -vE '^(\[ *\**\** *\] )?A?(Job .* running|\s*)$' | tail -n 30 >&2
        fi
        if [ -s "$d/qemu.log" ]; then show_log "$d/qemu.log" 8; fi
    done
}

fail() {
    local msg=$1
    shift
    log "ERROR: $msg"
    show_console "$@"
    exit 1
}

# wait_until WHAT SECONDS GUESTS CMD...: poll CMD until it succeeds; fail early when a guest's
# QEMU is gone, and with the console tails of GUESTS (comma-separated) after SECONDS.
wait_until() {
    local what=$1 secs=$2 n
    local -a watched
    IFS=, read -ra watched <<<"$3"
    shift 3
    local deadline=$(( $(now_ms) + secs * 1000 ))
    until "$@"; do
        for n in "${watched[@]}"; do
            qemu_pid "$n" >/dev/null || fail "$what: the QEMU of $n exited" "$n"
        done
        if [ "$(now_ms)" -ge "$deadline" ]; then fail "$what: not reached after ${secs}s" "${watched[@]}"; fi
        sleep 1
    done
}

need_bridge() {
    ip link show "$BRIDGE" >/dev/null 2>&1 \
        || die "bridge $BRIDGE is missing: the guests attach to the gluster sandbox's bridge; start it first: DEV_STATE=$DEV_STATE $SCRIPT_DIR/gluster.sh up"
}

# ---------------------------------------------------------------- up

gen_key() {
    if [ -s "$1" ] && [ -s "$1.pub" ]; then return 0; fi
    rm -f -- "$1" "$1.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1" </dev/null
}

write_client_files() {
    local n type key _
    mkdir -p "$HOSTKEY_DIR"
    chmod 0700 "$HOSTKEY_DIR"
    : >"$KNOWN_HOSTS.tmp"
    for n in "${GUESTS[@]}"; do
        gen_key "$HOSTKEY_DIR/$n" "$n"
        read -r type key _ <"$HOSTKEY_DIR/$n.pub"
        echo "$(guest_ip "$n") $type $key" >>"$KNOWN_HOSTS.tmp"
    done
    mv -f -- "$KNOWN_HOSTS.tmp" "$KNOWN_HOSTS"
    {
        echo "# Generated by deploy/dev/guests.sh. Use as: ssh -F $SSH_CONFIG disk1"
        for n in "${GUESTS[@]}"; do printf 'Host %s\n    HostName %s\n' "$n" "$(guest_ip "$n")"; done
        printf 'Host %s' "${GUESTS[*]}"
        for n in "${GUESTS[@]}"; do printf ' %s' "$(guest_ip "$n")"; done
        printf '\n'
        cat <<CFG
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
CFG
    } >"$SSH_CONFIG"
}

write_env() {
    local n
    local -a ips=() disks=()
    for n in "${GUESTS[@]}"; do ips+=("$(guest_ip "$n")"); done
    for n in "${DATA_DISKS[@]}"; do disks+=("/dev/$n"); done
    {
        printf 'GUEST_NODES=%s\n' "$(IFS=,; echo "${ips[*]}")"
        printf 'GUEST_NAMES=%s\n' "$(IFS=,; echo "${GUESTS[*]}")"
        printf 'GUEST_DISKS=%s\n' "$(IFS=,; echo "${disks[*]}")"
        printf 'GUEST_SSH_KEY=%s\n' "$CLIENT_KEY"
        printf 'GUEST_KNOWN_HOSTS=%s\n' "$KNOWN_HOSTS"
        printf 'GUEST_SSH_CONFIG=%s\n' "$SSH_CONFIG"
        printf 'GUEST_IMAGE=%s\n' "$IMAGE_DIR"
    } >"$ENV_FILE.tmp"
    mv -f -- "$ENV_FILE.tmp" "$ENV_FILE"
}

# The per-guest blob QEMU hands over as fw_cfg opt/gsguest/seed.tar (see gsguest-seed).
write_seed() {
    local n=$1 d s
    d=$(guest_dir "$n")
    s=$d/seed
    rm -rf -- "$s"
    mkdir -m 0700 "$s"
    echo "$n" >"$s/hostname"
    guest_ip "$n" >"$s/address"
    install -m 0600 "$HOSTKEY_DIR/$n" "$s/ssh_host_ed25519_key"
    install -m 0644 "$HOSTKEY_DIR/$n.pub" "$s/ssh_host_ed25519_key.pub"
    install -m 0644 "$CLIENT_KEY.pub" "$s/authorized_keys"
    cat >"$s/10-gsbr.network" <<NET
[Match]
MACAddress=$(guest_mac "$n")

[Network]
Address=$(guest_ip "$n")/24
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
    tar --owner=0 --group=0 --numeric-owner -cf "$d/seed.tar" -C "$s" .
    rm -rf -- "$s"
}

prepare_guest() {
    local n=$1 d disk
    d=$(guest_dir "$n")
    mkdir -p "$d"
    rm -f -- "$d/root.qcow2" "$d"/vd?.img "$d/qemu.pid" "$d/qmp.sock" "$d/detached"
    qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE_DIR/root.qcow2" "$d/root.qcow2"
    for disk in "${DATA_DISKS[@]}"; do truncate -s "$DISK_SIZE" "$d/$disk.img"; done
    write_seed "$n"
}

add_tap() {
    local tap
    tap=$(guest_tap "$1")
    ip link del "$tap" 2>/dev/null || true
    ip tuntap add dev "$tap" mode tap
    if [ -w "/proc/sys/net/ipv6/conf/$tap/disable_ipv6" ]; then echo 1 >"/proc/sys/net/ipv6/conf/$tap/disable_ipv6"; fi
    ip link set dev "$tap" master "$BRIDGE" up
}

# start_guest GUEST [DISK...]: start its QEMU with every data disk but the DISKs named.
start_guest() {
    local n=$1 d disk addr=5 cmdline pid
    shift
    d=$(guest_dir "$n")
    local -a args
    # loglevel=4 and show_status=error: the console keeps warnings and failed units, not the
    # hundreds of lines per boot that cost ~5 s of emulated CPU
    cmdline="root=/dev/vda rw console=ttyS0 systemd.hostname=$n net.ifnames=0 ipv6.disable=1"
    cmdline+=" mitigations=off panic=10 loglevel=4 systemd.show_status=error ${GUEST_CMDLINE:-}"
    # RAM from a memfd: QEMU asks for transparent huge pages on anonymous guest RAM, which makes
    # the whole 1 GiB resident; shmem has no THP here, and free-page reporting (balloon) hands
    # pages the guest frees back to the host. tb-size bounds TCG's code cache (default 1 GiB).
    # shellcheck disable=SC2054 # the commas are QEMU's option syntax
    args=(qemu-system-x86_64 -name "$n,process=gsguest-$n" -nodefaults -no-user-config
        -machine q35,memory-backend=ram -accel "tcg,tb-size=$TB_SIZE" -cpu max -smp 1 -m "$MEM"
        -object "memory-backend-memfd,id=ram,size=${MEM}M" -display none
        -kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" -append "$cmdline"
        -chardev "file,id=console,path=$d/console.log,append=on" -serial chardev:console
        -qmp "unix:$d/qmp.sock,server=on,wait=off" -pidfile "$d/qemu.pid"
        -fw_cfg "name=opt/gsguest/seed.tar,file=$d/seed.tar"
        -netdev "tap,id=net0,ifname=$(guest_tap "$n"),script=no,downscript=no"
        -device "virtio-net-pci,netdev=net0,mac=$(guest_mac "$n"),addr=0x3"
        -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0,addr=0x2
        -device virtio-balloon-pci,free-page-reporting=on,addr=0x9
        -drive "if=none,id=root,file=$d/root.qcow2,format=qcow2,discard=unmap"
        -device "virtio-blk-pci,drive=root,serial=gs-$n-root,addr=0x4")
    # Every data disk keeps its PCI slot and serial (gs-<guest>-<disk>), but the guest's kernel
    # names virtio disks in probe order, as with sdX on real hardware: without vdc, vdb stays
    # /dev/vdb; without vdb, the vdc image becomes /dev/vdb. The stable name of a disk is
    # /dev/disk/by-id/virtio-gs-<guest>-<disk>.
    : >"$d/detached"
    for disk in "${DATA_DISKS[@]}"; do
        if [[ " $* " == *" $disk "* ]]; then
            echo "$disk" >>"$d/detached"
        else
            args+=(-drive "if=none,id=$disk,file=$d/$disk.img,format=raw,discard=unmap,detect-zeroes=unmap"
                -device "virtio-blk-pci,drive=$disk,serial=gs-$n-$disk,addr=0x$addr")
        fi
        addr=$(( addr + 1 ))
    done
    rm -f -- "$d/qemu.pid"
    printf '%q ' "${args[@]}" >"$d/qemu.cmdline"
    printf '===== %s start%s (command line: %s)\n' "$(date -u +%FT%TZ)" "${*:+ without $*}" "$d/qemu.cmdline" >>"$d/qemu.log"
    setsid "${args[@]}" </dev/null >>"$d/qemu.log" 2>&1 9<&- 8<&- &
    local starter=$! deadline=$(( $(now_ms) + 10000 ))
    until pid=$(qemu_pid "$n"); do
        if ! kill -0 "$starter" 2>/dev/null || [ "$(now_ms)" -ge "$deadline" ]; then
            fail "$n: QEMU did not start" "$n"
        fi
        sleep 0.05
    done
}

# Wait until guest $1 answers SSH and glusterd.
wait_booted() {
    local n=$1 t
    t=$(now_ms)
    wait_until "$n answers ssh" "$TIMEOUT" "$n" ssh_answers "$n"
    wait_until "$n glusterd answers" "$TIMEOUT" "$n" glusterd_answers "$n"
    log "$n ($(guest_ip "$n")) answers ssh and glusterd ($(( ($(now_ms) - t) / 1000 ))s)"
}

# The guests were made from the current image (the recipe has not changed since).
image_current() { [ -s "$ENV_FILE" ] && grep -qxF "GUEST_IMAGE=$IMAGE_DIR" "$ENV_FILE"; }

# Every guest is running and answering, and the pool is whole.
healthy() {
    local n
    [ -s "$ENV_FILE" ] || return 1
    for n in "${GUESTS[@]}"; do qemu_pid "$n" >/dev/null || return 1; done
    for n in "${GUESTS[@]}"; do ssh_answers "$n" || return 1; done
    all_peers_connected
}

tap_master() { basename -- "$(readlink "/sys/class/net/$1/master" 2>/dev/null)" 2>/dev/null || true; }

# gluster.sh up rebuilds gsbr0 when its sandbox is unhealthy, which leaves the running guests'
# taps without a bridge. Put them back; prints how many were re-attached.
reattach_taps() {
    local n tap count=0
    for n in "${GUESTS[@]}"; do
        tap=$(guest_tap "$n")
        if [ -e "/sys/class/net/$tap" ] && qemu_pid "$n" >/dev/null && [ "$(tap_master "$tap")" != "$BRIDGE" ]; then
            ip link set dev "$tap" master "$BRIDGE" up
            log "$n: re-attached $tap to $BRIDGE"
            count=$(( count + 1 ))
        fi
    done
    echo "$count"
}

# Anything of a previous up still on the host.
leftovers() {
    local d n l
    for d in "$STATE"/disk*/; do
        [ -d "$d" ] || continue
        n=$(basename -- "$d")
        if qemu_pid "$n" >/dev/null; then echo "qemu $n"; fi
    done
    stray_qemus | sed 's/^/qemu pid /'
    for l in /sys/class/net/gstap-*; do
        if [ -e "$l" ]; then echo "link ${l##*/}"; fi
    done
}

on_up_exit() {
    local rc=$?
    [ "$UP_DONE" = 1 ] && return 0
    trap - ERR
    log "up FAILED (exit $rc)"
    if [ "${GUEST_KEEP_FAILED:-0}" = 1 ]; then
        log "left in place for inspection (GUEST_KEEP_FAILED=1); remove it with: $SCRIPT down"
    else
        log "tearing the guests down (console logs stay in $STATE/diskN/console.log)"
        do_down || true
    fi
}

do_up() {
    local t0 t n out
    t0=$(now_ms)
    do_install
    need_bridge
    [ -s "$CLIENT_KEY.pub" ] || die "no client key $CLIENT_KEY.pub: it is made by DEV_STATE=$DEV_STATE $SCRIPT_DIR/gluster.sh up"
    mkdir -p "$STATE"
    if [ -s "$SSH_CONFIG" ] && ! image_current; then
        log "the guests were made from another image than $IMAGE_DIR; rebuilding them"
    elif [ -s "$SSH_CONFIG" ]; then
        if [ "$(reattach_taps)" -gt 0 ]; then
            # the guests kept running; give their pool a minute to reconnect before rebuilding it
            local deadline=$(( $(now_ms) + 60000 ))
            until healthy || [ "$(now_ms)" -ge "$deadline" ]; do sleep 2; done
        fi
        if healthy; then
            log "already up and healthy; nothing to do (status: $SCRIPT status)"
            return 0
        fi
        if [ -n "$(leftovers)" ]; then log "partially up or unhealthy; tearing down first"; fi
    fi
    do_down quiet || die "cannot clean up the old guests"

    UP_DONE=0
    trap on_up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    t=$(now_ms)
    mkdir -p "$STATE"
    write_client_files
    for n in "${GUESTS[@]}"; do prepare_guest "$n"; add_tap "$n"; done
    for n in "${GUESTS[@]}"; do start_guest "$n"; done
    log "started ${GUESTS[*]} (TCG, ${MEM} MiB, 1 vCPU each; disks ${DATA_DISKS[*]} of $DISK_SIZE) ($(( ($(now_ms) - t) / 1000 ))s)"

    for n in "${GUESTS[@]}"; do wait_booted "$n"; done

    t=$(now_ms)
    for n in "${GUESTS[@]:1}"; do
        out=$(ssh_guest "${GUESTS[0]}" gluster --mode=script peer probe "$(guest_ip "$n")" 2>&1) \
            || fail "peer probe $(guest_ip "$n") from ${GUESTS[0]} failed: $out" "${GUESTS[0]}" "$n"
    done
    wait_until "peers (every guest sees $(( ${#GUESTS[@]} - 1 )) Connected)" "$TIMEOUT" \
        "$(IFS=,; echo "${GUESTS[*]}")" all_peers_connected
    log "trusted pool of ${GUESTS[*]} connected ($(( ($(now_ms) - t) / 1000 ))s)"
    write_env
    UP_DONE=1
    log "up in $(( ($(now_ms) - t0) / 1000 ))s; consumers: $ENV_FILE; ssh -F $SSH_CONFIG disk1"
}

# ---------------------------------------------------------------- down

# power_off GUEST...: ACPI power button on each, then wait up to GUEST_STOP_TIMEOUT for them
# all; whatever still runs is killed. Prints nothing; returns when every QEMU is gone.
power_off() {
    local n pid deadline
    local -A pids=()
    for n in "$@"; do
        if pid=$(qemu_pid "$n"); then
            pids[$n]=$pid
            qmp "$n" '{"execute": "system_powerdown"}' 2>/dev/null || log "$n: no answer on QMP; killing it"
        fi
    done
    deadline=$(( $(now_ms) + STOP_WAIT * 1000 ))
    for n in "${!pids[@]}"; do
        while ! gone "${pids[$n]}" && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.2; done
        if ! gone "${pids[$n]}"; then
            log "$n did not power off within ${STOP_WAIT}s; killing QEMU pid ${pids[$n]}"
            STOP_TIMEOUT=5 stop_pid "${pids[$n]}" "QEMU of $n"
        fi
    done
}

do_down() {
    local t0 d n p count=0 taps=0 l
    local -a names=() strays
    t0=$(now_ms)
    for d in "$STATE"/disk*/; do
        if [ -d "$d" ]; then names+=("$(basename -- "$d")"); fi
    done
    for n in "${names[@]}"; do if qemu_pid "$n" >/dev/null; then count=$(( count + 1 )); fi; done
    if [ "${#names[@]}" -gt 0 ]; then power_off "${names[@]}"; fi
    mapfile -t strays < <(stray_qemus)
    for p in "${strays[@]}"; do STOP_TIMEOUT=5 stop_pid "$p" "stray QEMU"; done
    for l in /sys/class/net/gstap-*; do
        if [ -e "$l" ]; then ip link del "${l##*/}" && taps=$(( taps + 1 )); fi
    done
    # everything but the console and QEMU logs
    for n in "${names[@]}"; do
        d=$(guest_dir "$n")
        find "$d" -mindepth 1 -maxdepth 1 ! -name console.log ! -name qemu.log ! -name qemu.cmdline \
            -exec rm -rf -- {} +
    done
    rm -rf -- "$HOSTKEY_DIR"
    rm -f -- "$KNOWN_HOSTS" "$SSH_CONFIG" "$ENV_FILE" "$KNOWN_HOSTS.tmp" "$ENV_FILE.tmp"
    l=$(leftovers)
    if [ -n "$l" ]; then
        log "down incomplete, still present: ${l//$'\n'/, }"
        return 1
    fi
    if [ "${1:-}" != quiet ] || [ $(( count + ${#strays[@]} + taps )) -gt 0 ]; then
        log "down: $count guest(s) powered off, ${#strays[@]} stray QEMU(s), $taps tap(s) removed ($(( ($(now_ms) - t0) / 1000 )).$(( ($(now_ms) - t0) % 1000 / 100 ))s)"
    fi
}

# ---------------------------------------------------------------- status

# One line for guest $1: "disk1 10.77.0.21 qemu=up sshd=up glusterd=up peers=2 ..."; 0 when healthy.
guest_status() {
    local n=$1 pid q=down s=down g=down peers=0 out rss=- cpu=- detached='' rc=1
    local -a f
    if pid=$(qemu_pid "$n"); then
        q=up
        rss=$(awk '/^VmRSS:/ { printf "%dMiB", $2 / 1024 }' "/proc/$pid/status")
        read -ra f <"/proc/$pid/stat"
        cpu=$(awk -v u="${f[13]}" -v s="${f[14]}" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0fs", (u + s) / hz }')
        if out=$(ssh_guest "$n" "hostname; timeout 20 gluster --mode=script peer status" 2>/dev/null) \
            || [ -n "$out" ]; then
            if [ "$(head -n 1 <<<"$out")" = "$n" ]; then s=up; fi
            if grep -q '^Number of Peers:' <<<"$out"; then g=up; fi
            peers=$(grep -c 'Peer in Cluster (Connected)' <<<"$out" || true)
        fi
    fi
    if [ -s "$(guest_dir "$n")/detached" ]; then detached=" detached=$(paste -sd, "$(guest_dir "$n")/detached")"; fi
    if [ "$q$s$g" = upupup ]; then rc=0; fi
    if [ "$q" = up ] && [ "$(tap_master "$(guest_tap "$n")")" != "$BRIDGE" ]; then
        detached+=" tap=not-on-$BRIDGE"
        rc=1
    fi
    echo "$n $(guest_ip "$n") qemu=$q sshd=$s glusterd=$g peers=$peers rss=$rss cpu=$cpu$detached"
    return "$rc"
}

do_status() {
    local n rc=0 tmp
    if [ ! -s "$SSH_CONFIG" ]; then
        for n in "${GUESTS[@]}"; do echo "$n $(guest_ip "$n") down (not up: $SCRIPT up)"; done
        return 1
    fi
    # in parallel: an SSH round trip to a TCG guest takes a while
    tmp=$(mktemp -d)
    for n in "${GUESTS[@]}"; do
        ( r=0; guest_status "$n" >"$tmp/$n" || r=$?; echo "$r" >"$tmp/$n.rc" ) &
    done
    wait
    for n in "${GUESTS[@]}"; do
        cat "$tmp/$n"
        [ "$(cat "$tmp/$n.rc" 2>/dev/null)" = 0 ] || rc=1
    done
    rm -rf -- "$tmp"
    return "$rc"
}

# ---------------------------------------------------------------- usage

# CPU share and RSS of each guest's QEMU over $1 seconds (default 60), and their sum.
do_usage() {
    local secs=${1:-60} n pid hz total=0 rss_total=0
    local -A pids=() before=()
    [[ $secs =~ ^[1-9][0-9]*$ ]] || die "usage SECONDS: a whole number, not '$secs'"
    hz=$(getconf CLK_TCK)
    cpu_ticks() { local -a f; read -ra f <"/proc/$1/stat"; echo $(( f[13] + f[14] )); }
    for n in "${GUESTS[@]}"; do
        pid=$(qemu_pid "$n") || die "$n is not running"
        pids[$n]=$pid
        before[$n]=$(cpu_ticks "$pid")
    done
    sleep "$secs"
    for n in "${GUESTS[@]}"; do
        local ticks rss
        ticks=$(( $(cpu_ticks "${pids[$n]}") - before[$n] ))
        rss=$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/${pids[$n]}/status")
        total=$(( total + ticks ))
        rss_total=$(( rss_total + rss ))
        awk -v n="$n" -v t="$ticks" -v s="$secs" -v hz="$hz" -v r="$rss" \
            'BEGIN { printf "%s cpu=%.2f%% of one core (%.2fs in %ds) rss=%dMiB\n", n, 100 * t / hz / s, t / hz, s, r }'
    done
    awk -v t="$total" -v s="$secs" -v hz="$hz" -v r="$rss_total" -v c="$(nproc)" \
        'BEGIN { printf "all cpu=%.2f%% of one core, %.2f%% of the %d cores; rss=%dMiB\n", 100 * t / hz / s, 100 * t / hz / s / c, c, r }'
}

# ---------------------------------------------------------------- reboot

do_reboot() {
    local n=$1 hard=0 t0 pid d
    local -a without=()
    shift
    [[ " ${GUESTS[*]} " == *" $n "* ]] || die "unknown guest '$n'; one of: ${GUESTS[*]}"
    while [ "$#" -gt 0 ]; do
        case $1 in
            --without-disk)
                if [ "$#" -lt 2 ] || [[ " ${DATA_DISKS[*]} " != *" $2 "* ]]; then
                    die "--without-disk needs one of: ${DATA_DISKS[*]}"
                fi
                without+=("$2")
                shift 2
                ;;
            --hard) hard=1; shift ;;
            *) die "unknown reboot option '$1'" ;;
        esac
    done
    need_bridge
    d=$(guest_dir "$n")
    if [ ! -s "$ENV_FILE" ] || [ ! -s "$SSH_CONFIG" ] || [ ! -s "$d/root.qcow2" ] || [ ! -s "$d/seed.tar" ]; then
        die "$n was not set up; start the guests first: $SCRIPT up"
    fi
    # the image the guests were made from (their overlays' backing file), even if the recipe
    # has changed since
    IMAGE_DIR=$(sed -n 's/^GUEST_IMAGE=//p' "$ENV_FILE")
    image_ready || die "the image $IMAGE_DIR of the running guests is gone; rebuild them: $SCRIPT down && $SCRIPT up"
    t0=$(now_ms)
    if ! pid=$(qemu_pid "$n"); then
        log "$n: QEMU is not running (crashed or killed); starting it"
    elif [ "$hard" = 1 ]; then
        log "$n: power cut (SIGKILL of QEMU pid $pid)"
        kill -KILL "$pid"
        while ! gone "$pid"; do sleep 0.05; done
    else
        log "$n: ACPI power-off"
        power_off "$n"
    fi
    log "$n: off ($(( ($(now_ms) - t0) / 1000 ))s); starting${without:+ without ${without[*]}}"
    start_guest "$n" "${without[@]}"
    wait_booted "$n"
    wait_until "peers (every guest sees $(( ${#GUESTS[@]} - 1 )) Connected)" "$TIMEOUT" "$n" all_peers_connected
    log "$n rebooted in $(( ($(now_ms) - t0) / 1000 ))s; peers connected${without:+; detached: ${without[*]}}"
}

# ---------------------------------------------------------------- main

usage() { sed -n 's/^# \{0,1\}//; /^Usage:/,/^$/p' "$SCRIPT"; }

main() {
    local cmd=${1:-}
    case $cmd in
        install | up | down | status | env | usage) ;;
        reboot | ssh) [ "$#" -ge 2 ] || { usage >&2; exit 2; } ;;
        -h | --help | help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "must run as root (taps on the bridge)"
    [[ $GUEST_COUNT =~ ^[1-3]$ ]] || die "GUEST_COUNT must be 1, 2 or 3, not '$GUEST_COUNT'"
    [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "GUEST_TIMEOUT must be a whole number of seconds, not '$TIMEOUT'"
    case $cmd in
        up | down | reboot)
            # one up/down/reboot at a time; QEMU is started with fd 9 closed
            exec 9<"$SCRIPT"
            flock -w 600 9 || die "another guests.sh up/down/reboot held the lock for 600 s"
            ;;
    esac
    case $cmd in
        install) do_install ;;
        up) do_up ;;
        down) do_down || exit 1 ;;
        status) do_status || exit 1 ;;
        reboot) shift; do_reboot "$@" ;;
        ssh) shift; n=$1; shift; exec ssh -F "$SSH_CONFIG" "$n" "$@" ;;
        env) echo "$ENV_FILE" ;;
        usage) do_usage "${2:-60}" ;;
    esac
}

main "$@"
