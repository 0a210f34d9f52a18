"""The fake upstream's native mode (``fake-upstream --native``): ``POST /v1/responses`` answered as a stateless
backend (vLLM, Ollama, llama.cpp) answers it, so ``responses-bridge probe`` can be tested choosing ``mode: native``.

Kept small: text answers only (``"Echo: "`` + the last user text, as the Chat Completions side answers), cut to
``max_output_tokens`` words with ``status: "incomplete"``; ``"stream": true`` sends the semantic events of one
message (``response.created`` … ``response.completed``, each with its ``sequence_number``, no ``[DONE]``). It
stores nothing, so ``previous_response_id``, ``conversation``, ``store: true`` and ``background: true`` are 400s,
and ``GET /v1/responses/{id}`` is a 404. Requests are recorded in ``/_fake/requests`` like the chat ones.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
from aiohttp import web

from . import fake_upstream as fake

_REFUSED = {
    "previous_response_id": "This server does not store responses: 'previous_response_id' cannot be used.",
    "conversation": "This server does not store conversations: 'conversation' cannot be used.",
    "store": "This server does not store responses: send 'store': false.",
    "background": "This server runs no background responses: 'background' cannot be used.",
}
_ids = itertools.count(1)


def _last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(part.get("text", "") for part in content or []
                           if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _checked(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise fake.FakeError(400, "Invalid type for request body: expected an object.", code="invalid_type")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise fake.FakeError(400, "Missing required parameter: 'model'.", param="model",
                             code="missing_required_parameter")
    if body.get("input") in (None, "", []):
        raise fake.FakeError(400, "Missing required parameter: 'input'.", param="input",
                             code="missing_required_parameter")
    for name, message in _REFUSED.items():
        if body.get(name) not in (None, False):
            raise fake.FakeError(400, message, param=name, code="unsupported_parameter")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise fake.FakeError(400, "Invalid 'max_output_tokens': expected an integer >= 1.",
                             param="max_output_tokens", code="invalid_value")
    return body


def _response(body: dict[str, Any], words: list[str], cut: bool, status: str) -> dict[str, Any]:
    text = "".join(words)
    message = {"type": "message", "id": f"msg_fake{next(_ids)}", "status": "incomplete" if cut else "completed",
               "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": [],
                                                 "logprobs": []}]}
    prompt = fake._word_count(_last_user_text(body.get("input"))) + 1
    return {
        "id": f"resp_fake{next(_ids)}", "object": "response", "created_at": int(time.time()), "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"], "output": [message] if status != "in_progress" else [],
        "parallel_tool_calls": True, "previous_response_id": None, "store": False,
        "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": body.get("top_p", 1.0), "truncation": "disabled",
        "usage": None if status == "in_progress" else {
            "input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + len(words)},
        "metadata": {}, "completed_at": None if status == "in_progress" else int(time.time()),
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_logprobs": 0, "reasoning": None,
        "max_tool_calls": None, "service_tier": "default", "safety_identifier": None, "prompt_cache_key": None,
    }


async def responses(request: web.Request) -> web.StreamResponse:
    state = request.app[fake._STATE]
    body, ok = await fake._read_json(request)
    state.requests.append({"body": body, "headers": {"authorization": request.headers.get("Authorization")}})
    if not ok:
        raise fake._parse_error()
    body = _checked(body)
    words = fake._word_pieces("Echo: " + _last_user_text(body["input"]).strip())
    limit = body.get("max_output_tokens")
    cut = limit is not None and len(words) > limit
    words = words[:limit] if cut else words
    final = _response(body, words, cut, "incomplete" if cut else "completed")
    if body.get("stream") is not True:
        return fake._json_response(final)
    return await _stream(request, final, words)


async def _stream(request: web.Request, final: dict[str, Any], words: list[str]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    sequence = itertools.count()
    message = final["output"][0]
    item_id = message["id"]
    started = dict(final, status="in_progress", output=[], usage=None, incomplete_details=None, completed_at=None)
    empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0,
         "item": dict(message, status="in_progress", content=[])},
        {"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0,
         "part": empty_part},
        *({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0, "content_index": 0,
           "delta": word, "logprobs": []} for word in words),
        {"type": "response.output_text.done", "item_id": item_id, "output_index": 0, "content_index": 0,
         "text": "".join(words), "logprobs": []},
        {"type": "response.content_part.done", "item_id": item_id, "output_index": 0, "content_index": 0,
         "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": f"response.{final['status']}", "response": final},
    ]
    for event in events:
        event["sequence_number"] = next(sequence)
        await resp.write(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
    await resp.write_eof()
    return resp


async def not_stored(request: web.Request) -> web.Response:
    raise fake.FakeError(404, f"Response with id '{request.match_info['response_id']}' not found.",
                         type="invalid_request_error", code="not_found")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/responses", responses)
    app.router.add_get("/v1/responses/{response_id}", not_stored)
    app.router.add_delete("/v1/responses/{response_id}", not_stored)
