"""A session turn's Responses events as the session events of the SDK's ``AgentSessionEvent`` union.

A turn is one run of the bridge's driver (a background response); what its client sees is the same stream told
in the Agents API's words: ``response.output_item.added`` becomes ``agent.session.turn.item.added`` with the item as
the SDK's ``AgentSessionItem``, text and reasoning-summary deltas keep their indexes, and the terminal response
gives the turn its status and usage. An event the Agents API has no word for (a tool's progress, a response's
``created``) is not forwarded: its effect arrives with the item it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

_SAME_SHAPE = {
    "response.output_text.delta": ("agent.session.turn.output_text.delta", ("content_index", "delta")),
    "response.output_text.done": ("agent.session.turn.output_text.done", ("content_index", "text")),
    "response.reasoning_summary_text.delta": ("agent.session.turn.reasoning_summary_text.delta",
                                              ("summary_index", "delta")),
    "response.reasoning_summary_text.done": ("agent.session.turn.reasoning_summary_text.done",
                                             ("summary_index", "text")),
}
_PARTS = {
    "response.content_part.added": "agent.session.turn.content_part.added",
    "response.content_part.done": "agent.session.turn.content_part.done",
    "response.reasoning_summary_part.added": "agent.session.turn.reasoning_summary_part.added",
    "response.reasoning_summary_part.done": "agent.session.turn.reasoning_summary_part.done",
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed", "response.cancelled")


def session_item(item: dict[str, Any], turn_id: str, *, done: bool) -> dict[str, Any] | None:
    """A response's output item as the session's item (None: a kind sessions do not show yet)."""
    kind = item.get("type")
    status = item.get("status") or ("completed" if done else "in_progress")
    if kind == "message":
        parts = [{"type": "output_text", "text": part.get("text", "")} for part in item.get("content") or []
                 if isinstance(part, dict) and part.get("type") == "output_text"]
        return {"id": item.get("id"), "type": "message", "role": "assistant", "content": parts,
                "status": status, "phase": item.get("phase"), "turn_id": turn_id}
    if kind == "function_call":
        try:
            arguments: Any = orjson.loads(item.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = item.get("arguments")
        return {"id": item.get("id"), "type": "function_call", "call_id": item.get("call_id"),
                "name": item.get("name"), "arguments": arguments, "status": "in_progress", "turn_id": turn_id}
    if kind == "mcp_call":
        try:
            parsed: Any = orjson.loads(item.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            parsed = item.get("arguments")
        state = item.get("status")
        if state not in ("in_progress", "completed", "failed", "incomplete"):
            state = "failed" if item.get("error") else ("completed" if done else "in_progress")
        return {"id": item.get("id"), "type": "mcp_call", "server_label": item.get("server_label"),
                "name": item.get("name"), "arguments": parsed, "output": item.get("output"),
                "error": item.get("error"), "status": state, "turn_id": turn_id}
    if kind == "web_search_call":
        state = "incomplete" if item.get("status") in ("failed", "incomplete") else (
            "completed" if done else "in_progress")
        return {"id": item.get("id"), "type": "web_search_call", "action": _search_action(item.get("action")),
                "status": state, "turn_id": turn_id}
    if kind == "reasoning":
        summary = [{"type": "summary_text", "text": part.get("text", "")} for part in item.get("summary") or []
                   if isinstance(part, dict)]
        return {"id": item.get("id"), "type": "reasoning", "summary": summary, "status": status,
                "turn_id": turn_id}
    return None


_ACTION_KEYS = {"search": ("query", "queries"), "open_page": ("url",), "find_in_page": ("pattern", "url")}


def _search_action(action: Any) -> dict[str, Any] | None:
    """A ``web_search_call``'s action as the SDK's ``WebSearchAction`` (its sources are the response's to show)."""
    if not isinstance(action, dict):
        return None
    keys = _ACTION_KEYS.get(str(action.get("type")))
    if keys is None:
        return {"type": "other"}
    return {"type": action["type"], **{key: action[key] for key in keys if action.get(key) is not None}}


def _command(event: dict[str, Any], base: dict[str, Any],
             shown: Shown) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The hosted shell's call and its output (an ``openai_hosted`` session's container) as one
    ``command_execution`` item (the call item's id): added once the call's commands are known, done
    with their output and exit code."""
    item = event["item"]
    call_id = str(item.get("call_id") or item.get("id"))
    where = {"output_index": event.get("output_index", 0)}
    if item["type"] == "shell_call":
        if event["type"] != "response.output_item.done":
            return None, None
        action = item.get("action") or {}
        commands = action.get("commands") or []
        item_id, command = str(item.get("id") or call_id), "\n".join(str(command) for command in commands)
        added = {"id": item_id, "type": "command_execution", "command": command,
                 "cwd": None, "duration_ms": None, "exit_code": None, "output": None, "status": "in_progress",
                 "turn_id": base["turn_id"]}
        said = {"type": "agent.session.turn.item.added", **base, **where, "item": added}
        if item.get("environment") is None:  # the client's own shell (self_hosted): the client runs it
            added[CLIENT_CALL] = {"call_id": call_id, "name": "shell", "turn_id": base["turn_id"],
                                  "arguments": {"commands": [str(c) for c in commands],
                                                "timeout_ms": action.get("timeout_ms"),
                                                "max_output_length": action.get("max_output_length")}}
            return said, added
        shown.commands[call_id] = (item_id, command)
        return said, None
    if event["type"] != "response.output_item.done" or call_id not in shown.commands:
        return None, None
    item_id, command = shown.commands.pop(call_id)
    outputs = [output for output in item.get("output") or [] if isinstance(output, dict)]
    text = "".join(str(output.get("stdout") or "") + str(output.get("stderr") or "") for output in outputs)
    outcome = (outputs[-1].get("outcome") or {}) if outputs else {}
    exit_code = outcome.get("exit_code") if outcome.get("type") == "exit" else None
    status = "completed" if exit_code == 0 else ("incomplete" if item.get("status") == "incomplete" else "failed")
    done = {"id": item_id, "type": "command_execution", "command": command, "cwd": None, "duration_ms": None,
            "exit_code": exit_code, "output": text, "status": status, "turn_id": base["turn_id"]}
    return {"type": "agent.session.turn.item.done", **base, **where, "item": done}, done


def call_output_item(item_id: str, call: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A client's tool result as the session's ``function_call_output`` item."""
    return {"id": item_id, "type": "function_call_output", "call_id": call["call_id"], "turn_id": call["turn_id"],
            "status": "completed" if result["success"] else "failed", "output": result.get("output"),
            "error": result.get("error")}


def call_output_input(result: dict[str, Any]) -> dict[str, Any]:
    """A client's tool result as the next response's ``function_call_output`` input item."""
    if result["success"]:
        output = result.get("output")
        return {"type": "function_call_output", "call_id": result["call_id"],
                "output": "" if output is None else output}
    return {"type": "function_call_output", "call_id": result["call_id"],
            "output": f"The tool call failed: {result.get('error') or 'no reason given'}"}


def user_item(item_id: str, content: list[dict[str, Any]], turn_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user", "content": content, "status": "completed",
            "phase": None, "turn_id": turn_id}


CLIENT_CALL = "_client_call"
"""Key of a ``command_execution`` item the client must run (the call it answers; taken off before it is shown)."""


def command_output_input(call: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A client's result of a command (a ``self_hosted`` session) as the next response's ``shell_call_output``: the
    client says success or failure and what it printed, which the model reads as exit code 0 or 1."""
    text = result_text(result.get("output"))
    if result["success"]:
        output = {"stdout": text, "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}
    else:
        output = {"stdout": text, "stderr": result.get("error") or "the command failed",
                  "outcome": {"type": "exit", "exit_code": 1}}
    return {"type": "shell_call_output", "call_id": call["call_id"], "output": [output]}


def result_text(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    return "".join(str(part.get("text", "")) for part in output if part.get("type") == "input_text")


@dataclass
class Shown:
    """What a turn's events announced so far: item ids (the events of an item not shown are not either), and the
    hosted shell's calls by ``call_id`` (their item's id and command, for the output that ends them)."""

    ids: set[str] = field(default_factory=set)
    commands: dict[str, tuple[str, str]] = field(default_factory=dict)


def translate(event: dict[str, Any], session_id: str, turn_id: str,
              shown: Shown) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(session event, finished item)`` for one Responses event; ``shown``: what was announced so far."""
    kind = event.get("type")
    base = {"session_id": session_id, "turn_id": turn_id}
    if kind in ("response.output_item.added", "response.output_item.done") and \
            (event.get("item") or {}).get("type") in ("shell_call", "shell_call_output"):
        return _command(event, base, shown)
    if kind in ("response.output_item.added", "response.output_item.done"):
        done = kind == "response.output_item.done"
        item = session_item(event.get("item") or {}, turn_id, done=done)
        if item is None:
            return None, None
        if item["type"] == "function_call":  # shown whole, once its arguments are: the client runs it from this
            if not done:
                return None, None
            return {"type": "agent.session.turn.item.added", **base, "output_index": event.get("output_index", 0),
                    "item": item}, item
        shown.ids.add(str(item["id"]))
        name = "agent.session.turn.item.done" if done else "agent.session.turn.item.added"
        return {"type": name, **base, "output_index": event.get("output_index", 0), "item": item}, \
            (item if done else None)
    if event.get("item_id") not in shown.ids:
        return None, None
    where = {"item_id": event["item_id"], "output_index": event.get("output_index", 0)}
    if kind in _SAME_SHAPE:
        name, keys = _SAME_SHAPE[kind]
        return {"type": name, **base, **where, **{key: event.get(key) for key in keys}}, None
    if kind in _PARTS:
        part = event.get("part") or {}
        if kind.startswith("response.content_part"):
            if part.get("type") != "output_text":
                return None, None
            extra: dict[str, Any] = {"content_index": event.get("content_index", 0),
                                     "part": {"type": "output_text", "text": part.get("text", "")}}
        else:
            extra = {"summary_index": event.get("summary_index", 0),
                     "part": {"type": "summary_text", "text": part.get("text", "")}}
        return {"type": _PARTS[kind], **base, **where, **extra}, None
    return None, None


def token_usage(usage: Any) -> dict[str, Any] | None:
    """A response's usage as the Agents API's ``TokenUsage`` (None when the upstream reported none)."""
    if not isinstance(usage, dict):
        return None
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    input_tokens = int(usage.get("input_tokens") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": int(cached)},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": int(reasoning)},
            "total_tokens": int(usage.get("total_tokens") or input_tokens + output_tokens)}


def add_usage(total: dict[str, Any] | None, more: dict[str, Any] | None) -> dict[str, Any] | None:
    if more is None:
        return total
    if total is None:
        return more
    return {"input_tokens": total["input_tokens"] + more["input_tokens"],
            "input_tokens_details": {"cached_tokens": total["input_tokens_details"]["cached_tokens"]
                                     + more["input_tokens_details"]["cached_tokens"]},
            "output_tokens": total["output_tokens"] + more["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": total["output_tokens_details"]["reasoning_tokens"]
                                      + more["output_tokens_details"]["reasoning_tokens"]},
            "total_tokens": total["total_tokens"] + more["total_tokens"]}


_ERROR_CODES = {"context_length_exceeded", "rate_limit_exceeded", "server_error", "authentication_error",
                "invalid_request", "resource_not_found", "request_timeout", "connection_failed",
                "server_overloaded"}


def turn_error(error: Any, status: int | None = None) -> dict[str, Any]:
    """A response's error as the turn's ``SessionTurnError`` (its code one the SDK knows)."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    if code not in _ERROR_CODES:
        code = {401: "authentication_error", 403: "authentication_error", 404: "resource_not_found",
                408: "request_timeout", 429: "rate_limit_exceeded"}.get(status or 0)
        code = code or ("invalid_request" if status is not None and status < 500 else "server_error")
    return {"code": code, "message": str(error.get("message") or "The turn failed.")}
