"""Whose key reaches the upstream: the sidecar's configured one (``--api-key``) instead of the client's, or, with
none configured, the client's own (a gateway in front of a multi-tenant provider). Checked on what the fake
upstream records for every model call, through both doors, for the first call, the ``truncation: "auto"`` retry
and a request with server-side tools that Envoy routes to the sidecar's HTTP door.

The keyed deployment is a sidecar started with ``--api-key`` whose own model calls go through Envoy's listener
(``--upstream-via``), and an Envoy rendered by ``envoy-config`` as users do; the keyless one is the suite's shared
sidecar and Envoy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk

pytestmark = [
    pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
    pytest.mark.store_proven(
        "tests/integration/test_agents_automations_replicas.py",
        "tests/integration/test_input_references.py",
        reason="every store/postgres line it covers on PostgreSQL is covered by the modules named "
               "(scripts/pg-coverage)",
    ),
]

MODEL = "fake-model"
CONFIGURED = "sk-conf"
CLIENT = "sk-client"
LONG = [item for turn in range(8) for item in (
    {"role": "user", "content": f"question {turn} " + "filler " * 30},
    {"role": "assistant", "content": f"answer {turn} " + "filler " * 30})]
SERVER_SEARCH = [{"type": "tool_search"},
                 {"type": "function", "name": "lookup_order", "description": "Look up an order by its number.",
                  "parameters": {"type": "object", "properties": {"number": {"type": "string"}}},
                  "defer_loading": True}]


@dataclass
class Deployment:
    envoy_url: str
    http_url: str

    def url(self, door: str) -> str:
        return self.envoy_url if door == "envoy" else self.http_url


@pytest.fixture(scope="module")
async def keyed(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    listen_port = free_port()  # first: the sidecar makes its own model calls through this listener
    async with running_sidecar(str(tmp_path_factory.mktemp("keyed")), fake_upstream, "--api-key", CONFIGURED,
                               "--upstream-via", f"http://127.0.0.1:{listen_port}/v1") as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Deployment(f"http://127.0.0.1:{listen_port}", sidecar.http_url)
        finally:
            envoy.stop()


@pytest.fixture
def keyless(sidecar: Sidecar, envoy_url: str) -> Deployment:
    return Deployment(envoy_url, sidecar.http_url)


async def _create(base_url: str, stream: bool, **params: Any) -> Any:
    """The final Response, streamed or not, created with the client's own key."""
    async with async_sdk(base_url=f"{base_url}/v1", api_key=CLIENT, max_retries=0, timeout=60) as sdk:
        if not stream:
            return await sdk.responses.create(model=MODEL, **params)
        final = None
        async with await sdk.responses.create(model=MODEL, stream=True, **params) as events:
            async for event in events:
                if event.type in ("response.completed", "response.failed", "response.incomplete"):
                    final = event.response
        assert final is not None, "the stream ended without a terminal event"
        return final


async def _sent_keys(upstream_log: UpstreamLog) -> list[str | None]:
    return [entry["headers"]["authorization"] for entry in await upstream_log.entries()]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_the_configured_key_replaces_the_clients(keyed: Deployment, upstream_log: UpstreamLog, door: str,
                                                        stream: bool) -> None:
    response = await _create(keyed.url(door), stream, input="Say hello.")
    assert response.status == "completed"
    assert await _sent_keys(upstream_log) == [f"Bearer {CONFIGURED}"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_without_a_configured_key_the_clients_own_goes_upstream(keyless: Deployment,
                                                                      upstream_log: UpstreamLog, door: str,
                                                                      stream: bool) -> None:
    response = await _create(keyless.url(door), stream, input="Say hello.")
    assert response.status == "completed"
    assert await _sent_keys(upstream_log) == [f"Bearer {CLIENT}"]


@pytest.mark.parametrize("door", ["http", "envoy"])
@pytest.mark.parametrize("configured", [True, False], ids=["configured_key", "client_key"])
async def test_the_truncation_retry_sends_the_same_key_as_the_first_call(
        keyed: Deployment, keyless: Deployment, upstream_log: UpstreamLog, door: str, configured: bool) -> None:
    deployment = keyed if configured else keyless
    response = await _create(deployment.url(door), False, truncation="auto", instructions="Be terse.",
                             input=[*LONG, {"role": "user", "content": "newest [context=200]"}])
    assert response.status == "completed"
    expected = f"Bearer {CONFIGURED if configured else CLIENT}"
    assert await _sent_keys(upstream_log) == [expected, expected]  # the first call, refused, and the retry


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_server_side_tools_through_envoy_send_the_configured_key(keyed: Deployment, upstream_log: UpstreamLog,
                                                                       stream: bool) -> None:
    """Envoy routes this request to the sidecar's HTTP door, whose model call comes back through Envoy's
    passthrough route with the sidecar's key."""
    response = await _create(keyed.envoy_url, stream, input="Say hello.", tools=SERVER_SEARCH)
    assert response.status == "completed"
    keys = await _sent_keys(upstream_log)
    assert keys and set(keys) == {f"Bearer {CONFIGURED}"}


async def test_the_clients_trace_context_passes_envoy_when_the_sidecar_does_not_trace(
        keyed: Deployment, upstream_log: UpstreamLog) -> None:
    """The route sets only what the processor left in metadata (here the key): the client's ``traceparent`` goes
    through Envoy untouched."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with async_sdk(base_url=f"{keyed.envoy_url}/v1", api_key=CLIENT, max_retries=0, timeout=60,
                                  default_headers={"traceparent": traceparent}) as sdk:
        response = await sdk.responses.create(model=MODEL, input="Say hello.")
    assert response.status == "completed"
    [entry] = await upstream_log.entries()
    assert entry["headers"]["authorization"] == f"Bearer {CONFIGURED}"
    assert entry["headers"]["traceparent"] == traceparent
