"""A long upstream event, translated in steps.

One Chat Completions chunk can carry megabytes of text (a model that sends a whole document, or an upstream that
buffers). Translated in one go, its delta event, and the copies of it on the way out, hold the event loop that
both doors share for tens of milliseconds. So the translator parses such an event on a step of its own and feeds
it to the output builder as the smaller chunks an upstream could as well have sent: the same text in slices of at
most :data:`SLICE_CHARS` characters, each becoming its own ``*.delta`` event (their concatenation is the text, as
the API allows), everything else of the chunk with the last slice. The door runs one step per pass of the event
loop (``Translator.catch_up``), so another request waits for one slice at most.

Only the long event pays: the per-chunk path tests one length per event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..chunk_values import UpstreamProtocolError
from ..sse import DONE

if TYPE_CHECKING:
    from .output_builder import OutputBuilder

LONG_EVENT_BYTES = 256 * 1024
"""An upstream event longer than this is translated in steps; shorter ones (every token's) in one go."""

SLICE_CHARS = 32 * 1024
"""Characters of text per delta event made from a long event: a step of tens of microseconds, and an event no
longer than what a door writes at once (adapters/pieces.py) unless its text needs escaping."""

_TEXT_FIELDS = ("reasoning", "content", "refusal")  # in the order OutputBuilder.feed reads a delta


def split_chunk(chunk: dict[str, Any], limit: int = SLICE_CHARS) -> list[dict[str, Any]]:
    """``chunk`` as consecutive chunks that OutputBuilder.feed turns into the same output and the same events,
    but for text deltas cut into slices of at most ``limit`` characters. The text fields (reasoning, content,
    refusal) come first, slice by slice, in the order the builder reads them; the last chunk is the original one
    without the text already given (with its last slice), so its finish reason, usage, annotations and tool calls
    come after all the text, as they did. A chunk of another shape, or one reporting an error, is returned whole:
    the builder handles (or refuses) it as before."""
    choices = chunk.get("choices")
    if "error" in chunk or type(choices) is not list or len(choices) != 1 or type(choices[0]) is not dict:
        return [chunk]
    choice = choices[0]
    delta = choice.get("delta")
    if type(delta) is not dict:
        return [chunk]
    texts: list[tuple[str, str]] = []  # (field, text) in the builder's order
    rest = dict(delta)
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if reasoning and type(reasoning) is str:  # the builder reads either name, reasoning_content first
        rest.pop("reasoning_content", None)
        rest.pop("reasoning", None)
        texts.append(("reasoning_content", reasoning))
    for field in _TEXT_FIELDS[1:]:
        value = delta.get(field)
        if value and type(value) is str:  # content as a list of parts is not cut: the builder joins it
            del rest[field]
            texts.append((field, value))
    if not any(len(text) > limit for _, text in texts):
        return [chunk]
    slices = [(field, text[start:start + limit]) for field, text in texts for start in range(0, len(text), limit)]
    logprobs = choice.get("logprobs")  # the content's token logprobs go with its first slice
    out: list[dict[str, Any]] = []
    for field, text in slices[:-1]:
        piece: dict[str, Any] = {"index": choice.get("index", 0), "delta": {field: text}}
        if field == "content" and logprobs:
            piece["logprobs"], logprobs = logprobs, None
        out.append({"choices": [piece]})
    field, text = slices[-1]
    rest[field] = text
    last = dict(choice, delta=rest)
    if field == "content":
        last["logprobs"] = logprobs
    out.append(dict(chunk, choices=[last]))
    return out


def step(backlog: deque[bytes | dict[str, Any]], builder: OutputBuilder,
         feed: Callable[[dict[str, Any]], None]) -> None:
    """The first item of a translator's backlog into ``feed`` (``builder``'s, or a reader's in front of it): a
    slice of a long event, or a payload parsed (a long one cut by :func:`split_chunk`, the slices after the first
    put back in front of the rest)."""
    item = backlog.popleft()
    if type(item) is dict:
        feed(item)
        return
    if item == DONE:
        builder.saw_done = True
        return
    chunk = parsed(item)  # type: ignore[arg-type]
    if len(item) > LONG_EVENT_BYTES:
        del item  # the raw event is let go before its slices are made
        first, *rest = split_chunk(chunk)
        backlog.extendleft(reversed(rest))
        chunk = first
    feed(chunk)


def parsed(payload: bytes) -> dict[str, Any]:
    """One upstream event's JSON object, or the protocol error that fails the stream (every event, long or not)."""
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("The upstream sent an event that is not JSON.") from None
    if not isinstance(chunk, dict):
        raise UpstreamProtocolError("The upstream sent an event that is not a JSON object.")
    return chunk
