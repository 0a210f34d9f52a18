"""WebSocket mode's memory: turns queued behind a busy lane cost what the budget says, and leave with the socket.

A real sidecar process (the CLI, HTTP door only: the memory measured is the sidecar's, whichever door a socket
comes through) and a raw aiohttp socket. One turn holds the default lane (the fake upstream stalls mid-stream);
behind it the client queues 14 ``response.create`` frames of about 7.5 MiB, each an ``input`` of some 200,000
short messages: parsed, such a frame is nine times its size in Python objects. The sidecar's resident memory is
read from ``/proc/PID/status``: its peak (``VmHWM``) while the turns wait, and its RSS once the socket is gone.
These are memory bounds, not timings: the waits poll conditions (the socket's slot given back; the RSS back under
its bound, which the allocator's trimmer may take a few seconds to reach).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.bridge import Sidecar, running_sidecar
from tests.support.memory import reset_peak, status_kb

pytestmark = pytest.mark.store_free  # its turns are store: false and its subject is memory: its own SQLite file

MODEL = "fake-model"
MiB = 1024 * 1024
QUEUED = 14
FRAME_BYTES = int(7.5 * MiB)
HELD = "hold the lane [stall_after=1:120000]"  # one chunk, then the upstream stalls: the lane stays busy
PEAK_GROWTH_MIB = 300  # the bound: 14 queued 7.5 MiB turns raise the peak RSS by less than this
AFTER_CLOSE_MIB = 150  # and once the socket has closed, the RSS is back within this of its size before


@pytest.fixture(scope="module")
async def ws_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """Its own process, so nothing else moves its memory. Two settings make the test's moments observable:
    a request limit of 128 MiB lets all 14 frames wait (the default 64 MiB would stop reading the socket at the
    ninth, so no later frame could tell the client that the server has read them all), and one request in
    flight per tenant makes the end of the connection visible (the socket holds that slot until its handler has
    dropped everything it held)."""
    env = {"RESPONSES_BRIDGE_MAX_REQUEST_BYTES": str(128 * MiB), "RESPONSES_BRIDGE_TENANT_MAX_CONCURRENT_REQUESTS": "1",
           "RESPONSES_BRIDGE_MAX_INPUT_ITEMS": "300000"}  # each frame holds some 200,000 items
    async with running_sidecar(str(tmp_path_factory.mktemp("ws-memory")), fake_upstream, env=env,
                               extproc=False, own_sqlite=True) as started:
        yield started


def big_create() -> str:
    """A ``response.create`` of about :data:`FRAME_BYTES`: many short messages, the costliest shape to parse."""
    one = len(json.dumps({"role": "user", "content": "m1000000"})) + 1
    items = [{"role": "user", "content": f"m{index}"} for index in range(FRAME_BYTES // one)]
    return json.dumps({"type": "response.create", "model": MODEL, "store": False, "input": items})


async def next_event(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        message = await ws.receive(timeout=120)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        event = json.loads(message.data)
        if event["type"] == kind:
            return event


async def slot_free(session: aiohttp.ClientSession, url: str) -> None:
    """Wait until the tenant's one request slot is free again: the closed socket's handler has ended (bounded
    polling of a condition, not a timing check)."""
    for _ in range(1200):
        async with session.get(f"{url}/v1/models") as answer:
            if answer.status != 429:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the closed socket still holds its slot")


async def settled_rss_kb(pid: int, ceiling_kb: int, deadline: float = 30.0) -> int:
    """The RSS once it is at most ``ceiling_kb``, or whatever it is after ``deadline`` seconds: freed memory goes
    back to the system when the allocator trims (fairness/allocator.py checks every two seconds)."""
    end = time.monotonic() + deadline
    rss = status_kb(pid, "VmRSS")
    while rss > ceiling_kb and time.monotonic() < end:
        await asyncio.sleep(0.5)
        rss = status_kb(pid, "VmRSS")
    return rss


async def test_queued_turns_cost_their_bytes_and_leave_with_the_socket(ws_sidecar: Sidecar) -> None:
    sidecar = ws_sidecar
    pid = sidecar.process.pid
    frame = big_create()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sidecar.http_url}/v1/responses") as ws:  # warm-up: a whole turn
            await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "warm up"}))
            await next_event(ws, "response.completed")
        await slot_free(session, sidecar.http_url)
        before_kb = reset_peak(pid)  # the peak (VmHWM) starts again from the idle RSS
        async with session.ws_connect(f"{sidecar.http_url}/v1/responses", max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": HELD}))
            await next_event(ws, "response.output_text.delta")  # running: the default lane is busy
            for _ in range(QUEUED):
                await ws.send_str(frame)
            # answered by the reader at once, so only after it has read (and queued) every frame before it
            await ws.send_str(json.dumps({"type": "probe"}))
            refused = await next_event(ws, "error")
            assert refused["error"]["code"] == "unsupported_event_type"
            queued_kb = status_kb(pid, "VmRSS")
            peak_kb = status_kb(pid, "VmHWM")
        await slot_free(session, sidecar.http_url)
    closed_kb = status_kb(pid, "VmRSS")  # the moment the handler has ended, before any trim
    after_kb = await settled_rss_kb(pid, before_kb + AFTER_CLOSE_MIB * 1024)
    growth, held, closed, left = ((kb - before_kb) // 1024 for kb in (peak_kb, queued_kb, closed_kb, after_kb))
    report = (f"idle {before_kb // 1024} MiB; {QUEUED} queued turns of {len(frame) / MiB:.1f} MiB: peak +{growth} "
              f"MiB, held +{held} MiB; at close +{closed} MiB, settled +{left} MiB")
    print(report)
    assert growth < PEAK_GROWTH_MIB, report
    assert left < AFTER_CLOSE_MIB, report


async def test_completed_turns_the_connection_keeps_for_its_next_turn_leave_with_the_socket(
        ws_sidecar: Sidecar) -> None:
    """``store: false`` turns stay in the connection's cache for ``previous_response_id`` — three large ones here —
    and that cache is freed when the socket closes, not whenever the collector's full pass comes (the session lives
    in reference cycles)."""
    sidecar = ws_sidecar
    pid = sidecar.process.pid
    frame = big_create()
    async with aiohttp.ClientSession() as session:
        await slot_free(session, sidecar.http_url)
        before_kb = status_kb(pid, "VmRSS")
        async with session.ws_connect(f"{sidecar.http_url}/v1/responses", max_msg_size=0) as ws:
            for _ in range(3):
                await ws.send_str(frame)
                await next_event(ws, "response.completed")
            held_kb = status_kb(pid, "VmRSS")
        await slot_free(session, sidecar.http_url)
    after_kb = await settled_rss_kb(pid, before_kb + AFTER_CLOSE_MIB * 1024)
    held, left = ((kb - before_kb) // 1024 for kb in (held_kb, after_kb))
    report = f"idle {before_kb // 1024} MiB; 3 completed turns of {len(frame) / MiB:.1f} MiB: held +{held} MiB, " \
             f"settled +{left} MiB after close"
    print(report)
    assert left < AFTER_CLOSE_MIB, report
