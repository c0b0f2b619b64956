"""kubetune's API group and the labels it reads and writes: plain constants.

Kept apart from render.py (which imports Optuna through space.py) so that the light
kubetune.client and kubetune.results use the very same names and rules.
"""

from __future__ import annotations

GROUP = "kubetune.dev"
VERSION = "v1alpha1"
LABEL_STUDY = f"{GROUP}/study"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_NUMBER = f"{GROUP}/trial-number"
LABEL_SCRAPE = f"{GROUP}/scrape"

# Labels the JobSet and Job controllers put on pods: which of a JobSet's Jobs, which pod.
JOBSET_GLOBAL_INDEX = "jobset.sigs.k8s.io/job-global-index"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def is_leader(labels: dict[str, str]) -> bool:
    """Rank 0, the pod that reports a trial's metrics: the first pod (completion index 0)
    of a JobSet's first Job; a plain Job's single pod, which has neither label."""
    return labels.get(JOBSET_GLOBAL_INDEX, "0") == "0" and labels.get(COMPLETION_INDEX, "0") in (
        "",
        "0",
    )
