"""The Agents API as a capability of the HTTP door (adapters/http/agents/capability.py), in-process over a runtime on
a SQLite file: a door over a store without any of its records starts without it and builds it on the first request
under ``/agents`` or ``/vaults``; a door over a store holding some builds it before serving (its turns to resume,
automations to fire); and a door that started without it builds it once a record appears in the store through
another process (another worker or replica of the same database), so that process ticks too. The idle sidecar's
imports are tests/unit/test_idle_imports.py's; restarts with sessions mid-turn and automations through real
processes are test_agents_restart.py's, test_agents_automations*.py's and test_agents_workers.py's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from responses_bridge.adapters.http.agents.capability import AGENTS, WAKE_SECONDS
from responses_bridge.adapters.http.app import create_app
from responses_bridge.config.settings import Settings
from responses_bridge.runtime import Runtime
from responses_bridge.store.sqlite.responses import SQLiteResponseStore
from tests.support.runtime import runtime_over

pytestmark = pytest.mark.store_free  # its stores are its own SQLite files, whatever the pass

BETA = {"OpenAI-Beta": "agents=v1"}


@asynccontextmanager
async def door(db: Path) -> AsyncIterator[tuple[TestClient, Runtime]]:
    async with SQLiteResponseStore(str(db)) as store:
        runtime = runtime_over(store, Settings(upstream="http://127.0.0.1:9/v1", db=str(db)))
        async with TestClient(TestServer(create_app(runtime))) as client:
            yield client, runtime


def loaded(client: TestClient) -> bool:
    return client.app[AGENTS].loaded is not None


async def test_a_door_over_a_store_without_agents_builds_it_on_the_first_request(tmp_path: Path) -> None:
    async with door(tmp_path / "bridge.db") as (client, _):
        assert (await client.get("/health")).status == 200
        assert (await client.get("/v1/conversations/conv_x")).status == 404
        assert not loaded(client)
        listed = await client.get("/v1/agents", headers=BETA)
        assert listed.status == 200 and (await listed.json())["data"] == []
        assert loaded(client)
        created = await client.post("/v1/agents", json={"model": "m", "name": "first"}, headers=BETA)
        assert created.status == 200, await created.text()
        missing = await client.get("/agents/agent_missing", headers=BETA)  # without /v1 too, its errors as before
        assert missing.status == 404 and (await missing.json())["error"]["type"] == "invalid_request_error"
        assert (await client.put("/v1/agents", headers=BETA)).status == 405
        assert (await client.get("/v1/vaults", headers=BETA)).status == 200


async def test_a_door_over_a_store_holding_agents_builds_it_before_serving(tmp_path: Path) -> None:
    async with door(tmp_path / "bridge.db") as (client, _):
        created = await client.post("/v1/agents", json={"model": "m", "name": "kept"}, headers=BETA)
        assert created.status == 200, await created.text()
    async with door(tmp_path / "bridge.db") as (client, _):
        assert loaded(client)  # before any request: its start-up (recovery, the automations' tick) has run


async def test_a_record_stored_by_another_process_wakes_it(tmp_path: Path) -> None:
    async with door(tmp_path / "bridge.db") as (client, runtime):
        await asyncio.sleep(WAKE_SECONDS * 1.5)
        assert not loaded(client)  # asked, and the store holds nothing of it
        await runtime.agent_store.put("agent", "agent_other", {"id": "agent_other"}, tenant="default")
        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a timing claim
        while not loaded(client):
            assert time.monotonic() < deadline, "the door never loaded the Agents API"
            await asyncio.sleep(0.05)
