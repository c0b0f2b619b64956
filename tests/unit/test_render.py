"""Job rendering: placeholders as data, the trial environment, ownership, labels."""

from __future__ import annotations

import json

from kubetune.render import (
    Owner,
    TrialIdentity,
    render_job,
    render_trial,
    restrict,
)
from kubetune.spec import parse
from kubetune.workloads import JOB

SPEC = parse(
    {
        "objective": {"metric": "val_accuracy"},
        "parameters": [
            {"name": "optimizer", "categorical": {"choices": ["sgd", "adam"]}},
            {"name": "lr", "float": {"low": 1e-5, "high": 0.1, "log": True}},
            {
                "name": "momentum",
                "float": {"low": 0.0, "high": 0.99},
                "when": {"parameter": "optimizer", "in": ["sgd"]},
            },
            {"name": "nesterov", "categorical": {"choices": [True, False]}},
        ],
        "budget": {"maxTrials": 4},
        "trialTemplate": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "img",
                            "args": [
                                "--lr=${params.lr}",
                                "--momentum=${params.momentum}",
                                "--nesterov=${params.nesterov}",
                                "--out=/ckpt/${study.name}/${trial.name}/${trial.number}",
                            ],
                            "env": [{"name": "KUBETUNE_METRICS_PORT", "value": "8000"}],
                            "resources": {"limits": {"nvidia.com/gpu": "2"}},
                        }
                    ]
                }
            }
        },
    }
)
IDENT = TrialIdentity(namespace="team-a", study="mlp", number=3, seed=42)
OWNER = Owner(kind="Trial", name="mlp-3", uid="uid-3")


def test_placeholders_substituted_as_data() -> None:
    params = {"optimizer": "adam", "lr": 1e-05, "nesterov": True}
    job = render_job(SPEC, IDENT, params, OWNER)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--lr=1e-05", "--momentum=", "--nesterov=true", "--out=/ckpt/mlp/mlp-3/3"]


def test_hostile_values_stay_one_argument() -> None:
    spec = parse(
        {
            "objective": {"metric": "m"},
            "parameters": [{"name": "tag", "categorical": {"choices": ["a; rm -rf / $(id)"]}}],
            "budget": {"maxTrials": 1},
            "trialTemplate": {
                "template": {
                    "spec": {
                        "containers": [{"name": "c", "image": "i", "args": ["--tag=${params.tag}"]}]
                    }
                }
            },
        }
    )
    job = render_job(spec, IDENT, {"tag": "a; rm -rf / $(id)"}, OWNER)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["--tag=a; rm -rf / $(id)"]


def test_identity_labels_owner_and_environment() -> None:
    params = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False}
    job = render_job(SPEC, IDENT, params, OWNER, metrics_port=9090)
    assert job["metadata"]["name"] == "mlp-3"
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubetune.dev/v1alpha1",
            "kind": "Trial",
            "name": "mlp-3",
            "uid": "uid-3",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["kubetune.dev/trial"] == "mlp-3"
    assert pod["metadata"]["labels"]["kubetune.dev/study"] == "mlp"
    assert pod["metadata"]["labels"]["kubetune.dev/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert job["spec"]["backoffLimit"] == 0
    assert pod["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert json.loads(env["KUBETUNE_PARAMS"]["value"]) == params
    assert env["KUBETUNE_TRIAL_NAME"]["value"] == "mlp-3"
    assert env["KUBETUNE_TRIAL_SEED"]["value"] == "42"
    assert env["KUBETUNE_METRICS_ADDR"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # The user's own setting wins over the injected one.
    assert env["KUBETUNE_METRICS_PORT"]["value"] == "8000"
    names = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    assert names.count("KUBETUNE_METRICS_PORT") == 1


def test_template_is_not_mutated_and_gpus_are_counted() -> None:
    before = json.dumps(SPEC.trial_template, sort_keys=True)
    render_job(SPEC, IDENT, {"optimizer": "adam", "lr": 0.1, "nesterov": True}, OWNER)
    assert json.dumps(SPEC.trial_template, sort_keys=True) == before
    assert JOB.gpus(SPEC.trial_template) == 2


def test_trial_object() -> None:
    trial = render_trial(IDENT, {"lr": 0.1}, Owner(kind="Study", name="mlp", uid="s"))
    assert trial["metadata"]["name"] == "mlp-3"
    assert trial["spec"] == {
        "study": "mlp",
        "number": 3,
        "params": {"lr": 0.1},
        "seed": 42,
        "source": "sampler",
    }


def test_restricted_defaults_fill_gaps_and_never_override() -> None:
    pod = {
        "containers": [
            {"name": "a"},
            {"name": "b", "securityContext": {"privileged": True}},
            {
                "name": "c",
                "securityContext": {
                    "capabilities": {"add": ["NET_RAW"]},
                    "allowPrivilegeEscalation": True,
                },
            },
        ],
        "securityContext": {"runAsNonRoot": False},
    }
    restrict(pod)
    assert pod["automountServiceAccountToken"] is False, "no API token in trial pods"
    wants_token = {"automountServiceAccountToken": True, "containers": []}
    restrict(wants_token)
    assert wants_token["automountServiceAccountToken"] is True, "the template's choice stays"
    assert pod["securityContext"] == {
        "runAsNonRoot": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    a, b, c = (x["securityContext"] for x in pod["containers"])
    assert a == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert b == {"privileged": True, "capabilities": {"drop": ["ALL"]}}
    assert c == {"capabilities": {"add": ["NET_RAW"]}, "allowPrivilegeEscalation": True}


def test_jobs_are_restricted_unless_switched_off() -> None:
    params = {"optimizer": "adam", "lr": 0.1, "nesterov": True}
    on = render_job(SPEC, IDENT, params, OWNER)["spec"]["template"]["spec"]
    off = render_job(SPEC, IDENT, params, OWNER, restricted=False)["spec"]["template"]["spec"]
    assert on["securityContext"]["runAsNonRoot"] is True
    assert "securityContext" not in off


def test_a_queued_studys_jobs_are_created_suspended_with_kueues_queue_label() -> None:
    queued = SPEC.model_copy(update={"queue_name": "team-a-gpus"})
    params = {"optimizer": "adam", "lr": 0.01, "nesterov": True}
    job = render_job(queued, IDENT, params, OWNER)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpus"
    assert job["spec"]["suspend"] is True, "no pod may start before Kueue admits the Job"
    plain = render_job(SPEC, IDENT, params, OWNER)
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    assert "suspend" not in plain["spec"]


def test_disrupted_pods_do_not_use_up_the_jobs_retries_and_priority_reaches_kueue() -> None:
    params = {"optimizer": "adam", "lr": 0.01, "nesterov": True}
    rules = render_job(SPEC, IDENT, params, OWNER)["spec"]["podFailurePolicy"]["rules"]
    assert rules == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    template = json.loads(json.dumps(SPEC.trial_template))
    template["template"]["metadata"] = {"labels": {"kueue.x-k8s.io/priority-class": "low"}}
    queued = SPEC.model_copy(update={"queue_name": "q", "trial_template": template})
    job = render_job(queued, IDENT, params, OWNER)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "low"
