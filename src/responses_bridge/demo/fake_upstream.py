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
   whose ``]`` would end the directive). ``[args_raw64=BASE64]`` sends the decoded text verbatim, not re-encoded
   (spacing and key order as written, e.g. ``{"city": "Rome"}`` as vLLM's parsers write arguments), so a test can
   see the bridge give the model back exactly what it wrote.
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
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import fake_quirks
from .fake_answers import Answer, _completion_json, _last_user_text, _prompt_tokens, build_answer
from .fake_checks import validate_chat_request
from .fake_directives import parse_directives
from .fake_errors import _ERROR_CODES, FakeError, _error_response, _json_response
from .fake_stream import _stream

MODELS = ("fake-model", "fake-reasoner")
EMBEDDING_MODELS = ("fake-embedding",)  # served on /v1/embeddings (fake_embeddings.py), listed after the chat models
RECORDED_REQUESTS = 50
RECORDED_HEADERS = ("authorization", "x-request-id", "traceparent", "x-tenant-id", "x-responses-bridge-sidecar")

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
