"""Each upstream's profile (and its own ``switches``) applies to the requests routed to it, on both doors.

Two fake upstreams from one configuration file: a llama.cpp-like one (``--quirks llamacpp``), configured twice —
``llama`` with ``profile: llamacpp`` and ``llama-raw`` with ``profile: generic`` — and a plain one (``plain``,
``profile: generic`` with ``switches: {developer_role: developer}``). The same tool round trip completes on
``llama`` and is refused by the very same server on ``llama-raw``; ``plain`` keeps OpenAI's own forms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
import yaml

from responses_bridge.config.upstreams import UpstreamSpec
from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.integration.test_profile_upstream import WEATHER, weather_round_trip
from tests.support.bridge import PYTHON, Sidecar, UpstreamLog, running_sidecar
from tests.support.envoy import have_envoy, start_envoy
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]


async def _fake(*extra: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port), *extra],
                             f"fake-upstream:{port}")
    process.start()
    await wait_http(f"http://127.0.0.1:{port}/health", process=process)
    return process, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Sidecar, str, dict]]:
    quirky, quirky_url = await _fake("--quirks", "llamacpp")
    plain, plain_url = await _fake()
    upstreams = [
        {"name": "llama", "url": quirky_url, "profile": "llamacpp"},
        {"name": "llama-raw", "url": quirky_url, "profile": "generic"},
        {"name": "plain", "url": plain_url, "profile": "generic", "switches": {"developer_role": "developer"}},
    ]
    directory = tmp_path_factory.mktemp("profile-routes")
    config = Path(directory) / "bridge.yaml"
    config.write_text(yaml.safe_dump({"log_level": "warning", "upstreams": upstreams, "models": [
        {"match": "llama-3*", "upstream": "llama"}, {"match": "raw-*", "upstream": "llama-raw"},
        {"match": "gpt-*", "upstream": "plain"}]}))
    logs = {"quirky": UpstreamLog(quirky_url.removesuffix("/v1")), "plain": UpstreamLog(plain_url.removesuffix("/v1"))}
    try:
        async with running_sidecar(str(directory), plain_url, "--config", str(config)) as sidecar:
            listen_port = free_port()
            envoy = await start_envoy(render_bootstrap(
                listen_port=listen_port, extproc_port=sidecar.extproc_port,
                http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=plain_url, admin_port=0,
                upstreams=[UpstreamSpec(**spec) for spec in upstreams]))
            try:
                yield sidecar, f"http://127.0.0.1:{listen_port}", logs
            finally:
                envoy.stop()
    finally:
        quirky.stop()
        plain.stop()


@pytest.fixture(params=["http", "envoy"])
async def client(request: pytest.FixtureRequest, deployment: tuple[Sidecar, str, dict]
                 ) -> AsyncIterator[openai.AsyncOpenAI]:
    sidecar, envoy_url, _ = deployment
    base = envoy_url if request.param == "envoy" else sidecar.http_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield sdk


async def test_the_llamacpp_upstream_gets_its_profile(client: openai.AsyncOpenAI,
                                                      deployment: tuple[Sidecar, str, dict]) -> None:
    log = deployment[2]["quirky"]
    second = await weather_round_trip(client, model="llama-3.1-8b-instruct")
    assert second.status == "completed" and "Sunny, 21 C" in second.output_text
    assistant, result = (await log.last_body())["messages"][-2:]
    assert assistant["content"] == "" and result["role"] == "user"


async def test_the_same_server_without_its_profile_refuses_the_round_trip(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="raw-llama", input="Please call get_weather Paris", tools=[WEATHER])
    assert [item.type for item in first.output] == ["message"]  # tools without tool_choice: never seen
    with pytest.raises(openai.APIStatusError) as caught:
        await weather_round_trip(client, model="raw-llama", tool_choice="auto")
    assert "content" in str(caught.value) and "null" in str(caught.value)


async def test_the_plain_upstream_keeps_generic_forms_and_its_own_switch(
        client: openai.AsyncOpenAI, deployment: tuple[Sidecar, str, dict]) -> None:
    log = deployment[2]["plain"]
    second = await weather_round_trip(client, model="gpt-test")
    assert second.status == "completed"
    assistant, result = (await log.last_body())["messages"][-2:]
    assert assistant["content"] is None and result["role"] == "tool"  # generic: OpenAI's own forms
    await client.responses.create(model="gpt-test", input=[{"role": "developer", "content": "Be brief."},
                                                           {"role": "user", "content": "hi"}])
    assert (await log.last_body())["messages"][0]["role"] == "developer"  # the upstream's own switch
