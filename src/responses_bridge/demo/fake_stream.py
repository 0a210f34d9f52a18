"""The fake upstream's streamed answer: SSE chunks as OpenAI frames them, paced, stalled, cut or garbled as
the directives ask."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..engine.sse import DONE_FRAME, data_frame
from .fake_answers import TOOL_ARGUMENT_PIECE, Answer, _logprobs, _usage
from .fake_directives import Directives


class _Cut(Exception):
    """Raised inside the stream writer when a [cut=K] directive fires."""


@dataclass
class _StreamWriter:
    """Frames chunks as SSE and applies the per-chunk failure directives (delay, stall, cut, garbage)."""

    resp: web.StreamResponse
    meta: dict[str, Any]
    d: Directives
    delay: float
    include_usage: bool
    written: int = 0
    payload: int = 0
    huge_sent: bool = False

    async def _write(self, data: bytes) -> None:
        if self.written and self.delay:
            await asyncio.sleep(self.delay)
        await self.resp.write(data)
        self.written += 1

    async def _write_in_pieces(self, data: bytes, size: int, pause: float) -> None:
        """[huge]: one event in ``size``-byte writes, each sent before the next is made."""
        if self.written and self.delay:
            await asyncio.sleep(self.delay)
        view = memoryview(data)
        for start in range(0, len(data), size):
            await self.resp.write(view[start:start + size])
            await asyncio.sleep(pause)
        self.written += 1

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk = {**self.meta, "object": "chat.completion.chunk", "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage
        return data_frame(orjson.dumps(chunk))

    async def choice(self, delta: dict[str, Any], *, finish_reason: str | None = None,
                     logprobs: dict[str, Any] | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        if self.d.huge is not None and not self.huge_sent and delta.get("content"):
            self.huge_sent = True  # the first non-empty content chunk is the huge word
            await self._write_in_pieces(self._chunk([choice]), self.d.huge[1], self.d.huge[2] / 1000)
        else:
            await self._write(self._chunk([choice]))
        if self.written == 1 and self.d.garbage:
            await self.resp.write(data_frame(b"{this is not json"))

    async def checkpoint(self) -> None:
        """Runs before each payload chunk and before the finish chunk: where stall_after and cut fire."""
        if self.d.stall_after is not None and self.payload == self.d.stall_after[0]:
            await asyncio.sleep(self.d.stall_after[1] / 1000)
        if self.d.cut is not None and self.payload >= self.d.cut:
            raise _Cut

    async def payload_chunk(self, delta: dict[str, Any], logprobs: dict[str, Any] | None = None) -> None:
        await self.checkpoint()
        await self.choice(delta, logprobs=logprobs)
        self.payload += 1

    async def usage(self, usage: dict[str, Any]) -> None:
        await self._write(self._chunk([], usage))


def _payload_deltas(answer: Answer, body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    for piece in answer.reasoning_chunks:
        yield {answer.reasoning_field: piece}, None
    want_logprobs, top = bool(body.get("logprobs")), body.get("top_logprobs") or 0
    for piece in answer.refusal_chunks or []:
        yield {"refusal": piece}, (_logprobs([piece], top, refusal=True) if want_logprobs else None)
    for piece in answer.content_chunks or []:
        yield {"content": piece}, (_logprobs([piece], top) if want_logprobs else None)
    for i, call in enumerate(answer.tool_calls):
        head = {"index": i, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield {"tool_calls": [head]}, None
        for start in range(0, len(call.arguments), TOOL_ARGUMENT_PIECE):
            piece = call.arguments[start:start + TOOL_ARGUMENT_PIECE]
            yield {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, None


def _abort(request: web.Request) -> None:
    """Closes the socket without the chunked terminator, so the client sees a truncated body."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def _stream(request: web.Request, answer: Answer, meta: dict[str, Any], body: dict[str, Any],
                  d: Directives, delay: float) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Request-Id": meta["id"]})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    if d.first_byte_delay_ms:  # headers sent, the first token still coming
        await asyncio.sleep(d.first_byte_delay_ms / 1000)
    options = body.get("stream_options") or {}
    writer = _StreamWriter(resp, meta, d, delay, bool(options.get("include_usage")))
    try:
        await writer.choice({"role": "assistant", "content": ""})
        for delta, logprobs in _payload_deltas(answer, body):
            await writer.payload_chunk(delta, logprobs)
        await writer.checkpoint()
        await writer.choice({}, finish_reason=answer.finish_reason)
        if writer.include_usage:
            await writer.usage(_usage(answer))
        await resp.write(DONE_FRAME)
        await resp.write_eof()
    except _Cut:
        _abort(request)
    except ConnectionError:
        pass  # the client went away; nothing left to tell it
    return resp
