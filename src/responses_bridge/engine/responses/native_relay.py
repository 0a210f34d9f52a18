"""A native route's request and answer: the backend speaks the Responses API itself, but keeps nothing.

The relay is the synchronous half of a native response (``run/native_run.py`` is the asynchronous one, which loads
history and persists). On the way out it makes the backend's request self-contained: the history of a
``previous_response_id`` chain or a ``conversation`` goes in front of ``input``, the fields that need storage
(``previous_response_id``, ``conversation``, ``background``, ``prompt``) are taken out, and ``store: false`` is
sent, since a stateless backend refuses to store. On the way back the backend's answer is passed on as it is,
event by event, except for what the bridge owns: the response object carries the bridge's id (so a chain never
depends on one replica of the backend), the client's model name and ``store``/``previous_response_id``/
``conversation``/``background`` as asked, and every event gets the bridge's sequence number (a background response
starts with events of the bridge's own). The terminal event is held until the response is stored.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ...ids import response_id as new_response_id
from ...protocol.errors import APIError
from ...protocol.responses.request import ResponsesRequest
from ...sealing import Sealer
from ..event_frames import CANCELLED_EVENT
from ..response_error import response_error
from ..sse import DONE, DONE_FRAME, EventTooLarge, SSEDecoder, encode_event
from ..upstream_errors import upstream_error
from ..wire import JSON_CONTENT_TYPE, SSE_CONTENT_TYPE, Reply, UpstreamRequest
from . import compaction
from .response_object import ResponseReads, fill_usage_details, new_response

NATIVE_PATH = "responses"
STATEFUL_FIELDS = ("previous_response_id", "conversation", "background", "prompt", "store")
TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed", "response.cancelled"))
BACKEND_FIELDS = ("status", "output", "usage", "error", "incomplete_details", "completed_at")
"""What the backend's response object says that the bridge's takes over; the rest is the bridge's own."""


class NativeRelay(ResponseReads):
    """One native response. ``history``: the items the backend must see before the request's own input."""

    def __init__(self, request: ResponsesRequest, raw: dict[str, Any], history: list[dict[str, Any]], *,
                 upstream_model: str | None = None, conversation_id: str | None = None,
                 max_event_bytes: int, sealer: Sealer | None = None,
                 sent_input: list[dict[str, Any]] | None = None) -> None:
        if compaction.has_trigger(request.input_items):
            raise APIError(400, "A compaction_trigger is not supported for this model: use POST "
                           "/v1/responses/compact.", param="input", code="unsupported_parameter")
        # the bridge's compaction items, opened: the backend gets the summaries they stand for (400 if forged)
        # sent_input: the input as the backend gets it where it differs from what is stored (parts naming a file,
        # resolved by the run: run/file_inputs.py)
        history, items = compaction.expand_context(
            history, request.input_items if sent_input is None else sent_input, sealer)
        self._input = backend_items([*history, *items])
        self.request = request
        p = request.params
        self.background = bool(p.background)
        self.streaming = bool(p.stream) or self.background
        self.response = new_response(new_response_id(), request)
        if conversation_id is not None:
            self.response["conversation"] = {"id": conversation_id}
        self._raw = raw
        self._upstream_model = upstream_model
        self._max = max_event_bytes
        self._decoder = SSEDecoder(max_event_bytes)
        self.sequence_number = 0
        self._status = 0
        self._upstream_sse = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._final: dict[str, Any] | None = None
        self.head_sent = False
        self.ended = False
        self.error: APIError | None = None
        self.committed = False  # a JSON answer whose 200 went out early: it ends as a Response (the translator's)

    def upstream_request(self) -> UpstreamRequest:
        """The backend's request: the client's, self-contained and unstored."""
        body = {key: value for key, value in self._raw.items() if key not in STATEFUL_FIELDS}
        body["input"] = self._input
        body["store"] = False
        if self._upstream_model:
            body["model"] = self._upstream_model
        if self.background:
            body["stream"] = True  # a background response's events are recorded as they happen
        return UpstreamRequest(NATIVE_PATH, orjson.dumps(body), bool(body.get("stream")))

    # --- answer --------------------------------------------------------------------------------------------------

    def queued(self) -> bytes:
        """A background response was accepted: ``response.created`` and ``response.queued``."""
        self.response["status"] = "queued"
        self.head_sent = True
        return self._lifecycle("response.created") + self._lifecycle("response.queued")

    def on_upstream_headers(self, status: int, content_type: str | None) -> bytes | None:
        self._status = status
        self._upstream_sse = status < 400 and (content_type or "").startswith("text/event-stream")
        if self._upstream_sse and self.streaming and not self.head_sent:
            self.head_sent = True
            return b""  # the backend's own response.created opens the client's stream
        return None

    def on_upstream_chunk(self, chunk: bytes) -> bytes:
        if self.error is not None:
            return b""
        if not self._upstream_sse:
            self._body_size += len(chunk)
            if self._body_size > self._max:
                self.error = _too_large(self._max)
                return b""
            self._body.append(chunk)
            return b""
        try:
            payloads = self._decoder.feed(chunk)
        except EventTooLarge:
            self.error = _too_large(self._max)
            return b""
        return b"".join([self._relay(payload) for payload in payloads if payload != DONE])

    def _relay(self, payload: bytes) -> bytes:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = APIError(502, "The upstream sent an event that is not JSON.", type="server_error",
                                  code="upstream_protocol_error")
            return b""
        if not isinstance(event, dict):
            return b""
        kind = event.get("type")
        backend = event.get("response")
        if isinstance(backend, dict):
            self._absorb(backend)
            event["response"] = self.response
        if kind in TERMINAL:
            self._final = event  # sent once the response is stored
            return b""
        if kind == "error":
            self.error = APIError(502, f"The upstream failed: {event.get('message')}", type="server_error",
                                  code=str(event.get("code") or "server_error"))
            return b""
        if self.background and kind in ("response.created", "response.queued"):
            return b""  # the bridge announced it when it was accepted
        if not self.streaming:
            return b""
        event["sequence_number"] = self.sequence_number
        self.sequence_number += 1
        return encode_event(event)

    def _absorb(self, backend: dict[str, Any]) -> None:
        for key in BACKEND_FIELDS:
            if key in backend:
                self.response[key] = backend[key]
        fill_usage_details(self.response.get("usage"))

    def complete(self) -> APIError | None:
        """The backend's answer ended: None when the response is ready to store, else the error it ends with."""
        if self.error is not None:
            return self.error
        if self._status >= 400:
            return upstream_error(self._status, b"".join(self._body))
        if self._upstream_sse:
            for payload in self._decoder.flush():
                if payload != DONE:
                    self._relay(payload)
            if self.error is not None:
                return self.error
            if self._final is None:
                return APIError(502, "The upstream's event stream ended before the response did.",
                                type="server_error", code="upstream_protocol_error")
            return None
        try:
            backend = orjson.loads(b"".join(self._body))
        except orjson.JSONDecodeError:
            backend = None
        if not isinstance(backend, dict) or backend.get("object") != "response":
            return APIError(502, "The upstream's answer is not a Response object.", type="server_error",
                            code="upstream_protocol_error")
        self._absorb(backend)
        if self.streaming:  # the client asked for events, the backend answered JSON: the events it would have sent
            self._final = {"type": f"response.{self.response['status']}", "response": self.response}
        return None

    def terminal_frames(self) -> list[bytes]:
        """The events that end a stream (the opening ones first if none went out yet), numbered now: after
        :meth:`complete` returned None, or after :meth:`fail`/:meth:`cancel`."""
        if not self.streaming:
            return []
        frames = []
        if not self.head_sent:
            self.head_sent = True
            frames = [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]
        final = dict(self._final or {"type": "response.completed", "response": self.response})
        if final.get("type") not in TERMINAL:
            final["type"] = "response.completed"
        final["sequence_number"] = self.sequence_number
        self.sequence_number += 1
        return [*frames, encode_event(final)]

    def success_reply(self, frames: list[bytes]) -> Reply:
        self.ended = True
        if self.streaming:
            return Reply(200, SSE_CONTENT_TYPE, b"".join(frames) + DONE_FRAME, continues_stream=True)
        return Reply(200, JSON_CONTENT_TYPE, orjson.dumps(self.response))

    def fail(self, error: APIError) -> Reply | None:
        """Like the translator's: a plain error reply (nothing stored), or None and ``response.failed`` is
        pending in :meth:`end_frames` once the caller has stored the failed response."""
        self.ended = True
        if not self.streaming and not self.committed:
            return Reply(error.status, JSON_CONTENT_TYPE, error.body())
        if self.streaming and error.status < 500 and not self.head_sent and not self.background:
            return Reply(error.status, JSON_CONTENT_TYPE, error.body())
        self._end("failed", response_error(error.code, error.message, status=error.status, param=error.param,
                                           error_type=error.type, full=True))
        return None

    def cancel(self) -> None:
        self.ended = True
        self._end("cancelled", None)

    def abandon(self) -> bool:
        """As the translator's: a stream the client saw begin, or any JSON answer, is recorded as failed."""
        if self.ended or (self.streaming and not self.head_sent):
            return False
        self.ended = True
        self._end("failed", response_error("client_disconnected",
                                           "The client disconnected before the response completed."))
        return True

    def _end(self, status: str, error: dict[str, Any] | None) -> None:
        self.response.update(status=status, error=error)
        if status != "cancelled":
            self.response["completed_at"] = None
        self._final = {"type": CANCELLED_EVENT if status == "cancelled" else "response.failed",
                       "response": self.response}

    def _lifecycle(self, kind: str) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence_number, "response": self.response}
        self.sequence_number += 1
        return encode_event(event)

    def mark_completed_at(self) -> None:
        if self.response["status"] == "completed" and not self.response.get("completed_at"):
            self.response["completed_at"] = int(time.time())


SERVER_TOOL_ITEMS = frozenset(("mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "web_search_call",
                               "tool_search_call", "tool_search_output"))
"""History items of the bridge's own server-side tools, which a backend that runs none does not know."""


def backend_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input as a backend without server-side tools reads it: an ``mcp_call`` the bridge ran becomes the
    function call and output it was for the model (named as the tool loop offers it, ``<label>__<name>``); the
    other server-tool items are left out (their results are in the messages that followed them)."""
    if not any(item.get("type") in SERVER_TOOL_ITEMS or item.get("type") == "mcp_call" for item in items):
        return items
    out: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "mcp_call":
            call_id = str(item.get("id"))
            out.append({"type": "function_call", "call_id": call_id,
                        "name": f"{item.get('server_label')}__{item.get('name')}",
                        "arguments": item.get("arguments") or "{}"})
            result = item.get("output") if item.get("error") is None else f"Error: {item.get('error')}"
            out.append({"type": "function_call_output", "call_id": call_id, "output": str(result or "")})
        elif kind not in SERVER_TOOL_ITEMS:
            out.append(item)
    return out


def _too_large(limit: int) -> APIError:
    return APIError(502, f"The upstream model server sent an event or answer larger than {limit} bytes, the limit "
                    "set by RESPONSES_BRIDGE_MAX_EVENT_BYTES.", type="server_error", code="upstream_too_large")
