"""The session desktops on the agent-sandbox backend, checked offline: the component
(deploy/kubernetes/components/agent-sandbox-desktop) added to the agent-sandbox overlay as the overlay's
kustomization.yaml says (its one commented line uncommented) renders; its SandboxTemplate and SandboxWarmPool pass
the vendored CRDs' schemas and CEL rules; the desktop pod runs the desktop image under gVisor at Pod Security
``restricted`` (non-root, a read-only root, no token) with the sandbox pods' labels (the overlay's NetworkPolicy is
its network), the bubblewrap desktop's memory bound and a disk-backed /tmp; the settings name its warm pool; and the
desktop image's Dockerfile (deploy/desktop-image) builds on the sandbox image the overlay runs, installs what the
desktop looks for, and keeps the sandbox's user and entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from responses_bridge.config.settings import Settings
from responses_bridge.sandbox.desktop.desktop import DesktopSettings
from responses_bridge.sandbox.desktop.requirements import PACKAGES
from tests.support.cel_rules import cel_results
from tests.support.kube import (
    KUSTOMIZE,
    ROOT,
    by_kind,
    crd_errors,
    have_kubectl,
    is_core,
    kubernetes_errors,
    one,
    overlay,
    restricted_violations,
    settings,
)

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="no kubectl")
NAME = "agent-sandbox"
POOL = "responses-bridge-desktop"
SETTING = "RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL"
COMPONENT_LINE = '# components: ["../../components/agent-sandbox-desktop"]'
DESKTOP_IMAGE = ROOT / "deploy" / "desktop-image" / "Dockerfile"
SANDBOX_IMAGE = ROOT / "deploy" / "sandbox-image" / "Dockerfile"
UNITS = {"Mi": 1 << 20, "Gi": 1 << 30}


def with_desktops(tmp_path: Path) -> Path:
    """deploy/kubernetes copied, the overlay's commented components line uncommented (and nothing else changed)."""
    root = tmp_path / "kubernetes"
    shutil.copytree(KUSTOMIZE, root)
    path = root / "overlays" / NAME / "kustomization.yaml"
    text = path.read_text()
    assert text.count(COMPONENT_LINE) == 1, "the overlay says how to add the desktop component"
    path.write_text(text.replace(COMPONENT_LINE, COMPONENT_LINE.removeprefix("# ")))
    return root


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return overlay(NAME, with_desktops(tmp_path_factory.mktemp("desktops")))


def desktop_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pool = one(objects, "SandboxWarmPool", POOL)
    template = one(objects, "SandboxTemplate", pool["spec"]["sandboxTemplateRef"]["name"])
    pod: dict[str, Any] = template["spec"]["podTemplate"]["spec"]
    return pod


def quantity(value: str) -> int:
    """A Kubernetes memory quantity in bytes (the binary suffixes the manifests use)."""
    return int(value[:-2]) * UNITS[value[-2:]]


def names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, name) of every object, the settings ConfigMap's name without its content hash."""
    return {(o["kind"], "responses-bridge-settings" if o["kind"] == "ConfigMap" else o["metadata"]["name"])
            for o in objects}


def test_the_component_adds_a_desktop_pool_and_its_setting_and_nothing_else(objects: list[dict[str, Any]]) -> None:
    plain = overlay(NAME)
    assert names(objects) - names(plain) == {("SandboxTemplate", POOL), ("SandboxWarmPool", POOL)}
    assert names(plain) <= names(objects)
    assert settings(objects) == {**settings(plain), SETTING: POOL}
    assert SETTING not in settings(plain)  # unset: no desktop on this backend, a 400 naming the setting
    loaded = Settings.model_validate({key.removeprefix("RESPONSES_BRIDGE_").lower(): value
                                      for key, value in settings(objects).items()})
    assert loaded.agent_sandbox_desktop_pool == POOL
    assert one(objects, "SandboxWarmPool", POOL)["spec"]["replicas"] >= 1
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"responses-bridge"}


def test_the_desktop_objects_pass_the_crds_and_the_rest_kubernetes_schemas(objects: list[dict[str, Any]],
                                                                           tmp_path: Path) -> None:
    desktop = [o for o in objects if o["metadata"]["name"] == POOL]
    assert {o["kind"] for o in desktop} == {"SandboxTemplate", "SandboxWarmPool"}
    for obj in desktop:
        assert crd_errors(obj) == [], obj["kind"]
        assert cel_results(obj)[1] == [], obj["kind"]
    assert kubernetes_errors([o for o in objects if is_core(o)], tmp_path) == ""


def test_the_desktop_pod_is_a_sandbox_pod_with_the_desktop_image(objects: list[dict[str, Any]]) -> None:
    [namespace] = by_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = desktop_pod(objects)
    assert restricted_violations(pod) == []
    assert pod["runtimeClassName"] == "gvisor" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    template = one(objects, "SandboxTemplate", POOL)
    assert template["spec"]["envVarsInjectionPolicy"] == "Disallowed"
    [container] = pod["containers"]
    assert container["image"] == "ghcr.io/your-org/responses-bridge-desktop:desktop-0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and not container.get("env")
    defaults = Settings()
    assert {port["containerPort"] for port in container["ports"]} == {defaults.agent_sandbox_rest_port,
                                                                      defaults.agent_sandbox_grpc_port}
    # the overlay's one NetworkPolicy holds it: the bridge in, the egress door and DNS out
    policy = one(objects, "NetworkPolicy")["spec"]
    labels = template["spec"]["podTemplate"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert not one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items() <= labels.items()
    assert template["spec"]["networkPolicyManagement"] == "Unmanaged"


def test_the_desktop_pod_has_the_desktops_bounds_and_a_writable_tmp(objects: list[dict[str, Any]]) -> None:
    pod = desktop_pod(objects)
    [container] = pod["containers"]
    resources = container["resources"]
    assert quantity(resources["limits"]["memory"]) == DesktopSettings().memory_bytes
    assert resources["requests"]["cpu"] == "1"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    assert Settings().agent_sandbox_runtime_root in mounts  # the runtime's root, as in every sandbox pod
    tmp = mounts["/tmp"]["emptyDir"]  # HOME: the browser's profile, Xvfb's socket
    assert "medium" not in tmp  # in memory, its files would count against the pod's limit
    assert 0 < quantity(tmp["sizeLimit"]) < quantity(resources["limits"]["memory"])


def _run_stage(path: Path) -> list[tuple[str, str]]:
    return [(entry["instruction"], entry["value"]) for entry in DockerfileParser(str(path)).structure
            if entry["instruction"] != "COMMENT"]


def test_the_desktop_image_lints_clean_and_builds_on_the_sandbox_image_the_overlay_runs(
        objects: list[dict[str, Any]]) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DESKTOP_IMAGE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = _run_stage(DESKTOP_IMAGE)
    [sandbox_image] = {one(objects, "SandboxTemplate", name)["spec"]["podTemplate"]["spec"]["containers"][0]["image"]
                       for name in ("responses-bridge-1g", "responses-bridge-4g")}
    assert ("ARG", f"SANDBOX_IMAGE={sandbox_image}") in steps
    assert [value for instruction, value in steps if instruction == "FROM"] == ["${SANDBOX_IMAGE}"]
    # the sandbox image's entry point (sandboxd, where the backend looks for it) and working directory, unchanged
    assert not {instruction for instruction, _ in steps} & {"ENTRYPOINT", "CMD", "WORKDIR"}
    assert any(instruction == "ENTRYPOINT" and "sandboxd" in value for instruction, value in _run_stage(SANDBOX_IMAGE))
    # root only to install; the pods' user at the end
    users = [value for instruction, value in steps if instruction == "USER"]
    context = desktop_pod(objects)["securityContext"]
    assert users[0] in ("0", "0:0", "root") and users[-1] == f"{context['runAsUser']}:{context['runAsGroup']}"
    order = [instruction for instruction, _ in steps]
    assert order.index("USER") < order.index("RUN") and order[-1] == "USER"


def test_the_desktop_image_installs_what_the_desktop_looks_for() -> None:
    [install] = [value for instruction, value in _run_stage(DESKTOP_IMAGE)
                 if instruction == "RUN" and "apt-get install" in value]
    commands = [command.split() for command in install.split("&&")]
    [packages] = [words for words in commands if words[:2] == ["apt-get", "install"]]
    assert "--no-install-recommends" in packages
    assert {"chromium", "xvfb", "xdotool"} | {package for package, _, _ in PACKAGES} <= set(packages)
    assert ["rm", "-rf", "/var/lib/apt/lists/*"] in commands
    # Pillow (the screenshots' XCB grab) comes with the base: the sandbox image's requirements
    requirements = (SANDBOX_IMAGE.parent / "requirements.txt").read_text().splitlines()
    assert "pillow" in {line.split(">")[0].strip().lower() for line in requirements if line and line[0] != "#"}

