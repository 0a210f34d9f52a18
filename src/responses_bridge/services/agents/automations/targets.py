"""An automation's ``target`` checked as a session's create would check it (automations.py),
so that a firing starts a session the bridge serves, or delivers to a session of the tenant's: the SDK's
``AutomationTargetResourceNewSession`` and ``AutomationTargetResourceExistingSession``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ....protocol.agents.agents import (
    SESSION_AGENT_FIELDS,
    TRANSPORT_SECRET,
    apply_config,
    default_config,
    require_model,
)
from ....protocol.agents.automations import EXISTING_SESSION_FIELDS, NEW_SESSION_FIELDS
from ....protocol.agents.inputs import (
    check_environment,
    check_environment_computer,
    check_servable,
    known,
    messages,
    not_served,
    session_tools,
)
from ....protocol.errors import APIError, invalid_request
from ....protocol.metadata import check_metadata
from ..agents import AgentService

AgentAutomations = Callable[[str, str, str, str], Awaitable[str]]
"""Makes the automation an agent's ``automations`` tool asks for: (tenant, session id, tool call id, the call's
JSON arguments) -> what the model reads as the call's output."""


class SessionStarter(Protocol):
    agent_automations: AgentAutomations | None

    async def create(self, body: dict[str, Any], *, tenant: str, authorization: str | None) -> dict[str, Any]: ...

    async def get(self, session_id: str, *, tenant: str) -> dict[str, Any]: ...

    async def post_events(self, session_id: str, body: dict[str, Any], *, idempotency_key: str | None,
                          tenant: str, authorization: str | None) -> None: ...


MAX_INSTRUCTIONS_CHARS = 256 * 1024  # as an agent's instructions: one record never stalls other writers


class AutomationTargets:
    def __init__(self, agents: AgentService, sessions: SessionStarter) -> None:
        self.agents = agents
        self.sessions = sessions

    async def check(self, target: Any, tenant: str) -> dict[str, Any]:
        """The SDK's ``AutomationTargetResourceNewSession`` of a request's target, checked as a session's create
        would check it, so that a firing starts a session that the bridge serves."""
        if not isinstance(target, dict):
            raise invalid_request("Missing required parameter: 'target' (an object).", param="target",
                                  code="missing_required_parameter")
        if target.get("type") == "existing_session":
            return await self._existing_session(target, tenant)
        if target.get("type") != "new_session":
            raise invalid_request("Invalid value for 'target.type': expected 'new_session' or 'existing_session'.",
                                  param="target.type", code="invalid_value")
        known(target, NEW_SESSION_FIELDS, "target.")
        if check_environment(target.get("environment")) != "none":  # a firing's session starts with no workspace
            raise invalid_request("An automation's sessions run with environment 'none' in this bridge: its "
                                  "'openai_hosted' and 'self_hosted' environments are not served yet.",
                                  param="target.environment.type", code="unsupported_value")
        if target.get("vault_ids"):
            raise not_served("Vaults ('vault_ids')", "target.vault_ids")
        check_metadata(target.get("metadata"), "target.metadata")
        if target.get("input") is None or isinstance(target.get("input"), str):
            raise invalid_request("Invalid value for 'target.input': expected a non-empty array of messages.",
                                  param="target.input", code="invalid_value")
        contents = messages(target["input"], "target.input")
        agent_id, agent = target.get("agent_id"), target.get("agent")
        if (agent_id is None) == (agent is None):
            raise invalid_request("Provide exactly one of 'target.agent' and 'target.agent_id'.",
                                  param="target.agent_id", code="invalid_value")
        if agent_id is not None:
            if not isinstance(agent_id, str):
                raise invalid_request("Invalid type for 'target.agent_id': expected a string.",
                                      param="target.agent_id", code="invalid_type")
            config = apply_config(await self.agents.get(agent_id, tenant=tenant), {}, SESSION_AGENT_FIELDS)
            inline = None
        else:
            if not isinstance(agent, dict):
                raise invalid_request("Invalid type for 'target.agent': expected an object.", param="target.agent",
                                      code="invalid_type")
            config = apply_config(default_config(), agent, SESSION_AGENT_FIELDS, prefix="target.agent.")
            require_model(config, "target.agent.model")
            for index, tool in enumerate(config["tools"]):
                if TRANSPORT_SECRET in tool:  # an automation is shown whole: its secrets would need sealing too
                    raise invalid_request("An automation's inline agent may not carry an MCP transport's "
                                          "'authorization' or 'env' yet: save the agent (they are sealed with it) "
                                          "and name it in 'target.agent_id'.",
                                          param=f"target.agent.tools[{index}].transport", code="unsupported_value")
            inline = {key: config[key] for key in SESSION_AGENT_FIELDS} | {"tools": session_tools(config["tools"])}
        check_servable(config)
        check_environment_computer(config["tools"], False, "target.agent.")  # its session's environment is none
        return {"type": "new_session", "agent": inline, "agent_id": agent_id, "environment": {"type": "none"},
                "input": [{"type": "message", "role": "user", "content": content} for content in contents],
                "metadata": dict(target.get("metadata") or {}), "vault_ids": []}

    async def _existing_session(self, target: dict[str, Any], tenant: str) -> dict[str, Any]:
        """The SDK's ``AutomationTargetResourceExistingSession``: a session of the tenant's (a 404 naming
        ``target.session_id`` otherwise) and the instructions each invocation delivers to it."""
        known(target, EXISTING_SESSION_FIELDS, "target.")
        session_id, instructions = target.get("session_id"), target.get("instructions")
        if not isinstance(session_id, str) or not session_id:
            raise invalid_request("Missing required parameter: 'target.session_id'.", param="target.session_id",
                                  code="missing_required_parameter")
        if not isinstance(instructions, str) or not instructions.strip():
            raise invalid_request("Missing required parameter: 'target.instructions' (a non-empty string).",
                                  param="target.instructions", code="missing_required_parameter")
        if len(instructions) > MAX_INSTRUCTIONS_CHARS:
            raise invalid_request(f"'target.instructions' is longer than {MAX_INSTRUCTIONS_CHARS} characters.",
                                  param="target.instructions", code="string_above_max_length")
        try:
            await self.sessions.get(session_id, tenant=tenant)
        except APIError as exc:
            if exc.status != 404:
                raise
            raise APIError(404, f"No session found with id '{session_id}'.", param="target.session_id",
                           code="not_found") from None
        return {"type": "existing_session", "session_id": session_id, "instructions": instructions}
