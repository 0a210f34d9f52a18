"""The Kustomize install in deploy/kubernetes: every overlay renders with ``kubectl kustomize`` and its core objects
pass Kubernetes' own schemas (offline, kubernetes-validate); the plain pod (overlays sqlite and postgres) is
shaped as the deployment needs — Envoy and the bridge in one pod over loopback, probes on /health/live and
/health/ready, resources on every container, SQLite on a claim with one replica or many replicas over the shared
store — and its Envoy's bootstrap is the one its init container renders from the pod's own settings, which this
runs and hands to ``envoy --mode validate``. Changing the upstream or the image is one line of one file."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import zygote
from tests.support.envoy import have_envoy, validate_config
from tests.support.kube import (
    KUSTOMIZE,
    ROOT,
    bridge_container,
    by_kind,
    have_kubectl,
    is_core,
    kubernetes_errors,
    one,
    overlay,
    settings,
)
from tools.docs.deploy_examples import OVERLAYS, PLATFORM_FILES, platform_rendering, rendered

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="no kubectl")
PLAIN = ("sqlite", "postgres")
NEW_UPSTREAM = "https://llm.internal.example:8443/openai/v1"


def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment", "responses-bridge")["spec"]["template"]["spec"]
    return spec


def containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod(objects)["containers"]}


def probe_url(probe: dict[str, Any]) -> str:
    if "httpGet" in probe:
        path: str = probe["httpGet"]["path"]
        return path
    [url] = [part.split("'")[1] for part in probe["exec"]["command"] if "urlopen(" in part]
    return url


def render_init_bootstrap(objects: list[dict[str, Any]], directory: Path) -> dict[str, Any]:
    """What the pod's init container writes for Envoy: its command run here, with the pod's settings as its only
    environment, its output path moved into ``directory``."""
    [init] = pod(objects)["initContainers"]
    assert init["command"] == ["responses-bridge", "envoy-config"] and init["image"] == bridge_container(objects)[
        "image"]
    args = list(init["args"])
    mount = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["envoy-config"]
    output = args.index("--output") + 1
    assert args[output].startswith(mount + "/")
    target = directory / "envoy.yaml"
    args[output] = str(target)
    environment = {"PATH": os.environ["PATH"], "HOME": str(directory), **settings(objects)}
    result = zygote.run([sys.executable, "-m", "responses_bridge", "envoy-config", *args], env=environment,
                        timeout=120)
    assert result.returncode == 0, result.stderr
    return {"path": target, "bootstrap": yaml.safe_load(target.read_text())}


def cluster_sockets(bootstrap: dict[str, Any]) -> dict[str, tuple[str, int]]:
    found = {}
    for cluster in bootstrap["static_resources"]["clusters"]:
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        found[cluster["name"]] = (address["socket_address"]["address"], address["socket_address"]["port_value"])
    return found


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_renders_and_passes_the_kubernetes_schemas(name: str, tmp_path: Path) -> None:
    objects = overlay(name)
    assert bridge_container(objects)["image"] == "ghcr.io/your-org/responses-bridge:0.1.0"
    assert kubernetes_errors([o for o in objects if is_core(o)], tmp_path) == ""


def test_every_overlay_is_listed() -> None:
    assert {p.name for p in (KUSTOMIZE / "overlays").iterdir()} == set(OVERLAYS)


def test_the_schema_check_is_live(tmp_path: Path) -> None:
    """A Deployment with a misspelt field fails it."""
    deployment = one(overlay("sqlite"), "Deployment")
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    assert "replica" in kubernetes_errors([deployment], tmp_path)


@pytest.mark.parametrize("name", PLAIN)
def test_one_pod_over_loopback_with_probes_and_resources(name: str, tmp_path: Path) -> None:
    objects = overlay(name)
    found = containers(objects)
    assert set(found) == {"envoy", "responses-bridge"}
    envoy, bridge = found["envoy"], found["responses-bridge"]
    # only Envoy's port leaves the pod; the bridge's doors are on loopback, where Envoy's bootstrap finds them
    assert [p["containerPort"] for p in envoy["ports"]] == [8080] and "ports" not in bridge
    assert [p["targetPort"] for p in one(objects, "Service")["spec"]["ports"]] == ["http"]
    # the image's entry point stays (tini as PID 1, reaping what each code interpreter call hands it)
    assert "command" not in bridge and "shareProcessNamespace" not in pod(objects)
    env = settings(objects)
    assert env["RESPONSES_BRIDGE_HTTP_HOST"] == env["RESPONSES_BRIDGE_EXTPROC_HOST"] == "127.0.0.1"
    assert env["RESPONSES_BRIDGE_UPSTREAM_VIA"] == "http://127.0.0.1:8080/v1"  # back through Envoy
    bootstrap = render_init_bootstrap(objects, tmp_path)["bootstrap"]
    sockets = cluster_sockets(bootstrap)
    assert sockets["responses_bridge_extproc"] == ("127.0.0.1", int(env["RESPONSES_BRIDGE_EXTPROC_PORT"]))
    assert sockets["responses_bridge_http"] == ("127.0.0.1", int(env["RESPONSES_BRIDGE_HTTP_PORT"]))
    assert sockets["llm_upstream"] == ("vllm.llm.svc.cluster.local", 8000)
    listener = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert (listener["address"], listener["port_value"]) == ("0.0.0.0", envoy["ports"][0]["containerPort"])
    # readiness on /health/ready (Envoy's is the bridge's, through Envoy), liveness on /health/live
    assert probe_url(envoy["readinessProbe"]) == "/health/ready"
    assert probe_url(bridge["readinessProbe"]).endswith(":8081/health/ready")
    assert probe_url(bridge["livenessProbe"]).endswith(":8081/health/live")
    assert probe_url(bridge["startupProbe"]).endswith(":8081/health/live")
    for container in [*found.values(), *pod(objects)["initContainers"]]:
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Envoy outlives the bridge's drain, and the pod's grace period covers both
    assert int(env["RESPONSES_BRIDGE_DRAIN_TIMEOUT"]) < envoy["lifecycle"]["preStop"]["sleep"]["seconds"] < pod(
        objects)["terminationGracePeriodSeconds"]
    assert pod(objects)["securityContext"]["runAsNonRoot"] is True


@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
@pytest.mark.parametrize("name", PLAIN)
def test_the_init_container_bootstrap_passes_envoy_validate(name: str, tmp_path: Path) -> None:
    result = validate_config(render_init_bootstrap(overlay(name), tmp_path)["path"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_bootstrap_is_kept_in_the_repository() -> None:
    """The plain pod's Envoy gets its bootstrap from the init container only: no copy to drift."""
    kept = [p for p in KUSTOMIZE.rglob("*.yaml") if "static_resources" in p.read_text()]
    assert kept == []


def test_single_replica_keeps_sqlite_on_a_claim() -> None:
    objects = overlay("sqlite")
    spec = one(objects, "Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # one SQLite writer at a time
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    claim = one(objects, "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": claim}}
    mounts = {m["name"]: m["mountPath"] for m in containers(objects)["responses-bridge"]["volumeMounts"]}
    assert mounts["data"] == "/data"  # the image's RESPONSES_BRIDGE_DB is /data/responses.sqlite


def test_shared_store_variant_scales_out_with_the_database_url_from_a_secret() -> None:
    objects = overlay("postgres")
    assert one(objects, "Deployment")["spec"]["replicas"] > 1
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    env = {e["name"]: e for e in containers(objects)["responses-bridge"]["env"]}
    secret = env["RESPONSES_BRIDGE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "responses-bridge-database" and not secret.get("optional")
    # a blob sealed by one replica must open on another: one key for all, from a Secret
    assert env["RESPONSES_BRIDGE_SEALING_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "responses-bridge-sealing"
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]  # scratch: nothing a pod keeps is needed by another


def _changed_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """deploy/kubernetes copied, with one line of the overlay's kustomization.yaml changed (and nothing else)."""
    root = tmp_path / "kubernetes"
    shutil.copytree(KUSTOMIZE, root)
    path = root / "overlays" / name / "kustomization.yaml"
    lines = path.read_text().split("\n")
    [index] = [i for i, line in enumerate(lines) if old in line]
    lines[index] = lines[index].replace(old, new)
    path.write_text("\n".join(lines))
    before = (KUSTOMIZE / "overlays" / name / "kustomization.yaml").read_text().split("\n")
    assert sum(a != b for a, b in zip(before, lines, strict=True)) == 1
    return root


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_image_is_one_line(name: str, tmp_path: Path) -> None:
    root = _changed_copy(tmp_path, name, 'newTag: "0.1.0"', 'newTag: "0.2.0"')
    objects = overlay(name, root)
    spec = pod(objects)
    images = {c["name"]: c["image"] for c in [*spec["containers"], *spec.get("initContainers", [])]}
    assert {n: i for n, i in images.items() if n != "envoy"} == dict.fromkeys(
        set(images) - {"envoy"}, "ghcr.io/your-org/responses-bridge:0.2.0")


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_upstream_is_one_line(name: str, tmp_path: Path) -> None:
    """The plain pod: the bridge and its Envoy's bootstrap both follow at once. A platform: the bridge follows, and
    the platform's objects once scripts/render-envoy-examples re-renders them from that line (this URL changes the
    scheme and the base path; a new host and port alone need no rendering: test_overlay_upstream.py)."""
    root = _changed_copy(tmp_path, name, "RESPONSES_BRIDGE_UPSTREAM=http://vllm.llm.svc.cluster.local:8000/v1",
                         f"RESPONSES_BRIDGE_UPSTREAM={NEW_UPSTREAM}")
    if name not in PLAIN:
        _render_in(root, name)
    objects = overlay(name, root)
    assert settings(objects)["RESPONSES_BRIDGE_UPSTREAM"] == NEW_UPSTREAM
    text = yaml.safe_dump_all(objects)
    assert "vllm.llm.svc.cluster.local" not in text and "llm.internal.example" in text
    if name in PLAIN:
        assert cluster_sockets(render_init_bootstrap(objects, tmp_path)["bootstrap"])["llm_upstream"] == (
            "llm.internal.example", 8443)


def _render_in(root: Path, name: str) -> None:
    """The platform overlay's files rendered again from the copy's settings (the copy stands where deploy/kubernetes
    stands), as scripts/render-envoy-examples does."""
    fake = root.parent / "tree"
    (fake / "deploy").mkdir(parents=True, exist_ok=True)
    link = fake / "deploy" / "kubernetes"
    if not link.exists():
        link.symlink_to(root)
    for path, text in rendered(fake).items():
        if path.parent == link / "overlays" / name:
            path.write_text(text)


def test_the_platform_files_are_current() -> None:
    for file in PLATFORM_FILES:
        assert (ROOT / file).read_text() == platform_rendering(ROOT, file), (
            f"{file} is stale: run scripts/render-envoy-examples")


PSA_ADMITS = {"privileged": {"Unconfined", "RuntimeDefault", "Localhost"}, "baseline": {"RuntimeDefault", "Localhost"},
              "restricted": {"RuntimeDefault", "Localhost"}}
"""Pod Security Admission: the seccomp and AppArmor profile types each level admits (restricted: as baseline)."""


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_makes_its_namespace_at_a_pod_security_level_admitting_its_pod(name: str) -> None:
    """A clean cluster has no namespace: the install makes the one its objects go into, labelled with the Pod
    Security level the bridge's pod needs (Unconfined seccomp and AppArmor: privileged), and every namespaced
    object is in it — but Istio's EnvoyFilters, in the root namespace where they reach the ingress gateway."""
    objects = overlay(name)
    [namespace] = by_kind(objects, "Namespace")
    level = namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    context = bridge_container(objects)["securityContext"]
    profiles = {context["seccompProfile"]["type"], context["appArmorProfile"]["type"]}
    assert profiles <= PSA_ADMITS[level], (level, profiles)
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        expected = "istio-system" if obj["kind"] == "EnvoyFilter" else namespace["metadata"]["name"]
        assert obj["metadata"].get("namespace") == expected, obj["metadata"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_is_strict_about_its_settings(name: str) -> None:
    assert settings(overlay(name))["RESPONSES_BRIDGE_STRICT_ENV"] == "true"


def test_the_envoy_gateway_overlay_states_the_extension_apis_it_needs() -> None:
    text = (KUSTOMIZE / "overlays" / "envoy-gateway" / "kustomization.yaml").read_text()
    assert "enableEnvoyPatchPolicy: true" in text and "enableBackend: true" in text
    kinds = {obj["kind"] for obj in overlay("envoy-gateway")}
    assert {"Backend", "EnvoyPatchPolicy"} <= kinds  # what those two switches serve
