"""Run one piece of code in a bubblewrap sandbox over a directory, within the limits, and say how it ended.

    sandbox = Sandbox.detect(limits)          # None-free: an unusable machine gives a sandbox that refuses
    result = await sandbox.run(code, workdir)  # workdir becomes /mnt/data

At most ``limits.slots`` runs at once; a run waits for a slot at most its own timeout (then it is ``refused``).
The wall-time limit kills bubblewrap, whose ``--die-with-parent`` child is the PID namespace's first process: the
kernel ends every process of the namespace with it, so nothing the code started outlives the run (a run's cgroup,
where there is one, is emptied and removed too). The outputs are read as they come, the first
``limits.output_bytes`` of each kept and the rest counted, so a run printing without end costs bounded memory.
A disk watcher kills a run whose ``/mnt/data`` passes the container's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from ..observability import metrics, tracing
from .cgroups import CgroupParent
from .command import bwrap_command
from .limits import SandboxLimits

log = structlog.get_logger(__name__)

Outcome = Literal["ok", "error", "timeout", "memory", "output_capped", "disk", "refused"]
READ_BYTES = 1 << 16
DISK_POLL_SECONDS = 0.25


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


class _Capture:
    """The first ``limit`` bytes of a stream, and a count of the rest."""

    __slots__ = ("kept", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.kept = bytearray()
        self.dropped = 0
        self.limit = limit

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(READ_BYTES):
            room = self.limit - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        return self.kept.decode("utf-8", "replace")


def directory_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class Sandbox:
    """Runs code in bubblewrap; one per process. ``unavailable``: why code cannot run here (then :meth:`run`
    raises :class:`SandboxUnavailable`, and nothing is ever run unsandboxed)."""

    def __init__(self, limits: SandboxLimits, bwrap: str | None, *, unavailable: str | None = None,
                 cgroups: CgroupParent | None = None) -> None:
        self.limits = limits
        self.bwrap = bwrap
        self.unavailable = unavailable
        self.cgroups = cgroups
        self._slots = asyncio.Semaphore(limits.slots)
        self._runs = 0

    @classmethod
    def detect(cls, limits: SandboxLimits, *, bwrap: str | None = None) -> Sandbox:
        """The sandbox this machine can give: bubblewrap found on PATH (or ``bwrap``) and able to make its
        namespaces (checked once, by running ``true`` in one)."""
        from .doctor import check_bubblewrap  # the checks run commands: only when a sandbox is wanted

        found, reason = check_bubblewrap(bwrap)
        cgroups = CgroupParent.find() if reason is None else None
        return cls(limits, found, unavailable=reason, cgroups=cgroups)

    async def run(self, code: str, workdir: Path) -> SandboxResult:
        """Run ``code`` with ``workdir`` as ``/mnt/data``. Raises :class:`SandboxUnavailable` only when the
        machine cannot sandbox at all; every other end (the code's exception, a limit) is a result."""
        if self.unavailable is not None or self.bwrap is None:
            metrics.sandbox_run("refused", None)
            raise SandboxUnavailable(self.unavailable or "bubblewrap (bwrap) was not found")
        try:
            await asyncio.wait_for(self._slots.acquire(), self.limits.timeout)
        except TimeoutError:
            metrics.sandbox_run("refused", None)
            return SandboxResult("refused", "", "", note=f"Execution did not start: all {self.limits.slots} "
                                 f"sandboxes stayed busy for {self.limits.timeout:g} s.")
        metrics.SANDBOX_LIVE.inc()
        try:
            with tracing.span("sandbox run", {"responses_bridge.sandbox.timeout": self.limits.timeout}):
                result = await self._run(code, workdir)
        finally:
            metrics.SANDBOX_LIVE.dec()
            self._slots.release()
        metrics.sandbox_run(result.outcome, result.seconds)
        return result

    async def _run(self, code: str, workdir: Path) -> SandboxResult:
        limits = self.limits
        assert self.bwrap is not None
        times_read, times_write = os.pipe()
        command = bwrap_command(self.bwrap, workdir, limits, times_fd=times_write)
        cgroup: Path | None = None
        if self.cgroups is not None:
            self._runs += 1
            try:
                cgroup = await asyncio.to_thread(self.cgroups.create, f"run-{os.getpid()}-{self._runs}",
                                                 processes=limits.processes + 2, memory_bytes=limits.memory_bytes)
                command = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *command]
            except OSError as error:
                log.warning("sandbox_cgroup_failed", error=str(error))
                cgroup = None
        spawned = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(times_write,), start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except BaseException:
            os.close(times_read)
            if cgroup is not None:
                await asyncio.to_thread(CgroupParent.remove, cgroup)
            raise
        finally:
            os.close(times_write)
        out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
        outcome: Outcome | None = None
        try:
            assert process.stdin is not None and process.stdout is not None and process.stderr is not None
            readers = asyncio.gather(out.drain(process.stdout), err.drain(process.stderr), self._feed(process, code))
            watcher = asyncio.ensure_future(self._watch_disk(workdir))
            try:
                done, _ = await asyncio.wait({asyncio.ensure_future(process.wait()), watcher},
                                             timeout=limits.timeout, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    outcome = "disk"
                elif not done:
                    outcome = "timeout"
            finally:
                watcher.cancel()
            if outcome is not None:
                _kill(process)
            await process.wait()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(readers, 5.0)  # a descendant that escaped the kill cannot hold us
        except BaseException:
            _kill(process)
            raise
        finally:
            if cgroup is not None:
                oom = CgroupParent.memory_events(cgroup)
                await asyncio.to_thread(CgroupParent.remove, cgroup)
                if oom and outcome is None:
                    outcome = "memory"
        seconds = time.monotonic() - spawned
        marks = _read_marks(times_read)
        stderr = err.text()
        if outcome is None:
            if process.returncode == 0:
                outcome = "output_capped" if out.dropped or err.dropped else "ok"
            elif _ended_by_memory(stderr, process.returncode):
                outcome = "memory"
            else:
                outcome = "error"
        return SandboxResult(outcome, out.text(), stderr, out.dropped, err.dropped, process.returncode,
                             seconds, spawned, marks[0] if marks else None, marks[1] if len(marks) > 1 else None,
                             _note(outcome, limits))

    @staticmethod
    async def _feed(process: asyncio.subprocess.Process, code: str) -> None:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(code.encode("utf-8", "replace"))
            await process.stdin.drain()
        process.stdin.close()

    async def _watch_disk(self, workdir: Path) -> None:
        """Return (ending the run) once ``/mnt/data`` holds more than the container's bytes."""
        while True:
            await asyncio.sleep(DISK_POLL_SECONDS)
            if await asyncio.to_thread(directory_bytes, workdir) > self.limits.container_bytes:
                return


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _read_marks(fd: int) -> list[float]:
    try:
        os.set_blocking(fd, False)
        data = os.read(fd, 4096)
    except OSError:
        data = b""
    finally:
        os.close(fd)
    marks: list[float] = []
    for line in data.decode("ascii", "replace").split():
        with contextlib.suppress(ValueError):
            marks.append(float(line))
    return marks


def _ended_by_memory(stderr: str, returncode: int | None) -> bool:
    last = stderr.rstrip().rsplit("\n", 1)[-1]
    return last.startswith("MemoryError") or returncode == -signal.SIGKILL


def _note(outcome: Outcome, limits: SandboxLimits) -> str:
    if outcome == "timeout":
        return f"Execution stopped: the code ran past the {limits.timeout:g} s time limit."
    if outcome == "memory":
        return f"Execution ran out of memory: the limit is {limits.memory_bytes // (1 << 20)} MiB."
    if outcome == "disk":
        return (f"Execution stopped: the files in /mnt/data passed the container's limit of "
                f"{limits.container_bytes // (1 << 20)} MiB.")
    return ""


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
