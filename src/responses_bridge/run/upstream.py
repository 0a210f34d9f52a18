"""What the run, background runs, compaction, token counting and the HTTP door ask of an upstream client.

The sidecar's own calls to the Chat Completions upstream (the HTTP door, background runs, WebSocket turns,
compaction, token counting, the truncation retry of the ext_proc door) go through this interface; the concrete
aiohttp client lives with the adapters (``adapters/upstream_client.py``) and is built by the composition root
(``serve.py``), so nothing here or in ``services/`` imports a transport.

Failures look the same whatever the transport: an :class:`UpstreamFailure` carrying the :class:`APIError` the
client gets (a refused connection a 502, silence past the idle timeout a 504, a body cut mid-way a 502), which
the run turns into an error reply or a ``response.failed`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ..engine.wire import UpstreamRequest
from ..protocol.errors import APIError


class UpstreamFailure(Exception):
    """The upstream call failed before or while its answer arrived; ``error`` is what the client gets."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error


class UpstreamAnswer(Protocol):
    """A Chat Completions answer as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def content_type(self) -> str | None: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """Whatever bytes arrived, as they arrive (no re-chunking); raises :class:`UpstreamFailure`."""
        ...


class UpstreamResponse(Protocol):
    """Any other upstream answer (a JSON POST, a GET): its status; its body through ``read_answer``."""

    @property
    def status(self) -> int: ...


class UpstreamClient(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def chat(self, call: UpstreamRequest, authorization: str | None) -> AbstractAsyncContextManager[UpstreamAnswer]:
        """Make the Chat Completions call ``call``; ``authorization`` goes upstream as it is (None: none)."""
        ...

    async def read_answer(self, response: UpstreamResponse) -> bytes:
        """A whole answer of ``post_json``/``get``, at most ``RESPONSES_BRIDGE_MAX_EVENT_BYTES``."""
        ...

    def post_json(self, path: str, body: bytes, authorization: str | None, *,
                  timeout: float | None = None) -> AbstractAsyncContextManager[UpstreamResponse]:
        """A JSON POST relative to the upstream base URL (an absolute ``http(s)://`` path is used as is)."""
        ...

    def get(self, path: str, authorization: str | None) -> AbstractAsyncContextManager[UpstreamResponse]: ...
