"""What the tool loop serves is read by every request (``ServerToolServices.served``): it must cost no disk.

Whether the ``programs`` extra is installed was looked up with ``importlib.util.find_spec`` on every read, a walk
of ``sys.path`` with a stat per entry: 5% of a JSON request's CPU through the HTTP door.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from responses_bridge.run.server_tool_services import ServerToolServices
from responses_bridge.run.tools.mcp import MCPLimits, MCPTools


def test_served_looks_up_the_programs_extra_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = importlib.util.find_spec("py_mini_racer") is not None
    looked_up: list[str] = []
    real = importlib.util.find_spec

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", counting)
    services = ServerToolServices(MCPTools(MCPLimits()))
    served = [services.served for _ in range(5)]
    assert looked_up.count("py_mini_racer") <= 1  # the first read in this process, if no test read it before
    assert all(types == served[0] for types in served)
    assert "programmatic_tool_calling" not in served[0]  # no program host: programs are not served
    services.programs = object()  # type: ignore[assignment]  # a host: served wherever the extra is installed
    assert ("programmatic_tool_calling" in services.served) == installed
    assert looked_up.count("py_mini_racer") <= 1
