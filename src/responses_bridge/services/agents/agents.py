"""Reusable agents of the Agents API (``client.beta.agents``): create, retrieve, update, list and delete, a
tenant's own. An agent is stored as the SDK's ``Agent`` object itself (protocol/agents/agents.py resolves every
default), so a retrieve answers what was stored and a session snapshots it as it was when the session began."""

from __future__ import annotations

import os
import time
from typing import Any

from ... import ids
from ...protocol.agents.agents import (
    AGENT_FIELDS,
    agent_not_found,
    apply_config,
    default_config,
    render_agent,
    require_model,
)
from ...protocol.errors import APIError
from ...protocol.lists import list_of
from ...sealing import Sealer
from ...store.base_agents import AgentStore
from ..pagination import page_errors
from .vaults.mcp_secrets import seal_tools, shown_agent

MAX_AGENTS_PER_TENANT = 10_000


class AgentService:
    def __init__(self, store: AgentStore, sealer: Sealer | None = None) -> None:
        self.store = store
        # what seals an MCP transport's ``authorization`` and ``env`` (services/agents/vaults/mcp_secrets.py); without
        # the deployment's, a key of this process alone
        self.sealer = sealer or Sealer(os.urandom(32))

    async def create(self, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        config = seal_tools(apply_config(default_config(), body, AGENT_FIELDS), self.sealer)
        require_model(config)
        if await self.store.count("agent", tenant=tenant) >= MAX_AGENTS_PER_TENANT:
            raise APIError(429, f"A project may keep at most {MAX_AGENTS_PER_TENANT} agents; delete some first.",
                           type="invalid_request_error", code="agent_limit_reached")
        now = int(time.time())
        agent = render_agent(ids.new_id("agent"), config, now, now)
        await self.store.put("agent", agent["id"], agent, tenant=tenant)
        return shown_agent(agent)

    async def get(self, agent_id: str, *, tenant: str) -> dict[str, Any]:
        return shown_agent(await self.stored(agent_id, tenant=tenant))

    async def stored(self, agent_id: str, *, tenant: str) -> dict[str, Any]:
        """The agent as stored: its MCP transports' secrets sealed in it, for a session or an update to carry."""
        agent = await self.store.get("agent", agent_id, tenant=tenant)
        if agent is None:
            raise agent_not_found(agent_id)
        return agent

    async def update(self, agent_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        agent = await self.stored(agent_id, tenant=tenant)
        config = seal_tools(apply_config(agent, body, AGENT_FIELDS), self.sealer)
        updated = render_agent(agent_id, config, agent["created_at"], max(int(time.time()), agent["updated_at"]))
        await self.store.put("agent", agent_id, updated, tenant=tenant)
        return shown_agent(updated)

    async def list_agents(self, *, after: str | None, limit: int, order: str, tenant: str) -> dict[str, Any]:
        with page_errors("agent"):
            page = await self.store.page("agent", tenant=tenant, after=after, limit=limit, order=order)
        return list_of([shown_agent(agent) for agent in page.data], has_more=page.has_more)

    async def delete(self, agent_id: str, *, tenant: str) -> dict[str, Any]:
        """The agent goes; sessions started from it keep the configuration they began with."""
        if not await self.store.delete("agent", agent_id, tenant=tenant):
            raise agent_not_found(agent_id)
        return {"id": agent_id, "object": "agent.deleted", "deleted": True}
