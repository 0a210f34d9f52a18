"""Capability probing: what one upstream supports, measured with a handful of tiny requests.

Each check is one short request (at most a few tokens asked for, each bounded by ``timeout``), so probing a
live server costs little and ends quickly even when the server hangs. The answers decide the mode (``native`` when
the server answers ``POST /v1/responses`` itself, else ``translate``) and the profile switches
(engine/responses/profiles.py) the server needs: a switch is suggested only where a check saw the server refuse or
ignore what the bridge would otherwise send, so the suggestions can be laid over any profile.

The checks, in order: ``GET /models`` (only when no model is given), native ``/v1/responses``, streaming usage,
tool calls with ``content: null``, the ``developer`` role, ``json_schema`` response format, ``reasoning_content``
in history, logprobs, ``max_completion_tokens``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson

from ..engine.sse import DONE
from ..net.errors import connection_error
from . import DEFAULT_TIMEOUT

PROBE_PROMPT = "Reply with the single word OK."
_COUNT_PROMPT = "Count from 1 to 20, separated by spaces."
_MAX_BODY = 1024 * 1024  # the largest answer read: a tiny request's answer is far smaller
_PROBE_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
_PROBE_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                 "additionalProperties": False}


class ProbeError(Exception):
    """The upstream could not be probed at all (no answer, or no model to probe with)."""


@dataclass(frozen=True, slots=True)
class ProbeRow:
    """One line of the table: what was checked, ``yes`` / ``no`` / ``error``, and what was seen."""

    check: str
    result: Literal["yes", "no", "error"]
    detail: str


@dataclass(frozen=True, slots=True)
class ProbeReport:
    url: str
    model: str
    mode: Literal["translate", "native"]
    switches: Mapping[str, Any]  # switches the answers call for; engine.responses.profiles.options_for overrides
    rows: tuple[ProbeRow, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "mode": self.mode, "switches": dict(self.switches),
                "rows": [{"check": row.check, "result": row.result, "detail": row.detail} for row in self.rows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeReport:
        return cls(url=data["url"], model=data["model"], mode=data["mode"], switches=dict(data["switches"]),
                   rows=tuple(ProbeRow(row["check"], row["result"], row["detail"]) for row in data["rows"]))

    def lines(self) -> list[str]:
        """The printed table: one row per check, the suggested switches, then ``mode: …`` as the last line."""
        width = max(len("check"), *(len(row.check) for row in self.rows))
        out = [f"upstream: {self.url}  model: {self.model}", f"{'check':<{width}}  result  detail"]
        out += [f"{row.check:<{width}}  {row.result:<6}  {row.detail}" for row in self.rows]
        switches = " ".join(f"{name}={_shown(value)}" for name, value in self.switches.items())
        out.append(f"switches: {switches or 'none needed'}")
        out.append(f"mode: {self.mode}")
        return out


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class _Answer:
    status: int | None  # None: no HTTP answer (timeout, refused connection)
    body: Any = None
    text: str = ""
    error: str = ""
    chunks: list[Any] = field(default_factory=list)  # the parsed events of a streamed answer

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def why(self) -> str:
        if self.status is None:
            return self.error
        message = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(message, dict):
            message = message.get("message")
        text = str(message) if message else self.text
        return f"HTTP {self.status}" + (f": {' '.join(text.split())[:80]}" if text else "")


class _Prober:
    def __init__(self, session: aiohttp.ClientSession, url: str, api_key: str | None, timeout: float) -> None:
        self.session = session
        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.answered = False  # did any request get an HTTP answer?

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> _Answer:
        headers = {**self.headers, "Content-Type": "application/json"} if body is not None else self.headers
        try:
            async with self.session.request(method, self.url + path, headers=headers, timeout=self.timeout,
                                            data=orjson.dumps(body) if body is not None else None) as response:
                raw = bytearray()
                async for piece in response.content.iter_any():
                    raw += piece
                    if len(raw) > _MAX_BODY:
                        break  # a tiny request's answer is far smaller: what came is enough to judge it
                self.answered = True
                return _parsed(response.status, response.headers.get("Content-Type", ""), bytes(raw))
        except TimeoutError:
            return _Answer(None, error=f"no answer within {self.timeout.total:g}s")
        except (aiohttp.ClientError, ValueError) as exc:
            return _Answer(None, error=connection_error(exc))

    async def chat(self, model: str, **body: Any) -> _Answer:
        return await self.call("POST", "/chat/completions", {"model": model, **body})


DONE_TEXT = DONE.decode()


def _parsed(status: int, content_type: str, raw: bytes) -> _Answer:
    text = raw.decode("utf-8", errors="replace")
    if "text/event-stream" in content_type:
        chunks = []
        for line in text.splitlines():
            if line.startswith("data:") and line[5:].strip() not in ("", DONE_TEXT):
                try:
                    chunks.append(orjson.loads(line[5:].strip()))
                except orjson.JSONDecodeError:
                    continue
        return _Answer(status, text=text, chunks=chunks)
    try:
        return _Answer(status, body=orjson.loads(raw), text=text)
    except orjson.JSONDecodeError:
        return _Answer(status, text=text)


_Check = Callable[[_Prober, str, dict[str, Any]], Awaitable[ProbeRow]]


async def _native(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    answer = await p.call("POST", "/responses", {"model": model, "input": PROBE_PROMPT, "max_output_tokens": 16,
                                                 "store": False})
    if answer.ok and isinstance(answer.body, dict) and answer.body.get("object") == "response":
        return ProbeRow("native /v1/responses", "yes", f"a response, status {answer.body.get('status')}")
    if answer.ok:
        return ProbeRow("native /v1/responses", "no", "HTTP 200 but not a Responses object")
    return ProbeRow("native /v1/responses", _no_or_error(answer), answer.why())


async def _stream_usage(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    answer = await p.chat(model, messages=[{"role": "user", "content": PROBE_PROMPT}], max_tokens=4, stream=True,
                          stream_options={"include_usage": True})
    if answer.ok:
        usage = [chunk for chunk in answer.chunks if isinstance(chunk, dict) and chunk.get("usage")]
        if usage:
            return ProbeRow("streaming usage", "yes", f"usage chunk after {len(answer.chunks)} chunks")
        return ProbeRow("streaming usage", "no", "stream_options accepted, no usage in the stream")
    if answer.status is not None and 400 <= answer.status < 500:
        switches["stream_usage"] = False
    return ProbeRow("streaming usage", _no_or_error(answer), answer.why())


async def _null_content(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    call = {"id": "call_probe_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    answer = await p.chat(model, max_tokens=4, tools=[_PROBE_TOOL], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_probe_1", "content": "Sunny, 21 C."}])
    return _accepted(answer, "tool calls with content: null", switches, "tool_call_content", "empty")


async def _tools_without_choice(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    """``tools`` with no ``tool_choice`` (the SDKs' default) and a prompt that asks for the call: a server that
    answers in words never let the model see them (stock llama-cpp-python), so they go in the prompt instead."""
    answer = await p.chat(model, max_tokens=16, tools=[_PROBE_TOOL], messages=[
        {"role": "user", "content": "Please call get_weather for Paris."}])
    name = "tools without tool_choice"
    if answer.ok:
        message = _first_choice(answer.body).get("message")
        if isinstance(message, dict) and message.get("tool_calls"):
            return ProbeRow(name, "yes", "the model called the tool")
        switches["tool_calling"] = "prompt"
        return ProbeRow(name, "no", "answered in words: tools ignored without tool_choice?")
    return ProbeRow(name, _no_or_error(answer), answer.why())


async def _developer(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    answer = await p.chat(model, max_tokens=4, messages=[{"role": "developer", "content": "Answer briefly."},
                                                         {"role": "user", "content": PROBE_PROMPT}])
    return _accepted(answer, "developer role", switches, "developer_role", "system")


async def _json_schema(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    answer = await p.chat(model, max_tokens=16, messages=[{"role": "user", "content": "Is water wet? Answer in JSON."}],
                          response_format={"type": "json_schema",
                                           "json_schema": {"name": "probe", "schema": _PROBE_SCHEMA}})
    return _accepted(answer, "json_schema response_format", switches, "json_schema_format", "json_object")


async def _reasoning_content(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    answer = await p.chat(model, max_tokens=4, messages=[
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello.", "reasoning_content": "The user wants a greeting."},
        {"role": "user", "content": PROBE_PROMPT}])
    return _accepted(answer, "reasoning_content in history", switches, "reasoning_history", "drop")


async def _logprobs(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    answer = await p.chat(model, max_tokens=2, logprobs=True, top_logprobs=1,
                          messages=[{"role": "user", "content": PROBE_PROMPT}])
    if answer.ok:
        choice = _first_choice(answer.body)
        if choice.get("logprobs"):
            return ProbeRow("logprobs", "yes", "logprobs in the answer")
        return ProbeRow("logprobs", "no", "accepted, but the answer has none")
    if answer.status is not None:
        switches["logprobs"] = False
    return ProbeRow("logprobs", _no_or_error(answer), answer.why())


async def _max_completion_tokens(p: _Prober, model: str, switches: dict[str, Any]) -> ProbeRow:
    answer = await p.chat(model, max_completion_tokens=1, messages=[{"role": "user", "content": _COUNT_PROMPT}])
    if answer.ok:
        choice = _first_choice(answer.body)
        usage = answer.body.get("usage") if isinstance(answer.body, dict) else None
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if choice.get("finish_reason") == "length" or (isinstance(tokens, int) and tokens <= 1):
            return ProbeRow("max_completion_tokens", "yes", "the answer was cut at 1 token")
        switches["max_tokens_field"] = "max_tokens"
        return ProbeRow("max_completion_tokens", "no", f"ignored: finish_reason {choice.get('finish_reason')}, "
                        f"{tokens} completion tokens for a limit of 1")
    if answer.status is not None:
        switches["max_tokens_field"] = "max_tokens"
    return ProbeRow("max_completion_tokens", _no_or_error(answer), answer.why())


def _first_choice(body: Any) -> dict[str, Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    return first if isinstance(first, dict) else {}


def _accepted(answer: _Answer, name: str, switches: dict[str, Any], switch: str, fallback: Any) -> ProbeRow:
    """The row of a check that passes when the upstream accepts the request; a refusal (an HTTP error, not a
    failure to answer) sets ``switch`` to the ``fallback`` the bridge uses instead."""
    if answer.ok:
        return ProbeRow(name, "yes", "accepted")
    if answer.status is not None:
        switches[switch] = fallback
    return ProbeRow(name, _no_or_error(answer), answer.why())


def _no_or_error(answer: _Answer) -> Literal["no", "error"]:
    return "no" if answer.status is not None else "error"


CHECKS: tuple[_Check, ...] = (_native, _stream_usage, _null_content, _tools_without_choice, _developer, _json_schema,
                              _reasoning_content, _logprobs, _max_completion_tokens)


async def probe_upstream(url: str, *, model: str | None, api_key: str | None,
                         timeout: float = DEFAULT_TIMEOUT) -> ProbeReport:
    """Probe the upstream at ``url`` (a base URL ending in ``/v1``): one request per check, one after another
    (a small server answers one at a time), each bounded by ``timeout`` seconds. ``model``: the model to ask;
    None takes the first that ``GET /models`` lists. Raises :class:`ProbeError` when nothing answers."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ProbeError(f"{url} is not a URL the probe can call: it needs http:// or https:// "
                         f"(e.g. http://{url})")
    async with aiohttp.ClientSession() as session:
        prober = _Prober(session, url, api_key, timeout)
        if model is None:
            model = await _first_model(prober)
        switches: dict[str, Any] = {}
        rows = [await check(prober, model, switches) for check in CHECKS]
    if not prober.answered:
        raise ProbeError(f"{url} is unreachable: no answer: {rows[0].detail}")
    native = rows[0].result == "yes"
    return ProbeReport(url=url, model=model, mode="native" if native else "translate", switches=switches,
                       rows=tuple(rows))


async def _first_model(prober: _Prober) -> str:
    """The first model ``GET /models`` lists. An upstream that does not answer at all is unreachable (no model
    named with ``--model`` would help); one answering 404 most likely has the wrong base URL."""
    answer = await prober.call("GET", "/models")
    if answer.status is None:
        raise ProbeError(f"{prober.url} is unreachable: {answer.error}")
    data = answer.body.get("data") if answer.ok and isinstance(answer.body, dict) else None
    for entry in data if isinstance(data, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            return entry["id"]
    if answer.status == 404:
        raise ProbeError(f"GET {prober.url}/models gave {answer.why()}: does the URL end in /v1?")
    raise ProbeError(f"no model to probe with: GET {prober.url}/models gave {answer.why() if not answer.ok else 'none'}"
                     "; name one with --model")
