"""Adapters at the edges: the Kubernetes API, Prometheus, Optuna."""
