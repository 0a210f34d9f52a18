"""Fixtures the engine tests share: a fresh in-memory store, ids and clocks made deterministic so that two runs of
one recording can be compared byte for byte, and the ext_proc door served over a real gRPC channel on the
requesting module's own ``runtime`` fixture."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from responses_bridge.adapters.extproc.server import start_extproc_server
from responses_bridge.runtime import Runtime
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


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[tuple[Any, grpc.aio.Channel]]:
    door = await start_extproc_server(runtime, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{door.bound_port}")
    try:
        yield door, channel
    finally:
        await channel.close()
        await door.stop(0)


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A fresh directory the sandbox's uid can traverse, as a deployment's ``code_workdir`` must be (pytest's own
    ``tmp_path`` lies under a 0700 directory of root's, which a root bridge's sandbox uid cannot pass)."""
    folder = Path(tempfile.mkdtemp(prefix="rb-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
