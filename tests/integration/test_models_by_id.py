"""``GET /v1/models/{id}`` through both doors, with the real ``openai`` SDK: the sidecar answers it on either door
(through Envoy too, rather than the upstream's own route, which a Chat Completions backend may not have), so a
model is found, or not found, the same way whichever door is asked."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.support.bridge import Sidecar

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


async def test_a_served_model_is_found(client: openai.AsyncOpenAI) -> None:
    model = await client.models.retrieve("fake-model")
    assert model.id == "fake-model" and model.object == "model"


@pytest.mark.parametrize("model_id", ["no-such-model", "org/no-such-model"])
async def test_an_unknown_model_is_the_sidecars_404(client: openai.AsyncOpenAI, model_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve(model_id)  # the SDK sends org%2Fno-such-model for the second
    error = caught.value
    assert error.code == "model_not_found" and error.param == "model" and error.type == "invalid_request_error"
    # the sidecar's words (the fake upstream's own route says only "does not exist"), the id whole
    assert isinstance(error.body, dict)
    assert error.body["message"] == f"The model '{model_id}' does not exist or you do not have access to it."


async def test_both_doors_answer_alike(sidecar: Sidecar, envoy_url: str) -> None:
    answers = []
    for base in (sidecar.http_url, envoy_url):
        async with aiohttp.ClientSession() as session:
            for model_id in ("fake-reasoner", "missing"):
                async with session.get(f"{base}/v1/models/{model_id}") as response:
                    answers.append((base, model_id, response.status, await response.json()))
    by_door = [[(model_id, status, body) for base, model_id, status, body in answers if base == door]
               for door in (sidecar.http_url, envoy_url)]
    assert by_door[0] == by_door[1]
    assert [status for _, status, _ in by_door[0]] == [200, 404]
