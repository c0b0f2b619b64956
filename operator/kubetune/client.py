"""kubetune from Python: create a Study, wait for it, read its results, tune a function.

::

    from kubetune.client import Client, Float, Int, tune

    best = tune(objective, {"lr": Float(1e-4, 1e-1, log=True), "layers": Int(1, 4)},
                direction="minimize", max_trials=20, parallelism=4)

    kt = Client(namespace="team-a")              # kubeconfig, context and namespace as kubectl
    study = kt.create_study(body)                # a Study as a dict (the YAML you would apply),
    study = kt.create_study(study_manifest(...)) # or built from typed parameters
    study.wait()                                 # a progress bar until it ends
    study.best_params, study.trials_dataframe(), study.to_optuna()

This module imports nothing heavier than the Kubernetes client (Optuna, pandas and
tqdm are imported only by the methods that need them), so a notebook can use it
without the operator's dependencies.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s
from kubernetes import config as kubeconfig
from kubernetes.client.exceptions import ApiException

from kubetune.labels import GROUP, LABEL_STUDY, LABEL_TRIAL, VERSION, is_leader
from kubetune.results import StudyResult, format_value

if TYPE_CHECKING:
    import optuna
    import pandas

# The image `tune()` runs functions in: the reference trainer's, which carries the trial
# SDK, kubetune.function, PyTorch, NumPy and scikit-learn. (The local cluster's node runs
# it in the project's own environment.)
FUNCTION_IMAGE = "ghcr.io/kubetune/trainer:0.1.0"
FUNCTION_DIR = "/var/run/kubetune/function"
FUNCTION_FILE = "function.py"


class KubetuneError(Exception):
    """A problem the user can act on; its message says what to do."""


# -- the search space as typed objects -------------------------------------------------------


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def to_k8s(self) -> dict[str, Any]:
        body: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            body["log"] = True
        if self.step is not None:
            body["step"] = self.step
        return {"float": body}


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def to_k8s(self) -> dict[str, Any]:
        body: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            body["log"] = True
        if self.step != 1:
            body["step"] = self.step
        return {"int": body}


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...] | list[Any]

    def to_k8s(self) -> dict[str, Any]:
        return {"categorical": {"choices": list(self.choices)}}


Distribution = Float | Int | Categorical


def parameters(space: Mapping[str, Distribution | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`spec.parameters` from {name: Float(...) | Int(...) | Categorical(...) | CRD dict}."""
    out = []
    for name, dist in space.items():
        body = dist.to_k8s() if isinstance(dist, Float | Int | Categorical) else dict(dist)
        out.append({"name": name, **body})
    return out


# -- talking to the cluster --------------------------------------------------------------------


class Client:
    """The cluster as kubectl sees it: $KUBECONFIG (or `kubeconfig`), its current context
    (or `context`), that context's namespace (or `namespace`); in a pod, the pod's account."""

    def __init__(
        self,
        namespace: str | None = None,
        context: str | None = None,
        kubeconfig_path: str | None = None,
        api: k8s.ApiClient | None = None,
    ) -> None:
        self.api = api or _api_client(context, kubeconfig_path)
        self.namespace = namespace or _default_namespace(context, kubeconfig_path)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)

    # -- raw objects, with errors a user can act on

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=30, **kwargs)
        except ApiException as e:
            raise self._explain(what, e) from None
        except Exception as e:  # urllib3's connection errors: no cluster there
            if type(e).__module__.startswith(("urllib3", "socket", "ssl")) or isinstance(
                e, OSError
            ):
                host = self.api.configuration.host
                raise KubetuneError(
                    f"cannot reach the cluster at {host}: {_first_line(e)}; "
                    "is it running, and is KUBECONFIG (or --context) the one you mean?"
                ) from None
            raise

    def _explain(self, what: str, e: ApiException) -> KubetuneError:
        if e.status == 404 and not self._crds_installed():
            return KubetuneError(
                f"kubetune is not installed in this cluster: the API server does not know "
                f"{GROUP}'s Study and Trial resources (install the CRDs: `make install`, or "
                "`helm install kubetune charts/kubetune`)"
            )
        if e.status == 404:
            return KubetuneError(f"{what} not found in namespace {self.namespace!r}")
        if e.status in (401, 403):
            return KubetuneError(f"not allowed to read {what}: {_api_message(e)}")
        return KubetuneError(f"{what}: {e.status} {_api_message(e)}")

    def _crds_installed(self) -> bool:
        """Whether the API server serves Studies (a 404 alone cannot tell "no such
        Study" from "no such resource": the body differs between API server versions)."""
        try:
            found = self.custom.get_api_resources(GROUP, VERSION, _request_timeout=10)
        except ApiException as e:
            return bool(e.status != 404)
        return bool(any(r.name == "studies" for r in found.resources or []))

    def _get(self, kind: str, plural: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self._call(
            f"{kind} {name!r}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
        )
        return obj

    def study_object(self, name: str) -> dict[str, Any]:
        return self._get("study", "studies", name)

    def trial_objects(self, study: str) -> list[dict[str, Any]]:
        found = self._call(
            f"trials of study {study!r}",
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "trials",
            label_selector=f"{LABEL_STUDY}={study}",
        )
        return list(found.get("items") or [])

    def trial_object(self, name: str) -> dict[str, Any]:
        return self._get("trial", "trials", name)

    def results(self, name: str) -> StudyResult:
        """The Study `name` and all its trials, as they are now."""
        return StudyResult.from_k8s(self.study_object(name), self.trial_objects(name))

    def studies(self, all_namespaces: bool = False) -> list[StudyResult]:
        """Every Study (without its trials: status.bestTrial and counts say enough)."""
        if all_namespaces:
            found = self._call(
                "studies", self.custom.list_cluster_custom_object, GROUP, VERSION, "studies"
            )
        else:
            found = self._call(
                "studies",
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                "studies",
            )
        items = sorted(
            found.get("items") or [],
            key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"]),
        )
        return [StudyResult.from_k8s(s, []) for s in items]

    def study(self, name: str) -> Study:
        """A handle on an existing Study."""
        self.study_object(name)  # fail now, clearly, if it is not there
        return Study(self, name)

    def create_study(self, body: Mapping[str, Any]) -> Study:
        """Create a Study from its manifest (a dict shaped like the YAML you would apply)."""
        manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Study", **body}
        manifest["metadata"] = {"namespace": self.namespace, **dict(body.get("metadata") or {})}
        name = manifest["metadata"].get("name") or "(generateName)"
        created = self._call(
            f"study {name!r}",
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            manifest["metadata"]["namespace"],
            "studies",
            manifest,
        )
        return Study(self, created["metadata"]["name"], created)

    def trial_pods(self, trial: str) -> list[Any]:
        pods = self._call(
            f"pods of trial {trial!r}",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"{LABEL_TRIAL}={trial}",
        )
        return sorted(pods.items, key=_leader_first)

    def logs(self, pod: str, container: str | None = None, follow: bool = False) -> Iterator[str]:
        """The container's output, line by line (following it while it runs if `follow`)."""
        kwargs: dict[str, Any] = {"follow": follow, "_preload_content": False}
        if container:
            kwargs["container"] = container
        try:
            resp = self.core.read_namespaced_pod_log(pod, self.namespace, **kwargs)
        except ApiException as e:
            raise self._explain(f"pod {pod!r}", e) from None
        try:
            for line in resp.stream(decode_content=True):
                yield line.decode(errors="replace")
        finally:
            resp.release_conn()


def _leader_first(pod: Any) -> tuple[bool, str]:
    """Rank 0 (the pod that reports a multi-pod trial's metrics) first, then by name."""
    return (not is_leader(pod.metadata.labels or {}), pod.metadata.name)


def _api_client(context: str | None, path: str | None) -> k8s.ApiClient:
    try:
        return kubeconfig.new_client_from_config(config_file=path, context=context)
    except kubeconfig.ConfigException as outside:
        if context is None and path is None:
            try:
                kubeconfig.load_incluster_config()
                return k8s.ApiClient()
            except kubeconfig.ConfigException:
                pass
        raise KubetuneError(
            f"no cluster to talk to: {outside} (set KUBECONFIG, pass --kubeconfig or "
            "--context, or run inside a pod)"
        ) from None


def _default_namespace(context: str | None, path: str | None) -> str:
    try:
        contexts, current = kubeconfig.list_kube_config_contexts(config_file=path)
    except (kubeconfig.ConfigException, OSError):
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                return f.read().strip() or "default"
        except OSError:
            return "default"
    chosen = next((c for c in contexts if c["name"] == context), current) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _api_message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason)
    except ValueError:
        return str(e.reason)


# -- a Study from Python -----------------------------------------------------------------------


class Study:
    """A Study in the cluster: its results as they are now, and a way to wait for the end."""

    def __init__(self, client: Client, name: str, obj: dict[str, Any] | None = None) -> None:
        self.client, self.name = client, name
        self._result = StudyResult.from_k8s(obj, []) if obj else None
        self._uid = str(obj["metadata"]["uid"]) if obj else ""

    @property
    def uid(self) -> str:
        if not self._uid:
            self._uid = str(self.client.study_object(self.name)["metadata"]["uid"])
        return self._uid

    def __repr__(self) -> str:
        return f"<Study {self.client.namespace}/{self.name}>"

    def refresh(self) -> StudyResult:
        self._result = self.client.results(self.name)
        return self._result

    @property
    def result(self) -> StudyResult:
        return self._result if self._result is not None else self.refresh()

    @property
    def phase(self) -> str:
        return self.refresh().phase

    def wait(
        self, timeout: float | None = None, progress: bool = True, interval: float = 2.0
    ) -> StudyResult:
        """Until the Study has Succeeded or Failed (a tqdm progress bar when `progress`).

        Raises TimeoutError after `timeout` seconds; a Failed Study is returned, not
        raised: its `message` says why.
        """
        bar = _ProgressBar(self.name) if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                # The Study's status alone (counts, best): listing every Trial on each
                # poll would cost the API server O(trials) per second for a progress bar.
                result = StudyResult.from_k8s(self.client.study_object(self.name), [])
                if bar is not None:
                    bar.show(result)
                if result.finished:
                    return self.refresh()
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"study {self.name!r} is still {result.phase} after {timeout:.0f} s"
                    )
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.close()

    @property
    def best_params(self) -> dict[str, Any]:
        best = self.refresh().best
        if best is None:
            raise KubetuneError(f"study {self.name!r} has no completed trial yet")
        return dict(best.params)

    @property
    def best_value(self) -> float | None:
        best = self.refresh().best
        return best.value if best is not None else None

    def trials_dataframe(self) -> pandas.DataFrame:
        """One row per trial (needs pandas: pip install 'kubetune[dataframe]')."""
        try:
            import pandas as pd  # noqa: PLC0415 - an optional extra
        except ImportError:
            raise KubetuneError(
                "trials_dataframe needs pandas: pip install 'kubetune[dataframe]'"
            ) from None
        rows = []
        for t in self.refresh().trials:
            row: dict[str, Any] = {
                "number": t.number,
                "name": t.name,
                "phase": t.phase,
                "reason": t.reason,
                "source": t.source,
                "value": t.value,
                "gpu_seconds": t.status.gpu_seconds,
                "start": t.status.start_time,
                "complete": t.status.completion_time,
            }
            row.update({f"params_{k}": v for k, v in t.params.items()})
            row.update({f"metrics_{k}": v for k, v in t.status.metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_optuna(self, storage: str | None = None) -> optuna.Study:
        """The Study as an Optuna study (in memory, or written to `storage`)."""
        from kubetune.export import to_optuna  # noqa: PLC0415 - Optuna only when asked

        return to_optuna(self.refresh(), storage)

    def delete(self) -> None:
        self.client._call(
            f"study {self.name!r}",
            self.client.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.client.namespace,
            "studies",
            self.name,
        )


class _ProgressBar:
    """Trials finished out of the budget, with the phase and the best value so far."""

    def __init__(self, name: str) -> None:
        from tqdm.auto import tqdm  # noqa: PLC0415 - not for a client that never waits

        self.bar = tqdm(desc=name, unit="trial", file=sys.stderr, dynamic_ncols=True)

    def show(self, result: StudyResult) -> None:
        """From the Study's status: its trial counts and best trial."""
        counts = result.status.get("trials") or {}
        # status.progress is "finished/maxTrials" (seed repeats of the best not counted).
        done, _, most = str(result.status.get("progress") or "0/").partition("/")
        if most.isdigit() and self.bar.total != int(most):
            self.bar.total = int(most)
        self.bar.n = int(done) if done.isdigit() else 0
        best = (result.status.get("bestTrial") or {}).get("value")
        running = int(counts.get("running") or 0)
        self.bar.set_postfix_str(
            f"{result.phase}, {running} running, best {format_value(best)}", refresh=False
        )
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def study_manifest(
    name: str,
    space: Mapping[str, Distribution | Mapping[str, Any]],
    trial_template: Mapping[str, Any],
    *,
    metric: str,
    direction: str = "minimize",
    max_trials: int = 20,
    parallelism: int = 4,
    sampler: str | Mapping[str, Any] = "tpe",
    pruner: str | Mapping[str, Any] | None = None,
    max_failed_trials: int | None = None,
) -> dict[str, Any]:
    """A Study from typed pieces, for Client.create_study::

        study_manifest("mlp", {"lr": Float(1e-4, 0.1, log=True), "layers": Int(1, 4)},
                       {"template": {"spec": {...}}}, metric="val_loss")

    `trial_template` is the Study's spec.trialTemplate (a JobSpec, or a JobSet's with
    kind JobSet); ${params.NAME} in it is filled per trial. Everything else is the
    CRD's own shape (`kubectl explain study.spec`); the API server validates it.
    """
    budget: dict[str, Any] = {"maxTrials": max_trials, "parallelism": parallelism}
    if max_failed_trials is not None:
        budget["maxFailedTrials"] = max_failed_trials
    spec: dict[str, Any] = {
        "objective": {"metric": metric, "direction": direction},
        "parameters": parameters(space),
        "sampler": {"name": sampler} if isinstance(sampler, str) else dict(sampler),
        "budget": budget,
        "trialTemplate": dict(trial_template),
    }
    if pruner is not None:
        spec["pruner"] = {"name": pruner} if isinstance(pruner, str) else dict(pruner)
    return {"metadata": {"name": name}, "spec": spec}


# -- tuning a plain function ---------------------------------------------------------------------


def function_source(fn: Callable[..., Any]) -> str:
    """The function's source, as the trial pod will run it.

    Only the function travels (not the notebook around it): it must import what it
    uses inside its body, and may call kubetune.trial.report for intermediate values.
    """
    if getattr(fn, "__name__", "") == "<lambda>":
        raise KubetuneError("tune() needs a function defined with def, not a lambda")
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise KubetuneError(
            f"tune() cannot read the source of {fn!r} ({e}); define it in a file or a notebook cell"
        ) from None
    if inspect.getclosurevars(fn).nonlocals:
        raise KubetuneError(
            f"{fn.__name__} uses variables of an enclosing function "
            f"({', '.join(inspect.getclosurevars(fn).nonlocals)}); only its own source travels "
            "to the trial pods, so pass them as parameters instead"
        )
    # Decorators would run in the pod without their definitions.
    return re.sub(r"\A(\s*@.*\n)+", "", source)


def _name(fn: Callable[..., Any]) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", fn.__name__.lower().replace("_", "-")).strip("-")
    return f"tune-{base[:30] or 'fn'}-{int(time.time()) % 100_000:05d}"


def function_study(
    fn: Callable[..., Any],
    space: Mapping[str, Distribution | Mapping[str, Any]],
    *,
    name: str,
    metric: str = "value",
    image: str = FUNCTION_IMAGE,
    resources: Mapping[str, Any] | None = None,
    **study: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ConfigMap with `fn`'s source and the Study that runs it: (config map, study).

    `study` holds study_manifest's keywords (direction, max_trials, sampler...)."""
    source = function_source(fn)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-function", "labels": {LABEL_STUDY: name}},
        "data": {FUNCTION_FILE: source},
    }
    container = {
        "name": "function",
        "image": image,
        # No shell: the parameters reach the function as JSON in KUBETUNE_PARAMS,
        # never through a command line.
        "command": [
            "python",
            "-m",
            "kubetune.function",
            f"{FUNCTION_DIR}/{FUNCTION_FILE}",
            fn.__name__,
            f"--metric={metric}",
        ],
        "resources": dict(resources or {"limits": {"cpu": "1", "memory": "1Gi"}}),
        "volumeMounts": [{"name": "function", "mountPath": FUNCTION_DIR, "readOnly": True}],
    }
    template = {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": [{"name": "function", "configMap": {"name": f"{name}-function"}}],
            }
        },
    }
    return config_map, study_manifest(name, space, template, metric=metric, **study)


def tune(
    fn: Callable[..., Any],
    space: Mapping[str, Distribution | Mapping[str, Any]],
    *,
    metric: str = "value",
    direction: str = "minimize",
    max_trials: int = 20,
    parallelism: int = 4,
    sampler: str | Mapping[str, Any] = "tpe",
    pruner: str | Mapping[str, Any] | None = None,
    name: str | None = None,
    namespace: str | None = None,
    image: str = FUNCTION_IMAGE,
    resources: Mapping[str, Any] | None = None,
    max_failed_trials: int | None = None,
    wait: bool = True,
    timeout: float | None = None,
    progress: bool = True,
    client: Client | None = None,
) -> dict[str, Any] | Study:
    """Tune `fn` on the cluster: each trial calls it with one set of parameters.

    `fn` is called with the parameters as keyword arguments (or, if it takes a single
    argument that is not a parameter name, as one dict). Its return value is the
    objective `metric` (a number), or a dict of metrics that includes `metric`; it may
    also call ``kubetune.trial.report(step, **metrics)`` for intermediate values that
    pruners use. Returns the best parameters (or, with ``wait=False``, the Study).
    """
    kt = client or Client(namespace=namespace)
    study_name = name or _name(fn)
    config_map, body = function_study(
        fn,
        space,
        name=study_name,
        metric=metric,
        direction=direction,
        max_trials=max_trials,
        parallelism=parallelism,
        sampler=sampler,
        pruner=pruner,
        image=image,
        resources=resources,
        max_failed_trials=max_failed_trials,
    )
    # The source first: a trial pod must never start before its ConfigMap exists.
    kt._call(
        f"config map {study_name}-function",
        kt.core.create_namespaced_config_map,
        kt.namespace,
        config_map,
    )
    try:
        study = kt.create_study(body)
    except KubetuneError:
        # Nothing would own it: take the source back rather than leave it behind.
        with contextlib.suppress(ApiException):
            kt.core.delete_namespaced_config_map(f"{study_name}-function", kt.namespace)
        raise
    # Owned by the Study: deleting the Study deletes the function's source too.
    kt._call(
        f"config map {study_name}-function",
        kt.core.patch_namespaced_config_map,
        f"{study_name}-function",
        kt.namespace,
        {"metadata": {"ownerReferences": [_owner(study.name, study.uid)]}},
    )
    if not wait:
        return study
    result = study.wait(timeout=timeout, progress=progress)
    if result.phase != "Succeeded":
        raise KubetuneError(f"study {study.name!r} {result.phase}: {result.message}")
    return study.best_params


def _owner(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Study",
        "name": name,
        "uid": uid,
        "controller": False,
        "blockOwnerDeletion": False,
    }
