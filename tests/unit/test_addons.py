"""The local cluster's add-on wiring that needs no cluster: webhook configurations
pointed at loopback, and add-on names."""

from __future__ import annotations

import pytest
import yaml

from localcluster.addons import ADDONS, parse, webhook_configurations

MANIFEST = """\
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: mutating-webhook-configuration}
webhooks:
- name: mjob.kb.io
  clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate-batch-v1-job}}
  admissionReviewVersions: [v1]
  sideEffects: None
- name: mjobset.kb.io
  clientConfig:
    service:
      {name: webhook-service, namespace: system, path: /mutate-jobset-x-k8s-io-v1alpha2-jobset}
  admissionReviewVersions: [v1]
  sideEffects: None
- name: mrayjob.kb.io
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate-ray-io-v1-rayjob}
  admissionReviewVersions: [v1]
  sideEffects: None
---
apiVersion: v1
kind: Service
metadata: {name: webhook-service}
"""


def test_webhooks_point_at_loopback_and_only_the_enabled_frameworks() -> None:
    hooks = webhook_configurations(MANIFEST, ADDONS["kueue"], 9443, "Q0E=", others=set())
    assert [h["metadata"]["name"] for h in hooks] == ["kueue-mutating-webhook-configuration"]
    assert hooks[0]["metadata"]["labels"] == {"localcluster.kubetune.dev/addon": "kueue"}
    [job] = hooks[0]["webhooks"]  # no Ray (not enabled), no JobSet (JobSet not running)
    assert job["clientConfig"] == {
        "url": "https://127.0.0.1:9443/mutate-batch-v1-job",
        "caBundle": "Q0E=",
    }
    with_jobset = webhook_configurations(MANIFEST, ADDONS["kueue"], 9443, "Q0E=", {"jobset"})
    assert [h["name"] for h in with_jobset[0]["webhooks"]] == ["mjob.kb.io", "mjobset.kb.io"]
    assert yaml.safe_load(yaml.safe_dump_all(hooks))  # it is what kubectl applies


def test_addon_names_are_checked_and_ordered() -> None:
    assert parse("kueue, jobset") == ["jobset", "kueue"], "JobSet's CRD before Kueue"
    assert parse("") == [] and parse(None) == []
    with pytest.raises(ValueError, match="unknown add-on"):
        parse("kueue,volcano")
