"""Replicas of one backend behind the HTTP door (issue 99): three fake upstreams, each its own process and port,
given to one sidecar as ``--upstream`` three times. Every kind of chain keeps its replica (``previous_response_id``
JSON and streamed, a conversation, the tool loop's turns of one response, background runs, WebSocket mode, an Agents
session's turns), across the worker processes of ``serve --workers`` too (the chain map kept in the store);
different chains spread; a hot shared prefix keeps every replica within 1.5 times the mean; a replica killed
mid-session is taken out and each of its chains continues on one other replica (the turn that found it dead
retried there before any byte was sent); every replica down is the 502 of one server, naming the upstream;
``discover: dns`` makes a replica of each address of a name. /metrics and the console's Operations page show each
replica.

The Envoy door's picking (an ORIGINAL_DST cluster honouring the endpoint header) has its own tests beside
envoy-config's; here the sidecar makes its own calls. Markers in the user's text tell which replica served a call
(each fake keeps the bodies it received).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.bridge import running_sidecar
from tests.support.replica_fleet import Fleet, running_fleet

pytestmark = pytest.mark.store_free

MODEL = "fake-model"
INSTRUCTIONS = "You are a careful assistant. " * 600  # a long shared prefix (~17 KB): every request begins with it


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    async with running_fleet(str(tmp_path_factory.mktemp("replicas")), 3,
                             env={"RESPONSES_BRIDGE_IMAGE_GENERATION": "upstream",
                                  "RESPONSES_BRIDGE_CONSOLE": "on"}) as started:
        yield started


@pytest.fixture
async def http(fleet: Fleet) -> AsyncIterator[aiohttp.ClientSession]:
    await fleet.clear()
    async with aiohttp.ClientSession(base_url=fleet.sidecar.http_url) as session:
        yield session


async def create(http: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    async with http.post("/v1/responses", json={"model": MODEL, "instructions": INSTRUCTIONS, **body}) as answer:
        data = await answer.json()
        assert answer.status == 200, data
        return data


async def one_replica(fleet: Fleet, *markers: str) -> int:
    """The one replica every call marked with one of ``markers`` went to."""
    served = {marker: await fleet.served(marker) for marker in markers}
    places = {index for found in served.values() for index in found}
    assert all(served.values()), served
    assert len(places) == 1, served
    return places.pop()


async def test_a_previous_response_id_chain_stays_on_its_replica(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    homes = []
    for chain in range(4):  # four chains: each on one replica, between them more than one
        previous = None
        for turn in range(4):
            extra = {"previous_response_id": previous} if previous else {}
            previous = (await create(http, input=f"chain{chain} turn{turn}", **extra))["id"]
        homes.append(await one_replica(fleet, *(f"chain{chain} turn{turn}" for turn in range(4))))
    assert len(set(homes)) > 1, homes


async def test_a_streamed_chain_stays_on_its_replica(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    previous = None
    for turn in range(3):
        body = {"model": MODEL, "instructions": INSTRUCTIONS, "input": f"stream turn{turn}", "stream": True,
                **({"previous_response_id": previous} if previous else {})}
        async with http.post("/v1/responses", json=body) as answer:
            assert answer.status == 200
            text = await answer.text()
        done = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        assert done[-1]["type"] == "response.completed"
        previous = done[-1]["response"]["id"]
    await one_replica(fleet, "stream turn0", "stream turn1", "stream turn2")


async def test_a_conversation_stays_on_its_replica(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/conversations", json={}) as answer:
        conversation = (await answer.json())["id"]
    for turn in range(4):
        await create(http, input=f"conv turn{turn}", conversation=conversation)
    await one_replica(fleet, *(f"conv turn{turn}" for turn in range(4)))


async def test_the_tool_loop_turns_of_one_response_stay_on_its_replica(fleet: Fleet,
                                                                        http: aiohttp.ClientSession) -> None:
    args = base64.b64encode(orjson.dumps({"prompt": "a red kite"})).decode()
    done = await create(http, input=f"loop marker call image_generation [args64={args}]",
                        tools=[{"type": "image_generation", "quality": "low", "size": "1024x1024"}])
    assert [item["type"] for item in done["output"]] == ["image_generation_call", "message"]
    bodies = await fleet.bodies()
    turns = [index for index, entries in enumerate(bodies)
             for entry in entries if "loop marker" in json.dumps(entry["body"])]
    assert len(turns) == 2 and len(set(turns)) == 1, turns  # the call and the turn with its result: one replica
    images = [index for index, replica in enumerate(fleet.replicas)
              for entry in await replica.log.entries() if entry["path"] == "/v1/images/generations"]
    assert images == turns[:1]  # the tool's own call to the upstream went there too


async def test_background_runs_keep_their_chain(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    previous = None
    for turn in range(3):
        extra = {"previous_response_id": previous} if previous else {}
        queued = await create(http, input=f"bg turn{turn}", background=True, store=True, **extra)
        previous = queued["id"]
        for _ in range(300):
            async with http.get(f"/v1/responses/{previous}") as answer:
                status = (await answer.json())["status"]
            if status not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.05)
        assert status == "completed"
    await one_replica(fleet, "bg turn0", "bg turn1", "bg turn2")


async def test_websocket_mode_keeps_its_chain(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect("/v1/responses") as ws:
        previous = None
        for turn in range(3):
            await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "instructions": INSTRUCTIONS,
                                          "input": f"ws turn{turn}",
                                          **({"previous_response_id": previous} if previous else {})}))
            while True:
                event = json.loads((await ws.receive(timeout=30)).data)
                if event["type"] in ("response.completed", "response.failed", "error"):
                    break
            assert event["type"] == "response.completed", event
            previous = event["response"]["id"]
    await one_replica(fleet, "ws turn0", "ws turn1", "ws turn2")


async def test_an_agents_session_keeps_its_replica(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    beta = {"OpenAI-Beta": "agents=v1"}
    body = {"agent": {"model": MODEL, "instructions": INSTRUCTIONS}, "environment": {"type": "none"},
            "input": "sess turn0", "stream": True}
    async with http.post("/v1/agents/sessions", json=body, headers=beta) as answer:
        assert answer.status == 200
        first = await answer.read()
    session = json.loads(next(line[6:] for line in first.decode().splitlines() if line.startswith("data: ")))
    session_id = session["session"]["id"]
    for turn in (1, 2):  # each turn a background response chained to the one before (previous_response_id)
        message = {"type": "agent.session.input.message",
                   "input": [{"role": "user", "content": [{"type": "input_text", "text": f"sess turn{turn}"}]}]}
        async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [message]},
                             headers=beta) as answer:
            assert answer.status == 202, await answer.text()  # accepted: the turn runs in the background
        for _ in range(300):  # its turn made its model call and ended: the session idle again
            async with http.get(f"/v1/agents/sessions/{session_id}", headers=beta) as answer:
                idle = (await answer.json())["status"] == "idle"
            if idle and await fleet.served(f"sess turn{turn}"):
                break
            await asyncio.sleep(0.05)
    await one_replica(fleet, "sess turn0", "sess turn1", "sess turn2")


async def test_a_hot_shared_prefix_keeps_every_replica_near_the_mean(fleet: Fleet,
                                                                     http: aiohttp.ClientSession) -> None:
    for wave in range(4):  # 12 at once, each 300 ms at its replica: the shared prefix's replica fills up first
        await asyncio.gather(*(create(http, input=f"hot w{wave} r{n} [header_delay=300]", store=False)
                               for n in range(12)))
    counts = [sum(1 for entry in entries if "hot w" in json.dumps(entry["body"]))
              for entries in await fleet.bodies()]
    assert sum(counts) == 48
    assert max(counts) <= 1.5 * sum(counts) / len(counts), counts


async def test_metrics_and_console_show_each_replica(fleet: Fleet, http: aiohttp.ClientSession) -> None:
    seen = await create(http, input="seen")
    async with http.get(f"/console/logs/{seen['id']}") as answer:  # its stored timing names the replica it went to
        shown = await answer.text()
    assert answer.status == 200
    named = re.search(r'data-fact="replica">([^<]+)<', shown)
    assert named is not None and named[1] in {replica.endpoint for replica in fleet.replicas}
    async with http.get("/metrics") as answer:
        text = await answer.text()
    for replica in fleet.replicas:
        assert re.search(rf'responses_bridge_replica_picked_total{{replica="{replica.endpoint}",upstream="default"}} '
                         r"[1-9]", text) or re.search(
            rf'responses_bridge_replica_picked_total{{upstream="default",replica="{replica.endpoint}"}} [1-9]', text)
        assert re.search(rf'responses_bridge_replica_up{{.*replica="{replica.endpoint}".*}} 1\.0', text)
    async with http.get("/console/operations") as answer:
        page = await answer.text()
    assert answer.status == 200
    for replica in fleet.replicas:
        assert f'data-replica="{replica.endpoint}" data-state="in"' in page


async def test_a_killed_replica_is_taken_out_and_its_chains_move_once(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    async with running_fleet(str(tmp_path_factory.mktemp("replicas-kill")), 3) as fleet, \
            aiohttp.ClientSession(base_url=fleet.sidecar.http_url) as http:
        previous: dict[int, str] = {}
        homes: dict[int, int] = {}
        for chain in range(6):
            for turn in range(2):
                extra = {"previous_response_id": previous[chain]} if chain in previous else {}
                previous[chain] = (await create(http, input=f"k{chain} t{turn}", **extra))["id"]
            homes[chain] = await one_replica(fleet, f"k{chain} t0", f"k{chain} t1")
        victim = max(set(homes.values()), key=list(homes.values()).count)
        moved = [chain for chain, home in homes.items() if home == victim]
        fleet.replicas[victim].kill()  # mid-session: its chains' next turns find it refusing
        for turn in range(2, 5):
            for chain in range(6):
                done = await create(http, input=f"k{chain} t{turn}", previous_response_id=previous[chain])
                previous[chain] = done["id"]  # 200: the refused connection was retried on another replica
        for chain in range(6):
            after = await one_replica(fleet, *(f"k{chain} t{turn}" for turn in range(2, 5)))
            if chain in moved:
                assert after != victim
            else:
                assert after == homes[chain]  # the others' chains never moved
        for _ in range(3):  # the sidecar's other calls (the model list, compaction) go to the replicas still in
            async with http.get("/v1/models") as answer:
                assert answer.status == 200 and (await answer.json())["data"]
        async with http.post("/v1/responses/compact", json={"model": MODEL, "input": [
                {"role": "user", "content": "compact me"}, {"role": "assistant", "content": "fine"}]}) as answer:
            assert answer.status == 200, await answer.text()
        async with http.get("/metrics") as answer:
            text = await answer.text()
        dead = fleet.replicas[victim].endpoint
        assert re.search(rf'responses_bridge_replica_up{{.*replica="{dead}".*}} 0\.0', text), text
        assert re.search(rf'responses_bridge_replica_failures_total{{.*kind="connect_failed".*replica="{dead}".*}}'
                         r" [1-9]", text) or re.search(
            rf'responses_bridge_replica_failures_total{{.*replica="{dead}".*kind="connect_failed".*}} [1-9]', text)

        for replica in fleet.replicas:
            replica.kill()
        async with http.post("/v1/responses", json={"model": MODEL, "input": "anyone?"}) as answer:
            error = (await answer.json())["error"]
            assert answer.status == 502, error  # as one server refusing: the same status and code, the upstream named
        assert error["code"] == "upstream_unreachable" and error["type"] == "server_error"
        assert "upstream 'default'" in error["message"] and "3 replicas" in error["message"], error
        assert set(error) == {"message", "type", "param", "code"}
        async with http.post("/v1/responses", json={"model": MODEL, "input": "anyone?", "stream": True}) as answer:
            assert answer.status == 200  # a stream opens first, as with one server: it ends response.failed
            events = [json.loads(line[6:]) for line in (await answer.text()).splitlines()
                      if line.startswith("data: {")]
        assert events[-1]["type"] == "response.failed"
        failed = events[-1]["response"]["error"]["message"]
        assert failed.startswith("upstream_unreachable:") and "upstream 'default'" in failed, failed


async def test_chains_keep_their_replica_across_worker_processes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``serve --workers 2``: each worker picks on its own, and a chain's turns land on either (a new connection
    per request); the chain map kept in the store (replicas/persist.py) sends every turn to the chain's replica."""
    async with running_fleet(str(tmp_path_factory.mktemp("replicas-workers")), 3, "--workers", "2") as fleet, \
            aiohttp.ClientSession(base_url=fleet.sidecar.http_url,
                                  connector=aiohttp.TCPConnector(force_close=True)) as http:
        previous: dict[int, str] = {}
        for turn in range(6):
            for chain in range(3):
                extra = {"previous_response_id": previous[chain]} if chain in previous else {}
                async with http.post("/v1/responses", json={"model": MODEL, "instructions": INSTRUCTIONS,
                                                            "input": f"w{chain} t{turn}", **extra}) as answer:
                    done = await answer.json()
                    assert answer.status == 200, done
                previous[chain] = done["id"]
        for chain in range(3):
            await one_replica(fleet, *(f"w{chain} t{turn}" for turn in range(6)))


async def test_a_name_is_resolved_to_its_addresses(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``discover: dns``: the upstream's name (``localhost`` here, a headless Service in a cluster) becomes one
    replica per address; an address nothing listens on (``::1`` where localhost has it) is taken out, and the calls
    go on at the others."""
    async with running_fleet(str(tmp_path_factory.mktemp("replicas-dns")), 1) as plain:
        fake = plain.replicas[0]
        upstreams = json.dumps([{"name": "pods", "url": f"http://localhost:{fake.port}/v1", "discover": "dns",
                                 "dns_refresh_seconds": 1}])
        env = {"RESPONSES_BRIDGE_UPSTREAMS": upstreams, "RESPONSES_BRIDGE_DEFAULT_UPSTREAM": "pods"}
        async with running_sidecar(str(tmp_path_factory.mktemp("replicas-dns-sidecar")), fake.url, env=env,
                                   own_sqlite=True) as sidecar, \
                aiohttp.ClientSession(base_url=sidecar.http_url) as http:
            wanted = f'replica="127.0.0.1:{fake.port}"'
            for _ in range(200):  # the first resolution, made as the sidecar starts
                async with http.get("/metrics") as answer:
                    if wanted in await answer.text():
                        break
                await asyncio.sleep(0.05)
            previous = None
            for turn in range(3):
                extra = {"previous_response_id": previous} if previous else {}
                previous = (await create(http, input=f"dns turn{turn}", **extra))["id"]
            async with http.get("/metrics") as answer:
                text = await answer.text()
            assert re.search(rf'responses_bridge_replica_picked_total{{[^}}]*{re.escape(wanted)}[^}}]*}} [1-9]', text)
            assert f'replica="localhost:{fake.port}"' not in text  # the name itself is no replica once resolved
