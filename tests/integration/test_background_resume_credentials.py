"""A background response is durable with only the client's own ``Authorization``: no upstream key is configured,
the openai SDK sends its key, and that header is what goes upstream. The sidecar is killed (``kill -9``) mid model
call and started again on the same database: the run is resumed and completes once, its repeated call reaching the
upstream with the client's ``Authorization``, which was kept sealed in the run's log (never in clear in the
database: on SQLite its file and WAL bytes are searched) and erased once the run ended.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp

from responses_bridge.services.responses.background_resume import ALL_ROWS, CREDENTIAL_SEQUENCE
from responses_bridge.store.base import DEFAULT_TENANT as TENANT
from responses_bridge.store.open import open_stores
from tests.integration.test_background_resume import DELTAS_BEFORE_STOP, MODEL, SLOW, started, until_ended
from tests.support.postgres import sidecar_env, store_from_env
from tests.support.sdk import async_sdk

CLIENT_KEY = "sk-client-own-background-0123"


def clear_in_files(db: str) -> list[str]:
    """The SQLite files (the database, its WAL and shared memory) holding the client's key in clear."""
    return [path.name for path in Path(db).parent.glob(Path(db).name + "*")
            if CLIENT_KEY.encode() in path.read_bytes()]


async def kept_rows(db: str, response_id: str) -> list[bytes]:
    """The rows of the run's log where the client's credentials are kept."""
    stores = await open_stores(db, sidecar_env(db).get("RESPONSES_BRIDGE_DATABASE_URL"))
    try:
        rows = await stores.events.after(response_id, ALL_ROWS, tenant=TENANT)
    finally:
        await stores.close()
    assert rows, "the run's log was not stored"
    return [frame for sequence, frame in rows if sequence == CREDENTIAL_SEQUENCE]


async def test_a_run_killed_mid_call_with_only_the_clients_authorization_completes_after_the_restart(
        tmp_path: Path, fake_upstream: str) -> None:
    db = str(tmp_path / "creds.db")
    recorded = fake_upstream.removesuffix("/v1") + "/_fake/requests"  # what the fake upstream was sent
    async with aiohttp.ClientSession() as fake:
        async with fake.delete(recorded) as cleared:
            assert cleared.status in (200, 204)
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
                    os.kill(process.pid, signal.SIGKILL)  # mid model call
                    break
        assert process.process is not None
        process.process.wait()
    finally:
        process.stop()
    clear_while_kept = [] if store_from_env() == "postgres" else clear_in_files(db)
    while_kept = await kept_rows(db, response_id)
    process, base = await started(tmp_path, fake_upstream, db)
    try:
        ended = await until_ended(base, response_id)
    finally:
        process.stop()
    async with aiohttp.ClientSession() as fake:
        async with fake.get(recorded) as answer:
            calls = [call for call in (await answer.json())["data"] if call.get("path") == "/v1/chat/completions"]
    assert ended["status"] == "completed", ended.get("error")
    assert len(calls) == 2, calls  # the interrupted call, then the same call made again by the restarted process
    assert {call["headers"].get("authorization") for call in calls} == {f"Bearer {CLIENT_KEY}"}
    assert clear_while_kept == []
    assert len(while_kept) == 1 and while_kept[0].startswith(b"rb1.") and CLIENT_KEY.encode() not in while_kept[0]
    assert await kept_rows(db, response_id) == []  # erased with the run's end
    assert store_from_env() == "postgres" or clear_in_files(db) == []
