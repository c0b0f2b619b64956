"""Materialise a pod's volumes as directories the container's mounts bind to."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from localcluster.node.envvars import EnvError, field_value

Lookup = Callable[[str, str], Mapping[str, str] | None]
TokenRequest = Callable[[str, str | None, int], str]  # (service account, audience, seconds)


class VolumeError(EnvError):
    """A volume the local node cannot provide (yet): the container waits, as on a kubelet."""


def _write(root: Path, rel: str, content: str | bytes, mode: int | None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode if mode is not None else 0o644)


def _project_keys(
    root: Path, data: Mapping[str, str], source: Mapping[str, Any], default_mode: int | None
) -> None:
    items = source.get("items")
    if items:
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise VolumeError(f"key {item['key']} not found in {source.get('name')}")
            _write(root, item["path"], data[item["key"]], item.get("mode", default_mode))
    else:
        for key, value in data.items():
            _write(root, key, value, default_mode)


def _object_data(lookup: Lookup, kind: str, source: Mapping[str, Any]) -> Mapping[str, str]:
    name = source.get("name") or source.get("secretName") or ""
    data = lookup(kind, name)
    if data is None:
        if source.get("optional"):
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    return data


def _downward(root: Path, pod: Mapping[str, Any], items: list[Mapping[str, Any]]) -> None:
    for item in items:
        if "fieldRef" in item:
            _write(
                root,
                item["path"],
                field_value(pod, item["fieldRef"]["fieldPath"]),
                item.get("mode"),
            )


def materialise(
    pod: Mapping[str, Any],
    volumes_dir: Path,
    lookup: Lookup,
    token_request: TokenRequest,
) -> dict[str, Path]:
    """Create each volume's content; returns volume name -> host directory."""
    out: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes") or []:
        name = vol["name"]
        root = volumes_dir / name
        if "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in ("DirectoryOrCreate",):
                path.mkdir(parents=True, exist_ok=True)
            out[name] = path
            continue
        root.mkdir(parents=True, exist_ok=True)
        out[name] = root
        if "emptyDir" in vol:
            continue
        if "configMap" in vol:
            src = vol["configMap"]
            _project_keys(root, _object_data(lookup, "configMap", src), src, src.get("defaultMode"))
        elif "secret" in vol:
            src = vol["secret"]
            _project_keys(root, _object_data(lookup, "secret", src), src, src.get("defaultMode"))
        elif "downwardAPI" in vol:
            _downward(root, pod, vol["downwardAPI"].get("items") or [])
        elif "projected" in vol:
            mode = vol["projected"].get("defaultMode")
            for source in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    token = token_request(
                        pod["spec"].get("serviceAccountName") or "default",
                        sat.get("audience"),
                        int(sat.get("expirationSeconds") or 3600),
                    )
                    _write(root, sat["path"], token, 0o600 if mode is None else mode)
                elif "configMap" in source:
                    src = source["configMap"]
                    _project_keys(root, _object_data(lookup, "configMap", src), src, mode)
                elif "secret" in source:
                    src = source["secret"]
                    _project_keys(root, _object_data(lookup, "secret", src), src, mode)
                elif "downwardAPI" in source:
                    _downward(root, pod, source["downwardAPI"].get("items") or [])
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise VolumeError(f"volume {name!r}: type {kinds} is not supported by the local node")
    return out


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (data or {}).items()}
