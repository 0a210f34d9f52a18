"""What a door and the driver ask of a run, whatever kind it is.

Two kinds implement it: :class:`~responses_bridge.run.response_run.ResponseRun` (the request translated to Chat
Completions, with the tool loop) and :class:`~responses_bridge.run.native_run.NativeRun` (a backend that answers
the Responses API itself). They are siblings, not parent and child: a door holds a ``Run`` and never asks which
kind it has, so a third kind is a new class, not a new branch in every door.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from ..engine.wire import Reply, UpstreamRequest
from ..observability.timing import Timing
from ..protocol.errors import APIError
from ..protocol.responses.request import ResponsesRequest
from ..protocol.tools.multi_agent import BetaSurface

BeforePersist = Callable[[list[bytes], int], Awaitable[None]]
"""Awaited before a stored response is written, with the event frames not yet taken and the sequence number
after the last of them: a background run makes its events durable before the response says it ended."""


class Run(Protocol):
    tenant: str
    before_persist: BeforePersist | None
    save_fence: dict[str, str]
    """Keyword arguments of every save of this run: a background run's ``lease_owner`` on a shared database."""
    persist_within: float
    """Seconds the final save waits out a database outage, retried (store/transient.py); 0: one attempt. A
    background run's (no client waits on its answer); a request's is 0, its client learns of the failure at once."""
    stop_between_turns: Callable[[], bool] | None
    """Asked at each boundary between model turns of a tool loop (after the server calls' results are in):
    True ends the response there, ``incomplete`` with reason ``steered`` (WebSocket steering). A run with no
    such boundary (a native backend runs its own loop) never asks."""
    beta: BetaSurface
    """Set by the door before ``begin``: the request came on the multi-agent beta surface
    (protocol/tools/multi_agent.py), where ``multi_agent`` is a field."""
    on_upstream_chunk: Callable[[bytes], bytes]
    """Per upstream body chunk: the client's bytes (maybe ``b""``)."""
    timing: Timing | None
    """The request's clock (observability/timing.py): the timing current when the run was made (the door's), its
    model calls recorded by the driver and the document saved with the response; None for a run nobody times."""
    backlog: Collection[object]
    """Work a chunk left for later (a long event, translated in steps): while it is not empty, a door calls
    :attr:`catch_up` and lets its event loop run other work between the calls (see ``drive.catch_up``)."""

    @property
    def request(self) -> ResponsesRequest | None: ...

    @property
    def response(self) -> dict[str, Any] | None: ...

    @property
    def response_id(self) -> str | None: ...

    @property
    def streaming(self) -> bool: ...

    @property
    def background(self) -> bool: ...

    @property
    def sequence_number(self) -> int: ...

    @property
    def compaction_turn(self) -> bool: ...

    @property
    def upstream_failed(self) -> bool: ...

    @property
    def effects_made(self) -> bool:
        """Has the run made a server-side call with effects (MCP, code, a shell command)? Then a retry of its
        request would make it again: the run ends with its Response, never with a status a client retries."""

    async def begin(self, body: bytes | dict[str, Any], *, large: bool = False) -> UpstreamRequest | None:
        """Parse, load what the request refers to, and return the first upstream call; raises ``APIError``.
        None: slow set-up work remains, for the driver to do (:meth:`first_call`), once the client's stream is open
        when it has one (:meth:`open_stream`)."""

    def open_stream(self) -> bytes:
        """After a deferred :meth:`begin`: the client's first events, before the set-up work."""

    async def first_call(self) -> UpstreamRequest | None:
        """After a deferred :meth:`begin`: the set-up work (its events in :meth:`take_pending_bytes`), then the
        first upstream call."""

    def catch_up(self) -> bytes:
        """One step of :attr:`backlog`'s work: the client's bytes it made (maybe ``b""``)."""

    def on_upstream_headers(self, status: int, content_type: str | None) -> bytes | None:
        """The bytes that open the client's event stream, or None while its status is not known."""

    def queued(self) -> bytes:
        """A background response was accepted: its first events."""

    def retry_request(self) -> UpstreamRequest | None:
        """The upstream's answer ended: a shortened call to make instead (``truncation: "auto"``), or None."""

    async def next_turn(self, write: Callable[[bytes], Awaitable[None]] | None = None) -> UpstreamRequest | None:
        """The upstream's answer ended: run the turn's server-side tools and return the next turn's call, or
        None when the response ends."""

    def take_pending_bytes(self) -> bytes:
        """The client's bytes the tool phase made."""

    def call_facts(self) -> tuple[str | None, Any, str | None]:
        """The model call whose answer was just read: the model it asked, its usage, its finish reason, as they are
        (its stored timing makes them attributes when read: observability/timing.py)."""
        ...

    def call_attributes(self) -> dict[str, Any]:
        """The model call whose answer was just read, for its span: model, tokens, finish reason
        (observability/gen_ai.py). Asked only when a span is made."""

    async def finish(self) -> Reply:
        """The upstream body ended: complete, persist, and return the rest of the client's bytes."""

    async def fail(self, error: APIError) -> Reply:
        """The upstream call failed: persist the failure and return the client's last bytes."""

    async def cancel(self) -> Reply:
        """A background response cancelled by its owner."""

    def commit(self) -> None:
        """A JSON answer's 200 went out before its body (the HTTP door keeps a long one alive with whitespace):
        from now on it ends as a Response, ``failed`` if it fails (and stored so), never as an error body."""

    async def abandon(self) -> None:
        """The client went away: record the response as failed (a JSON answer, or a stream it saw begin)."""

    def release(self) -> None:
        """The run stops with nothing more to store: free what it holds."""


def not_begun(chunk: bytes) -> bytes:
    """A run's ``on_upstream_chunk`` before ``begin``."""
    raise RuntimeError("on_upstream_chunk before begin()")


def nothing_left() -> bytes:
    """A run's ``catch_up`` with no backlog."""
    return b""
