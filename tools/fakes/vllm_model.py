"""What a simulated vLLM replica answers (``vllm_replica.py``): a deterministic stand-in for the model, so that a
benchmark's sessions can run a Codex-like tool loop against it.

The workload says what it wants in its user messages, as a test double's directives do: ``[tools:K answer:N]`` in
the last user message asks for K function calls (of the first tool offered, one a turn, each answered by the client
with a tool message) before a text answer of N tokens. A request whose messages after the last user message hold
fewer than K tool results gets the next call; otherwise the text. No directive: a text answer of
``DEFAULT_ANSWER_TOKENS``. The text and the calls' arguments are words drawn from a generator seeded by the prompt's
length and last block, so two sessions differ and a repeated request gets the same answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .vllm_cache import TOKEN_BYTES

DEFAULT_ANSWER_TOKENS = 64
CALL_ARGUMENT_TOKENS = 24
"""A call's arguments, about: a shell command with a path."""
_DIRECTIVE = re.compile(r"\[tools:(\d+)(?: answer:(\d+))?\]")
_WORDS = [f"{a}{b}{c}" for a in "bcdfglmnprst" for b in "aeiou" for c in "lnrst"]
"""Three-letter words: with its space, one word is one token of four bytes."""


@dataclass
class Answer:
    """One turn's answer: text, or one tool call (id, name, arguments)."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def tokens(self) -> int:
        """Tokens to decode: the text's, or the call's arguments and name."""
        size = len(self.text.encode())
        for call in self.tool_calls:
            size += len(call["function"]["arguments"]) + len(call["function"]["name"])
        return max(1, -(-size // TOKEN_BYTES))


def _words(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(tokens))


def _user_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def answer(messages: list[dict[str, Any]], tools: list[Any] | None, seed: int) -> Answer:
    """The answer to ``messages``: the directive's next call or its text (see the module's docstring)."""
    rng = random.Random(seed)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    wanted, answer_tokens = 0, DEFAULT_ANSWER_TOKENS
    if last_user >= 0:
        directive = _DIRECTIVE.search(_user_text(messages[last_user]))
        if directive:
            wanted = int(directive.group(1))
            answer_tokens = int(directive.group(2) or DEFAULT_ANSWER_TOKENS)
    results = sum(1 for m in messages[last_user + 1:] if m.get("role") == "tool")
    names = [tool.get("function", {}).get("name") for tool in tools or () if isinstance(tool, dict)]
    if names and names[0] and results < wanted:
        arguments = orjson.dumps({"command": _words(rng, CALL_ARGUMENT_TOKENS - 4)}).decode()
        call_id = f"call_{rng.getrandbits(64):016x}"
        return Answer(tool_calls=[{"id": call_id, "type": "function",
                                   "function": {"name": names[0], "arguments": arguments}}])
    return Answer(text=_words(rng, answer_tokens))
