"""The event frames of one response, in order: made as events are emitted, taken by the door.

Every event is encoded the moment it is emitted (the dicts it refers to go on changing), except the terminal ones
that :meth:`EventFrames.deferring` covers: once the response is finished nothing changes any more, and those
events are the large ones (``output_text.done``, ``content_part.done``, ``output_item.done`` and
``response.completed`` each carry the whole output). They are encoded one at a time by
:meth:`EventFrames.encode_deferred`, so the run can let the event loop serve other requests between them; anything
that takes or reads the frames encodes whatever is still deferred first, so no caller can miss one.

Event names: every event goes out under the ``openai`` SDK's own name (its ``ResponseStreamEvent`` union), which
is what the SDK, Codex and the Agents SDK read. Where the Open Responses spec names the same event differently (the
reasoning text's deltas: ``response.reasoning.delta`` / ``.done`` there, ``response.reasoning_text.delta`` /
``.done`` in the SDK), a request that names the spec's version (the ``OpenResponses-Version`` header) gets the
spec's names instead (:func:`open_responses_encoder`): each audience gets only names it knows, never both (the
spec's compliance suite fails an event it does not know, and so does a strict SDK client). The builder emits the
SDK's names as literals; only an Open Responses client's encoder looks at each event's type to rename it, so the
common case pays nothing on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

Encoder = Callable[[dict[str, Any]], bytes]

REASONING_DELTA = "response.reasoning_text.delta"
REASONING_DONE = "response.reasoning_text.done"
OPEN_RESPONSES_NAMES = {REASONING_DELTA: "response.reasoning.delta", REASONING_DONE: "response.reasoning.done"}
"""The SDK's event name -> the Open Responses spec's, where the two differ."""

def open_responses_encoder(encode: Encoder) -> Encoder:
    """``encode`` for an Open Responses client: the events the spec names differently get its names."""
    names = OPEN_RESPONSES_NAMES

    def encode_renamed(event: dict[str, Any]) -> bytes:
        renamed = names.get(event["type"])
        if renamed is not None:
            event["type"] = renamed  # the builder's own dict, made for this event alone
        return encode(event)

    return encode_renamed


CANCELLED_EVENT = "response.failed"
"""The event a cancelled response's stream ends with: its ``response`` has ``status: "cancelled"`` and no error.
No union of the SDK's has a ``response.cancelled`` stream event (OpenAI sends that name only as a webhook), and a
stream must end with one of ``response.completed`` / ``.incomplete`` / ``.failed`` for the SDK's stream helpers to
close the response with its final state."""


def _kept(event: dict[str, Any]) -> dict[str, Any]:
    return event


class EventFrames:
    """Mixed into :class:`~responses_bridge.engine.responses.output_builder.OutputBuilder`, which sets the fields."""

    _encode: Encoder | None
    _frames: list[bytes]
    _sequence: int
    _deferred: list[dict[str, Any]]  # emitted under deferring(), not yet encoded (after every frame)

    def _emit(self, event: dict[str, Any]) -> None:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        self._frames.append(self._encode(event))  # type: ignore[misc]

    def take(self) -> bytes:
        """The bytes of every event emitted since the last call (the deferred ones encoded now)."""
        if self._deferred:
            self._encode_all()
        if not self._frames:
            return b""
        frames, self._frames = self._frames, []
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def take_between(self, head: bytes, tail: bytes) -> bytes:
        """``head + take() + tail`` copied once: the terminal events repeat the whole output, so joining them and
        then adding ``[DONE]`` would copy megabytes twice over."""
        self._encode_all()
        frames, self._frames = self._frames, []
        return b"".join((head, *frames, tail))

    def pending(self) -> list[bytes]:
        """The frames ``take`` would return, without taking them (background runs persist them first)."""
        self._encode_all()
        return list(self._frames)

    def drop(self) -> None:
        """Forget every frame not taken yet (events that must not go out), without encoding any."""
        self._frames = []
        self._deferred = []

    @property
    def sequence_number(self) -> int:
        return self._sequence

    def deferring(self) -> _Deferring:
        """Events emitted inside are numbered now and encoded later (:meth:`encode_deferred`). Only for events
        whose dicts no longer change: a finished response's."""
        return _Deferring(self)

    def encode_deferred(self) -> int:
        """Encodes the next deferred event; its size in bytes, 0 when none is left."""
        if not self._deferred:
            return 0
        frame = self._encode(self._deferred.pop(0))  # type: ignore[misc]  # a handful of events: pop(0) is cheap
        self._frames.append(frame)
        return len(frame)

    def _encode_all(self) -> None:
        while self.encode_deferred():
            pass


class _Deferring:
    """:meth:`EventFrames.deferring`'s block: the frames' encoder and list swapped for the deferred ones inside it
    (nothing to swap without events: a JSON answer). A class rather than a generator context manager: every
    response's end goes through it once."""

    __slots__ = ("_encode", "_events", "_frames")

    def __init__(self, events: EventFrames) -> None:
        self._events = events

    def __enter__(self) -> None:
        events = self._events
        self._encode, self._frames = events._encode, events._frames
        if self._encode is not None:
            events._encode, events._frames = _kept, events._deferred  # type: ignore[assignment]

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._encode is not None:
            self._events._encode, self._events._frames = self._encode, self._frames
