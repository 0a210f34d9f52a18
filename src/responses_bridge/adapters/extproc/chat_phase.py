"""``POST /v1/chat/completions`` through Envoy: the body passes to the upstream's cluster unchanged (but for a
renamed model), and so does the answer. Only a request with ``store: true`` has its answer read: the route sends
the answer's headers and its body ``STREAMED`` (envoy_config/routes.py); every chunk passes on with the bridge's
id for the upstream's (so the headers lose their length), and the completion is stored
(services/responses/chat_completions.py) before the chunk carrying the terminal bytes is answered: the stream's
``[DONE]``, or the end of the body. An error answer is no completion and is not stored; one that is no OpenAI error
object is answered with one. That holds for every other chat request too: the processor sees its answer's headers, then
ends its gRPC stream (``released``), so Envoy passes the body through without it: no body chunk comes here.

(A ``mode_override`` from the response headers reply would send the body only when wanted, but Envoy ignores it
under this filter's ``FULL_DUPLEX_STREAMED`` default, whatever the route's own mode: tried with Envoy 1.40.)"""

from __future__ import annotations

from typing import Any

import structlog

from ...engine.chat_record import ChatRecorder
from ...engine.upstream_errors import upstream_error
from ...protocol.errors import APIError
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse
from .response_phase import ResponsePhase
from .stream_state import JSON

log = structlog.get_logger("responses_bridge.extproc")


class ChatPhase(ResponsePhase):
    __slots__ = ()

    def _chat_recorder(self, decoded: dict[str, Any]) -> ChatRecorder | ProcessingResponse | None:
        """The recorder of a chat request whose answer is stored; the 400 (an immediate response) for its bad
        ``metadata``; None when nothing is stored. The sidecar's own calls (``chat_own``) are not stored again:
        the HTTP door that made them stores its own."""
        try:
            recorder = self.runtime.chat_completions.recorder(decoded)
        except APIError as error:
            self.done = True
            return m.immediate_response(error.status, error.body(), JSON)
        return None if self.chat_own else recorder

    def _chat_record(self, recorder: ChatRecorder, decoded: dict[str, Any]) -> None:
        """From here on the answer is read (its headers, then its body: below)."""
        self.chat_record = recorder
        self.chat_request = decoded
        self.done = False

    def _chat_headers(self, request: ProcessingRequest) -> ProcessingResponse:
        """A chat answer's headers (stored, or watched for an error). A stored one's length goes: the id swapped
        in (engine/chat_ids.py) need not be as long as the upstream's. An error that is no OpenAI error object (a
        proxy's page, a plain-text 500) is answered with one, as the HTTP door answers it; an OpenAI-shaped one
        passes on."""
        headers = m.header_map(request.response_headers)
        status = int(headers.get(":status") or 0)
        content_type = headers.get("content-type") or ""
        if status >= 400 and not content_type.startswith("application/json"):
            self.done = True
            self.chat_record = self.chat_request = None
            error = upstream_error(status, f"a {content_type or 'typeless'} answer, not an OpenAI error".encode())
            return m.immediate_response(error.status, error.body(), JSON)
        if self.chat_watch:  # not stored: the answer passes untouched, without the processor from here on
            self.done = self.released = True
            return m.CONTINUE_RESPONSE_HEADERS
        return m.response_headers_reply(None, remove=("content-length",))

    async def _chat_body(self, chunk: bytes, end_of_stream: bool) -> ProcessingResponse:
        """One chunk of a stored chat's answer: what of it (and of the chunks held before it) the client gets now,
        with the bridge's id (engine/chat_record.py), sent once what it ends is stored."""
        recorder = self.chat_record
        assert recorder is not None and self.chat_request is not None
        out = recorder.relay(chunk)
        if end_of_stream:
            out += recorder.relay_end()
        if (recorder.done or end_of_stream) and not self.chat_saved:
            self.chat_saved = True
            await self.runtime.chat_completions.save(self.chat_request, recorder, tenant=self.tenant)
        if end_of_stream:
            self.done = True
            self.chat_record = self.chat_request = None
        return m.response_body_reply(out)
