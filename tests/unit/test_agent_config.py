"""An agent's configuration as protocol/agents/agents.py resolves it: the SDK's defaults filled in, an update replacing
what it names, every bound a 400 that names its parameter; the stored agent validates as the SDK's ``Agent``."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.beta import Agent

from responses_bridge.protocol.agents.agents import (
    AGENT_FIELDS,
    MAX_TOOLS_BYTES,
    apply_config,
    default_config,
    render_agent,
)
from responses_bridge.protocol.errors import APIError

FUNCTION = {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}


def resolved(body: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    return apply_config(base or default_config(), body, AGENT_FIELDS)


def test_defaults_and_every_tool_type_validate_as_the_sdks_agent() -> None:
    config = resolved({"model": "m", "tools": [
        FUNCTION, {"type": "tool_search"}, {"type": "programmatic_tool_calling"},
        {"type": "mcp", "server_label": "s", "transport": {"type": "http", "server_url": "https://x"}},
        {"type": "mcp", "server_label": "t", "transport": {"type": "stdio", "command": "run"}},
        {"type": "web_search", "location": {"city": "Oslo"}}, {"type": "computer_use"}, {"type": "automations"}],
        "text": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "multi_agent": {"enabled": True}, "compaction": {"async": True}})
    agent = Agent.model_validate(render_agent("agent_1", config, 1, 2), strict=True)
    assert agent.multi_agent.max_concurrent_subagents == 6 and agent.tools[2].enabled is True
    assert agent.tools[5].mode == "live" and agent.tools[5].context_size == "medium"
    assert agent.tools[3].connection_origin == "service" and agent.tools[3].required is False
    assert agent.compaction is not None and agent.compaction.async_ is True


def test_an_update_replaces_what_it_names() -> None:
    base = resolved({"model": "m", "name": "n", "tools": [FUNCTION], "reasoning": {"effort": "low",
                                                                                      "summary": "auto"},
                     "experimental": {"time_awareness": True}, "metadata": {"a": "b"}})
    updated = resolved({"reasoning": {"effort": "high"}, "experimental": {}, "tools": None, "name": None,
                        "metadata": None}, base)
    assert updated["reasoning"] == {"effort": "high", "summary": "auto"}  # a key omitted keeps its value
    assert updated["experimental"] == {"time_awareness": True}  # merged by key
    assert (updated["tools"], updated["name"], updated["metadata"], updated["model"]) == ([], None, {}, "m")
    assert resolved({"reasoning": None}, base)["reasoning"] == {"effort": None, "summary": None}


@pytest.mark.parametrize(("body", "param"), [
    ({"model": ""}, "model"),
    ({"model": "m", "tools": [FUNCTION, FUNCTION]}, "tools"),
    ({"model": "m", "tools": [dict(FUNCTION, strict=True)]}, "tools[0].strict"),
    ({"model": "m", "tools": [{"type": "mcp", "server_label": "s", "transport": {"type": "sse"}}]},
     "tools[0].transport.type"),
    ({"model": "m", "tools": [dict(FUNCTION, parameters={"x": "y" * MAX_TOOLS_BYTES})]}, "tools"),
    ({"model": "m", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"model": "m", "multi_agent": {"enabled": True, "max_concurrent_subagents": 0}},
     "multi_agent.max_concurrent_subagents"),
    ({"model": "m", "text": {"format": {"type": "json_object"}}}, "text.format.type"),
    ({"model": "m", "metadata": {str(n): "v" for n in range(17)}}, "metadata"),
    ({"model": "m", "instructions": 5}, "instructions"),
    ({"model": "m", "nmae": "x"}, "nmae"),
    ({"model": "m", "tools": [{"type": "mcp", "server_label": "s", "transport": {
        "type": "http", "server_url": "https://x", "headers": {"Authorization": "Bearer sk-live"}}}]},
     "tools[0].transport.headers"),
    ({"model": "m", "tools": [{"type": "mcp", "server_label": "s", "transport": {
        "type": "http", "server_url": "https://x", "headers": {"X-Api-Key": "sk-live"}}}]},
     "tools[0].transport.headers"),
])
def test_bad_fields_are_400s_naming_them(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as raised:
        resolved(body)
    assert raised.value.status == 400 and raised.value.param == param
