"""sandbox/pipe_reader.py: a sandbox call's pipes read through a transport that owns its descriptor and closes it
once, on the default loop and on uvloop (the bridge's loop, whose ``connect_read_pipe`` closes a number twice:
MagicStack/uvloop#763). The probe: the moment the transport closes its number, another descriptor is opened — the
kernel hands it that same number, as it would to any thread of the bridge opening one then — and that descriptor
must still be open once the transport, its protocol and its file are all gone."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from responses_bridge.sandbox import pipe_reader
from responses_bridge.sandbox.pipe_reader import read_pipe
from responses_bridge.sandbox.result import Capture

uvloop = pytest.importorskip("uvloop")

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    return LOOPS[request.param]


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_number_taken_the_moment_it_is_freed_is_never_closed_by_the_pipe(
        run: Callable[[Coroutine[Any, Any, None]], None], monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[int] = []
    real_close = os.close
    read_end, write_end = os.pipe()

    def close_then_take(fd: int) -> None:
        real_close(fd)
        if fd == read_end:
            taken.append(os.open(os.devnull, os.O_RDONLY))  # the lowest free number: the one just freed

    monkeypatch.setattr(pipe_reader.os, "close", close_then_take)  # os.close itself: whoever closes the number

    async def main() -> None:
        capture = Capture(1 << 10)
        transport = read_pipe(read_end, capture)
        os.write(write_end, b"hello")
        os.close(write_end)
        for _ in range(100):
            if transport.is_closing():
                break
            await asyncio.sleep(0.01)
        assert transport.is_closing() and capture.text() == "hello"
        transport.close()  # again: nothing more is closed
        del transport, capture
        gc.collect()
        await asyncio.sleep(0.05)
        assert taken == [read_end], taken

    run(main())
    gc.collect()
    assert _is_open(taken[0])
    os.close(taken[0])


def test_a_stream_reader_pauses_and_resumes_the_pipe_and_sees_its_end(
        run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    sent = bytes(range(256)) * 4096  # 1 MiB: far past the reader's 64 KiB limit, so reading pauses and resumes

    async def main() -> None:
        read_end, write_end = os.pipe()
        reader = asyncio.StreamReader(limit=1 << 16)
        lost: list[Exception | None] = []

        class Protocol(asyncio.StreamReaderProtocol):
            def connection_lost(self, exc: Exception | None) -> None:
                lost.append(exc)
                super().connection_lost(exc)

        transport = read_pipe(read_end, Protocol(reader))
        writing = asyncio.create_task(asyncio.to_thread(_write_all, write_end, sent))
        await asyncio.sleep(0.2)  # the writer fills the pipe and the reader's buffer: reading pauses
        got = bytearray()
        while chunk := await reader.read(1 << 14):
            got += chunk
        await writing
        await asyncio.sleep(0)
        assert bytes(got) == sent and lost == [None] and transport.is_closing()

    run(main())


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(data)


def test_closing_the_transport_closes_the_read_end_once_and_tells_the_protocol(
        run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    async def main() -> None:
        read_end, write_end = os.pipe()
        lost: list[Exception | None] = []

        class Protocol(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                lost.append(exc)

        transport = read_pipe(read_end, Protocol())
        assert transport.unread() == 0
        os.write(write_end, b"abc")
        transport.pause_reading()
        assert transport.unread() == 3  # FIONREAD of its own pipe while it is open
        transport.close()
        assert transport.unread() == 0 and not _is_open(read_end)
        await asyncio.sleep(0)
        assert lost == [None]
        os.close(write_end)

    run(main())
