"""The fake upstream's native mode: ``POST /v1/responses`` answered the way a stateless backend answers it.

vLLM, Ollama and llama.cpp serve the Responses API themselves now, but keep nothing: no stored responses, no
``previous_response_id``, no conversations, no background runs, no server-side tools. This mode copies that
(``fake-upstream --native``), so the bridge's native routes are tested against what such a backend really does:

* ``POST /v1/responses``: a ``response`` object (JSON), or with ``"stream": true`` the semantic events
  (``response.created``, ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta`` …, ``response.function_call_arguments.delta`` …, ``response.completed``), each with
  its ``sequence_number``, no ``[DONE]``. Output: reasoning (``[think]``), text or function calls, scripted by the
  same directives as the Chat Completions answers (the last user message), and ``usage`` in the Responses shape;
  ``[error=N]`` answers with that status, ``[cut=K]`` drops the connection after K events.
* It stores nothing, so it refuses what needs storage, with a 400 error body: ``previous_response_id``,
  ``conversation``, ``store: true``, ``background: true``; ``GET``/``DELETE /v1/responses/{id}`` are 404s. Tools
  other than ``function`` (``web_search``, ``mcp``, …) are refused: it runs no server-side tool.
* Every response gets a fresh ``resp_…`` id of this process: a chain that relied on it would break on another
  replica, which is why the bridge puts ids of its own in front.

Requests are recorded in ``/_fake/requests`` like the Chat Completions ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from .fake_answers import Answer, _last_user_text, build_answer
from .fake_checks import validate_chat_request
from .fake_directives import parse_directives
from .fake_errors import FakeError, _invalid_type, _invalid_value, _json_response, _missing
from .fake_stream import _abort, _Cut
from .fake_upstream import _STATE, RECORDED_HEADERS, _parse_error

REFUSED_FIELDS = {
    "previous_response_id": "This server does not store responses: 'previous_response_id' cannot be used.",
    "conversation": "This server does not store conversations: 'conversation' cannot be used.",
}


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The Responses request as the Chat Completions body the fake's answer builder reads (and validates)."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise FakeError(400, "Missing required parameter: 'input'.", param="input",
                             code="missing_required_parameter")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _invalid_type(f"input[{index}]", "an object", item)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _invalid_value(f"input[{index}].role", f"Invalid value: {role!r}.")
            messages.append({"role": role, "content": _message_text(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else _message_text(output)})
        elif kind == "reasoning":
            continue
        else:
            raise _invalid_value(f"input[{index}].type", f"Invalid value: {kind!r}.")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = body.get("tools")
    if tools:
        chat["tools"] = [_chat_tool(tool, i) for i, tool in enumerate(tools)]
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "function":
            choice = {"type": "function", "function": {"name": choice.get("name")}}
        if choice is not None:
            chat["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    return chat


def _chat_tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise FakeError(400, f"Tool type {kind!r} is not supported by this server.", param=f"tools[{index}].type",
                             code="unsupported_value")
    function = {"name": tool.get("name"), "parameters": tool.get("parameters") or {}}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _check_stateless(body: dict[str, Any]) -> None:
    for key, message in REFUSED_FIELDS.items():
        if body.get(key) is not None:
            raise FakeError(400, message, param=key, code="unsupported_parameter")
    if body.get("store") is True:
        raise FakeError(400, "This server does not store responses: send 'store': false.", param="store",
                             code="unsupported_parameter")
    if body.get("background") is True:
        raise FakeError(400, "Background responses are not supported by this server.", param="background",
                             code="unsupported_parameter")
    if body.get("stream") not in (None, True, False):
        raise _invalid_type("stream", "a boolean", body["stream"])


class _Ids:
    def __init__(self, state: Any) -> None:
        self._state = state

    def __call__(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._state.ids):08d}"


def _output(answer: Answer, new_id: _Ids) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if answer.reasoning is not None:
        items.append({"type": "reasoning", "id": new_id("rs"), "summary": [],
                      "content": [{"type": "reasoning_text", "text": answer.reasoning}], "status": "completed"})
    for call in answer.tool_calls:
        items.append({"type": "function_call", "id": new_id("fc"), "call_id": call.id, "name": call.name,
                      "arguments": call.arguments, "status": "completed"})
    if not answer.tool_calls:
        text = answer.content if answer.content is not None else (answer.refusal or "")
        part = ({"type": "refusal", "refusal": text} if answer.refusal is not None
                else {"type": "output_text", "text": text, "annotations": [], "logprobs": []})
        items.append({"type": "message", "id": new_id("msg"), "status": "completed", "role": "assistant",
                      "content": [part]})
    return items


def _usage(answer: Answer) -> dict[str, Any]:
    return {"input_tokens": answer.prompt_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": answer.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def _response(body: dict[str, Any], response_id: str, status: str) -> dict[str, Any]:
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
        "completed_at": None, "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": body["model"], "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "previous_response_id": None,
        "reasoning": body.get("reasoning"), "store": False, "background": False,
        "temperature": body.get("temperature", 1.0), "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation") or "disabled", "usage": None,
        "metadata": body.get("metadata") or {}, "service_tier": "default",
        # the rest of a complete Response object, as vLLM's and OpenAI's carry them
        "presence_penalty": body.get("presence_penalty", 0.0), "frequency_penalty": body.get("frequency_penalty", 0.0),
        "top_logprobs": body.get("top_logprobs", 0), "max_tool_calls": body.get("max_tool_calls"),
        "safety_identifier": body.get("safety_identifier"), "prompt_cache_key": body.get("prompt_cache_key"),
    }


async def create_response(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        state.requests.append({"body": raw.decode("utf-8", "replace"), "path": request.path, "headers": {}})
        raise _parse_error() from None
    state.requests.append({"body": body, "path": request.path,
                           "headers": {name: request.headers.get(name) for name in RECORDED_HEADERS}})
    if not isinstance(body, dict):
        raise FakeError(400, "The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _missing("model")
    _check_stateless(body)
    chat = to_chat(body)
    functions = validate_chat_request(chat)
    user_text = _last_user_text(chat["messages"])
    directives, cleaned = parse_directives(user_text or "")
    if directives.error is not None:
        raise FakeError(directives.error, f"fake upstream error {directives.error}")
    answer = build_answer(chat, functions, directives, cleaned, state.chunk_count)
    new_id = _Ids(state)
    response = _response(body, new_id("resp"), "in_progress")
    if body.get("stream") is True:
        delay = directives.delay_ms / 1000 if directives.delay_ms is not None else state.chunk_delay
        return await _stream(request, response, answer, new_id, delay, directives.cut)
    response.update(output=_output(answer, new_id), usage=_usage(answer), **_ending(answer))
    return _json_response(response)


def _ending(answer: Answer) -> dict[str, Any]:
    """How the response ended: cut by ``max_output_tokens`` (the chat answer's ``length``) is ``incomplete``."""
    if answer.finish_reason == "length":
        return {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    return {"status": "completed", "completed_at": int(time.time())}


async def _stream(request: web.Request, response: dict[str, Any], answer: Answer, new_id: _Ids,
                  delay: float, cut: int | None = None) -> web.StreamResponse:
    """The events of ``answer``; ``cut`` (``[cut=K]``): the connection drops after K events, mid-stream."""
    stream = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    try:
        await _events(stream, response, answer, new_id, delay, cut)
    except _Cut:
        _abort(request)
        return stream
    await stream.write_eof()
    return stream


async def _events(stream: web.StreamResponse, response: dict[str, Any], answer: Answer, new_id: _Ids,
                  delay: float, cut: int | None) -> None:
    sequence = 0

    async def send(kind: str, **fields: Any) -> None:
        nonlocal sequence
        if cut is not None and sequence >= cut:
            raise _Cut
        event = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        await stream.write(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")

    async def pause() -> None:
        if delay:
            await asyncio.sleep(delay)

    await send("response.created", response=response)
    await send("response.in_progress", response=response)
    items = _output(answer, new_id)
    for index, item in enumerate(items):
        if item["type"] == "reasoning":
            await send("response.output_item.added", output_index=index, item={**item, "content": [],
                                                                                "status": "in_progress"})
            for piece in answer.reasoning_chunks:
                await send("response.reasoning_text.delta", item_id=item["id"], output_index=index, content_index=0,
                           delta=piece)
                await pause()
            await send("response.reasoning_text.done", item_id=item["id"], output_index=index, content_index=0,
                       text=answer.reasoning)
        elif item["type"] == "function_call":
            await send("response.output_item.added", output_index=index,
                       item={**item, "arguments": "", "status": "in_progress"})
            arguments = item["arguments"]
            for start in range(0, len(arguments), 8):
                await send("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                           delta=arguments[start:start + 8])
                await pause()
            await send("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                       arguments=arguments, name=item["name"])
        else:
            part = item["content"][0]
            await send("response.output_item.added", output_index=index,
                       item={**item, "content": [], "status": "in_progress"})
            empty = {**part, "text": ""} if part["type"] == "output_text" else {**part, "refusal": ""}
            await send("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                       part=empty)
            kind = "output_text" if part["type"] == "output_text" else "refusal"
            for piece in (answer.content_chunks if kind == "output_text" else answer.refusal_chunks) or []:
                extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
                await send(f"response.{kind}.delta", item_id=item["id"], output_index=index, content_index=0,
                           delta=piece, **extra)
                await pause()
            done = {"text": part["text"], "logprobs": []} if kind == "output_text" else {"refusal": part["refusal"]}
            await send(f"response.{kind}.done", item_id=item["id"], output_index=index, content_index=0, **done)
            await send("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                       part=part)
        await send("response.output_item.done", output_index=index, item=item)
    response.update(output=items, usage=_usage(answer), **_ending(answer))
    await send(f"response.{response['status']}", response=response)


async def stored_response(request: web.Request) -> web.Response:
    """A stateless server has nothing to give back."""
    response_id = request.match_info["response_id"]
    raise FakeError(404, f"Response with id '{response_id}' not found.", param="response_id",
                         code="not_found", type="invalid_request_error")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", stored_response)
    app.router.add_delete("/v1/responses/{response_id}", stored_response)
