"""Writes the vendored CRDs from the projects' release tags (README.md says which and how they are trimmed):

    python tests/deploy/crds/vendor.py GATEWAY_API_GIT_DIR ENVOY_GATEWAY_GIT_DIR ISTIO_GIT_DIR

Each argument is a clone (or bare git directory) of kubernetes-sigs/gateway-api, envoyproxy/gateway and istio/istio
holding the tags below."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent
EG_CRDS = "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_{}.yaml"
EG_KINDS = ("backends", "clienttrafficpolicies", "envoyextensionpolicies", "envoypatchpolicies", "envoyproxies")
JOBS: list[tuple[str, str, list[str], dict[str, str]]] = [
    ("gateway-api-v1.6.1.yaml", "v1.6.1",
     ["config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
      "config/crd/standard/gateway.networking.k8s.io_gateways.yaml"],
     {"httproutes.gateway.networking.k8s.io": "v1", "gateways.gateway.networking.k8s.io": "v1"}),
    ("envoy-gateway-v1.9.0.yaml", "v1.9.0",
     [EG_CRDS.format(n) for n in EG_KINDS], {f"{n}.gateway.envoyproxy.io": "v1alpha1" for n in EG_KINDS}),
    ("istio-1.30.3.yaml", "1.30.3", ["manifests/charts/base/files/crd-all.gen.yaml"],
     {"envoyfilters.networking.istio.io": "v1alpha3", "virtualservices.networking.istio.io": "v1",
      "gateways.networking.istio.io": "v1", "serviceentries.networking.istio.io": "v1alpha3",
      "destinationrules.networking.istio.io": "v1alpha3"}),
]


def strip(node: Any, in_properties: bool = False) -> Any:
    """``node`` without its ``description`` annotations (a property named ``description`` stays)."""
    if isinstance(node, dict):
        return {key: strip(value, key in ("properties", "patternProperties") and not in_properties)
                for key, value in node.items() if in_properties or key != "description"}
    if isinstance(node, list):
        return [strip(value) for value in node]
    return node


def trimmed(crd: dict[str, Any], version: str) -> dict[str, Any]:
    crd["spec"]["versions"] = [strip(v) for v in crd["spec"]["versions"] if v["name"] == version]
    annotations = crd["metadata"].get("annotations", {})
    crd["metadata"] = {"name": crd["metadata"]["name"],
                       "annotations": {k: v for k, v in annotations.items() if "version" in k}}
    return crd


def main(git_dirs: list[str]) -> None:
    for git_dir, (out, tag, paths, wanted) in zip(git_dirs, JOBS, strict=True):
        crds = []
        for path in paths:
            text = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{tag}:{path}"], check=True,
                                  capture_output=True, text=True).stdout
            crds += [trimmed(doc, wanted[doc["metadata"]["name"]]) for doc in yaml.safe_load_all(text)
                     if doc and doc.get("kind") == "CustomResourceDefinition" and doc["metadata"]["name"] in wanted]
        (OUT / out).write_text("".join("---\n" + json.dumps(crd, separators=(",", ":")) + "\n" for crd in crds))


AGENT_SANDBOX = ("agent-sandbox-2fd412d.yaml", "2fd412d55ecae90861a101a5424a75473de97c36",
                 ["k8s/crds/agents.x-k8s.io_sandboxes.yaml",
                  *(f"k8s/crds/extensions.agents.x-k8s.io_{kind}.yaml"
                    for kind in ("sandboxclaims", "sandboxtemplates", "sandboxwarmpools"))])


def agent_sandbox(crd_dir: Path) -> None:
    """agent-sandbox's four CRDs, ``v1beta1`` only, from a directory holding its ``k8s/crds`` files."""
    out, _, paths = AGENT_SANDBOX
    crds = [trimmed(doc, "v1beta1") for path in paths for doc in yaml.safe_load_all((crd_dir / Path(path).name)
            .read_text()) if doc and doc.get("kind") == "CustomResourceDefinition"]
    (OUT / out).write_text("".join("---\n" + json.dumps(crd, separators=(",", ":")) + "\n" for crd in crds))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--agent-sandbox"]:
        agent_sandbox(Path(sys.argv[2]))
    else:
        main(sys.argv[1:])
