"""``RESPONSES_BRIDGE_AUTH=keys`` with several upstreams (tests/support/upstreams.py): upstream ``b`` holds its own
key, ``a`` is configured to forward the client's (which in keys mode is a bridge key, so nothing goes), ``n`` is a
native backend without a key. Through both doors: every route that reaches an upstream needs a bridge key, and
no upstream ever receives one, translated, passed through or native.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.bridge import keys_command
from tests.support.envoy import have_envoy
from tests.support.upstreams import Deployment, running_deployment

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Deployment, str]]:
    tmp = str(tmp_path_factory.mktemp("keys_upstreams"))
    async with running_deployment(tmp, auth="keys") as started:
        db = os.path.join(tmp, f"bridge-{started.http_url.rsplit(':', 1)[1]}.db")  # tests/support/bridge.py's name
        made = await asyncio.to_thread(keys_command, db, "create", "--tenant", "acme")
        assert made.returncode == 0, made.stderr
        yield started, made.stdout.strip()


async def _post(url: str, key: str | None, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(url, headers=headers, json=body) as response:
            return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("route", ["responses", "chat/completions"])
@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_every_upstream_gets_its_own_key_or_none_never_the_bridge_key(
        deployment: tuple[Deployment, str], door: str, route: str) -> None:
    stack, key = deployment
    base = stack.envoy_url if door == "envoy" else stack.http_url
    models = ["alpha-1", "beta"] + (["native-1"] if route == "responses" else [])
    for model in models:
        body = ({"model": model, "input": "hi"} if route == "responses"
                else {"model": model, "messages": [{"role": "user", "content": "hi"}]})
        await stack.clear()
        for bad in (None, "sk-not-a-bridge-key"):
            status, answer = await _post(f"{base}/v1/{route}", bad, body)
            assert status == 401 and answer["error"]["code"] == "invalid_api_key", (model, answer)
        assert [await log.entries() for log in stack.logs.values()] == [[], [], []]
        status, answer = await _post(f"{base}/v1/{route}", key, body)
        assert status == 200, answer
        sent = {name: [entry["headers"]["authorization"] for entry in await log.entries()]
                for name, log in stack.logs.items()}
        upstream = {"alpha-1": "a", "beta": "b", "native-1": "n"}[model]
        assert sent[upstream] == (["Bearer sk-upstream-b"] if upstream == "b" else [None]), (model, sent)
