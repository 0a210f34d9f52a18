"""A session's subagents as the Agents API reads them (``client.beta.agents.sessions.subagents``): the subagents,
their turns and their items, each the tenant's own and found only under the session that holds it.

They are written as the session's turns run (tree.py): a ``subagent`` record under its
session, its turns (``subagent_turn``) and items (``subagent_item``, scoped to their turn) under the subagent, so
that the session's own lists of turns and items stay the root agent's, and a session's delete takes them all
(store/*/agents.py).
"""

from __future__ import annotations

import time
from typing import Any

from ....protocol.errors import not_found
from ....protocol.lists import list_of
from ....store.base_agents import AgentStore, Record
from ...pagination import page_errors
from ..environments.environments import session_not_found
from .contexts import shown
from .tree import Told

OPEN_TURN = ("queued", "in_progress", "waiting")


class SubagentService:
    def __init__(self, store: AgentStore) -> None:
        self.store = store

    async def _subagent(self, session_id: str, subagent_id: str, tenant: str) -> dict[str, Any]:
        if await self.store.get("session", session_id, tenant=tenant) is None:
            raise session_not_found(session_id)
        subagent = await self.store.get("subagent", subagent_id, tenant=tenant)
        if subagent is None or subagent.get("session_id") != session_id:
            raise not_found(f"No subagent found with id '{subagent_id}' in session '{session_id}'.",
                            param="subagent_id", code="not_found")
        return subagent

    async def list_subagents(self, session_id: str, *, after: str | None, limit: int, order: str,
                             tenant: str) -> dict[str, Any]:
        """The session's subagents, closed ones too, in the order they were opened."""
        if await self.store.get("session", session_id, tenant=tenant) is None:
            raise session_not_found(session_id)
        with page_errors("subagent"):
            page = await self.store.page("subagent", tenant=tenant, parent=session_id, after=after, limit=limit,
                                         order=order)
        return list_of([shown(subagent) for subagent in page.data], has_more=page.has_more)

    async def get_subagent(self, session_id: str, subagent_id: str, *, tenant: str) -> dict[str, Any]:
        return shown(await self._subagent(session_id, subagent_id, tenant))

    async def list_turns(self, session_id: str, subagent_id: str, *, after: str | None, limit: int, order: str,
                         tenant: str) -> dict[str, Any]:
        await self._subagent(session_id, subagent_id, tenant)
        with page_errors("turn"):
            page = await self.store.page("subagent_turn", tenant=tenant, parent=subagent_id, after=after,
                                         limit=limit, order=order)
        return list_of(page.data, has_more=page.has_more)

    async def get_turn(self, session_id: str, subagent_id: str, turn_id: str, *, tenant: str) -> dict[str, Any]:
        await self._subagent(session_id, subagent_id, tenant)
        turn = await self.store.get("subagent_turn", turn_id, tenant=tenant)
        if turn is None or turn.get("subagent_id") != subagent_id:
            raise not_found(f"No turn found with id '{turn_id}' of subagent '{subagent_id}'.", param="turn_id",
                            code="not_found")
        return turn

    async def list_items(self, session_id: str, subagent_id: str, *, turn_id: str | None, after: str | None,
                         limit: int, order: str, tenant: str) -> dict[str, Any]:
        """The subagent's items, of all its turns or of ``turn_id``'s."""
        if turn_id is not None:
            await self.get_turn(session_id, subagent_id, turn_id, tenant=tenant)
        else:
            await self._subagent(session_id, subagent_id, tenant)
        with page_errors("item"):
            page = await self.store.page("subagent_item", tenant=tenant, parent=subagent_id, scope=turn_id,
                                         after=after, limit=limit, order=order)
        return list_of(page.data, has_more=page.has_more)


async def left_open(store: AgentStore, session_id: str, error: dict[str, Any], *, tenant: str) -> list[Told]:
    """A stopped process left the session's turn running: the subagents it had opened are closed, and their turns
    still running failed with ``error`` (the events that say so, with the records they store)."""
    told: list[Told] = []
    now = int(time.time())
    for subagent in await _every(store, "subagent", session_id, tenant):
        if subagent.get("status") != "active":
            continue
        for turn in await _every(store, "subagent_turn", subagent["id"], tenant):
            if turn.get("status") in OPEN_TURN:
                turn.update(status="failed", error=error, completed_at=now)
                told.append(({"type": "agent.session.turn.failed", "session_id": session_id, "turn_id": turn["id"],
                              "turn": dict(turn), "usage": None},
                             [Record("subagent_turn", turn["id"], turn, parent=subagent["id"])]))
        subagent.update(status="closed", closed_at=now)  # kept with its context, as it was
        told.append(({"type": "agent.session.subagent.closed", "subagent": shown(subagent)},
                     [Record("subagent", subagent["id"], subagent, parent=session_id)]))
    return told


async def _every(store: AgentStore, kind: str, parent: str, tenant: str) -> list[dict[str, Any]]:
    """The newest hundred records of ``kind`` under ``parent``: where any still open is (one response opens at most
    64 subagents, and closes them when it ends, so only the last one's can be open; a subagent's open turn is its
    newest)."""
    return (await store.page(kind, tenant=tenant, parent=parent, limit=100, order="desc")).data
