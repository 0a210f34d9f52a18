"""The OpenAI Agents SDK and the Vercel AI SDK (unmodified) through a native route, on both doors: the backend
answers ``/v1/responses`` itself and stores nothing (the fake's ``--native`` mode); a run with a function tool and
``auto_previous_response_id`` only works because the bridge stores each turn and expands the chain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.clients.conftest import node_modules  # noqa: F401 - fixture
from tests.clients.test_ai_sdk import run_sdk
from tests.support.envoy import have_envoy
from tests.support.sdk import async_sdk
from tests.support.upstreams import Deployment, running_deployment

agents = pytest.importorskip("agents", reason="openai-agents is not installed (pip install -e '.[test]'; PyPI "
                                              "unreachable?)")
agents.set_tracing_disabled(True)
pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    # no upstream key held: every call carries the client's own
    async with running_deployment(str(tmp_path_factory.mktemp("native-clients")), keyed=False) as started:
        yield started


@pytest.fixture(params=["http", "envoy"])
async def base(request: pytest.FixtureRequest, deployment: Deployment) -> str:
    await deployment.clear()
    return deployment.envoy_url if request.param == "envoy" else deployment.http_url


@pytest.fixture
async def model(base: str) -> AsyncIterator[agents.OpenAIResponsesModel]:
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as client:
        yield agents.OpenAIResponsesModel(model="native-agent", openai_client=client)


def weather_tool(calls: list[str]) -> agents.FunctionTool:
    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    return get_weather


async def test_run_streamed(model: agents.OpenAIResponsesModel) -> None:
    agent = agents.Agent(name="streamed", instructions="Be terse.", model=model)
    result = agents.Runner.run_streamed(agent, "Hello native [chunks=4]")
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    assert result.final_output == "Echo: Hello native w1"
    assert "".join(deltas) == result.final_output and len(deltas) == 4


@pytest.mark.parametrize("auto_previous", [False, True], ids=["full-history", "auto_previous_response_id"])
async def test_function_tool(model: agents.OpenAIResponsesModel, deployment: Deployment,
                             auto_previous: bool) -> None:
    calls: list[str] = []
    agent = agents.Agent(name="tools", instructions="Use tools.", model=model, tools=[weather_tool(calls)])
    result = await agents.Runner.run(agent, "Please call get_weather Paris", auto_previous_response_id=auto_previous)
    assert calls == ["Paris"]
    assert result.final_output == "Tool result: sunny in Paris"
    sent = [entry["body"] for entry in await deployment.logs["n"].entries()]
    assert all(body["store"] is False and "previous_response_id" not in body for body in sent)
    types = [item.get("type", "message") for item in sent[-1]["input"]]
    assert types == ["message", "function_call", "function_call_output"]  # the chain, expanded by the bridge


async def test_function_tool_streamed(model: agents.OpenAIResponsesModel) -> None:
    calls: list[str] = []
    agent = agents.Agent(name="tools", instructions="Use tools.", model=model, tools=[weather_tool(calls)])
    result = agents.Runner.run_streamed(agent, "Please call get_weather Lima", auto_previous_response_id=True)
    async for _ in result.stream_events():
        pass
    assert calls == ["Lima"] and result.final_output == "Tool result: sunny in Lima"


@pytest.mark.parametrize("scenario", ["generate", "stream", "tools", "stream-tools"])
async def test_ai_sdk(node_modules: Path, base: str, deployment: Deployment, scenario: str) -> None:  # noqa: F811
    out = await run_sdk(node_modules, base, scenario, model="native-ai")
    expected = {"generate": "Echo: Hello from the AI SDK", "stream": "Echo: Stream me w1 w2",
                "tools": 'Tool result: {"city":"Paris","forecast":"sunny"}',
                "stream-tools": "Tool result: sunny in Rome"}
    assert out["text"] == expected[scenario]
    assert "fake" not in out.get("responseId", "")
    sent = [entry["body"] for entry in await deployment.logs["n"].entries()]
    assert sent and all(body["store"] is False for body in sent)
