"""What the session turn's helpers use of the runner and the service that drive them, declared apart.

turns.py's ``SessionRunner`` works a session's turns and calls out to helpers for parts of a turn —
async functions (async_calls.py), the automatic review (auto_review.py), resuming after
a restart (session_resume.py) — which act back on the runner, and on the service holding the runners
(sessions.py). Declaring here what they use, as Protocols, lets the helpers sit below the runner and the
service in the house instead of importing the modules that import them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ...run.tools.mcp_config import MCPServerOverlay
from ...store.base_agents import AgentStore, Record
from ..responses.background import BackgroundService
from ..responses.kept_authorization import KeptAuthorization
from .events import SessionEvents, SessionLog
from .leases import SessionLeases
from .turn_queue import QueuedTurn

ResponseStarter = Callable[[dict[str, Any], str, "str | None", "Mapping[str, MCPServerOverlay]"], Awaitable[str]]
"""Starts a background response of ``body`` for ``tenant`` with the caller's ``Authorization`` and what the bridge
adds to its MCP tools (services/agents/environments/mcp.py); its id. Given by the door
(adapters/http/agents/agents_routes.py), which knows the routes and upstream clients."""


class ComputerTool(Protocol):
    """computer/calls.py's ``ComputerUse``, as the turn's wait uses it (session_waiting.py)."""

    async def resolve(self, runner: TurnRunner, entry: QueuedTurn) -> None:
        """The client's answers to a computer call's approval requests, done on the session's desktop."""


class TurnRunner(Protocol):
    """turns.py's ``SessionRunner``, as its helpers use it."""

    store: AgentStore
    background: BackgroundService
    start: ResponseStarter
    events: SessionLog
    session_id: str
    tenant: str
    queue: list[QueuedTurn]
    current: QueuedTurn | None
    response_id: str | None
    cancelling: bool
    task: asyncio.Task[None] | None
    on_idle: Callable[[Any], None] | None
    handing_off: bool
    kept_authorization: KeptAuthorization | None
    on_lost: Callable[[str], None] | None
    still_ours: Callable[[], Awaitable[None]] | None
    locked: Callable[[], contextlib.AbstractAsyncContextManager[Any]]

    @property
    def computer(self) -> ComputerTool | None: ...

    @property
    def busy(self) -> bool: ...

    async def session(self) -> dict[str, Any]: ...

    async def save_session(self, session: dict[str, Any]) -> None: ...

    def _changing(self, entry: QueuedTurn | None = None) -> contextlib.AbstractAsyncContextManager[dict[str, Any]]:
        ...

    def session_record(self, session: dict[str, Any]) -> Record: ...

    def turn_record(self, turn: dict[str, Any]) -> Record: ...

    def item_record(self, item: dict[str, Any]) -> Record: ...

    async def _work(self) -> None: ...

    async def _end(self, entry: QueuedTurn, status: str, error: dict[str, Any] | None,
                   usage: dict[str, Any] | None) -> None: ...


class SessionHost(Protocol):
    """sessions.py's ``SessionService``, as the resumer (session_resume.py) uses it."""

    store: AgentStore
    shared: bool
    leases: SessionLeases
    events: SessionEvents

    @property
    def runners(self) -> dict[str, Any]: ...

    def _locked(self, session_id: str) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def _runner(self, session_id: str, tenant: str) -> TurnRunner: ...

    def _idle(self, runner: Any) -> None: ...
