"""A deterministic, wire-faithful OpenAI Chat Completions server for demos, tests and benchmarks.

The fake stands in for vLLM, Ollama or OpenAI itself. Its wire format copies OpenAI's, so anything that
works against it should work against the real thing, and the conversation itself scripts every answer:
no randomness, no model.

Routes
------
* ``POST /v1/chat/completions`` - ``chat.completion`` JSON, or with ``"stream": true`` an SSE stream
  (``text/event-stream``) of ``data: {chat.completion.chunk}`` events ending with ``data: [DONE]``.
* ``GET /v1/models`` (and ``GET /v1/models/{id}``) - chat models ``fake-model`` and ``fake-reasoner``, then the
  embedding model ``fake-embedding`` (asked for chat: OpenAI's 404 "This is not a chat model").
* ``POST /v1/embeddings`` - for ``fake-embedding`` only (fake_embeddings.py): deterministic unit-length vectors
  (64 floats unless ``dimensions`` says otherwise) derived from a hash of each input; ``input`` is a string, a list
  of strings, or token arrays; ``encoding_format: "base64"`` gives little-endian float32 bytes in base64, like
  OpenAI. Another model is refused as OpenAI refuses it (a chat model: 400; one it does not list: 404).
* ``POST /v1/images/generations`` - an ``ImagesResponse`` with real PNGs (fake_images.py); ``--no-images``
  leaves the route out (a 404, as an upstream without the Images API answers).
* ``GET /health`` - ``{"status": "ok"}``.
* ``GET /_fake/requests`` - ``{"data": [...]}``: the last 50 bodies received on
  ``/v1/chat/completions`` (and ``/v1/responses`` with ``--native``), oldest first, each as
  ``{"body": ..., "path": ..., "headers": {"authorization": ...}}`` (also ``x-request-id``, ``traceparent``,
  ``x-tenant-id`` and ``x-responses-bridge-sidecar``: what Envoy or the bridge passed on)
  (recorded before validation, so rejected requests show up too; a body that is not JSON is recorded
  as its raw text). ``DELETE /_fake/requests`` clears the record.

Unknown routes answer 404 with an OpenAI error body, never an HTML page.

The server itself (routes, ``create_app``, ``start``, the ``fake-upstream`` command) is assembled in
fake_server.py. ``create_app(quirks="llamacpp")`` (``--quirks``) puts on a real backend's departures from OpenAI
before the checks below: llama.cpp's 500 on the ``developer`` role, 400 on ``content: null`` beside
``tool_calls``, … (see fake_quirks.py).

Request validation (like OpenAI: always 400 with ``{"error": {"message", "type", "param", "code"}}``)
------------------------------------------------------------------------------------------------------
* The body must be a JSON object; ``model`` must be a non-empty string; ``messages`` a non-empty array
  of objects with a valid ``role``. User/system/developer/tool messages need ``content`` (a string or a
  list of parts; a ``text`` part needs a string ``text``); tool messages need ``tool_call_id``.
* Tool pairing is checked the way OpenAI checks it: an assistant message with ``tool_calls`` must be
  followed directly by one ``tool`` message per call id, and a ``tool`` message must answer such a call.
* ``tools`` must be a non-empty array of ``{"type": "function", "function": {"name", ...}}`` with names
  matching ``^[a-zA-Z0-9_-]{1,64}$``; ``tool_choice`` and ``parallel_tool_calls`` are only allowed with
  ``tools``, and a named ``tool_choice`` must name an offered tool.
* ``stream`` must be a boolean; ``stream_options`` is only allowed with ``stream: true``;
  ``max_tokens``/``max_completion_tokens`` are integers >= 1; ``temperature`` is in [0, 2] and ``top_p``
  in [0, 1]; ``top_logprobs`` is in [0, 20] and needs ``logprobs: true``; ``n`` must be 1 (the fake only
  produces one choice); ``response_format.type`` is ``text``, ``json_object`` or ``json_schema`` (the
  latter with a ``json_schema.name``).
* Responses-API-only fields (``input``, ``instructions``, ``previous_response_id``,
  ``max_output_tokens``, ``conversation``, ``truncation``, ``include``) are rejected with
  ``Unrecognized request argument supplied: X``, as OpenAI does, so a leaking translation is caught.
  Other unknown fields are ignored, as vLLM does.
* A malformed directive (see below), e.g. ``[chunks=abc]``, is also a 400, so a typo in a test is loud.

Behaviour: scripted by the conversation
---------------------------------------
Directives are bracketed tokens anywhere in the text of the LAST USER message (string content, or the
``text`` of its ``text`` parts joined). They are removed (with the whitespace before them) from the
text that gets echoed. Unknown bracketed text is left alone.

1. Echo (default). The answer is ``"Echo: " + <last user text, directives removed, stripped>``. When
   the last message is a ``tool`` message the answer is ``"Tool result: " + <its content>`` instead; when it is
   a ``system`` or ``developer`` message after a user message (a note the client added after the conversation,
   such as an Agents session's word that a call was denied), ``"Noted: " + <its content>``.
   With no user message at all: ``"Echo: "``. Directives of the last user message still apply.
   A summarising call (the bridge's compaction: a system message starting ``You compact conversations``)
   is answered like a model would, shorter than what it read: ``"Summary: "`` + the first 6 words of each
   transcript line, joined by ``"; "``.
2. Chunking. Streamed text goes out one chunk per word, each chunk keeping its trailing whitespace, so
   concatenating the chunks gives the exact answer. ``[chunks=N]`` makes exactly N content chunks:
   filler words ``w1 w2 ...`` are appended to the answer (in JSON answers too) until it has N words,
   and an answer longer than N words is grouped into N chunks. ``create_app(chunk_count=N)`` does the
   same when no directive is given. ``[delay=MS]`` sleeps MS milliseconds between chunks
   (``create_app(chunk_delay=seconds)`` otherwise). ``[header_delay=MS]`` is a model's time to first token: a
   request that will be answered (it passed validation and asks for no ``[error]``) waits MS milliseconds
   before the response headers go out, JSON or stream; a stream's first chunk follows its headers at once
   (``create_app(header_delay=seconds)``, ``--header-delay`` otherwise). Unlike ``[stall]``, a request refused
   with an error is answered without the wait, as a server refuses it before any prefill.
   ``[first_byte_delay=MS]`` is llama.cpp's way of streaming: the headers go out at once, the first chunk MS
   milliseconds later (with the first token).
3. ``[think]``: reasoning ``"Thinking about: <text>"`` comes first, streamed per word as
   ``delta.reasoning_content``; non-streamed as ``message.reasoning_content``.
   ``[think_field=reasoning]`` (which implies ``[think]``) uses the field name ``reasoning`` instead, as
   newer vLLM/Ollama do. Reasoning words count as ``completion_tokens_details.reasoning_tokens``.
4. Tool calls. When the request offers ``tools`` and the last message is a user message whose text
   says ``call <name>`` for an offered tool, the answer is a call to that tool (``content: null``,
   ``finish_reason: "tool_calls"``). Several mentions make several parallel calls in order (indices 0,
   1, ...), unless ``parallel_tool_calls`` is false (then only the first). Arguments are a compact JSON
   object built from the tool's ``parameters.properties`` in order: ``enum`` -> its first value;
   string -> the word after ``call <name>`` (trailing punctuation stripped) if any, else ``"test"``;
   integer/number -> 42; boolean -> true; array -> []; object -> {}; anything else -> ``"test"``.
   Call ids are ``call_<name>_<index>``. Streamed, a call's first chunk carries ``index``, ``id``,
   ``type``, ``function.name`` and empty ``arguments``; the arguments follow in 8-character pieces.
   ``tool_choice: {"type": "function", "function": {"name": X}}`` forces one call to X whatever the
   text says; ``"required"`` calls the first tool when none is mentioned; ``"none"`` never calls.
   ``[think]`` combines with tool calls (reasoning first).
   ``[args=JSON]`` gives every call exactly these arguments (a JSON object without ``]`` in it), e.g.
   ``call exec_command [args={"cmd": "echo hi"}]`` scripts Codex's shell tool; a namespace function is
   offered by the bridge as ``<namespace>__<name>``, so ``call <namespace>__<name>`` calls it.
   ``[then=NAME]`` (repeatable) scripts a plan across turns: after the k-th round of tool results that
   follows the last user message, the answer is one call to the k-th ``then`` tool (if offered), e.g.
   ``call a [then=b]`` calls ``a``, then ``b`` after ``a``'s result, then answers ``Tool result: …``.
   ``[args64=BASE64]`` is the same with the JSON object base64-encoded (for arguments that hold arrays,
   whose ``]`` would end the directive).
   With ``--tool-topics`` (``create_app(tool_topics=True)``), for suites written for real models: when no
   ``call <name>`` applies and ``tool_choice`` is absent or ``auto``, a user message that mentions a word of
   4+ letters of an offered tool's name (split at ``_``/``-``: "weather" for ``get_weather``) calls that tool;
   a string ``query`` parameter gets the user's whole text (directives removed), as a model searching for the
   question would (the bridge's ``web_search`` and ``file_search`` functions take one).
   The bridge's server tools are offered as functions too, so ``call web_search widgets`` searches for
   "widgets", and ``call image_generation [args={"prompt": "a red kite"}]`` asks for an image (a failing
   image model: ``[error=503]`` inside that prompt, see fake_images.py).
   Code, asked for as a person asks (fake_code.py): with the code interpreter offered (the function ``python``),
   a fenced ```` ```python ```` block or ``run: <code>`` in the message calls ``python`` with that code, e.g.
   ``run: print(2 + 2)``; then ``Tool result: 4``. With the hosted shell offered (the function ``shell``), a
   fenced ```` ```sh ```` block or ``sh: <command>`` calls ``shell`` with that command, e.g. ``sh: ls -la``.
   Subagents (fake_agents.py): with ``spawn_agent`` offered (the multi-agent beta), each line ``spawn: <task>``
   calls ``spawn_agent`` with that task; after the spawns' results the fake calls ``wait_agent``, then answers.
   With ``program`` offered (programmatic tool calling, fake_programs.py), a fenced ```` ```js ```` block or
   ``js: <code>`` calls ``program`` with that JavaScript.
5. ``[refuse]``: ``refusal: "I can't help with that."`` with ``content: null``; streamed as
   ``delta.refusal`` pieces, one per word.
6. ``[length]`` cuts the answer to 3 words; a ``max_completion_tokens`` (or else ``max_tokens``)
   smaller than the number of answer words cuts it to that many words. Either way ``finish_reason`` is
   ``length``. ``[filter]`` keeps only the first word and finishes with ``content_filter``.
   Reasoning words do not count against the limit.
7. ``logprobs: true``: every content chunk (and non-streamed ``choices[0].logprobs``, one entry per
   chunk-sized token) carries ``{"content": [{"token", "logprob": -0.1, "bytes", "top_logprobs"}],
   "refusal": null}``; ``top_logprobs`` lists ``top_logprobs`` entries: the token itself at -0.1, then
   ``alt1``, ``alt2``, ... at -1.0-k. Refusals carry theirs under ``refusal`` instead.
8. ``response_format`` ``json_object``/``json_schema``: the content is the JSON object string
   ``{"echo":"<text>"}`` where ``<text>`` is what would follow ``"Echo: "`` (or ``"Tool result: "``).
9. Failures:
   ``[error=CODE]`` (400-599) -> that HTTP status with message ``"fake upstream error CODE"`` and the
   type OpenAI uses for it (400 ``invalid_request_error``, 401 ``authentication_error``, 403
   ``permission_error``, 404 ``not_found_error``, 429 ``too_many_requests`` with code
   ``rate_limit_exceeded``, 5xx ``server_error``), also for streaming requests.
   ``[error_after_tools=CODE]`` -> the same as ``[error=CODE]``, but only for a call whose messages end with tool
   results: the turn after a tool loop's calls fails (the first turn's calls were made).
   ``[stall_after_tools=MS]`` -> the same as ``[stall=MS]``, but only for a call whose messages end with tool
   results: the turn after the calls holds its upstream place that long.
   ``[plain_error=CODE]`` -> that status with a ``text/plain`` body, as a reverse proxy or a bare server
   sends it (no OpenAI error object).
   ``[stall=MS]`` -> sleep MS ms before sending anything, headers included.
   ``[stall_after=K:MS]`` -> in a stream, send K payload chunks then sleep MS ms.
   ``[context=N]`` -> a model whose context window is N tokens: when ``prompt_tokens`` (see 10) plus
   the requested ``max_completion_tokens``/``max_tokens`` exceed N, the answer is vLLM's 400 for it:
   ``{"error": {"message": "This model's maximum context length is N tokens. However, you requested M
   tokens (P in the messages, C in the completion). Please reduce the length of the messages or
   completion.", "type": "BadRequestError", "param": null, "code": 400}}`` (also for streaming requests).
   ``[cut=K]`` -> in a stream, send K payload chunks then drop the connection: no finish chunk, no
   ``[DONE]``, no chunked-encoding terminator, so the client sees a broken body.
   ``[garbage]`` -> in a stream, one non-JSON ``data:`` line right after the first chunk.
   "Payload chunks" are everything after the first (role) chunk and before the finish chunk:
   reasoning, content, refusal and tool-call chunks. If K exceeds their number, the stall or the cut
   happens just before the finish chunk.
10. Usage. ``prompt_tokens`` = whitespace-separated words in all message texts (string contents and
   ``text`` parts) + 1 per message; ``completion_tokens`` = answer words (content or refusal; a tool
   call counts the words of ``name + " " + arguments``) + reasoning words. JSON answers always carry
   ``usage``; streams only with ``stream_options.include_usage``, as a final chunk with
   ``choices: []``, and then every earlier chunk has ``"usage": null``.
11. Ids are ``chatcmpl-<counter>``; ``created`` is the current Unix time, ``model`` echoes the request,
   ``system_fingerprint`` is ``fp_fake``; ``service_tier`` is the tier that served it, as OpenAI reports it:
   ``flex`` when the request asked for ``flex``, else ``default``.
12. ``"stream": true`` always streams; anything else answers JSON.
13. ``[huge=N:W]`` (or ``[huge=N:W:MS]``): the answer starts with one extra word of N ``x`` characters (and a
   space), its own content chunk. In a stream that chunk's SSE event is written W bytes at a time, yielding to the
   event loop after each write (or sleeping MS ms), as a slow network or a proxy delivers one large event in small
   reads. Non-streamed, the JSON answer simply carries it. N is at most 64 MiB; the word counts as one token.

Stream framing: the first chunk's delta is ``{"role": "assistant", "content": ""}``; then the payload
chunks; then a chunk with an empty delta and the ``finish_reason``; then the optional usage chunk;
then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ..engine.sse import DONE_FRAME, data_frame
from . import fake_agents, fake_code, fake_programs, fake_quirks

MODELS = ("fake-model", "fake-reasoner")
EMBEDDING_MODELS = ("fake-embedding",)  # served on /v1/embeddings (fake_embeddings.py), listed after the chat models
RECORDED_REQUESTS = 50
REFUSAL_TEXT = "I can't help with that."
TOOL_ARGUMENT_PIECE = 8
LENGTH_DIRECTIVE_WORDS = 3
MAX_DIRECTIVE_VALUE = 1_000_000  # chunks, milliseconds: large enough for any benchmark, small enough to be safe
MAX_HUGE_BYTES = 64 * 1024 * 1024  # [huge=N:W]: as large as the biggest request body the bridge accepts

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CALL_RE = re.compile(r"\bcall\s+([A-Za-z0-9_-]+)", re.IGNORECASE)
_RESPONSES_ONLY_FIELDS = (
    "input",
    "instructions",
    "previous_response_id",
    "max_output_tokens",
    "conversation",
    "truncation",
    "include",
)
_FLAG_DIRECTIVES = ("think", "refuse", "length", "filter", "garbage")
_VALUE_DIRECTIVES = ("think_field", "stall_after", "chunks", "header_delay", "first_byte_delay", "delay", "plain_error",
                     "error_after_tools", "stall_after_tools", "error", "stall", "cut", "args", "args64", "context",
                     "huge", "then")
_DIRECTIVE_RE = re.compile(
    r"\s*\[(" + "|".join(_VALUE_DIRECTIVES + _FLAG_DIRECTIVES) + r")(?:=([^\]]*))?\]"
)
_WORD_PIECE_RE = re.compile(r"\s*\S+\s*")

RECORDED_HEADERS = ("authorization", "x-request-id", "traceparent", "x-tenant-id", "x-responses-bridge-sidecar")


# --------------------------------------------------------------------------------------------- errors


class FakeError(Exception):
    """Carries everything needed for an OpenAI-shaped error answer, so handlers can just raise."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | int | None = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _error_type(status)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "too_many_requests",
}
_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def _json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error_response(err: FakeError) -> web.Response:
    return _json_response(err.body(), err.status)


def _type_name(value: Any) -> str:
    """OpenAI's wording for a JSON type in 'expected X, but got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: Any) -> FakeError:
    return FakeError(400, f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
                     param=param, code="invalid_type")


def _missing(param: str) -> FakeError:
    return FakeError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _invalid_value(param: str, message: str) -> FakeError:
    return FakeError(400, f"Invalid value for '{param}': {message}", param=param, code="invalid_value")


# ---------------------------------------------------------------------------------------------- state


@dataclass
class _State:
    chunk_count: int | None
    chunk_delay: float
    tool_topics: bool = False
    header_delay: float = 0.0  # seconds before the headers of every answer (a model's time to first token)
    embedding_delay: float = 0.0  # seconds each /v1/embeddings answer waits (a slow embedding model)
    quirks: frozenset[str] = frozenset()  # fake_quirks.py: a real backend's departures from OpenAI, put on
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECORDED_REQUESTS))


_STATE = web.AppKey("fake_upstream_state", _State)


# -------------------------------------------------------------------------------------------- helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _content_text(content: Any) -> str:
    """Joins the text a message carries, whether content is a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _word_count(text: str) -> int:
    return len(text.split())


def _word_pieces(text: str) -> list[str]:
    """Splits into per-word pieces that keep their whitespace, so joining them restores the text."""
    pieces = _WORD_PIECE_RE.findall(text)
    return pieces if pieces else ([text] if text else [])


def _group(pieces: list[str], n: int) -> list[str]:
    """Merges pieces into exactly n chunks (when there are at least n), sizes as even as possible."""
    if n >= len(pieces):
        return pieces
    size, extra = divmod(len(pieces), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append("".join(pieces[start:end]))
        start = end
    return out


def _first_words(text: str, k: int) -> str:
    return "".join(_word_pieces(text)[:k]).rstrip()


# ------------------------------------------------------------------------------------------ directives


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


# ------------------------------------------------------------------------------------------ validation


def _check_part(part: Any, param: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        raise _invalid_type(param, "an object", part)
    kind = part.get("type")
    if kind not in allowed:
        supported = ", ".join(f"'{a}'" for a in allowed)
        raise FakeError(400, f"Invalid value: {kind!r}. Supported values are: {supported}.",
                        param=f"{param}.type", code="invalid_value")
    if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
        raise _invalid_type(f"{param}.{kind}", "a string", part.get(kind))


def _check_content(msg: dict[str, Any], param: str, allowed: tuple[str, ...], *, required: bool) -> None:
    if "content" not in msg or msg["content"] is None:
        if required:
            raise _missing(f"{param}.content")
        return
    content = msg["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid_type(f"{param}.content", "a string or an array", content)
    for j, part in enumerate(content):
        _check_part(part, f"{param}.content[{j}]", allowed)


def _check_tool_calls(calls: Any, param: str) -> list[str]:
    if not isinstance(calls, list):
        raise _invalid_type(param, "an array", calls)
    ids = []
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        if not isinstance(call, dict):
            raise _invalid_type(where, "an object", call)
        if not isinstance(call.get("id"), str):
            raise _missing(f"{where}.id")
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise _missing(f"{where}.function")
        if not isinstance(fn.get("name"), str):
            raise _missing(f"{where}.function.name")
        if not isinstance(fn.get("arguments"), str):
            raise _invalid_type(f"{where}.function.arguments", "a string", fn.get("arguments"))
        ids.append(call["id"])
    return ids


def _check_message(msg: Any, i: int) -> list[str]:
    """Validates one message; returns the tool call ids an assistant message opens."""
    param = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise _invalid_type(param, "an object", msg)
    role = msg.get("role")
    if role is None:
        raise _missing(f"{param}.role")
    if role not in _ROLES:
        supported = ", ".join(f"'{r}'" for r in _ROLES)
        raise FakeError(400, f"Invalid value: {role!r}. Supported values are: {supported}.",
                        param=f"{param}.role", code="invalid_value")
    if role == "user":
        _check_content(msg, param, ("text", "image_url", "input_audio", "file"), required=True)
    elif role in ("system", "developer", "tool"):
        _check_content(msg, param, ("text",), required=True)
    elif role == "assistant":
        _check_content(msg, param, ("text", "refusal"), required=False)
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise _missing(f"{param}.tool_call_id")
    if role == "assistant" and msg.get("tool_calls") is not None:
        return _check_tool_calls(msg["tool_calls"], f"{param}.tool_calls")
    return []


def _unanswered(i: int, pending: list[str]) -> FakeError:
    return FakeError(
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}",
        param=f"messages.[{i}].role",
    )


def _check_messages(messages: Any, *, pairing: bool = True) -> None:
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array of objects", messages)
    if not messages:
        raise FakeError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                        "but got an empty array instead.", param="messages", code="empty_array")
    pending: list[str] = []
    opener = 0
    for i, msg in enumerate(messages):
        opened = _check_message(msg, i)
        if not pairing:
            continue
        if msg["role"] == "tool":
            if msg["tool_call_id"] not in pending:
                raise FakeError(400, "Invalid parameter: messages with role 'tool' must be a response to a "
                                "preceeding message with 'tool_calls'.", param=f"messages.[{i}].role")
            pending.remove(msg["tool_call_id"])
            continue
        if pending:
            raise _unanswered(opener, pending)
        pending, opener = list(opened), i
    if pending:
        raise _unanswered(opener, pending)


def _check_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        for key in ("tool_choice", "parallel_tool_calls"):
            if body.get(key) is not None:
                raise _invalid_value(key, f"'{key}' is only allowed when 'tools' are specified.")
        return []
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    if not tools:
        raise FakeError(400, "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
                        "empty array instead.", param="tools", code="empty_array")
    functions = []
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid_type(param, "an object", tool)
        if tool.get("type") != "function":
            raise FakeError(400, f"Invalid value: {tool.get('type')!r}. Supported values are: 'function'.",
                            param=f"{param}.type", code="invalid_value")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise _missing(f"{param}.function")
        name = fn.get("name")
        if not isinstance(name, str):
            raise _missing(f"{param}.function.name")
        if not _TOOL_NAME_RE.match(name):
            raise FakeError(400, f"Invalid '{param}.function.name': string does not match pattern. Expected a "
                            "string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
                            param=f"{param}.function.name", code="invalid_value")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise _invalid_type(f"{param}.function.parameters", "an object", fn["parameters"])
        functions.append(fn)
    _check_tool_choice(body.get("tool_choice"), [fn["name"] for fn in functions])
    if body.get("parallel_tool_calls") is not None and not isinstance(body["parallel_tool_calls"], bool):
        raise _invalid_type("parallel_tool_calls", "a boolean", body["parallel_tool_calls"])
    return functions


def _check_tool_choice(choice: Any, names: list[str]) -> None:
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, str):
        raise _invalid_value("tool_choice", f"{choice!r}. Supported values are: 'none', 'auto' and 'required'.")
    if not isinstance(choice, dict) or choice.get("type") != "function":
        raise _invalid_value("tool_choice", "expected 'none', 'auto', 'required' or a function choice.")
    fn = choice.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _missing("tool_choice.function.name")
    if fn["name"] not in names:
        raise _invalid_value("tool_choice", f"function {fn['name']!r} is not one of the 'tools'.")


def _check_range(body: dict[str, Any], name: str, low: float, high: float | None, *, integer: bool) -> None:
    value = body.get(name)
    if value is None:
        return
    if not (_is_int(value) if integer else _is_number(value)):
        raise _invalid_type(name, "an integer" if integer else "a number", value)
    if value < low:
        raise FakeError(400, f"Invalid '{name}': {'integer' if integer else 'decimal'} below minimum value. "
                        f"Expected a value >= {low}, but got {value} instead.", param=name,
                        code="integer_below_min_value" if integer else "decimal_below_min_value")
    if high is not None and value > high:
        raise FakeError(400, f"Invalid '{name}': {'integer' if integer else 'decimal'} above maximum value. "
                        f"Expected a value <= {high}, but got {value} instead.", param=name,
                        code="integer_above_max_value" if integer else "decimal_above_max_value")


def _check_streaming(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return
    if not stream:
        raise FakeError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        param="stream_options", code="invalid_value")
    if not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object", options)
    if options.get("include_usage") is not None and not isinstance(options["include_usage"], bool):
        raise _invalid_type("stream_options.include_usage", "a boolean", options["include_usage"])


def _check_response_format(fmt: Any) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise _invalid_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise FakeError(400, f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object', and "
                        "'json_schema'.", param="response_format.type", code="invalid_value")
    if kind == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict):
            raise _missing("response_format.json_schema")
        if not isinstance(schema.get("name"), str):
            raise _missing("response_format.json_schema.name")


def _check_logprobs(body: dict[str, Any]) -> None:
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _invalid_type("logprobs", "a boolean", logprobs)
    _check_range(body, "top_logprobs", 0, 20, integer=True)
    if body.get("top_logprobs") is not None and not logprobs:
        raise _invalid_value("top_logprobs", "'logprobs' must be set to true when 'top_logprobs' is used.")


def validate_chat_request(body: Any, *, pairing: bool = True) -> list[dict[str, Any]]:
    """Rejects what OpenAI rejects, with its messages; returns the offered functions. ``pairing``: check that
    tool calls and tool messages answer one another (llama.cpp does not)."""
    if not isinstance(body, dict):
        raise FakeError(400, f"Invalid type for request body: expected an object, but got {_type_name(body)} "
                        "instead.", code="invalid_type")
    model = body.get("model")
    if model is None or model == "":
        raise FakeError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    for name in _RESPONSES_ONLY_FIELDS:
        if name in body:
            raise FakeError(400, f"Unrecognized request argument supplied: {name}", param=name,
                            code="unknown_parameter")
    _check_messages(body.get("messages"), pairing=pairing)
    functions = _check_tools(body)
    _check_streaming(body)
    _check_range(body, "max_tokens", 1, None, integer=True)
    _check_range(body, "max_completion_tokens", 1, None, integer=True)
    _check_range(body, "temperature", 0, 2, integer=False)
    _check_range(body, "top_p", 0, 1, integer=False)
    _check_range(body, "n", 1, None, integer=True)
    if body.get("n") not in (None, 1):
        raise _invalid_value("n", "the fake upstream only produces one choice (n=1).")
    _check_logprobs(body)
    _check_response_format(body.get("response_format"))
    return functions


# ---------------------------------------------------------------------------------------------- answer


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Answer:
    """Everything one completion says, independent of whether it goes out as JSON or as SSE."""

    content_chunks: list[str] | None = None
    refusal_chunks: list[str] | None = None
    reasoning_chunks: list[str] = field(default_factory=list)
    reasoning_field: str = "reasoning_content"
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def content(self) -> str | None:
        return None if self.content_chunks is None else "".join(self.content_chunks)

    @property
    def refusal(self) -> str | None:
        return None if self.refusal_chunks is None else "".join(self.refusal_chunks)

    @property
    def reasoning(self) -> str | None:
        return "".join(self.reasoning_chunks) if self.reasoning_chunks else None


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(_word_count(_content_text(m.get("content"))) + 1 for m in messages)


def _last_user_text(messages: list[dict[str, Any]]) -> str | None:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return None


def _argument_value(schema: Any, word: str | None) -> Any:
    if not isinstance(schema, dict):
        return "test"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return word or "test"
    if kind in ("integer", "number"):
        return 42
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "test"


def _word_after_call(text: str, name: str) -> str | None:
    match = re.search(r"\bcall\s+" + re.escape(name) + r"(?![A-Za-z0-9_-])\s+(\S+)", text, re.IGNORECASE)
    if not match:
        return None
    word = match.group(1).rstrip(".,;:!?\"')")
    return word if word and word.lower() != "call" else None


def _build_arguments(fn: dict[str, Any], text: str) -> str:
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    word = _word_after_call(text, fn["name"])
    args = {}
    if isinstance(props, dict):
        args = {key: _argument_value(schema, word) for key, schema in props.items()}
    return orjson.dumps(args).decode()


def _chosen_tools(body: dict[str, Any], functions: list[dict[str, Any]], text: str, last_is_user: bool,
                  asked: str | None = None) -> list[str]:
    """Which tools to call, in order, following tool_choice, the text and parallel_tool_calls. ``asked``: the tool
    the message asks for without naming it (code to run: fake_code.py), called when no ``call <name>`` is."""
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return []
    if isinstance(choice, dict):
        return [choice["function"]["name"]]
    offered = {fn["name"] for fn in functions}
    names = [m.group(1) for m in _CALL_RE.finditer(text) if m.group(1) in offered] if last_is_user else []
    if not names and asked is not None:
        names = [asked]
    if not names and choice == "required":
        names = [functions[0]["name"]]
    if body.get("parallel_tool_calls") is False:
        names = names[:1]
    return names


def _then_tools(body: dict[str, Any], functions: list[dict[str, Any]], then: tuple[str, ...]) -> list[str]:
    """``[then=NAME]``: after the k-th round of tool results that follows the last user message, the k-th
    ``then`` tool is called (when offered and ``tool_choice`` is not ``none``), as a model working through a
    plan would; past the last one the model answers."""
    if body.get("tool_choice") == "none" or body["messages"][-1].get("role") != "tool":
        return []
    rounds = 0
    for message in reversed(body["messages"]):
        if message.get("role") == "user":
            break
        if message.get("role") == "assistant" and message.get("tool_calls"):
            rounds += 1
    offered = {fn["name"] for fn in functions}
    if 1 <= rounds <= len(then) and then[rounds - 1] in offered:
        return [then[rounds - 1]]
    return []


def _topic_tools(functions: list[dict[str, Any]], text: str) -> list[str]:
    """``--tool-topics``: the first offered tool one of whose name's words (4+ letters, split at ``_``/``-``) the
    user's text mentions, e.g. ``get_weather`` for "What's the weather like?"; none otherwise."""
    words = {word.lower() for word in re.findall(r"[A-Za-z]{4,}", text)}
    for fn in functions:
        if any(part.lower() in words for part in re.split(r"[_-]+", fn["name"]) if len(part) >= 4):
            return [fn["name"]]
    return []


def _with_query(call: ToolCall, functions: list[dict[str, Any]], text: str) -> ToolCall:
    """``--tool-topics``: a string ``query`` parameter searches for the user's question itself."""
    fn = next(fn for fn in functions if fn["name"] == call.name)
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    query = props.get("query") if isinstance(props, dict) else None
    if not isinstance(query, dict) or query.get("type") != "string" or not text.strip():
        return call
    arguments = orjson.loads(call.arguments)
    arguments["query"] = text.strip()
    return ToolCall(call.id, call.name, orjson.dumps(arguments).decode())


def _tool_calls(names: list[str], functions: list[dict[str, Any]], text: str) -> list[ToolCall]:
    by_name = {fn["name"]: fn for fn in functions}
    return [ToolCall(f"call_{name}_{i}", name, _build_arguments(by_name[name], text)) for i, name in enumerate(names)]


def _with_filler(render: Callable[[str], str], body: str, target: int | None) -> str:
    """Pads with w1 w2 ... until the rendered answer has ``target`` words, so benchmarks get N chunks."""
    text = render(body)
    if target is None:
        return text
    added = 0
    while (missing := target - _word_count(text)) > 0:
        filler = " ".join(f"w{i}" for i in range(added + 1, added + missing + 1))
        added += missing
        body = f"{body} {filler}" if body else filler
        text = render(body)
    return text


SUMMARISER_PROMPT = "You compact conversations"
SUMMARY_WORDS = 6


def _summary(user_text: str) -> str:
    """What a model asked to compact a transcript answers: much shorter than it (the first words of each line)."""
    lines = [line for line in user_text.splitlines() if line.strip() and not line.startswith("Conversation")]
    return "Summary: " + "; ".join(" ".join(line.split()[:SUMMARY_WORDS]) for line in lines)


def _answer_text(body: dict[str, Any], messages: list[dict[str, Any]], user_text: str, target: int | None) -> str:
    last = messages[-1]
    first = messages[0].get("content")
    if messages[0].get("role") == "system" and isinstance(first, str) and first.startswith(SUMMARISER_PROMPT):
        return _summary(user_text)
    if last.get("role") == "tool":
        prefix, subject = "Tool result: ", _content_text(last.get("content"))
    elif last.get("role") in ("system", "developer") and any(m.get("role") == "user" for m in messages):
        prefix, subject = "Noted: ", _content_text(last.get("content"))
    else:
        prefix, subject = "Echo: ", user_text
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return _with_filler(lambda b: orjson.dumps({"echo": b}).decode(), subject, target)
    return _with_filler(lambda b: prefix + b, subject, target)


def _word_limit(body: dict[str, Any], d: Directives) -> int | None:
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if d.length:
        limit = LENGTH_DIRECTIVE_WORDS if limit is None else min(limit, LENGTH_DIRECTIVE_WORDS)
    return limit


def _text_answer(answer: Answer, text: str, body: dict[str, Any], d: Directives, target: int | None) -> None:
    limit = _word_limit(body, d)
    if d.filter:
        text, answer.finish_reason = _first_words(text, 1), "content_filter"
    elif limit is not None and _word_count(text) > limit:
        text, answer.finish_reason = _first_words(text, limit), "length"
    pieces = _word_pieces(text)
    answer.content_chunks = _group(pieces, target) if target else pieces
    answer.completion_tokens += _word_count(text)


def build_answer(body: dict[str, Any], functions: list[dict[str, Any]], d: Directives, user_text: str,
                 default_chunks: int | None, *, tool_topics: bool = False) -> Answer:
    """Decides the whole answer up front, so the JSON and SSE renderings cannot disagree."""
    messages = body["messages"]
    answer = Answer(prompt_tokens=_prompt_tokens(messages), reasoning_field=d.think_field)
    if d.think:
        answer.reasoning_chunks = _word_pieces("Thinking about: " + user_text)
        answer.reasoning_tokens = _word_count("Thinking about: " + user_text)
        answer.completion_tokens = answer.reasoning_tokens
    if d.refuse:
        answer.refusal_chunks = _word_pieces(REFUSAL_TEXT)
        answer.completion_tokens += _word_count(REFUSAL_TEXT)
        return answer
    last_is_user = messages[-1].get("role") == "user"
    delegated = fake_agents.wanted_calls(body, {fn["name"] for fn in functions}, user_text)
    if delegated:  # the multi-agent beta's root model (fake_agents.py)
        answer.tool_calls = [ToolCall(f"call_{name}_{i}", name, arguments)
                             for i, (name, arguments) in enumerate(delegated)]
        answer.finish_reason = "tool_calls"
        answer.completion_tokens += sum(_word_count(f"{c.name} {c.arguments}") for c in answer.tool_calls)
        return answer
    code = (fake_code.wanted_call(body, functions, user_text)
            or fake_programs.wanted_call(body, functions, user_text)) if last_is_user else None
    names = _chosen_tools(body, functions, user_text, last_is_user, code[0] if code else None)
    if not names and not last_is_user and d.then:
        names = _then_tools(body, functions, d.then)
    topical = False
    if not names and tool_topics and last_is_user and body.get("tool_choice") in (None, "auto"):
        names = _topic_tools(functions, user_text)
        topical = bool(names)
    if names:
        answer.tool_calls = _tool_calls(names, functions, user_text)
        if code is not None:  # the code in the message is the code tool's argument
            answer.tool_calls = [ToolCall(call.id, call.name, code[1]) if call.name == code[0] else call
                                 for call in answer.tool_calls]
        if topical:
            answer.tool_calls = [_with_query(call, functions, user_text) for call in answer.tool_calls]
        if d.args is not None:
            answer.tool_calls = [ToolCall(call.id, call.name, d.args) for call in answer.tool_calls]
        answer.finish_reason = "tool_calls"
        answer.completion_tokens += sum(_word_count(f"{c.name} {c.arguments}") for c in answer.tool_calls)
        return answer
    target = d.chunks if d.chunks is not None else default_chunks
    _text_answer(answer, _answer_text(body, messages, user_text, target), body, d, target)
    if d.huge is not None:
        answer.content_chunks = ["x" * d.huge[0] + " ", *(answer.content_chunks or ())]
        answer.completion_tokens += 1
    return answer


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
    }


def _logprob_entry(token: str, top: int) -> dict[str, Any]:
    alternatives = [{"token": token, "logprob": -0.1, "bytes": list(token.encode())}]
    alternatives += [
        {"token": f"alt{k}", "logprob": -1.0 - k, "bytes": list(f"alt{k}".encode())} for k in range(1, top)
    ]
    return {"token": token, "logprob": -0.1, "bytes": list(token.encode()), "top_logprobs": alternatives[:top]}


def _logprobs(tokens: list[str], top: int, *, refusal: bool = False) -> dict[str, Any]:
    entries = [_logprob_entry(t, top) for t in tokens]
    return {"content": None, "refusal": entries} if refusal else {"content": entries, "refusal": None}


# ---------------------------------------------------------------------------------------- JSON answer


def _completion_json(answer: Answer, meta: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": answer.refusal,
                               "annotations": []}
    if answer.reasoning is not None:
        message[answer.reasoning_field] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    logprobs = None
    if body.get("logprobs"):
        top = body.get("top_logprobs") or 0
        if answer.refusal_chunks is not None:
            logprobs = _logprobs(answer.refusal_chunks, top, refusal=True)
        else:
            logprobs = _logprobs(answer.content_chunks or [], top)
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": answer.finish_reason}
    return {**meta, "choices": [choice], "usage": _usage(answer)}


# --------------------------------------------------------------------------------------------- stream


class _Cut(Exception):
    """Raised inside the stream writer when a [cut=K] directive fires."""


@dataclass
class _StreamWriter:
    """Frames chunks as SSE and applies the per-chunk failure directives (delay, stall, cut, garbage)."""

    resp: web.StreamResponse
    meta: dict[str, Any]
    d: Directives
    delay: float
    include_usage: bool
    written: int = 0
    payload: int = 0
    huge_sent: bool = False

    async def _write(self, data: bytes) -> None:
        if self.written and self.delay:
            await asyncio.sleep(self.delay)
        await self.resp.write(data)
        self.written += 1

    async def _write_in_pieces(self, data: bytes, size: int, pause: float) -> None:
        """[huge]: one event in ``size``-byte writes, each sent before the next is made."""
        if self.written and self.delay:
            await asyncio.sleep(self.delay)
        view = memoryview(data)
        for start in range(0, len(data), size):
            await self.resp.write(view[start:start + size])
            await asyncio.sleep(pause)
        self.written += 1

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk = {**self.meta, "object": "chat.completion.chunk", "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage
        return data_frame(orjson.dumps(chunk))

    async def choice(self, delta: dict[str, Any], *, finish_reason: str | None = None,
                     logprobs: dict[str, Any] | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        if self.d.huge is not None and not self.huge_sent and delta.get("content"):
            self.huge_sent = True  # the first non-empty content chunk is the huge word
            await self._write_in_pieces(self._chunk([choice]), self.d.huge[1], self.d.huge[2] / 1000)
        else:
            await self._write(self._chunk([choice]))
        if self.written == 1 and self.d.garbage:
            await self.resp.write(data_frame(b"{this is not json"))

    async def checkpoint(self) -> None:
        """Runs before each payload chunk and before the finish chunk: where stall_after and cut fire."""
        if self.d.stall_after is not None and self.payload == self.d.stall_after[0]:
            await asyncio.sleep(self.d.stall_after[1] / 1000)
        if self.d.cut is not None and self.payload >= self.d.cut:
            raise _Cut

    async def payload_chunk(self, delta: dict[str, Any], logprobs: dict[str, Any] | None = None) -> None:
        await self.checkpoint()
        await self.choice(delta, logprobs=logprobs)
        self.payload += 1

    async def usage(self, usage: dict[str, Any]) -> None:
        await self._write(self._chunk([], usage))


def _payload_deltas(answer: Answer, body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    for piece in answer.reasoning_chunks:
        yield {answer.reasoning_field: piece}, None
    want_logprobs, top = bool(body.get("logprobs")), body.get("top_logprobs") or 0
    for piece in answer.refusal_chunks or []:
        yield {"refusal": piece}, (_logprobs([piece], top, refusal=True) if want_logprobs else None)
    for piece in answer.content_chunks or []:
        yield {"content": piece}, (_logprobs([piece], top) if want_logprobs else None)
    for i, call in enumerate(answer.tool_calls):
        head = {"index": i, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield {"tool_calls": [head]}, None
        for start in range(0, len(call.arguments), TOOL_ARGUMENT_PIECE):
            piece = call.arguments[start:start + TOOL_ARGUMENT_PIECE]
            yield {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, None


def _abort(request: web.Request) -> None:
    """Closes the socket without the chunked terminator, so the client sees a truncated body."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def _stream(request: web.Request, answer: Answer, meta: dict[str, Any], body: dict[str, Any],
                  d: Directives, delay: float) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Request-Id": meta["id"]})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    if d.first_byte_delay_ms:  # headers sent, the first token still coming
        await asyncio.sleep(d.first_byte_delay_ms / 1000)
    options = body.get("stream_options") or {}
    writer = _StreamWriter(resp, meta, d, delay, bool(options.get("include_usage")))
    try:
        await writer.choice({"role": "assistant", "content": ""})
        for delta, logprobs in _payload_deltas(answer, body):
            await writer.payload_chunk(delta, logprobs)
        await writer.checkpoint()
        await writer.choice({}, finish_reason=answer.finish_reason)
        if writer.include_usage:
            await writer.usage(_usage(answer))
        await resp.write(DONE_FRAME)
        await resp.write_eof()
    except _Cut:
        _abort(request)
    except ConnectionError:
        pass  # the client went away; nothing left to tell it
    return resp


# -------------------------------------------------------------------------------------------- handlers


async def _read_json(request: web.Request) -> tuple[Any, bool]:
    raw = await request.read()
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def _parse_error() -> FakeError:
    return FakeError(400, "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                     "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
                     "was not valid JSON.)")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    body, ok = await _read_json(request)
    state.requests.append({"body": body, "path": request.path,
                           "headers": {name: request.headers.get(name) for name in RECORDED_HEADERS}})
    if not ok:
        raise _parse_error()
    body, refusal = fake_quirks.apply(body, state.quirks)
    if refusal is not None:
        return _json_response(refusal.body(), refusal.status)
    functions = validate_chat_request(body, pairing="no-pairing-check" not in state.quirks)
    if body["model"] in EMBEDDING_MODELS:  # OpenAI's answer to a chat request for an embedding model
        raise FakeError(404, "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
                        "Did you mean to use v1/completions?", param="model")
    user_text = _last_user_text(body["messages"])
    d, cleaned = parse_directives(user_text or "")
    if d.stall_ms:
        await asyncio.sleep(d.stall_ms / 1000)
    if d.stall_after_tools_ms and body["messages"][-1].get("role") == "tool":
        await asyncio.sleep(d.stall_after_tools_ms / 1000)
    if d.error is not None and d.plain_error:
        return web.Response(status=d.error, text=f"{d.error} Internal Server Error", content_type="text/plain")
    if d.error is not None:
        raise FakeError(d.error, f"fake upstream error {d.error}", code=_ERROR_CODES.get(d.error))
    if d.error_after_tools is not None and body["messages"][-1].get("role") == "tool":
        code = d.error_after_tools
        raise FakeError(code, f"fake upstream error {code}", code=_ERROR_CODES.get(code))
    if d.context is not None:
        _check_context(body, d.context)
    described = (fake_quirks.described_functions(body["messages"])
                 if "prompt-tools" in state.quirks and not functions else [])
    answer = build_answer(body, functions or described, d, cleaned, state.chunk_count, tool_topics=state.tool_topics)
    if described:
        _write_as_template(answer)
    meta = {"id": f"chatcmpl-{next(state.ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": "fp_fake",
            "service_tier": "flex" if body.get("service_tier") == "flex" else "default"}
    header_delay = d.header_delay_ms / 1000 if d.header_delay_ms is not None else state.header_delay
    if header_delay:  # the answer is known good: the "prefill" before its headers
        await asyncio.sleep(header_delay)
    if body.get("stream") is True:
        delay = d.delay_ms / 1000 if d.delay_ms is not None else state.chunk_delay
        return await _stream(request, answer, meta, body, d, delay)
    resp = _json_response(_completion_json(answer, meta, body))
    resp.headers["X-Request-Id"] = meta["id"]
    return resp


def _write_as_template(answer: Answer) -> None:
    """``prompt-tools``: the answer as text the way chatml-function-calling's template writes it, in pieces small
    enough to cut its markers (``functions.<name>:``, ``message:``) across chunks."""
    if answer.tool_calls:
        text = fake_quirks.calls_as_text([(call.name, call.arguments) for call in answer.tool_calls])
        answer.tool_calls, answer.finish_reason = [], "stop"
    elif answer.content_chunks is not None:
        text = "message:\n" + "".join(answer.content_chunks)
    else:
        return
    answer.content_chunks = [text[i:i + 5] for i in range(0, len(text), 5)]


def _check_context(body: dict[str, Any], window: int) -> None:
    """``[context=N]``: vLLM's answer to a prompt (plus the requested completion) longer than the model's context."""
    prompt = _prompt_tokens(body["messages"])
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if prompt + completion > window:
        raise FakeError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                        f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the completion). "
                        "Please reduce the length of the messages or completion.", type="BadRequestError",
                        code=400)


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake-upstream"}


async def list_models(request: web.Request) -> web.Response:
    return _json_response({"object": "list", "data": [_model_object(m) for m in (*MODELS, *EMBEDDING_MODELS)]})


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    if name not in (*MODELS, *EMBEDDING_MODELS):
        raise FakeError(404, f"The model '{name}' does not exist", param="model", code="model_not_found",
                        type="invalid_request_error")
    return _json_response(_model_object(name))


async def health(request: web.Request) -> web.Response:
    return _json_response({"status": "ok"})


async def recorded_requests(request: web.Request) -> web.Response:
    return _json_response({"data": list(request.app[_STATE].requests)})


async def clear_requests(request: web.Request) -> web.Response:
    requests = request.app[_STATE].requests
    count = len(requests)
    requests.clear()
    return _json_response({"deleted": count})


@web.middleware
async def _openai_errors(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Keeps every failure in OpenAI's error shape, including routing misses and our own bugs."""
    try:
        return await handler(request)
    except FakeError as err:
        return _error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(FakeError(exc.status, f"Invalid URL ({request.method} {request.path})"))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a fake must still answer in the documented shape
        return _error_response(FakeError(500, f"fake upstream internal error: {exc!r}"))


# ------------------------------------------------------------------------------------------ public API
