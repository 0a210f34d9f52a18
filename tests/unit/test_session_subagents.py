"""A session turn's multi-agent tree told as the Agents API's subagents (services/agents/subagents/tree.py): the real
tree (run/multi_agent.py) acts on the root's calls, its output items go through the session's translation as the
root's stream carries them, and every event comes out as one of the SDK's ``AgentSessionEvent`` union, strictly."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from responses_bridge.engine.tools.multi_agent import agent_message_item, agent_of, call_output_item
from responses_bridge.protocol.tools.multi_agent import MultiAgentConfig
from responses_bridge.run.multi_agent import AgentTree, KeptSubagent, SubagentAnswer
from responses_bridge.services.agents.subagents.contexts import context_of
from responses_bridge.services.agents.subagents.tree import SubagentTree
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


async def test_a_later_turn_resumes_and_closes_a_kept_subagent_in_its_context() -> None:
    first = RootStream()
    tree = AgentTree(MultiAgentConfig(True, 4), first.work, lambda usage: None, first)
    await first.call(tree, "spawn_agent", task="remember kiwi")
    await first.call(tree, "wait_agent")
    for event, records in first.session.finish():
        first.events.append(event)
        first.records += records
    [kept] = [record.body for record in first.records if record.kind == "subagent"][-1:]
    assert kept["status"] == "closed" and [item.get("content") for item in context_of(kept) or []] == [
        "remember kiwi", [{"type": "output_text", "text": "done: remember kiwi", "annotations": []}]]
    assert "_private" not in next(event for event in first.events
                                  if event["type"] == "agent.session.subagent.closed")["subagent"]

    # the next turn: its tree starts with the kept subagent, closed
    second = RootStream()
    second.session = SubagentTree(SESSION, "turn_2", [kept])
    later = AgentTree(MultiAgentConfig(True, 4), second.work, lambda usage: None, second,
                      [KeptSubagent(kept["name"], context_of(kept) or [])])
    await second.call(later, "send_message", agent_name="agent_1", message="green")
    await second.call(later, "followup_task", agent_name="agent_1", task="which fruit?")
    await second.call(later, "wait_agent")
    await second.call(later, "interrupt_agent", agent_name="agent_1", close=True)
    await second.call(later, "followup_task", agent_name="agent_1", task="again")
    for event, records in second.session.finish():
        strict(_EVENTS, {"event_id": "sevt_x", **event})
        second.events.append(event)
        second.records += records
    events = second.events
    items = [(event["type"].rsplit(".", 1)[1], event["item"]["type"], event["item"].get("status"))
             for event in events if event.get("turn_id") == "turn_2" and "item" in event
             and event["item"]["type"] != "agent_message"]
    assert items == [
        ("added", "send_subagent_input_call", "in_progress"), ("done", "send_subagent_input_call", "completed"),
        ("added", "resume_subagent_call", "in_progress"), ("added", "send_subagent_input_call", "in_progress"),
        ("done", "resume_subagent_call", "completed"), ("done", "send_subagent_input_call", "completed"),
        ("added", "wait_for_subagents_call", "in_progress"), ("done", "wait_for_subagents_call", "completed"),
        ("added", "close_subagent_call", "in_progress"), ("done", "close_subagent_call", "completed"),
        ("added", "resume_subagent_call", "in_progress"), ("added", "send_subagent_input_call", "in_progress"),
        ("done", "resume_subagent_call", "completed"), ("done", "send_subagent_input_call", "completed")]
    resume = next(event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
                  and event["item"]["type"] == "resume_subagent_call")
    assert (resume["sender_agent_id"], resume["recipient_agent_id"]) == ("agent_1", kept["id"])
    lifecycle = [(event["type"], event["subagent"]["status"], event["subagent"]["closed_at"] is None)
                 for event in events if event["type"].startswith("agent.session.subagent.")]
    assert lifecycle == [("agent.session.subagent.active", "active", True),
                         ("agent.session.subagent.closed", "closed", False),
                         ("agent.session.subagent.active", "active", True),
                         ("agent.session.subagent.closed", "closed", False)]
    assert {event["subagent"]["opened_at"] for event in events if "subagent" in event} == {kept["opened_at"]}
    # what it knows now: the first turn's piece, and the resumed piece (with the message sent to it); the last
    # follow-up was never collected, so it is not part of it — as the tree's own context is not
    final = [record.body for record in second.records if record.kind == "subagent"][-1]
    assert [item.get("content") for item in context_of(final) or []][2:] == [
        "Message: green\n\nwhich fruit?",
        [{"type": "output_text", "text": "done: Message: green\n\nwhich fruit?", "annotations": []}]]
    later.close()
    tree.close()
