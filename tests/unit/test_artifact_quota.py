"""A turn's artifacts within its tenant's ``max_stored_bytes`` (services/agents/environments/environments.py's publish),
on the real stores, blob files and container service, on SQLite and PostgreSQL: a file whose copy would pass the limit
is not kept and is named in the turn's ``error`` event (the SDK's ``AgentSessionErrorEvent``), once; the files that
fit are kept; a new version of the file that fits later is kept. The sandbox is not the subject: the container's
files are put as a command would leave them (``source: assistant``). The end-to-end turn through both doors is
tests/integration/test_agents_artifact_quota.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.beta import AgentSessionErrorEvent

from responses_bridge.services.agents.environments.environments import SessionEnvironments, not_kept
from responses_bridge.services.containers.containers import ContainerService
from responses_bridge.services.files.files import FileService
from responses_bridge.store.base_agents import AgentStore
from responses_bridge.store.postgres.containers.containers import PostgresContainerStore
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.sqlite.containers.containers import SQLiteContainerStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from tests.support.sdk_strict import strict_object
from tests.unit.store_kinds import KINDS, postgres_database, sqlite_database

LIMIT = 3_000_000
TENANT = "tenant-a"


@pytest.fixture(params=KINDS)
async def services(request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[tuple[ContainerService, AgentStore]]:
    def build(file_store: Any, container_store: Any) -> ContainerService:
        (tmp_path / "blobs").mkdir()
        files = FileService(file_store, tmp_path / "blobs", 10_000_000, max_stored_bytes=lambda tenant: LIMIT)
        return ContainerService(container_store, files.contents, files, file_bytes=10_000_000,
                                container_bytes=50_000_000, max_stored_bytes=lambda tenant: LIMIT)

    if request.param == "sqlite":
        from responses_bridge.store.sqlite.agents.agents import SQLiteAgentStore

        async with sqlite_database(tmp_path) as db:
            yield build(SQLiteFileStore(db), SQLiteContainerStore(db)), SQLiteAgentStore(db)
    else:
        from responses_bridge.store.postgres.agents.agents import PostgresAgentStore

        async with postgres_database(request) as pg:
            yield build(PostgresFileStore(pg), PostgresContainerStore(pg)), PostgresAgentStore(pg)


async def chunks(size: int) -> AsyncIterator[bytes]:
    yield b"\0" * size


async def test_an_artifact_past_the_limit_is_not_kept_and_is_told_once(
        services: tuple[ContainerService, AgentStore]) -> None:
    containers, store = services
    environments = SessionEnvironments(store, containers)
    container = await containers.new_container("session", tenant=TENANT)
    session: dict[str, Any] = {"id": "sess_1", "environment": {"type": "openai_hosted", "id": container.id}}

    await containers.put_bytes(container, "/mnt/data/first.bin", chunks(800_000), source="assistant", tenant=TENANT)
    first = await environments.publish(session, "turn_1", tenant=TENANT)
    assert [record.body["path"] for record in first.records] == ["/mnt/data/first.bin"] and not first.refused
    await store.commit("sess_1", first.records, [], tenant=TENANT)

    # 0.8 MB file + 0.8 MB artifact + 1.2 MB file fit in 3 MB; the second artifact's 1.2 MB would not
    await containers.put_bytes(container, "/mnt/data/second.bin", chunks(1_200_000), source="assistant",
                               tenant=TENANT)
    second = await environments.publish(session, "turn_2", tenant=TENANT)
    assert second.records == [] and second.refused == [("/mnt/data/second.bin", 1_200_000)]
    [told] = not_kept("sess_1", second)
    strict_object(AgentSessionErrorEvent, {"event_id": "sevt_1", **told})
    assert told["error"]["code"] == "storage_limit_exceeded" and "'/mnt/data/second.bin'" in told["error"]["message"]
    assert (await environments.publish(session, "turn_3", tenant=TENANT)).refused == []  # told once

    # room made (the first artifact deleted), a new version of the file is kept
    assert await store.delete("artifact", first.records[0].id, tenant=TENANT)
    await containers.put_bytes(container, "/mnt/data/second.bin", chunks(1_100_000), source="assistant",
                               tenant=TENANT)
    fourth = await environments.publish(session, "turn_4", tenant=TENANT)
    assert [(record.body["path"], record.body["size_bytes"]) for record in fourth.records] == [
        ("/mnt/data/second.bin", 1_100_000)] and not fourth.refused
