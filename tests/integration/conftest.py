"""The integration suite runs every test through both doors: ``http`` (the sidecar's own HTTP server) and
``envoy`` (a real Envoy with the sidecar as its external processor). All servers are real processes on free
loopback ports, started once per test session through the same CLI users run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support.bridge import PYTHON, Sidecar, UpstreamLog, running_sidecar
from tests.support.gateway import Gateway, envoy_before
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.sdk import async_sdk


@pytest.fixture(scope="session")
async def fake_upstream() -> AsyncIterator[str]:
    port = free_port()
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                             "fake-upstream")
    process.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", process=process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.stop()


@pytest.fixture(scope="session")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("sidecar")), fake_upstream) as started:
        yield started


@pytest.fixture(scope="module")
async def mcp() -> AsyncIterator[MCPTestServer]:
    """The real MCP test server (tests/support/mcp_server.py), one a module."""
    async with running_mcp_server() as server:
        yield server


@pytest.fixture(scope="session")
async def envoy_url(sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(sidecar) as envoy:
        yield envoy


@pytest.fixture(params=["http", "envoy"])
def door(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def base_url(door: str, request: pytest.FixtureRequest, sidecar: Sidecar) -> str:
    """The client's base URL (without /v1) for the door under test."""
    if door == "envoy":
        return request.getfixturevalue("envoy_url")
    return sidecar.http_url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield sdk


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """Raw HTTP, for what the SDK hides: exact bytes, status codes, malformed bodies."""
    async with aiohttp.ClientSession(base_url=base_url, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    """For a suite that starts its own deployed stack (its module's ``gateway`` fixture): each door's URL."""
    return gateway.sidecar.http_url if request.param == "http" else gateway.url


@pytest.fixture
async def sdk(door_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The SDK at that stack's door under test."""
    async with async_sdk(base_url=f"{door_url}/v1", api_key="sk-client", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture
async def upstream_log(sidecar: Sidecar) -> AsyncIterator[UpstreamLog]:
    log = UpstreamLog(sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    yield log
