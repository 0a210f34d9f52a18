"""MCP servers that misbehave, through the HTTP door and through Envoy (which hands requests with MCP tools to the
HTTP door).

- One answers a tool call with 50 MB: the answer is read only up to the bridge's bound, the call fails with a
  clear error, the response completes, and the sidecar's memory stays in budget. The server answers Streamable
  HTTP with plain JSON bodies, which the MCP client reads whole (an event stream is bounded per event by the client
  itself); a JSON answer of 50 MB once cost about 530 MB of RSS.
- One holds its tool listing: the client's stream still opens at once (``response.created`` before the listing
  ends, where it once waited for the listing, up to the 90 s timeout, with nothing on the wire), and keep-alive
  comments flow while the listing runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from tests.support.bridge import Sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import running_gateway
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.memory import reset_peak, status_kb
from tests.support.schema import parse_sse
from tests.support.sdk import async_sdk

# its subject is the bridge's bounds on a misbehaving server (memory, the stream kept alive): its sidecar keeps its
# own SQLite file, and the PostgreSQL pass of scripts/test leaves it out
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

OUTPUT = 50 * 1024 * 1024


@dataclass
class Stack:
    sidecar: Sidecar
    envoy_url: str
    mcp: MCPTestServer


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_MCP_TOTAL_TIMEOUT": "60",
           "RESPONSES_BRIDGE_MCP_CALL_TIMEOUT": "60", "RESPONSES_BRIDGE_STREAM_KEEPALIVE_SECONDS": "0.2"}
    async with running_mcp_server() as mcp, running_gateway(
            str(tmp_path_factory.mktemp("mcp-bounds")), fake_upstream, env=env, own_sqlite=True) as gateway:
        yield Stack(gateway.sidecar, gateway.url, mcp)


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_50_mb_tool_answer_fails_the_call_within_a_memory_budget(stack: Stack, door: str) -> None:
    url = stack.sidecar.http_url if door == "http" else stack.envoy_url
    tool = {"type": "mcp", "server_label": "tools", "server_url": stack.mcp.json_url, "require_approval": "never",
            "allowed_tools": ["big"]}
    pid = stack.sidecar.process.pid
    before = reset_peak(pid)  # the peak RSS (VmHWM) starts again from here
    async with async_sdk(base_url=f"{url}/v1", api_key="sk-client", max_retries=0, timeout=120) as sdk:
        response = await sdk.responses.create(
            model="fake-model", input=f'call tools__big [args={{"size": {OUTPUT}}}]',
            tools=[tool])  # type: ignore[list-item]
    assert response.status == "completed"
    [call] = [item for item in response.output if item.type == "mcp_call"]
    assert "larger than" in str(call.error) and "not read" in str(call.error), call.error
    growth_mb = (status_kb(pid, "VmHWM") - before) // 1024
    assert growth_mb < 150, f"the sidecar's peak RSS grew {growth_mb} MB"


class HeldListing:
    """A server at an MCP URL that answers nothing until released, then a 503: a listing that hangs, then fails."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.asked = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> HeldListing:
        async def held(request: web.Request) -> web.Response:
            self.asked.set()
            await self.release.wait()
            return web.Response(status=503, text="not today")

        app = web.Application()
        app.router.add_route("*", "/mcp", held)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/mcp"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_the_stream_opens_before_a_slow_listing_and_stays_alive(stack: Stack, door: str) -> None:
    url = stack.sidecar.http_url if door == "http" else stack.envoy_url
    async with HeldListing() as server, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        tool = {"type": "mcp", "server_label": "slow", "server_url": server.url, "require_approval": "never"}
        body = {"model": "fake-model", "input": "hello", "tools": [tool], "stream": True}
        async with session.post(f"{url}/v1/responses", json=body) as response:
            assert response.status == 200
            seen = b""
            while b"event: response.created" not in seen or b": keep-alive" not in seen:
                chunk = await response.content.readany()
                assert chunk, seen  # the stream must not end before the listing does
                seen += chunk
            # the listing was asked for (on a busy machine perhaps only after the first keep-alive) and still hangs
            await asyncio.wait_for(server.asked.wait(), 30)
            assert not server.release.is_set() and not response.content.at_eof()
            server.release.set()
            seen += await response.content.read()
    events = parse_sse(seen.replace(b": keep-alive\n\n", b""))  # comments: what every SSE client skips
    types = [event["type"] for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed" and seen.endswith(b"data: [DONE]\n\n")
    [listing] = [item for item in events[-1]["response"]["output"] if item["type"] == "mcp_list_tools"]
    assert listing["error"]
