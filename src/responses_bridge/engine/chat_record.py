"""A stored Chat Completion (``store: true`` on ``POST /v1/chat/completions``), made from the upstream's answer as
it passes through a door: the JSON ``chat.completion`` as it is, or a stream's ``chat.completion.chunk`` events
folded into the one ``chat.completion`` they describe (each choice's content, refusal, tool calls and finish
reason; the usage of the last chunk that has one), in one shape either way, under an id the bridge makes — the
answer passes on with that id swapped in for the upstream's, byte for byte otherwise (chat_ids.py).

Synchronous and without I/O: both doors :meth:`~ChatRecorder.relay` the bytes they pass on, in pieces of any size,
and ask at the end for the completion (None when the answer cannot be stored: an error, or no id). A stream is
framed by the engine's one SSE decoder (sse.py), each event parsed once; what the answer may add up to is capped
by :data:`MAX_RECORD_BYTES`.
"""

from __future__ import annotations

from typing import Any

import orjson

from .chat_ids import IdSwap, chat_completion_id
from .sse import DONE, EventTooLarge, SSEDecoder

MAX_RECORD_BYTES = 64 * 1024 * 1024
"""What one answer may add up to and still be stored (the answer itself passes on regardless): beyond it the
record is given up, and the door logs that it was not stored."""


class ChatRecorder:
    """Collects one answer: :meth:`relay` every piece (what it returns goes to the client), :meth:`relay_end` at
    its end, then :meth:`completion`."""

    __slots__ = ("_buffer", "_choices", "_completion", "_decoder", "_done", "_first", "_overflow",
                 "_events", "_pending", "_seen", "_stream", "_swap", "_upstream_id", "_usage", "completion_id")

    def __init__(self, stream: bool, completion_id: str | None = None) -> None:
        self._stream = stream
        self.completion_id = completion_id or chat_completion_id()  # the stored one's, and the client's
        self._pending: list[bytes] = []  # relayed bytes not yet given back (relay)
        self._swap: IdSwap | None = None
        self._upstream_id: str | None = None  # the answer's own id, once known
        self._completion: dict[str, Any] | None = None
        self._events = 0  # a stream's events decoded so far
        self._buffer = bytearray()  # JSON: the whole body
        self._decoder = SSEDecoder(MAX_RECORD_BYTES)  # SSE: the events, framed as the translator frames them
        self._seen = 0
        self._overflow = False
        self._done = False  # the stream's [DONE] went by
        self._first: dict[str, Any] | None = None  # id, created, model, system_fingerprint, service_tier
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    @property
    def stream(self) -> bool:
        """The answer is an event stream (the request's ``stream: true``)."""
        return self._stream

    @property
    def done(self) -> bool:
        """A stream's ``data: [DONE]`` has been fed: the completion is whole (the terminal bytes are next)."""
        return self._done

    def relay(self, chunk: bytes) -> bytes:
        """Record ``chunk`` and return what the client gets of the answer now: its bytes with the bridge's id for
        the upstream's (chat_ids.py). A JSON answer is held whole until :meth:`relay_end` (its id may come last:
        llama.cpp sorts its keys); a stream's bytes only until its first event, which names the upstream's id."""
        self._pending.append(chunk)
        if not self._stream:
            return b""
        self.feed(chunk)
        if self._swap is None:
            if self._overflow:  # not stored: nothing to swap
                return self._drain()
            if self._first is None:  # held until an event names the id; an answer whose events name none passes
                return self._drain() if self._events else b""
            self._swap = IdSwap(self._first["id"], self.completion_id)
        return self._swap.feed(self._drain())

    def relay_end(self) -> bytes:
        """The rest of the answer, once the upstream's has ended (for JSON: the whole body). An answer that is no
        completion (an error) is not stored and keeps its bytes as they came."""
        body = self._drain()
        if not self._stream:
            self.feed(body)
        if self._swap is None:
            if self.completion() is None:
                return body
            assert self._upstream_id is not None
            self._swap = IdSwap(self._upstream_id, self.completion_id)
        return self._swap.feed(body) + self._swap.end()

    def _drain(self) -> bytes:
        pending, self._pending = self._pending, []
        return pending[0] if len(pending) == 1 else b"".join(pending)

    def feed(self, chunk: bytes) -> None:
        if self._overflow or not chunk:
            return
        self._seen += len(chunk)
        if self._seen > MAX_RECORD_BYTES:
            self._overflow = True
            self._buffer = bytearray()
            return
        if not self._stream:
            self._buffer += chunk
            return
        try:
            payloads = self._decoder.feed(chunk)
        except EventTooLarge:
            self._overflow = True
            return
        for payload in payloads:
            self._event(payload)

    def _event(self, data: bytes) -> None:
        self._events += 1
        if data == DONE:
            self._done = True
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict) or chunk.get("object") not in (None, "chat.completion.chunk"):
            return
        if self._first is None and isinstance(chunk.get("id"), str):
            self._first = chunk
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._choice(choice)

    def _choice(self, delta_choice: dict[str, Any]) -> None:
        index = delta_choice.get("index", 0)
        if not isinstance(index, int):
            return
        choice = self._choices.setdefault(index, {"index": index, "content": [], "refusal": [], "tools": {},
                                                  "finish_reason": None, "logprobs": None, "role": "assistant",
                                                  "annotations": []})
        delta = delta_choice.get("delta")
        if isinstance(delta, dict):
            if isinstance(delta.get("role"), str):
                choice["role"] = delta["role"]
            if isinstance(delta.get("content"), str):
                choice["content"].append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                choice["refusal"].append(delta["refusal"])
            if isinstance(delta.get("annotations"), list):  # a search model's citations
                choice["annotations"] += delta["annotations"]
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        _tool_call(choice["tools"], call)
        if delta_choice.get("finish_reason"):
            choice["finish_reason"] = delta_choice["finish_reason"]
        logprobs = delta_choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = choice["logprobs"] = choice["logprobs"] or {"content": None, "refusal": None}
            for key in ("content", "refusal"):
                if isinstance(logprobs.get(key), list):
                    merged[key] = (merged[key] or []) + logprobs[key]

    def completion(self) -> dict[str, Any] | None:
        """The ``chat.completion`` the answer was, with the bridge's id (:attr:`completion_id`); None if there is
        none to store (an error body, a stream without an id, or more than :data:`MAX_RECORD_BYTES`)."""
        if self._overflow:
            return None
        if self._completion is None:
            made = self._from_json() if not self._stream else self._from_stream()
            if made is None:
                return None
            self._upstream_id = made["id"]
            self._completion = {**_uniform(made), "id": self.completion_id}
        return self._completion

    def _from_json(self) -> dict[str, Any] | None:
        try:
            body = orjson.loads(bytes(self._buffer))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"] \
                or not isinstance(body.get("choices"), list):
            return None
        return body

    def _from_stream(self) -> dict[str, Any] | None:
        for payload in self._decoder.flush():  # a last event without its closing blank line
            self._event(payload)
        first = self._first
        if first is None or not first["id"]:
            return None
        completion: dict[str, Any] = {
            "id": first["id"], "object": "chat.completion",
            "created": first.get("created") if isinstance(first.get("created"), int) else 0,
            "model": first.get("model") if isinstance(first.get("model"), str) else "",
            "choices": [_finished(self._choices[index]) for index in sorted(self._choices)],
        }
        for key in ("system_fingerprint", "service_tier"):
            completion[key] = first.get(key)
        completion["usage"] = self._usage
        return completion


def _uniform(completion: dict[str, Any]) -> dict[str, Any]:
    """One stored shape whether the answer was streamed or not, with every field OpenAI's ``ChatCompletion``
    requires (nullable ones as null) where the backend left one out: ``message.refusal`` (vLLM and Ollama omit it
    in JSON answers), ``choice.logprobs``, ``system_fingerprint``, ``service_tier``, ``usage``; and the
    ``annotations`` OpenAI gives every message (empty without citations)."""
    for key in ("system_fingerprint", "service_tier", "usage"):
        completion.setdefault(key, None)
    for choice in completion["choices"]:
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
            message = choice.get("message")
            if isinstance(message, dict):
                message.setdefault("content", None)
                message.setdefault("refusal", None)
                message.setdefault("annotations", [])
    return completion


def _tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", len(calls))
    if not isinstance(index, int):
        return
    call = calls.setdefault(index, {"id": None, "type": "function", "name": [], "arguments": []})
    if isinstance(delta.get("id"), str):
        call["id"] = delta["id"]
    if isinstance(delta.get("type"), str):
        call["type"] = delta["type"]
    function = delta.get("function")
    if isinstance(function, dict):
        if isinstance(function.get("name"), str):
            call["name"].append(function["name"])
        if isinstance(function.get("arguments"), str):
            call["arguments"].append(function["arguments"])


def _finished(choice: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": choice["role"],
                               "content": "".join(choice["content"]) if choice["content"] else None,
                               "refusal": "".join(choice["refusal"]) if choice["refusal"] else None,
                               "annotations": choice["annotations"]}
    if choice["tools"]:
        message["tool_calls"] = [
            {"id": call["id"] or "", "type": call["type"],
             "function": {"name": "".join(call["name"]), "arguments": "".join(call["arguments"])}}
            for _, call in sorted(choice["tools"].items())]
    return {"index": choice["index"], "message": message, "finish_reason": choice["finish_reason"] or "stop",
            "logprobs": choice["logprobs"]}


def request_messages(request: dict[str, Any], completion_id: str) -> list[dict[str, Any]]:
    """The request's ``messages`` as ``GET /v1/chat/completions/{id}/messages`` lists them
    (``ChatCompletionStoreMessage``): each with the id ``{completion_id}-{index}``; a content given as parts is
    kept in ``content_parts``, with ``content`` its text joined."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return []
    stored: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        entry = dict(message)
        content = entry.get("content")
        if isinstance(content, list):
            entry["content_parts"] = content
            texts = [part["text"] for part in content
                     if isinstance(part, dict) and isinstance(part.get("text"), str)]
            entry["content"] = "".join(texts) if texts else None
        else:
            entry.setdefault("content_parts", None)
        entry["id"] = f"{completion_id}-{index}"
        stored.append(entry)
    return stored


__all__ = ["MAX_RECORD_BYTES", "ChatRecorder", "request_messages"]
