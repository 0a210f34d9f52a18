"""free_port (demo/procs.py) across the processes of one machine: a port another process has picked and not yet
bound is never handed out again, a stale note is cleared without being taken, and an unwritable note folder does
not stop the picking."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from responses_bridge.demo import procs


def _free(count: int) -> list[int]:
    """``count`` ports below the kernel's outgoing range that nothing listens on now."""
    found = []
    for port in range(procs._LOWEST_PORT + 7_000, procs._ephemeral_low()):
        if procs.port_is_free(port):
            found.append(port)
            if len(found) == count:
                return found
    raise AssertionError("no free ports")


@pytest.fixture
def picks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[int]]:
    """free_port with its notes under ``tmp_path`` and its random picks taken, in order, from the list yielded."""
    order: list[int] = []
    monkeypatch.setattr(procs, "RESERVATIONS", str(tmp_path / "ports"))
    monkeypatch.setattr(procs, "_handed_out", set())
    monkeypatch.setattr(procs.random, "randrange", lambda low, high: order.pop(0))
    yield order


def test_a_port_another_process_picked_is_not_handed_out(picks: list[int]) -> None:
    taken, other = _free(2)
    os.makedirs(procs.RESERVATIONS)
    Path(procs.RESERVATIONS, str(taken)).touch()  # another test process's pick, its server not bound yet
    picks += [taken, other]
    assert procs.free_port() == other
    assert Path(procs.RESERVATIONS, str(other)).exists()  # noted for the others in turn


def test_a_stale_note_is_cleared_and_its_port_left_for_a_next_pick(picks: list[int]) -> None:
    stale, other = _free(2)
    os.makedirs(procs.RESERVATIONS)
    note = Path(procs.RESERVATIONS, str(stale))
    note.touch()
    old = time.time() - procs.RESERVED_SECONDS - 60
    os.utime(note, (old, old))
    picks += [stale, other, stale]
    assert procs.free_port() == other  # not taken on the pick that found it stale
    assert not note.exists()
    assert procs.free_port() == stale  # free for the next one


def test_a_folder_that_cannot_be_written_leaves_ports_unnoted(picks: list[int], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(procs, "RESERVATIONS", str(tmp_path / "a-file" / "ports"))
    [port] = _free(1)
    picks.append(port)
    assert procs.free_port() == port
