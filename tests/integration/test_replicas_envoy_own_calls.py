"""The HTTP door's own model calls through Envoy (``upstream_via``) when a replica is killed (issue #99).

A background run's model call and the tool loop's turns are the sidecar's own calls, made through Envoy's listener.
Through Envoy a refused connection never reaches the sidecar as one: Envoy answers it. So the door names the picked
replica and then the other replicas in (``x-gateway-destination-endpoint``, ``ip:port``, as the processor names
them), the route's one retry moves a call that reached no replica to the next, and the answer says which replica
answered (``x-responses-bridge-replica``): another than the picked one, and the picked one is taken out and the
chain is bound where the call landed.

Each test has a fleet of its own (three fake model servers, the sidecar, Envoy: test_replicas_envoy.running_fleet),
since it kills one of them; every turn's replica is read from the fakes' own logs.

* A background run whose chain's replica was killed completes on one other replica with no error, and the chain's
  next turns — background and through the processor — stay there.
* A tool-loop response (image generation, every model turn and the tool's call the sidecar's own) whose chain's
  replica was killed completes on one other replica, and the chain stays there.
* Envoy's own 503, when every replica it tried refused, is a refused connection to the door: the replicas taken
  out, the client's answer the 502 ``upstream_unreachable`` naming the upstream, as without Envoy.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

from tests.integration.test_replicas_envoy import Fleet, _landed, _turn, running_fleet
from tests.support.envoy import have_envoy

# the sidecar on its own SQLite file whatever the store switch says: the subject is where calls go, not the store
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free]


async def _background(fleet: Fleet, client: openai.AsyncOpenAI, previous: str, text: str) -> tuple[str, int]:
    """A background turn chained to ``previous``, waited for: (its id, the replica its model call landed on)."""
    before = await fleet.counts()
    queued = await client.responses.create(model="fake-model", input=text, previous_response_id=previous,
                                           background=True)
    for _ in range(600):
        done = await client.responses.retrieve(queued.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.025)
    assert done.status == "completed", done
    return done.id, await _landed(fleet, before)


async def _replica_series(fleet: Fleet, index: int) -> str:
    """The sidecar's ``/metrics`` lines of replica ``index``."""
    endpoint = fleet.urls[index].removeprefix("http://").removesuffix("/v1")
    async with aiohttp.ClientSession() as session, session.get(f"{fleet.http_url}/metrics") as answer:
        text = await answer.text()
    return "\n".join(line for line in text.splitlines() if f'replica="{endpoint}"' in line)


async def _retried_by_envoy(fleet: Fleet) -> int:
    stats = await fleet.envoy.stats("cluster.llm_upstream.upstream_rq_retry")
    return int(stats.get("cluster.llm_upstream.upstream_rq_retry", 0))


async def test_a_background_run_whose_replica_was_killed_continues_on_one_other(tmp_path: Path) -> None:
    async with running_fleet(tmp_path) as fleet, fleet.client() as client:
        response_id, home = await _turn(fleet, client, input="Start a chain for the background.")
        response_id, replica = await _background(fleet, client, response_id, "First in the background.")
        assert replica == home  # the door's own call named the chain's replica, and Envoy honoured it
        retries = await _retried_by_envoy(fleet)
        await fleet.stop(home)  # refuses connections from now on
        response_id, moved = await _background(fleet, client, response_id, "After the kill.")
        assert moved != home
        assert await _retried_by_envoy(fleet) > retries  # Envoy's retry carried it, the client's had no need
        for turn in range(2):  # the chain was bound where the call landed, and stays
            response_id, replica = await _background(fleet, client, response_id, f"Still here? ({turn})")
            assert replica == moved
        _, replica = await _turn(fleet, client, input="And in the foreground?", previous_response_id=response_id)
        assert replica == moved  # the processor finds the chain where the door's call moved it
        series = await _replica_series(fleet, home)
        assert re.search(r"responses_bridge_replica_up\{[^}]*\} 0\.0", series), series  # taken out
        assert re.search(r'responses_bridge_replica_failures_total\{[^}]*kind="connect_failed"[^}]*\} [1-9]',
                         series), series


async def test_a_tool_loop_whose_replica_was_killed_continues_on_one_other(tmp_path: Path) -> None:
    args = base64.b64encode(orjson.dumps({"prompt": "a red kite"})).decode()
    tools = [{"type": "image_generation", "quality": "low", "size": "1024x1024"}]
    async with running_fleet(tmp_path, {"RESPONSES_BRIDGE_IMAGE_GENERATION": "upstream"}) as fleet, \
            fleet.client(timeout=60) as client:
        response_id, home = await _turn(fleet, client, input="Start a chain for the tool loop.")
        await fleet.stop(home)
        before = await fleet.counts()
        response = await client.responses.create(  # the sidecar's door runs the loop: each model turn its own call
            model="fake-model", input=f"loop marker call image_generation [args64={args}]", tools=tools,
            previous_response_id=response_id)  # type: ignore[arg-type]
        assert response.status == "completed", response
        assert [item.type for item in response.output] == ["image_generation_call", "message"]
        after = await fleet.counts()
        grown = [index for index, (was, now) in enumerate(zip(before, after, strict=True)) if now > was]
        assert len(grown) == 1 and grown[0] != home, (before, after)  # both model turns (and the image) on one
        moved = grown[0]
        assert after[moved] - before[moved] >= 2
        response_id = response.id
        for turn in range(2):
            _, replica = await _turn(fleet, client, input=f"After the loop ({turn}).", previous_response_id=response_id)
            assert replica == moved
        response_id, replica = await _turn(fleet, client, input="Once more.", previous_response_id=response_id)
        assert replica == moved


async def test_every_replica_refusing_through_envoy_is_the_upstreams_502(tmp_path: Path) -> None:
    async with running_fleet(tmp_path) as fleet, fleet.client() as client:
        response_id, _ = await _turn(fleet, client, input="Start a chain.")
        for index in range(len(fleet.urls)):
            await fleet.stop(index)
        queued = await client.responses.create(model="fake-model", input="Anyone?", previous_response_id=response_id,
                                               background=True)
        for _ in range(600):
            done = await client.responses.retrieve(queued.id)
            if done.status not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.025)
        assert done.status == "failed", done
        assert done.error is not None and done.error.code == "server_error", done
        assert done.error.message.startswith("upstream_unreachable:"), done.error  # a refused connection's code
        assert "upstream 'default'" in done.error.message, done.error  # the upstream named, as without Envoy
        for index in range(len(fleet.urls)):  # every pick ended: the calls Envoy refused hold nothing in flight
            series = await _replica_series(fleet, index)
            assert re.search(r"responses_bridge_replica_in_flight\{[^}]*\} 0\.0", series), series
