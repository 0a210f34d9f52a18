"""An MCP server that answers a tool call with 50 MB, through the HTTP door and through Envoy (which hands requests
with MCP tools to the HTTP door): the answer is read only up to the bridge's bound, the call fails with a clear
error, the response completes, and the sidecar's memory stays in budget.

The server answers Streamable HTTP with plain JSON bodies, which the MCP client reads whole; an event stream is
bounded per event by the client itself. A JSON answer of 50 MB once cost about 530 MB of RSS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.mcp_server import MCPTestServer, running_mcp_server

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")

OUTPUT = 50 * 1024 * 1024


@dataclass
class Stack:
    sidecar: Sidecar
    envoy_url: str
    mcp: MCPTestServer


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    listen_port = free_port()
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_MCP_TOTAL_TIMEOUT": "60",
           "RESPONSES_BRIDGE_MCP_CALL_TIMEOUT": "60"}
    async with running_mcp_server() as mcp, running_sidecar(
            str(tmp_path_factory.mktemp("mcp-bounds")), fake_upstream, "--upstream-via",
            f"http://127.0.0.1:{listen_port}/v1", env=env) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Stack(sidecar, f"http://127.0.0.1:{listen_port}", mcp)
        finally:
            envoy.stop()


def _kb(pid: int, field: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_50_mb_tool_answer_fails_the_call_within_a_memory_budget(stack: Stack, door: str) -> None:
    url = stack.sidecar.http_url if door == "http" else stack.envoy_url
    tool = {"type": "mcp", "server_label": "tools", "server_url": stack.mcp.json_url, "require_approval": "never",
            "allowed_tools": ["big"]}
    pid = stack.sidecar.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak RSS (VmHWM) starts again from here
    before = _kb(pid, "VmRSS")
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-client", max_retries=0, timeout=120) as sdk:
        response = await sdk.responses.create(
            model="fake-model", input=f'call tools__big [args={{"size": {OUTPUT}}}]',
            tools=[tool])  # type: ignore[list-item]
    assert response.status == "completed"
    [call] = [item for item in response.output if item.type == "mcp_call"]
    assert "larger than" in str(call.error) and "not read" in str(call.error), call.error
    growth_mb = (_kb(pid, "VmHWM") - before) // 1024
    assert growth_mb < 150, f"the sidecar's peak RSS grew {growth_mb} MB"
