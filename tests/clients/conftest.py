"""Real clients, unmodified, against both doors: the Codex CLI, the OpenAI Agents SDK and the Vercel AI SDK.

The servers are the integration suite's (a fake upstream, the sidecar, a real Envoy; ``door`` is ``http`` or
``envoy``). The JS clients are installed by the ``node_modules`` fixture into ``tests/clients/node`` (git-ignored)
from the committed, exactly pinned ``package.json``; an install is redone only when that file changes. A client
is skipped, with the reason shown, only when its registry cannot be reached.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401
    base_url,
    client,
    door,
    envoy_url,
    fake_upstream,
    http,
    sidecar,
    upstream_log,
)

NODE_DIR = Path(__file__).parent / "node"


def _registry_unreachable(npm: str) -> bool:
    try:
        return subprocess.run([npm, "ping"], capture_output=True, timeout=30, check=False).returncode != 0
    except (OSError, subprocess.TimeoutExpired):
        return True


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``npm install`` into tests/clients/node, once per package.json content; the test processes of one run
    (pytest-xdist's workers) take turns, so only the first installs and the others wait for it."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("node/npm are not installed: the Codex CLI and AI SDK checks need them")
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _install(npm)


def _install(npm: str) -> Path:
    digest = hashlib.sha256((NODE_DIR / "package.json").read_bytes()).hexdigest()[:16]
    marker = NODE_DIR / f".installed-{digest}"
    if not marker.exists() or not (NODE_DIR / "node_modules").is_dir():
        for old in NODE_DIR.glob(".installed-*"):
            old.unlink()
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock"], cwd=NODE_DIR,
                                capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            if _registry_unreachable(npm):
                pytest.skip("the npm registry is unreachable: cannot install the JS clients")
            raise RuntimeError(f"npm install failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        marker.write_text(digest)
    return NODE_DIR / "node_modules"
