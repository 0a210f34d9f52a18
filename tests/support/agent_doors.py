"""The two doors of an Agents API suite, as pytest fixtures over the module's own ``sidecar`` fixture: an Envoy in
front of it (``envoy``), each test run through the HTTP door and through Envoy (``base``), an aiohttp session with
the beta header (``door``) and the SDK's client (``sdk``) on that door. A module imports them by name (pytest finds
fixtures in the module's namespace, by the names given here, so the module's own ``door`` and ``sdk`` parameters
shadow nothing) and defines ``sidecar`` as its subject needs.

Which doors a test runs through: both, unless it says otherwise with ``@doors("http")`` (or a module, for every
test of it, with ``pytestmark = [..., doors("http")]``). The rule: through Envoy where the wire through Envoy can
differ. Envoy's routes for the Agents API (envoy_config/routes.py ``_agents_routes``) pass every request to the
HTTP door with the processor off — a session's SSE stream passed on as it is written (not buffered), websocket
upgrades (codex exec-server), no route timeout, a request body limit, and Envoy's own local replies for its 5xx.
So a test whose subject is on that wire keeps both doors: an event stream read live, a websocket, a body near the
limit, an error's status and shape, the headers passed through (the beta header, the caller's key), the SDK's strict
parsing of what came through. A test whose subject is behind the door (what the sandbox, an MCP server, a plugin,
a subagent, the scheduler, the vault's credentials do once the HTTP door has the request) runs on the HTTP door
alone: through Envoy it would repeat the same sidecar work, Envoy adding nothing to what it asserts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from tests.support.bridge import Sidecar
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk

BETA = {"OpenAI-Beta": "agents=v1"}  # the SDK's header for client.beta.agents
TIMEOUT = 90  # seconds: a turn running a sandbox call on a loaded machine
DOORS = ("http", "envoy")  # base's values: the sidecar's HTTP door, an Envoy in front of it


def doors(*names: str) -> pytest.MarkDecorator:
    """The doors a test runs through, in place of both: ``base``'s values for that test (an indirect
    parametrization, which takes precedence over the fixture's own ``params``). ``@doors("http")`` for a test
    whose subject is behind the door (the rule in the module's docstring)."""
    if not names or not set(names) <= set(DOORS) or len(set(names)) != len(names):
        raise ValueError(f"doors: one or both of {DOORS}, each once, not {names!r}")
    return pytest.mark.parametrize("base", names, indirect=True)


@pytest.fixture(scope="module", name="envoy")
async def envoy_fixture(sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(sidecar) as url:
        yield url


@pytest.fixture(params=DOORS, name="base")
def base_fixture(request: pytest.FixtureRequest, sidecar: Sidecar) -> str:
    return sidecar.http_url if request.param == "http" else str(request.getfixturevalue("envoy"))


@pytest.fixture(name="door")
async def door_fixture(base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base, headers=BETA, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
        yield http


@pytest.fixture(name="sdk")
async def sdk_fixture(base: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=TIMEOUT) as client:
        yield client
