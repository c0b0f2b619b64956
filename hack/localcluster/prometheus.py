"""Prometheus configuration for the local cluster.

Prometheus discovers pods through the local API server (kubernetes_sd_configs,
role pod) and scrapes those that opt in, either with the conventional annotation
``prometheus.io/scrape: "true"`` or the label ``kubetune.dev/scrape: "true"``.
The port comes from the ``prometheus.io/port`` annotation, else from a container
port named ``metrics``; the path from ``prometheus.io/path`` (default /metrics).
Every pod label becomes a series label (``kubetune.dev/trial`` -> ``kubetune_dev_trial``),
plus ``namespace``, ``pod`` and ``container``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from localcluster.kwok import NODE_PREFIX

DEFAULT_SCRAPE_INTERVAL = "1s"


def render_config(apiserver_url: str, pki: Path, scrape_interval: str) -> str:
    tls = {
        "ca_file": str(pki / "ca.crt"),
        "cert_file": str(pki / "prometheus.crt"),
        "key_file": str(pki / "prometheus.key"),
    }
    meta = "__meta_kubernetes_pod_"
    relabel = [
        # Opt-in: annotation or label.
        {
            "source_labels": [
                f"{meta}annotation_prometheus_io_scrape",
                f"{meta}label_kubetune_dev_scrape",
            ],
            "regex": "true;.*|.*;true",
            "action": "keep",
        },
        # Pods on KWOK's simulated nodes run nothing and their IPs lead nowhere: thousands
        # of scrapes timing out would load the machine that a scale benchmark measures.
        {"source_labels": [f"{meta}node_name"], "regex": f"{NODE_PREFIX}.*", "action": "drop"},
        # Only running pods have a process to scrape.
        {"source_labels": [f"{meta}phase"], "regex": "Pending|Succeeded|Failed", "action": "drop"},
        # The port: a container port named "metrics", overridden by the annotation.
        {
            "source_labels": [f"{meta}container_port_name", f"{meta}container_port_number"],
            "regex": "metrics;(\\d+)",
            "target_label": "__tmp_port",
        },
        {
            "source_labels": [f"{meta}annotation_prometheus_io_port"],
            "regex": "(\\d+)",
            "target_label": "__tmp_port",
        },
        {"source_labels": ["__tmp_port"], "regex": "", "action": "drop"},
        {
            "source_labels": [f"{meta}ip", "__tmp_port"],
            "regex": "(.+);(.+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {
            "source_labels": [f"{meta}annotation_prometheus_io_path"],
            "regex": "(.+)",
            "target_label": "__metrics_path__",
        },
        {"action": "labelmap", "regex": f"{meta}label_(.+)"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": [f"{meta}name"], "target_label": "pod"},
        {"source_labels": [f"{meta}container_name"], "target_label": "container"},
    ]
    config = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [
                    {"role": "pod", "api_server": apiserver_url, "tls_config": tls}
                ],
                "relabel_configs": relabel,
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
