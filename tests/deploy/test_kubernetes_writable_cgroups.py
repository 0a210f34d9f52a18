"""The writable-cgroups components (deploy/kubernetes/components/writable-cgroups*): added to an overlay they render,
pass Kubernetes' schemas, and give the pod what a node's grant needs — the bridge's container started as root only
to hand its cgroup over (RESPONSES_BRIDGE_RUN_AS, CHOWN/SETUID/SETGID and nothing more, no privilege escalation),
CRI-O's annotation, containerd's RuntimeClass, GKE's node selector. tests/deploy/test_oci_runtime.py runs that shape
under runc."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import KUSTOMIZE, bridge_container, have_kubectl, is_core, kubernetes_errors, kustomize, one

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="no kubectl")


def _with(tmp_path: Path, *components: str) -> list[dict[str, Any]]:
    def relative(path: Path) -> str:  # kustomize takes no absolute path
        return os.path.relpath(path, tmp_path)

    listed = "\n".join(f"  - {relative(KUSTOMIZE / 'components' / name)}" for name in components)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative(KUSTOMIZE / 'overlays' / 'sqlite')}\ncomponents:\n{listed}\n")
    return kustomize(tmp_path)


def test_the_component_hands_the_cgroup_over_and_drops(tmp_path: Path) -> None:
    objects = _with(tmp_path, "writable-cgroups")
    assert kubernetes_errors([o for o in objects if is_core(o)], tmp_path) == ""
    container = bridge_container(objects)
    assert {"name": "RESPONSES_BRIDGE_RUN_AS", "value": "10001:10001"} in container["env"]
    context = container["securityContext"]
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "SETUID", "SETGID", "KILL"]}
    assert context["seccompProfile"] == {"type": "Unconfined"}  # the base's, kept
    template = one(objects, "Deployment", "responses-bridge")["spec"]["template"]
    assert template["metadata"]["annotations"]["io.kubernetes.cri-o.cgroup2-mount-hierarchy-rw"] == "true"
    assert "runtimeClassName" not in template["spec"] and "nodeSelector" not in template["spec"]


def test_containerd_and_gke_variants(tmp_path: Path) -> None:
    (tmp_path / "containerd").mkdir()
    (tmp_path / "gke").mkdir()
    objects = _with(tmp_path / "containerd", "writable-cgroups", "writable-cgroups-containerd")
    assert kubernetes_errors([o for o in objects if is_core(o)], tmp_path) == ""
    runtime = one(objects, "RuntimeClass", "writable-cgroups")
    assert runtime["handler"] == "runc-writable-cgroups"
    assert one(objects, "Deployment", "responses-bridge")["spec"]["template"]["spec"]["runtimeClassName"] == \
        "writable-cgroups"
    objects = _with(tmp_path / "gke", "writable-cgroups", "writable-cgroups-gke")
    assert one(objects, "Deployment", "responses-bridge")["spec"]["template"]["spec"]["nodeSelector"] == {
        "node.gke.io/enable-writable-cgroups": "true"}
