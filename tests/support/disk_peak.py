"""The peak of the bytes a sidecar's store holds on disk for files while something runs: every file in the
``files/`` directory next to its SQLite database (temporary ones being written included), or the on-disk size of its
PostgreSQL database's ``file_contents`` table (its TOAST included), sampled as often as the store answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.support.postgres import sidecar_env

FILE_CONTENTS_SIZE = "SELECT pg_total_relation_size('file_contents')"


def _directory_bytes(directory: Path) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile
                total += entry.stat(follow_symlinks=False).st_size
    return total


@dataclass
class DiskPeak:
    baseline: int  # the bytes held when the watch began
    peak: int  # the most held at a sample since

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


@contextlib.asynccontextmanager
async def disk_peak(db_path: str, baseline: int | None = None) -> AsyncIterator[DiskPeak]:
    """Sample the store's bytes on disk while the block runs; ``baseline``: what to measure the growth from (by
    default the bytes held at the start)."""
    url = sidecar_env(db_path).get("RESPONSES_BRIDGE_DATABASE_URL")
    conn = None if url is None else await asyncpg.connect(url)
    directory = Path(db_path).resolve().parent / "files"

    async def size() -> int:
        if conn is None:
            return await asyncio.to_thread(_directory_bytes, directory)
        return int(await conn.fetchval(FILE_CONTENTS_SIZE))

    now = await size()
    watch = DiskPeak(now if baseline is None else baseline, now)
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            watch.peak = max(watch.peak, await size())
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        yield watch
    finally:
        stop.set()
        await sampler
        watch.peak = max(watch.peak, await size())
        if conn is not None:
            await conn.close()


async def store_disk_bytes(db_path: str) -> int:
    """The store's bytes on disk now (as :func:`disk_peak` samples them)."""
    async with disk_peak(db_path) as watch:
        return watch.baseline
