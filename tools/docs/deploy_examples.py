"""The Envoy renderings committed in the repository: the bootstraps in ``envoy/`` (the demo's, the compose
stacks'), each with the ``envoy-config`` arguments it is rendered from, and the Envoy Gateway and Istio objects of
the Kubernetes overlays (``deploy/kubernetes``), each from its overlay's settings.

One table, so ``scripts/render-envoy-examples`` (which writes them) and the tests (which check that every one is
current and passes ``envoy --mode validate``) cannot disagree about what a file should hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.envoy_config.command import render
from responses_bridge.envoy_config.targets import Placement

from .upstream_replacements import Render, upstream_replacements

DEMO: dict[str, Any] = {"listen_port": 10000, "extproc_port": 50051, "http_port": 8080,
                        "upstream": "http://127.0.0.1:8090/v1"}
# Kubernetes: the bridge's doors as deploy/kubernetes/base sets them (HTTP door 8081, ext_proc 50051).
KUBERNETES: dict[str, Any] = dict(DEMO, listen_port=8080, http_port=8081, listen_address="0.0.0.0",
                                  upstream="http://vllm.llm.svc.cluster.local:8000/v1")
# docker-compose.yml: each part in its own container, reached by its service name on the compose network.
COMPOSE: dict[str, Any] = dict(DEMO, listen_address="0.0.0.0", extproc_address="bridge", sidecar_address="bridge",
                               upstream="http://fake-upstream:8090/v1")
COMPOSE_OLLAMA: dict[str, Any] = dict(COMPOSE, extproc_address="bridge-ollama", sidecar_address="bridge-ollama",
                                      upstream="http://ollama:11434/v1")
# the ``postgres`` profile: one Envoy per bridge replica, both replicas on the shared database
COMPOSE_PG_A: dict[str, Any] = dict(COMPOSE, extproc_address="bridge-pg-a", sidecar_address="bridge-pg-a")
COMPOSE_PG_B: dict[str, Any] = dict(COMPOSE, extproc_address="bridge-pg-b", sidecar_address="bridge-pg-b")

BOOTSTRAPS: dict[str, dict[str, Any]] = {
    "envoy/envoy-demo.yaml": DEMO,
    "envoy/compose/envoy.yaml": COMPOSE,
    "envoy/compose/envoy-ollama.yaml": COMPOSE_OLLAMA,
    "envoy/compose/envoy-pg-a.yaml": COMPOSE_PG_A,
    "envoy/compose/envoy-pg-b.yaml": COMPOSE_PG_B,
}
KUSTOMIZE = "deploy/kubernetes"
OVERLAYS = ("sqlite", "postgres", "envoy-gateway", "istio", "agent-sandbox")
"""deploy/kubernetes/overlays/*: the plain pod (SQLite, PostgreSQL) renders its Envoy's bootstrap in the pod from
its settings; the platforms' objects are rendered here, each from its overlay's upstream and namespace."""
PLATFORM_FILES: dict[str, str] = {
    f"{KUSTOMIZE}/overlays/envoy-gateway/envoy-gateway.yaml": "envoy-gateway",
    f"{KUSTOMIZE}/overlays/istio/istio.yaml": "istio",
}
UPSTREAM_SETTING = "RESPONSES_BRIDGE_UPSTREAM"
REPLACEMENTS_FILE = "upstream.yaml"
"""Beside each platform overlay's objects: the kustomize replacements that fill the upstream's host and port in."""


def overlay_settings(kustomization: Path) -> tuple[str, str]:
    """An overlay's upstream (its settings literal) and namespace, from its kustomization.yaml."""
    import yaml

    spec = yaml.safe_load(kustomization.read_text())
    literals = [literal for generator in spec.get("configMapGenerator", [])
                for literal in generator.get("literals", [])]
    [upstream] = [value for name, _, value in (item.partition("=") for item in literals) if name == UPSTREAM_SETTING]
    transformers = [yaml.safe_load(item) for item in spec.get("transformers", []) if isinstance(item, str)]
    namespaces = [item["metadata"]["namespace"] for item in transformers
                  if isinstance(item, dict) and item.get("kind") == "NamespaceTransformer"]
    return upstream, spec.get("namespace", namespaces[0] if namespaces else "default")


def platform_rendering(root: Path, name: str) -> str:
    """A platform overlay's generated objects, as ``envoy-config --format <target>`` renders them from the
    overlay's own settings (the bridge's ports as the base sets them)."""
    target = PLATFORM_FILES[name]
    upstream, namespace = overlay_settings((root / name).parent / "kustomization.yaml")
    flags = f"--format {target} --namespace {namespace} --upstream {upstream}"
    header = (f"# Rendered by `responses-bridge envoy-config {flags}` from kustomization.yaml's settings\n"
              "# (scripts/render-envoy-examples; tests check it is current). Do not edit: change the settings.\n")
    return header + platform_objects(target, namespace)(upstream)


def platform_objects(target: str, namespace: str) -> Render:
    """The objects ``envoy-config --format <target>`` renders in ``namespace`` for an upstream URL."""
    def objects(upstream: str) -> str:
        options = dict(KUBERNETES, upstream=upstream, listen_address="0.0.0.0")
        return render(target, options, Placement(namespace=namespace, extproc_port=options["extproc_port"],
                                                 http_port=options["http_port"]))

    return objects


def platform_replacements(root: Path, name: str) -> str:
    """The replacements file beside a platform overlay's objects (upstream_replacements.py)."""
    upstream, namespace = overlay_settings((root / name).parent / "kustomization.yaml")
    return upstream_replacements(platform_objects(PLATFORM_FILES[name], namespace), upstream)


def rendered(root: Path) -> dict[Path, str]:
    """Every committed file that holds a rendering, with the content the renderer gives it today."""
    files = {root / name: render_bootstrap(**args) for name, args in BOOTSTRAPS.items()}
    for name in PLATFORM_FILES:
        files[root / name] = platform_rendering(root, name)
        files[(root / name).parent / REPLACEMENTS_FILE] = platform_replacements(root, name)
    return files
