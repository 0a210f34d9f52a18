"""Tools described in the prompt and calls read back out of the text: the ``tool_calling: prompt`` switch.

Some servers' native tool calling cannot serve OpenAI's default. Stock llama-cpp-python (``chatml-function-calling``)
ignores ``tools`` sent without ``tool_choice`` — the SDKs' default, so no tool ever reaches the model — and under
``tool_choice: "auto"`` generates a text answer under a grammar that allows only a function name or the end, so
every answer in words is empty (``auto`` with ``stream: true`` and a tool call is an empty 200). What the same
server does well is plain generation. So for such a backend a turn sends no ``tools`` at all: the functions are
described in the system message in the form the server's own template uses (``functions.<name>:`` then its JSON
arguments, ``message:`` before a text answer), and the answer's text is read back — text stays text (``message:``
taken off), and from a line that starts a known function's marker on, the rest is calls, given to the output builder
as the ``tool_calls`` deltas a native server would have sent. ``required`` and a call forced by name are said in
words (that server's own forced call constrains the arguments by a grammar that lets a long string argument — a
program's code — run on to the context's end: minutes on a CPU); ``none`` offers nothing.

The reader holds back at most one marker's length of text at the start of a line, so a stream still streams; the
calls go out once the answer ends, when their arguments are whole.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from ... import ids

MESSAGE_PREFIX = "message:"

_INSTRUCTIONS = (
    "You can respond to users messages with either a single message or one or more function calls. Call a function "
    "whenever its result is needed to answer; never make up what a function would return.\n\n"
    "To respond with a message begin the message with 'message:', use the following format:\n\n"
    "message:\n<message>\n\n"
    "To respond with one or more function calls begin the message with 'functions.<function_name>:', use the "
    "following format:\n\n"
    "functions.<function_name>:\n{ \"arg1\": \"value1\", \"arg2\": \"value2\" }\n"
    "functions.<function_name>:\n{ \"arg1\": \"value1\", \"arg2\": \"value2\" }")


def as_prompt_tools(body: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...] | None]:
    """The chat body to send for ``body`` (the bridge's own, with native ``tools``; left unchanged, since a tool
    loop's later turns are built from it) and the names of the functions described in its prompt, whose calls the
    answer's text may hold (None: the answer is read as it comes)."""
    tools = body.get("tools")
    if not tools:
        return body, None
    choice = body.get("tool_choice")
    wire = dict(body)
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        wire.pop(key, None)
    if choice == "none":
        return wire, None
    functions = [tool["function"] for tool in tools]
    if isinstance(choice, dict):  # a call forced by name: that function alone, and the model told to call it
        forced = choice.get("function", {}).get("name")
        functions = [function for function in functions if function["name"] == forced] or functions
    wire["messages"] = _with_description(body["messages"], _describe(functions, choice == "required" or isinstance(
        choice, dict), body.get("parallel_tool_calls") is False))
    return wire, tuple(function["name"] for function in functions)


def _describe(functions: list[dict[str, Any]], required: bool, single: bool) -> str:
    lines = ["You have access to the following functions:", ""]
    for function in functions:
        lines.append(f"functions.{function['name']}:")
        if function.get("description"):
            lines.extend(line.rstrip() for line in str(function["description"]).strip().splitlines())
        lines.append(orjson.dumps(function.get("parameters") or {"type": "object", "properties": {}}).decode())
        lines.append("")
    lines.append(_INSTRUCTIONS)
    if required:
        lines.append("\nThis time you must respond with one or more function calls, not a message.")
    if single:
        lines.append("\nCall at most one function at a time.")
    return "\n".join(lines)


def _with_description(messages: list[dict[str, Any]], description: str) -> list[dict[str, Any]]:
    """The messages with ``description`` ending the first system message (one made first when there is none)."""
    for index, message in enumerate(messages):
        if message.get("role") != "system":
            continue
        content = message.get("content")
        if isinstance(content, list):  # its text parts: servers of this kind want a system message's text whole
            content = "\n".join(part.get("text", "") for part in content
                                if isinstance(part, dict) and part.get("type") == "text")
        text = f"{content}\n\n{description}" if content else description
        return [*messages[:index], dict(message, content=text), *messages[index + 1:]]
    return [{"role": "system", "content": description}, *messages]


class PromptToolCalls:
    """Reads one turn's answer for calls written as text, passing every chunk on to ``feed`` (the output builder's)
    as a native server's chunk: text deltas with what is held back taken out, and the calls as ``tool_calls``
    deltas in the chunk that ends the answer (``finish_reason`` ``tool_calls``)."""

    __slots__ = ("_feed", "_names", "_markers", "_longest", "_single", "_started", "_line_start", "_held",
                 "_calls", "_ended", "_strip_space")

    def __init__(self, names: tuple[str, ...], feed: Callable[[dict[str, Any]], None], *, single: bool = False
                 ) -> None:
        self._feed = feed
        self._names = names
        self._markers = tuple(f"functions.{name}:" for name in names)
        self._longest = max(map(len, self._markers))
        self._single = single  # parallel_tool_calls false: only the first call is made
        self._started = False  # any text seen yet (leading blanks and ``message:`` are taken off the first)
        self._line_start = True
        self._strip_space = False  # after ``message:``: the blanks that follow it are the prefix's too
        self._held = ""  # text at a line's start that may still become a marker, or the start of ``message:``
        self._calls: list[str] | None = None  # once a marker was seen: the rest of the answer's text
        self._ended = False

    def feed(self, chunk: dict[str, Any]) -> None:
        choices = chunk.get("choices")
        if not choices or self._ended:
            self._feed(chunk)
            return
        choice = choices[0]
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            text = self._text(content)
            if text != content:
                choice = dict(choice, delta=dict(delta, content=text or None), logprobs=None)
                chunk = dict(chunk, choices=[choice, *choices[1:]])
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            chunk = self._end(chunk, choice, finish_reason)
        self._feed(chunk)

    def end(self) -> None:
        """The answer's body ended without a ``finish_reason`` (``[DONE]`` alone): what is held goes out now."""
        if not self._ended and (self._held or self._calls is not None):
            self._feed({"choices": [{"index": 0, "delta": self._last_delta()}]})
        self._ended = True

    # --- text ----------------------------------------------------------------------------------------------------

    def _text(self, piece: str) -> str:
        if not self._line_start and "\n" not in piece and self._calls is None and self._started:
            return piece  # the middle of a line of text (held text and ``message:`` end at a line's start)
        if self._calls is not None:
            self._calls.append(piece)
            return ""
        text, self._held = self._held + piece, ""
        start = 0
        if not self._started:
            start = len(text) - len(text.lstrip())
            rest = text[start:]
            if not rest or (len(rest) < len(MESSAGE_PREFIX) and MESSAGE_PREFIX.startswith(rest)):
                self._held = text
                return ""
            self._started = True
            if rest.startswith(MESSAGE_PREFIX):
                start += len(MESSAGE_PREFIX)
                self._strip_space = True
        if self._strip_space:
            end = len(text)
            stripped = len(text[start:]) - len(text[start:].lstrip(" \t\n"))
            start += stripped
            if start == end:
                return ""
            self._strip_space = False
        out: list[str] = []
        while start < len(text):
            if self._line_start:
                rest = text[start:]
                if rest.startswith(self._markers):
                    self._calls = [rest]
                    break
                if len(rest) < self._longest and any(marker.startswith(rest) for marker in self._markers):
                    self._held = rest
                    break
                self._line_start = False
            newline = text.find("\n", start)
            if newline < 0:
                out.append(text[start:])
                break
            out.append(text[start:newline + 1])
            start = newline + 1
            self._line_start = True
        return "".join(out)

    # --- the end -------------------------------------------------------------------------------------------------

    def _end(self, chunk: dict[str, Any], choice: dict[str, Any], finish_reason: str) -> dict[str, Any]:
        self._ended = True
        if not self._held and self._calls is None:
            return chunk
        delta = dict(choice.get("delta") or {})
        last = self._last_delta()
        if "content" in last:
            delta["content"] = (delta.get("content") or "") + last["content"]
        if "tool_calls" in last:
            delta["tool_calls"] = last["tool_calls"]
        if "tool_calls" in delta and finish_reason == "stop":
            finish_reason = "tool_calls"
        choice = dict(choice, delta=delta, finish_reason=finish_reason, logprobs=None)
        return dict(chunk, choices=[choice])

    def _last_delta(self) -> dict[str, Any]:
        """What was held, as a delta: text at a line's start that never became a marker, or the calls."""
        if self._calls is None:
            held, self._held = self._held, ""
            if not self._started:
                held = held.lstrip()
            return {"content": held} if held else {}
        text, self._calls = "".join(self._calls), None
        calls = [{"index": index, "id": ids.call_id(), "type": "function",
                  "function": {"name": name, "arguments": arguments}}
                 for index, (name, arguments) in enumerate(self._parse(text))]
        return {"tool_calls": calls[:1] if self._single else calls}

    def _parse(self, text: str) -> list[tuple[str, str]]:
        """The calls in ``text`` (which starts with a marker): each marker's name, and the text up to the next
        marker as its arguments — JSON as written, or unescaped when the model copied the HTML entities a
        template rendered into its own history (``&#34;``), or ``{}`` when it wrote none."""
        names = "|".join(re.escape(name) for name in sorted(self._names, key=len, reverse=True))
        marker = re.compile(rf"^functions\.({names}):", re.MULTILINE)
        found = list(marker.finditer(text))
        calls = []
        for index, match in enumerate(found):
            end = found[index + 1].start() if index + 1 < len(found) else len(text)
            calls.append((match.group(1), _arguments(text[match.end():end])))
        return calls


def _arguments(text: str) -> str:
    """One call's arguments: the first JSON value written (words after it are not the call's), unescaped when
    only that makes it JSON, or with a backquoted string as a JSON string (``{"code": `…`}``); as written when no
    JSON can be read (the call's reader reports that)."""
    text = text.strip()
    if text.startswith("```") and text.endswith("```"):  # a fenced block: its body
        text = text[3:-3].removeprefix("json").strip()
    if not text:
        return "{}"
    unescaped = html.unescape(text)
    for candidate in (text, unescaped, _BACKTICKED.sub(_as_json_string, unescaped)):
        try:
            _, end = _DECODER.raw_decode(candidate)
        except ValueError:
            continue
        return candidate[:end]
    return text


_DECODER = json.JSONDecoder()
_BACKTICKED = re.compile(r"`((?:[^`\\]|\\.)*)`", re.DOTALL)


def _as_json_string(match: re.Match[str]) -> str:
    """A JavaScript template literal where a JSON string belongs (models write code arguments so) as that string."""
    return json.dumps(match.group(1))
