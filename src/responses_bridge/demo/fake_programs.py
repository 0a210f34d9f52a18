"""The fake model writes programs when asked the way a person asks, for programmatic tool calling.

When the request offers the function ``program`` (what the bridge offers for a ``programmatic_tool_calling``
tool: one string parameter ``code``) and the last user message holds JavaScript, the answer is a call of ``program``
with that code:

* a fenced block, `````js`` (or ``javascript``) up to the closing fence: the block's lines;
* else a line starting ``js: <code>``: the rest of that line, e.g.
  ``js: const r = await tools.get_weather({city: "Oslo"}); return r``.

After the program's result the fake answers ``Tool result: <result>``, as after any call.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

PROGRAM_TOOL = "program"
_FENCED = re.compile(r"```[ \t]*(?:js|javascript)[ \t]*\r?\n(.*?)^[ \t]*```", re.DOTALL | re.IGNORECASE | re.MULTILINE)
_LINE = re.compile(r"^[ \t]*js:[ \t]*(\S[^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def requested_program(text: str) -> str | None:
    fenced = _FENCED.search(text)
    if fenced is not None:
        return fenced.group(1).rstrip() or None
    line = _LINE.search(text)
    return line.group(1).strip() if line is not None else None


def wanted_call(body: dict[str, Any], functions: list[dict[str, Any]], text: str) -> tuple[str, str] | None:
    """(``program``, its JSON arguments) when ``program`` is offered, the message holds JavaScript and
    ``tool_choice`` allows calling it."""
    choice = body.get("tool_choice")
    if choice == "none" or (isinstance(choice, dict) and choice.get("function", {}).get("name") != PROGRAM_TOOL):
        return None
    if not any(fn.get("name") == PROGRAM_TOOL for fn in functions):
        return None
    code = requested_program(text)
    return (PROGRAM_TOOL, orjson.dumps({"code": code}).decode()) if code is not None else None
