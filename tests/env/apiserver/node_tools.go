//go:build tools

// Records the node's programs (tests/env/setup.sh builds them when SIGNALMAN_NODE=1) as
// dependencies, so that go.sum covers them; a main package cannot be imported, its app
// package can. The tag keeps them out of signalman-apiserver.
package main

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
