"""The OpenAI Agents SDK (PyPI ``openai-agents``, unmodified) against both doors: ``OpenAIResponsesModel`` over
``AsyncOpenAI(base_url=…)``. It sends ``instructions``, ``include: []``, ``tools: []``, strict tools, and with
``auto_previous_response_id`` a follow-up that is only a ``function_call_output`` plus ``previous_response_id``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.bridge import UpstreamLog
from tests.support.sdk import async_sdk

agents = pytest.importorskip("agents", reason="openai-agents is not installed (pip install -e '.[test]'; PyPI "
                                              "unreachable?)")
agents.set_tracing_disabled(True)


@pytest.fixture
async def model(base_url: str) -> AsyncIterator[agents.OpenAIResponsesModel]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client:
        yield agents.OpenAIResponsesModel(model="fake-model", openai_client=client)


def weather_tool(calls: list[str]) -> agents.FunctionTool:
    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    return get_weather


async def test_run(model: agents.OpenAIResponsesModel, upstream_log: UpstreamLog) -> None:
    agent = agents.Agent(name="plain", instructions="Be terse.", model=model)
    result = await agents.Runner.run(agent, "Hello agents")
    assert result.final_output == "Echo: Hello agents"
    body = await upstream_log.last_body()
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert "tools" not in body  # the SDK's empty tools list is not forwarded


async def test_run_streamed(model: agents.OpenAIResponsesModel) -> None:
    agent = agents.Agent(name="streamed", instructions="Be terse.", model=model)
    result = agents.Runner.run_streamed(agent, "Hello streamed [chunks=4]")
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    assert result.final_output == "Echo: Hello streamed w1"
    assert "".join(deltas) == result.final_output and len(deltas) == 4


@pytest.mark.parametrize("auto_previous", [False, True], ids=["full-history", "auto_previous_response_id"])
async def test_function_tool(model: agents.OpenAIResponsesModel, upstream_log: UpstreamLog,
                             auto_previous: bool) -> None:
    calls: list[str] = []
    agent = agents.Agent(name="tools", instructions="Use tools.", model=model, tools=[weather_tool(calls)])
    result = await agents.Runner.run(agent, "Please call get_weather Paris", auto_previous_response_id=auto_previous)
    assert calls == ["Paris"]
    assert result.final_output == "Tool result: sunny in Paris"
    messages = (await upstream_log.last_body())["messages"]
    assert messages[-2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert messages[-1] == {"role": "tool", "tool_call_id": messages[-2]["tool_calls"][0]["id"],
                            "content": "sunny in Paris"}


async def test_function_tool_streamed(model: agents.OpenAIResponsesModel) -> None:
    calls: list[str] = []
    agent = agents.Agent(name="tools", instructions="Use tools.", model=model, tools=[weather_tool(calls)])
    result = agents.Runner.run_streamed(agent, "Please call get_weather Lima")
    async for _ in result.stream_events():
        pass
    assert calls == ["Lima"] and result.final_output == "Tool result: sunny in Lima"


async def test_upstream_failure_is_an_error_not_an_empty_answer(model: agents.OpenAIResponsesModel,
                                                                door: str) -> None:
    agent = agents.Agent(name="failing", instructions="Be terse.", model=model)
    result = agents.Runner.run_streamed(agent, "Fail please [cut=2]")
    with pytest.raises(Exception) as caught:  # the SDK raises on response.failed (or on a cut body)
        async for _ in result.stream_events():
            pass
    if door == "http":  # through Envoy a broken upstream may also reach the client as a 502 or a cut body
        assert "upstream" in str(caught.value).lower() or "failed" in str(caught.value).lower()
