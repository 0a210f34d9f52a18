"""``POST /v1/embeddings`` for an upstream's embedding model, and ``GET /v1/models`` listing the local embedder
beside the upstream's models, through both doors of the stack as deployed (the sidecar's own calls through Envoy's
listener, ``--upstream-via``; tests/support/gateway.py), with the real ``openai`` SDK.

The fake upstream lists ``fake-embedding`` and embeds with it (demo/fake_embeddings.py): a client asking the
bridge for it gets the upstream's own vectors and usage; an upstream's refusal keeps its status and comes in
OpenAI's shape. Through Envoy the request reaches the sidecar's door once, and the sidecar's own call goes to the
upstream (never back to the sidecar)."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from responses_bridge.demo.fake_embeddings import embed
from responses_bridge.envoy_config import ROUTE_HEADER
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

# embeddings and the model list are never stored: the sidecar keeps its own SQLite file, and the PostgreSQL pass of
# scripts/test leaves the module out
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

UPSTREAM_MODEL = "fake-embedding"
LOCAL_MODEL = "tokenlearn-static-model"
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("upstream-embeddings")), fake_upstream,
                               own_sqlite=True) as started:
        yield started


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/embeddings", json=body,
                                                                headers=headers) as response:
        return response.status, await response.json()


async def test_an_upstream_embedding_model_is_passed_through(client: openai.AsyncOpenAI) -> None:
    answer = await client.embeddings.create(model=UPSTREAM_MODEL, input=["alpha beta", "gamma"], dimensions=12,
                                            encoding_format="float")
    assert answer.model == UPSTREAM_MODEL
    assert [item.embedding for item in answer.data] == [embed("alpha beta", 12), embed("gamma", 12)]
    assert answer.usage.prompt_tokens == 3  # the upstream's own count (words), not the bridge's
    default = await client.embeddings.create(model=UPSTREAM_MODEL, input="alpha beta")  # the SDK asks for base64
    assert default.data[0].embedding == embed("alpha beta")


async def test_base64_comes_as_the_upstream_sent_it(base_url: str) -> None:
    status, body = await _post(base_url, {"model": UPSTREAM_MODEL, "input": "x", "encoding_format": "base64"})
    assert status == 200
    assert list(struct.unpack("<64f", base64.b64decode(body["data"][0]["embedding"]))) == embed("x")


async def test_the_upstreams_refusals_keep_their_status_in_openais_shape(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:  # a model the upstream does not have
        await client.embeddings.create(model="nomic-embed-text", input="x")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert "nomic-embed-text" in missing.value.message
    with pytest.raises(openai.BadRequestError) as chat_model:  # a chat model is no embedding model
        await client.embeddings.create(model="fake-model", input="x")
    assert chat_model.value.param == "model" and UPSTREAM_MODEL in chat_model.value.message
    with pytest.raises(openai.BadRequestError) as bad:  # the upstream's own checks
        await client.embeddings.create(model=UPSTREAM_MODEL, input="x", dimensions=5000)
    assert bad.value.param == "dimensions"
    assert set(bad.value.body) == ERROR_KEYS  # type: ignore[arg-type]


async def test_the_local_embedder_is_still_the_sidecars(client: openai.AsyncOpenAI) -> None:
    answer = await client.embeddings.create(model=LOCAL_MODEL, input="hello", encoding_format="float")
    assert answer.model == LOCAL_MODEL and len(answer.data[0].embedding) == 64


async def test_models_lists_the_local_embedder_beside_the_upstreams(client: openai.AsyncOpenAI) -> None:
    listed = [model async for model in client.models.list()]
    assert [model.id for model in listed] == ["fake-model", "fake-reasoner", UPSTREAM_MODEL, LOCAL_MODEL]
    assert listed[-1].owned_by == "responses-bridge" and listed[0].owned_by == "fake-upstream"
    one = await client.models.retrieve(LOCAL_MODEL)
    assert one.id == LOCAL_MODEL and one.owned_by == "responses-bridge"
    assert (await client.models.retrieve(UPSTREAM_MODEL)).id == UPSTREAM_MODEL


async def test_through_envoy_the_sidecar_is_asked_once(gateway: Gateway) -> None:
    """Envoy sends the client's request to the sidecar's door; the door's own call (through the same listener)
    goes to the upstream, not round again."""
    before = await gateway.sidecar_requests()
    status, body = await _post(gateway.url, {"model": UPSTREAM_MODEL, "input": "once"})
    assert status == 200 and body["data"][0]["embedding"] == embed("once")
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.url}/v1/models") as response:
        assert response.status == 200
    assert await gateway.sidecar_requests() == before + 2


async def test_a_call_that_comes_back_is_refused_not_repeated(gateway: Gateway) -> None:
    """What an Envoy bootstrap rendered before the embeddings route would do: send the sidecar's own call (marked
    with ROUTE_HEADER) back to the sidecar. It answers 508 at once instead of calling again."""
    status, body = await _post(gateway.sidecar.http_url, {"model": UPSTREAM_MODEL, "input": "x"},
                               {ROUTE_HEADER: "default"})
    assert status == 508 and body["error"]["code"] == "upstream_loop"
    assert "envoy-config" in body["error"]["message"]
