"""A real Kubernetes control plane on loopback, for development, tests and CI.

This is DEVELOPMENT INFRASTRUCTURE, not part of the kubetune product. It runs the
upstream kube-apiserver, kube-controller-manager and kube-scheduler (built from
the Go modules, see hack/build-k8s.sh), etcd and Prometheus from Debian, and a
"local GPU node" agent that registers Node objects and runs the pods bound to
them as local processes. Everything listens on 127.0.0.1 only.
"""
