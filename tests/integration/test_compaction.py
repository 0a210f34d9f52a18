"""Compaction (``POST /v1/responses/compact``) and input token counting through both doors."""

from __future__ import annotations

import base64

import aiohttp
import openai
import pytest
from aiohttp import web

from responses_bridge.demo.procs import free_port, wait_http
from responses_bridge.engine.responses.compaction import SUMMARY_PREFIX
from tests.support.bridge import UpstreamLog, start_sidecar

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"

CONVERSATION = [
    {"role": "user", "content": "my name is Zed and I like plums"},
    {"role": "assistant", "content": "Nice to meet you, Zed."},
    {"role": "user", "content": "what fruit do I like?"},
]


def user_texts(body: dict) -> list[str]:
    texts = []
    for message in body["messages"]:
        content = message["content"]
        texts.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content))
    return texts


async def test_compact_shape(client: openai.AsyncOpenAI) -> None:
    compacted = await client.responses.compact(model=MODEL, input=CONVERSATION)
    assert compacted.object == "response.compaction"
    assert compacted.id and compacted.created_at > 0
    assert compacted.usage.total_tokens > 0
    kinds = [item.type for item in compacted.output]
    assert kinds == ["message", "compaction"]
    kept = compacted.output[0]
    assert kept.role == "user" and kept.content[0].text == "what fruit do I like?"
    blob = compacted.output[1].encrypted_content
    assert blob.startswith("rb1.")
    # base64 text is letters and digits, so a short word like "Zed" turns up in ciphertext by chance (~1 run in
    # 1,000); the sealed bytes are checked for the summary's words instead, which chance does not write
    sealed = base64.urlsafe_b64decode(blob.removeprefix("rb1."))
    assert b"my name is Zed" not in sealed and b"Nice to meet you" not in sealed  # the summary's first words


async def test_compaction_item_restores_the_summary(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    compacted = await client.responses.compact(model=MODEL, input=CONVERSATION)
    summary_call = await upstream_log.last_body()
    assert "my name is Zed" in user_texts(summary_call)[-1]  # the summariser saw the older turns
    items = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
    response = await client.responses.create(model=MODEL, input=[*items, {"role": "user", "content": "and now?"}])
    assert response.status == "completed"
    sent = user_texts(await upstream_log.last_body())
    assert sent[0] == "what fruit do I like?"
    assert sent[1].startswith(SUMMARY_PREFIX) and "Zed" in sent[1]
    assert sent[-1] == "and now?"
    # the stored input keeps the compaction item itself, not the plaintext summary
    listed = await client.responses.input_items.list(response.id, order="asc")
    assert [item.type for item in listed.data] == ["message", "compaction", "message"]


async def test_compact_from_previous_response(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    first = await client.responses.create(model=MODEL, input="remember the number 4711")
    compacted = await client.responses.compact(model=MODEL, previous_response_id=first.id, input="next question")
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    assert compacted.output[0].content[0].text == "next question"
    assert "4711" in user_texts(await upstream_log.last_body())[-1]


async def test_tampered_compaction_is_400(client: openai.AsyncOpenAI) -> None:
    compacted = await client.responses.compact(model=MODEL, input=CONVERSATION)
    blob = compacted.output[1].encrypted_content
    tampered = blob[:-6] + ("A" if blob[-6] != "A" else "B") + blob[-5:]
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model=MODEL, input=[
            {"type": "compaction", "id": "cmp_1", "encrypted_content": tampered},
            {"role": "user", "content": "hi"}])
    assert info.value.body["param"] == "input[0].encrypted_content"
    assert info.value.body["code"] == "invalid_encrypted_content"


async def test_compact_errors(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/responses/compact", json={"input": "x"}) as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["param"] == "model"
    async with http.post("/v1/responses/compact", json={"model": MODEL}) as answer:
        assert answer.status == 400
    async with http.post("/v1/responses/compact", json={"model": MODEL, "previous_response_id": "resp_nope"}) \
            as answer:
        assert answer.status == 404
        assert (await answer.json())["error"]["code"] == "previous_response_not_found"
    async with http.post("/responses/compact", json={"model": MODEL, "input": "unprefixed"}) as answer:
        assert answer.status == 200


async def test_input_tokens(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    counted = await client.responses.input_tokens.count(model=MODEL, input="hello world")
    assert counted.object == "response.input_tokens"
    assert 5 < counted.input_tokens < 20
    async with http.post("/v1/responses/input_tokens",
                         json={"model": MODEL, "input": "hello world " * 100, "instructions": "be brief"}) as answer:
        assert answer.status == 200
        body = await answer.json()
    assert body["method"] == "tiktoken"  # the fake upstream has no /tokenize
    assert body["input_tokens"] > 200
    async with http.post("/v1/responses/input_tokens", json={"input": "no model is fine"}) as answer:
        assert answer.status == 200
    async with http.post("/v1/responses/input_tokens", json={"model": MODEL, "input": 5}) as answer:
        assert answer.status == 400


async def test_input_tokens_counts_history(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model=MODEL, input="one two three four five six seven eight nine ten")
    alone = await client.responses.input_tokens.count(model=MODEL, input="next")
    chained = await client.responses.input_tokens.count(model=MODEL, input="next", previous_response_id=first.id)
    assert chained.input_tokens > alone.input_tokens + 15


async def test_input_tokens_uses_the_upstream_tokenizer(tmp_path, fake_upstream: str) -> None:
    """A vLLM-like upstream with ``POST /tokenize`` at its root: its count wins."""
    seen: list[dict] = []

    async def tokenize(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"count": 1234, "max_model_len": 8192, "tokens": []})

    app = web.Application()
    app.router.add_post("/tokenize", tokenize)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    process, http_port, _ = start_sidecar(str(tmp_path), f"http://127.0.0.1:{port}/v1", extproc=False)
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
        url = f"http://127.0.0.1:{http_port}/v1/responses/input_tokens"
        async with aiohttp.ClientSession() as session, \
                session.post(url, json={"model": "m", "input": "hi", "instructions": "sys"}) as answer:
            body = await answer.json()
        assert body == {"object": "response.input_tokens", "input_tokens": 1234, "method": "upstream_tokenizer"}
        assert seen[0]["model"] == "m"
        assert seen[0]["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    finally:
        process.stop()
        await runner.cleanup()
