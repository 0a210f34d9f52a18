"""Server-sent events: an incremental decoder for upstream chunks and the encoder for our events.

Envoy and TCP split and merge upstream chunks anywhere, so the decoder keeps the unfinished tail and yields only
whole events. The encoder writes each event as one ``bytes`` so that no event is ever split across writes
(some clients' parsers lose an event whose ``data:`` line and blank line arrive in different reads).
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"


def data_frame(payload: bytes) -> bytes:
    """One unnamed SSE event (Chat Completions' framing): ``data: <payload>`` and the blank line that ends it."""
    return b"data: " + payload + b"\n\n"


DONE_FRAME = data_frame(DONE)
KEEPALIVE_COMMENT = b": keep-alive\n\n"
"""An SSE comment: clients skip it, and it keeps an idle timeout between the client and the bridge from cutting a
stream that is only waiting on slow work (a tool call, an MCP listing)."""


DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
"""The largest upstream event accepted (see ``RESPONSES_BRIDGE_MAX_EVENT_BYTES``). One event is one chunk of a
Chat Completions stream: a token, a tool call's argument piece, at most a whole tool call or a long reasoning
block. Real chunks stay in the kilobytes; 16 MiB leaves room for a model that sends a whole large document or
base64 image in one chunk, while one response can never make the process hold more than that for a single event."""


class EventTooLarge(Exception):
    """The upstream sent (or kept sending) one event longer than the decoder's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"An upstream event is larger than {limit} bytes.")
        self.limit = limit


class SSEDecoder:
    """Feeds raw bytes in, returns the ``data`` payloads of the events completed so far.

    Work is linear in the bytes received. The unfinished tail never contains a blank line (every one found was
    split on). A tail no longer than four chunks is searched again with the next chunk, as the simplest code would;
    a longer one is never searched again: only the new chunk is (and the one byte where a separator may straddle
    the two), the chunk is appended in place, and the event is cut out where its blank line was found. A long event
    arriving in small reads therefore costs a couple of copies of its bytes, not one pass over the whole tail per
    read. The common case, a chunk that arrives with no tail, is one ``split`` of the chunk.
    """

    __slots__ = ("_buffer", "_after_cr", "_max", "scanned")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buffer: bytes | bytearray = b""  # the unfinished tail, line endings already normalised to LF
        self._after_cr = False  # the last chunk ended with CR: an LF that starts the next one belongs to it
        self._max = max_event_bytes
        self.scanned = 0  # bytes searched while a long tail was pending: each new byte once, the tail never

    def feed(self, chunk: bytes) -> list[bytes]:
        """Raises :class:`EventTooLarge` when one event (finished or not) exceeds the limit."""
        if self._after_cr:
            if not chunk:
                return []
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            # A CR ends a line whatever follows, so the event it completes goes out now; only an LF at the start
            # of the next chunk (the second half of a CRLF) must then be dropped.
            self._after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        tail = self._buffer
        payloads: list[bytes] = []
        if tail:
            if len(tail) <= len(chunk) << 2:
                # a short tail: searching it again with the chunk costs no more than the chunk itself
                chunk = tail + chunk if type(tail) is bytes else bytes(tail) + chunk
            else:  # a long tail: only the new bytes are searched
                self.scanned += len(chunk)
                if tail[-1] == 10 and chunk[:1] == b"\n":  # the blank line straddles the tail and the chunk
                    end = len(tail) - 1
                else:
                    found = chunk.find(b"\n\n")
                    end = len(tail) + found if found >= 0 else -1
                if type(tail) is bytes:
                    tail = self._buffer = bytearray(tail)
                tail += chunk
                if end < 0:  # its event goes on: the tail grew in place, one copy of the new bytes
                    if len(tail) > self._max:
                        raise EventTooLarge(self._max)
                    return payloads
                if end > self._max:
                    raise EventTooLarge(self._max)
                view = memoryview(tail)
                data = _event_data(bytes(view[:end]))
                chunk = bytes(view[end + 2:])
                view.release()
                if data is not None:
                    payloads.append(data)
        events = chunk.split(b"\n\n")
        self._buffer = events.pop()
        # rare: only a chunk this long can hold an event this long, so the scan runs only then
        if len(chunk) > self._max and (any(len(event) > self._max for event in events)
                                       or len(self._buffer) > self._max):
            raise EventTooLarge(self._max)
        for event in events:
            data = _event_data(event)
            if data is not None:
                payloads.append(data)
        return payloads

    def flush(self) -> list[bytes]:
        """At end of stream: an event that lacks only its closing blank line still counts."""
        tail, self._buffer, self._after_cr = bytes(self._buffer).rstrip(b"\n"), b"", False
        data = _event_data(tail) if tail else None
        return [data] if data is not None else []

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _event_data(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and b"\n" not in event:  # the common case: one data line (one copy of it)
        return event[6:] if event[5:6] == b" " else event[5:]
    lines: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            lines.append(line[6:] if line[5:6] == b" " else line[5:])
    return b"\n".join(lines) if lines else None


def encode_event(event: dict[str, Any]) -> bytes:
    """One join, so the serialised event is copied once (``a + b + c`` copies it twice: megabytes for an event
    that carries a whole long text), and no slower for a token's event."""
    kind: str = event["type"]  # typed for the checker; a local costs nothing on this per-event path
    return b"".join((b"event: ", kind.encode(), b"\ndata: ", orjson.dumps(event), b"\n\n"))
