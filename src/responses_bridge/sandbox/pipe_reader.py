"""The read end of a pipe as an asyncio transport that owns its descriptor and closes it exactly once.

uvloop's ``loop.connect_read_pipe(protocol, file)`` hands the file's descriptor to libuv, which closes it when the
transport closes, and then closes the file object as well: the same number is closed twice (MagicStack/uvloop#763,
still so in 0.23). The kernel gives a freed number to the next descriptor anyone opens, and the bridge's threads
open descriptors all the time (a program worker's pipes, a sandbox call's ``/mnt/data``, a socket being connected):
one opened between the two closes is closed under its owner. Under the fairness tests' churn of taken-back sandbox
calls that was seen as a program worker's pipe failing ``EBADF`` (a 500) and an upstream connect finding its new
socket's number "used by transport" — and a number reused that way could carry one tenant's bytes to another's.

So a sandbox call reads its pipes through ``loop.add_reader`` on the plain descriptor, which both loops implement
without taking ownership, and :class:`PipeReader` closes it once, when it is closed or the pipe ends. It speaks the
read-transport interface the protocols reading those pipes use (``asyncio.StreamReaderProtocol`` pauses and resumes
reading; :class:`~responses_bridge.sandbox.result.Capture` only receives data), nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from typing import Any

CHUNK_BYTES = 1 << 16
"""Read at most this much per readiness callback (asyncio's own pipe transports read 256 KiB; the sandbox's output is
bounded per call and kept in 64 KiB windows)."""


class PipeReader(asyncio.ReadTransport):
    """The transport of one pipe's read end ``fd`` (made non-blocking here), feeding ``protocol``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        os.set_blocking(fd, False)
        self._loop = loop
        self._fd: int | None = fd
        self._protocol = protocol
        self._paused = False
        protocol.connection_made(self)
        loop.add_reader(fd, self._readable)

    def unread(self) -> int:
        """Bytes waiting in the pipe (FIONREAD); 0 once it is closed — never another descriptor's count."""
        if self._fd is None:
            return 0
        try:
            return int(struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0"))[0])
        except OSError:
            return 0

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._close(error)
            return
        if data:
            self._protocol.data_received(data)  # type: ignore[attr-defined]
            return
        eof_received = getattr(self._protocol, "eof_received", None)
        if eof_received is not None:
            eof_received()  # a read pipe ends here whatever it answers (asyncio's own pipes do the same)
        self._close(None)

    def pause_reading(self) -> None:
        if self._fd is not None and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._fd is not None and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._readable)

    def is_reading(self) -> bool:
        return self._fd is not None and not self._paused

    def is_closing(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        self._close(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def _close(self, error: Exception | None) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if not self._paused:
            self._loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)  # the one close of this number
        self._loop.call_soon(self._protocol.connection_lost, error)


def read_pipe(fd: int, protocol: asyncio.BaseProtocol) -> PipeReader:
    """Read pipe ``fd`` into ``protocol`` on the running loop; the returned transport owns ``fd`` from now on."""
    return PipeReader(asyncio.get_running_loop(), fd, protocol)
