"""A session turn's multi-agent tree told as the Agents API's subagents (services/agent_subagent_tree.py): the real
tree (run/multi_agent.py) acts on the root's calls, its output items go through the session's translation as the
root's stream carries them, and every event comes out as one of the SDK's ``AgentSessionEvent`` union, strictly."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from responses_bridge.engine.multi_agent_tools import agent_message_item, agent_of, call_output_item
from responses_bridge.protocol.multi_agent import MultiAgentConfig
from responses_bridge.run.multi_agent import AgentTree, SubagentAnswer
from responses_bridge.services.agent_subagent_tree import SubagentTree
from tests.integration.test_agents_api import _EVENTS, strict

SESSION = {"id": "sess_1", "agent": {"id": "agent_1", "model": "fake-model", "reasoning": {"effort": "low"}},
           "prompt_cache_options": None}
ROOT_TURN = "turn_root"


class RootStream:
    """The root response's output as its stream carries it (run/subagents.py's RootOutput, and the calls and
    their outputs as the tool loop adds them), told to a :class:`SubagentTree`; the session's events it said."""

    def __init__(self) -> None:
        self.session = SubagentTree(SESSION, ROOT_TURN)
        self.events: list[dict[str, Any]] = []
        self.records: list[Any] = []
        self.index = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def add(self, item: dict[str, Any]) -> None:
        for kind in ("response.output_item.added", "response.output_item.done"):
            told = self.session.take({"type": kind, "output_index": self.index, "item": item})
            assert told is not None, item
            for event, records in told:
                strict(_EVENTS, {"event_id": "sevt_x", **event})
                self.events.append(event)
                self.records += records
        self.index += 1

    # the tree's TreeOutput
    def message(self, author: str, recipient: str, text: str) -> None:
        self.add(agent_message_item(author, recipient, text))

    def agent_items(self, agent_name: str, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.add({**item, "agent": agent_of(agent_name)})

    async def work(self, items: list[dict[str, Any]]) -> SubagentAnswer:
        text = items[-1]["content"]
        if text.startswith("slow"):
            await asyncio.sleep(30)
        if text.startswith("boom"):
            raise RuntimeError("the upstream broke")
        made = {"id": f"msg_{len(items)}_{text[:4]}", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": f"done: {text}", "annotations": []}]}
        return SubagentAnswer(f"done: {text}", "completed", None, [*items, made], [made])

    async def call(self, tree: AgentTree, action: str, **arguments: Any) -> str:
        """One root call: its item, the tree's action, its output item — in the order the root's stream has them."""
        call_id = f"call_{self.index}"
        text = orjson.dumps(arguments).decode()
        self.add({"id": f"mac_{self.index}", "type": "multi_agent_call", "action": action, "arguments": text,
                  "call_id": call_id, "agent": agent_of("root")})
        answer = await tree.act(action, text)
        self.add(call_output_item(action, call_id, answer))
        return answer


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


async def test_every_action_is_told_as_the_sessions_subagents_turns_and_items() -> None:
    stream = RootStream()
    tree = AgentTree(MultiAgentConfig(True, 4), stream.work, lambda usage: None, stream)
    assert await stream.call(tree, "spawn_agent", task="count", name="counter") == "Spawned counter."
    await stream.call(tree, "spawn_agent", task="boom now")
    await stream.call(tree, "list_agents")
    await stream.call(tree, "wait_agent")
    await stream.call(tree, "send_message", agent_name="counter", message="be quick")
    await stream.call(tree, "followup_task", agent_name="counter", task="slow again")
    await stream.call(tree, "interrupt_agent", agent_name="counter")
    await stream.call(tree, "followup_task", agent_name="nobody", task="x")
    for event, records in stream.session.finish():
        strict(_EVENTS, {"event_id": "sevt_x", **event})
        stream.events.append(event)
        stream.records += records
    events = stream.events

    created = [event["subagent"] for event in _of(events, "agent.session.subagent.created")]
    assert [(s["name"], s["instructions"][0]["text"], s["status"]) for s in created] == [
        ("counter", "count", "active"), ("agent_2", "boom now", "active")]
    counter, failing = created[0]["id"], created[1]["id"]
    assert {s["parent_agent_id"] for s in created} == {"agent_1"}

    done = [event["item"] for event in events if event.get("turn_id") == ROOT_TURN and (  # agent_message: added
        event["type"] == "agent.session.turn.item.done" or event["item"]["type"] == "agent_message")]
    assert [(item["type"], item.get("status")) for item in done] == [
        ("create_subagent_call", "completed"), ("create_subagent_call", "completed"),
        ("agent_message", None), ("agent_message", None), ("wait_for_subagents_call", "completed"),
        ("agent_message", None), ("send_subagent_input_call", "completed"), ("send_subagent_input_call", "completed"),
        ("interrupt_subagent_call", "completed"), ("send_subagent_input_call", "failed")]
    spawn = done[0]
    assert (spawn["agent_id"], spawn["content"], spawn["model"], spawn["reasoning_effort"]) == (
        "agent_1", [{"type": "output_text", "text": "count"}], "fake-model", "low")
    assert done[4]["recipient_agent_ids"] == [counter, failing]  # whom the wait collected
    answer = done[2]
    assert (answer["sender_agent_id"], answer["recipient_agent_id"]) == (counter, "agent_1")
    assert (done[5]["sender_agent_id"], done[5]["recipient_agent_id"]) == ("agent_1", counter)  # the message
    assert done[6]["content"] == [{"type": "output_text", "text": "be quick"}]
    assert done[8]["recipient_agent_id"] == counter and done[9]["recipient_agent_id"] == "nobody"

    turns: dict[str, list[str]] = {}
    for event in events:
        if event["type"].startswith("agent.session.turn.") and "turn" in event and event["turn"]["subagent_id"]:
            turns.setdefault(event["turn"]["subagent_id"], []).append(event["turn"]["status"])
    # the counter: its task, collected; its follow-up, interrupted (cancelled) and never collected
    assert turns[counter] == ["queued", "in_progress", "completed", "queued", "in_progress", "cancelled"]
    assert turns[failing] == ["queued", "in_progress", "failed"]
    failed = _of(events, "agent.session.turn.failed")[0]["turn"]
    assert failed["error"]["message"] == "The subagent failed: RuntimeError."
    item = next(event for event in _of(events, "agent.session.turn.item.done") if event["turn_id"] != ROOT_TURN)
    assert item["item"]["content"] == [{"type": "output_text", "text": "done: count"}]
    assert [event["subagent"]["status"] for event in _of(events, "agent.session.subagent.closed")] == [
        "closed", "closed"]

    kinds = {(record.kind, record.parent) for record in stream.records}
    assert kinds == {("subagent", "sess_1"), ("subagent_turn", counter), ("subagent_turn", failing),
                     ("subagent_item", counter), ("item", "sess_1")}
    tree.close()


def test_the_roots_own_items_are_not_the_trees() -> None:
    tree = SubagentTree(SESSION, ROOT_TURN)
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    assert tree.take({"type": "response.output_item.added", "output_index": 0, "item": message}) is None
    assert tree.take({"type": "response.output_text.delta", "item_id": "msg_1", "delta": "x"}) is None
    assert tree.finish() == []


@pytest.mark.parametrize("item", [
    {"id": "fc_1", "type": "function_call", "name": "lookup", "arguments": "{}", "call_id": "c1"},
    {"id": "sh_1", "type": "shell_call", "call_id": "c2", "action": {"commands": ["ls"]}, "environment": None},
])
async def test_a_subagents_call_for_the_client_is_never_the_sessions_to_run(item: dict[str, Any]) -> None:
    tree = SubagentTree(SESSION, ROOT_TURN)
    tree.take({"type": "response.output_item.done", "output_index": 0, "item": {
        "id": "mac_1", "type": "multi_agent_call", "action": "spawn_agent", "arguments": '{"task": "t"}',
        "call_id": "c0", "agent": agent_of("root")}})
    tree.take({"type": "response.output_item.done", "output_index": 1,
               "item": call_output_item("spawn_agent", "c0", "Spawned agent_1.")})
    assert tree.take({"type": "response.output_item.done", "output_index": 2,
                      "item": {**item, "agent": agent_of("agent_1")}}) == []
