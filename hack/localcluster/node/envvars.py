"""Container environment as the kubelet builds it: envFrom, env, valueFrom, $(VAR)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")

# (kind "configMap" | "secret", name) -> the object's data (secrets decoded), None if absent.
Lookup = Callable[[str, str], Mapping[str, str] | None]


class EnvError(ValueError):
    """A reference the kubelet would refuse (CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay verbatim."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """Resolve a downward-API fieldRef path against the pod object."""
    meta = pod["metadata"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
        "status.podIP": pod.get("status", {}).get("podIP"),
        "status.hostIP": pod.get("status", {}).get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise EnvError(f"unsupported fieldRef {path!r}")


def _resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, name = str(ref["resource"]).partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    return str(value) if value is not None else "0"


def build_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    base: Mapping[str, str],
    lookup: Lookup,
) -> dict[str, str]:
    """The container's environment, in the kubelet's order: base, envFrom, env."""
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for ref_kind, kind in (("configMapRef", "configMap"), ("secretRef", "secret")):
            ref = source.get(ref_kind)
            if ref is not None:
                data = _data(lookup, kind, ref["name"], bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var and var["value"] is not None:
            env[name] = expand(str(var["value"]), env)
            continue
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = _resource_value(container, source["resourceFieldRef"])
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            ref_kind, kind = (
                ("configMapKeyRef", "configMap")
                if "configMapKeyRef" in source
                else ("secretKeyRef", "secret")
            )
            ref = source[ref_kind]
            data = _data(lookup, kind, ref["name"], bool(ref.get("optional")))
            if ref["key"] in data:
                env[name] = data[ref["key"]]
            elif not ref.get("optional"):
                raise EnvError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
        else:
            env[name] = ""
    return env


def _data(lookup: Lookup, kind: str, name: str, optional: bool) -> Mapping[str, str]:
    data = lookup(kind, name)
    if data is None:
        if optional:
            return {}
        raise EnvError(f'{kind} "{name}" not found')
    return data
