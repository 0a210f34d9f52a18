"""No side effect twice, whatever the client retries: through both doors, with the openai SDK's own retries on.

A request whose run has made a server-side call with effects (here an MCP tool, ``send_payment`` of the test MCP
server, whose calls that server counts) is never answered with a status the SDK retries: a later failure (the
model's next turn failing with a 503) ends it with its failed Response, status 200, its output holding the call, and
stored. Before any such call the failure stays a retryable error, since retrying then makes nothing twice. And
``Idempotency-Key`` makes a retried create return the first one's response (a duplicate while it runs: 409
``idempotency_key_in_use``; the same key with another body: 400; another tenant's same key: its own).

One sidecar (its own model calls through Envoy: ``--upstream-via``) and one Envoy in front of it, with
``RESPONSES_BRIDGE_AUTH=keys`` and two tenants' keys; the real MCP test server on loopback.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from responses_bridge.devtools.procs import free_port
from responses_bridge.envoy_config import Auth, render_bootstrap
from tests.support.bridge import Sidecar, create_keys, running_sidecar
from tests.support.envoy import have_envoy, start_envoy
from tests.support.mcp_server import MCPTestServer
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")

MODEL = "fake-model"


@dataclass
class Stack:
    sidecar: Sidecar
    envoy_url: str
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    directory = str(tmp_path_factory.mktemp("effects"))
    db = os.path.join(directory, "effects.db")
    keys = create_keys(db, ["alpha", "beta"])
    listen_port = free_port()
    env = {"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}
    async with running_sidecar(directory, fake_upstream, "--db", db, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1", env=env) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth(mode="keys")))
        try:
            yield Stack(sidecar, f"http://127.0.0.1:{listen_port}", keys)
        finally:
            envoy.stop()


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    return stack.sidecar.http_url if request.param == "http" else stack.envoy_url


def sdk_for(door_url: str, key: str, **options: Any) -> openai.AsyncOpenAI:
    """The SDK as users make it: its default retries (2) unless ``options`` say otherwise."""
    return async_sdk(base_url=f"{door_url}/v1", api_key=key, timeout=60, **options)


@pytest.fixture
async def sdk(door_url: str, stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_for(door_url, stack.keys["alpha"]) as client:
        yield client


def payment_tool(mcp: MCPTestServer) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "bank", "server_url": mcp.http_url, "require_approval": "never",
            "allowed_tools": ["send_payment"]}


def payee() -> str:
    """A payee of this test's own: the MCP server counts its calls apart from every other test's."""
    return f"payee{uuid.uuid4().hex[:10]}"


# --- a failure after a call with effects ----------------------------------------------------------------------------


async def test_a_failed_turn_after_an_mcp_call_is_answered_once_with_its_response(
        sdk: openai.AsyncOpenAI, mcp: MCPTestServer, door_url: str, stack: Stack) -> None:
    """The first turn calls the tool, the second model turn fails (503): the SDK, retrying as it does, gets one
    answer, the failed Response (200) whose output holds the call; the tool ran once; the response is stored."""
    to = payee()
    response = await sdk.responses.create(model=MODEL, input=f"call bank__send_payment {to} [error_after_tools=503]",
                                          tools=[payment_tool(mcp)])  # type: ignore[list-item]
    assert await mcp.payments(to) == 1
    assert response.status == "failed"
    assert response.error is not None and "would make them again" in response.error.message
    calls = [item for item in response.output if item.type == "mcp_call"]
    assert [(call.name, call.output) for call in calls] == [("send_payment", f"paid {to}")]  # type: ignore[union-attr]
    stored = await sdk.responses.retrieve(response.id)
    assert stored.status == "failed" and [item.type for item in stored.output] == [
        item.type for item in response.output]
    # streamed, the same failure ends the stream with response.failed, carrying the call
    to = payee()
    final = None
    async with await sdk.responses.create(model=MODEL, input=f"call bank__send_payment {to} [error_after_tools=503]",
                                          tools=[payment_tool(mcp)], stream=True) as events:  # type: ignore[list-item]
        async for event in events:
            if event.type in ("response.completed", "response.failed", "response.incomplete"):
                final = event.response
    assert final is not None and final.status == "failed"
    assert [item.type for item in final.output if item.type == "mcp_call"] == ["mcp_call"]
    assert await mcp.payments(to) == 1


async def test_the_same_failure_before_any_call_stays_retryable(
        door_url: str, stack: Stack, mcp: MCPTestServer) -> None:
    """Control: the first model turn fails (503) before the tool was called: a status the SDK retries (the
    upstream's failure as the bridge reports it, a 502); nothing ran."""
    to = payee()
    async with sdk_for(door_url, stack.keys["alpha"], max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.responses.create(model=MODEL, input=f"call bank__send_payment {to} [error=503]",
                                          tools=[payment_tool(mcp)])  # type: ignore[list-item]
    assert raised.value.status_code >= 500
    assert await mcp.payments(to) == 0
