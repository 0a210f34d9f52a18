"""The upstream of a platform overlay stands on one line: changing ``RESPONSES_BRIDGE_UPSTREAM``'s host and port in
the Envoy Gateway or Istio overlay's kustomization.yaml, and nothing else, builds objects identical to a fresh
rendering for the new URL (every reference moved: routes' authority and destination, ``Backend``, ``ServiceEntry``,
``DestinationRule`` and its SNI), for a cluster Service over http and an external host over https. A change the
replacements cannot follow (the scheme, a host leaving the cluster) fails the build instead of leaving objects
behind, its error naming the cause and ``scripts/render-envoy-examples``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.kube import ROOT, have_kubectl, kustomize
from tools import fast_yaml
from tools.docs.deploy_examples import (
    KUSTOMIZE,
    PLATFORM_FILES,
    overlay_settings,
    platform_objects,
    rendered,
)

pytestmark = pytest.mark.skipif(not have_kubectl(), reason="no kubectl")
OVERLAYS = {target: name for name, target in PLATFORM_FILES.items()}
MOVES = [("http://vllm.llm.svc.cluster.local:8000/v1", "http://sglang.models.svc.cluster.local:30000/v1"),
         ("https://api.example.com:443/v1", "https://llm.inference.example.net:8443/v1")]


def overlay_at(tmp_path: Path, target: str, upstream: str) -> Path:
    """A copy of the repository's Kubernetes tree whose ``target`` overlay is rendered for ``upstream``; the
    overlay's directory."""
    shutil.copytree(ROOT / KUSTOMIZE, tmp_path / KUSTOMIZE)
    directory = (tmp_path / OVERLAYS[target]).parent
    set_upstream(directory, upstream)
    for path, text in rendered(tmp_path).items():
        if path.parent == directory:
            path.write_text(text)
    return directory


def set_upstream(directory: Path, upstream: str) -> None:
    kustomization = directory / "kustomization.yaml"
    old, _ = overlay_settings(kustomization)
    kustomization.write_text(kustomization.read_text().replace(f"RESPONSES_BRIDGE_UPSTREAM={old}",
                                                               f"RESPONSES_BRIDGE_UPSTREAM={upstream}"))
    assert overlay_settings(kustomization)[0] == upstream


@pytest.mark.parametrize("before, after", MOVES)
@pytest.mark.parametrize("target", sorted(OVERLAYS))
def test_changing_the_upstream_line_moves_every_reference(target: str, before: str, after: str,
                                                          tmp_path: Path) -> None:
    directory = overlay_at(tmp_path, target, before)
    old_host = before.split("/")[2].split(":")[0]
    assert old_host in (directory / Path(OVERLAYS[target]).name).read_text()
    set_upstream(directory, after)  # the one line, and nothing rendered again
    built = kustomize(directory)
    assert old_host not in yaml.safe_dump_all(built)
    _, namespace = overlay_settings(directory / "kustomization.yaml")
    expected = [obj for obj in fast_yaml.load_all(platform_objects(target, namespace)(after)) if obj]
    by_name = {(obj["kind"], obj["metadata"]["name"]): obj for obj in built}
    for obj in expected:
        assert by_name[(obj["kind"], obj["metadata"]["name"])] == obj, (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize("after, cause", [
    ("https://vllm.llm.svc.cluster.local:8000/v1", "no longer has the scheme the overlay's objects were rendered for"),
    ("http://vllm.example.com:8000/v1", "is no longer a cluster Service"),
    ("https://api.example.com:443/v1", "no longer has the scheme"),
    ("http://vllm.llm.svc.cluster.local/v1", "with its port")])
@pytest.mark.parametrize("target", sorted(OVERLAYS))
def test_a_change_the_objects_cannot_follow_fails_the_build_naming_why(target: str, after: str, cause: str,
                                                                        tmp_path: Path) -> None:
    """Another scheme, a host that is no longer a cluster Service, a port not written: kustomize refuses, and its
    one line says why and what to run (not only kustomize's "options.index 1 is out of bounds")."""
    directory = overlay_at(tmp_path, target, MOVES[0][0])
    set_upstream(directory, after)
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode != 0, result.stdout
    assert cause in result.stderr and "run scripts/render-envoy-examples" in result.stderr, result.stderr
    assert "RESPONSES_BRIDGE_UPSTREAM line" in result.stderr and after in result.stderr
