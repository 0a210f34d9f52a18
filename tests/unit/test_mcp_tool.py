"""run/tools/mcp.py against real servers: the ``mcp`` package's own server over Streamable HTTP and SSE (a child
process, tests/support/mcp_server.py), a plain aiohttp server that answers nonsense or nothing, and a closed port.
Timeouts are short so that the failures are quick; nothing here asserts how long anything took."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
import pytest
import structlog
from aiohttp import web
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from openai.types.responses.response_output_item import McpListToolsTool

from responses_bridge.demo.procs import free_port
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.tools.mcp import (
    MCPCallResult,
    MCPLimits,
    MCPToolError,
    MCPToolInfo,
    MCPTools,
    parse_mcp_tool,
    tools_from_list_item,
)
from responses_bridge.run.tools.mcp_session import render_content
from tests.support.mcp_server import MCPTestServer, running_mcp_server

SECRET_HEADER = "hdr-secret-8d1f0c"
SECRET_TOKEN = "tok-secret-51ab77"
SECRET_IN_URL = "url-secret-0c93e2"  # MCP server URLs often carry a key in their query or path
LOCAL = "127.0.0.1,::1"
ALL_TOOLS = ["add", "echo", "lookup", "slow", "fail", "big", "whoami", "authorization_digest", "meta",
             "send_payment"]
READ_ONLY = ["lookup", "whoami", "authorization_digest", "meta"]  # the test server's that say they only read


@pytest.fixture(scope="module")
async def mcp_server() -> AsyncIterator[MCPTestServer]:
    async with running_mcp_server() as server:
        yield server


class GarbageServer:
    """Answers every request with something that is not MCP, or with nothing at all."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None
        self.release = asyncio.Event()
        self.hanging = asyncio.Event()  # set once a request is being held

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        async def plain(_: web.Request) -> web.Response:
            return web.Response(text="hello, I am not an MCP server")

        async def json(_: web.Request) -> web.Response:
            return web.json_response({"nonsense": [1, 2, 3]})

        async def hang(_: web.Request) -> web.Response:
            self.hanging.set()
            await self.release.wait()
            return web.Response(text="too late")

        async def cut(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"event: message\ndata: {\"jsonrpc\": \"2.0\", \"id\"")
            assert request.transport is not None
            request.transport.close()  # the connection dies mid-answer
            return response

        app = web.Application()
        app.router.add_route("*", "/plain", plain)
        app.router.add_route("*", "/json", json)
        app.router.add_route("*", "/hang", hang)
        app.router.add_route("*", "/cut", cut)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)  # its log is not the client's
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture(scope="module")
async def garbage() -> AsyncIterator[GarbageServer]:
    server = GarbageServer()
    await server.start()
    yield server
    await server.stop()


def limits(**overrides: Any) -> MCPLimits:
    return MCPLimits(**{"allowed_hosts": LOCAL, "connect_timeout": 2.0, "call_timeout": 5.0,
                        "total_timeout": 10.0, **overrides})


def server_for(url: str, **fields: Any) -> Any:
    return parse_mcp_tool({"type": "mcp", "server_label": "test", "server_url": url, **fields}, 0)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/mcp"


async def test_lists_tools_over_streamable_http_as_the_sdk_types_them(mcp_server: MCPTestServer) -> None:
    tools = await MCPTools(limits()).list_tools(server_for(mcp_server.http_url))
    assert [tool.name for tool in tools] == ALL_TOOLS
    by_name = {tool.name: tool for tool in tools}
    assert by_name["add"].description == "Add two integers."
    assert set(by_name["add"].input_schema["properties"]) == {"a", "b"}
    assert by_name["lookup"].annotations == {"readOnlyHint": True} and by_name["lookup"].read_only is True
    assert by_name["add"].read_only is None
    for tool in tools:
        McpListToolsTool.model_validate(tool.as_item())


@pytest.mark.parametrize("which", ["sse_url", "sse_fallback_url"])
async def test_lists_and_calls_over_sse(mcp_server: MCPTestServer, which: str) -> None:
    """``/sse`` goes to SSE at once; ``/events`` is tried over Streamable HTTP first, refused (405), then SSE."""
    server = server_for(getattr(mcp_server, which))
    tools = MCPTools(limits())
    assert [tool.name for tool in await tools.list_tools(server)] == ALL_TOOLS
    assert await tools.call_tool(server, "add", {"a": 20, "b": 22}) == MCPCallResult(output="42")


async def test_call_returns_the_text_output(mcp_server: MCPTestServer) -> None:
    tools = MCPTools(limits())
    server = server_for(mcp_server.http_url)
    assert await tools.call_tool(server, "add", {"a": 2, "b": 3}) == MCPCallResult(output="5")
    assert await tools.call_tool(server, "echo", {"text": "héllo"}) == MCPCallResult(output="héllo")


async def test_parallel_calls_are_independent(mcp_server: MCPTestServer) -> None:
    """A loop with parallel_tool_calls runs several calls at once, a slow one among them: each gets its own
    answer, and the slow one's timeout ends only that call."""
    tools = MCPTools(limits(call_timeout=1.0))
    server = server_for(mcp_server.http_url)
    sse = server_for(mcp_server.sse_url)
    results = await asyncio.gather(
        *(tools.call_tool(server, "add", {"a": n, "b": 1}) for n in range(4)),
        tools.call_tool(sse, "echo", {"text": "over sse"}),
        tools.call_tool(server, "slow", {"seconds": 30}),
    )
    assert results[:5] == [MCPCallResult(output=str(n + 1)) for n in range(4)] + [MCPCallResult(output="over sse")]
    message = "MCP server 'test' did not answer the tool call within 1 s."
    assert results[5] == MCPCallResult(error=message, error_item={"type": "http_error", "code": 504,
                                                                  "message": message})


async def test_a_failing_tool_is_an_error_result(mcp_server: MCPTestServer) -> None:
    result = await MCPTools(limits()).call_tool(server_for(mcp_server.http_url), "fail", {"message": "boom"})
    assert result == MCPCallResult(error="Error executing tool fail: boom")


async def test_an_unknown_tool_is_an_error_result(mcp_server: MCPTestServer) -> None:
    result = await MCPTools(limits()).call_tool(server_for(mcp_server.http_url), "nope", {})
    assert result.output is None and result.error and "nope" in result.error


async def test_headers_and_authorization_reach_the_server_with_the_original_host(mcp_server: MCPTestServer) -> None:
    url = mcp_server.http_url.replace("127.0.0.1", "localhost")
    server = server_for(url, headers={"X-Api-Key": SECRET_HEADER}, authorization=SECRET_TOKEN)
    tools = MCPTools(limits(allowed_hosts="localhost"))
    result = await tools.call_tool(server, "whoami", {})
    # the token is masked in what the server echoes (the client's other headers are its own)
    assert result.output == (f"authorization=[redacted] x-api-key={SECRET_HEADER} "
                             f"host=localhost:{mcp_server.http_port}")
    digest = await tools.call_tool(server, "authorization_digest", {})
    assert digest.output == hashlib.sha256(f"Bearer {SECRET_TOKEN}".encode()).hexdigest()


async def test_request_metadata_is_each_requests_meta(mcp_server: MCPTestServer) -> None:
    """An overlay's ``meta`` (an agent tool's ``request_metadata``) reaches the server as the call's ``_meta``; a
    server without it gets none of ours."""
    tools = MCPTools(limits())
    server = dataclasses.replace(server_for(mcp_server.http_url), meta={"team": "blue", "depth": 2})
    result = await tools.call_tool(server, "meta", {})
    meta = orjson.loads(result.output or "{}")
    assert (meta.get("team"), meta.get("depth")) == ("blue", 2), result
    plain = orjson.loads((await tools.call_tool(server_for(mcp_server.http_url), "meta", {})).output or "{}")
    assert "team" not in plain and "depth" not in plain


async def test_allowed_tools_filter_the_listing(mcp_server: MCPTestServer) -> None:
    tools = MCPTools(limits())
    names = await tools.list_tools(server_for(mcp_server.http_url, allowed_tools=["echo", "add", "absent"]))
    assert [tool.name for tool in names] == ["add", "echo"]
    read_only = await tools.list_tools(server_for(mcp_server.http_url, allowed_tools={"read_only": True}))
    assert [tool.name for tool in read_only] == READ_ONLY


async def test_a_tool_outside_allowed_tools_is_not_called(mcp_server: MCPTestServer) -> None:
    result = await MCPTools(limits()).call_tool(server_for(mcp_server.http_url, allowed_tools=["echo"]),
                                                "add", {"a": 1, "b": 1})
    assert result.output is None and "allowed_tools" in (result.error or "")


async def test_a_read_only_filter_holds_for_calls(mcp_server: MCPTestServer) -> None:
    tools = MCPTools(limits())
    server = server_for(mcp_server.http_url, allowed_tools={"read_only": True})
    unlisted = await tools.call_tool(server, "lookup", {"key": "k"})
    assert unlisted.output is None and "allowed_tools" in (unlisted.error or "")  # nothing listed yet
    assert [tool.name for tool in await tools.list_tools(server)] == READ_ONLY
    assert await tools.call_tool(server, "lookup", {"key": "k"}) == MCPCallResult(output="value of k")
    refused = await tools.call_tool(server, "add", {"a": 1, "b": 2})
    assert refused.output is None and "allowed_tools" in (refused.error or "")


async def test_output_past_the_cap_is_truncated_with_a_marker(mcp_server: MCPTestServer) -> None:
    result = await MCPTools(limits(max_output_bytes=1000)).call_tool(server_for(mcp_server.http_url), "big", {})
    assert result.error is None and result.output is not None
    kept, marker = result.output.split("\n", 1)
    assert kept == "x" * 1000
    assert marker == "[output truncated: 999000 of 1000000 bytes omitted]"


async def test_one_megabyte_is_capped_by_default(mcp_server: MCPTestServer) -> None:
    assert limits().max_output_bytes == MCPLimits().max_output_bytes == 256 * 1024
    result = await MCPTools(limits()).call_tool(server_for(mcp_server.http_url), "big", {})
    assert result.output is not None and result.output.startswith("x" * MCPLimits().max_output_bytes + "\n[output")


async def test_the_cap_cuts_on_a_character_boundary(mcp_server: MCPTestServer) -> None:
    result = await MCPTools(limits(max_output_bytes=5)).call_tool(server_for(mcp_server.http_url), "echo",
                                                                  {"text": "ééé"})
    assert result.output == "éé\n[output truncated: 2 of 6 bytes omitted]"


async def test_a_slow_tool_fails_at_the_call_timeout(mcp_server: MCPTestServer) -> None:
    result = await MCPTools(limits(call_timeout=0.5)).call_tool(server_for(mcp_server.http_url), "slow",
                                                                {"seconds": 30})
    message = "MCP server 'test' did not answer the tool call within 0.5 s."
    assert result == MCPCallResult(error=message, error_item={"type": "http_error", "code": 504, "message": message})


async def test_a_slow_tool_over_sse_fails_at_the_call_timeout(mcp_server: MCPTestServer) -> None:
    result = await MCPTools(limits(call_timeout=0.5)).call_tool(server_for(mcp_server.sse_url), "slow",
                                                                {"seconds": 30})
    message = "MCP server 'test' did not answer the tool call within 0.5 s."
    assert result == MCPCallResult(error=message, error_item={"type": "http_error", "code": 504, "message": message})


async def test_an_unreachable_server_is_a_clear_error() -> None:
    server = server_for(closed_port_url())
    with pytest.raises(MCPToolError, match=r"^MCP server 'test' could not be reached: "):
        await MCPTools(limits()).list_tools(server)
    result = await MCPTools(limits()).call_tool(server, "add", {})
    assert result.output is None and (result.error or "").startswith("MCP server 'test' could not be reached")
    # a transport failure is the SDK's http_error (the gateway's 502: no status of the server's own)
    assert result.error_item == {"type": "http_error", "code": 502, "message": result.error}


async def test_an_unresolvable_host_is_a_clear_error() -> None:
    server = server_for("http://no-such-host.invalid/mcp")
    await MCPTools(limits()).check_server(server)  # not the client's fault: reported on the item
    with pytest.raises(MCPToolError, match="could not be resolved"):
        await MCPTools(limits()).list_tools(server)


@pytest.mark.parametrize(("path", "expected", "kind", "code"), [
    ("/plain", r"did not answer as an MCP server: Unexpected content type: text/plain.* over SSE: .*not valid MCP",
     "http_error", 502),
    ("/json", r"did not answer as an MCP server: Failed to parse JSON response: .* over SSE: .*not valid MCP",
     "http_error", 502),
    ("/cut", r"broke the connection: peer closed connection", "http_error", 502),
    ("/plain/sse", r"answered HTTP 404\.$", "http_error", 404),
])
async def test_a_garbage_server_is_a_clear_error(garbage: GarbageServer, path: str, expected: str, kind: str,
                                                 code: int) -> None:
    with pytest.raises(MCPToolError, match=expected) as raised:
        await MCPTools(limits()).list_tools(server_for(garbage.url(path)))
    assert str(raised.value).startswith("MCP server 'test' ")
    assert raised.value.item_error() == {"type": kind, "code": code, "message": str(raised.value)}
    result = await MCPTools(limits()).call_tool(server_for(garbage.url(path)), "add", {})
    assert result.error_item is not None and result.error_item["type"] == kind and result.error_item["code"] == code


async def test_a_server_that_never_answers_fails_at_the_total_timeout(garbage: GarbageServer) -> None:
    with pytest.raises(MCPToolError) as raised:
        await MCPTools(limits(total_timeout=0.5)).list_tools(server_for(garbage.url("/hang")))
    assert str(raised.value) == "MCP server 'test' did not list tools within 0.5 s."
    assert raised.value.item_error()["code"] == 504


async def test_cancellation_of_the_caller_propagates(garbage: GarbageServer) -> None:
    """Stopping a response mid-listing is the caller's cancellation, not an MCP failure to report."""
    garbage.hanging.clear()
    task = asyncio.create_task(MCPTools(limits(total_timeout=30)).list_tools(server_for(garbage.url("/hang"))))
    await asyncio.wait_for(garbage.hanging.wait(), 10)  # the request is on the wire; then the caller goes away
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the host policy, up front and on the connection -------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:9/mcp", "http://localhost:9/mcp", "http://[::1]:9/mcp",
                                 "http://169.254.169.254/latest", "http://10.0.0.1/mcp",
                                 "http://[::ffff:127.0.0.1]:9/mcp", "http://0.0.0.0:9/mcp"])
async def test_non_public_hosts_are_refused_before_anything_is_sent(url: str) -> None:
    with pytest.raises(APIError) as raised:
        await MCPTools(limits(allowed_hosts="")).check_server(server_for(url))
    error = raised.value
    assert (error.status, error.code, error.param) == (400, "mcp_host_not_allowed", "tools[0].server_url")
    assert "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS" in error.message


@pytest.mark.parametrize(("allowed", "url"), [
    ("127.0.0.1", "http://127.0.0.1:9/mcp"),
    ("127.0.0.0/8", "http://127.0.0.1:9/mcp"),
    ("localhost", "http://localhost:9/mcp"),
    ("::1", "http://[::1]:9/mcp"),
    ("::1/128", "http://[::1]:9/mcp"),
])
async def test_listed_hosts_pass(allowed: str, url: str) -> None:
    await MCPTools(limits(allowed_hosts=allowed)).check_server(server_for(url))


async def test_a_name_that_resolves_to_a_listed_address_passes() -> None:
    await MCPTools(limits(allowed_hosts="127.0.0.1,::1")).check_server(server_for("http://localhost:9/mcp"))


async def test_a_public_host_passes() -> None:
    await MCPTools(limits(allowed_hosts="")).check_server(server_for("https://93.184.216.34/mcp"))


async def test_an_ipv6_loopback_server_is_reached_only_when_listed() -> None:
    """End to end over IPv6: the socket layer connects to the checked ``::1`` itself."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]

    async def plain(_: web.Request) -> web.Response:
        return web.Response(text="not MCP either")

    app = web.Application()
    app.router.add_route("*", "/mcp", plain)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "::1", port).start()
    try:
        server = server_for(f"http://[::1]:{port}/mcp")
        with pytest.raises(MCPToolError, match="non-public address"):
            await MCPTools(limits(allowed_hosts="")).list_tools(server)
        with pytest.raises(MCPToolError, match="did not answer as an MCP server: Unexpected content type"):
            await MCPTools(limits(allowed_hosts="::1")).list_tools(server)
    finally:
        await runner.cleanup()


async def test_the_connection_itself_is_checked(mcp_server: MCPTestServer) -> None:
    """Without the up-front check (a loop that forgot it, or a name whose answer changed), the connection is
    refused by the socket layer: nothing reaches the server."""
    with pytest.raises(MCPToolError, match="non-public address"):
        await MCPTools(limits(allowed_hosts="")).list_tools(server_for(mcp_server.http_url))
    result = await MCPTools(limits(allowed_hosts="")).call_tool(server_for(mcp_server.http_url), "add", {})
    assert "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS" in (result.error or "")


async def test_dns_rebinding_cannot_slip_past_the_check(monkeypatch: pytest.MonkeyPatch,
                                                        mcp_server: MCPTestServer) -> None:
    """The name answers with a public address when checked, then with loopback: the connection goes only to an
    address that passed the check, so the second answer is refused, not connected to."""
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1", "127.0.0.1"])
    real = anyio.getaddrinfo

    async def rebinding(host: str, port: int, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return await real(host, port, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(anyio, "getaddrinfo", rebinding)  # the module host_policy imports at its first lookup
    tools = MCPTools(limits(allowed_hosts=""))
    server = server_for(f"http://rebind.test:{mcp_server.http_port}/mcp")
    await tools.check_server(server)  # the first answer is public
    with pytest.raises(MCPToolError, match=r"'rebind.test' resolves to 127.0.0.1"):
        await tools.list_tools(server)


# -- the tool-list cache -------------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SEEDED = [MCPToolInfo(name="remembered", description=None, input_schema={"type": "object"})]


async def test_a_listing_is_reused_within_the_ttl_and_not_after() -> None:
    """Seeded for a closed port: a fresh entry is served without connecting; an expired one connects (and fails)."""
    clock = Clock()
    tools = MCPTools(limits(list_ttl=60), clock=clock)
    server = server_for(closed_port_url())
    tools.cache.put(server, SEEDED)
    clock.now += 59
    assert await tools.list_tools(server) == SEEDED
    clock.now += 1
    with pytest.raises(MCPToolError, match="could not be reached"):
        await tools.list_tools(server)


async def test_the_cache_key_includes_the_headers() -> None:
    tools = MCPTools(limits())
    url = closed_port_url()
    tools.cache.put(server_for(url, authorization="token-a"), SEEDED)
    assert await tools.list_tools(server_for(url, authorization="token-a")) == SEEDED
    for other in (server_for(url, authorization="token-b"), server_for(url),
                  server_for(url, headers={"Authorization": "Bearer token-a", "X-More": "1"})):
        with pytest.raises(MCPToolError):
            await tools.list_tools(other)


async def test_a_ttl_of_zero_lists_every_time() -> None:
    tools = MCPTools(limits(list_ttl=0))
    server = server_for(closed_port_url())
    tools.cache.put(server, SEEDED)
    with pytest.raises(MCPToolError):
        await tools.list_tools(server)


async def test_a_seeded_listing_does_not_hide_the_servers_other_tools(mcp_server: MCPTestServer) -> None:
    """A previous response's mcp_list_tools item lists what its allowed_tools let through: a later request with
    other allowed_tools must still get those (regression: the seeded item replaced the whole listing)."""
    tools = MCPTools(limits())
    tools.seed(server_for(mcp_server.http_url, allowed_tools=["add"]), [SEEDED[0]])
    listed = await tools.list_tools(server_for(mcp_server.http_url, allowed_tools=["slow"]))
    assert [tool.name for tool in listed] == ["slow"]


async def test_a_real_listing_is_cached_once(mcp_server: MCPTestServer) -> None:
    tools = MCPTools(limits())
    server = server_for(mcp_server.http_url)
    with structlog.testing.capture_logs() as logs:
        first = await tools.list_tools(server)
        second = await tools.list_tools(server_for(mcp_server.http_url, allowed_tools=["add"]))
    assert [tool.name for tool in first] == ALL_TOOLS and [tool.name for tool in second] == ["add"]
    assert [entry["event"] for entry in logs].count("mcp_tools_listed") == 1


async def test_the_cache_holds_no_secret() -> None:
    tools = MCPTools(limits())
    url = f"http://user:{SECRET_TOKEN}@127.0.0.1:9/mcp?key={SECRET_TOKEN}"
    tools.seed(server_for(url, headers={"X-Api-Key": SECRET_HEADER}, authorization=SECRET_TOKEN), SEEDED)
    stored = repr(tools.cache._entries).encode() + b"".join(tools.cache.keys())
    for secret in (SECRET_HEADER, SECRET_TOKEN, "127.0.0.1"):
        assert secret.encode() not in stored


def test_a_previous_list_item_stands_in_for_a_listing() -> None:
    item = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "test", "tools": [
        {"name": "add", "description": "Add", "input_schema": {"type": "object"}, "annotations": None},
        {"name": "lookup", "input_schema": {"type": "object"}, "annotations": {"readOnlyHint": True}},
        {"description": "no name"}, {"name": "odd", "input_schema": "not a schema"},
    ]}
    tools = tools_from_list_item(item)
    assert tools is not None and [tool.name for tool in tools] == ["add", "lookup", "odd"]
    assert tools[1].read_only is True and tools[2].input_schema == {"type": "object", "properties": {}}
    assert tools_from_list_item({**item, "error": "MCP server 'test' could not be reached"}) is None
    assert tools_from_list_item({"type": "mcp_call"}) is None


# -- secrets stay out of logs and error texts ---------------------------------------------------------------------

async def test_secrets_are_in_no_log_and_no_error(mcp_server: MCPTestServer, garbage: GarbageServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Every path, with every log captured down to DEBUG. (The tools called here do not echo the credentials
    back: what a server chooses to answer is its own business, see the next test.)"""
    caplog.set_level(logging.DEBUG)
    secret_fields = {"headers": {"X-Api-Key": SECRET_HEADER}, "authorization": SECRET_TOKEN}
    texts: list[str] = []
    with structlog.testing.capture_logs() as logs:
        tools = MCPTools(limits(call_timeout=0.5, total_timeout=1))
        for url in (mcp_server.http_url, mcp_server.sse_url):
            server = server_for(f"{url}?key={SECRET_IN_URL}", **secret_fields)
            await tools.list_tools(server)
            for name, arguments in (("add", {"a": 1, "b": 2}), ("fail", {}), ("slow", {"seconds": 30})):
                result = await tools.call_tool(server, name, arguments)
                if result.error:
                    texts.append(result.error)
        for url in (closed_port_url(), garbage.url("/plain"), garbage.url("/hang"), garbage.url("/cut")):
            try:
                await tools.list_tools(server_for(f"{url}?key={SECRET_IN_URL}", **secret_fields))
            except MCPToolError as failure:
                texts.append(str(failure))
        try:
            await MCPTools(limits(allowed_hosts="")).check_server(server_for(mcp_server.http_url, **secret_fields))
        except APIError as refused:
            texts.append(refused.message)
    assert len(texts) == 9
    everything = "\n".join(texts) + repr(logs) + caplog.text
    for secret in (SECRET_HEADER, SECRET_TOKEN, SECRET_IN_URL):
        assert secret not in everything
    assert any(entry["event"] == "mcp_list_tools_failed" for entry in logs)


async def test_a_credential_quoted_back_in_an_error_is_redacted(mcp_server: MCPTestServer) -> None:
    server = server_for(mcp_server.http_url, headers={"X-Api-Key": SECRET_HEADER}, authorization=SECRET_TOKEN)
    result = await MCPTools(limits()).call_tool(server, "fail", {"message": f"{SECRET_TOKEN} / {SECRET_HEADER}"})
    assert result == MCPCallResult(error="Error executing tool fail: [redacted] / [redacted]")


def test_the_mcp_client_library_loads_on_first_use() -> None:
    """It weighs about 50 MB: a bridge that never sees an mcp tool does not pay for it."""
    code = ("import sys, responses_bridge.run.tools.mcp, responses_bridge.config.settings; "
            "print(sorted(name for name in ('mcp', 'mcp.client', 'httpx2', 'httpcore2') if name in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_content_other_than_text_is_named_briefly() -> None:
    result = CallToolResult(content=[
        TextContent(text="first"),
        ImageContent(data="aGVsbG8=", mime_type="image/png"),
        ResourceLink(name="report", uri="file:///report.pdf"),
        EmbeddedResource(resource=TextResourceContents(uri="file:///a.txt", text="inline text")),
        EmbeddedResource(resource=BlobResourceContents(uri="file:///b.bin", blob="AAE=")),
    ])
    assert render_content(result).split("\n") == [
        "first", "[image content, image/png]", "[resource link: file:///report.pdf]", "inline text",
        "[resource file:///b.bin, binary]"]
    assert render_content(CallToolResult(content=[], structured_content={"n": 1})) == '{"n":1}'
