"""A simulated vLLM replica's prompt, in tokens and blocks, and its prefix cache (``vllm_replica.py`` serves it).

vLLM's automatic prefix caching keeps the KV of every full block of 16 tokens it computed, keyed by a hash of the
block's tokens *chained with the hash of the block before it*: a block is reused only when everything before it is
the same, so one changed byte early in a prompt makes every later block a miss. Blocks no running request holds stay
cached until the pool needs room, least recently used first. This module models exactly that, and nothing of the
model itself:

- the prompt is rendered from the Chat Completions ``messages`` and ``tools`` as a chat template would (tools first,
  then each message with its role, text, tool calls and call ids; JSON with sorted keys, as Jinja's ``tojson``),
  and ends with the generation prompt, so that the prompt followed by the answer is exactly how the next turn's
  prompt renders that answer (vLLM caches the generated tokens' blocks too);
- a token is four bytes of that text (OpenAI's rule of thumb for English): cheap, deterministic, and a prefix of the
  text is a prefix of the tokens, which is all a prefix cache can see;
- a block's key is an 8-byte BLAKE2b of the previous key and the block's 64 bytes.

The cache is an ``OrderedDict`` of keys with a capacity in blocks: a lookup counts the leading blocks present (and
makes them the most recently used), an insert adds the prompt's blocks and evicts from the cold end past the
capacity. An *oracle* cache (``SharedOracle``) is one unbounded cache every replica of the process shares: every
block any replica ever computed is a hit everywhere — the best any placement could do.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson

TOKEN_BYTES = 4
"""Bytes of rendered prompt per token."""
BLOCK_TOKENS = 16
"""Tokens per KV block: vLLM's default ``--block-size``."""
BLOCK_BYTES = TOKEN_BYTES * BLOCK_TOKENS
GENERATION_PROMPT = b"<|assistant|>\n"


def _text(content: Any) -> str:
    """A message's content as text: a string as is, content parts' texts joined (an image part by its URL, as a
    template that cannot see it still names it), anything else as JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif isinstance(part.get("image_url"), dict):
                    pieces.append(f"<image {part['image_url'].get('url', '')}>")
                else:
                    pieces.append(orjson.dumps(part, option=orjson.OPT_SORT_KEYS).decode())
        return "".join(pieces)
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()


def render_message(message: dict[str, Any]) -> bytes:
    """One message as the template renders it: role header, text, then each tool call (id, name, arguments as
    sent - a template copies the arguments string, so re-spaced arguments are a different prompt) and, for a tool
    message, the call id it answers. Ends with the end-of-turn marker."""
    role = str(message.get("role", ""))
    out = [f"<|{role}|>\n", _text(message.get("content"))]
    if role == "assistant" and message.get("reasoning_content"):
        out.insert(1, f"<think>{message['reasoning_content']}</think>")
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        out.append(f"<tool_call id={call.get('id')}>{function.get('name')} {function.get('arguments')}</tool_call>")
    if role == "tool":
        out.insert(1, f"<result for={message.get('tool_call_id')}>")
    out.append("<|end|>\n")
    return "".join(out).encode()


def render_prompt(messages: list[dict[str, Any]], tools: list[Any] | None) -> bytes:
    """The whole prompt: the tools' JSON (sorted keys, one a line) in the system header, every message, and the
    generation prompt."""
    parts = []
    if tools:
        parts.append(b"<|tools|>\n")
        parts.extend(orjson.dumps(tool, option=orjson.OPT_SORT_KEYS) + b"\n" for tool in tools)
        parts.append(b"<|end|>\n")
    parts.extend(render_message(message) for message in messages)
    parts.append(GENERATION_PROMPT)
    return b"".join(parts)


def render_answer(text: str, tool_calls: list[dict[str, Any]]) -> bytes:
    """What the model generated, rendered as the next turn's prompt will hold it after the generation prompt: the
    assistant message's body (the header is the generation prompt already)."""
    whole = render_message({"role": "assistant", "content": text or None, "tool_calls": tool_calls})
    return whole[len(b"<|assistant|>\n"):]


def token_count(data: bytes) -> int:
    """Tokens of ``data``: one per four bytes, a part counting whole."""
    return -(-len(data) // TOKEN_BYTES)


def block_keys(data: bytes) -> list[bytes]:
    """The chained keys of ``data``'s full blocks, in order (a last partial block is never cached)."""
    keys = []
    previous = b""
    view = memoryview(data)
    for start in range(0, len(data) - BLOCK_BYTES + 1, BLOCK_BYTES):
        previous = hashlib.blake2b(previous + bytes(view[start:start + BLOCK_BYTES]), digest_size=8).digest()
        keys.append(previous)
    return keys


class PrefixCache:
    """One replica's cached blocks, least recently used first, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a prefix cache holds at least one block")
        self.capacity = capacity
        self.blocks: OrderedDict[bytes, None] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def lookup(self, keys: list[bytes]) -> int:
        """How many of ``keys``' leading blocks are cached; those become the most recently used."""
        hits = 0
        for key in keys:
            if key not in self.blocks:
                break
            self.blocks.move_to_end(key)
            hits += 1
        return hits

    def insert(self, keys: Iterable[bytes]) -> None:
        """Cache ``keys`` (most recently used), evicting the least recently used past the capacity."""
        for key in keys:
            if key in self.blocks:
                self.blocks.move_to_end(key)
            else:
                self.blocks[key] = None
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
            self.evicted += 1


class SharedOracle(PrefixCache):
    """The oracle: one cache for every replica of the process, never evicting. A block any replica computed is a
    hit on all of them: only what was never computed anywhere is prefilled."""

    def __init__(self) -> None:
        super().__init__(capacity=1)
        self.capacity = 1 << 62

    def insert(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self.blocks[key] = None
