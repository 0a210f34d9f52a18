"""What the Agents API keeps counts in its tenant's ``max_stored_bytes``, on SQLite and PostgreSQL: an artifact's
bytes with its record, an environment template, an automation's invocations and versions, a container's installed
packages — summed with files and container files in the one total every check reads, so a file upload past the
limit is refused for them too, and the packages of a container past it are refused and not kept. Another
tenant's records count for it alone."""

from __future__ import annotations

import pytest

from responses_bridge.store.records import StorageLimitExceeded
from tests.unit.test_container_store import LIVE, Stores, a_container, stores

__all__ = ["stores"]

A, B = "tenant-a", "tenant-b"
MB = 1_000_000


async def stored(stores: Stores, tenant: str = A) -> int:
    return await stores.files.stored_bytes(LIVE, tenant=tenant)


async def test_the_agents_records_count_in_the_tenants_stored_bytes(stores: Stores) -> None:
    before = await stored(stores)
    artifact = {"id": "art_1", "object": "agent.session.artifact", "path": "/mnt/data/big.bin",
                "size_bytes": 30 * MB, "_private": {"blob_id": "blob-1"}}
    await stores.agents.put("artifact", "art_1", artifact, tenant=A, parent="sess_1", scope="cntr_1")
    with_artifact = await stored(stores)
    assert 30 * MB < with_artifact - before < 30 * MB + 1024  # its bytes and its record's
    template = {"id": "tmpl_1", "files": [{"path": "a.txt", "content": "x" * 50_000}]}
    await stores.agents.put("environment_template", "tmpl_1", template, tenant=A)
    assert 50_000 < await stored(stores) - with_artifact < 51_000
    assert await stored(stores, B) == 0  # another tenant's count is its own
    # an automation's version, once however many invocations refer to it
    snapshot = {"id": "auto_1", "target": {"instructions": "y" * 200_000}}
    for number in range(3):
        await stores.agents.keep_version("auto_1", "digest-1", snapshot, tenant=A, now=LIVE)
        await stores.agents.put("invocation", f"ainv_{number}", {"id": f"ainv_{number}", "created_at": LIVE,
                                                                 "_source_version": "digest-1"},
                                tenant=A, parent="auto_1")
    grown = await stored(stores) - with_artifact - 50_000
    assert 200_000 < grown < 202_000, grown
    # replacing a record counts its new size, deleting it gives its bytes back
    artifact["size_bytes"] = 10
    await stores.agents.put("artifact", "art_1", artifact, tenant=A, parent="sess_1", scope="cntr_1")
    assert await stored(stores) < with_artifact - 29 * MB
    assert await stores.agents.delete("environment_template", "tmpl_1", tenant=A)
    assert await stored(stores) < with_artifact - 29 * MB - 50_000


async def test_installed_packages_count_and_are_refused_past_the_limit(stores: Stores) -> None:
    await stores.containers.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    await stores.containers.create_container(a_container("cntr_2"), tenant=A, max_containers=None)
    assert await stores.containers.set_container_packages("cntr_1", "blob-p1", LIVE, tenant=A, size=3 * MB,
                                                          max_stored_bytes=5 * MB)
    assert await stored(stores) == 3 * MB
    with pytest.raises(StorageLimitExceeded) as refused:
        await stores.containers.set_container_packages("cntr_2", "blob-p2", LIVE, tenant=A, size=3 * MB,
                                                       max_stored_bytes=5 * MB)
    assert (refused.value.limit, refused.value.used) == (5 * MB, 3 * MB)
    found = await stores.containers.get_container("cntr_2", LIVE, tenant=A)
    assert found is not None and found.packages_blob is None
    assert await stores.containers.delete_container("cntr_1", tenant=A) == ["blob-p1"]
    assert await stored(stores) == 0
