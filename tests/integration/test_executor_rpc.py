"""The harness side of the exec-server's JSON-RPC (services/agents/executor/rpc.py) against the exec-server of
tests/support/exec_server.py over a real websocket on 127.0.0.1: a command's outcome, its output cut at the call's
cap, a command past its timeout terminated, a JSON-RPC error, and the calls waiting when the exec-server goes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from responses_bridge.demo.procs import free_port
from responses_bridge.services.agents.executor.rpc import DirectChannel, ExecutorConnection, ExecutorError, ExecutorGone
from tests.support.exec_server import FakeExecServer

pytestmark = pytest.mark.store_free


@pytest.fixture
async def connected() -> AsyncIterator[tuple[ExecutorConnection, FakeExecServer, asyncio.Task[None]]]:
    """A bridge-side connection, initialized, to a fake exec-server (its serving task, to stop it)."""
    ready: asyncio.Queue[ExecutorConnection] = asyncio.Queue()

    async def accept(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        connection = ExecutorConnection(DirectChannel(socket))
        reader = asyncio.ensure_future(connection.serve())
        await connection.initialize()
        await connection.initialized()
        await ready.put(connection)
        await reader
        return socket

    app = web.Application()
    app.router.add_get("/connect", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = FakeExecServer(f"http://127.0.0.1:{port}", "env_x", "RBX1x", "secret")
    async with aiohttp.ClientSession() as http:
        serving = asyncio.ensure_future(server.serve(http, f"ws://127.0.0.1:{port}/connect"))
        connection = await asyncio.wait_for(ready.get(), 30)
        try:
            yield connection, server, serving
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await runner.cleanup()


Connected = tuple[ExecutorConnection, FakeExecServer, asyncio.Task[None]]


async def test_a_command_its_cap_and_its_timeout(connected: Connected, tmp_path: Path) -> None:
    connection, server, _ = connected
    assert connection.shell == "/bin/sh"  # what initialize said of the exec-server's machine
    ran = await connection.run("pwd; echo err >&2; exit 4", str(tmp_path), timeout_ms=None, output_cap=None)
    assert (ran.stdout, ran.stderr, ran.exit_code, ran.timed_out) == (f"{tmp_path}\n", "err\n", 4, False)
    capped = await connection.run("head -c 100000 /dev/zero | tr '\\0' a", str(tmp_path), timeout_ms=None,
                                  output_cap=10)
    assert capped.stdout == "a" * 10 and capped.dropped == 100000 - 10 and capped.exit_code == 0
    # a background job holding the output open: the command's outcome is its own, not the job's
    left = await connection.run("(sleep 60 &); echo done", str(tmp_path), timeout_ms=30_000, output_cap=None)
    assert (left.stdout, left.exit_code, left.timed_out) == ("done\n", 0, False)
    slow = await connection.run("sleep 30", str(tmp_path), timeout_ms=300, output_cap=None)
    assert slow.timed_out and slow.exit_code is None
    assert "process/terminate" in server.requests


async def test_an_error_and_a_disconnect(connected: Connected, tmp_path: Path) -> None:
    connection, _, serving = connected
    with pytest.raises(ExecutorError, match="unknown process id"):
        await connection.call("process/read", {"processId": "nope", "afterSeq": None, "maxBytes": 1, "waitMs": 0})
    running = asyncio.ensure_future(connection.run("sleep 30", str(tmp_path), timeout_ms=None, output_cap=None))
    await asyncio.sleep(0.3)
    serving.cancel()  # the exec-server goes while the command runs
    with pytest.raises(ExecutorGone):
        await asyncio.wait_for(running, 30)
    with pytest.raises(ExecutorGone):
        await connection.call("process/read", {"processId": "x"})
