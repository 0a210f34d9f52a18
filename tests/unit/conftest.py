"""Fixtures the engine tests share: a fresh in-memory store, and ids and clocks made deterministic so that two
runs of one recording can be compared byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from responses_bridge.store import SQLiteResponseStore
from tests.unit import recordings


@pytest.fixture
def determinism() -> Iterator[recordings.Determinism]:
    with recordings.deterministic() as state:
        yield state


@pytest.fixture
async def store() -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(":memory:") as opened:
        yield opened
