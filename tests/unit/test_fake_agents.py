"""The fake upstream as a multi-agent root model: it spawns one subagent per ``spawn:`` line, then waits."""

from __future__ import annotations

import orjson

from responses_bridge.demo.fake_answers import build_answer
from responses_bridge.demo.fake_directives import parse_directives

ACTIONS = [{"name": name, "parameters": {"type": "object", "properties": {}}}
           for name in ("spawn_agent", "wait_agent", "list_agents")]


def _answer(messages: list[dict], functions: list[dict] = ACTIONS, **body: object) -> list[tuple[str, str]]:
    text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    directives, user_text = parse_directives(text)
    answer = build_answer({"messages": messages, **body}, functions, directives, user_text, None)
    return [(call.name, call.arguments) for call in answer.tool_calls or ()]


def test_each_spawn_line_is_one_spawn_call_and_braces_become_the_subagents_directives() -> None:
    calls = _answer([{"role": "user", "content": "spawn: count the rows\nspawn: fail {error=503}\nagents: list"}])
    assert [name for name, _ in calls] == ["spawn_agent", "spawn_agent", "list_agents"]
    assert [orjson.loads(arguments).get("task") for _, arguments in calls[:2]] == ["count the rows",
                                                                                   "fail [error=503]"]


def test_after_the_spawns_results_it_waits_then_answers() -> None:
    spawned = [{"role": "user", "content": "spawn: a"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c0", "type": "function", "function": {"name": "spawn_agent", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c0", "content": "Spawned agent_1."}]
    assert _answer(spawned) == [("wait_agent", "{}")]
    waited = [*spawned, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "wait_agent", "arguments": "{}"}}]},
              {"role": "tool", "tool_call_id": "c1", "content": "## agent_1 (completed)"}]
    assert _answer(waited) == []


def test_without_spawn_agent_offered_a_subagent_just_echoes() -> None:
    assert _answer([{"role": "user", "content": "spawn: a"}], functions=[]) == []
    assert _answer([{"role": "user", "content": "spawn: a\nspawn: b"}], parallel_tool_calls=False) == [
        ("spawn_agent", '{"task":"a"}')]
