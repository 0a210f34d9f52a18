"""The synchronous half of one response, as the runs see it: upstream headers and chunks in, the client's bytes out.

Two implementations: :class:`~responses_bridge.engine.responses.translator.Translator` (a Chat Completions upstream, the
request and every answer translated) and :class:`~responses_bridge.engine.responses.native_relay.NativeRelay` (a backend
that speaks the Responses API itself, its events relayed under the bridge's ids). The per-chunk method is the hot path:
a run binds it once and calls it directly. What differs between them after the answer (how the terminal events are
made and stored) stays with each run kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ...protocol.errors import APIError
from ...protocol.responses.request import ResponsesRequest
from ..wire import Reply


class ResponseTranslator(Protocol):
    @property
    def request(self) -> ResponsesRequest: ...

    @property
    def response(self) -> dict[str, Any]: ...

    @property
    def response_id(self) -> str: ...

    @property
    def streaming(self) -> bool:
        """Does the client get events (a stream, or a background run's log) rather than one JSON body?"""

    @property
    def background(self) -> bool: ...

    @property
    def sequence_number(self) -> int:
        """The sequence number the next event gets."""

    @property
    def input_items(self) -> list[dict[str, Any]]: ...

    @property
    def finished_turn(self) -> bool:
        """The response ended completed or incomplete: its turn joins its conversation."""

    def queued(self) -> bytes:
        """A background response was accepted: its first events."""

    def on_upstream_headers(self, status: int, content_type: str | None) -> bytes | None:
        """The bytes that open the client's event stream, or None while the client's status is not known."""

    def on_upstream_chunk(self, chunk: bytes) -> bytes:
        """One chunk of the upstream's body: the client's bytes it completes (maybe ``b""``)."""

    def complete(self) -> APIError | None:
        """The upstream's body ended: the error it amounted to, if any."""

    def fail(self, error: APIError) -> Reply | None:
        """The response fails: the client's whole reply when it is a plain error body, else None."""

    def cancel(self) -> None: ...

    def abandon(self) -> bool:
        """The client went away: False when there is nothing to record."""


if TYPE_CHECKING:  # mypy holds both implementations to the protocol
    from .native_relay import NativeRelay
    from .translator import Translator

    _IMPLEMENTATIONS: tuple[type[ResponseTranslator], ...] = (Translator, NativeRelay)
