"""Nothing a client sends is accepted and then lost, through both doors and the real ``openai`` SDK:

* ``prompt_cache_retention`` / ``prompt_cache_options`` come back on the Response; the default (generic) profile
  keeps them from an upstream that does not know them, and ``openai_fields`` forwards them with ``moderation``;
* ``moderation`` is a 400 where the upstream cannot moderate;
* ``local_shell`` and ``computer_use_preview`` are client tools: ``local_shell_call`` / ``computer_call`` out,
  their ``*_output`` back in;
* hosted tools the deployment cannot run (``image_generation``, ``web_search`` without a search provider) follow
  ``RESPONSES_BRIDGE_UNSUPPORTED_TOOLS``: left out of what the model is offered and counted under ``drop`` (the
  default), refused with a 400 under ``reject``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODERATION: Any = {"model": "omni-moderation-latest", "policy": {"input": {"mode": "block"}}}
CACHE_OPTIONS: Any = {"mode": "explicit", "ttl": "12h"}
COMPUTER: Any = {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "linux"}
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAAB"
       "JRU5ErkJggg==")
UNRUNNABLE: list[Any] = [
    {"type": "image_generation"},
    {"type": "web_search"},
]


async def test_cache_fields_are_echoed_and_kept_from_a_generic_upstream(client: openai.AsyncOpenAI,
                                                                       upstream_log: UpstreamLog) -> None:
    response = await client.responses.create(model="fake-model", input="hello", prompt_cache_retention="24h",
                                             extra_body={"prompt_cache_options": CACHE_OPTIONS})
    assert response.status == "completed"
    assert response.prompt_cache_retention == "24h"
    assert response.prompt_cache_options is not None
    assert (response.prompt_cache_options.mode, response.prompt_cache_options.ttl) == ("explicit", "12h")
    body = await upstream_log.last_body()
    assert "prompt_cache_retention" not in body and "prompt_cache_options" not in body


async def test_moderation_is_refused_where_the_upstream_cannot_moderate(client: openai.AsyncOpenAI,
                                                                       upstream_log: UpstreamLog) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        await client.responses.create(model="fake-model", input="hello", extra_body={"moderation": MODERATION})
    assert error.value.param == "moderation" and error.value.code == "unsupported_parameter"
    assert await upstream_log.entries() == []


@pytest.mark.parametrize("tool", UNRUNNABLE, ids=lambda tool: tool["type"])
async def test_an_unrunnable_tool_is_dropped_as_the_setting_says(client: openai.AsyncOpenAI, upstream_log: UpstreamLog,
                                                                 sidecar: Sidecar,
                                                                 tool: dict[str, Any]) -> None:
    response = await client.responses.create(model="fake-model", input="hello", tools=[tool])
    assert response.status == "completed"
    assert [echoed.type for echoed in response.tools] == [tool["type"]]
    assert "tools" not in await upstream_log.last_body()
    async with aiohttp.ClientSession() as session, session.get(f"{sidecar.http_url}/metrics") as metrics:
        text = await metrics.text()
    assert f'responses_bridge_unsupported_tools_dropped_total{{tool_type="{tool["type"]}"}}' in text


async def test_local_shell_round_trip(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    first = await client.responses.create(model="fake-model", input="Please call local_shell /srv",
                                          tools=[{"type": "local_shell"}])
    call = next(item for item in first.output if item.type == "local_shell_call")
    assert call.action.type == "exec" and call.action.working_directory == "/srv" and call.status == "completed"
    second = await client.responses.create(
        model="fake-model", previous_response_id=first.id, tools=[{"type": "local_shell"}],
        input=[{"type": "local_shell_call_output", "id": call.call_id, "output": "a.txt b.txt"}])
    assert second.status == "completed"
    messages = (await upstream_log.last_body())["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "a.txt b.txt"}


async def test_computer_use_round_trip(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    first = await client.responses.create(model="fake-model", input="Please call computer now", tools=[COMPUTER])
    call = next(item for item in first.output if item.type == "computer_call")
    assert call.status == "completed" and call.action is not None and call.action.type == "click"
    second = await client.responses.create(
        model="fake-model", previous_response_id=first.id, tools=[COMPUTER],
        input=[{"type": "computer_call_output", "call_id": call.call_id,
                "output": {"type": "computer_screenshot", "image_url": PNG}}])
    assert second.status == "completed"
    messages = (await upstream_log.last_body())["messages"]
    assert messages[-2]["role"] == "tool" and messages[-2]["tool_call_id"] == call.call_id
    assert messages[-1]["role"] == "user" and messages[-1]["content"][1]["image_url"]["url"] == PNG


# --- a sidecar for an OpenAI upstream that refuses what it cannot run ---------------------------------------------


@pytest.fixture(scope="module")
async def strict(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("strict")), fake_upstream,
                               env={"RESPONSES_BRIDGE_OPENAI_FIELDS": "true",
                                    "RESPONSES_BRIDGE_UNSUPPORTED_TOOLS": "reject"}) as started:
        yield started


@pytest.fixture(scope="module")
async def strict_envoy(strict: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(strict) as envoy:
        yield envoy


@pytest.fixture(params=["http", "envoy"])
def strict_base(request: pytest.FixtureRequest, strict: Sidecar) -> str:
    return request.getfixturevalue("strict_envoy") if request.param == "envoy" else strict.http_url


@pytest.fixture
async def strict_client(strict_base: str) -> AsyncIterator[openai.AsyncOpenAI]:
    base = strict_base
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield sdk


async def test_openai_fields_go_upstream_as_chat_completions_names_them(strict_client: openai.AsyncOpenAI,
                                                                       upstream_log: UpstreamLog) -> None:
    response = await strict_client.responses.create(
        model="fake-model", input="hello", prompt_cache_retention="in_memory",
        extra_body={"prompt_cache_options": CACHE_OPTIONS, "moderation": MODERATION})
    assert response.status == "completed" and response.prompt_cache_retention == "in_memory"
    body = await upstream_log.last_body()
    assert body["prompt_cache_retention"] == "in_memory"
    assert body["prompt_cache_options"] == CACHE_OPTIONS
    assert body["moderation"] == MODERATION


@pytest.mark.parametrize("tool", UNRUNNABLE, ids=lambda tool: tool["type"])
async def test_an_unrunnable_tool_is_refused_as_the_setting_says(strict_client: openai.AsyncOpenAI,
                                                                 upstream_log: UpstreamLog,
                                                                 tool: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        await strict_client.responses.create(model="fake-model", input="hello", tools=[tool])
    assert error.value.param == "tools" and error.value.code == "unsupported_tool_type"
    assert tool["type"] in str(error.value.message)
    assert await upstream_log.entries() == []
