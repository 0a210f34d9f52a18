"""Backend quirks the fake upstream can put on (``fake-upstream --quirks llamacpp``), so compatibility profiles
and ``responses-bridge probe`` are tested over real sockets against the behaviour they exist for.

Each quirk is one way a real server departs from OpenAI's Chat Completions; ``llamacpp`` is the set the issue
records for llama.cpp's server (its error bodies carry ``code``, ``message`` and ``type``, no ``param``):

* ``developer-500``: a ``developer`` message is a 500 (its chat template knows no such role).
* ``null-content-400``: an assistant message with ``tool_calls`` and ``content: null`` is a 400.
* ``json-schema-500``: ``response_format`` of type ``json_schema`` is a 500; ``{"type": "json_object",
  "schema": …}`` is its own form and works.
* ``tool-empty``: ``tool`` messages are rendered as empty turns: the answer's ``Tool result: …`` is empty.
* ``ignore-max-completion-tokens``: ``max_completion_tokens`` is ignored (``max_tokens`` still cuts).
* ``no-pairing-check``: tool results need not follow the assistant's tool calls as ``tool`` messages.
* ``tools-need-choice``: ``tools`` sent without ``tool_choice`` are ignored (the answer is plain text), as stock
  llama-cpp-python's ``chatml-function-calling`` handler does.
* ``prompt-tools``: functions described in the first system message in that handler's own form (``functions.<name>:``,
  its description's lines, the parameters' JSON) are offered as if sent as ``tools``, and the answer is written as that
  template writes it: calls as text (``functions.<name>:`` then the arguments, one after another), a text answer
  after ``message:`` — what a model does when a gateway describes the tools itself (``tool_calling: prompt``).

And, for servers the probe must also tell apart: ``no-stream-options`` (``stream_options`` is a 400),
``no-logprobs`` (``logprobs`` is a 400), ``no-reasoning-content`` (``reasoning_content`` in history is a 400).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

QUIRKS = ("developer-500", "null-content-400", "json-schema-500", "tool-empty", "ignore-max-completion-tokens",
          "no-pairing-check", "tools-need-choice", "prompt-tools", "no-stream-options", "no-logprobs",
          "no-reasoning-content")
SETS = {"llamacpp": frozenset({"developer-500", "null-content-400", "json-schema-500", "tool-empty",
                               "ignore-max-completion-tokens", "no-pairing-check", "tools-need-choice",
                               "prompt-tools"})}


@dataclass(frozen=True)
class Refusal:
    """An error answer in llama.cpp's shape."""

    status: int
    message: str

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"code": self.status, "message": self.message, "type": kind}}


def parse(spec: str | Iterable[str] | None) -> frozenset[str]:
    """``"llamacpp"``, ``"no-logprobs,developer-500"``, or a list of such names; unknown names are an error."""
    if not spec:
        return frozenset()
    names = [name.strip() for name in spec.split(",")] if isinstance(spec, str) else list(spec)
    quirks: set[str] = set()
    for name in filter(None, names):
        if name in SETS:
            quirks |= SETS[name]
        elif name in QUIRKS:
            quirks.add(name)
        else:
            raise ValueError(f"unknown quirk {name!r}; one of: {', '.join([*SETS, *QUIRKS])}")
    return frozenset(quirks)


def apply(body: Any, quirks: frozenset[str]) -> tuple[Any, Refusal | None]:
    """The body as the quirky server understands it, or its refusal. Runs before the usual validation."""
    if not quirks or not isinstance(body, dict):
        return body, None
    messages: list[Any] = body["messages"] if isinstance(body.get("messages"), list) else []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if "developer-500" in quirks and message.get("role") == "developer":
            return body, Refusal(500, "Unsupported message role: developer")
        if ("null-content-400" in quirks and message.get("role") == "assistant" and message.get("tool_calls")
                and message.get("content") is None):
            return body, Refusal(400, "Invalid 'content' type: expected string or array, got null")
        if "no-reasoning-content" in quirks and "reasoning_content" in message:
            return body, Refusal(400, "Unrecognized message field: reasoning_content")
    response_format = body.get("response_format")
    if ("json-schema-500" in quirks and isinstance(response_format, dict)
            and response_format.get("type") == "json_schema"):
        return body, Refusal(500, "Unsupported response_format type: json_schema")
    if "no-stream-options" in quirks and "stream_options" in body:
        return body, Refusal(400, "Unrecognized request argument supplied: stream_options")
    if "no-logprobs" in quirks and ("logprobs" in body or "top_logprobs" in body):
        return body, Refusal(400, "Unrecognized request argument supplied: logprobs")
    changed = dict(body)
    if "ignore-max-completion-tokens" in quirks:
        changed.pop("max_completion_tokens", None)
    if "tools-need-choice" in quirks and "tools" in changed and changed.get("tool_choice") is None:
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            changed.pop(key, None)
    if "tool-empty" in quirks:
        changed["messages"] = [dict(m, content="") if isinstance(m, dict) and m.get("role") == "tool" else m
                               for m in messages]
    return changed, None


_DESCRIBED = re.compile(r"^functions\.([A-Za-z0-9_-]{1,64}):$")


def described_functions(messages: list[Any]) -> list[dict[str, Any]]:
    """``prompt-tools``: the functions the first system message describes, as ``tools[].function`` objects."""
    system = next((m for m in messages if isinstance(m, dict) and m.get("role") == "system"), None)
    content = system.get("content") if system else None
    if not isinstance(content, str):
        return []
    functions: list[dict[str, Any]] = []
    lines = content.splitlines()
    for index, line in enumerate(lines):
        match = _DESCRIBED.match(line)
        if match is None:
            continue
        for offset, following in enumerate(lines[index + 1:index + 64]):
            if following.startswith("{"):
                try:
                    parameters = json.loads(following)
                except ValueError:
                    break
                description = "\n".join(lines[index + 1:index + 1 + offset]) or None
                functions.append({"name": match.group(1), "description": description, "parameters": parameters})
                break
    return functions


def calls_as_text(calls: list[tuple[str, str]]) -> str:
    """``prompt-tools``: calls as the template writes them."""
    return "\n".join(f"functions.{name}:\n{arguments}" for name, arguments in calls)
