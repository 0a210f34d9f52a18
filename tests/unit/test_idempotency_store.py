"""The ``Idempotency-Key`` records (store/base.py: ``IdempotencyStore``) on SQLite and on PostgreSQL: one claim
among many at once, a claimed key's record, per tenant, taken over once expired, purged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.store.records import IdempotencyRecord
from tests.support.stores import KINDS, Stores, open_stores

NOW = 1_800_000_000


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with open_stores(request.param, request, tmp_path) as opened:
        yield opened


async def test_one_claim_among_many_at_once_and_its_record(stores: Stores) -> None:
    keys = stores.idempotency
    claims = await asyncio.gather(*(keys.claim_key("k", "fp", tenant="a", now=NOW, expires_at=NOW + 60)
                                    for _ in range(8)))
    assert claims.count(None) == 1
    assert [claim for claim in claims if claim is not None] == [IdempotencyRecord("fp", None, NOW + 60)] * 7
    await keys.finish_key("k", "resp_1", tenant="a")
    held = await keys.claim_key("k", "other", tenant="a", now=NOW + 1, expires_at=NOW + 61)
    assert held == IdempotencyRecord("fp", "resp_1", NOW + 60)  # the first's, whatever the new body
    await keys.release_key("k", tenant="a")  # a finished key is never let go
    assert (await keys.claim_key("k", "fp", tenant="a", now=NOW + 2, expires_at=NOW + 62)) == held


async def test_tenants_released_and_expired_keys(stores: Stores) -> None:
    keys = stores.idempotency
    assert await keys.claim_key("k", "fp", tenant="a", now=NOW, expires_at=NOW + 60) is None
    assert await keys.claim_key("k", "fp", tenant="b", now=NOW, expires_at=NOW + 60) is None  # b's own
    await keys.release_key("k", tenant="b")
    assert await keys.claim_key("k", "fp2", tenant="b", now=NOW, expires_at=NOW + 60) is None  # free again
    assert await keys.claim_key("k", "fp3", tenant="a", now=NOW + 60, expires_at=NOW + 120) is None  # expired: taken
    assert await keys.claim_key("k", "x", tenant="a", now=NOW + 61, expires_at=NOW + 121) == IdempotencyRecord(
        "fp3", None, NOW + 120)
    assert await keys.purge_keys(NOW + 60, limit=10) == 1  # b's (expires NOW + 60); a's is live
    assert await keys.claim_key("k", "fp", tenant="b", now=NOW + 60, expires_at=NOW + 90) is None
    assert await keys.purge_keys(NOW + 500, limit=1) == 1 and await keys.purge_keys(NOW + 500, limit=5) == 1
