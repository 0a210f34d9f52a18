"""The chain map kept in the store (store/base.py ``ReplicaChainStore``, replicas/persist.py) on SQLite and on
PostgreSQL: a chain bound by one process is found by another (a resumed run, another worker), in order of its keys;
a newer binding replaces an older; old ones are purged; the write-behind batches and bounds what it holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.replicas import persist
from responses_bridge.replicas.persist import ChainPersistence
from responses_bridge.replicas.picker import ReplicaSet
from tests.support.stores import KINDS, Stores, open_stores

URLS = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with open_stores(request.param, request, tmp_path) as opened:
        yield opened


async def test_bindings_found_in_order_replaced_and_purged(stores: Stores) -> None:
    chains = stores.replica_chains
    await chains.bind_replicas([("u", "resp_1", "a:1", 100), ("u", "conv_1", "a:1", 100), ("v", "resp_1", "z:9", 100)])
    assert await chains.find_replica("u", ["resp_x", "resp_1", "conv_1"]) == "a:1"
    assert await chains.find_replica("v", ["resp_1"]) == "z:9"  # per upstream
    assert await chains.find_replica("u", ["resp_x"]) is None and await chains.find_replica("u", []) is None
    await chains.bind_replicas([("u", "conv_1", "b:2", 200), ("u", "resp_2", "b:2", 200)])  # the chain moved
    assert await chains.find_replica("u", ["resp_2", "resp_1"]) == "b:2"
    assert await chains.find_replica("u", ["conv_1"]) == "b:2"
    assert await chains.purge_replica_chains(150, limit=10) == 2  # u/resp_1 and v/resp_1
    assert await chains.find_replica("u", ["resp_1"]) is None and await chains.find_replica("u", ["conv_1"]) == "b:2"


async def test_another_process_finds_the_chain(stores: Stores) -> None:
    first = ReplicaSet("pool", URLS)
    first.persist = ChainPersistence(stores.replica_chains)
    picked = first.pick(("resp_1",), b"x" * 4096)
    picked.done()
    home = picked.endpoint
    await first.persist.flush()
    other = ReplicaSet("pool", URLS)  # another worker, or the process that resumes the run
    other.persist = ChainPersistence(stores.replica_chains)
    for _ in range(3):  # without the store it would spread these over the replicas (least picked lately)
        await other.recall(("resp_2", "resp_1"))
        turn = other.pick(("resp_2", "resp_1"), b"y" * 4096)
        assert turn.endpoint == home
        turn.done()


async def test_the_write_behind_is_bounded(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persist, "PENDING", 10)
    behind = ChainPersistence(stores.replica_chains)
    for n in range(50):
        behind.bind("u", [f"resp_{n}"], "a:1")
    assert await behind.find("u", ["resp_49"]) == "a:1"  # still waiting: found in the queue
    await behind.flush()
    assert await stores.replica_chains.find_replica("u", ["resp_49"]) == "a:1"
    assert await stores.replica_chains.find_replica("u", ["resp_0"]) is None  # dropped, oldest first
