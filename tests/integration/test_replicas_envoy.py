"""Replicas of one upstream behind a real Envoy: the sidecar picks, Envoy connects (issue #99, item 3).

Three fake model servers serve the same models; the sidecar is started with ``--upstream`` three times and Envoy
with the bootstrap ``envoy-config`` renders for them (one cluster whose ``override_host`` load balancer honours the
replica the processor names: envoy_config/replica_cluster.py). Each fake keeps a log of the Chat Completions calls
it received, so every turn's replica is read from where it actually landed, not from what the bridge says.

* A chain stays on its replica through the Envoy door: ``previous_response_id`` (plain and streamed), a
  conversation, and a background run's call, which the sidecar makes itself through Envoy (``upstream_via``,
  naming its pick in ``x-gateway-destination-endpoint``).
* A killed replica: the turn that meets it is retried by Envoy on the next replica the processor named (the call
  reached nothing), no client sees an error, the replica is taken out, and each chain it served continues on one
  other replica, turn after turn.
* A passthrough chat goes to the replica the processor picked for it; a hot shared prefix does not make one
  replica take more than 1.5 times the mean.
* A client's own ``x-gateway-destination-endpoint`` naming an address outside the upstream does not send Envoy
  there: the cluster only ever connects to the upstream's replicas.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.envoy_config.names import DESTINATION_ENDPOINT_HEADER
from tests.support.bridge import PYTHON, UpstreamLog, running_sidecar
from tests.support.envoy import EnvoyProcess, have_envoy, start_envoy
from tests.support.sdk import async_sdk

# the sidecar on its own SQLite file whatever the store switch says: the subject is where calls go, not the store
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free]

REPLICAS = 3


@dataclass
class Fleet:
    urls: list[str]
    fakes: list[ManagedProcess]
    logs: list[UpstreamLog]
    envoy_url: str
    http_url: str
    envoy: EnvoyProcess
    stopped: dict[int, int] = field(default_factory=dict)  # a stopped replica: the calls it had received

    async def counts(self) -> list[int]:
        return [self.stopped[index] if index in self.stopped else len(await log.entries())
                for index, log in enumerate(self.logs)]

    async def stop(self, index: int) -> None:
        self.stopped[index] = len(await self.logs[index].entries())
        self.fakes[index].stop()

    def client(self, **options: object) -> openai.AsyncOpenAI:
        return async_sdk(base_url=f"{self.envoy_url}/v1", api_key="sk-test", max_retries=0, **options)


async def _fake(port: int) -> ManagedProcess:
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                             f"fake-upstream:{port}")
    process.start()
    await wait_http(f"http://127.0.0.1:{port}/health", process=process)
    return process


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    async with running_fleet(tmp_path_factory.mktemp("replicas")) as started:
        yield started


@asynccontextmanager
async def running_fleet(tmp_dir: Path, env: dict[str, str] | None = None) -> AsyncIterator[Fleet]:
    ports = [free_port() for _ in range(REPLICAS)]
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
    async with AsyncExitStack() as stack:
        fakes = list(await asyncio.gather(*(_fake(port) for port in ports)))
        for fake in fakes:
            stack.callback(fake.stop)
        listen_port = free_port()
        extra = [arg for url in urls[1:] for arg in ("--upstream", url)]
        sidecar = await stack.enter_async_context(running_sidecar(
            str(tmp_dir), urls[0], *extra,
            "--upstream-via", f"http://127.0.0.1:{listen_port}/v1", env=env, own_sqlite=True))
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=urls[0], upstream_urls=urls, admin_port=0))
        stack.callback(envoy.stop)
        yield Fleet(urls, fakes, [UpstreamLog(url.removesuffix("/v1")) for url in urls],
                    f"http://127.0.0.1:{listen_port}", sidecar.http_url, envoy)


async def _landed(fleet: Fleet, before: list[int]) -> int:
    """The one replica that received the calls since ``before`` (each turn is one call here)."""
    after = await fleet.counts()
    grown = [index for index, (was, now) in enumerate(zip(before, after, strict=True)) if now > was]
    assert len(grown) == 1, f"calls landed on replicas {grown}: {before} -> {after}"
    return grown[0]


async def _turn(fleet: Fleet, client: openai.AsyncOpenAI, **create: object) -> tuple[str, int]:
    before = await fleet.counts()
    response = await client.responses.create(model="fake-model", **create)  # type: ignore[call-overload]
    assert response.status == "completed", response
    return response.id, await _landed(fleet, before)


async def _streamed_turn(fleet: Fleet, client: openai.AsyncOpenAI, **create: object) -> tuple[str, int]:
    before = await fleet.counts()
    completed = None
    stream = await client.responses.create(model="fake-model", stream=True, **create)  # type: ignore[call-overload]
    async for event in stream:
        if event.type == "response.completed":
            completed = event.response
    assert completed is not None and completed.status == "completed"
    return completed.id, await _landed(fleet, before)


async def test_a_chain_stays_on_its_replica_through_envoy(fleet: Fleet) -> None:
    async with fleet.client() as client:
        response_id, first = await _turn(fleet, client, input="Say one thing about caches.")
        for turn in range(4):  # every turn where the one before it was: its prefix is in that replica's cache
            response_id, replica = await _turn(fleet, client, input=f"And then? ({turn})",
                                               previous_response_id=response_id)
            assert replica == first
        response_id, streamed_first = await _streamed_turn(fleet, client, input="Stream me a story.")
        for turn in range(3):
            response_id, replica = await _streamed_turn(fleet, client, input=f"Go on ({turn}).",
                                                        previous_response_id=response_id)
            assert replica == streamed_first
        # a streamed turn continues a plain chain on its replica too
        _, replica = await _streamed_turn(fleet, client, input="Streamed now.", previous_response_id=response_id)
        assert replica == streamed_first


async def test_a_conversation_stays_on_its_replica_through_envoy(fleet: Fleet) -> None:
    async with fleet.client() as client:
        conversation = await client.conversations.create()
        _, first = await _turn(fleet, client, input="Hello there.", conversation=conversation.id)
        for turn in range(4):
            _, replica = await _turn(fleet, client, input=f"More ({turn}).", conversation=conversation.id)
            assert replica == first


async def test_a_background_turn_goes_where_its_chain_is(fleet: Fleet) -> None:
    """The background run's model call is the sidecar's own, through Envoy (``upstream_via``): it names the
    chain's replica in the header the cluster reads, as the processor names it in metadata."""
    async with fleet.client() as client:
        response_id, first = await _turn(fleet, client, input="Start a chain for later.")
        for turn in range(3):
            before = await fleet.counts()
            queued = await client.responses.create(model="fake-model", input=f"Later ({turn}).",
                                                   previous_response_id=response_id, background=True)
            for _ in range(400):
                done = await client.responses.retrieve(queued.id)
                if done.status not in ("queued", "in_progress"):
                    break
                await asyncio.sleep(0.025)
            assert done.status == "completed", done
            assert await _landed(fleet, before) == first
            response_id = done.id


async def test_a_client_cannot_send_envoy_outside_the_upstream(fleet: Fleet) -> None:
    """The header names a replica only among the upstream's own: an address outside them (here a port nothing
    listens on, which Envoy would otherwise refuse with a 503) is ignored and the call is balanced instead."""
    outside = f"127.0.0.1:{free_port()}"
    before = await fleet.counts()
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(f"{fleet.envoy_url}/v1/chat/completions", headers={
                    DESTINATION_ENDPOINT_HEADER: outside}, json={
                    "model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}) as answer:
                assert answer.status == 200, await answer.text()
    assert sum(await fleet.counts()) - sum(before) == 3


async def _picked(fleet: Fleet) -> list[int]:
    """The sidecar's count of calls it picked each replica for (``/metrics``), in the fleet's order."""
    async with aiohttp.ClientSession() as session, session.get(f"{fleet.http_url}/metrics") as answer:
        text = await answer.text()
    counts = {match.group(1): int(float(match.group(2))) for match in re.finditer(
        r'^responses_bridge_replica_picked_total\{[^}]*replica="([^"]+)"[^}]*\} (\S+)$', text, re.M)}
    return [counts.get(url.removeprefix("http://").removesuffix("/v1"), 0) for url in fleet.urls]


async def test_a_passthrough_chat_goes_to_the_replica_the_processor_picked(fleet: Fleet) -> None:
    """``POST /v1/chat/completions`` has no chain: the processor reads it (its route renders as with stored chats),
    picks a replica by its prompt's prefix and the load, and Envoy sends it exactly there: each chat lands on the
    replica whose pick count grew."""
    prompts = ["You are a careful assistant. " * 200, "You answer in verse. " * 200]  # long: many prefix blocks
    async with aiohttp.ClientSession() as session:
        for index in range(6):
            before, picked_before = await fleet.counts(), await _picked(fleet)
            async with session.post(f"{fleet.envoy_url}/v1/chat/completions", json={
                    "model": "fake-model", "messages": [{"role": "system", "content": prompts[index % 2]},
                                                        {"role": "user", "content": f"question {index}"}]}) as answer:
                assert answer.status == 200, await answer.text()
            landed = await _landed(fleet, before)
            grown = [i for i, (was, now) in enumerate(zip(picked_before, await _picked(fleet), strict=True))
                     if now > was]
            assert grown == [landed], (grown, landed)


async def test_a_hot_shared_prefix_does_not_pile_onto_one_replica(tmp_path: Path) -> None:
    """New chains that all begin with the same long instructions (a shared system prompt and tools, as a coding
    agent's sessions do): the prefix is warm on one replica, and still no replica takes more than 1.5 times the
    mean of them (the picker's load rule, honoured through Envoy as through the HTTP door). A fleet of its own:
    the rule weighs every recent pick, and the module's other tests leave theirs."""
    instructions = "You are a coding agent. Follow the repository's conventions. " * 120
    counts = [0] * REPLICAS
    async with running_fleet(tmp_path) as fleet, fleet.client() as client:
        for index in range(12):
            _, replica = await _turn(fleet, client, instructions=instructions, input=f"Task {index}: fix the bug.")
            counts[replica] += 1
    assert max(counts) <= 1.5 * sum(counts) / REPLICAS, counts


async def test_a_killed_replica_is_taken_out_and_its_chains_move_once(fleet: Fleet, tmp_path: Path) -> None:
    """It stops one replica for good: the module's other tests hold on the two left, in whatever order they run."""
    async with fleet.client() as client:
        chains: list[tuple[str, int]] = []
        for index in range(3 * REPLICAS):  # chains on every replica (chainless turns are balanced by load)
            chains.append(await _turn(fleet, client, input=f"Chain {index}: tell me about replica {index}."))
        served = [replica for _, replica in chains]
        victim = max(range(REPLICAS), key=served.count)
        orphans = [(rid, replica) for rid, replica in chains if replica == victim]
        assert len(orphans) >= 2, served
        await fleet.stop(victim)  # refuses connections from now on
        # the turn that meets it is answered all the same: Envoy retries the call, which reached nothing, on the
        # next replica the processor named, and the processor, told where it landed, takes the victim out and
        # moves the chain there; every chain the victim served continues on one other replica, and stays
        for response_id, _ in orphans:
            response_id, moved = await _turn(fleet, client, input="Continue elsewhere.",
                                             previous_response_id=response_id)
            assert moved != victim
            for turn in range(2):
                response_id, replica = await _turn(fleet, client, input=f"Still there? ({turn})",
                                                   previous_response_id=response_id)
                assert replica == moved
        stats = await fleet.envoy.stats("cluster.llm_upstream.upstream_rq_retry")
        assert int(stats.get("cluster.llm_upstream.upstream_rq_retry", 0)) >= 1  # Envoy's retry carried it
        # the chains of the other replicas never moved
        for response_id, replica in chains:
            if replica != victim:
                _, now = await _turn(fleet, client, input="Where now?", previous_response_id=response_id)
                assert now == replica
