"""A stored Chat Completion (``store: true`` on ``POST /v1/chat/completions``), made from the upstream's answer as
it passes through a door unchanged: the JSON ``chat.completion`` as it is, or a stream's ``chat.completion.chunk``
events folded into the one ``chat.completion`` they describe (each choice's content, refusal, tool calls and
finish reason; the usage of the last chunk that has one).

Synchronous and without I/O: both doors feed it the bytes they pass on, in pieces of any size, and ask at the end
for the completion (None when the answer cannot be stored: an error, or no id). A stream is framed by the engine's
one SSE decoder (sse.py), each event parsed once; what the answer may add up to is capped by
:data:`MAX_RECORD_BYTES`.
"""

from __future__ import annotations

from typing import Any

import orjson

from .sse import DONE, EventTooLarge, SSEDecoder

MAX_RECORD_BYTES = 64 * 1024 * 1024
"""What one answer may add up to and still be stored (the answer itself passes on regardless): beyond it the
record is given up, and the door logs that it was not stored."""


class ChatRecorder:
    """Collects one answer: :meth:`feed` every piece the client gets, then :meth:`completion`."""

    __slots__ = ("_buffer", "_choices", "_decoder", "_done", "_first", "_json", "_overflow", "_seen", "_stream",
                 "_usage")

    def __init__(self, stream: bool) -> None:
        self._stream = stream
        self._buffer = bytearray()  # JSON: the whole body
        self._decoder = SSEDecoder(MAX_RECORD_BYTES)  # SSE: the events, framed as the translator frames them
        self._seen = 0
        self._overflow = False
        self._done = False  # the stream's [DONE] went by
        self._first: dict[str, Any] | None = None  # id, created, model, system_fingerprint, service_tier
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None
        self._json: dict[str, Any] | None = None

    @property
    def stream(self) -> bool:
        """The answer is an event stream (the request's ``stream: true``)."""
        return self._stream

    @property
    def done(self) -> bool:
        """A stream's ``data: [DONE]`` has been fed: the completion is whole (the terminal bytes are next)."""
        return self._done

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
                                                  "finish_reason": None, "logprobs": None, "role": "assistant"})
        delta = delta_choice.get("delta")
        if isinstance(delta, dict):
            if isinstance(delta.get("role"), str):
                choice["role"] = delta["role"]
            if isinstance(delta.get("content"), str):
                choice["content"].append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                choice["refusal"].append(delta["refusal"])
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
        """The ``chat.completion`` the answer was; None if there is none to store (an error body, a stream
        without an id, or more than :data:`MAX_RECORD_BYTES`)."""
        if self._overflow:
            return None
        if not self._stream:
            if self._json is None:
                try:
                    decoded = orjson.loads(bytes(self._buffer))
                except orjson.JSONDecodeError:
                    return None
                if not isinstance(decoded, dict):
                    return None
                self._json = decoded
            body = self._json
            if not isinstance(body.get("id"), str) or not body["id"] or not isinstance(body.get("choices"), list):
                return None
            return body
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
            if first.get(key) is not None:
                completion[key] = first[key]
        completion["usage"] = self._usage
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
                               "refusal": "".join(choice["refusal"]) if choice["refusal"] else None}
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
