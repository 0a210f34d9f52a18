"""A non-streamed tool loop through Envoy that outlasts Envoy's idle timeout is not cut for being quiet.

The deployment as users run it: the sidecar (its own model calls back through Envoy: ``--upstream-via``) and the
bootstrap ``responses-bridge envoy-config`` prints, both given ``RESPONSES_BRIDGE_ENVOY_STREAM_IDLE_TIMEOUT=3``: three
seconds of silence and Envoy ends a request. The loop calls a slow MCP tool twice (2 s each), so the client's
request to the HTTP door is silent for longer than that unless the door keeps it alive, which it does by sending
its 200 early and newlines until the JSON (``json_keepalive_seconds``, at most half the idle timeout). Then:

* the answer is whitespace first, and still a Response the OpenAI SDK parses;
* a failure after that commit is a ``failed`` Response (200), stored as such;
* with the keep-alive off, Envoy cuts the request, and its 504 says what timed out and what to do (stream,
  ``background: true``, or raise the named setting) instead of suggesting the sidecar is down, and the stored
  response is ``failed`` (``client_disconnected``) with the work done so far, never lost and never ``completed``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support import zygote
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.mcp_server import MCPTestServer
from tests.support.sdk import async_sdk
from tests.support.sdk_strict import failure_reason

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_retrieval_index.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

IDLE_SECONDS = 3
SLOW_LOOP = 'call tools__slow [args={"seconds": 2}] [then=tools__slow]'  # two 2 s calls: 4 s and more of work
BOUND_SECONDS = 60


@dataclass
class Deployment:
    sidecar: Sidecar
    envoy: EnvoyProcess
    url: str  # Envoy's listener, with /v1
    mcp: MCPTestServer
    warm_up_id: str = ""  # the response _warm_up stored: the only other one in the deployment's store

    def tool(self) -> dict[str, Any]:
        return {"type": "mcp", "server_label": "tools", "server_url": self.mcp.http_url, "require_approval": "never",
                "allowed_tools": ["slow"]}


def _envoy_config(env: dict[str, str], sidecar: Sidecar, listen_port: int) -> str:
    """The bootstrap as a user renders it, with the same environment as the sidecar's."""
    http_port = sidecar.http_url.rsplit(":", 1)[1]
    done = zygote.run([sys.executable, "-m", "responses_bridge", "envoy-config", "--listen-port", str(listen_port),
                       "--extproc-port", str(sidecar.extproc_port), "--http-port", http_port,
                       "--upstream", sidecar.upstream_url, "--admin-port", "0"], timeout=60, env={**os.environ, **env})
    done.check_returncode()
    return done.stdout


@asynccontextmanager
async def _deploy(tmp: Path, upstream: str, mcp: MCPTestServer, **extra_env: str) -> AsyncIterator[Deployment]:
    listen_port = free_port()
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
           "RESPONSES_BRIDGE_ENVOY_STREAM_IDLE_TIMEOUT": str(IDLE_SECONDS), **extra_env}
    async with running_sidecar(str(tmp), upstream, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1",
                               env=env) as sidecar:
        bootstrap = _envoy_config(env, sidecar, listen_port)
        assert f"stream_idle_timeout: {IDLE_SECONDS}s" in bootstrap  # the setting reached the rendered config
        envoy = await start_envoy(bootstrap)
        deployed = Deployment(sidecar, envoy, f"http://127.0.0.1:{listen_port}/v1", mcp)
        try:
            deployed.warm_up_id = await _warm_up(deployed)
            yield deployed
        finally:
            envoy.stop()


async def _warm_up(deployed: Deployment) -> str:
    """One quick tool call first, straight to the HTTP door (no idle timeout there): the sidecar's first MCP
    request imports the MCP client, which must not eat into the seconds the tests give Envoy's idle timeout."""
    body = {"model": "fake-model", "input": 'call tools__slow [args={"seconds": 0}]', "tools": [deployed.tool()]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND_SECONDS)) as session, \
            session.post(f"{deployed.sidecar.http_url}/v1/responses", json=body) as answer:
        assert answer.status == 200, await answer.text()
        return str((await answer.json())["id"])


@pytest.fixture(scope="module")
async def deployment(fake_upstream: str, mcp: MCPTestServer, tmp_path_factory: pytest.TempPathFactory
                     ) -> AsyncIterator[Deployment]:
    async with _deploy(tmp_path_factory.mktemp("kept-alive"), fake_upstream, mcp) as deployed:
        yield deployed


@pytest.fixture
async def sdk(deployment: Deployment) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=deployment.url, api_key="sk-client", max_retries=0,
                                  timeout=BOUND_SECONDS) as client:
        yield client


async def test_a_long_non_streamed_tool_loop_outlasts_envoys_idle_timeout(deployment: Deployment,
                                                                          sdk: openai.AsyncOpenAI) -> None:
    body = {"model": "fake-model", "input": SLOW_LOOP, "tools": [deployment.tool()]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND_SECONDS)) as session, \
            session.post(f"{deployment.url}/responses", json=body) as answer:
        status, content_type, raw = answer.status, answer.headers["content-type"], await answer.read()
    assert status == 200, raw[:500]
    assert content_type.startswith("application/json")
    assert raw[:1].isspace() and raw.lstrip()[:1] == b"{"  # kept alive with whitespace, then the Response
    response = orjson.loads(raw)
    assert response["status"] == "completed"
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]

    parsed = await sdk.responses.create(model="fake-model", input=SLOW_LOOP,
                                        tools=[deployment.tool()])  # type: ignore[list-item]
    assert parsed.status == "completed"
    assert [item.type for item in parsed.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
    assert parsed.output_text.startswith("Tool result:")
    assert (await sdk.responses.retrieve(parsed.id)).status == "completed"


async def test_a_failure_after_the_early_200_is_a_failed_response(deployment: Deployment,
                                                                 sdk: openai.AsyncOpenAI) -> None:
    """The upstream fails after the door has committed to 200: the client gets a Response whose status says so
    (the status line no longer can), and the stored response is the same failed one."""
    response = await sdk.responses.create(model="fake-model", input="[stall=2000] [error=500] hello",
                                          tools=[deployment.tool()])  # type: ignore[list-item]
    assert response.status == "failed"
    assert response.error is not None and response.error.message
    assert (await sdk.responses.retrieve(response.id)).status == "failed"


async def test_without_the_keepalive_envoys_cut_says_what_timed_out(
        fake_upstream: str, mcp: MCPTestServer, tmp_path: Path) -> None:
    async with _deploy(tmp_path, fake_upstream, mcp, RESPONSES_BRIDGE_JSON_KEEPALIVE_SECONDS="0") as deployed:
        body = {"model": "fake-model", "input": SLOW_LOOP, "tools": [deployed.tool()]}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND_SECONDS)) as session:
            async with session.post(f"{deployed.url}/responses", json=body) as answer:
                status, error = answer.status, (await answer.json())["error"]
            stored = await _stored_after_the_cut(session, deployed.sidecar.http_url, deployed.warm_up_id)
    assert status == 504, error
    assert error["code"] == "gateway_timeout" and error["type"] == "server_error"
    message = error["message"]
    for words in (f"{IDLE_SECONDS} s", "stream_idle_timeout", "envoy_stream_idle_timeout", "--stream-idle-timeout",
                  "stream: true", "background: true"):
        assert words in message, (words, message)
    assert "is `responses-bridge serve` running" not in message  # not the door-is-down answer
    # the run's work is kept, and its record is honest: failed because the client (Envoy) went away
    assert stored["status"] == "failed", stored
    assert failure_reason(stored["error"]) == "client_disconnected"
    assert [item["type"] for item in stored["output"]][:2] == ["mcp_list_tools", "mcp_call"]


async def _stored_after_the_cut(session: aiohttp.ClientSession, door: str, warm_up_id: str) -> dict[str, Any]:
    """What the sidecar stored for the cut request: the response that is not the warm-up's (not "the newest":
    the two are often created in the same second, and a listing orders them by that second)."""
    deadline = asyncio.get_running_loop().time() + BOUND_SECONDS
    while True:
        async with session.get(f"{door}/v1/responses") as listed:
            data = (await listed.json())["data"]
        if len(data) == 2:
            return next(item for item in data if item["id"] != warm_up_id)
        assert asyncio.get_running_loop().time() < deadline, data
        await asyncio.sleep(0.1)
