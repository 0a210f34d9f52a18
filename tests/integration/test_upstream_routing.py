"""Two models on two upstreams, routed by the request's ``model``, through both doors.

Two fake upstreams (``a`` and ``b``), one sidecar configured with both (``RESPONSES_BRIDGE_UPSTREAMS`` /
``_MODELS``; its own upstream calls through Envoy's listener, ``--upstream-via``), and one real Envoy rendered
from the same upstreams. Each fake records what it received; Envoy's admin counters
(``cluster.upstream_<name>.upstream_rq_total``) show which cluster every request took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import openai
import pytest

from responses_bridge.devtools.procs import ManagedProcess, wait_http
from responses_bridge.envoy_config import HTTP_CLUSTER, render_bootstrap, upstream_cluster
from responses_bridge.upstreams import UpstreamSpec
from tests.support.bridge import PYTHON, UpstreamLog, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")

MODELS = [
    {"match": "alpha*", "upstream": "a"},
    {"match": "beta", "upstream": "b", "upstream_model": "fake-model"},
    {"match": "fake-*", "upstream": "a"},
]


@dataclass
class Deployment:
    http_url: str
    envoy_url: str
    envoy: EnvoyProcess
    logs: dict[str, UpstreamLog]

    async def cluster_requests(self) -> dict[str, int]:
        stats = await self.envoy.stats("cluster.")
        names = {"a": upstream_cluster("a"), "b": upstream_cluster("b"), "sidecar": HTTP_CLUSTER}
        return {key: int(stats.get(f"cluster.{name}.upstream_rq_total", 0)) for key, name in names.items()}

    async def clear(self) -> None:
        for log in self.logs.values():
            await log.clear()

    async def models_sent(self) -> dict[str, list[str]]:
        return {name: [entry["body"]["model"] for entry in await log.entries()] for name, log in self.logs.items()}


async def _fake(port: int) -> ManagedProcess:
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                             f"fake-upstream:{port}")
    process.start()
    await wait_http(f"http://127.0.0.1:{port}/health", process=process)
    return process


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    ports = {"a": free_port(), "b": free_port()}
    fakes = [await _fake(port) for port in ports.values()]
    upstreams = [UpstreamSpec(name=name, url=f"http://127.0.0.1:{port}/v1") for name, port in ports.items()]
    listen_port = free_port()
    env = {"RESPONSES_BRIDGE_UPSTREAMS": json.dumps([spec.model_dump() for spec in upstreams]),
           "RESPONSES_BRIDGE_MODELS": json.dumps(MODELS)}
    try:
        async with running_sidecar(str(tmp_path_factory.mktemp("upstreams")), upstreams[0].url, "--upstream-via",
                                   f"http://127.0.0.1:{listen_port}/v1", env=env) as sidecar:
            envoy = await start_envoy(render_bootstrap(
                listen_port=listen_port, extproc_port=sidecar.extproc_port,
                http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=upstreams[0].url, admin_port=0,
                upstreams=upstreams))
            try:
                yield Deployment(sidecar.http_url, f"http://127.0.0.1:{listen_port}", envoy,
                                 {name: UpstreamLog(f"http://127.0.0.1:{port}") for name, port in ports.items()})
            finally:
                envoy.stop()
    finally:
        for fake in fakes:
            fake.stop()


@pytest.fixture(params=["http", "envoy"])
def door(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def setup(deployment: Deployment, door: str) -> AsyncIterator[tuple[Deployment, openai.AsyncOpenAI]]:
    await deployment.clear()
    base = deployment.envoy_url if door == "envoy" else deployment.http_url
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield deployment, sdk


async def test_each_model_reaches_its_own_upstream(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    first = await client.responses.create(model="alpha-1", input="to a")
    second = await client.responses.create(model="beta", input="to b")
    assert (first.output_text, second.output_text) == ("Echo: to a", "Echo: to b")
    assert second.model == "beta"  # the client's name, though b was sent its own (upstream_model)
    assert await deployment.models_sent() == {"a": ["alpha-1"], "b": ["fake-model"]}


async def test_streams_are_routed_too(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    text = ""
    async with client.responses.stream(model="beta", input="streamed to b") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
        final = await stream.get_final_response()
    assert text == final.output_text == "Echo: streamed to b"
    assert await deployment.models_sent() == {"a": [], "b": ["fake-model"]}


async def test_a_chain_follows_the_model_to_its_upstream(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    first = await client.responses.create(model="beta", input="remember me")
    await client.responses.create(model="beta", input="and now", previous_response_id=first.id)
    entries = await deployment.logs["b"].entries()
    assert [m["content"] for m in entries[-1]["body"]["messages"]] == ["remember me", "Echo: remember me", "and now"]
    assert await deployment.logs["a"].entries() == []


async def test_an_unknown_model_is_a_404_model_not_found(setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="gamma", input="nowhere")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "x"}])
    assert await deployment.models_sent() == {"a": [], "b": []}


async def test_chat_completions_pass_through_to_the_routed_upstream(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    answer = await client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "plain"}],
                                                  temperature=0.5)
    assert answer.choices[0].message.content == "Echo: plain"
    chunks = [chunk async for chunk in await client.chat.completions.create(
        model="alpha-2", messages=[{"role": "user", "content": "two words"}], stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: two words"
    b_body = (await deployment.logs["b"].entries())[-1]["body"]
    assert b_body == {"model": "fake-model", "messages": [{"role": "user", "content": "plain"}], "temperature": 0.5}
    a_body = (await deployment.logs["a"].entries())[-1]["body"]
    assert (a_body["model"], a_body["stream"]) == ("alpha-2", True)


async def test_models_lists_the_routes_merged_with_the_upstreams(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    _, client = setup
    listed = [model.id async for model in client.models.list()]
    # the configured exact name, then what an upstream reports that a route sends to it ("fake-*" -> a)
    assert listed == ["beta", "fake-model", "fake-reasoner"]
    assert (await client.models.retrieve("beta")).id == "beta"
    assert (await client.models.retrieve("alpha-9")).id == "alpha-9"  # a glob's name: served, so it exists
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gamma")


async def test_a_background_response_runs_on_its_models_upstream(
        setup: tuple[Deployment, openai.AsyncOpenAI]) -> None:
    deployment, client = setup
    queued = await client.responses.create(model="beta", input="later", background=True)
    for _ in range(200):
        done = await client.responses.retrieve(queued.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    assert (done.status, done.output_text) == ("completed", "Echo: later")
    assert await deployment.models_sent() == {"a": [], "b": ["fake-model"]}


async def test_envoy_sends_each_model_to_its_cluster(deployment: Deployment) -> None:
    """Through one Envoy: Responses (JSON and streamed) and Chat Completions, each counted on its own cluster,
    and none of them on the sidecar's HTTP door."""
    before = await deployment.cluster_requests()
    async with openai.AsyncOpenAI(base_url=f"{deployment.envoy_url}/v1", api_key="sk", max_retries=0) as client:
        await client.responses.create(model="alpha-x", input="one")
        await client.responses.create(model="alpha-y", input="two", stream=True)
        await client.responses.create(model="beta", input="three")
        await client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "four"}])
        await client.chat.completions.create(model="fake-reasoner", messages=[{"role": "user", "content": "5"}])
    after = await deployment.cluster_requests()
    assert {key: after[key] - before[key] for key in after} == {"a": 3, "b": 2, "sidecar": 0}


async def test_the_route_header_is_what_the_sidecars_own_calls_use(deployment: Deployment) -> None:
    """A call naming its upstream in the header goes to that cluster as it is (the ``--upstream-via`` path)."""
    before = await deployment.cluster_requests()
    async with aiohttp.ClientSession() as session, session.post(
            f"{deployment.envoy_url}/v1/chat/completions", headers={"x-responses-bridge-upstream": "b"},
            json={"model": "whatever", "messages": [{"role": "user", "content": "direct"}]}) as response:
        assert response.status == 200
        assert (await response.json())["choices"][0]["message"]["content"] == "Echo: direct"
    after = await deployment.cluster_requests()
    assert (after["a"] - before["a"], after["b"] - before["b"]) == (0, 1)
