"""The HTTP door's bounds on connections that send no request: a head sent a byte at a time is answered 408 and
closed at ``http_head_timeout`` (adapters/http/head_deadline.py) while other connections are served (and Envoy,
rendered from the same setting, answers it alike), and a connection idle past ``http_keepalive_timeout`` is
closed. Real sockets on loopback against the sidecar started
as users start it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from responses_bridge.envoy_config.timeouts import EnvoyTimeouts
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import envoy_before

pytestmark = pytest.mark.store_free  # the sidecar keeps its own SQLite file; the subject is the door's sockets

HEAD = b"GET /health HTTP/1.1\r\nHost: bridge\r\nX-Padding: " + b"p" * 400 + b"\r\n\r\n"
"""A request head long enough that, sent a byte every ``BYTE_EVERY`` seconds, it would take ~40 s: it never
arrives whole before the head deadline the sidecar here is started with."""
BYTE_EVERY = 0.1
HEAD_TIMEOUT = "1"
KEEPALIVE_TIMEOUT = "4"  # above the head deadline, which thus fires first on a slow head
CLOSED_WITHIN = 60.0  # only how long a test waits before it fails, not a bound it checks


@pytest.fixture(scope="module")
async def door(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_HTTP_HEAD_TIMEOUT": HEAD_TIMEOUT,
           "RESPONSES_BRIDGE_HTTP_KEEPALIVE_TIMEOUT": KEEPALIVE_TIMEOUT}
    async with running_sidecar(str(tmp_path_factory.mktemp("door")), fake_upstream, env=env,
                               own_sqlite=True) as sidecar:
        yield sidecar


def _port(sidecar: Sidecar) -> int:
    return int(sidecar.http_url.rsplit(":", 1)[1])


async def slow_head(port: int, started: asyncio.Event | None = None) -> bytes:
    """Send :data:`HEAD` a byte at a time until the door closes the connection; what the door answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        for index in range(len(HEAD)):
            writer.write(HEAD[index:index + 1])
            await writer.drain()
            if started is not None and index == 3:
                started.set()
            await asyncio.sleep(BYTE_EVERY)

    sender = asyncio.create_task(trickle())
    received = bytearray()
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), CLOSED_WITHIN):  # until the door closes
            received += chunk
    except (ConnectionResetError, BrokenPipeError):  # the reset, or the write that met it first (seen under load)
        pass  # a byte still coming met the closed socket: what was answered had been read already
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)  # its writes fail once the door has closed
        writer.close()
    return bytes(received)


def assert_head_timeout(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"408", answer
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error", error
    assert "RESPONSES_BRIDGE_HTTP_HEAD_TIMEOUT" in error["message"]


async def test_a_slow_head_is_answered_408_and_closed_while_another_connection_is_served(door: Sidecar) -> None:
    started = asyncio.Event()
    slow = asyncio.create_task(slow_head(_port(door), started))
    await started.wait()  # the slow head is under way on its connection
    async with aiohttp.ClientSession() as session, session.get(f"{door.http_url}/health") as response:
        assert response.status == 200
    assert not slow.done()  # served while the slow head still held its connection
    assert_head_timeout(await slow)


async def test_many_slow_heads_do_not_starve_health_and_are_all_closed(door: Sidecar) -> None:
    slow = [asyncio.create_task(slow_head(_port(door))) for _ in range(300)]
    await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(f"{door.http_url}/health") as response:
                assert response.status == 200
    for answer in await asyncio.gather(*slow):
        assert_head_timeout(answer)


async def test_a_connection_that_sends_nothing_is_closed_at_the_keepalive_timeout(door: Sidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(door))
    try:
        assert await asyncio.wait_for(reader.read(), CLOSED_WITHIN) == b""  # closed, nothing said
    finally:
        writer.close()


async def test_a_kept_alive_connection_is_served_again_then_closed_when_idle(door: Sidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(door))
    request = b"GET /health HTTP/1.1\r\nHost: bridge\r\n\r\n"
    try:
        for _ in range(2):  # whole heads at once: no deadline meets them, and the connection is reused
            writer.write(request)
            status = await asyncio.wait_for(reader.readline(), CLOSED_WITHIN)
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        assert await asyncio.wait_for(reader.read(), CLOSED_WITHIN) == b""  # then idle: closed
    finally:
        writer.close()


@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
async def test_envoy_answers_a_slow_head_at_the_same_deadline_with_the_same_error(door: Sidecar) -> None:
    """Envoy's ``request_headers_timeout``, rendered from ``http_head_timeout``, and its local reply in the door's
    words."""
    async with envoy_before(door, timeouts=EnvoyTimeouts(request_headers=float(HEAD_TIMEOUT))) as url:
        assert_head_timeout(await slow_head(int(url.rsplit(":", 1)[1])))
