"""The two doors of an Agents API suite, as pytest fixtures over the module's own ``sidecar`` fixture: an Envoy in
front of it (``envoy``), each test run through the HTTP door and through Envoy (``base``), an aiohttp session with
the beta header (``door``) and the SDK's client (``sdk``) on that door. A module imports them by name (pytest finds
fixtures in the module's namespace, by the names given here, so the module's own ``door`` and ``sdk`` parameters
shadow nothing) and defines ``sidecar`` as its subject needs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from tests.support.bridge import Sidecar
from tests.support.gateway import envoy_before

BETA = {"OpenAI-Beta": "agents=v1"}  # the SDK's header for client.beta.agents
TIMEOUT = 90  # seconds: a turn running a sandbox call on a loaded machine


@pytest.fixture(scope="module", name="envoy")
async def envoy_fixture(sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(sidecar) as url:
        yield url


@pytest.fixture(params=["http", "envoy"], name="base")
def base_fixture(request: pytest.FixtureRequest, sidecar: Sidecar) -> str:
    return sidecar.http_url if request.param == "http" else str(request.getfixturevalue("envoy"))


@pytest.fixture(name="door")
async def door_fixture(base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base, headers=BETA, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
        yield http


@pytest.fixture(name="sdk")
async def sdk_fixture(base: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-client", max_retries=0,
                                  timeout=TIMEOUT) as client:
        yield client
