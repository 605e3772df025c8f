#!/usr/bin/env bash
# Builds csi-sanity, the CSI conformance suite of kubernetes-csi/csi-test, from the Go module proxy
# into a cache directory keyed by its version; tests/integration/test_csi_sanity.py runs it against
# the driver. The binary is never committed.
#
# Usage: deploy/dev/csi-sanity.sh {install|path}
#   install  build it unless the cached binary is there (cold: about a minute on 2 cores)
#   path     print the binary's path (install first if missing)
# Environment: CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner),
#              CSI_SANITY_VERSION (default v5.6.0).
#
# `go install module/cmd@version` works for csi-test (its go.mod has no replace directives), so no
# consumer module is needed, unlike deploy/dev/k8sbins.
set -Eeuo pipefail

VERSION=${CSI_SANITY_VERSION:-v5.6.0}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gluster-provisioner}
BIN_DIR=$CACHE_DIR/csi-sanity-$VERSION
BIN=$BIN_DIR/csi-sanity

die() { printf 'csi-sanity: ERROR: %s\n' "$*" >&2; exit 1; }

install() {
    if [ -x "$BIN" ]; then return 0; fi
    command -v go >/dev/null || die "go is not installed"
    mkdir -p -- "$BIN_DIR"
    printf 'csi-sanity: building github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@%s into %s\n' "$VERSION" "$BIN_DIR" >&2
    local log=$BIN_DIR/.build.log
    if ! GOBIN=$BIN_DIR GOFLAGS=-buildvcs=false go install \
        "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$VERSION" >"$log" 2>&1; then
        tail -n 20 -- "$log" >&2
        die "go install failed; full log: $log"
    fi
    [ -x "$BIN" ] || die "go install wrote no $BIN"
}

case "${1:-}" in
    install) install ;;
    path) install; printf '%s\n' "$BIN" ;;
    *) die "usage: $0 {install|path}" ;;
esac
