"""The client's side of a :class:`~responses_bridge.engine.responses.translator.Translator`: whether it gets an event
stream, the stream's opening events, the events made between turns, and the terminal states (completed or incomplete,
failed, cancelled, abandoned), whose events are built first and taken only after the caller persisted the response.
"""

from __future__ import annotations

import orjson

from ...protocol.errors import APIError, after_effects, retried_by_clients
from ..event_frames import open_responses_encoder
from ..sse import DONE_FRAME, encode_event
from ..wire import EVENTS_JSON_CONTENT_TYPE, JSON_CONTENT_TYPE, SSE_CONTENT_TYPE, Framing, Reply, encode_json_event
from .output_builder import Encoder
from .translator_state import TranslatorState

ENCODERS: dict[Framing | None, Encoder | None] = {None: None, "sse": encode_event, "json": encode_json_event}
"""The encoder of the client's events for each framing (None: one JSON body, no events)."""


def encoder_for(framing: Framing | None, open_responses_names: bool) -> Encoder | None:
    """The encoder of the client's events: by framing, and for an Open Responses client renaming the events its
    spec names differently (engine/event_frames.py)."""
    encode = ENCODERS[framing]
    return open_responses_encoder(encode) if encode is not None and open_responses_names else encode


class ClientStream(TranslatorState):
    __slots__ = ()

    @property
    def streaming(self) -> bool:
        """Does the client get an event stream (as opposed to one JSON body)?"""
        return self._events is not None

    @property
    def background(self) -> bool:
        return self.request.params.background

    @property
    def sequence_number(self) -> int:
        """The sequence number the next event will get."""
        return self._builder.sequence_number

    def pending(self) -> list[bytes]:
        """The event frames built but not yet taken (the terminal event among them, before a persist)."""
        return self._builder.pending()

    def encode_terminal(self) -> int:
        """After :meth:`complete`: encodes the next of the terminal events (which may each carry the whole
        output), returning its size in bytes, 0 when all are. The run calls it until 0, yielding to the event loop
        after a large one; whatever takes the frames encodes the rest anyway."""
        return self._builder.encode_deferred()

    def queued(self) -> bytes:
        """A background response was accepted: ``response.created`` and ``response.queued`` (status queued)."""
        self._builder.lifecycle("response.created")
        self._builder.lifecycle("response.queued")
        return self._builder.take()

    def open_stream(self) -> bytes:
        """The client's stream opens before any upstream answer (the run has slow set-up work first): its opening
        events; the first turn's headers then open nothing more."""
        return self._open_stream()

    def _open_stream(self) -> bytes:
        self._head_sent = True
        builder = self._builder
        if self.background:  # created and queued went out when it was accepted
            self.response["status"] = "in_progress"
        else:
            builder.lifecycle("response.created")
        builder.lifecycle("response.in_progress")
        if self.background and self._ended:  # failing or cancelling: keep them pending, so before_persist makes
            return b""  # them durable together with the terminal event (they come out with it)
        return builder.take()

    def take_events(self) -> bytes:
        """The events made between turns (the server calls' items), for a stream that is open."""
        return self._builder.take() if self._head_sent else b""

    # --- terminal states -----------------------------------------------------------------------------------------

    def success_reply(self) -> Reply:
        """After :meth:`complete` returned None and the response was persisted: the rest of the client's bytes."""
        self._ended = True
        if self.streaming:
            return Reply(200, self._events_content_type, self._builder.take_between(b"", self._done_frame),
                         continues_stream=True)
        return Reply(200, JSON_CONTENT_TYPE, orjson.dumps(self.response))

    def drop_pending(self) -> None:
        """The completed response could not be stored: its unsent terminal event would be a lie."""
        self._builder.drop()

    @property
    def _events_content_type(self) -> str:
        return SSE_CONTENT_TYPE if self._events == "sse" else EVENTS_JSON_CONTENT_TYPE

    @property
    def _done_frame(self) -> bytes:
        return DONE_FRAME if self._events == "sse" else b""

    def fail(self, error: APIError) -> Reply | None:
        """The response fails with ``error``. Returns the client's whole reply when it is a plain error body
        (nothing is persisted then); else None: ``response.failed`` is built, pending, and the caller persists
        the response before taking :meth:`terminal_reply`.

        Once a server-side call with effects was made (``OutputBuilder.effects_made``) the answer is never a plain
        error body, whatever ended the run (work taken back, the upstream's 5xx or 429 on a later turn, a timeout,
        the drain): the SDKs retry such statuses by themselves, and the retry would make the calls again. The
        client gets the failed Response instead, its output holding the calls, stored when ``store`` is on (a
        JSON answer with status 200, as a committed one)."""
        self._ended = True
        effects = self._builder.effects_made
        if effects and retried_by_clients(error.status):
            error = after_effects(error)
        if not self.streaming:
            if not self.committed and not effects:
                return Reply(error.status, JSON_CONTENT_TYPE, error.body())
            # stored, then terminal_reply()
            self._builder.fail(error.code, error.message, status=error.status)
            return None
        if error.status < 500 and not self._head_sent and not self.background and not effects:
            # the upstream refused the request itself (4xx): the client gets that error, as OpenAI would
            return Reply(error.status, JSON_CONTENT_TYPE, error.body())
        self._terminal_head = b"" if self._head_sent else self._open_stream()
        self._builder.fail(error.code, error.message, status=error.status)
        return None

    def cancel(self) -> None:
        """A background response cancelled by its owner: ``status: cancelled``; the caller persists the response,
        then takes :meth:`terminal_reply`."""
        self._ended = True
        self._terminal_head = b"" if self._head_sent else self._open_stream()
        self._builder.cancel()

    def terminal_reply(self) -> Reply:
        """The stream's last bytes after :meth:`fail` or :meth:`cancel` (and the persist that follows them); for
        a committed JSON answer, the failed Response."""
        if not self.streaming:
            return Reply(200, JSON_CONTENT_TYPE, orjson.dumps(self.response))
        head, self._terminal_head = self._terminal_head, b""
        return Reply(200, self._events_content_type, self._builder.take_between(head, self._done_frame),
                     continues_stream=head == b"")

    def abandon(self) -> bool:
        """The client went away: the response becomes failed, with the output made so far (its events are
        dropped). False when there is nothing to record: it already ended, or it is a stream the client never saw
        begin. A JSON answer is recorded whenever the client leaves (a proxy's idle timeout, a client's own): its
        work is stored as failed rather than lost without a trace."""
        if self._ended or (self.streaming and not self._head_sent):
            return False
        self._ended = True
        self._builder.fail("client_disconnected", "The client disconnected before the response completed.")
        self._builder.drop()
        return True


class _AutoCompaction:
    """A summarising call under way: the item it will make, the items it keeps plain, how many it replaces, and
    for a tool loop's turn, how its messages were cut."""

    __slots__ = ("item_id", "kept", "replaced", "split")
