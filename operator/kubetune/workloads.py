"""What a trial runs as: a batch/v1 Job (one pod) or a JobSet (several pods).

One small adapter per kind says how to render it from `spec.trialTemplate`, where it
lives in the API, what its status says (failed and why, suspended by a queue), which of
its pods reports the trial's metrics (the leader: rank 0), and how many GPUs it holds.
The rest of the operator speaks of a trial's workload and asks the adapter.

A Job trial is today's format, `spec.trialTemplate` being a JobSpec. A JobSet trial is
`spec.trialTemplate: {kind: JobSet, spec: <JobSetSpec>}`; each of its replicated Jobs
is completed as a Job trial is (labels, trial environment, restricted pods).
"""

from __future__ import annotations

import copy
from typing import Any

from kubetune.labels import is_leader
from kubetune.lifecycle import JobObservation
from kubetune.render import (
    DEFAULT_METRICS_PORT,
    Owner,
    TrialIdentity,
    owned,
    placeholder_values,
    render_job,
    substitute,
    trial_job_spec,
    workload_labels,
)
from kubetune.spec import SpecError, StudySpec, pod_templates

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
# Labels the JobSet controller puts on its pods: which JobSet (uid) and which of its Jobs.
JOBSET_UID = "jobset.sigs.k8s.io/jobset-uid"
# A JobSet's failures are its own to decide (failurePolicy, maxRestarts): its pods'
# failures never end the trial by themselves, only its Failed condition does.
UNBOUNDED = 1 << 30


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == kind and c.get("status") == "True"
        ),
        None,
    )


def _pod_gpus(template: dict[str, Any]) -> int:
    """GPUs one pod of `template` asks for (limits, else requests), summed over containers."""
    total = 0
    for c in (template.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("limits") or {}).get("nvidia.com/gpu") or (res.get("requests") or {}).get(
            "nvidia.com/gpu"
        )
        try:
            total += int(str(value or 0))
        except ValueError:
            raise SpecError(
                f"spec.trialTemplate: container {c.get('name')!r} asks for nvidia.com/gpu "
                f"{value!r}; give a whole number of GPUs"
            ) from None
    return total


class JobKind:
    kind = "Job"
    api_version = "batch/v1"
    plural = "jobs"
    multi_pod = False

    def render(
        self,
        spec: StudySpec,
        ident: TrialIdentity,
        params: dict[str, Any],
        owner: Owner,
        metrics_port: int = DEFAULT_METRICS_PORT,
        restricted: bool = True,
    ) -> dict[str, Any]:
        return render_job(spec, ident, params, owner, metrics_port, restricted)

    def observe(self, obj: dict[str, Any]) -> JobObservation:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        failed = _condition(status, "Failed")
        return JobObservation(
            exists=True,
            backoff_limit=int(spec.get("backoffLimit") or 0),
            failed_reason=failed.get("reason") if failed else None,
            failed_message=failed.get("message") if failed else None,
            suspended=bool(spec.get("suspend")),
        )

    def group_uid(self, labels: dict[str, str]) -> str | None:
        return None  # a Job's pods are found by their owner reference

    def leader(self, labels: dict[str, str]) -> bool:
        return True  # one pod at a time

    def gpus(self, tpl: dict[str, Any]) -> int:
        """GPUs the trial holds while it runs: every pod's, for gpuHours."""
        return sum(_pod_gpus(t.template) * t.pods for t in pod_templates(tpl))


class JobSetKind(JobKind):
    kind = "JobSet"
    api_version = JOBSET_API
    plural = "jobsets"
    multi_pod = True

    def render(
        self,
        spec: StudySpec,
        ident: TrialIdentity,
        params: dict[str, Any],
        owner: Owner,
        metrics_port: int = DEFAULT_METRICS_PORT,
        restricted: bool = True,
    ) -> dict[str, Any]:
        tpl = substitute(
            copy.deepcopy(spec.trial_template), placeholder_values(spec, ident, params)
        )
        js_spec: dict[str, Any] = tpl.get("spec") or {}
        templates = []
        for rj in js_spec.get("replicatedJobs") or []:
            job_spec = rj.setdefault("template", {}).setdefault("spec", {})
            trial_job_spec(job_spec, spec, ident, params, metrics_port, restricted)
            templates.append(job_spec["template"])
        js_labels, suspend = workload_labels(spec, ident, templates)
        if suspend:
            js_spec["suspend"] = True
        return owned(JOBSET_API, "JobSet", ident, js_labels, owner, js_spec)

    def observe(self, obj: dict[str, Any]) -> JobObservation:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        failed = _condition(status, "Failed")
        return JobObservation(
            exists=True,
            backoff_limit=UNBOUNDED,
            failed_reason=f"JobSet{failed.get('reason') or 'Failed'}" if failed else None,
            failed_message=failed.get("message") if failed else None,
            suspended=bool(spec.get("suspend")),
            multi_pod=True,
        )

    def group_uid(self, labels: dict[str, str]) -> str | None:
        return labels.get(JOBSET_UID)

    def leader(self, labels: dict[str, str]) -> bool:
        """Rank 0: the first pod (completion index 0) of the JobSet's first Job."""
        return is_leader(labels)


JOB = JobKind()
JOBSET = JobSetKind()
KINDS: dict[str, JobKind] = {"Job": JOB, "JobSet": JOBSET}


def kind_of(tpl: dict[str, Any]) -> JobKind:
    """The adapter of a trialTemplate (spec.parse has refused kinds it does not know)."""
    return KINDS.get(str(tpl.get("kind") or "Job"), JOB)


def by_kind(obj: dict[str, Any]) -> JobKind:
    """The adapter of a trial's workload object as the API returns it."""
    return KINDS.get(str(obj.get("kind") or "Job"), JOB)


def dry_run_pods(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods its controllers would create, for a server-side dry run (Pod Security)."""
    adapter = by_kind(workload)
    meta = workload["metadata"]
    tpl = workload["spec"] if adapter is JOB else {"kind": "JobSet", "spec": workload["spec"]}
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-validate-{i}",
                "namespace": meta["namespace"],
                "labels": dict((t.template.get("metadata") or {}).get("labels") or {}),
            },
            "spec": t.template.get("spec") or {},
        }
        for i, t in enumerate(pod_templates(tpl))
    ]
