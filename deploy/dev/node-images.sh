#!/usr/bin/env bash
# The container images of the dev node, built here without a registry or an image builder: each is
# one uncompressed layer tarred deterministically (sorted names, owner 0, mtime 0), a config and a
# manifest, in an OCI image layout, itself tarred the same way (an "OCI archive" that
# `ctr images import` takes). Same inputs, same bytes, same digests.
#
#   deploy/dev/node-images.sh OUT_DIR PAUSE_C PAUSE_VERSION
#
#   pause     the Kubernetes pause program: PAUSE_C (build/pause/linux/pause.c of the k8s.io/kubernetes
#             module the binaries are built from) compiled statically with Debian's gcc and libc6-dev,
#             as its Makefile does; USER 65535:65535, ENTRYPOINT /pause, as its Dockerfile says
#   busybox   Debian's busybox-static: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group,
#             /tmp; tagged with the Debian package version
#
# Writes OUT_DIR/pause.oci.tar, OUT_DIR/busybox.oci.tar and OUT_DIR/images.env (IMAGE_PAUSE=,
# IMAGE_BUSYBOX=, the names under localhost/gluster-provisioner/). OUT_DIR must not exist; it is
# built beside it and renamed at the end (never half a set).
set -euo pipefail
umask 022

LOG_PREFIX=node-images
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 3)) || die "usage: $0 OUT_DIR PAUSE_C PAUSE_VERSION"
OUT=$1 PAUSE_C=$2 PAUSE_VERSION=$3
REPO_PREFIX=localhost/gluster-provisioner
[[ ! -e "$OUT" ]] || die "$OUT exists"
[[ -f "$PAUSE_C" ]] || die "no $PAUSE_C"
if ! dpkg-query -S /bin/busybox 2>/dev/null | grep -q '^busybox-static:'; then
  die "/bin/busybox is not Debian's busybox-static (apt-get install busybox-static)"
fi
command -v gcc >/dev/null || die "gcc not found (apt-get install gcc libc6-dev)"

ARCH="$(dpkg --print-architecture)"
BUSYBOX_DEB="$(dpkg-query -W -f='${Version}' busybox-static)"
# An image tag: [A-Za-z0-9_][A-Za-z0-9_.-]*; the Debian version without its epoch, + and ~ as -.
BUSYBOX_TAG="$(sed -e 's/^[0-9]*://' -e 's/[+~]/-/g' <<<"$BUSYBOX_DEB")"
IMAGE_PAUSE="$REPO_PREFIX/pause:$PAUSE_VERSION"
IMAGE_BUSYBOX="$REPO_PREFIX/busybox:$BUSYBOX_TAG"

WORK="$OUT.tmp.$$"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

# Deterministic tar of a directory's contents (GNU tar).
det_tar() {
  local dir=$1 out=$2
  tar --create --file="$out" --directory="$dir" --sort=name --format=posix \
    --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
    --mtime='@0' --owner=0 --group=0 --numeric-owner --no-acls --no-xattrs --no-selinux .
}

# blob LAYOUT FILE: store FILE as a blob of the layout; prints "sha256:<hex> <size>".
blob() {
  local layout=$1 file=$2 hex size
  hex="$(sha256sum "$file" | cut -d' ' -f1)"
  size="$(stat -c %s "$file")"
  mkdir -p "$layout/blobs/sha256"
  cp "$file" "$layout/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

# image NAME ROOTFS CONFIG_JSON_FRAGMENT OUT_TAR: an OCI archive of one image with one layer.
image() {
  local name=$1 rootfs=$2 config=$3 out=$4 layout="$WORK/layout-${1##*/}" layer d s cd cs md ms
  layout="${layout%%:*}"
  mkdir -p "$layout"
  det_tar "$rootfs" "$WORK/layer.tar"
  read -r layer s < <(blob "$layout" "$WORK/layer.tar")
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$ARCH" "$config" "$layer" >"$WORK/config.json"
  read -r cd cs < <(blob "$layout" "$WORK/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",%s,%s}' \
    "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$cd\",\"size\":$cs}" \
    "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$layer\",\"size\":$s}]" \
    >"$WORK/manifest.json"
  read -r md ms < <(blob "$layout" "$WORK/manifest.json")
  # io.containerd.image.name is the name `ctr images import` gives it; ref.name is the OCI tag.
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$md\",\"size\":$ms,\"platform\":{\"architecture\":\"$ARCH\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"${name##*:}\"}}" \
    >"$layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  det_tar "$layout" "$out"
  d="$(sha256sum "$out" | cut -d' ' -f1)"
  log "$name: manifest $md, archive $(du -h "$out" | cut -f1) (sha256 ${d:0:12})"
  rm -f "$WORK/layer.tar" "$WORK/config.json" "$WORK/manifest.json"
}

PATH_ENV='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'

# --- pause ----------------------------------------------------------------------------------
mkdir -p "$WORK/pause-root"
# The Makefile's flags; the version string as `pause -v` prints it.
gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-gluster-provisioner" -o "$WORK/pause-root/pause" "$PAUSE_C"
strip --strip-all "$WORK/pause-root/pause"
chmod 0755 "$WORK/pause-root/pause"
image "$IMAGE_PAUSE" "$WORK/pause-root" "{$PATH_ENV,\"User\":\"65535:65535\",\"Entrypoint\":[\"/pause\"]}" \
  "$WORK/pause.oci.tar"

# --- busybox --------------------------------------------------------------------------------
R="$WORK/busybox-root"
mkdir -p "$R/bin" "$R/etc" "$R/root" "$R/tmp" "$R/var" "$R/proc" "$R/sys" "$R/dev"
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
cp /bin/busybox "$R/bin/busybox"
chmod 0755 "$R/bin/busybox"
while read -r applet; do
  [[ "$applet" == bin/busybox ]] && continue
  mkdir -p "$R/$(dirname "$applet")"
  ln -sf /bin/busybox "$R/$applet"
done < <(/bin/busybox --list-full | LC_ALL=C sort)
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
chmod 0644 "$R/etc/passwd" "$R/etc/group"
image "$IMAGE_BUSYBOX" "$R" "{$PATH_ENV,\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"}" "$WORK/busybox.oci.tar"

printf 'IMAGE_PAUSE=%s\nIMAGE_BUSYBOX=%s\n' "$IMAGE_PAUSE" "$IMAGE_BUSYBOX" >"$WORK/images.env"
mkdir -p "$WORK/out"
mv "$WORK/pause.oci.tar" "$WORK/busybox.oci.tar" "$WORK/images.env" "$WORK/out/"
mkdir -p "$(dirname "$OUT")"
mv "$WORK/out" "$OUT"
