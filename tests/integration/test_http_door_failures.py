"""Failures that only the HTTP door meets itself (through Envoy, Envoy makes the upstream call): an unreachable
upstream, an upstream that goes silent, a configured key, a client that hangs up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import free_port
from tests.support.bridge import UpstreamLog, running_sidecar
from tests.support.schema import check_sequence, parse_sse
from tests.support.sdk import async_sdk
from tests.support.sdk_strict import failure_reason

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


@pytest.fixture(scope="module")
async def impatient(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A sidecar with a 1 s upstream idle timeout and its own upstream key."""
    async with running_sidecar(str(tmp_path_factory.mktemp("impatient")), fake_upstream, "--api-key",
                               "sk-configured", extproc=False,
                               env={"RESPONSES_BRIDGE_UPSTREAM_IDLE_TIMEOUT": "1"}) as started:
        yield started.http_url


@pytest.fixture(scope="module")
async def orphan(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A sidecar whose upstream port has nothing listening."""
    async with running_sidecar(str(tmp_path_factory.mktemp("orphan")), f"http://127.0.0.1:{free_port()}/v1",
                               extproc=False) as started:
        yield started.http_url


async def test_unreachable_upstream(orphan: str) -> None:
    async with async_sdk(base_url=f"{orphan}/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model="m", input="x")
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unreachable"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{orphan}/v1/responses", json={"model": "m", "input": "x", "stream": True}) as r:
            assert r.status == 200
            events = parse_sse(await r.read())
    check_sequence(events)
    assert events[-1]["type"] == "response.failed"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{orphan}/v1/models") as r:
            assert r.status == 502
            assert set((await r.json())["error"]) == {"message", "type", "param", "code"}


async def test_silent_upstream_times_out(impatient: str) -> None:
    async with async_sdk(base_url=f"{impatient}/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model="fake-model", input="[stall=3000] hello")
    assert caught.value.status_code == 504
    async with aiohttp.ClientSession() as http:
        body = {"model": "fake-model", "input": "[stall_after=2:3000] one two three four", "stream": True}
        async with http.post(f"{impatient}/v1/responses", json=body) as r:
            events = parse_sse(await r.read())
    check_sequence(events)
    assert events[-1]["type"] == "response.failed"
    assert failure_reason(events[-1]["response"]["error"]) == "upstream_timeout"
    assert any(e["type"] == "response.output_text.delta" for e in events)


async def test_configured_key_replaces_the_clients(impatient: str, fake_upstream: str) -> None:
    log = UpstreamLog(fake_upstream.removesuffix("/v1"))
    await log.clear()
    async with async_sdk(base_url=f"{impatient}/v1", api_key="sk-client", max_retries=0) as client:
        await client.responses.create(model="fake-model", input="key check")
    assert (await log.entries())[-1]["headers"]["authorization"] == "Bearer sk-configured"


async def test_client_disconnect_cancels_and_records_failure(impatient: str) -> None:
    body = {"model": "fake-model", "input": "[delay=100] [chunks=40] slow", "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{impatient}/v1/responses", json=body) as r:
            first = await r.content.readuntil(b"\n\n")
            response_id = parse_sse(first + b"data: [DONE]\n\n")[0]["response"]["id"]
            r.close()  # hang up mid-stream
        for _ in range(300):
            async with http.get(f"{impatient}/v1/responses/{response_id}") as got:
                if got.status == 200:
                    stored = await got.json()
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the abandoned response was never recorded")
    assert stored["status"] == "failed"
    assert failure_reason(stored["error"]) == "client_disconnected"


async def test_unknown_route_and_method_are_openai_shaped(impatient: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{impatient}/v1/nothing-here") as r:
            assert r.status == 404
            assert set((await r.json())["error"]) == {"message", "type", "param", "code"}
        async with http.put(f"{impatient}/v1/responses") as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"
