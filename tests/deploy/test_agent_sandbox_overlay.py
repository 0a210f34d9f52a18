"""The agent-sandbox overlay (deploy/kubernetes/overlays/agent-sandbox), checked offline: its agent-sandbox objects
pass the vendored v1beta1 CRDs' schemas and CEL rules, its Kubernetes objects Kubernetes' own schemas; the bridge's
namespace enforces Pod Security ``restricted`` and every pod it renders (the bridge's, each SandboxTemplate's) meets
that profile; each memory tier the settings serve has its template (gVisor, no token, the tier's memory) and warm
pool; the Role grants exactly what the backend uses; the NetworkPolicy lets the bridge in and the sandbox pods out
only to the bridge's egress door and DNS; the settings load as the bridge reads them; the sandbox image's
Dockerfile lints clean and runs the runtime where the backend looks for it."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.sandbox.agent_sandbox.settings import parse_pools
from tests.support.cel_rules import cel_results
from tests.support.kube import (
    ROOT,
    bridge_container,
    by_kind,
    crd_errors,
    have_kubectl,
    kubernetes_errors,
    one,
    overlay,
    restricted_violations,
    settings,
)

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="no kubectl")
NAME = "agent-sandbox"
AGENT_SANDBOX_GROUPS = ("agents.x-k8s.io/v1beta1", "extensions.agents.x-k8s.io/v1beta1")
SANDBOX_IMAGE = ROOT / "deploy" / "sandbox-image" / "Dockerfile"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return overlay(NAME)


def pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {"Deployment": one(objects, "Deployment", "responses-bridge")["spec"]["template"]["spec"]}
    for template in by_kind(objects, "SandboxTemplate"):
        found[template["metadata"]["name"]] = template["spec"]["podTemplate"]["spec"]
    return found


def test_agent_sandbox_objects_pass_the_crds_schemas_and_cel_rules(objects: list[dict[str, Any]]) -> None:
    custom = [o for o in objects if o["apiVersion"] in AGENT_SANDBOX_GROUPS]
    assert {o["kind"] for o in custom} == {"SandboxTemplate", "SandboxWarmPool"}
    for obj in custom:
        assert crd_errors(obj) == [], (obj["kind"], obj["metadata"]["name"])
        assert cel_results(obj)[1] == [], (obj["kind"], obj["metadata"]["name"])


def test_kubernetes_objects_pass_kubernetes_schemas(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    native = [o for o in objects if o["apiVersion"] not in AGENT_SANDBOX_GROUPS]
    assert {"NetworkPolicy", "Role", "RoleBinding", "ServiceAccount"} <= {o["kind"] for o in native}
    assert kubernetes_errors(native, tmp_path) == ""


def test_the_namespace_enforces_restricted_and_every_pod_meets_it(objects: list[dict[str, Any]]) -> None:
    [namespace] = by_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    found = pods(objects)
    assert len(found) == 3
    for name, pod in found.items():
        assert restricted_violations(pod) == [], name
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"responses-bridge"}


def test_the_restricted_check_is_live() -> None:
    """The bubblewrap overlay's pod (Unconfined seccomp and AppArmor) fails it, and so does a sandbox pod that
    may escalate."""
    sqlite_pod = one(overlay("sqlite"), "Deployment")["spec"]["template"]["spec"]
    assert any("Unconfined" in problem for problem in restricted_violations(sqlite_pod))
    sandbox = copy.deepcopy(pods(overlay(NAME))["responses-bridge-1g"])
    sandbox["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert restricted_violations(sandbox) == ["sandbox: allowPrivilegeEscalation is not false"]


def test_each_tier_served_has_a_gvisor_template_and_a_warm_pool(objects: list[dict[str, Any]]) -> None:
    found = settings(objects)
    loaded = Settings(**{key.removeprefix("RESPONSES_BRIDGE_").lower(): value for key, value in found.items()})
    assert loaded.code_sandbox_backend == "agent-sandbox" and loaded.agent_sandbox_namespace == "responses-bridge"
    pools = parse_pools(found["RESPONSES_BRIDGE_AGENT_SANDBOX_POOLS"])
    assert set(pools) == {"1g", "4g"}
    for tier, pool_name in pools.items():
        pool = one(objects, "SandboxWarmPool", pool_name)
        assert pool["spec"]["replicas"] >= 1
        template = one(objects, "SandboxTemplate", pool["spec"]["sandboxTemplateRef"]["name"])
        pod = template["spec"]["podTemplate"]["spec"]
        assert pod["runtimeClassName"] == "gvisor" and pod["automountServiceAccountToken"] is False
        [container] = pod["containers"]
        assert container["resources"]["limits"]["memory"] == tier[:-1] + "Gi"
        assert container["image"] == "ghcr.io/your-org/responses-bridge-sandbox:sandbox-0.1.0"
        ports = {port["containerPort"] for port in container["ports"]}
        assert ports == {loaded.agent_sandbox_rest_port, loaded.agent_sandbox_grpc_port}
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert loaded.agent_sandbox_runtime_root in mounts
        assert not container.get("env") and template["spec"]["envVarsInjectionPolicy"] == "Disallowed"


def test_the_role_grants_only_what_the_backend_uses(objects: list[dict[str, Any]]) -> None:
    role = one(objects, "Role")
    granted = {(rule_group, resource, verb) for rule in role["rules"] for rule_group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert not any("*" in item for entry in granted for item in entry)
    assert not any(resource in ("secrets", "pods", "pods/exec") for _, resource, _ in granted)
    assert {group for group, _, _ in granted} == {"extensions.agents.x-k8s.io", "agents.x-k8s.io"}
    assert {verb for _, resource, verb in granted if resource == "sandboxclaims"} == {
        "create", "get", "list", "watch", "delete"}
    assert {verb for _, resource, verb in granted if resource != "sandboxclaims"} <= {"get", "list", "watch"}
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    deployment = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": deployment["serviceAccountName"],
                                    "namespace": "responses-bridge"}]


def test_sandbox_pods_reach_only_the_egress_door_and_are_reached_only_by_the_bridge(
        objects: list[dict[str, Any]]) -> None:
    policy = one(objects, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    bridge_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for template in by_kind(objects, "SandboxTemplate"):
        labels = template["spec"]["podTemplate"]["metadata"]["labels"]
        assert policy["podSelector"]["matchLabels"].items() <= labels.items()
        assert not bridge_labels.items() <= labels.items()  # a sandbox pod is never taken for the bridge
        assert template["spec"]["networkPolicyManagement"] == "Unmanaged"  # this one policy, not one per template
    [ingress] = policy["ingress"]
    assert ingress["from"][0]["podSelector"]["matchLabels"].items() <= bridge_labels.items()
    assert {port["port"] for port in ingress["ports"]} == {8080, 9090}
    door, dns = policy["egress"]
    assert door["to"][0]["podSelector"]["matchLabels"].items() <= bridge_labels.items()
    assert [port["port"] for port in door["ports"]] == [3128]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {port["port"] for port in dns["ports"]} == {53}
    found = settings(objects)
    service = one(objects, "Service", "responses-bridge-egress")
    assert found["RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_URL"].endswith(
        f"//{service['metadata']['name']}.responses-bridge.svc.cluster.local:{service['spec']['ports'][0]['port']}")
    ports = {port["name"]: port["containerPort"] for port in bridge_container(objects)["ports"]}
    assert ports[service["spec"]["ports"][0]["targetPort"]] == int(
        found["RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_LISTEN"].rsplit(":", 1)[1])


def test_the_sandbox_image_lints_clean_and_runs_the_runtime_where_the_backend_looks() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(SANDBOX_IMAGE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = SANDBOX_IMAGE.read_text()
    [entrypoint] = [line for line in text.splitlines() if line.startswith("ENTRYPOINT")]
    defaults = Settings()
    for flag in (f"--root-dir={defaults.agent_sandbox_runtime_root}", "--listen-host=0.0.0.0",
                 f"--rest-port={defaults.agent_sandbox_rest_port}", f"--grpc-port={defaults.agent_sandbox_grpc_port}"):
        assert flag in entrypoint
    requirements = (SANDBOX_IMAGE.parent / "requirements.txt").read_text()
    assert {"numpy", "pandas", "matplotlib"} <= {line.split(">")[0] for line in requirements.splitlines()
                                                if line and not line.startswith("#")}
