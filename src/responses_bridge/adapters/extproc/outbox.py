"""The replies of one ext_proc stream, written to Envoy in order by one task.

A ``grpc.aio`` write completes only once gRPC's core has taken the message, a hop through its poller thread.
Writing from a task of its own lets the message loop read (and translate) Envoy's next message meanwhile. In
FULL_DUPLEX_STREAMED mode the processor may answer with as few messages as it likes, so body bytes that pile up
while a write is under way leave as one message: fewer gRPC writes when upstream chunks come back to back, and
no wait added when they do not (a lone reply is written at once). Replies that no other message can follow
until Envoy has them (the request's, a JSON answer's) are written directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

from ..pieces import PIECE_BYTES
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingResponse, StreamedBodyResponse

Write = Callable[[ProcessingResponse], Awaitable[None]]


class Outbox:
    """The writing task sleeps on a future of its own while nothing is queued, and a flush waits on one only
    while a write is under way: a queued chunk costs one ``set_result`` to wake the writer, not two events set and
    cleared and waited on (~100 bytecodes a streamed chunk)."""

    __slots__ = ("_busy", "_error", "_flushes", "_queue", "_task", "_wake", "_write", "merge")

    def __init__(self, write: Write, *, merge: bool = False) -> None:
        self._write = write
        self.merge = merge  # FULL_DUPLEX_STREAMED: body replies may be joined
        self._queue: list[ProcessingResponse] = []
        self._busy = False  # the writing task has replies to write, or is writing them
        self._wake: asyncio.Future[None] | None = None  # the writing task's, while it sleeps
        self._flushes: list[asyncio.Future[None]] = []  # flushes waiting for the writing task to be idle
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def send(self, replies: Iterable[ProcessingResponse], *, queued: bool) -> None:
        """``queued``: leave the replies to the writing task (an event stream's body, where the next upstream
        chunk is likely already waiting); otherwise write them now, after anything queued before (a request or a
        JSON answer, where nothing else is coming until Envoy hears back: a task would only add a hop)."""
        if queued:
            self.put(replies)
            return
        if self._task is not None:
            await self.flush()
        for reply in replies:
            await self._write(reply)

    def put(self, replies: Iterable[ProcessingResponse]) -> None:
        """Queues replies; raises what broke an earlier write (the gRPC stream is gone)."""
        if self._error is not None:
            raise self._error
        queue = self._queue
        before = len(queue)
        queue.extend(replies)
        if len(queue) == before:
            return
        self._busy = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            return
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    async def flush(self) -> None:
        """Returns once everything queued so far has been written."""
        if self._busy:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._flushes.append(done)
            await done
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            # Closing must not raise: the writer's own failure was already kept for the message loop.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _idle(self) -> None:
        """Nothing left to write: the flushes waiting are answered."""
        self._busy = False
        if self._flushes:
            flushes, self._flushes = self._flushes, []
            for done in flushes:
                if not done.done():
                    done.set_result(None)

    async def _run(self) -> None:
        write = self._write
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self._queue:
                    batch, self._queue = self._queue, []
                    for reply in _joined(batch) if self.merge and len(batch) > 1 else batch:
                        await write(reply)
                self._idle()
                self._wake = loop.create_future()
                await self._wake
        except Exception as exc:  # noqa: BLE001  (the stream broke: the message loop learns it at its next put or flush)
            self._error = exc
            self._idle()

def _joined(batch: list[ProcessingResponse]) -> list[ProcessingResponse]:
    """Consecutive ``streamed_response`` body replies as one (its ``end_of_stream`` is the last one's), up to
    ``PIECE_BYTES`` (adapters/pieces.py: a large answer was cut into pieces so that each write is short, and is
    not joined again here); every other reply keeps its place."""
    out: list[ProcessingResponse] = []
    run: list[ProcessingResponse] = []  # streamed bodies to join, together no larger than a piece
    size = 0
    for reply in batch:
        streamed = _streamed(reply)
        if streamed is None:
            out.extend(_join(run))
            run, size = [], 0
            out.append(reply)
            continue
        length = len(streamed.body)
        if run and size + length > PIECE_BYTES:
            out.extend(_join(run))
            run, size = [], 0
        run.append(reply)
        size += length
        if streamed.end_of_stream:
            out.extend(_join(run))
            run, size = [], 0
    out.extend(_join(run))
    return out


def _join(run: list[ProcessingResponse]) -> list[ProcessingResponse]:
    """The run's bodies as one reply; a lone reply as it is."""
    if len(run) < 2:
        return run
    bodies = [reply.response_body.response.body_mutation.streamed_response.body for reply in run]
    end = run[-1].response_body.response.body_mutation.streamed_response.end_of_stream
    return [m.streamed_body(b"".join(bodies), end)]


def _streamed(reply: ProcessingResponse) -> StreamedBodyResponse | None:
    if reply.WhichOneof("response") != "response_body":
        return None
    mutation = reply.response_body.response.body_mutation
    return mutation.streamed_response if mutation.HasField("streamed_response") else None
