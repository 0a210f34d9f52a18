"""Recorded upstream answers and a driver that replays them through an :class:`ResponseRun`.

Each recording is a Chat Completions answer exactly as it came off the wire: ``<name>.sse`` is the streamed
body (``chat.completion.chunk`` events), ``<name>.json`` the non-streamed ``chat.completion`` for the same
turn. ``REQUESTS[name]`` is the Responses request that turn answers.

* ``text_usage``, ``think``, ``parallel_tools``, ``refusal``, ``length``, ``content_filter``, ``logprobs``:
  captured from ``responses_bridge.demo.fake_upstream`` (which copies OpenAI's wire format), with
  ``stream_options.include_usage``.
* ``vllm_reasoning``: vLLM style: reasoning in the ``reasoning`` field, ``stop_reason``, chunks without
  ``usage``, a usage chunk whose ``prompt_tokens_details`` is null.
* ``repeated_tool_ids``: OpenRouter/Gemini style: ``: OPENROUTER PROCESSING`` comments, text followed by a tool
  call whose ``id``/``type``/``name`` repeat in every chunk, usage on the finish chunk itself.
* ``args_before_name``: llama.cpp style with CRLF framing and no usage: the first call's arguments start before
  its name arrives; a second call follows.
* ``annotations``: OpenAI search-preview style: ``url_citation`` annotations with the last content chunk.

``llamacpp_quirks.json`` holds request/response pairs of another kind: Chat Completions requests the bridge sends
and llama.cpp server's answers to them as the issue records them (status and behaviour; the error texts and the
answers' wording are written out in llama.cpp's answer shape, not byte-exact captures), one per quirk the
compatibility profiles exist for (engine/responses/profiles.py):
``content: null`` beside ``tool_calls`` (400), a ``tool`` message rendered as an empty turn, the ``developer`` role
(500), ``json_schema`` response_format (500), ``max_completion_tokens`` ignored. Each entry names the Responses
request, the switches in force when it was sent, and the fake upstream quirk that reproduces the answer
(demo/fake_quirks.py). Errors are in llama.cpp's shape (``code``, ``message``, ``type``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from responses_bridge import ids
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses import response_object
from responses_bridge.engine.responses import translator as translator_module
from responses_bridge.engine.wire import Reply
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.store.base import DEFAULT_TENANT, ResponseStore

HERE = Path(__file__).parent
SSE = "text/event-stream"
SSE_UTF8 = "text/event-stream; charset=utf-8"
JSON = "application/json"
FIXED_TIME = 1_700_000_000

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]},
    "strict": False,
}
TIME_TOOL = {"type": "function", "name": "get_time",
             "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}

REQUESTS: dict[str, dict[str, Any]] = {
    "text_usage": {"model": "fake-model", "input": "Hello there, how are you today?"},
    "think": {"model": "fake-reasoner", "input": "Why is the sky blue? [think]",
              "reasoning": {"effort": "high", "summary": "auto"}},
    "parallel_tools": {"model": "fake-model", "input": "Please call get_weather Paris and call get_time UTC",
                       "tools": [WEATHER_TOOL, TIME_TOOL]},
    "refusal": {"model": "fake-model", "input": "Do something bad [refuse]"},
    "length": {"model": "fake-model", "input": "Tell me a long story about dragons [length]",
               "max_output_tokens": 3},
    "content_filter": {"model": "fake-model", "input": "Something filtered here [filter]"},
    "logprobs": {"model": "fake-model", "input": "Say hi twice", "top_logprobs": 2,
                 "include": ["message.output_text.logprobs"]},
    "vllm_reasoning": {"model": "Qwen/Qwen3-8B", "input": "What is 2+2?", "instructions": "Be brief.",
                       "temperature": 0.6, "top_p": 0.95},
    "repeated_tool_ids": {"model": "google/gemini-2.5-flash", "input": "Weather in Paris?",
                          "tools": [WEATHER_TOOL], "tool_choice": "auto", "metadata": {"session": "s1"}},
    "args_before_name": {"model": "llama-3.1-8b-instruct", "input": "Oslo weather and the time in CET",
                         "tools": [WEATHER_TOOL, TIME_TOOL], "parallel_tool_calls": True},
    "annotations": {"model": "gpt-4o-search-preview", "input": "Weather in Paris, with a source",
                    "text": {"format": {"type": "text"}, "verbosity": "low"}},
}


def names() -> list[str]:
    return sorted(path.stem for path in HERE.glob("*.sse"))


def load(name: str) -> bytes:
    return (HERE / f"{name}.sse").read_bytes()


def load_json(name: str) -> bytes:
    return (HERE / f"{name}.json").read_bytes()


def quirk_recordings() -> list[dict[str, Any]]:
    """The entries of ``llamacpp_quirks.json``."""
    entries: list[dict[str, Any]] = orjson.loads((HERE / "llamacpp_quirks.json").read_bytes())
    return entries


def request(name: str, **overrides: Any) -> dict[str, Any]:
    return {**REQUESTS[name], **overrides}


# --- deterministic ids and clocks ----------------------------------------------------------------------------


class Determinism:
    """Replaces the random ids and the clock the engine uses, so two runs of one exchange give equal bytes."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def reset(self) -> None:
        self._counter = itertools.count()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._counter):032x}"


@contextmanager
def deterministic() -> Iterator[Determinism]:
    state = Determinism()
    clock = SimpleNamespace(time=lambda: float(FIXED_TIME))
    saved = ids.new_id, response_object.time, translator_module.time
    ids.new_id = state.new_id
    response_object.time = clock  # type: ignore[assignment]
    translator_module.time = clock  # type: ignore[assignment]
    try:
        yield state
    finally:
        ids.new_id, response_object.time, translator_module.time = saved


# --- the driver ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What a client got from one exchange, as a door would deliver it."""

    status: int
    content_type: str
    body: bytes  # every byte the client received, head included
    reply: Reply
    exchange: ResponseRun
    upstream_body: dict[str, Any]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


async def drive(
    store: ResponseStore,
    body: dict[str, Any] | bytes,
    pieces: Iterable[bytes],
    *,
    status: int = 200,
    content_type: str | None = SSE,
    options: EngineOptions | None = None,
) -> Run:
    """Run one exchange the way the HTTP door does: begin, headers, every upstream piece, finish."""
    exchange = ResponseRun(store, options or EngineOptions(), tenant=DEFAULT_TENANT)
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    call = await exchange.begin(raw)
    head = exchange.on_upstream_headers(status, content_type)
    out: list[bytes] = []
    for piece in pieces:
        chunk = exchange.on_upstream_chunk(piece)
        assert isinstance(chunk, bytes)
        if head is None:
            assert chunk == b"", "bytes for a client whose stream was never opened"
        out.append(chunk)
    reply = await exchange.finish()
    return _delivered(exchange, head, out, reply, orjson.loads(call.body))


async def drive_failure(store: ResponseStore, body: dict[str, Any], error: Any, *, pieces: Iterable[bytes] = (),
                        status: int | None = 200, content_type: str | None = SSE) -> Run:
    """Like :func:`drive`, but the upstream call breaks (``exchange.fail``) after ``pieces``; ``status=None``
    means it broke before any headers arrived."""
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps(body))
    head = exchange.on_upstream_headers(status, content_type) if status is not None else None
    out = [exchange.on_upstream_chunk(piece) for piece in pieces] if status is not None else []
    reply = await exchange.fail(error)
    return _delivered(exchange, head, out, reply, orjson.loads(call.body))


def _delivered(exchange: ResponseRun, head: bytes | None, out: list[bytes], reply: Reply,
               upstream_body: dict[str, Any]) -> Run:
    if head is not None:
        assert reply.continues_stream, "the client's stream is open but the reply wants to start a new answer"
        return Run(200, SSE_UTF8, head + b"".join(out) + reply.body, reply, exchange, upstream_body)
    assert not any(out)
    return Run(reply.status, reply.content_type, reply.body, reply, exchange, upstream_body)


def split_two(raw: bytes) -> Iterator[list[bytes]]:
    """``[raw[:i], raw[i:]]`` for every ``i`` from 0 to ``len(raw)``, empty pieces included."""
    for i in range(len(raw) + 1):
        yield [raw[:i], raw[i:]]


def split_bytes(raw: bytes) -> list[bytes]:
    return [raw[i:i + 1] for i in range(len(raw))]
