"""The multi-agent beta's tools as a Chat Completions model takes them, and the items their calls become.

With ``multi_agent.enabled`` the root model is offered one function per action, named after it (``spawn_agent``,
``send_message``, ``followup_task``, ``wait_agent``, ``list_agents``, ``interrupt_agent``). A call of one becomes a
``multi_agent_call`` item (``action``, ``arguments``: the JSON string the model wrote, ``call_id``, ``agent``: the
agent that made it), done when its arguments are: the SDK has no argument events for it. The run answers it with a
``multi_agent_call_output`` item (:func:`call_output_item`), whose text the model reads as the call's result.
What passes between agents (a ``send_message``, a subagent's result as ``wait_agent`` collects it) is an
``agent_message`` item (:func:`agent_message_item`), ``agent`` its author.
"""

from __future__ import annotations

from typing import Any

from ... import ids
from .client import Event
from .server import ServerCallReader

KIND = "multi_agent"
ROOT_AGENT = "root"

_NAME = {"type": "string", "description": "The subagent's name, as spawn_agent returned it."}
_NAMES = {"type": "array", "items": {"type": "string"},
          "description": "The subagents to wait for; all that are running when omitted."}
_MESSAGE = {"type": "string", "description": "What to tell the subagent."}

ACTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "spawn_agent": (
        "Start a subagent that works on a task on its own, in parallel with you and the other subagents, with its "
        "own context and the same tools as you. Returns its name at once; call wait_agent for its result.",
        {"type": "object", "properties": {
            "task": {"type": "string", "description": "The subagent's whole task: it sees nothing else of yours."},
            "name": {"type": "string", "description": "A short name for the subagent (optional)."}},
         "required": ["task"]}),
    "send_message": (
        "Send a message to a subagent; it reads it when it starts its next piece of work (followup_task).",
        {"type": "object", "properties": {"agent_name": _NAME, "message": _MESSAGE},
         "required": ["agent_name", "message"]}),
    "followup_task": (
        "Give a finished subagent another task, in the same context it already has; wait_agent returns its result. "
        "A closed subagent (closed with interrupt_agent, or by an earlier turn) is resumed by it.",
        {"type": "object", "properties": {"agent_name": _NAME, "task": _MESSAGE},
         "required": ["agent_name", "task"]}),
    "wait_agent": (
        "Wait until the named subagents (all running ones when none is named) have finished, and return each one's "
        "result.",
        {"type": "object", "properties": {"agent_names": _NAMES}}),
    "list_agents": (
        "List the subagents with their status (running, completed, failed, interrupted, closed).",
        {"type": "object", "properties": {}}),
    "interrupt_agent": (
        "Stop a running subagent; its result says it was interrupted. With close, also close it: it keeps its "
        "context, and followup_task resumes it.",
        {"type": "object", "properties": {"agent_name": _NAME, "close": {
            "type": "boolean", "description": "Close the subagent too (it need not be running)."}},
         "required": ["agent_name"]}),
}


def agent_of(name: str) -> dict[str, str]:
    """An item's ``agent`` field: the agent that produced it."""
    return {"agent_name": name}


class MultiAgentCallReader(ServerCallReader):
    """A ``multi_agent_call``: its ``arguments`` are the model's JSON string, done when they are complete."""

    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        self.item["arguments"] = arguments
        return []


def call_reader(action: str, call_id: str, output_index: int) -> MultiAgentCallReader:
    return MultiAgentCallReader({"id": ids.new_id("mac"), "type": "multi_agent_call", "action": action,
                                 "arguments": "", "call_id": call_id, "agent": agent_of(ROOT_AGENT)},
                                output_index)


def call_output_item(action: str, call_id: str, text: str) -> dict[str, Any]:
    """The ``multi_agent_call_output`` answering one call: its text, as one ``output_text`` part."""
    return {"id": ids.new_id("maco"), "type": "multi_agent_call_output", "action": action, "call_id": call_id,
            "output": [{"type": "output_text", "text": text, "annotations": []}], "agent": agent_of(ROOT_AGENT)}


def agent_message_item(author: str, recipient: str, text: str) -> dict[str, Any]:
    """An ``agent_message``: ``text`` from agent ``author`` to agent ``recipient``."""
    return {"id": ids.new_id("amsg"), "type": "agent_message", "author": author, "recipient": recipient,
            "content": [{"type": "input_text", "text": text}], "agent": agent_of(author)}
