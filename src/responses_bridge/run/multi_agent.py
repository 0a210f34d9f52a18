"""The subagents of one response (the multi-agent beta): spawned, messaged, awaited and stopped by the root model.

Each subagent is a turn loop of its own over the same upstream: a response of its own (``store: false``, never
streamed) whose input is its task, whose tools are the request's own, driven by the one driver (drive.py) in
an asyncio task. At most ``max_concurrent_subagents`` run at once (the others wait for a place); its usage is
summed into the root response's. A subagent that fails — its upstream down, a bug below — has that failure as its
result; nothing of it reaches the root as an exception. Cancelling the root (a client gone, a background response
cancelled) cancels every subagent with it (:meth:`AgentTree.close`).

:class:`AgentTree` answers the root's ``multi_agent_call`` items (engine/tools/multi_agent.py): each action returns
the text of its ``multi_agent_call_output``. ``interrupt_agent`` with ``close`` closes a subagent (the SDK's
``multi_agent_call.action`` has no close of its own) and ``followup_task`` resumes a closed one in its context; an
Agents API session starts each response's tree with its subagents of earlier responses, closed
(:class:`KeptSubagent`, services/agents/subagents/contexts.py). What the root's output shows of the tree goes to a
:class:`TreeOutput`: the messages between agents, and each piece of a subagent's work (its own items) once, where
``wait_agent`` collects it — between the root's turns, never in the middle of one the root is streaming.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog

from ..engine.responses.output_builder import OutputBuilder
from ..engine.tools.multi_agent import ACTIONS, ROOT_AGENT
from ..engine.tools.tools import ToolPlan
from ..protocol.tools.multi_agent import MultiAgentConfig

log = structlog.get_logger(__name__)

RESUMED = "was resumed and started"  # followup_task's answer for a closed subagent (services/agents/subagents/tree.py)
CLOSED = "was closed"  # interrupt_agent's answer with ``close`` (services/agents/subagents/tree.py)

MAX_SUBAGENTS = 64
"""Subagents one response may spawn in all: each spawn past it is refused, as its result says."""


@dataclass(frozen=True, slots=True)
class KeptSubagent:
    """A subagent an earlier response of the same session closed, kept with its context: a response's tree starts
    with it closed, and ``followup_task`` resumes it in that context (services/agents/subagents/contexts.py)."""

    name: str
    context: list[dict[str, Any]]


KEPT_SUBAGENTS: ContextVar[Sequence[KeptSubagent]] = ContextVar("kept_subagents", default=())
"""The kept subagents of the response being begun: set by the session's turn around its response's start
(adapters/http/agents/agents_routes.py), read once where its tree is made (subagents.py)."""


@dataclass(frozen=True, slots=True)
class SubagentAnswer:
    """What one piece of a subagent's work came to: its final text, status, usage (Chat Completions shape), the
    items of its context to carry into a follow-up task, and the output items this piece made (its own turns, shown
    in the root's output once the root collects the result)."""

    text: str
    status: str
    usage: dict[str, Any] | None = None
    context: list[dict[str, Any]] = field(default_factory=list)
    output: list[dict[str, Any]] = field(default_factory=list)


Worker = Callable[[list[dict[str, Any]]], Awaitable[SubagentAnswer]]
"""Runs a subagent's turn loop over these input items (its context, ending with its task)."""


class TreeOutput(Protocol):
    """Where the tree's items go in the root's output (subagents.py: the root's output builder)."""

    def message(self, author: str, recipient: str, text: str) -> object:
        """An ``agent_message`` from ``author`` to ``recipient``."""

    def agent_items(self, agent_name: str, items: list[dict[str, Any]]) -> object:
        """The output items of a finished piece of ``agent_name``'s work, tagged as its own."""


@dataclass(slots=True)
class Subagent:
    name: str
    context: list[dict[str, Any]]
    task: asyncio.Task[SubagentAnswer] | None = None
    answer: SubagentAnswer | None = None
    inbox: list[str] = field(default_factory=list)
    reported: bool = False  # its latest answer was returned by a wait_agent already (and its items shown)
    closed: bool = False  # closed (interrupt_agent's ``close``, or an earlier response's end): followup resumes it

    @property
    def status(self) -> str:
        if self.task is not None and not self.task.done():
            return "running"
        if self.closed:
            return "closed"
        return self.answer.status if self.answer is not None else "pending"


class AgentTree:
    """The subagents of one response. ``worker`` runs one piece of work; ``on_usage`` is told each piece's usage."""

    def __init__(self, config: MultiAgentConfig, worker: Worker,
                 on_usage: Callable[[dict[str, Any] | None], None], output: TreeOutput,
                 kept: Sequence[KeptSubagent] = ()) -> None:
        self._worker = worker
        self._on_usage = on_usage
        self._output = output
        self._places = asyncio.Semaphore(config.max_concurrent_subagents)
        self.agents: dict[str, Subagent] = {kept_one.name: Subagent(kept_one.name, list(kept_one.context),
                                                                    reported=True, closed=True) for kept_one in kept}
        self.spawned = 0  # by this response: what MAX_SUBAGENTS bounds

    async def act(self, action: str, arguments: str) -> str:
        """One ``multi_agent_call``: the text of its output. A call the model got wrong says so, for it to read."""
        try:
            parsed = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return "Error: the arguments are not JSON."
        if not isinstance(parsed, dict):
            return "Error: the arguments must be a JSON object."
        if action == "spawn_agent":
            return self._spawn(parsed)
        if action == "wait_agent":
            return await self._wait(parsed)
        if action == "list_agents":
            return self._list()
        agent = self.agents.get(str(parsed.get("agent_name") or ""))
        if agent is None:
            return f"Error: no subagent named {str(parsed.get('agent_name'))[:100]!r}. {self._list()}"
        if action == "send_message":
            message = str(parsed.get("message") or "")
            agent.inbox.append(message)
            self._output.message(ROOT_AGENT, agent.name, message)
            return f"Message queued for {agent.name}; it reads it with its next task."
        if action == "followup_task":
            if agent.status == "running":
                return f"Error: {agent.name} is still running; wait for it first."
            resumed, agent.closed = agent.closed, False
            self._start(agent, str(parsed.get("task") or ""))
            return f"{agent.name} {RESUMED if resumed else 'started'} its follow-up task."
        if action == "interrupt_agent":
            if agent.task is not None and not agent.task.done():
                agent.task.cancel()
                await asyncio.wait((agent.task,))
            if parsed.get("close") is True and not agent.closed:
                agent.closed, agent.reported = True, True  # nothing left to wait for
                return f"{agent.name} {CLOSED}; followup_task resumes it."
            return f"{agent.name}: {agent.status}."
        return f"Error: unknown action {action!r}."

    def _spawn(self, arguments: dict[str, Any]) -> str:
        task = arguments.get("task")
        if not isinstance(task, str) or not task.strip():
            return "Error: spawn_agent needs a 'task' string."
        if self.spawned >= MAX_SUBAGENTS:
            return f"Error: this response already spawned {MAX_SUBAGENTS} subagents, the most it may."
        self.spawned += 1
        name = self._fresh_name(arguments.get("name"))
        agent = Subagent(name, [])
        self.agents[name] = agent
        self._start(agent, task)
        return f"Spawned {name}."

    def _fresh_name(self, wanted: object) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", wanted)[:40] if isinstance(wanted, str) and wanted else ""
        base = base or f"agent_{self.spawned}"
        name, n = base, 2
        while name in self.agents:
            name, n = f"{base}_{n}", n + 1
        return name

    def _start(self, agent: Subagent, task: str) -> None:
        text = "\n\n".join([*(f"Message: {message}" for message in agent.inbox), task])
        agent.inbox.clear()
        items = [*agent.context, {"type": "message", "role": "user", "content": text}]
        agent.answer, agent.reported = None, False
        agent.task = asyncio.create_task(self._work(agent, items), name=f"subagent {agent.name}")

    async def _work(self, agent: Subagent, items: list[dict[str, Any]]) -> SubagentAnswer:
        try:
            async with self._places:
                answer = await self._worker(items)
        except asyncio.CancelledError:
            agent.answer = SubagentAnswer("The subagent was interrupted.", "interrupted")
            raise
        except Exception as error:  # the subagent's failure is its result, never the root's
            log.exception("subagent_failed", agent=agent.name)
            answer = SubagentAnswer(f"The subagent failed: {type(error).__name__}.", "failed")
        agent.answer = answer
        agent.context = answer.context or items
        self._on_usage(answer.usage)
        return answer

    async def _wait(self, arguments: dict[str, Any]) -> str:
        named = arguments.get("agent_names")
        if isinstance(named, list) and named:
            unknown = [str(name)[:100] for name in named if name not in self.agents]
            if unknown:
                return f"Error: no subagent named {', '.join(unknown)}. {self._list()}"
            chosen = [self.agents[name] for name in dict.fromkeys(named)]
        else:
            chosen = [agent for agent in self.agents.values() if agent.status == "running" or not agent.reported]
        if not chosen:
            return "No subagent to wait for. " + self._list()
        tasks = [agent.task for agent in chosen if agent.task is not None and not agent.task.done()]
        if tasks:
            await asyncio.wait(tasks)
        parts = []
        for agent in chosen:
            answer = agent.answer or SubagentAnswer("", agent.status)
            if not agent.reported:  # its turns are shown once, where the root collects them
                self._output.agent_items(agent.name, answer.output)
            agent.reported = True
            self._output.message(agent.name, ROOT_AGENT, answer.text)
            parts.append(f"## {agent.name} ({answer.status})\n{answer.text}")
        return "\n\n".join(parts)

    def _list(self) -> str:
        if not self.agents:
            return "No subagents."
        return "Subagents: " + ", ".join(f"{agent.name} ({agent.status})" for agent in self.agents.values()) + "."

    def close(self) -> None:
        """The root ended or was cancelled: every subagent still running is cancelled."""
        for agent in self.agents.values():
            if agent.task is not None and not agent.task.done():
                agent.task.cancel()


def offer_agents(plan: ToolPlan, builder: OutputBuilder) -> None:
    """Offer the root model the actions, and have the builder read their calls as ``multi_agent_call`` items."""
    plan.add_multi_agent(ACTIONS)
    builder.set_targets(plan.targets)
