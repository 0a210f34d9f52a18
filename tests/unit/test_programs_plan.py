"""What the model is offered for programmatic tool calling, and the refusal where no program can run."""

from __future__ import annotations

import json

import pytest

from responses_bridge.engine.tools.builtin import SERVED_TOOL_TYPES
from responses_bridge.engine.tools.programs import program_description, program_tools
from responses_bridge.engine.tools.tools import plan_tools
from responses_bridge.engine.tools.turn_tools import set_turn_tools
from responses_bridge.protocol.errors import APIError

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
           "allowed_callers": ["programmatic"]}
BOTH = {"type": "function", "name": "lookup", "parameters": {}, "allowed_callers": ["direct", "programmatic"]}
DIRECT = {"type": "function", "name": "direct_only", "parameters": {}}


@pytest.mark.parametrize("policy", ["drop", "reject"])
def test_without_programs_the_tool_is_refused_naming_the_extra_never_dropped(policy: str) -> None:
    with pytest.raises(APIError) as refused:
        plan_tools([DIRECT, {"type": "programmatic_tool_calling"}], policy,  # type: ignore[arg-type]
                   served=SERVED_TOOL_TYPES - {"programmatic_tool_calling"})
    assert refused.value.status == 400 and refused.value.param == "tools[1].type"
    assert "responses-bridge[programs]" in refused.value.message


def test_the_program_function_lists_what_programs_may_call() -> None:
    plan = plan_tools([{"type": "programmatic_tool_calling"}, WEATHER, BOTH, DIRECT], served=SERVED_TOOL_TYPES)
    plan.add_program([{"type": "programmatic_tool_calling"}, WEATHER, BOTH, DIRECT])
    assert [function["name"] for function in plan.functions] == ["lookup", "direct_only", "program"]
    assert plan.targets["program"].kind == "program" and plan.targets["program"].server
    description = plan.functions[-1]["description"]
    assert "tools.get_weather(args): The weather." in description and "tools.lookup(args)" in description
    assert "direct_only" not in description
    assert json.dumps(WEATHER["parameters"], separators=(",", ":")) in description
    assert [tool["name"] for tool in program_tools([WEATHER, BOTH, DIRECT])] == ["get_weather", "lookup"]
    assert program_description([]).endswith("(none)")


def test_choosing_programmatic_tool_calling_forces_a_program() -> None:
    tools = [{"type": "programmatic_tool_calling"}, WEATHER, DIRECT]
    plan = plan_tools(tools, served=SERVED_TOOL_TYPES)
    plan.add_program(tools)
    body: dict[str, object] = {}
    set_turn_tools(body, {"type": "programmatic_tool_calling"}, None, plan, first=True)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "program"}}
