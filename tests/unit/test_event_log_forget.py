"""``EventLog.forget`` on both stores (SQLite and a real PostgreSQL): it erases the one row it names (the client's
credentials kept with a background run, at the end of the run), nothing of another tenant's, and, fenced by a lease
owner, nothing once that owner no longer holds the run (the process that took the run over needs the row)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.services.responses.background_resume import CREDENTIAL_SEQUENCE, REQUEST_SEQUENCE
from responses_bridge.store import open as store_open
from responses_bridge.store.open import StoreSet
from responses_bridge.store.postgres.background_runs import PostgresRunLeases
from responses_bridge.store.sqlite.background_runs import SQLiteRunLeases
from tests.support.postgres import migrated_database
from tests.support.stores import KINDS
from tests.unit.test_store import make_response

A, B = "team-a", "team-b"


@pytest.fixture(params=KINDS)
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[StoreSet, str | None]]:
    async with AsyncExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = await stack.enter_async_context(migrated_database(request.getfixturevalue("postgres_server")))
        stores = await store_open.open_stores(str(tmp_path / "forget.db"), url)
        try:
            yield stores, url
        finally:
            await stores.close()


def leases(stores: StoreSet, url: str | None, owner: str) -> Any:
    if stores.postgres is not None:
        assert url is not None
        return PostgresRunLeases(stores.postgres, url, owner=owner)
    assert stores.sqlite is not None
    return SQLiteRunLeases(stores.sqlite, owner=owner)


async def sequences(stores: StoreSet, tenant: str = A) -> list[int]:
    return [sequence for sequence, _ in await stores.events.after("bg", -(2**31), tenant=tenant)]


async def test_forget_erases_the_one_row_it_names_of_the_owner_tenants_run_under_its_lease(
        opened: tuple[StoreSet, str | None]) -> None:
    stores, url = opened
    mine = leases(stores, url, "owner-a")
    await mine.claim("bg")
    await stores.responses.save_response(make_response("bg"), [], tenant=A)
    await stores.events.append("bg", [(REQUEST_SEQUENCE, b"request"), (CREDENTIAL_SEQUENCE, b"rb1.sealed"),
                                      (0, b"e0"), (1, b"e1")], tenant=A)
    kept = [CREDENTIAL_SEQUENCE, REQUEST_SEQUENCE, 0, 1]
    await stores.events.forget("bg", CREDENTIAL_SEQUENCE, tenant=B)  # another tenant's: nothing
    await stores.events.forget("bg", CREDENTIAL_SEQUENCE, tenant=A, lease_owner="owner-b")  # holds no lease
    assert await sequences(stores) == kept
    await stores.events.forget("bg", CREDENTIAL_SEQUENCE, tenant=A, lease_owner="owner-a")
    assert await sequences(stores) == kept[1:]  # that row only
    await stores.events.forget("bg", CREDENTIAL_SEQUENCE, tenant=A)  # gone already: nothing, no error
    await stores.events.forget("unknown", CREDENTIAL_SEQUENCE, tenant=A)
    assert await sequences(stores) == kept[1:]
