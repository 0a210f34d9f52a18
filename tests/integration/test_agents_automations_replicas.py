"""Automations on two replicas sharing one PostgreSQL database, each behind its own real Envoy: both replicas'
schedulers see every occurrence due, and exactly one invocation (and one session) is made per occurrence."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.integration.test_agents_automations import invocations, one_invocation_per_occurrence
from tests.support.envoy import have_envoy
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.replicas import Replica, running_replicas

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free]


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str,
                   postgres_server: PostgresServer) -> AsyncIterator[list[Replica]]:
    with fresh_database(postgres_server, "automations") as url:
        async with running_replicas(tmp_path_factory.mktemp("automation-replicas"), fake_upstream, url) as started:
            yield started


async def test_two_replicas_make_one_invocation_per_occurrence(replicas: list[Replica]) -> None:
    a, b = replicas
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(a.envoy_url, timeout=timeout) as on_a, \
            aiohttp.ClientSession(b.envoy_url, timeout=timeout) as on_b:
        automation_id = await one_invocation_per_occurrence(on_a, keep=True)
        assert await invocations(on_b, automation_id) == await invocations(on_a, automation_id)
        async with on_b.delete(f"/v1/agents/automations/{automation_id}",
                               headers={"OpenAI-Beta": "agents=v1"}) as answer:
            assert answer.status == 200
