//go:build tools

// Package tools pins the main packages that deploy/dev/kube.sh and deploy/dev/node.sh build
// (k8s_package in deploy/dev/lib.sh names them).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
