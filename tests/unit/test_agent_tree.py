"""The subagents of one response (run/multi_agent.py): every action, the concurrency bound, failures as results."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from responses_bridge.protocol.tools.multi_agent import MultiAgentConfig
from responses_bridge.run.multi_agent import CLOSED, MAX_SUBAGENTS, RESUMED, AgentTree, KeptSubagent, SubagentAnswer


class Workers:
    """A worker that answers with the last input text, after ``gate`` opens for tasks starting with 'slow'."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0
        self.most = 0
        self.seen: list[list[dict[str, Any]]] = []
        self.usage: list[dict[str, Any] | None] = []
        self.posted: list[tuple[str, str, str]] = []  # messages between agents: (author, recipient, text)
        self.shown: list[tuple[str, list[dict[str, Any]]]] = []  # each piece's own items, as the root collects it

    def message(self, author: str, recipient: str, text: str) -> None:
        self.posted.append((author, recipient, text))

    def agent_items(self, agent_name: str, items: list[dict[str, Any]]) -> None:
        self.shown.append((agent_name, items))

    async def work(self, items: list[dict[str, Any]]) -> SubagentAnswer:
        self.seen.append(items)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            text = items[-1]["content"]
            if text.startswith("slow"):
                await self.gate.wait()
            if text.startswith("boom"):
                raise RuntimeError("the upstream broke")
            answer = f"done: {text}"
            made = {"type": "message", "role": "assistant", "content": answer}
            return SubagentAnswer(answer, "completed", {"prompt_tokens": 3, "completion_tokens": 2},
                                  [*items, made], [made])
        finally:
            self.running -= 1


def _tree(workers: Workers, limit: int = 6) -> AgentTree:
    return AgentTree(MultiAgentConfig(True, limit), workers.work, workers.usage.append, workers)


def _args(**values: Any) -> str:
    return orjson.dumps(values).decode()


async def test_spawn_list_and_wait_return_each_result_and_count_usage() -> None:
    workers = Workers()
    tree = _tree(workers)
    assert await tree.act("spawn_agent", _args(task="one")) == "Spawned agent_1."
    assert await tree.act("spawn_agent", _args(task="two", name="second")) == "Spawned second."
    assert "agent_1" in await tree.act("list_agents", "{}")
    waited = await tree.act("wait_agent", "{}")
    assert waited == "## agent_1 (completed)\ndone: one\n\n## second (completed)\ndone: two"
    assert workers.usage == [{"prompt_tokens": 3, "completion_tokens": 2}] * 2
    assert await tree.act("list_agents", "{}") == "Subagents: agent_1 (completed), second (completed)."
    assert (await tree.act("wait_agent", "{}")).startswith("No subagent to wait for.")
    # each piece's own items were shown where the root collected it, once, waited for again or not
    await tree.act("wait_agent", _args(agent_names=["second"]))
    assert [(name, [item["content"] for item in items]) for name, items in workers.shown] == [
        ("agent_1", ["done: one"]), ("second", ["done: two"])]


async def test_at_most_max_concurrent_subagents_run_at_once() -> None:
    workers = Workers()
    tree = _tree(workers, limit=2)
    for index in range(5):
        await tree.act("spawn_agent", _args(task=f"slow {index}"))
    await asyncio.sleep(0.01)
    assert workers.running == 2
    workers.gate.set()
    waited = await tree.act("wait_agent", "{}")
    assert waited.count("(completed)") == 5 and workers.most == 2


async def test_a_failing_subagent_is_its_result() -> None:
    workers = Workers()
    tree = _tree(workers)
    await tree.act("spawn_agent", _args(task="boom"))
    await tree.act("spawn_agent", _args(task="fine"))
    waited = await tree.act("wait_agent", _args(agent_names=["agent_1", "agent_2"]))
    assert "## agent_1 (failed)\nThe subagent failed: RuntimeError." in waited
    assert "## agent_2 (completed)\ndone: fine" in waited


async def test_followup_keeps_the_context_and_delivers_the_messages_sent() -> None:
    workers = Workers()
    tree = _tree(workers)
    await tree.act("spawn_agent", _args(task="first"))
    await tree.act("wait_agent", "{}")
    assert (await tree.act("send_message", _args(agent_name="agent_1", message="be brief"))).startswith("Message")
    assert await tree.act("followup_task", _args(agent_name="agent_1", task="second")) == \
        "agent_1 started its follow-up task."
    assert await tree.act("wait_agent", _args(agent_names=["agent_1"])) == \
        "## agent_1 (completed)\ndone: Message: be brief\n\nsecond"
    assert [name for name, _ in workers.shown] == ["agent_1", "agent_1"]  # each piece's items, once
    assert workers.posted == [("agent_1", "root", "done: first"), ("root", "agent_1", "be brief"),
                              ("agent_1", "root", "done: Message: be brief\n\nsecond")]
    context = workers.seen[-1]
    assert [item["content"] for item in context] == ["first", "done: first", "Message: be brief\n\nsecond"]


async def test_interrupt_stops_a_running_subagent_and_close_cancels_the_rest() -> None:
    workers = Workers()
    tree = _tree(workers)
    await tree.act("spawn_agent", _args(task="slow a"))
    await tree.act("spawn_agent", _args(task="slow b"))
    await asyncio.sleep(0)
    assert await tree.act("interrupt_agent", _args(agent_name="agent_1")) == "agent_1: interrupted."
    assert "Error" in await tree.act("followup_task", _args(agent_name="agent_2", task="more"))
    task = tree.agents["agent_2"].task
    assert task is not None
    tree.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tree.agents["agent_2"].status == "interrupted"


async def test_wrong_calls_are_errors_the_model_reads() -> None:
    tree = _tree(Workers())
    assert await tree.act("spawn_agent", "not json") == "Error: the arguments are not JSON."
    assert await tree.act("spawn_agent", "[]") == "Error: the arguments must be a JSON object."
    assert await tree.act("spawn_agent", _args(task="")) == "Error: spawn_agent needs a 'task' string."
    assert (await tree.act("send_message", _args(agent_name="nobody", message="x"))).startswith(
        "Error: no subagent named 'nobody'.")
    assert (await tree.act("wait_agent", _args(agent_names=["ghost"]))).startswith("Error: no subagent named ghost.")


async def test_spawns_past_the_response_limit_are_refused() -> None:
    workers = Workers()
    tree = _tree(workers)
    for index in range(MAX_SUBAGENTS):
        await tree.act("spawn_agent", _args(task=f"t{index}"))
    assert (await tree.act("spawn_agent", _args(task="one more"))).startswith("Error: this response already")
    await tree.act("wait_agent", "{}")


async def test_a_kept_subagent_is_closed_until_a_followup_resumes_it_in_its_context() -> None:
    workers = Workers()
    context = [{"type": "message", "role": "user", "content": "remember kiwi"},
               {"type": "message", "role": "assistant", "content": "done: remember kiwi"}]
    tree = AgentTree(MultiAgentConfig(True, 6), workers.work, workers.usage.append, workers,
                     [KeptSubagent("agent_1", context)])
    assert await tree.act("list_agents", "{}") == "Subagents: agent_1 (closed)."
    assert (await tree.act("wait_agent", "{}")).startswith("No subagent to wait for.")  # closed: nothing to wait
    # a new spawn takes a name of its own, and the kept one does not count in the response's spawns
    assert await tree.act("spawn_agent", _args(task="other")) == "Spawned agent_1_2."
    assert tree.spawned == 1
    await tree.act("send_message", _args(agent_name="agent_1", message="it is green"))
    assert await tree.act("followup_task", _args(agent_name="agent_1", task="which fruit?")) == \
        f"agent_1 {RESUMED} its follow-up task."
    await tree.act("wait_agent", _args(agent_names=["agent_1"]))
    assert workers.seen[-1] == [*context, {"type": "message", "role": "user",
                                           "content": "Message: it is green\n\nwhich fruit?"}]
    # closed again (not running: nothing to stop), then a follow-up resumes it once more
    assert await tree.act("interrupt_agent", _args(agent_name="agent_1", close=True)) == \
        f"agent_1 {CLOSED}; followup_task resumes it."
    assert "agent_1 (closed)" in await tree.act("list_agents", "{}")
    assert await tree.act("interrupt_agent", _args(agent_name="agent_1", close=True)) == "agent_1: closed."
    assert (await tree.act("followup_task", _args(agent_name="agent_1", task="again"))).startswith(
        f"agent_1 {RESUMED}")
    await tree.act("wait_agent", "{}")
    assert len(workers.seen[-1]) == 5  # the first context, the resumed piece and its answer, the new task


async def test_closing_a_running_subagent_stops_it() -> None:
    workers = Workers()
    tree = _tree(workers)
    await tree.act("spawn_agent", _args(task="slow work"))
    assert await tree.act("interrupt_agent", _args(agent_name="agent_1", close=True)) == \
        f"agent_1 {CLOSED}; followup_task resumes it."
    assert await tree.act("list_agents", "{}") == "Subagents: agent_1 (closed)."
