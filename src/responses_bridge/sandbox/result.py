"""How one sandbox call ended, and the bounded capture of its output."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .limits import SandboxLimits

Outcome = Literal["ok", "error", "timeout", "memory", "output_capped", "disk", "refused"]


class SandboxUnavailable(Exception):
    """Code cannot run on this machine: the reason and the fix, in one sentence each."""


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How one run ended. ``stdout`` / ``stderr``: what was kept (decoded, invalid UTF-8 replaced);
    ``*_dropped``: bytes past the limit, not kept; ``started`` / ``finished``: the launcher's monotonic marks
    around the code (None when it never got there), for the benchmark's breakdown; ``spawned``: when bubblewrap
    was started."""

    outcome: Outcome
    stdout: str
    stderr: str
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    exit_code: int | None = None
    seconds: float = 0.0
    spawned: float = 0.0
    started: float | None = None
    finished: float | None = None
    note: str = ""

    @property
    def failed(self) -> bool:
        """Did the run end by a limit rather than by the code (the call's item is then ``failed``)?"""
        return self.outcome in ("timeout", "memory", "disk", "refused")


class SandboxBusy(Exception):
    """No slot came within the call's time limit: ``result`` is the refusal to report."""

    def __init__(self, result: SandboxResult) -> None:
        super().__init__(result.note)
        self.result = result


class Capture(asyncio.Protocol):
    """The first ``limit`` bytes of an output pipe, and a count of the rest, taken as they arrive (so a call
    printing without end costs bounded memory)."""

    def __init__(self, limit: int) -> None:
        self.kept = bytearray()
        self.dropped = 0
        self.limit = limit
        self.listener: Callable[[bytes], None] | None = None  # told of each kept piece as it arrives

    def data_received(self, data: bytes) -> None:
        room = self.limit - len(self.kept)
        if room > 0:
            piece = data[:room]
            self.kept += piece
            if self.listener is not None:
                self.listener(piece)
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self) -> str:
        return self.kept.decode("utf-8", "replace")


def ended_by_memory(stderr: str, returncode: int | None) -> bool:
    last = stderr.rstrip().rsplit("\n", 1)[-1]
    return last.startswith("MemoryError") or returncode == -signal.SIGKILL


def note_for(outcome: Outcome, limits: SandboxLimits) -> str:
    if outcome == "timeout":
        return f"Execution stopped: the code ran past the {limits.timeout:g} s time limit."
    if outcome == "memory":
        return f"Execution ran out of memory: the limit is {limits.memory_bytes // (1 << 20)} MiB."
    if outcome == "disk":
        return (f"Execution stopped: the files in /mnt/data reached the container's limit of "
                f"{limits.container_bytes // (1 << 20)} MiB.")
    return ""

