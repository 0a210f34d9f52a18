"""The fake model runs code when asked the way a person asks: so the code interpreter can be seen working in the
demo without learning the fake's directives.

When the request offers a code tool (the bridge offers the code interpreter to the model as the function ``python``
with one string parameter ``code``; a client's own function named ``python`` or ``code_interpreter`` counts too)
and the last user message holds code, the answer is a call to that tool with that code as its argument:

* a fenced block, `````python`` (or ```` ```py ````, or no language) up to the closing fence: the block's lines;
* else a line starting ``run: <code>`` (or ``please run:``): the rest of that line (surrounding backticks taken
  off), e.g. ``run: print(2 + 2)``; "I went for a run: …" mid-sentence is not code.

Shell commands likewise, when the request offers the hosted shell (the function ``shell``, whose parameter
``commands`` is an array of strings): a fenced `````sh`` (or ``bash``, ``shell``) block is one command, the
block's lines; else a line starting ``sh: <command>`` (or ``please sh:``, ``$ <command>``), e.g.
``sh: ls -la /mnt/data && python3 --version``.

After the tool's result the fake answers ``Tool result: <output>``, as after any call. An explicit ``call <name>``,
``tool_choice`` naming another function, ``tool_choice: "none"`` and ``[args=…]`` keep their meaning
(fake_upstream.py); ``call python`` with code in the message calls it with that code (instead of the word after
it). Without a code tool offered, or without code in the message, nothing changes: the prompt is echoed.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

CODE_TOOLS = ("python", "code_interpreter")
_FENCED = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)^[ \t]*```", re.DOTALL | re.IGNORECASE | re.MULTILINE)
_RUN = re.compile(r"^[ \t]*(?:please[ \t,]+)?run:[ \t]*(\S[^\r\n]*)", re.IGNORECASE | re.MULTILINE)


SHELL_TOOLS = ("shell",)
_FENCED_SHELL = re.compile(r"```[ \t]*(?:sh|bash|shell)[ \t]*\r?\n(.*?)^[ \t]*```",
                           re.DOTALL | re.IGNORECASE | re.MULTILINE)
_SH = re.compile(r"^[ \t]*(?:(?:please[ \t,]+)?sh:|\$)[ \t]*(\S[^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def _requested(fenced: re.Pattern[str], line: re.Pattern[str], text: str) -> str | None:
    """What a message asks to run: the first ``fenced`` block, else the rest of the first ``line`` match (without
    the backticks around it); None for neither, or nothing in them."""
    block = fenced.search(text)
    if block is not None:
        return block.group(1).rstrip() or None
    found = line.search(text)
    if found is None:
        return None
    asked = found.group(1).strip()
    if len(asked) > 1 and asked.startswith("`") and asked.endswith("`"):
        asked = asked.strip("`").strip()
    return asked or None


def requested_command(text: str) -> str | None:
    """The shell command a user's message asks to run, or None."""
    return _requested(_FENCED_SHELL, _SH, text)


def _shell_tool(functions: list[dict[str, Any]]) -> str | None:
    for fn in functions:
        params = fn.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        if fn.get("name") in SHELL_TOOLS and isinstance(props, dict) and isinstance(props.get("commands"), dict):
            return str(fn["name"])
    return None


def wanted_call(body: dict[str, Any], functions: list[dict[str, Any]], text: str) -> tuple[str, str] | None:
    """(the tool, its JSON arguments) when the message holds a shell command and the shell is offered, or holds
    code and a code tool is offered (:func:`wants_code_call`), and ``tool_choice`` allows calling it."""
    choice = body.get("tool_choice")
    name = _shell_tool(functions) if choice != "none" else None
    command = requested_command(text) if name is not None else None
    if name is not None and command is not None and not (
            isinstance(choice, dict) and choice.get("function", {}).get("name") != name):
        return name, orjson.dumps({"commands": [command]}).decode()
    code = wants_code_call(body, functions, text)
    return (code[0], code_arguments(functions, code[0], code[1])) if code is not None else None


def requested_code(text: str) -> str | None:
    """The code a user's message asks to run, or None."""
    return _requested(_FENCED, _RUN, text)


def _code_parameter(fn: dict[str, Any]) -> str | None:
    """The parameter the code goes in: ``code`` when the function has it, else its first string parameter."""
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(props, dict):
        return None
    if isinstance(props.get("code"), dict):
        return "code"
    return next((name for name, schema in props.items() if isinstance(schema, dict)
                 and schema.get("type") == "string"), None)


def code_tool(functions: list[dict[str, Any]]) -> str | None:
    """The name of the first offered function that runs code (one of :data:`CODE_TOOLS` with a parameter to put
    code in), or None."""
    for fn in functions:
        if fn.get("name") in CODE_TOOLS and _code_parameter(fn) is not None:
            return str(fn["name"])
    return None


def code_arguments(functions: list[dict[str, Any]], name: str, code: str) -> str:
    """The call's arguments: the code in the tool's code parameter."""
    fn = next(fn for fn in functions if fn.get("name") == name)
    return orjson.dumps({_code_parameter(fn): code}).decode()


def wants_code_call(body: dict[str, Any], functions: list[dict[str, Any]], text: str) -> tuple[str, str] | None:
    """(the code tool, the code) when the message holds code, a code tool is offered, and ``tool_choice`` allows
    calling it: absent, ``auto``, ``required``, or naming it."""
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    name = code_tool(functions)
    if name is None:
        return None
    if isinstance(choice, dict) and choice.get("function", {}).get("name") != name:
        return None
    code = requested_code(text)
    return (name, code) if code is not None else None
