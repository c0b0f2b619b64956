"""kubetune: a Kubernetes-native hyperparameter tuning operator."""

__version__ = "0.1.0"
