"""The Envoy bootstraps committed in ``envoy/``: the demo's, the compose stacks', and the ones embedded in the
Kubernetes manifests' ConfigMaps, each with the ``envoy-config`` arguments it is rendered from.

One table, so ``scripts/render-envoy-examples`` (which writes them) and the tests (which check that every one is
current and passes ``envoy --mode validate``) cannot disagree about what a file should hold.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from ...envoy_config import render_bootstrap

DEMO: dict[str, Any] = {"listen_port": 10000, "extproc_port": 50051, "http_port": 8080,
                        "upstream": "http://127.0.0.1:8090/v1"}
# One pod: Envoy takes clients on 8080; the bridge listens on the pod's loopback (HTTP door 8081, ext_proc 50051).
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
MANIFESTS: dict[str, dict[str, Any]] = {
    "envoy/kubernetes/sidecar.yaml": KUBERNETES,
    "envoy/kubernetes/sidecar-shared-store.yaml": KUBERNETES,
}
CONFIGMAP_KEY = "  envoy.yaml: |"  # the ConfigMap's data key whose literal block is the bootstrap


def _block_bounds(lines: list[str]) -> tuple[int, int]:
    start = lines.index(CONFIGMAP_KEY) + 1
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("    ")):
        end += 1
    while end > start and not lines[end - 1].strip():  # blank lines before the next document stay outside
        end -= 1
    return start, end


def embedded_bootstrap(manifest: str) -> str:
    """The bootstrap in a manifest's ConfigMap (the literal block under ``envoy.yaml: |``)."""
    lines = manifest.split("\n")
    start, end = _block_bounds(lines)
    return textwrap.dedent("\n".join(lines[start:end])).strip("\n") + "\n"


def with_bootstrap(manifest: str, bootstrap: str) -> str:
    """``manifest`` with its ConfigMap's bootstrap replaced by ``bootstrap``."""
    lines = manifest.split("\n")
    start, end = _block_bounds(lines)
    lines[start:end] = [f"    {line}" if line else "" for line in bootstrap.rstrip("\n").split("\n")]
    return "\n".join(lines)


def rendered(root: Path) -> dict[Path, str]:
    """Every committed file that holds a bootstrap, with the content the renderer gives it today."""
    files = {root / name: render_bootstrap(**args) for name, args in BOOTSTRAPS.items()}
    for name, args in MANIFESTS.items():
        path = root / name
        files[path] = with_bootstrap(path.read_text(), render_bootstrap(**args))
    return files
