"""A real MCP server for the tests, from the ``mcp`` package, over Streamable HTTP and over the older SSE transport.

Run as a child process (``python -m tests.support.mcp_server --http-port A --sse-port B --json-port C``) so that
its event loop, its threads and its logs stay out of the test process. Every port serves the same tools (port C
answers Streamable HTTP requests with plain JSON bodies instead of event streams, as servers may):

- ``add(a, b)``, ``echo(text)``; ``lookup(key)`` is annotated read-only;
- ``slow(seconds)`` sleeps, to outlast the client's call timeout;
- ``fail(message)`` raises, which MCP reports as a result with ``isError`` and the message;
- ``big(size)`` returns ``size`` bytes of text (1 MB by default);
- ``send_payment(to)`` stands for a tool with effects: every call is counted by its ``to`` (a test picks a name of
  its own), and ``GET /payments?to=NAME`` answers how many calls reached the server for it;
- ``whoami()`` returns the ``Authorization``, ``X-Api-Key`` and ``Host`` headers the request came with, so a test
  can see what the client sent; ``authorization_digest()`` the SHA-256 of the ``Authorization`` header, so a test
  can see the credential arrived where the client masks it in what comes back; ``meta()`` the request's ``_meta``
  (an agent tool's ``request_metadata``).

``GET /health`` answers 200 once the server is up. The SSE app serves its stream at ``/sse`` and also at
``/events``, so a URL that does not end in ``/sse`` can exercise the client's fallback from Streamable HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

BIG_DEFAULT = 1_000_000
PAYMENTS: dict[str, int] = {}
"""``send_payment`` calls by ``to``, shared by the process's servers (every port counts into it)."""


def build_server() -> MCPServer:
    server = MCPServer(name="bridge-test-tools", log_level="WARNING")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Look a key up; changes nothing.", annotations=ToolAnnotations(read_only_hint=True))
    def lookup(key: str) -> str:
        return f"value of {key}"

    @server.tool(description="Sleep, then answer.")
    async def slow(seconds: float = 30.0) -> str:
        await asyncio.sleep(seconds)
        return "finally"

    @server.tool(description="Always fails.")
    def fail(message: str = "the tool failed on purpose") -> str:
        raise ToolError(message)  # an anticipated failure: its text reaches the client

    @server.tool(description="Return a lot of text.")
    def big(size: int = BIG_DEFAULT) -> str:
        return "x" * size

    @server.tool(description="The credentials this request carried.", annotations=ToolAnnotations(read_only_hint=True))
    def whoami(ctx: Context) -> str:
        request = ctx.request_context.request
        headers = getattr(request, "headers", {}) or {}
        return (f"authorization={headers.get('authorization')} x-api-key={headers.get('x-api-key')} "
                f"host={headers.get('host')}")

    @server.tool(description="The SHA-256 (hex) of the Authorization header this request carried.",
                 annotations=ToolAnnotations(read_only_hint=True))
    def authorization_digest(ctx: Context) -> str:
        request = ctx.request_context.request
        headers = getattr(request, "headers", {}) or {}
        return hashlib.sha256((headers.get("authorization") or "").encode()).hexdigest()

    @server.tool(description="The request's _meta, as JSON.", annotations=ToolAnnotations(read_only_hint=True))
    def meta(ctx: Context) -> str:
        return json.dumps(dict(ctx.request_context.meta or {}), sort_keys=True, default=str)

    @server.tool(description="Send a payment: a call with effects, counted.")
    def send_payment(to: str) -> str:
        PAYMENTS[to] = PAYMENTS.get(to, 0) + 1
        return f"paid {to}"

    @server.custom_route("/payments", methods=["GET"])
    async def payments(request: Request) -> Response:
        return PlainTextResponse(str(PAYMENTS.get(request.query_params.get("to", ""), 0)))

    @server.custom_route("/health", methods=["GET"])
    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    return server


async def serve(http_port: int, sse_port: int, json_port: int) -> None:
    server = build_server()
    streamable = server.streamable_http_app()
    plain_json = build_server().streamable_http_app(json_response=True)
    sse = server.sse_app()
    legacy = server.sse_app(sse_path="/events", message_path="/event-messages/")
    for route in legacy.routes:  # one SSE app answering at both /sse and /events
        if getattr(route, "path", "") not in ("/health",):
            sse.routes.append(route)
    servers = [
        uvicorn.Server(uvicorn.Config(streamable, host="127.0.0.1", port=http_port, log_level="warning")),
        uvicorn.Server(uvicorn.Config(sse, host="127.0.0.1", port=sse_port, log_level="warning")),
        uvicorn.Server(uvicorn.Config(plain_json, host="127.0.0.1", port=json_port, log_level="warning")),
    ]
    await asyncio.gather(*(one.serve() for one in servers))


class MCPTestServer:
    """The server as a child process, with the URLs the tests use."""

    def __init__(self) -> None:
        self.http_port = free_port()
        self.sse_port = free_port()
        self.json_port = free_port()
        self.process = ManagedProcess(
            [sys.executable, "-m", "tests.support.mcp_server", "--http-port", str(self.http_port),
             "--sse-port", str(self.sse_port), "--json-port", str(self.json_port)], "mcp test server")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mcp"

    @property
    def json_url(self) -> str:
        """Streamable HTTP whose answers are JSON bodies (read whole by a client, unlike an event stream)."""
        return f"http://127.0.0.1:{self.json_port}/mcp"

    @property
    def sse_url(self) -> str:
        return f"http://127.0.0.1:{self.sse_port}/sse"

    @property
    def sse_fallback_url(self) -> str:
        return f"http://127.0.0.1:{self.sse_port}/events"

    async def start(self) -> None:
        self.process.start()
        await wait_http(f"http://127.0.0.1:{self.http_port}/health", process=self.process)
        await wait_http(f"http://127.0.0.1:{self.sse_port}/health", process=self.process)
        await wait_http(f"http://127.0.0.1:{self.json_port}/health", process=self.process)

    def stop(self) -> None:
        self.process.stop()

    async def payments(self, to: str) -> int:
        """How many ``send_payment`` calls for ``to`` reached the server."""
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{self.http_port}/payments", params={"to": to}) as answer:
            return int(await answer.text())


@asynccontextmanager
async def running_mcp_server() -> AsyncIterator[MCPTestServer]:
    server = MCPTestServer()
    try:
        await server.start()
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--sse-port", type=int, required=True)
    parser.add_argument("--json-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.http_port, args.sse_port, args.json_port))


if __name__ == "__main__":
    main()
