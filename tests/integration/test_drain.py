"""SIGTERM with live streams, through both doors: new work is refused, streams that end within the drain timeout
end normally, the rest end with ``response.failed`` (``server_shutdown``) and ``[DONE]``, and the process exits. A
background run still going is handed off instead (its readers' streams end with ``[DONE]``, nothing failed).

Each test starts its own sidecar (with ``RESPONSES_BRIDGE_DRAIN_TIMEOUT=2``) so the signal reaches only it. The
process exit is awaited with a generous bound: the bar (drain timeout + 2 s) is measured, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.store.base import DEFAULT_TENANT
from tests.integration.test_background import parse_sse
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import start_envoy
from tests.support.schema import check_stream
from tests.support.sdk_strict import failure_reason
from tests.support.sidecar_state import sidecar_stores

MODEL = "fake-model"
DRAIN_SECONDS = 2
EXIT_BOUND_SECONDS = 30  # generous: a loaded machine must not fail the test, a hang still must
STREAMS = 20
SHORT = "short [chunks=4] [delay=100]"  # ends well within the drain timeout
LONG = "long [chunks=600] [delay=100]"  # 60 s: still running at the drain deadline, and past EXIT_BOUND_SECONDS
DRAIN_ENV = {"RESPONSES_BRIDGE_DRAIN_TIMEOUT": str(DRAIN_SECONDS)}


class LiveStream:
    """One streamed ``POST /v1/responses``, read to its end; ``started`` is set at its first event."""

    def __init__(self, session: aiohttp.ClientSession, url: str, text: str) -> None:
        self.started = asyncio.Event()
        self.raw = b""
        self.task = asyncio.create_task(self._read(session, url, text))

    async def _read(self, session: aiohttp.ClientSession, url: str, text: str) -> None:
        async with session.post(f"{url}/v1/responses", json={"model": MODEL, "input": text, "stream": True}) as r:
            assert r.status == 200, await r.text()
            async for chunk in r.content.iter_any():
                self.raw += chunk
                if b"\n\n" in self.raw:
                    self.started.set()

    def events(self) -> list[dict]:
        return check_stream(self.raw)  # framing, schema, sequence numbers, and the final [DONE]


async def wait_exit(process: subprocess.Popen[bytes], timeout: float = EXIT_BOUND_SECONDS) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while process.poll() is None:
        assert asyncio.get_running_loop().time() < deadline, f"the sidecar did not exit within {timeout} s"
        await asyncio.sleep(0.05)
    return process.returncode


async def start_streams(session: aiohttp.ClientSession, url: str) -> list[LiveStream]:
    """Half short, half long; returns once every one has its first event (all are live)."""
    streams = [LiveStream(session, url, SHORT if index % 2 else LONG) for index in range(STREAMS)]
    await asyncio.wait_for(asyncio.gather(*(stream.started.wait() for stream in streams)), EXIT_BOUND_SECONDS)
    return streams


async def until_refused(session: aiohttp.ClientSession, url: str) -> dict:
    """Polls a new request until the draining door refuses it; returns the error body."""
    deadline = asyncio.get_running_loop().time() + EXIT_BOUND_SECONDS
    while True:
        async with session.post(f"{url}/v1/responses", json={"model": MODEL, "input": "late"}) as r:
            if r.status == 503:
                return await r.json()
            assert r.status == 200, await r.text()
        assert asyncio.get_running_loop().time() < deadline, "new requests were never refused"
        await asyncio.sleep(0.05)


def check_terminal(streams: list[LiveStream]) -> None:
    for index, stream in enumerate(streams):
        assert stream.task.done() and stream.task.exception() is None, stream.task
        events = stream.events()
        last = events[-1]
        if index % 2:  # short: it ended normally during the drain
            assert last["type"] == "response.completed", last
        else:
            assert last["type"] == "response.failed", last
            assert last["response"]["status"] == "failed"
            assert failure_reason(last["response"]["error"]) == "server_shutdown"


async def stored_statuses(db: str, ids: list[str]) -> dict[str, str]:
    """The stored status of each of ``ids`` that is stored (of the default tenant, as every request here)."""
    async with sidecar_stores(db) as stores:
        found = {response_id: await stores.responses.get_response(response_id, tenant=DEFAULT_TENANT)
                 for response_id in ids}
    return {response_id: response["status"] for response_id, response in found.items() if response is not None}


def db_of(sidecar: Sidecar) -> str:
    return sidecar.process.argv[sidecar.process.argv.index("--db") + 1]


@pytest.fixture
async def draining_sidecar(tmp_path, fake_upstream: str) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path), fake_upstream, env=DRAIN_ENV) as started:
        yield started


async def test_sigterm_ends_20_live_streams_on_the_http_door(draining_sidecar: Sidecar) -> None:
    url = draining_sidecar.http_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        streams = await start_streams(session, url)
        os.kill(draining_sidecar.process.pid, signal.SIGTERM)
        refused = await until_refused(session, url)
        assert refused["error"]["code"] == "server_shutting_down"
        assert set(refused["error"]) == {"message", "type", "param", "code"}
        assert await wait_exit(draining_sidecar.process.process) == 0
        await asyncio.wait_for(asyncio.gather(*(stream.task for stream in streams), return_exceptions=True), 10)
    check_terminal(streams)
    ids = [stream.events()[0]["response"]["id"] for stream in streams]
    statuses = await stored_statuses(db_of(draining_sidecar), ids)
    assert [statuses.get(rid) for rid in ids] == ["failed" if index % 2 == 0 else "completed"
                                                  for index in range(STREAMS)]


async def test_sigterm_ends_a_websocket_turn_then_closes_the_socket(draining_sidecar: Sidecar) -> None:
    async with (aiohttp.ClientSession(base_url=draining_sidecar.http_url) as session,
                session.ws_connect("/v1/responses") as busy, session.ws_connect("/v1/responses") as idle):
        await busy.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": LONG}))
        first = json.loads((await busy.receive(timeout=EXIT_BOUND_SECONDS)).data)
        assert first["type"] == "response.created"
        os.kill(draining_sidecar.process.pid, signal.SIGTERM)
        closed = await idle.receive(timeout=EXIT_BOUND_SECONDS)  # an idle socket is closed at once
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == aiohttp.WSCloseCode.GOING_AWAY
        events = []
        while True:
            message = await busy.receive(timeout=EXIT_BOUND_SECONDS)
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            events.append(json.loads(message.data))
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY
    assert events[-1]["type"] == "response.failed"
    assert failure_reason(events[-1]["response"]["error"]) == "server_shutdown"
    assert await wait_exit(draining_sidecar.process.process) == 0
    statuses = await stored_statuses(db_of(draining_sidecar), [first["response"]["id"]])
    assert statuses == {first["response"]["id"]: "failed"}


async def test_sigterm_hands_off_a_followed_background_run(draining_sidecar: Sidecar) -> None:
    """A background run still going at the drain deadline is handed off, not failed: its reader's stream ends
    cleanly (``[DONE]``, no terminal event) and the response stays ``in_progress`` for the next start to resume
    (test_background_resume.py)."""
    body = {"model": MODEL, "input": LONG, "background": True, "stream": True}
    async with (aiohttp.ClientSession(base_url=draining_sidecar.http_url) as session,
                session.post("/v1/responses", json=body) as r):
        assert r.status == 200
        raw = await r.content.readuntil(b"\n\n")
        os.kill(draining_sidecar.process.pid, signal.SIGTERM)
        raw += await r.read()
    events, done = parse_sse(raw)
    assert done
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert not any(event["type"] in ("response.failed", "response.completed") for event in events)
    assert await wait_exit(draining_sidecar.process.process) == 0
    assert await stored_statuses(db_of(draining_sidecar), [events[0]["response"]["id"]]) == {
        events[0]["response"]["id"]: "in_progress"}


@pytest.mark.envoy
async def test_sigterm_ends_20_live_streams_through_envoy(draining_sidecar: Sidecar) -> None:
    """The ext_proc door: each stream Envoy is carrying ends with its terminal event, written by the processor
    before the gRPC server goes away."""
    listen_port = free_port()
    envoy = await start_envoy(render_bootstrap(
        listen_port=listen_port, extproc_port=draining_sidecar.extproc_port,
        http_port=int(draining_sidecar.http_url.rsplit(":", 1)[1]), upstream=draining_sidecar.upstream_url,
        admin_port=0))
    try:
        url = f"http://127.0.0.1:{listen_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            streams = await start_streams(session, url)
            os.kill(draining_sidecar.process.pid, signal.SIGTERM)
            assert await wait_exit(draining_sidecar.process.process) == 0
            await asyncio.wait_for(asyncio.gather(*(stream.task for stream in streams), return_exceptions=True),
                                   10)
        check_terminal(streams)
    finally:
        envoy.stop()
