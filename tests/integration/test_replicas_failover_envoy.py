"""Two replicas on one PostgreSQL behind ONE Envoy, as a load balancer fronts a Deployment: replica A is the
sidecar cluster's first priority, replica B its failover (priority 1), Envoy's active health checks deciding which
one is served. Work sent through Envoy runs on A; A is stopped mid-run — ``kill -9``, or a SIGTERM whose drain is
shorter than the run (A's readers get their streams ended cleanly, its runs handed off at once); Envoy's health check
finds A gone and routes to B, and B's sweep takes A's runs over (a killed A's once their lease lapsed):

- a background response killed in its slow model call completes exactly once, on B, and a reader that was
  following its stream through Envoy (``GET …?stream=true``) resumes it through the same Envoy with
  ``starting_after``: no gap, no repeat;
- an Agents session's running turn with two inputs queued behind it: every input answered once by B, and the
  reader of the session's events resumes through Envoy with ``Last-Event-ID``: no gap, no repeat.

(The restart of one process on its database is test_background_resume_envoy.py; a tool loop's step taken over by
a replica behind its own Envoy, test_replicas_steps.py.)

One stack for the module: the database, Envoy and B live through it; A is started for each test on the same fixed
ports (those Envoy's first priority names) and stopped in it.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import bootstrap_dict, to_yaml
from responses_bridge.envoy_config.names import EXTPROC_CLUSTER, HTTP_CLUSTER
from tests.integration import test_agents_durable as sessions
from tests.integration.test_background import parse_sse
from tests.integration.test_background_resume import QUICK, SLOW, TIMEOUT, read_until_deltas
from tests.integration.test_background_steps import check_finished_once
from tests.support.bridge import PYTHON
from tests.support.envoy import EnvoyProcess, have_envoy, start_envoy
from tests.support.postgres import PostgresServer, fresh_database

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

ENV = {
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"failover-test-sealing-key-32byte").decode(),
    # a dead replica's runs taken over soon, a live one's kept: with 1 s a loaded machine stalled the running
    # replica's heartbeat past its lease and the other resumed the session while the first was still alive
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3",
    "RESPONSES_BRIDGE_DRAIN_TIMEOUT": "1",  # shorter than the run
}
FAILOVER = (HTTP_CLUSTER, EXTPROC_CLUSTER)  # the clusters with a health check: the ones Envoy can fail over
PROBES = 4  # requests in a row, on new connections, that must reach the replica Envoy is to send to


@dataclass
class Ports:
    http: int
    extproc: int


@dataclass
class Stack:
    url: str  # Envoy's listener, without /v1
    envoy: EnvoyProcess
    database_url: str
    a: Ports  # the first priority's: each test's replica A listens there
    b: Ports
    root: Path


def two_replica_bootstrap(listen_port: int, upstream: str, a: Ports, b: Ports) -> str:
    """The rendered bootstrap with B added to the sidecar's clusters as their priority-1 endpoint (Envoy sends
    there only while A fails its health check), the checks made every 0.25 s, one failure enough."""
    bootstrap = bootstrap_dict(listen_port=listen_port, extproc_port=a.extproc, http_port=a.http, upstream=upstream,
                               admin_port=0)
    for cluster in bootstrap["static_resources"]["clusters"]:
        if cluster["name"] not in FAILOVER:
            continue
        port = b.http if cluster["name"] == HTTP_CLUSTER else b.extproc
        cluster["load_assignment"]["endpoints"].append({"priority": 1, "lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]})
        for check in cluster["health_checks"]:
            check.update(interval="0.25s", no_traffic_interval="0.25s", unhealthy_threshold=1, healthy_threshold=1)
    return to_yaml(bootstrap)


def start_replica(stack_root: Path, name: str, upstream: str, database_url: str, ports: Ports) -> ManagedProcess:
    """A replica's sidecar on the shared database (its own data directory), its calls straight to the upstream."""
    data_dir = stack_root / name
    data_dir.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "serve", "--upstream", upstream,
                              "--api-key", "sk-upstream", "--http-port", str(ports.http),
                              "--extproc-port", str(ports.extproc), "--db", str(data_dir / "responses.sqlite")],
                             f"replica:{name}", quiet=False, env={"RESPONSES_BRIDGE_DATABASE_URL": database_url, **ENV})
    process.start()
    return process


async def routed_to(envoy: EnvoyProcess, url: str, ports: Ports) -> None:
    """Waits until Envoy sends to ``ports``' replica, as its health checks decide: several requests in a row, each
    on a new connection (any Envoy worker), reached it — a probe of the HTTP door's cluster and a Responses request,
    which the processor's cluster gets."""
    deadline = asyncio.get_running_loop().time() + 30
    in_a_row = 0
    async with aiohttp.ClientSession(timeout=TIMEOUT) as admin:
        before = await _served(admin, envoy, ports)
        while in_a_row < PROBES:
            assert asyncio.get_running_loop().time() < deadline, f"Envoy never sent to {ports}"
            async with aiohttp.ClientSession(timeout=TIMEOUT) as fresh:  # a new connection: any worker
                async with fresh.get(f"{url}/health") as answer:
                    await answer.read()
                async with fresh.post(f"{url}/v1/responses", json={"model": "fake-model", "input": "ready?",
                                                                    "store": False}) as answer:
                    await answer.read()
            served = await _served(admin, envoy, ports)
            in_a_row = in_a_row + 1 if all(now > then for now, then in zip(served, before, strict=True)) else 0
            before = served
            await asyncio.sleep(0.05)


async def served(stack: Stack, ports: Ports) -> tuple[int, int]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as admin:
        return await _served(admin, stack.envoy, ports)


async def _served(admin: aiohttp.ClientSession, envoy: EnvoyProcess, ports: Ports) -> tuple[int, int]:
    """The requests Envoy sent so far to this replica's HTTP door and processor."""
    async with admin.get(f"{envoy.admin_url}/clusters") as answer:
        lines = (await answer.text()).splitlines()
    counts = {line.rsplit("::", 1)[0]: int(line.rsplit("::", 1)[1]) for line in lines if "::rq_total::" in line}
    return (counts.get(f"{HTTP_CLUSTER}::127.0.0.1:{ports.http}::rq_total", 0),
            counts.get(f"{EXTPROC_CLUSTER}::127.0.0.1:{ports.extproc}::rq_total", 0))


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, postgres_server: PostgresServer,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("failover")
    a, b = Ports(free_port(), free_port()), Ports(free_port(), free_port())
    listen_port = free_port()
    with fresh_database(postgres_server, f"failover{uuid.uuid4().hex[:8]}") as database_url:
        replica_b = start_replica(root, "b", fake_upstream, database_url, b)
        try:
            await wait_http(f"http://127.0.0.1:{b.http}/health/ready", timeout=60, process=replica_b)
            envoy = await start_envoy(two_replica_bootstrap(listen_port, fake_upstream, a, b))
            try:
                yield Stack(f"http://127.0.0.1:{listen_port}", envoy, database_url, a, b, root)
            finally:
                envoy.stop()
        finally:
            await asyncio.to_thread(replica_b.stop)


async def started_a(stack: Stack, fake_upstream: str) -> ManagedProcess:
    """Replica A, up and the one Envoy sends to."""
    process = start_replica(stack.root, "a", fake_upstream, stack.database_url, stack.a)
    await wait_http(f"http://127.0.0.1:{stack.a.http}/health/ready", timeout=60, process=process)
    await routed_to(stack.envoy, stack.url, stack.a)
    return process


async def stopped(process: ManagedProcess, stack: Stack, how: str, reading: aiohttp.ClientResponse) -> bytes:
    """``kill -9`` (``how == "kill"``) or SIGTERM of A's process group, then waits until Envoy sends to B, as a
    load balancer finds out. What ``reading`` got after the stop: a draining A ends its readers' streams cleanly."""
    sessions.stop(process, how)
    rest = b"" if how == "kill" else await sessions.read_to_end(reading)
    assert process.process is not None
    assert await asyncio.to_thread(process.process.wait, 60) == (-9 if how == "kill" else 0)
    await routed_to(stack.envoy, stack.url, stack.b)
    return rest


STOPS = pytest.mark.parametrize("how", ["kill", "term"])


@STOPS
async def test_a_background_run_stopped_on_one_replica_is_finished_by_the_other_behind_one_envoy(
        how: str, stack: Stack, fake_upstream: str) -> None:
    marker = f"f{uuid.uuid4().hex[:10]}"
    process = await started_a(stack, fake_upstream)
    b_before = await served(stack, stack.b)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(f"{stack.url}/v1/responses", json={
                    "model": "fake-model", "input": f"{SLOW} {marker}", "background": True}) as answer:
                assert answer.status == 200, await answer.text()
                response_id = (await answer.json())["id"]
            answer = await session.get(f"{stack.url}/v1/responses/{response_id}",
                                       params={"stream": "true", "starting_after": "-1"})
            assert answer.status == 200, await answer.text()
            seen: list[dict[str, Any]] = await read_until_deltas(answer)
            assert await served(stack, stack.b) == b_before  # it runs on A
            rest, done = parse_sse(await stopped(process, stack, how, answer))
            assert done or how == "kill", "the draining replica did not end its reader's stream cleanly"
            seen += rest
            answer.close()
    finally:
        process.stop()
    assert not any(event["type"] in ("response.failed", "response.completed") for event in seen)
    assert [event["sequence_number"] for event in seen] == list(range(len(seen)))
    ended = await check_finished_once(stack.url, response_id, seen)  # through Envoy, now to B
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
            f"{stack.url}/v1/responses", json={"model": "fake-model", "input": f"{QUICK} {marker}",
                                               "store": False}) as answer:
        expected = (await answer.json())["output"][0]["content"][0]["text"]
    assert ended["output"][-1]["content"][0]["text"] == expected


@STOPS
async def test_a_session_turn_stopped_on_one_replica_is_resumed_by_the_other_with_its_queue_behind_one_envoy(
        how: str, stack: Stack, fake_upstream: str) -> None:
    process = await started_a(stack, fake_upstream)
    b_before = await served(stack, stack.b)
    try:
        async with aiohttp.ClientSession(stack.url, headers=sessions.BETA, timeout=TIMEOUT) as http:
            session_id = await sessions.slow_turn_and_two_queued(http)
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as reading:
                before = await sessions.read_until_deltas(reading)
                assert await served(stack, stack.b) == b_before  # it runs on A
                before += await stopped(process, stack, how, reading)
    finally:
        process.stop()
    seen = sessions.frames(before)
    async with aiohttp.ClientSession(stack.url, headers=sessions.BETA, timeout=TIMEOUT) as http:
        after, whole, turns = await sessions.resumed_log(http, session_id,
                                                           {"headers": {"Last-Event-ID": seen[-1][0]}})
    assert [event_id for event_id, _, _ in seen + after] == [event_id for event_id, _, _ in whole]
    kinds = [kind for _, kind, _ in whole]
    assert "agent.session.turn.failed" not in kinds and kinds.count("agent.session.turn.completed") == 3, kinds
    assert [turn["status"] for turn in turns] == ["completed"] * 3
