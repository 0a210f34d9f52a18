"""``stream_via_sidecar``: through Envoy, streamed requests are run by the sidecar's HTTP door, whose model call
still goes through Envoy (``--upstream-via`` its listener), so the first event does not wait for the upstream's
response headers (Envoy writes nothing to a client before them). JSON requests keep the ext_proc path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest

from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import Sidecar, finished_after, finished_requests, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

MODEL = "fake-model"


@dataclass
class Gateway:
    url: str
    sidecar: Sidecar
    envoy: EnvoyProcess
    log: Path


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    listen_port = free_port()
    directory = tmp_path_factory.mktemp("stream-via-sidecar")
    log = directory / "sidecar.log"
    async with running_sidecar(str(directory), fake_upstream, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1",
                               env={"RESPONSES_BRIDGE_STREAM_VIA_SIDECAR": "true"}, log_file=log) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Gateway(f"http://127.0.0.1:{listen_port}", sidecar, envoy, log)
        finally:
            envoy.stop()


def sdk(base: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60)


async def _upstream_calls_through_envoy(gateway: Gateway) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.envoy.admin_url}/stats") as answer:
        text = await answer.text()
    return sum(float(line.split(": ")[1]) for line in text.splitlines()
               if line.startswith("cluster.llm_upstream.upstream_rq_total:"))


async def test_a_stream_through_envoy_is_run_by_the_http_door_and_its_model_call_goes_through_envoy(
        gateway: Gateway) -> None:
    before = len(finished_requests(gateway.log, "http"))
    calls = await _upstream_calls_through_envoy(gateway)
    async with sdk(gateway.url) as client:
        stream = await client.responses.create(model=MODEL, input="[chunks=5] streamed", stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 5
    handled = await finished_after(gateway.log, "http", before)
    assert [line["route"] for line in handled] == ["POST /v1/responses"]
    assert await _upstream_calls_through_envoy(gateway) == calls + 1  # the HTTP door's call, through Envoy


async def test_a_json_request_keeps_the_extproc_path(gateway: Gateway) -> None:
    before_http = len(finished_requests(gateway.log, "http"))
    before_extproc = len(finished_requests(gateway.log, "extproc"))
    async with sdk(gateway.url) as client:
        response = await client.responses.create(model=MODEL, input="json")
    assert response.status == "completed"
    assert len(await finished_after(gateway.log, "extproc", before_extproc)) == 1
    assert len(finished_requests(gateway.log, "http")) == before_http


async def test_the_first_event_does_not_wait_for_the_models_first_token(gateway: Gateway) -> None:
    """The upstream sends its headers and then nothing for a minute (llama.cpp before its first token): the client
    has ``response.created`` long before, which the ext_proc path cannot give (it writes the first event with the
    first body chunk Envoy hands it)."""
    body = {"model": MODEL, "input": "[first_byte_delay=60000] a slow first token", "stream": True}
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        answer = await session.post(f"{gateway.url}/v1/responses", json=body)
        try:
            assert answer.status == 200
            first = await answer.content.readuntil(b"\n\n")
        finally:
            answer.close()  # the client goes away: the HTTP door's call through Envoy is cancelled with it
    assert first.startswith(b"event: response.created\n")
