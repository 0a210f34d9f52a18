"""``GET /v1/models?client_version=...``, the Codex CLI's model-catalog request, through both doors, with one
upstream (its list passed through) and with several (the routes' merged list); no node needed.

Codex decodes the answer as its ``ModelsResponse`` (``{"models": [ModelInfo, ...]}``, openai/codex
``codex-rs/protocol/src/openai_models.rs``) and keeps the ``ETag`` with its cached catalog; the ``openai`` SDK
reads the same answer as OpenAI's list. The bridge answers both at once: OpenAI's list with ``models: []`` beside
it (adapters/http/upstream/codex_models.py says why the array is empty).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types import Model

from tests.support.envoy import have_envoy
from tests.support.upstreams import Deployment, running_deployment

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

CODEX_QUERY = {"client_version": "0.169.0"}


async def _get(base: str, params: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str | None]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/v1/models", params=params) as response:
        return response.status, await response.json(), response.headers.get("ETag")


def _check_codex_answer(body: dict[str, Any], etag: str | None, plain: dict[str, Any]) -> None:
    assert body["models"] == []
    # the same OpenAI list the SDK gets without the parameter, every entry an openai.types.Model
    assert {k: v for k, v in body.items() if k != "models"} == plain
    assert body["object"] == "list" and body["data"]
    for model in body["data"]:
        Model.model_validate(model)
    assert etag is not None and etag.startswith('"') and etag.endswith('"') and len(etag) > 2


async def test_codex_gets_its_models_array_beside_the_openai_list(base_url: str) -> None:
    status, plain, plain_etag = await _get(base_url)
    assert status == 200 and "models" not in plain and plain_etag is None  # the OpenAI answer as before
    status, body, etag = await _get(base_url, CODEX_QUERY)
    assert status == 200, body
    _check_codex_answer(body, etag, plain)
    # the ETag follows the list, not the asking version: the same list, the same tag
    _, _, again = await _get(base_url, {"client_version": "0.170.0"})
    assert again == etag


async def test_the_sdk_reads_the_codex_answer_as_its_list(client: openai.AsyncOpenAI) -> None:
    listed = [model.id async for model in client.models.list(extra_query=CODEX_QUERY)]
    assert listed == [model.id async for model in client.models.list()]
    assert "fake-model" in listed


# --- several upstreams: the routes' merged list ----------------------------------------------------------------


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    async with running_deployment(str(tmp_path_factory.mktemp("codex-upstreams"))) as started:
        yield started


@pytest.mark.parametrize("through", ["http", "envoy"])
async def test_codex_gets_the_merged_list_with_its_models_array(deployment: Deployment, through: str) -> None:
    base = deployment.envoy_url if through == "envoy" else deployment.http_url
    _, plain, _ = await _get(base)
    status, body, etag = await _get(base, CODEX_QUERY)
    assert status == 200, body
    _check_codex_answer(body, etag, plain)
    assert [model["id"] for model in body["data"]] == ["beta", "fake-model", "fake-reasoner", "fake-embedding",
                                                       "tokenlearn-static-model"]
