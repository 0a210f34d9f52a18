"""The fake model as the root of a multi-agent response: it spawns subagents and waits for them, by the functions'
own names (the bridge offers the beta's actions as ``spawn_agent``, ``wait_agent``, ``list_agents``, …).

When the request offers ``spawn_agent`` and the last user message has lines ``spawn: <task>``, the answer is one
``spawn_agent`` call per line (parallel calls, ``{"task": <task>}``; with ``parallel_tool_calls: false`` only the
first). In a task, ``{name=value}`` becomes the directive ``[name=value]`` for the subagent that reads it (so
``spawn: count {error=503}`` scripts a subagent whose upstream fails; the root's own message keeps its directives).
A line ``agents: list`` adds a ``list_agents`` call after the spawns. After a round of results that holds a
``spawn_agent`` call, the model calls ``wait_agent`` (``{}``: every subagent); after the ``wait_agent`` result it
answers ``Tool result: <what wait_agent returned>``, as after any call.

Without ``spawn_agent`` offered (a subagent is offered the request's own tools only), nothing changes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

SPAWN = "spawn_agent"
WAIT = "wait_agent"
LIST = "list_agents"
_SPAWN_LINE = re.compile(r"^[ \t]*spawn:[ \t]*(\S[^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_LIST_LINE = re.compile(r"^[ \t]*agents:[ \t]*list\b", re.IGNORECASE | re.MULTILINE)
_BRACED = re.compile(r"\{([a-z_]+(?:=[^}]*)?)\}")


def wanted_calls(body: dict[str, Any], offered: set[str], user_text: str) -> list[tuple[str, str]]:
    """(function name, JSON arguments) of the calls a root model would make now; [] when it makes none."""
    if SPAWN not in offered or body.get("tool_choice") == "none":
        return []
    messages = body["messages"]
    last = messages[-1]
    if last.get("role") == "user":
        calls = [(SPAWN, orjson.dumps({"task": _BRACED.sub(r"[\1]", task.strip())}).decode())
                 for task in _SPAWN_LINE.findall(user_text)]
        if calls and body.get("parallel_tool_calls") is False:
            return calls[:1]
        if calls and _LIST_LINE.search(user_text) and LIST in offered:
            calls.append((LIST, "{}"))
        return calls
    if last.get("role") != "tool" or WAIT not in offered:
        return []
    for message in reversed(messages):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            names = {call.get("function", {}).get("name") for call in message["tool_calls"]}
            return [(WAIT, "{}")] if SPAWN in names else []
    return []
