"""A sandbox call's /mnt/data descriptor outlives the threads at work in it (sandbox/data_threads.py): a thread
whose caller was cancelled still writes through ``/proc/self/fd/N``, and N closed under it would be handed to the
next descriptor opened — another call's /mnt/data — so the thread would write into another tenant's files."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from responses_bridge.sandbox.data_threads import DataThreads


def _names(fd: int, inode: int) -> bool:
    """Whether ``fd`` is still the descriptor of the directory of ``inode`` (closed, the number may name another)."""
    try:
        return os.fstat(fd).st_ino == inode
    except OSError:
        return False


async def test_a_cancelled_callers_thread_keeps_the_descriptor_open_until_it_ends(tmp_path: Path) -> None:
    threads = DataThreads()
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    inode = os.fstat(fd).st_ino
    running, release = threading.Event(), threading.Event()
    written: list[bool] = []

    def lay_out() -> None:  # as a container's file is laid out: through the descriptor's /proc path, later
        running.set()
        release.wait(30)
        (Path(f"/proc/self/fd/{fd}") / "laid-out").write_bytes(b"mine")
        written.append(True)

    caller = asyncio.create_task(threads.thread(lay_out))
    await asyncio.to_thread(running.wait, 30)
    caller.cancel()  # the request gone, or its slot taken back
    with pytest.raises(asyncio.CancelledError):
        await caller
    threads.close_when_idle(fd)  # the call closes
    assert _names(fd, inode), "the descriptor was closed while a thread was still at work through it"
    release.set()
    for _ in range(3000):
        if written and not _names(fd, inode):
            break
        await asyncio.sleep(0.01)
    assert written and (tmp_path / "laid-out").read_bytes() == b"mine"  # where it belonged
    assert not _names(fd, inode), "the descriptor was never closed"


async def test_with_no_thread_at_work_the_descriptor_closes_at_once(tmp_path: Path) -> None:
    threads = DataThreads()
    assert await threads.thread(sum, [1, 2]) == 3
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    inode = os.fstat(fd).st_ino
    threads.close_when_idle(fd)
    assert not _names(fd, inode)


async def test_a_cancelled_callers_failed_thread_is_not_logged_as_lost(caplog: pytest.LogCaptureFixture) -> None:
    threads = DataThreads()
    started, release = threading.Event(), threading.Event()

    def fails() -> None:
        started.set()
        release.wait(30)
        raise OSError("the disk")

    caller = asyncio.create_task(threads.thread(fails))
    await asyncio.to_thread(started.wait, 30)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await asyncio.sleep(0.2)
    import gc
    gc.collect()
    await asyncio.sleep(0)
    assert "exception was never retrieved" not in caplog.text
