"""A background response is durable with only the client's own ``Authorization``: no upstream key is configured,
the openai SDK sends its key, and that header is what goes upstream. The sidecar is killed (``kill -9``) mid model
call, or drained (SIGTERM, the drain shorter than the call), and started again on the same database: the run is
resumed and completes once, its repeated call reaching the upstream with the client's ``Authorization``, which was
kept sealed in the run's log (never in clear in the database: on SQLite its file and WAL bytes are searched) and
erased once the run ended. Through either door: the HTTP door, and Envoy's (the ext_proc door answers the
background POST itself, the client's header reaching it as metadata).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.services.responses.background_resume import ALL_ROWS, CREDENTIAL_SEQUENCE
from responses_bridge.store.base import DEFAULT_TENANT as TENANT
from responses_bridge.store.open import open_stores
from tests.integration.test_background_resume import (
    DELTAS_BEFORE_STOP,
    ENV,
    MODEL,
    SLOW,
    TIMEOUT,
    read_until_deltas,
    started,
    until_ended,
)
from tests.support.bridge import start_sidecar
from tests.support.envoy import have_envoy, start_envoy
from tests.support.postgres import sidecar_env, store_from_env
from tests.support.sdk import async_sdk

CLIENT_KEY = "sk-client-own-background-0123"


def clear_in_files(db: str) -> list[str]:
    """The SQLite files (the database, its WAL and shared memory) holding the client's key in clear."""
    return [path.name for path in Path(db).parent.glob(Path(db).name + "*")
            if CLIENT_KEY.encode() in path.read_bytes()]


async def upstream_calls(fake_upstream: str) -> list[dict]:
    """The chat completions the fake upstream was sent since it was last cleared."""
    async with aiohttp.ClientSession() as fake:
        async with fake.get(fake_upstream.removesuffix("/v1") + "/_fake/requests") as answer:
            return [call for call in (await answer.json())["data"] if call.get("path") == "/v1/chat/completions"]


async def clear_upstream_calls(fake_upstream: str) -> None:
    async with aiohttp.ClientSession() as fake:
        async with fake.delete(fake_upstream.removesuffix("/v1") + "/_fake/requests") as cleared:
            assert cleared.status in (200, 204)


async def kept_rows(db: str, response_id: str) -> list[bytes]:
    """The rows of the run's log where the client's credentials are kept."""
    stores = await open_stores(db, sidecar_env(db).get("RESPONSES_BRIDGE_DATABASE_URL"))
    try:
        rows = await stores.events.after(response_id, ALL_ROWS, tenant=TENANT)
    finally:
        await stores.close()
    assert rows, "the run's log was not stored"
    return [frame for sequence, frame in rows if sequence == CREDENTIAL_SEQUENCE]


@pytest.mark.parametrize("how", ["kill", "term"])
async def test_a_run_stopped_mid_call_with_only_the_clients_authorization_completes_after_the_restart(
        how: str, tmp_path: Path, fake_upstream: str) -> None:
    """``term``: a drain shorter than the call hands the run off, its kept credentials with it."""
    db = str(tmp_path / "creds.db")
    await clear_upstream_calls(fake_upstream)
    process, base = await started(tmp_path, fake_upstream, db)
    try:
        async with async_sdk(base_url=f"{base}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60) as sdk:
            stream = await sdk.responses.create(model=MODEL, input=SLOW, background=True, stream=True)
            deltas, response_id = 0, ""
            async for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                deltas += event.type == "response.output_text.delta"
                if deltas >= DELTAS_BEFORE_STOP:
                    os.kill(process.pid, signal.SIGKILL if how == "kill" else signal.SIGTERM)  # mid model call
                    break
        assert process.process is not None
        assert process.process.wait(timeout=60) == (0 if how == "term" else -signal.SIGKILL)
    finally:
        process.stop()
    clear_while_kept = [] if store_from_env() == "postgres" else clear_in_files(db)
    while_kept = await kept_rows(db, response_id)
    process, base = await started(tmp_path, fake_upstream, db)
    try:
        ended = await until_ended(base, response_id)
    finally:
        process.stop()
    calls = await upstream_calls(fake_upstream)
    assert ended["status"] == "completed", ended.get("error")
    assert len(calls) == 2, calls  # the interrupted call, then the same call made again by the restarted process
    assert {call["headers"].get("authorization") for call in calls} == {f"Bearer {CLIENT_KEY}"}
    assert clear_while_kept == []
    assert len(while_kept) == 1 and while_kept[0].startswith(b"rb1.") and CLIENT_KEY.encode() not in while_kept[0]
    assert await kept_rows(db, response_id) == []  # erased with the run's end
    assert store_from_env() == "postgres" or clear_in_files(db) == []


@pytest.fixture
async def envoy_door(fake_upstream: str) -> AsyncIterator[tuple[str, int, int]]:
    """Envoy in front of fixed ports (the sidecar and the one started again listen on them): its URL, the HTTP
    and ext_proc ports."""
    if not have_envoy():
        pytest.skip("no envoy binary")
    listen_port, http_port, extproc_port = free_port(), free_port(), free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                               http_port=http_port, upstream=fake_upstream, admin_port=0))
    try:
        yield f"http://127.0.0.1:{listen_port}", http_port, extproc_port
    finally:
        envoy.stop()


async def behind_envoy(tmp_path: Path, fake_upstream: str, db: str, door: tuple[str, int, int]) -> ManagedProcess:
    """A sidecar on ``db`` on the door's ports, without an upstream key, answering through Envoy."""
    url, http_port, extproc_port = door
    process, _, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, "--http-port", str(http_port),
                                  "--extproc-port", str(extproc_port), env=ENV)
    await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
    deadline = asyncio.get_running_loop().time() + 30
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        while True:  # a connection Envoy held to a stopped sidecar may fail a first request
            async with session.post(f"{url}/v1/responses", json={"model": MODEL, "input": "ready?",
                                                                 "store": False}) as answer:
                if answer.status == 200:
                    return process
            assert asyncio.get_running_loop().time() < deadline, "Envoy never reached the sidecar"
            await asyncio.sleep(0.2)


@pytest.mark.envoy
async def test_a_run_posted_through_envoy_with_only_the_clients_authorization_completes_after_the_restart(
        tmp_path: Path, fake_upstream: str, envoy_door: tuple[str, int, int]) -> None:
    db = str(tmp_path / "envoy.db")
    url = envoy_door[0]
    process = await behind_envoy(tmp_path, fake_upstream, db, envoy_door)
    try:
        await clear_upstream_calls(fake_upstream)
        async with async_sdk(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60) as sdk:
            response = await sdk.responses.create(model=MODEL, input=SLOW, background=True)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(
                f"{url}/v1/responses/{response.id}", params={"stream": "true", "starting_after": "-1"}) as answer:
            assert answer.status == 200, await answer.text()
            await read_until_deltas(answer)
            assert process.pid is not None and process.process is not None
            os.killpg(process.pid, signal.SIGKILL)  # mid model call
        await asyncio.get_running_loop().run_in_executor(None, process.process.wait, 60)
    finally:
        process.stop()
    while_kept = await kept_rows(db, response.id)
    process = await behind_envoy(tmp_path, fake_upstream, db, envoy_door)
    try:
        ended = await until_ended(url, response.id)
    finally:
        process.stop()
    calls = [call for call in await upstream_calls(fake_upstream) if "ready?" not in str(call.get("body"))]
    assert ended["status"] == "completed", ended.get("error")
    assert len(calls) == 2, calls  # the interrupted call, then the same call made again
    assert {call["headers"].get("authorization") for call in calls} == {f"Bearer {CLIENT_KEY}"}
    assert len(while_kept) == 1 and CLIENT_KEY.encode() not in while_kept[0]
    assert await kept_rows(db, response.id) == []
