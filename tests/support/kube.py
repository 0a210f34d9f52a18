"""The Kubernetes overlays as a cluster would get them, checked offline: ``kubectl kustomize`` renders an overlay;
core objects go through Kubernetes' own schemas (kubernetes-validate, which ships them), custom resources through
the openAPIV3Schema of their CRD as vendored in tests/deploy/crds/ (README.md there names each release).

A CRD schema lets unknown fields through (the API server prunes them); ``kubectl apply --validate=strict`` refuses
them, and so does :func:`crd_errors`: every object schema that lists its properties and neither allows more nor
keeps unknown fields is closed, so a misspelt field fails here as it would there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tools import fast_yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
CRDS = ROOT / "tests" / "deploy" / "crds"
CORE_GROUPS = ("v1", "apps/v1", "policy/v1")
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret", "name", "image"}


def have_kubectl() -> bool:
    return shutil.which("kubectl") is not None


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY``'s objects; a failure to render fails the caller with kubectl's words."""
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in fast_yaml.load_all(result.stdout) if doc]


def overlay(name: str, root: Path = KUSTOMIZE) -> list[dict[str, Any]]:
    return kustomize(root / "overlays" / name)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    return found


def is_core(obj: dict[str, Any]) -> bool:
    return obj["apiVersion"] in CORE_GROUPS


def kubernetes_errors(objects: list[dict[str, Any]], directory: Path) -> str:
    """kubernetes-validate's complaints about ``objects`` (core kinds), strict: '' when they pass."""
    path = directory / "core.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--no-warn", str(path)],
                            capture_output=True, text=True, timeout=120, check=False)
    return "" if result.returncode == 0 else result.stdout + result.stderr


def _closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: (({name: _closed(sub) for name, sub in value.items()}) if key == "properties"
                    else _closed(value)) for key, value in schema.items()}
    if ("properties" in closed and "additionalProperties" not in closed
            and not closed.get("x-kubernetes-preserve-unknown-fields")):
        closed["additionalProperties"] = False
    return closed


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the vendored CRD's schema for it, closed against unknown fields."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in fast_yaml.load_all(path.read_text()):
            if not crd:
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _closed(version["schema"]["openAPIV3Schema"])
                # apiVersion, kind and metadata are the API server's: any object has them
                schema["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                             "metadata": {"type": "object"}})
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """What the CRD schema of ``obj``'s kind finds wrong in it; an object of a kind with no vendored CRD is an
    error itself (nothing passes unchecked)."""
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        return [f"no vendored CRD for {obj['apiVersion']} {obj['kind']}"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(json.loads(json.dumps(obj)))]


def bridge_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment", "responses-bridge")["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "responses-bridge"]
    return container


def settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The settings ConfigMap's data: the environment the bridge (and an init container rendering its Envoy's
    bootstrap) starts with."""
    [config_map] = [o for o in by_kind(objects, "ConfigMap")
                    if o["metadata"]["name"].startswith("responses-bridge-settings")]
    data: dict[str, str] = config_map["data"]
    return data


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What Pod Security Admission's ``restricted`` profile (latest) refuses in a pod spec."""
    found = []
    pod_context = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    for volume in pod.get("volumes") or []:
        if set(volume) - RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(set(volume) - RESTRICTED_VOLUMES)}")
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        context = container.get("securityContext") or {}
        where = container["name"]
        if context.get("privileged"):
            found.append(f"{where}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{where}: capabilities not dropped")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities added")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{where}: runAsNonRoot not set")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccomp {seccomp}")
        apparmor = (context.get("appArmorProfile") or pod_context.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{where}: AppArmor {apparmor}")
    return found
