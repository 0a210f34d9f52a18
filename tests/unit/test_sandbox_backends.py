"""The one place a sandbox backend is chosen (sandbox/backends.py) and the agent-sandbox settings: bubblewrap stays
the default; ``agent-sandbox`` without its extra is a backend that refuses every call with the one line naming the
extra; its pools are read as ``<tier>=<pool>`` and a mistake names the entry."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.sandbox import SandboxLimits, SandboxUnavailable
from responses_bridge.sandbox.agent_sandbox import MISSING_EXTRA
from responses_bridge.sandbox.agent_sandbox.settings import parse_pools
from responses_bridge.sandbox.backends import open_backend


def test_bubblewrap_is_the_default() -> None:
    assert Settings().code_sandbox_backend == "bubblewrap"


def test_pools_are_tiers_to_warm_pools_and_a_mistake_names_its_entry() -> None:
    assert parse_pools(" 1g=bridge-1g, 4G=bridge-4g ,") == {"1g": "bridge-1g", "4g": "bridge-4g"}
    for wrong in ("2g=pool", "1g", "1g=Pool_Name", "1g="):
        with pytest.raises(ValueError, match="is not <tier>=<SandboxWarmPool name>"):
            parse_pools(wrong)
    with pytest.raises(ValueError, match="'3g=x'"):
        Settings(agent_sandbox_pools="1g=a,3g=x")


async def test_the_backend_without_its_extra_refuses_every_call_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "responses_bridge.sandbox.agent_sandbox.backend", None)  # as if not installed
    real_distribution = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:  # ... its metadata too (extras.py reads it)
        if name == "k8s-agent-sandbox":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    backend = await open_backend(Settings(code_sandbox_backend="agent-sandbox"), SandboxLimits(),
                                 share=lambda tenant: 1, egress=None)
    line = f"{MISSING_EXTRA} (not installed: k8s-agent-sandbox)"
    assert backend.unavailable == line and "pip install 'responses-bridge[agent-sandbox]'" in MISSING_EXTRA
    assert backend.refusal("python") == backend.refusal("shell", memory_limit="4g") == line
    with pytest.raises(SandboxUnavailable, match="agent-sandbox extra"):
        async with backend.call():
            pytest.fail("a refused backend gave a call")


async def test_the_backend_with_its_extra_installed_but_broken_names_the_failed_import(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra's distribution is installed but its import fails: the refusal says what failed, not "install"."""
    monkeypatch.setitem(sys.modules, "responses_bridge.sandbox.agent_sandbox.backend", None)
    backend = await open_backend(Settings(code_sandbox_backend="agent-sandbox"), SandboxLimits(),
                                 share=lambda tenant: 1, egress=None)
    assert backend.unavailable is not None and "pip install" not in backend.unavailable
    assert backend.unavailable.startswith("the agent-sandbox extra is installed, but importing "
                                          "responses_bridge.sandbox.agent_sandbox.backend failed")
    assert "ModuleNotFoundError" in backend.unavailable


async def test_the_agent_sandbox_backend_refuses_what_it_lacks_before_a_claim() -> None:
    backend = await open_backend(Settings(code_sandbox_backend="agent-sandbox", agent_sandbox_pools="1g=small",
                                          agent_sandbox_api_url="http://127.0.0.1:9"),
                                 SandboxLimits(), share=lambda tenant: 1, egress=None)
    assert backend.unavailable is None and backend.refusal("python") is None
    assert backend.refusal("shell", memory_limit="1g", skills=True) is None
    assert "memory_limit 16g" in (backend.refusal("python", memory_limit="16g") or "")
    assert "network" in (backend.refusal("python", network=True) or "")
