"""Inputs that once gave a 5xx, a non-OpenAI-shaped error or a 200 where OpenAI answers 400, through both doors.

Every answer here must be ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status, and both doors
must give the same status and code.
"""

from __future__ import annotations

import gzip
import json
import zlib

import aiohttp
import pytest
from yarl import URL

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
ERROR_KEYS = {"message", "type", "param", "code"}


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    return body["error"]


def nested(depth: int) -> dict:
    """A valid JSON schema nested ``depth`` objects deep."""
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


@pytest.mark.parametrize("variables", [[["a"]], [{"a": 1}], ["ok", 3]])
async def test_prompt_variables_of_the_wrong_kind(http: aiohttp.ClientSession, variables: list) -> None:
    async with http.post("/v1/prompts", json={"instructions": "x {{a}}", "variables": variables}) as r:
        error = await error_of(r, 400)
    assert error["param"].startswith("variables[")


@pytest.mark.parametrize("where", ["tool", "text_format", "function_call_arguments"])
async def test_deeply_nested_json_is_a_400(http: aiohttp.ClientSession, where: str) -> None:
    body: dict = {"model": MODEL, "input": "hi"}
    if where == "tool":
        body["tools"] = [{"type": "function", "name": "f", "parameters": nested(130)}]
    elif where == "text_format":
        body["text"] = {"format": {"type": "json_schema", "name": "s", "schema": nested(130)}}
    else:
        body["input"] = [{"type": "function_call", "call_id": "c", "name": "f", "arguments": nested(130)}]
    async with http.post("/v1/responses", json=body) as r:
        error = await error_of(r, 400)
    assert error["code"] == "nesting_too_deep"


async def test_nesting_real_schemas_use_is_accepted(http: aiohttp.ClientSession) -> None:
    tools = [{"type": "function", "name": "f", "parameters": nested(40)}]
    async with http.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": tools}) as r:
        assert r.status == 200, await r.text()


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", b'{"model": "fake-model", "input": "hi"}'),  # claims gzip, is not
    ("gzip", gzip.compress(b'{"model": "fake-model", "input": "hi"}', mtime=0)),
    ("deflate", b'{"model": "fake-model", "input": "hi"}'),
    ("deflate", zlib.compress(b'{"model": "fake-model", "input": "hi"}')),
    ("br", b'{"model": "fake-model", "input": "hi"}'),
])
async def test_compressed_bodies_are_refused_alike(http: aiohttp.ClientSession, encoding: str, body: bytes) -> None:
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    async with http.post("/v1/responses", data=body, headers=headers) as r:
        assert (await error_of(r, 415))["code"] == "unsupported_content_encoding"
    async with http.post("/v1/prompts", data=b'{"instructions": "x"}', headers=headers) as r:
        assert (await error_of(r, 415))["code"] == "unsupported_content_encoding"


async def test_identity_encoding_is_plain(http: aiohttp.ClientSession) -> None:
    headers = {"Content-Encoding": "identity", "Content-Type": "application/json"}
    async with http.post("/v1/responses", data=b'{"model": "fake-model", "input": "hi"}', headers=headers) as r:
        assert r.status == 200, await r.text()


@pytest.mark.parametrize("case", ["long_url", "large_header", "many_headers"])
async def test_oversized_request_heads(base_url: str, case: str) -> None:
    path, headers = "/v1/responses/resp_x", {}
    if case == "long_url":
        path += "?q=" + "a" * 70_000
    elif case == "large_header":
        headers["X-Big"] = "a" * 65536
    else:
        headers.update({f"X-H{index}": "v" for index in range(500)})
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
                session.get(URL(base_url + path, encoded=True), headers=headers) as r):
        error = await error_of(r, 431)
    assert error["code"] == "request_header_fields_too_large"


async def test_nul_in_the_path_is_the_same_400(base_url: str) -> None:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
                session.get(URL(base_url + "/v1/responses/resp_%00abc", encoded=True)) as r):
        assert (await error_of(r, 400))["code"] == "invalid_path"


@pytest.mark.parametrize(("field", "value", "param"), [
    ("tool_choice", {"type": "banana"}, "tool_choice.type"),
    ("include", ["banana"], "include[0]"),
    ("include", ["reasoning.encrypted_content", "banana"], "include[1]"),
    ("model", "fake\u0000model", "model"),
])
async def test_values_openai_refuses(http: aiohttp.ClientSession, field: str, value: object, param: str) -> None:
    async with http.post("/v1/responses", json={"model": MODEL, "input": "hi", field: value}) as r:
        error = await error_of(r, 400)
    assert error["param"] == param


@pytest.mark.parametrize("choice", [
    {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f"}]},
    {"type": "custom", "name": "f"}, {"type": "mcp", "server_label": "s"}, {"type": "shell"},
    {"type": "apply_patch"}, {"type": "programmatic_tool_calling"}, {"type": "file_search"},
    {"type": "web_search_preview"}, {"type": "web_search_preview_2025_03_11"}, {"type": "computer_use_preview"},
    {"type": "computer"}, {"type": "computer_use"}, {"type": "image_generation"}, {"type": "code_interpreter"},
])
async def test_every_tool_choice_the_sdk_sends_is_accepted(http: aiohttp.ClientSession, choice: dict) -> None:
    async with http.post("/v1/responses", json={"model": MODEL, "input": "hi", "tool_choice": choice}) as r:
        assert r.status == 200, await r.text()


async def test_every_include_the_sdk_sends_is_accepted(http: aiohttp.ClientSession) -> None:
    from typing import get_args

    from openai.types.responses import ResponseIncludable

    include = list(get_args(ResponseIncludable))
    async with http.post("/v1/responses", json={"model": MODEL, "input": "hi", "include": include}) as r:
        assert r.status == 200, await r.text()


async def test_function_call_output_must_answer_a_call(http: aiohttp.ClientSession) -> None:
    orphan = [{"type": "function_call_output", "call_id": "call_nobody", "output": "42"}]
    async with http.post("/v1/responses", json={"model": MODEL, "input": orphan}) as r:
        error = await error_of(r, 400)
    assert error["param"] == "input[0].call_id" and "call_nobody" in error["message"]
    # the call in the same input, in the chain, or in the conversation makes it valid
    paired = [{"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
              {"type": "function_call_output", "call_id": "call_1", "output": "42"}]
    async with http.post("/v1/responses", json={"model": MODEL, "input": paired}) as r:
        assert r.status == 200, await r.text()
    async with http.post("/v1/responses", json={"model": MODEL, "input": "call get_time",
                                                "tools": [{"type": "function", "name": "get_time"}]}) as r:
        first = await r.json()
    call = next(item for item in first["output"] if item["type"] == "function_call")
    answer = [{"type": "function_call_output", "call_id": call["call_id"], "output": "noon"}]
    async with http.post("/v1/responses", json={"model": MODEL, "input": answer,
                                                "previous_response_id": first["id"]}) as r:
        assert r.status == 200, await r.text()
    async with http.post("/v1/conversations", json={"items": paired[:1]}) as r:
        conversation = (await r.json())["id"]
    async with http.post("/v1/responses", json={"model": MODEL, "input": paired[1:],
                                                "conversation": conversation}) as r:
        assert r.status == 200, await r.text()


async def test_websocket_failed_continuation_evicts_the_cache(base_url: str) -> None:
    """The Open Responses compliance case: a continuation refused for an unmatched call_id forgets the response
    it continued, so continuing it again is ``previous_response_not_found``."""
    async with aiohttp.ClientSession(base_url=base_url) as session, session.ws_connect("/v1/responses") as ws:
        async def turn(**fields: object) -> dict:
            await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "store": False, **fields}))
            while True:
                event = json.loads((await ws.receive(timeout=30)).data)
                if event["type"] in ("response.completed", "response.failed", "error"):
                    return event

        first = await turn(input="Remember the code word: ember. Reply with OK.")
        assert first["type"] == "response.completed"
        first_id = first["response"]["id"]
        failed = await turn(previous_response_id=first_id,
                            input=[{"type": "function_call_output", "call_id": "call_missing", "output": "x"}])
        assert failed["type"] == "error" and failed["status"] == 400
        again = await turn(previous_response_id=first_id, input="What was the code word?")
        assert again["type"] == "error"
        assert again["error"]["code"] == "previous_response_not_found"


async def test_deep_nesting_over_websocket(base_url: str) -> None:
    async with aiohttp.ClientSession(base_url=base_url) as session, session.ws_connect("/v1/responses") as ws:
        tools = [{"type": "function", "name": "f", "parameters": nested(300)}]
        await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "x", "tools": tools}))
        event = json.loads((await ws.receive(timeout=30)).data)
    assert event["type"] == "error" and event["status"] == 400
    assert event["error"]["code"] == "nesting_too_deep"


async def test_long_url_with_a_body_is_read(http: aiohttp.ClientSession) -> None:
    """A head under both doors' limits (Envoy's 60 KB) but over aiohttp's default line limit (8190): the sidecar
    reads it, so through Envoy a body still being sent is not cut into a 503."""
    async with http.post("/v1/prompts?q=" + "a" * 9000, json={"instructions": "x", "metadata": ["m" * 1_000_000]}) as r:
        assert (await error_of(r, 400))["param"] == "metadata"


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"GET /v1/responses/x HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"])
async def test_malformed_http_gets_an_openai_error(base_url: str, raw: bytes) -> None:
    import asyncio

    host, port = URL(base_url).host, URL(base_url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), 30)  # the server closes the connection after it
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer
    error = json.loads(body)["error"]
    assert set(error) == ERROR_KEYS and error["code"] == "invalid_http_request"
