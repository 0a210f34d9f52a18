"""A session's subagents as the Agents API reads them (``client.beta.agents.sessions.subagents``): the subagents,
their turns and their items, each the tenant's own and found only under the session that holds it.

They are written as the session's turns run (services/agent_subagent_tree.py): a ``subagent`` record under its
session, its turns (``subagent_turn``) and items (``subagent_item``, scoped to their turn) under the subagent, so
that the session's own lists of turns and items stay the root agent's, and a session's delete takes them all
(store/*/agents.py).
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import not_found
from ..protocol.lists import list_of
from ..store.base_agents import AgentStore
from .agent_environments import session_not_found
from .pagination import page_errors


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
        return list_of(page.data, has_more=page.has_more)

    async def get_subagent(self, session_id: str, subagent_id: str, *, tenant: str) -> dict[str, Any]:
        return await self._subagent(session_id, subagent_id, tenant)

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
