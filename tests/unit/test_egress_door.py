"""The pods' egress door in process, on real sockets (127.0.0.1 and a Unix socket standing for a call's proxy):
past its bounds a connection gets the door's 503 and is closed at once, an idle one is closed at the head deadline
with no answer, a quieter source takes a flooding one's place, and a request with a live call's credential is
handed to its call's proxy meanwhile."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.sandbox.agent_sandbox.door_admission import DoorLimits
from responses_bridge.sandbox.agent_sandbox.egress_door import EgressDoor

LIMITS = DoorLimits(head_seconds=1.0, per_source=3, pending=5, connections=50)


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[tuple[EgressDoor, str]]:
    """The door, and a call's proxy (a Unix socket answering every head with a 200) admitted to it."""
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    socket_path = str(tmp_path / "proxy.sock")
    server = await asyncio.start_unix_server(proxy, path=socket_path)
    door = EgressDoor("127.0.0.1", 0, "http://127.0.0.1:0", LIMITS)
    await door.start()
    token, _url = door.admit(socket_path)
    try:
        yield door, token
    finally:
        await door.close()
        server.close()


async def connect(door: EgressDoor, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", door.port, local_addr=(source, 0))


async def pending(door: EgressDoor, count: int) -> None:
    """Until the door has taken ``count`` pending connections (its accepts run on the loop after the connects)."""
    async with asyncio.timeout(30):
        while door.admission.pending != count:
            await asyncio.sleep(0.01)


async def answer(reader: asyncio.StreamReader) -> bytes:
    """What the door sent before closing (b"" for a close with no answer)."""
    return await asyncio.wait_for(reader.read(), timeout=30)


async def test_past_a_source_s_share_a_connection_is_answered_503_and_closed_at_once(
        door: tuple[EgressDoor, str]) -> None:
    egress, _token = door
    held = [await connect(egress, "127.0.0.2") for _ in range(LIMITS.per_source)]
    await pending(egress, LIMITS.per_source)
    reader, _writer = await connect(egress, "127.0.0.2")
    assert (await answer(reader)).startswith(b"HTTP/1.1 503")  # the fourth, at once: no head deadline waited for
    assert egress.admission.pending == LIMITS.per_source
    for reader, writer in held:  # the held ones end at the deadline, with no answer
        assert await answer(reader) == b""
        writer.close()
    assert egress.admission.pending == 0 and egress.admission.open == 0


async def test_a_quieter_source_takes_the_busiest_one_s_place_and_a_credential_goes_through(
        door: tuple[EgressDoor, str]) -> None:
    egress, token = door
    flood = [await connect(egress, source) for source in ("127.0.0.2",) * 3 + ("127.0.0.3",) * 2]
    await pending(egress, LIMITS.pending)  # all the door holds pending
    reader, writer = await connect(egress, "127.0.0.4")  # holds none: the busiest source's oldest gives way
    assert (await answer(flood[0][0])).startswith(b"HTTP/1.1 503")
    credential = base64.b64encode(f"sandbox:{token}".encode()).decode()
    writer.write(f"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
                 f"Proxy-Authorization: Basic {credential}\r\n\r\n".encode())
    assert (await answer(reader)).endswith(b"\r\n\r\nok")  # handed to the call's proxy
    writer.close()
    for _reader, flooding in flood:
        flooding.close()
