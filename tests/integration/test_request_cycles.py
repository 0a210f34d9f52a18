"""A request's objects are freed by their reference counts when it ends, never left to the cyclic collector.

An idle server never runs a full collection (its collections are triggered by allocations, and its start's objects
are frozen: process/startup_gc.py), so whatever a request leaves in a reference cycle stays in memory: sixteen
programs' function-call items kept serve 222 MiB over its start 10 s after their answers, held by
``ProgramCalls`` <-> ``CallRunner`` (``server_job``, ``programs``); a background run's response by its
``BackgroundRun`` (``before_persist``, the step log, its writer); a JSON answer kept alive by its keeper's cancelled
task; a client gone during an MCP call by the frames its cancellation unwound through.

Here the bridge runs in the test's process (its real runtime, its HTTP door on a loopback port and its ext_proc door
behind a real Envoy; the fake upstream and the MCP test server as processes, programs in their V8 workers), the
collector off around each request: the plain, client-tool and program requests, a client gone and a failed upstream
call through both doors, the rest through the HTTP door that runs them. Once the request has ended, a collection
saving what it finds (``gc.DEBUG_SAVEALL``) must find none of the bridge's objects and none of the response's items:
what the request made was freed as it ended. The collector's own detection is checked by its control: a cycle of a
bridge object made on purpose is found.

In the test's process, so the PostgreSQL pass of scripts/test leaves the module out (the store is a SQLite file).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from responses_bridge.adapters.extproc.server import start_extproc_server
from responses_bridge.adapters.http.app import create_app
from responses_bridge.config.settings import Settings
from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.serve import open_runtime
from responses_bridge.services.write_behind import WriteBehind
from tests.support.envoy import have_envoy, start_envoy
from tests.support.mcp_server import MCPTestServer

pytestmark = pytest.mark.store_free

MODEL = "fake-model"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PROGRAM_TOOLS = [{"type": "programmatic_tool_calling"}, dict(WEATHER, allowed_callers=["programmatic"])]
PROGRAM = ('js: const big = "x".repeat(1 << 16); const r = await Promise.all(Array.from({length: 3}, '
           '(_, i) => tools.get_weather({city: big + i}))); return r.length')
"""A program that comes back with three client calls of 64 KiB of arguments each."""


@dataclass
class Bridge:
    http: aiohttp.ClientSession  # the HTTP door
    envoy: aiohttp.ClientSession | None  # Envoy, with the ext_proc door (None: no envoy binary here)
    mcp: MCPTestServer

    def door(self, name: str) -> aiohttp.ClientSession:
        if name == "http":
            return self.http
        if self.envoy is None:
            pytest.skip("envoy binary not available")
        return self.envoy

    def mcp_tool(self, **fields: Any) -> dict[str, Any]:
        return {"type": "mcp", "server_label": "tools", "server_url": self.mcp.http_url, "require_approval": "never",
                **fields}


@pytest.fixture(scope="module")
async def bridge(fake_upstream: str, mcp: MCPTestServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Bridge]:
    """The bridge in this process, both doors: its HTTP door on a loopback port and its ext_proc door behind a
    real Envoy, whose route for server-side tools leads to the HTTP door. A JSON answer is kept alive after 0.3 s,
    so a turn that takes longer commits."""
    db = tmp_path_factory.mktemp("cycles") / "bridge.db"
    listen_port = free_port()
    runtime = await open_runtime(Settings(upstream=fake_upstream, db=str(db), mcp_allowed_hosts="127.0.0.1",
                                          json_keepalive_seconds=0.3))
    await runtime.trimmer.stop()  # its own full collections (fairness/allocator.py) would hide what is looked for
    server = TestServer(create_app(runtime), port=free_port())
    await server.start_server()
    extproc = await start_extproc_server(runtime, "127.0.0.1", 0)
    envoy = await start_envoy(render_bootstrap(
        listen_port=listen_port, extproc_port=extproc.bound_port, http_port=server.port or 0,
        upstream=fake_upstream, admin_port=0)) if have_envoy() else None
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}", timeout=timeout) as http, \
                aiohttp.ClientSession(f"http://127.0.0.1:{listen_port}", timeout=timeout) as through_envoy:
            yield Bridge(http, through_envoy if envoy is not None else None, mcp)
    finally:
        if envoy is not None:
            envoy.stop()
        await extproc.stop(0)
        await server.close()
        await runtime.close()


@contextmanager
def collector_off() -> Iterator[list[Any]]:
    """The collector off while the block runs (whatever it makes in cycles stays); on leaving, one collection whose
    finds are kept in the list yielded, for the test to look at, then freed."""
    found: list[Any] = []
    gc.collect()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found += gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def left_in_cycles(found: list[Any], item_ids: set[str]) -> list[str]:
    """What of the request a collection had to free: the bridge's objects, and the response's items."""
    left = [type(thing).__module__ + "." + type(thing).__qualname__ for thing in found
            if type(thing).__module__.startswith("responses_bridge.")]
    left += [f"item {thing['id']}" for thing in found if isinstance(thing, dict) and thing.get("id") in item_ids]
    return left


async def ended() -> None:
    """The request's handler has returned and its tasks are done (the client has the last byte before that)."""
    for _ in range(3):
        await asyncio.sleep(0.1)


async def create(door: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    """One create; the response (the last event's, for a stream), after its request has ended."""
    async with door.post("/v1/responses", json={"model": MODEL, **body}) as answer:
        raw = await answer.read()
        assert answer.status == 200, raw
    await ended()
    if not body.get("stream"):
        return dict(json.loads(raw))
    last = [line for line in raw.decode().splitlines() if line.startswith("data: {")][-1]
    return dict(json.loads(last[len("data: "):])["response"])


def item_ids(response: dict[str, Any]) -> set[str]:
    return {item["id"] for item in response["output"]}


async def test_the_control_a_bridge_object_in_a_cycle_is_found() -> None:
    """What the other tests look for is seen: a bridge object in a cycle, made on purpose, is found."""
    with collector_off() as found:
        looped_back()
    assert left_in_cycles(found, set()) == ["responses_bridge.services.write_behind.WriteBehind"]


def looped_back() -> None:
    writer = WriteBehind(nothing)
    vars(writer)["loop"] = writer  # the writer holds itself: a cycle, gone from here on return


async def nothing() -> None:
    return None


DOORS = pytest.mark.parametrize("door", ["http", "envoy"])
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


@DOORS
@STREAM
async def test_a_plain_request_leaves_nothing_in_cycles(bridge: Bridge, door: str, stream: bool) -> None:
    """Through Envoy, the ext_proc door: before, its request's reservation named its task, whose context held the
    reservation."""
    await create(bridge.door(door), {"input": "warm up", "stream": stream})
    with collector_off() as found:
        response = await create(bridge.door(door), {"input": "hello there", "stream": stream})
    assert response["status"] == "completed"
    assert left_in_cycles(found, item_ids(response)) == []


@DOORS
async def test_a_client_tool_call_leaves_nothing_in_cycles(bridge: Bridge, door: str) -> None:
    with collector_off() as found:
        response = await create(bridge.door(door), {"input": "call get_weather", "tools": [WEATHER]})
    assert [item["type"] for item in response["output"]] == ["function_call"]
    assert left_in_cycles(found, item_ids(response)) == []


@DOORS
@STREAM
async def test_a_programs_calls_leave_nothing_in_cycles(bridge: Bridge, door: str, stream: bool) -> None:
    """Before, ``ProgramCalls`` and ``CallRunner`` held each other, with the output builder and every item. (Through
    Envoy the request is routed to the HTTP door, which runs programs.)"""
    pytest.importorskip("py_mini_racer")
    via = bridge.door(door)
    await create(via, {"input": "js: return 1", "tools": PROGRAM_TOOLS, "store": False})  # a worker started
    with collector_off() as found:
        response = await create(via, {"input": PROGRAM, "tools": PROGRAM_TOOLS, "store": False, "stream": stream})
    assert [item["type"] for item in response["output"]] == ["program"] + ["function_call"] * 3
    assert left_in_cycles(found, item_ids(response)) == []


@STREAM
async def test_a_tool_loop_leaves_nothing_of_the_bridge_in_cycles(bridge: Bridge, stream: bool) -> None:
    """An MCP call, then the model's answer. (The MCP client library leaves cycles of its own per connection —
    its streams and cancel scopes — which hold nothing of the response.)"""
    tool = bridge.mcp_tool()
    await create(bridge.http, {"input": 'call tools__echo [args={"text": "warm"}]', "tools": [tool]})
    with collector_off() as found:
        response = await create(bridge.http, {"input": 'call tools__echo [args={"text": "hi"}]', "tools": [tool],
                                              "stream": stream})
    assert [item["type"] for item in response["output"]][-2:] == ["mcp_call", "message"]
    assert left_in_cycles(found, item_ids(response)) == []


async def test_a_json_answer_kept_alive_leaves_nothing_in_cycles(bridge: Bridge) -> None:
    """A turn past the keep-alive's first wait: the answer is committed, then its keeper stopped. Before, the
    keeper's cancelled task held the keeper, which held it and the run."""
    with collector_off() as found:
        async with bridge.http.post("/v1/responses", json={
                "model": MODEL, "input": "slow [header_delay=900]"}) as answer:
            raw = await answer.read()
        await ended()
    assert raw.startswith(b"\n"), raw[:40]  # the control: it was kept alive
    response = json.loads(raw)
    assert left_in_cycles(found, item_ids(response)) == []


async def test_a_background_response_leaves_nothing_in_cycles(bridge: Bridge) -> None:
    """Before, the run's hook before its final save, its step log and its writer held its ``BackgroundRun``."""
    with collector_off() as found:
        async with bridge.http.post("/v1/responses", json={"model": MODEL, "input": "in the background",
                                                           "background": True}) as answer:
            response_id = (await answer.json())["id"]
        for _ in range(600):  # a loaded machine's seconds
            async with bridge.http.get(f"/v1/responses/{response_id}") as answer:
                response = await answer.json()
            if response["status"] not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.05)
        await ended()
    assert response["status"] == "completed", response
    assert left_in_cycles(found, item_ids(response)) == []


async def test_a_client_gone_during_an_mcp_call_leaves_nothing_of_the_bridge_in_cycles(bridge: Bridge) -> None:
    """The stream is closed while the MCP call runs: the run is abandoned. Before, the cancellation's traceback
    held the frames it unwound through, which held it (an ``__aexit__``'s ``exc_val``) and the whole run."""
    tool = bridge.mcp_tool()
    with collector_off() as found:
        answer = await bridge.http.post("/v1/responses", json={
            "model": MODEL, "input": 'call tools__slow [args={"seconds": 30}]', "tools": [tool], "stream": True})
        first = await answer.content.readline()
        assert first.startswith(b"event: response.created"), first  # the control: the run was under way
        await asyncio.sleep(0.5)  # the MCP call is made
        answer.close()
        for _ in range(20):  # the handler's cancellation and the abandoned run's record
            await asyncio.sleep(0.1)
    assert left_in_cycles(found, set()) == []


@DOORS
async def test_a_client_gone_mid_stream_leaves_nothing_of_the_bridge_in_cycles(bridge: Bridge, door: str) -> None:
    """The stream is closed while the model's answer stalls: the run is abandoned (through Envoy: the ext_proc
    stream reset)."""
    with collector_off() as found:
        answer = await bridge.door(door).post("/v1/responses", json={
            "model": MODEL, "input": "stalled [stall_after=2:60000]", "stream": True})
        first = await answer.content.readline()
        assert first.startswith(b"event: response.created"), first  # the control: the run was under way
        await asyncio.sleep(0.3)
        answer.close()
        for _ in range(20):  # the handler's cancellation and the abandoned run's record
            await asyncio.sleep(0.1)
    assert left_in_cycles(found, set()) == []


@DOORS
@STREAM
async def test_a_failed_upstream_call_leaves_nothing_of_the_bridge_in_cycles(bridge: Bridge, door: str,
                                                                              stream: bool) -> None:
    """The upstream answers 500: a ``response.failed`` event, or the 502 a JSON client gets."""
    with collector_off() as found:
        async with bridge.door(door).post("/v1/responses", json={
                "model": MODEL, "input": "failing [error=500]", "stream": stream}) as answer:
            raw = await answer.read()
        await ended()
    assert (answer.status, b"response.failed" in raw) == ((200, True) if stream else (502, False)), raw[:200]
    assert left_in_cycles(found, set()) == []
