"""A Responses request's ``mcp`` tool with ``connector_id``, served through the operator's connector registry
(``RESPONSES_BRIDGE_MCP_CONNECTORS``) by the real MCP test server (tests/support/mcp_server.py), through the HTTP
door and through Envoy (which hands requests with MCP tools to the HTTP door), with the openai SDK as the client:

- the connector's tools listed and called as a ``server_url`` tool's are, under its ``server_label``; the caller's
  ``authorization`` reaches the server as ``Authorization: Bearer`` and the operator's fixed header beside it, and
  neither comes back in the call's output, the stored response, the log or the database;
- an approval asked and given as for a ``server_url`` tool;
- an id the registry does not map is a 400 naming it and the ids served; ``connector_id`` beside ``server_url`` a
  400.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.bridge import Sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import running_gateway
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.sdk import async_sdk

# the sidecar keeps its own SQLite file (read for the secrets below), so the PostgreSQL pass leaves the module out
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

BEARER = "oauth-access-token-4f1c9a77e2"
OPERATOR_KEY = "operator-fixed-key-b81d03c5"


@dataclass
class Stack:
    sidecar: Sidecar
    envoy_url: str
    mcp: MCPTestServer
    directory: Path


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    directory = tmp_path_factory.mktemp("mcp-connectors")
    async with running_mcp_server() as mcp:
        registry = {"connector_googledrive": {"server_url": mcp.http_url,
                                              "headers": {"X-Api-Key": OPERATOR_KEY}},
                    "asdk_app_unused": {"server_url": "https://unused.invalid/mcp"}}
        env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
               "RESPONSES_BRIDGE_MCP_CONNECTORS": json.dumps(registry)}
        async with running_gateway(str(directory), fake_upstream, "--log-level", "debug", env=env,
                                   log_file=directory / "sidecar.log", own_sqlite=True) as gateway:
            yield Stack(gateway.sidecar, gateway.url, mcp, directory)


def drive(**fields: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "drive", "connector_id": "connector_googledrive", "authorization": BEARER,
            "require_approval": "never", **fields}


def client(stack: Stack, door: str) -> openai.AsyncOpenAI:
    url = stack.sidecar.http_url if door == "http" else stack.envoy_url
    return async_sdk(base_url=f"{url}/v1", api_key="sk-client", max_retries=0, timeout=60)


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_connector_is_served_by_its_registry_server_and_its_secrets_stay_there(stack: Stack,
                                                                                      door: str) -> None:
    async with client(stack, door) as sdk:
        response = await sdk.responses.create(model="fake-model", input="call drive__authorization_digest",
                                              tools=[drive()])  # type: ignore[list-item]
        assert response.status == "completed"
        assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
        listed, call = response.output[0], response.output[1]
        assert listed.type == "mcp_list_tools" and listed.server_label == "drive"
        assert "whoami" in [tool.name for tool in listed.tools]
        assert call.type == "mcp_call" and (call.server_label, call.name) == ("drive", "authorization_digest")
        assert call.output == hashlib.sha256(f"Bearer {BEARER}".encode()).hexdigest()  # the caller's token arrived
        # a server echoing what it was given hands back neither the caller's token nor the operator's header
        echoed = await sdk.responses.create(model="fake-model", input="call drive__whoami",
                                            tools=[drive(allowed_tools=["whoami"])])  # type: ignore[list-item]
        [call] = [item for item in echoed.output if item.type == "mcp_call"]
        assert call.output is not None and call.output.startswith(
            "authorization=[redacted] x-api-key=[redacted] "), call.output
        stored = await sdk.responses.retrieve(echoed.id)
    tool = stored.tools[0].model_dump(exclude_none=True)
    assert tool["connector_id"] == "connector_googledrive" and tool["server_label"] == "drive"
    assert "server_url" not in tool and "authorization" not in tool and "headers" not in tool
    for path in stack.directory.rglob("*"):  # the log (at debug), the database and its WAL
        if path.is_file():
            data = path.read_bytes()
            assert BEARER.encode() not in data and OPERATOR_KEY.encode() not in data, path.name
            assert stack.mcp.http_url.encode() not in data or path.name == "sidecar.log", path.name


async def test_a_connectors_approval_is_asked_and_given_as_a_server_urls(stack: Stack) -> None:
    async with client(stack, "http") as sdk:
        asked = await sdk.responses.create(model="fake-model", input='call drive__add [args={"a": 2, "b": 3}]',
                                           tools=[drive(require_approval="always")])  # type: ignore[list-item]
        [request] = [item for item in asked.output if item.type == "mcp_approval_request"]
        assert (request.server_label, request.name) == ("drive", "add")
        done = await sdk.responses.create(
            model="fake-model", previous_response_id=asked.id, tools=[drive(require_approval="always")],  # type: ignore[list-item]
            input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    [call] = [item for item in done.output if item.type == "mcp_call"]
    assert (call.output, call.approval_request_id) == ("5", request.id)


@pytest.mark.parametrize("door", ["http", "envoy"])
@pytest.mark.parametrize(("tool", "words"), [
    (drive(connector_id="connector_gmail"),
     ["'connector_gmail'", "'asdk_app_unused', 'connector_googledrive'", "RESPONSES_BRIDGE_MCP_CONNECTORS"]),
    (drive(server_url="http://127.0.0.1:9/mcp"), ["Only one of 'server_url' and 'connector_id'"]),
])
async def test_an_unknown_connector_or_one_beside_a_server_url_is_a_400(stack: Stack, door: str,
                                                                        tool: dict[str, Any],
                                                                        words: list[str]) -> None:
    url = stack.sidecar.http_url if door == "http" else stack.envoy_url
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/v1/responses", json={"model": "fake-model", "input": "hi", "tools": [tool]}) as answer:
        assert answer.status == 400, await answer.text()
        error = (await answer.json())["error"]
    assert (error["param"], error["code"], error["type"]) == ("tools[0].connector_id", "invalid_value",
                                                              "invalid_request_error")
    assert all(word in error["message"] for word in words), error
    assert BEARER not in error["message"]
