"""The Kubernetes manifests in envoy/kubernetes/: valid against Kubernetes' own schemas (kubernetes-validate, which
ships them, so this runs offline), and shaped as the deployment needs: Envoy and the bridge in one pod over
loopback, probes on /health/live and /health/ready, resources on every container, SQLite on a claim with one
replica, or many replicas over the shared store. The ConfigMap's bootstrap is checked current and valid by
tests/unit/test_envoy_config.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from responses_bridge.devtools.checkout.deploy_examples import MANIFESTS, embedded_bootstrap

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = ROOT / "envoy" / "kubernetes"
SINGLE = MANIFEST_DIR / "sidecar.yaml"
SHARED = MANIFEST_DIR / "sidecar-shared-store.yaml"


def documents(path: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


def containers(path: Path) -> dict[str, dict[str, Any]]:
    pod = documents(path)["Deployment"]["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def probe_url(probe: dict[str, Any]) -> str:
    if "httpGet" in probe:
        return probe["httpGet"]["path"]
    [url] = [part.split("'")[1] for part in probe["exec"]["command"] if "urlopen(" in part]
    return url


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--no-warn", str(path)],
                          capture_output=True, text=True)


def test_every_manifest_is_listed() -> None:
    assert {str(p.relative_to(ROOT)) for p in MANIFEST_DIR.glob("*.yaml")} == set(MANIFESTS)


@pytest.mark.parametrize("path", [SINGLE, SHARED], ids=lambda p: p.name)
def test_manifests_pass_the_kubernetes_schemas(path: Path) -> None:
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_is_live(tmp_path: Path) -> None:
    """A Deployment with a misspelt field fails it."""
    broken = tmp_path / "broken.yaml"
    deployment = documents(SINGLE)["Deployment"]
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    broken.write_text(json.dumps(deployment))
    assert validate(broken).returncode != 0


@pytest.mark.parametrize("path", [SINGLE, SHARED], ids=lambda p: p.name)
def test_one_pod_over_loopback_with_probes_and_resources(path: Path) -> None:
    found = containers(path)
    assert set(found) == {"envoy", "responses-bridge"}
    envoy, bridge = found["envoy"], found["responses-bridge"]
    # only Envoy's port leaves the pod; the bridge's doors are on loopback, where Envoy's bootstrap finds them
    assert [p["containerPort"] for p in envoy["ports"]] == [8080] and "ports" not in bridge
    # the image's entry point stays (tini as PID 1, reaping what each code interpreter call hands it): flags only
    assert "command" not in bridge and "shareProcessNamespace" not in documents(path)["Deployment"]["spec"]["template"][
        "spec"]
    args = bridge["args"]
    assert args[args.index("--http-host") + 1] == args[args.index("--extproc-host") + 1] == "127.0.0.1"
    bootstrap = yaml.safe_load(embedded_bootstrap(path.read_text()))
    sockets = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
               ["socket_address"] for c in bootstrap["static_resources"]["clusters"]}
    assert (sockets["responses_bridge_extproc"]["address"], sockets["responses_bridge_extproc"]["port_value"]) == (
        "127.0.0.1", int(args[args.index("--extproc-port") + 1]))
    assert sockets["responses_bridge_http"]["port_value"] == int(args[args.index("--http-port") + 1])
    assert args[args.index("--upstream-via") + 1] == "http://127.0.0.1:8080/v1"  # back through Envoy
    # readiness on /health/ready (Envoy's is the bridge's, through Envoy), liveness on /health/live
    assert probe_url(envoy["readinessProbe"]) == "/health/ready"
    assert probe_url(bridge["readinessProbe"]).endswith(":8081/health/ready")
    assert probe_url(bridge["livenessProbe"]).endswith(":8081/health/live")
    assert probe_url(bridge["startupProbe"]).endswith(":8081/health/live")
    for container in found.values():
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Envoy outlives the bridge's drain, and the pod's grace period covers both
    drain = int(next(e["value"] for e in bridge["env"] if e["name"] == "RESPONSES_BRIDGE_DRAIN_TIMEOUT"))
    pre_stop = envoy["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = documents(path)["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert drain < pre_stop < grace
    assert documents(path)["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_single_replica_keeps_sqlite_on_a_claim() -> None:
    docs = documents(SINGLE)
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # one SQLite writer at a time
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in containers(SINGLE)["responses-bridge"]["volumeMounts"]}
    assert mounts["data"] == "/data"  # the image's RESPONSES_BRIDGE_DB is /data/responses.sqlite


def test_shared_store_variant_scales_out_with_the_database_url_from_a_secret() -> None:
    docs = documents(SHARED)
    assert docs["Deployment"]["spec"]["replicas"] > 1 and "PersistentVolumeClaim" not in docs
    env = {e["name"]: e for e in containers(SHARED)["responses-bridge"]["env"]}
    secret = env["RESPONSES_BRIDGE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "responses-bridge-database" and not secret.get("optional")
    # a blob sealed by one replica must open on another: one key for all, from a Secret
    assert env["RESPONSES_BRIDGE_SEALING_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "responses-bridge-sealing"
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    # nothing a pod keeps on its own volume is needed by another: the data volume is scratch
    volumes = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]
