"""Render a trial's Job from the Study's trialTemplate (pure: no I/O).

Placeholders are replaced in strings as data: a parameter value never passes
through a shell, so `--lr=${params.lr}` becomes one argv element `--lr=0.01`
whatever the value holds. The operator adds the trial environment, labels and
owner references; it never overrides what the user's template set explicitly.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from kubetune.labels import GROUP, LABEL_NUMBER, LABEL_SCRAPE, LABEL_STUDY, LABEL_TRIAL, VERSION
from kubetune.space import render_value
from kubetune.spec import PLACEHOLDER, StudySpec

API_VERSION = f"{GROUP}/{VERSION}"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubetune"}
DEFAULT_METRICS_PORT = 9090
# Job and pod names become label values (job-name), which are limited to 63 characters.
MAX_STUDY_NAME = 52


def trial_name(study: str, number: int) -> str:
    """Deterministic: re-running any step finds the same Trial and Job."""
    return f"{study}-{number}"


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str
    uid: str
    api_version: str = API_VERSION

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class TrialIdentity:
    namespace: str
    study: str
    number: int
    seed: int

    @property
    def name(self) -> str:
        return trial_name(self.study, self.number)


def labels(ident: TrialIdentity) -> dict[str, str]:
    return {
        LABEL_STUDY: ident.study,
        LABEL_TRIAL: ident.name,
        LABEL_NUMBER: str(ident.number),
        **MANAGED_BY,
    }


def substitute(obj: Any, values: dict[str, str]) -> Any:
    """Replace ${kind.field} in every string of a JSON-like tree."""
    if isinstance(obj, str):
        return PLACEHOLDER.sub(lambda m: values.get(f"{m.group(1)}.{m.group(2)}", m.group(0)), obj)
    if isinstance(obj, dict):
        return {k: substitute(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, values) for v in obj]
    return obj


def placeholder_values(
    spec: StudySpec, ident: TrialIdentity, params: dict[str, Any]
) -> dict[str, str]:
    values = {f"params.{p.name}": render_value(params.get(p.name)) for p in spec.parameters}
    values.update(
        {
            "trial.name": ident.name,
            "trial.number": str(ident.number),
            "trial.seed": str(ident.seed),
            "study.name": ident.study,
            "study.namespace": ident.namespace,
        }
    )
    return values


def trial_env(
    spec: StudySpec, ident: TrialIdentity, params: dict[str, Any], metrics_port: int
) -> list[dict[str, Any]]:
    """The trial contract's inputs (see kubetune.trial)."""
    return [
        {"name": "KUBETUNE_PARAMS", "value": json.dumps(params, sort_keys=True)},
        {"name": "KUBETUNE_TRIAL_NAME", "value": ident.name},
        {"name": "KUBETUNE_TRIAL_NUMBER", "value": str(ident.number)},
        {"name": "KUBETUNE_TRIAL_SEED", "value": str(ident.seed)},
        {"name": "KUBETUNE_STUDY_NAME", "value": ident.study},
        {"name": "KUBETUNE_NAMESPACE", "value": ident.namespace},
        {"name": "KUBETUNE_OBJECTIVE", "value": spec.primary.metric},
        {"name": "KUBETUNE_METRICS_PORT", "value": str(metrics_port)},
        # Bind the metrics server to the pod's own IP.
        {
            "name": "KUBETUNE_METRICS_ADDR",
            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
        },
    ]


def restrict(pod: dict[str, Any]) -> None:
    """Fill in the `restricted` Pod Security level's settings the template left unset.

    Never overrides: a template that sets runAsNonRoot: false, a capability or a
    privileged container keeps it (and a restricted namespace will refuse it, which
    the operator reports). Privileged containers get no allowPrivilegeEscalation,
    which the API server would reject next to privileged: true.
    """
    # Not part of the level, but a trial has no business with the API server: no token
    # mounted unless the template asks for one (this also spares a TokenRequest per pod).
    pod.setdefault("automountServiceAccountToken", False)
    pod_sc = pod.setdefault("securityContext", {})
    pod_sc.setdefault("runAsNonRoot", True)
    pod_sc.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        sc = container.setdefault("securityContext", {})
        if not sc.get("privileged"):
            sc.setdefault("allowPrivilegeEscalation", False)
        sc.setdefault("capabilities", {"drop": ["ALL"]})


def trial_job_spec(
    job_spec: dict[str, Any],
    spec: StudySpec,
    ident: TrialIdentity,
    params: dict[str, Any],
    metrics_port: int,
    restricted: bool,
) -> dict[str, Any]:
    """Complete one (already substituted) batch/v1 JobSpec of a trial, in place: its pods
    carry the trial's labels and environment, and a disruption is not a failure."""
    # One pod per trial: a retried pod would report a second, different result.
    job_spec.setdefault("backoffLimit", 0)
    template = job_spec.setdefault("template", {})
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels(ident), LABEL_SCRAPE: "true"}
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        "prometheus.io/port": str(metrics_port),
    }
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    if pod["restartPolicy"] == "Never" and "podFailurePolicy" not in job_spec:
        # A pod ended by a preemption, an eviction or a drain (its DisruptionTarget
        # condition) is not the trial failing: the Job starts another, without using
        # up backoffLimit, and the trial continues from its checkpoint.
        job_spec["podFailurePolicy"] = {
            "rules": [
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                }
            ]
        }
    if restricted:
        restrict(pod)
    env = trial_env(spec, ident, params, metrics_port)
    for container in pod.get("containers") or []:
        own = {e.get("name") for e in container.get("env") or []}
        container["env"] = [e for e in env if e["name"] not in own] + list(
            container.get("env") or []
        )
        path = container.get("terminationMessagePath")
        if path and "KUBETUNE_TERMINATION_LOG" not in own:
            container["env"].append({"name": "KUBETUNE_TERMINATION_LOG", "value": path})
    return job_spec


def workload_labels(
    spec: StudySpec, ident: TrialIdentity, pod_templates: list[dict[str, Any]]
) -> tuple[dict[str, str], bool]:
    """The labels of a trial's top-level object, and whether it starts suspended."""
    out = labels(ident)
    if not spec.queue_name:
        return out, False
    # Created suspended, as Kueue's own webhook would make it: Kueue unsuspends it when
    # it admits it. Suspending here too means that no pod can start before admission
    # even if the webhook is not there.
    out[KUEUE_QUEUE_LABEL] = spec.queue_name
    # Kueue reads the priority (a WorkloadPriorityClass) from the top object's labels;
    # users set it where they set everything else, on the template's pod labels.
    for template in pod_templates:
        priority = ((template.get("metadata") or {}).get("labels") or {}).get(KUEUE_PRIORITY_LABEL)
        if priority:
            out[KUEUE_PRIORITY_LABEL] = priority
            break
    return out, True


def render_job(
    spec: StudySpec,
    ident: TrialIdentity,
    params: dict[str, Any],
    owner: Owner,
    metrics_port: int = DEFAULT_METRICS_PORT,
    restricted: bool = True,
) -> dict[str, Any]:
    """The batch/v1 Job of one trial."""
    job_spec: dict[str, Any] = substitute(
        copy.deepcopy(spec.trial_template), placeholder_values(spec, ident, params)
    )
    job_spec.pop("kind", None)  # `kind: Job` names the template's kind; no JobSpec field
    trial_job_spec(job_spec, spec, ident, params, metrics_port, restricted)
    job_labels, suspend = workload_labels(spec, ident, [job_spec["template"]])
    if suspend:
        job_spec["suspend"] = True
    return owned("batch/v1", "Job", ident, job_labels, owner, job_spec)


def owned(
    api_version: str,
    kind: str,
    ident: TrialIdentity,
    obj_labels: dict[str, str],
    owner: Owner,
    spec: dict[str, Any],
) -> dict[str, Any]:
    """A trial's object (its Trial, Job or JobSet): named after the trial, owned by `owner`."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": ident.name,
            "namespace": ident.namespace,
            "labels": obj_labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": spec,
    }


def render_trial(
    ident: TrialIdentity,
    params: dict[str, Any],
    owner: Owner,
    source: str = "sampler",
    sampler_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Trial object (owned by its Study)."""
    trial_spec: dict[str, Any] = {
        "study": ident.study,
        "number": ident.number,
        "params": params,
        "seed": ident.seed,
        "source": source,
    }
    trial = owned(API_VERSION, "Trial", ident, labels(ident), owner, trial_spec)
    if sampler_state:
        trial["spec"]["samplerState"] = sampler_state
    return trial


def sample_params(spec: StudySpec) -> dict[str, Any]:
    """Representative values (for validating the rendered template before any trial)."""
    values: dict[str, Any] = {}
    for p in spec.parameters:
        if p.when is not None and values.get(p.when.parameter) not in p.when.in_:
            continue
        if p.categorical is not None:
            values[p.name] = p.categorical.choices[0]
        elif p.int is not None:
            values[p.name] = p.int.low
        elif p.float is not None:
            values[p.name] = p.float.low
    return values
