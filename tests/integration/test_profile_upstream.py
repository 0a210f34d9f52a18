"""A llama.cpp-like upstream (the fake with ``--quirks llamacpp``) behind both doors: the sidecar started with a
configuration file that says ``profile: llamacpp`` completes a tool round trip, a developer message and a JSON
schema answer that the same upstream refuses (or answers blind) with the generic profile."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import openai
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support.bridge import PYTHON, Sidecar, UpstreamLog, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
async def quirky_upstream() -> AsyncIterator[str]:
    port = free_port()
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port),
                              "--quirks", "llamacpp"], "fake-upstream-llamacpp")
    process.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", process=process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.stop()


@pytest.fixture(scope="module")
async def profiled(quirky_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """The sidecar with its profile from a configuration file (the upstream URL still from the flag)."""
    directory = tmp_path_factory.mktemp("profiled")
    config = Path(directory) / "bridge.yaml"
    config.write_text("profile: llamacpp\nlog_level: warning\n")
    async with running_sidecar(str(directory), quirky_upstream, "--config", str(config)) as started:
        yield started


@pytest.fixture(scope="module")
async def generic(quirky_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("generic")), quirky_upstream, extproc=False) as started:
        yield started


@pytest.fixture(scope="module")
async def profiled_envoy(profiled: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(profiled) as envoy:
        yield envoy


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, profiled: Sidecar) -> str:
    return request.getfixturevalue("profiled_envoy") if request.param == "envoy" else profiled.http_url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    base = base_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield sdk


async def weather_round_trip(client: openai.AsyncOpenAI, model: str = "llama-3.1-8b-instruct", *,
                             tool_choice: Literal["auto"] | openai.Omit = openai.omit
                             ) -> openai.types.responses.Response:
    first = await client.responses.create(model=model, input="Please call get_weather Paris", tools=[WEATHER],
                                          tool_choice=tool_choice)
    call = next(item for item in first.output if item.type == "function_call")
    return await client.responses.create(
        model=model, previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}])


async def test_a_tool_round_trip_reaches_the_model_with_the_llamacpp_profile(client: openai.AsyncOpenAI,
                                                                             profiled: Sidecar) -> None:
    log = UpstreamLog(profiled.upstream_url.removesuffix("/v1"))
    second = await weather_round_trip(client)
    assert second.status == "completed"
    assert "Sunny, 21 C" in second.output_text  # the result reached the model as a user turn
    sent = await log.last_body()
    assistant, result = sent["messages"][-2:]
    assert assistant["content"] == "" and assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert result["role"] == "user" and result["content"].startswith("Tool get_weather returned (id ")


async def test_the_same_round_trip_with_the_generic_profile_is_refused_by_the_upstream(generic: Sidecar) -> None:
    async with async_sdk(base_url=f"{generic.http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        first = await sdk.responses.create(model="llama-3.1-8b-instruct", input="Please call get_weather Paris",
                                           tools=[WEATHER])
        assert [item.type for item in first.output] == ["message"]  # tools without tool_choice: never seen
        with pytest.raises(openai.APIStatusError) as caught:
            await weather_round_trip(sdk, tool_choice="auto")
    assert "content" in str(caught.value) and "null" in str(caught.value)


async def test_developer_messages_and_json_schema_get_through(client: openai.AsyncOpenAI) -> None:
    answer = await client.responses.create(
        model="llama-3.1-8b-instruct",
        input=[{"role": "developer", "content": "Answer in JSON."}, {"role": "user", "content": "Is water wet?"}],
        text={"format": {"type": "json_schema", "name": "answer", "strict": False,
                         "schema": {"type": "object", "properties": {"wet": {"type": "boolean"}}}}})
    assert answer.status == "completed" and answer.output_text.startswith("{")


async def test_max_output_tokens_is_honoured_through_max_tokens(client: openai.AsyncOpenAI) -> None:
    answer = await client.responses.create(model="llama-3.1-8b-instruct", max_output_tokens=16,
                                           input="one two three four five six seven eight nine ten eleven twelve "
                                                 "thirteen fourteen fifteen sixteen seventeen eighteen")
    assert answer.status == "incomplete" and answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"


async def test_the_tools_reach_the_model_in_its_prompt_and_a_streamed_call_comes_back(
        client: openai.AsyncOpenAI, profiled: Sidecar) -> None:
    """The SDKs' default sends no ``tool_choice``, which this server answers blind (the generic profile's test
    above): the profile describes the tools in the prompt and reads the call written as text, streamed."""
    log = UpstreamLog(profiled.upstream_url.removesuffix("/v1"))
    async with client.responses.stream(model="llama-3.1-8b-instruct", input="Please call get_weather Paris",
                                       tools=[WEATHER]) as stream:
        kinds = [event.type async for event in stream]
        first = await stream.get_final_response()
    sent = await log.last_body()
    assert "tools" not in sent and "tool_choice" not in sent
    assert sent["messages"][0]["role"] == "system" and "functions.get_weather:" in sent["messages"][0]["content"]
    call = first.output[0]
    assert [item.type for item in first.output] == ["function_call"] and call.type == "function_call"
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert "response.function_call_arguments.done" in kinds and "response.output_text.delta" not in kinds
    async with client.responses.stream(
            model="llama-3.1-8b-instruct", previous_response_id=first.id, tools=[WEATHER],
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}]) as stream:
        second = await stream.get_final_response()
    assert second.status == "completed" and "Sunny, 21 C" in second.output_text
    assert not second.output_text.startswith("message:")  # the template's prefix is the bridge's to take off
    assistant = (await log.last_body())["messages"][-2]
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"  # the call, in its native form


async def test_a_program_is_written_as_text_run_and_resumed_through_the_profile(client: openai.AsyncOpenAI) -> None:
    pytest.importorskip("py_mini_racer")
    tools: Any = [{"type": "programmatic_tool_calling"}, dict(WEATHER, allowed_callers=["programmatic"])]
    first = await client.responses.create(
        model="llama-3.1-8b-instruct", tools=tools,
        input='js: const w = await tools.get_weather({city: "Oslo"}); return "Oslo: " + w')
    assert [item.type for item in first.output] == ["program", "function_call"]
    program, call = first.output
    assert call.type == "function_call" and call.caller is not None and call.caller.caller_id == program.call_id
    second = await client.responses.create(
        model="llama-3.1-8b-instruct", previous_response_id=first.id, tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}])
    assert [item.type for item in second.output] == ["program_output", "message"]
    assert second.output[0].result == "Oslo: rain" and second.status == "completed"
