#!/usr/bin/env bash
# Regenerates the committed gRPC stubs of the CSI driver in provisioner/csi/proto/ from the published
# protos: csi.proto of github.com/container-storage-interface/spec and the plugin-registration
# api.proto of k8s.io/kubelet, both taken from the Go module cache (`go mod download`), compiled with
# grpcio-tools (message and service code) and mypy-protobuf (.pyi stubs for mypy --strict).
#
# The output is committed (the README, "The CSI driver", says why); tests/integration/test_csi_stubs.py
# regenerates into a temporary directory and fails when the committed files differ, so a version bump
# here without a regeneration, or a hand edit of generated code, does not go unnoticed.
#
# Usage: deploy/dev/csi-stubs.sh [OUT_DIR]     (default: provisioner/csi/proto of this checkout)
# Environment: PYTHON (default: the checkout's .venv/bin/python, else python3) must have
# grpcio-tools and mypy-protobuf installed (the `test` extra of pyproject.toml).
set -Eeuo pipefail
export LC_ALL=C

CSI_SPEC_VERSION=v1.13.0
KUBELET_VERSION=v0.37.2

SCRIPT_DIR=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
REPO_ROOT=$(dirname -- "$(dirname -- "$SCRIPT_DIR")")
OUT_DIR=$(realpath -m -- "${1:-$REPO_ROOT/provisioner/csi/proto}")
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON=$REPO_ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
PLUGIN_DIR=$(dirname -- "$(command -v "$PYTHON")")

die() { printf 'csi-stubs: ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is not installed (needed only to fetch the protos from the module proxy)"
"$PYTHON" -c 'import grpc_tools.protoc, mypy_protobuf' 2>/dev/null \
    || die "$PYTHON lacks grpcio-tools or mypy-protobuf: pip install -e '.[test]'"
[ -x "$PLUGIN_DIR/protoc-gen-mypy" ] || die "protoc-gen-mypy not found next to $PYTHON"

module_dir() {
    # go mod download needs a module context only for its cache; any directory will do.
    (cd /tmp && go mod download -json "$1@$2") | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

CSI_DIR=$(module_dir github.com/container-storage-interface/spec "$CSI_SPEC_VERSION")
KUBELET_DIR=$(module_dir k8s.io/kubelet "$KUBELET_VERSION")

# protoc names the generated modules after the proto's path under the include root, and the *_grpc
# module imports the message module by that path. Laying the protos out under provisioner/csi/proto/
# in a scratch root makes those imports package-absolute (from provisioner.csi.proto import csi_pb2).
WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT
mkdir -p "$WORK/src/provisioner/csi/proto" "$WORK/out"
cp -- "$CSI_DIR/csi.proto" "$WORK/src/provisioner/csi/proto/csi.proto"
cp -- "$KUBELET_DIR/pkg/apis/pluginregistration/v1/api.proto" "$WORK/src/provisioner/csi/proto/pluginregistration.proto"

INCLUDE=$("$PYTHON" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
(
    cd "$WORK/src"
    PATH=$PLUGIN_DIR:$PATH "$PYTHON" -m grpc_tools.protoc -I. -I"$INCLUDE" \
        --python_out="$WORK/out" --grpc_python_out="$WORK/out" \
        --mypy_out="$WORK/out" --mypy_grpc_out="$WORK/out" \
        provisioner/csi/proto/csi.proto provisioner/csi/proto/pluginregistration.proto
)

mkdir -p -- "$OUT_DIR"
GEN=$WORK/out/provisioner/csi/proto
{
    echo '"""Generated gRPC stubs (deploy/dev/csi-stubs.sh); do not edit.'
    echo
    echo "csi_pb2*: github.com/container-storage-interface/spec $CSI_SPEC_VERSION csi.proto."
    echo "pluginregistration_pb2*: k8s.io/kubelet $KUBELET_VERSION pkg/apis/pluginregistration/v1/api.proto."
    echo '"""'
} >"$OUT_DIR/__init__.py"
for f in csi_pb2.py csi_pb2.pyi csi_pb2_grpc.py csi_pb2_grpc.pyi \
         pluginregistration_pb2.py pluginregistration_pb2.pyi pluginregistration_pb2_grpc.py pluginregistration_pb2_grpc.pyi; do
    [ -f "$GEN/$f" ] || die "protoc did not write $f"
    cp -- "$GEN/$f" "$OUT_DIR/$f"
done
printf 'csi-stubs: wrote %s (csi spec %s, kubelet %s)\n' "$OUT_DIR" "$CSI_SPEC_VERSION" "$KUBELET_VERSION" >&2
