"""A call's arguments as the model reads them back: in the next response's history, from its stored item alone
(request_translation.items_to_messages), and in the tool loop's next turn (the output builder's turn message), which
sends what history will send, so a chain's later prompt repeats the loop's exactly (a backend's prefix cache holds;
docs/upstreams.md, "Prefix caches").

Only a function's, a multi-agent call's and an MCP call's item keep the arguments as the model wrote them; the others
keep what was parsed out of them (a custom tool's input, a shell or apply-patch action, a search's query, the code),
sent back as its compact JSON."""

from __future__ import annotations

from typing import Any

import orjson

from ..tools.computer import computer_call_arguments
from ..tools.programs import program_tool_call
from ..tools.server import ITEM_ID_CALLS, sent_back_arguments
from ..tools.tools import CUSTOM_INPUT
from ..tools.turn_result import TurnCall

CALL_KINDS = frozenset({"function_call", "custom_tool_call", "shell_call", "local_shell_call", "computer_call",
                        "apply_patch_call", "tool_search_call", "multi_agent_call"})
"""Call items whose outputs are items of their own (the client's, or a hosted shell's, a subagent's)."""


def call_arguments(item: dict[str, Any]) -> str:
    """A replayed call item's JSON arguments (a kind of :data:`CALL_KINDS`)."""
    kind = item["type"]
    if kind in ("function_call", "multi_agent_call"):
        return str(item["arguments"])
    if kind == "custom_tool_call":
        return orjson.dumps({CUSTOM_INPUT: item["input"]}).decode()
    if kind == "shell_call":
        return orjson.dumps({key: value for key, value in item["action"].items() if value is not None}).decode()
    if kind == "local_shell_call":
        return orjson.dumps({key: value for key, value in item["action"].items()
                             if key in ("command", "working_directory", "timeout_ms", "env")
                             and value not in (None, {})}).decode()
    if kind == "computer_call":
        return orjson.dumps(computer_call_arguments(item)[1]).decode()
    if kind == "apply_patch_call":
        return orjson.dumps(item["operation"]).decode()
    return orjson.dumps(item.get("arguments") or {}).decode()


def replayed_arguments(item: dict[str, Any]) -> str | None:
    """The arguments the next response's history will send a call of the tool loop back with (its item alone is
    kept): None where that is what the model wrote (a function's, an MCP call's) or where history shows no call
    (an image generation's note)."""
    kind = item.get("type")
    if kind in ITEM_ID_CALLS:
        return sent_back_arguments(item)
    if kind == "program":
        arguments: str = program_tool_call(item, "")["function"]["arguments"]
        return arguments
    if kind in CALL_KINDS and kind not in ("function_call", "multi_agent_call"):
        return call_arguments(item)
    return None


def loop_arguments(call: TurnCall) -> str:
    """A call's arguments in the loop's next turn: as the model wrote them where its item keeps them so, else as
    the next response's history will send them (what the item parsed out of them, re-encoded). A call cut short
    may have an item without the parsed fields: its arguments as they came (such a turn has no next turn)."""
    try:
        replayed = replayed_arguments(call.item)
    except (KeyError, TypeError, AttributeError):
        return call.arguments
    return call.arguments if replayed is None else replayed
