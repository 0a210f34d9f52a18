"""Many replicas, one state: two sidecars, each behind its own real Envoy and with its own data directory, on one
PostgreSQL database. Clients reach the replicas through their Envoys, as a Service spreads them over pods.

What must hold: a chain started on A continues on B, a conversation takes turns from both, a background response
running on A is followed live from B (no gap, no duplicate, ending with its terminal event) and cancelled from B,
a replica that dies has its runs resumed and finished by another once its lease expires, and an unreachable database
fails the start (no fallback to SQLite). Vector stores across replicas: test_replicas_retrieval.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import free_port
from tests.integration.test_background import parse_sse, wait_status
from tests.support.bridge import PYTHON, UpstreamLog
from tests.support.envoy import have_envoy
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.replicas import Replica, running_replica, running_replicas
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free]

MODEL = "fake-model"
LEASE_SECONDS = 2.0  # short, so a dead replica's runs are failed within the test
SHARED_ENV = {
    # one sealing key for every replica: a blob sealed on one opens on the other (as the manifests set it)
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"replicas-test-sealing-key-32byte").decode(),
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": str(LEASE_SECONDS),
}


@pytest.fixture(scope="module")
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    with fresh_database(postgres_server, "replicas") as url:
        yield url


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str,
                   database_url: str) -> AsyncIterator[list[Replica]]:
    async with running_replicas(tmp_path_factory.mktemp("replicas"), fake_upstream, database_url,
                                env=SHARED_ENV) as started:
        yield started


def sdk(replica: Replica) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{replica.envoy_url}/v1", api_key="sk-client", max_retries=0, timeout=60)


async def read_stream(base: str, response_id: str, starting_after: int | None = None) -> tuple[list[dict], bool]:
    params = {"stream": "true"}
    if starting_after is not None:
        params["starting_after"] = str(starting_after)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.get(f"{base}/v1/responses/{response_id}", params=params) as answer:
            assert answer.status == 200, await answer.text()
            return parse_sse(await answer.read())


async def test_chain_started_on_a_continues_on_b(replicas: list[Replica], fake_upstream: str) -> None:
    a, b = replicas
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with sdk(a) as on_a, sdk(b) as on_b:
        first = await on_a.responses.create(model=MODEL, input="my name is Ada")
        assert first.status == "completed"
        await upstream.clear()
        second = await on_b.responses.create(model=MODEL, input="what is my name?", previous_response_id=first.id)
        assert second.status == "completed"
        # B sent turn 1 (read from the shared database) ahead of turn 2
        messages = (await upstream.last_body())["messages"]
        contents = [(m["role"], m["content"]) for m in messages]
        assert contents == [("user", "my name is Ada"), ("assistant", "Echo: my name is Ada"),
                            ("user", "what is my name?")]
        # either replica answers for either response, byte for byte the same
        for response_id in (first.id, second.id):
            answers = []
            for replica in (a, b):
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"{replica.envoy_url}/v1/responses/{response_id}") as answer:
                        assert answer.status == 200
                        answers.append(await answer.read())
            assert answers[0] == answers[1]


async def test_a_conversation_written_by_both(replicas: list[Replica]) -> None:
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        conversation = await on_a.conversations.create(items=[{"type": "message", "role": "user",
                                                                "content": "hello from the start"}])
        await on_a.responses.create(model=MODEL, input="turn on a", conversation=conversation.id)
        await on_b.responses.create(model=MODEL, input="turn on b", conversation=conversation.id)
        await on_b.conversations.items.create(conversation.id, items=[{"type": "message", "role": "user",
                                                                        "content": "added on b"}])
        for client in (on_a, on_b):
            items = [item async for item in client.conversations.items.list(conversation.id, order="asc")]
            texts = [item.content[0].text for item in items]
            assert texts == ["hello from the start", "turn on a", "Echo: turn on a", "turn on b",
                             "Echo: turn on b", "added on b"]


async def test_background_stream_on_a_followed_live_on_b(replicas: list[Replica]) -> None:
    a, b = replicas
    async with sdk(a) as on_a:
        response = await on_a.responses.create(model=MODEL, input="follow me [chunks=30] [delay=60]",
                                               background=True)
        await wait_status(on_a, response.id, {"in_progress"}, timeout=10)
        live, done = await read_stream(b.envoy_url, response.id, starting_after=3)  # joined mid-run, on B
        assert done
        sequence = [event["sequence_number"] for event in live]
        assert sequence == list(range(4, 4 + len(live)))  # no gap, no duplicate
        assert live[-1]["type"] == "response.completed"
        assert [e for e in live if e["type"] in ("response.completed", "response.failed",
                                                  "response.incomplete")] == [live[-1]]
        # the whole stream, replayed on A after the end, holds exactly what B followed
        replay, done = await read_stream(a.envoy_url, response.id)
        assert done and replay[4:] == live
        assert live[-1]["response"]["output"][0]["content"][0]["text"].startswith("Echo: follow me")


async def test_cancel_on_b_stops_the_run_on_a(replicas: list[Replica]) -> None:
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        response = await on_a.responses.create(model=MODEL, input="long [chunks=400] [delay=50]", background=True)
        await wait_status(on_a, response.id, {"in_progress"}, timeout=10)
        cancelled = await on_b.responses.cancel(response.id)
        assert cancelled.status == "cancelled" and cancelled.id == response.id
        assert (await on_a.responses.retrieve(response.id)).status == "cancelled"
        again = await on_b.responses.cancel(response.id)  # idempotent, as on one replica
        assert again.status == "cancelled"
        # A stopped its run: the stream (read on either replica) ends with one response.failed, status cancelled
        for replica in (a, b):
            events, done = await read_stream(replica.envoy_url, response.id)
            assert done and events[-1]["type"] == "response.failed" and events[-1]["response"]["status"] == "cancelled"
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            assert sum(e["type"] == "response.failed" for e in events) == 1
        # far fewer than the 400 chunks the run would have streamed
        assert len(events) < 300


async def background_runs(replica: Replica) -> float:
    """The background runs the replica is running now (its ``responses_bridge_background_queue_depth``)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{replica.http_url}/metrics") as answer:
            text = await answer.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("responses_bridge_background_queue_depth"))


async def test_delete_on_b_stops_the_run_on_a_and_it_stays_deleted(replicas: list[Replica]) -> None:
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        response = await on_a.responses.create(model=MODEL, input="long [chunks=400] [delay=50]", background=True)
        await wait_status(on_a, response.id, {"in_progress"}, timeout=10)
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{b.envoy_url}/v1/responses/{response.id}") as answer:
                assert answer.status == 200 and (await answer.json())["deleted"] is True
        # A's run ended before the delete (its 400 chunks would take 20 s): nothing it could still store brings
        # the response back
        assert await background_runs(a) == 0
        for client in (on_a, on_b):
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(response.id)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{a.envoy_url}/v1/responses/{response.id}?stream=true") as answer:
                assert answer.status == 404


async def test_cancel_of_a_finished_response_on_the_other_replica_is_400(replicas: list[Replica]) -> None:
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        response = await on_a.responses.create(model=MODEL, input="quick", background=True)
        await wait_status(on_a, response.id, {"completed"})
        with pytest.raises(openai.BadRequestError):
            await on_b.responses.cancel(response.id)
        with pytest.raises(openai.NotFoundError):
            await on_b.responses.cancel("resp_unknown_everywhere")


async def test_a_dead_replicas_run_is_finished_by_another_once(replicas: list[Replica], fake_upstream: str,
                                                                database_url: str, tmp_path: Path) -> None:
    _, b = replicas
    # an upstream key of its own: the resumed call carries it (a run on the client's own credentials is resumed
    # with them, kept sealed: test_background_resume_credentials.py)
    async with running_replica("c", tmp_path, fake_upstream, database_url, "--api-key", "sk-upstream",
                               env=SHARED_ENV) as c:
        async with sdk(c) as on_c:
            response = await on_c.responses.create(model=MODEL, input="orphan [chunks=40] [delay=100]",
                                                   background=True)
            await wait_status(on_c, response.id, {"in_progress"}, timeout=10)
            # B follows it; the follower must see the run resumed there, to its end, not hang
            follower = asyncio.create_task(read_stream(b.envoy_url, response.id, starting_after=1))
            await asyncio.sleep(0.3)
            c.kill()
    async with sdk(b) as on_b:
        ended = await wait_status(on_b, response.id, {"failed", "completed", "cancelled"},
                                  timeout=10 * LEASE_SECONDS + 30)
        expected = await on_b.responses.create(model=MODEL, input="orphan [chunks=40]", store=False)
    assert ended.status == "completed", ended.error  # resumed by B (or A), not failed
    assert ended.output_text == expected.output_text
    events, done = await asyncio.wait_for(follower, timeout=30)
    assert done and events[-1]["type"] == "response.completed"
    replay, done = await read_stream(b.envoy_url, response.id)
    assert done and replay[2:] == events
    assert [e["sequence_number"] for e in replay] == list(range(len(replay)))
    assert sum(e["type"] == "response.completed" for e in replay) == 1  # one run finished it
    assert not any(e["type"] == "response.failed" for e in replay)


async def test_replicas_keep_nothing_of_the_shared_state_in_their_data_directories(
        replicas: list[Replica]) -> None:
    for replica in replicas:
        assert not list(replica.data_dir.glob("*.sqlite*")), f"{replica.name} opened a SQLite store"


async def test_an_unreachable_database_fails_the_start(tmp_path: Path, fake_upstream: str) -> None:
    port = free_port()  # nothing listens there
    db = tmp_path / "responses.sqlite"
    env = {**os.environ, "RESPONSES_BRIDGE_DATABASE_URL": f"postgresql://bridge:s3cret-pw@127.0.0.1:{port}/bridge"}
    done = await asyncio.to_thread(
        subprocess.run, [PYTHON, "-m", "responses_bridge", "serve", "--upstream", fake_upstream,
                         "--http-port", str(free_port()), "--extproc-port", str(free_port()), "--db", str(db)],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"127.0.0.1:{port}/bridge" in output  # names the database it could not reach
    assert "s3cret-pw" not in output  # never the password
    assert not db.exists()  # no fallback to SQLite
