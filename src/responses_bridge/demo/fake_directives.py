"""The ``[name=value]`` directives a prompt carries to steer the fake upstream (fake_upstream.py's docstring
lists them), parsed out of the last user text, each checked (a bad one is a 400)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import orjson

from .fake_errors import FakeError

MAX_DIRECTIVE_VALUE = 1_000_000  # chunks, milliseconds: large enough for any benchmark, small enough to be safe
MAX_HUGE_BYTES = 64 * 1024 * 1024  # [huge=N:W]: as large as the biggest request body the bridge accepts
_FLAG_DIRECTIVES = ("think", "refuse", "length", "filter", "garbage")
_VALUE_DIRECTIVES = ("think_field", "stall_after", "chunks", "header_delay", "first_byte_delay", "delay", "plain_error",
                     "error_after_tools", "stall_after_tools", "error", "stall", "cut", "args", "args64", "args_raw64",
                     "context",
                     "huge", "then")
_DIRECTIVE_RE = re.compile(
    r"\s*\[(" + "|".join(_VALUE_DIRECTIVES + _FLAG_DIRECTIVES) + r")(?:=([^\]]*))?\]"
)


@dataclass
class Directives:
    """What the last user message asks the fake to do, beyond echoing."""

    chunks: int | None = None
    delay_ms: float | None = None
    header_delay_ms: float | None = None
    first_byte_delay_ms: float | None = None
    think: bool = False
    think_field: str = "reasoning_content"
    refuse: bool = False
    length: bool = False
    filter: bool = False
    error: int | None = None
    plain_error: bool = False  # [plain_error=CODE]: the error as a proxy or a bare server sends it, text/plain
    stall_ms: float = 0.0
    stall_after: tuple[int, float] | None = None
    cut: int | None = None
    garbage: bool = False
    args: str | None = None  # [args=JSON]: the arguments of every tool call, verbatim
    context: int | None = None  # [context=N]: the model's context window, in prompt tokens
    huge: tuple[int, int, int] | None = None  # [huge=N:W:MS]: an N-byte word first, streamed in W-byte writes
    then: tuple[str, ...] = ()  # [then=NAME] (repeatable): the call made after each round of tool results
    error_after_tools: int | None = None  # [error_after_tools=CODE]: [error] only once tool results follow
    stall_after_tools_ms: float = 0.0  # [stall_after_tools=MS]: [stall] only once tool results follow


def _bad_directive(raw: str, why: str) -> FakeError:
    return FakeError(400, f"fake upstream: bad directive {raw}: {why}", param="messages")


def _non_negative_int(raw: str, value: str, *, minimum: int = 0, maximum: int = MAX_DIRECTIVE_VALUE) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value) or not minimum <= int(value) <= maximum:
        raise _bad_directive(raw, f"expected an integer from {minimum} to {maximum}")
    return int(value)


def _apply_directive(d: Directives, name: str, value: str | None, raw: str) -> None:
    if name in _FLAG_DIRECTIVES:
        if value is not None:
            raise _bad_directive(raw, "takes no value")
        setattr(d, name, True)
        return
    if value is None:
        raise _bad_directive(raw, "needs a value")
    if name == "chunks":
        d.chunks = _non_negative_int(raw, value, minimum=1)
    elif name == "delay":
        d.delay_ms = _non_negative_int(raw, value)
    elif name == "header_delay":
        d.header_delay_ms = _non_negative_int(raw, value)
    elif name == "first_byte_delay":
        d.first_byte_delay_ms = _non_negative_int(raw, value)
    elif name == "stall":
        d.stall_ms = _non_negative_int(raw, value)
    elif name == "cut":
        d.cut = _non_negative_int(raw, value)
    elif name == "args64":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise _bad_directive(raw, "expected base64") from None
        _apply_directive(d, "args", decoded, raw)
    elif name == "args_raw64":  # the arguments byte for byte (spacing, key order), as vLLM's json.dumps writes them
        try:
            decoded = base64.b64decode(value, validate=True).decode()
            parsed = orjson.loads(decoded)
        except (ValueError, UnicodeDecodeError, orjson.JSONDecodeError):
            parsed = None
        if not isinstance(parsed, dict):
            raise _bad_directive(raw, "expected a base64-encoded JSON object")
        d.args = decoded
    elif name == "context":
        d.context = _non_negative_int(raw, value, minimum=1)
    elif name == "stall_after_tools":
        d.stall_after_tools_ms = _non_negative_int(raw, value)
    elif name == "error_after_tools":
        d.error_after_tools = _non_negative_int(raw, value, minimum=400, maximum=599)
    elif name in ("error", "plain_error"):
        code = _non_negative_int(raw, value)
        if not 400 <= code <= 599:
            raise _bad_directive(raw, "status must be 400-599")
        d.error, d.plain_error = code, name == "plain_error"
    elif name == "stall_after":
        count, sep, ms = value.partition(":")
        if not sep:
            raise _bad_directive(raw, "expected K:MS")
        d.stall_after = (_non_negative_int(raw, count), _non_negative_int(raw, ms))
    elif name == "think_field":
        if value not in ("reasoning_content", "reasoning"):
            raise _bad_directive(raw, "expected reasoning_content or reasoning")
        d.think, d.think_field = True, value
    elif name == "huge":
        fields = value.split(":")
        if len(fields) not in (2, 3):
            raise _bad_directive(raw, "expected N:W or N:W:MS")
        size = _non_negative_int(raw, fields[0], minimum=1, maximum=MAX_HUGE_BYTES)
        write = _non_negative_int(raw, fields[1], minimum=1, maximum=MAX_HUGE_BYTES)
        d.huge = (size, write, _non_negative_int(raw, fields[2]) if len(fields) == 3 else 0)
    elif name == "then":
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", value):
            raise _bad_directive(raw, "expected a tool name")
        d.then = (*d.then, value)
    elif name == "args":
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _bad_directive(raw, "expected a JSON object (without ']')")
        d.args = orjson.dumps(parsed).decode()


def parse_directives(text: str) -> tuple[Directives, str]:
    """Returns the directives in ``text`` and the text without them (stripped)."""
    d = Directives()
    for match in _DIRECTIVE_RE.finditer(text):
        _apply_directive(d, match.group(1), match.group(2), match.group(0).strip())
    return d, _DIRECTIVE_RE.sub("", text).strip()
