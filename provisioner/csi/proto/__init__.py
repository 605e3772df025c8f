"""Generated gRPC stubs (deploy/dev/csi-stubs.sh); do not edit.

csi_pb2*: github.com/container-storage-interface/spec v1.13.0 csi.proto.
pluginregistration_pb2*: k8s.io/kubelet v0.37.2 pkg/apis/pluginregistration/v1/api.proto.
"""
