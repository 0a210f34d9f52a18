"""One sandbox call from its start to its end: bubblewrap started with the launcher as the namespace's init, the
container's files laid out by the caller in :attr:`SandboxCall.data`, the code run, the files read back, the
sandbox ended — and with it everything the call started or wrote.

    call = SandboxCall(...); await call.start()     # the sandbox exists, /mnt/data empty and sized
    ... lay files out under call.data ...           # /proc/<init>/root/mnt/data, seen from the bridge
    result = await call.run(code)                   # every process of the code has ended when it returns
    ... read call.data back ...
    await call.close()                              # the namespace (and its in-memory files) is gone

The time limit ends the code through the init (SIGTERM: it kills every other process of the namespace), so the
files stay readable after a timeout; only an init that does not answer is killed outright. The bridge never kills
bubblewrap itself while its child lives: the init ends, bubblewrap reaps it and exits, and the bridge reaps
bubblewrap, so no process is ever re-parented to the bridge's PID 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from ..observability import metrics
from .cgroups import per_call as cgroups
from .cgroups.per_call import CgroupParent
from .command import DATA_DIR, EgressBinding, bwrap_command
from .data_threads import DataThreads, T
from .identity import SandboxIdentity
from .limits import SandboxLimits
from .pipe_reader import PipeReader, read_pipe
from .result import Capture, Outcome, SandboxResult, SandboxUnavailable, ended_by_memory, note_for

log = structlog.get_logger(__name__)

WRITE_BACK_GRACE_SECONDS = 5.0
"""How long past the call's time limit its files may still be written back (files begun by then are finished)."""
INIT_GRACE_SECONDS = 2.0
"""How long the init has to end the code and report after SIGTERM before it is killed outright."""
FULL_BELOW_BYTES = 1 << 20
"""``/mnt/data`` with less room than this left after the code ran: the call reached the container's limit."""
_REMOVALS: set[asyncio.Future[None]] = set()
"""Cgroup removals under way (held so none is collected before it ends)."""
JobKind = Literal["python", "shell"]
REFUSED_PROCESS = "PermissionError: [Errno 1] Operation not permitted"
SINGLE_PROCESS_REFUSAL = (
    "this sandbox runs one process: subprocess, os.system, os.fork, os.exec* and multiprocessing are refused here "
    "(no cgroup per call on this host); do it in Python itself")
JOIN_CGROUPS = 'IFS=:; for g in $0; do echo $$ > "$g/cgroup.procs" || exit 125; done; exec "$@"'


def _reader(fd: int) -> tuple[asyncio.StreamReader, PipeReader]:
    reader = asyncio.StreamReader(limit=1 << 16)
    return reader, read_pipe(fd, asyncio.StreamReaderProtocol(reader))


class SandboxCall:
    """One call's sandbox. ``seccomp``: the filter the code runs under; ``address_space``: each process's
    ``RLIMIT_AS``; ``cgroup_parent``: where the call's cgroup is made (None: the single-process mode)."""

    def __init__(self, bwrap: str, limits: SandboxLimits, *, seccomp: bytes, address_space: int,
                 cgroup_parent: CgroupParent | None, name: str,
                 read_only: Sequence[tuple[Path, str]] = (), egress: EgressBinding | None = None,
                 identity: SandboxIdentity | None = None, proc: bool = True, user_namespaces: bool = False) -> None:
        self.limits = limits
        self._user_namespaces = user_namespaces
        self._identity = identity or SandboxIdentity()
        self._proc = proc
        self._read_only = tuple(read_only)
        self._egress = egress
        self._bwrap = bwrap
        self._seccomp = seccomp
        self._address_space = address_space
        self._cgroup_parent = cgroup_parent
        self._name = name
        self._cgroup: list[Path] = []
        self._process: asyncio.subprocess.Process | None = None
        self._transports: list[PipeReader] = []
        self._out = Capture(limits.output_bytes)
        self._err = Capture(limits.output_bytes)
        self._outputs: list[PipeReader] = []  # the code's stdout and stderr
        self._follower: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._exited = asyncio.Event()
        self._status: int | None = None
        self._init_signalled = False  # the init ended the code on a SIGTERM the bridge did not send
        self._marks: dict[str, float] = {}
        self._init_pid: int | None = None
        self._data_fd: int | None = None
        self._data_threads = DataThreads()  # the threads at work in /mnt/data: its descriptor outlives them
        self._spawned = 0.0
        self._started_in = 0.0  # how long the sandbox took to be ready: part of the call's time limit

    @property
    def data(self) -> Path:
        """The call's ``/mnt/data`` as the bridge reaches it: a descriptor of the sandbox's own file system,
        opened through the init's root while the init was known to be the launcher, so it stays that file system
        even if the init's pid were ever reused."""
        if self._data_fd is None:
            raise RuntimeError("the sandbox has not started")
        return Path(f"/proc/self/fd/{self._data_fd}")

    async def start(self) -> None:
        """Start the sandbox and wait until its file systems exist. Raises :class:`SandboxUnavailable` when
        bubblewrap could not make it (its own words)."""
        control_read, control_write = os.pipe()
        info_read, info_write = os.pipe()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        inherited = (control_write, info_write)
        try:
            command = bwrap_command(self._bwrap, self.limits, control_fd=control_write, info_fd=info_write,
                                    address_space=self._address_space, read_only=self._read_only,
                                    egress=self._egress, proc=self._proc,
                                    user_namespaces=self._user_namespaces)
            try:
                command = self._identity.wrap(command)  # a root bridge's sandbox never runs as the host's root
            except FileNotFoundError as missing:
                raise SandboxUnavailable(str(missing)) from None
            if self._cgroup_parent is not None:
                try:
                    self._cgroup = await asyncio.to_thread(
                        self._cgroup_parent.create, self._name, processes=self.limits.processes + 2,
                        memory_bytes=self.limits.memory_bytes, cpus=self.limits.cpus)
                except OSError as error:  # never a call without its budget: refused, as without a sandbox
                    log.warning("sandbox_cgroup_failed", error=str(error))
                    raise SandboxUnavailable(f"the call's cgroup could not be made ({error})") from None
                command = ["/bin/sh", "-c", JOIN_CGROUPS, ":".join(map(str, self._cgroup)), *command]
            self._spawned = time.monotonic()
            self._process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=out_write, stderr=err_write, pass_fds=inherited,
                start_new_session=True, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except BaseException:  # refused or cancelled before the read ends have their transports: closed here
            for fd in (control_read, info_read, out_read, err_read):
                os.close(fd)
            raise
        finally:
            for fd in (*inherited, out_write, err_write):
                os.close(fd)
        # each pipe's transport owns its descriptor from here (pipe_reader.py: never uvloop's connect_read_pipe)
        self._outputs = [read_pipe(out_read, self._out), read_pipe(err_read, self._err)]
        control, control_transport = _reader(control_read)
        info, info_transport = _reader(info_read)
        self._transports += [*self._outputs, control_transport, info_transport]
        self._follower = asyncio.create_task(self._follow(control))
        try:
            async with asyncio.timeout(self.limits.timeout):
                details = await info.readuntil(b"}")
                await asyncio.wait({asyncio.ensure_future(self._ready.wait()),
                                    asyncio.ensure_future(self._exited.wait())},
                                   return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise SandboxUnavailable(f"the sandbox did not start within {self.limits.timeout:g} s") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            details = b""
        if not self._ready.is_set():
            await self._process.wait()
            await self._output_taken()
            said = self._err.text().strip().splitlines()
            raise SandboxUnavailable(f"bubblewrap could not make the sandbox ({said[-1] if said else 'no reason'})")
        try:
            self._init_pid = int(orjson.loads(details)["child-pid"])
            self._data_fd = os.open(f"/proc/{self._init_pid}/root{DATA_DIR}", os.O_PATH | os.O_DIRECTORY)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as error:
            raise SandboxUnavailable(f"the sandbox's /mnt/data could not be reached ({error})") from None

    async def _follow(self, control: asyncio.StreamReader) -> None:
        """The launcher's lines: ``ready``, ``start T``, ``end T``, ``exit STATUS``; its end is the sandbox's."""
        try:
            while line := await control.readline():
                word, _, value = line.decode("ascii", "replace").strip().partition(" ")
                if word == "ready":
                    self._started_in = time.monotonic() - self._spawned
                    self._ready.set()
                elif word == "exit":
                    status, _, how = value.partition(" ")
                    self._status = int(status)
                    self._init_signalled = how == "signalled"
                    self._exited.set()
                elif word in ("start", "end"):
                    with contextlib.suppress(ValueError):
                        self._marks[word] = float(value)
        except (ValueError, OSError):
            pass
        finally:
            self._exited.set()

    @property
    def init_pid(self) -> int | None:
        """The host pid of the call's init (None before it started): its PID namespace is the call's."""
        return self._init_pid

    def memory(self) -> cgroups.MemoryUse | None:
        """What the call's memory cgroup holds now and at most (None in the single-process mode: no cgroup)."""
        return cgroups.memory_use(self._cgroup)

    @property
    def identity(self) -> SandboxIdentity:
        """Whose host uid the code has: write into :attr:`data` through :meth:`in_thread`."""
        return self._identity

    def in_thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """``function(*arguments)`` in a thread with the sandbox's file-system ids (:meth:`SandboxIdentity.in_thread`),
        counted: :attr:`data`'s descriptor stays open until it ends, even if the caller is cancelled meanwhile."""
        return self._data_threads.run(self._identity.in_thread(function, *arguments))

    def thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """``function(*arguments)`` in a thread (the bridge's own ids: reading :attr:`data` back), counted."""
        return self._data_threads.thread(function, *arguments)

    @property
    def deadline(self) -> float:
        """When the call's time is up (the monotonic clock): its start plus its time limit, and a few seconds for
        the files' write-back, which must not run on long after."""
        return self._spawned + self.limits.timeout + WRITE_BACK_GRACE_SECONDS

    @property
    def seconds_for_code(self) -> float:
        """The call's time limit less what the sandbox took to start: what the code (or a shell job) may take."""
        return self.limits.timeout - self._started_in

    @property
    def stdout_bytes(self) -> bytes:
        """What was kept of the code's stdout, undecoded (a shell job's records: shell.py)."""
        return bytes(self._out.kept)

    async def run(self, code: str, *, job: JobKind = "python",
                  on_stdout: Callable[[bytes], None] | None = None) -> SandboxResult:
        """Run ``code`` as ``__main__`` in ``/mnt/data`` (``job="shell"``: ``code`` is a shell job's JSON, see
        launcher.py); when it returns, none of the code's processes is left. ``on_stdout``: told of the kept
        stdout as it arrives."""
        self._out.listener = on_stdout
        process = self._process
        assert process is not None and process.stdin is not None
        source = code.encode("utf-8", "replace")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(f"{len(self._seccomp)} {len(source)} {job}\n".encode() + self._seccomp + source)
            await process.stdin.drain()
        timed_out = False
        remaining = self.seconds_for_code  # the files' lay-out is the bridge's, not the code's
        try:
            await asyncio.wait_for(self._exited.wait(), max(remaining, 0.01))
        except TimeoutError:
            timed_out = True
            await self._end_code()
        except asyncio.CancelledError:
            # its request gone (or ended by the memory backstop): nobody reads what the code would
            # still do, and closing its stdin does not end a running job — the slot would wait out the init's grace.
            # The init ends the code as at the time limit (SIGTERM), and exits once close() shuts its stdin.
            if self._init_pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self._init_pid, signal.SIGTERM)
            raise
        await self._output_taken()
        result = await self._result(timed_out)
        metrics.sandbox_run(result.outcome, result.seconds, job=job)
        return result

    async def _output_taken(self) -> None:
        """Wait (briefly) until what the code wrote is all read: once its processes are gone nothing writes to
        the output pipes any more (the init's own output goes nowhere), so an empty pipe is a complete one."""
        for _ in range(1000):
            if not any(output.unread() for output in self._outputs):
                return
            await asyncio.sleep(0.001)

    async def _end_code(self) -> None:
        """The time limit: the init ends every process of the code. An init that does not is killed, and the call
        waits for bubblewrap to reap it: the kernel ends every process of the namespace before its init's end is
        reaped, so nothing of the code runs while the files are read back."""
        if self._init_pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self._init_pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._exited.wait(), INIT_GRACE_SECONDS)
        except TimeoutError:
            log.warning("sandbox_init_unresponsive", pid=self._init_pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._init_pid, signal.SIGKILL)
            if self._process is not None:
                await self._process.wait()

    async def _result(self, timed_out: bool) -> SandboxResult:
        stderr = self._err.text()
        status = self._status
        outcome: Outcome
        if timed_out:
            outcome = "timeout"
        elif self._cgroup and cgroups.killed_for_memory(self._cgroup):  # a few small reads of cgroupfs
            outcome = "memory"
        elif await self.thread(self._data_full):
            outcome = "disk"
        elif status == 0:
            outcome = "output_capped" if self._out.dropped or self._err.dropped else "ok"
        elif self._init_signalled:
            outcome = "error"
            stderr += ("\n[sandbox] the code sent SIGTERM to the sandbox's init (PID 1), which ends every process "
                       "of the call\n")
        elif ended_by_memory(stderr, status):
            outcome = "memory"
        else:
            outcome = "error"
        if self._cgroup_parent is None and REFUSED_PROCESS in stderr:  # the single-process mode's filter
            stderr += f"\n[sandbox] {SINGLE_PROCESS_REFUSAL}\n"
        return SandboxResult(outcome, self._out.text(), stderr, self._out.dropped, self._err.dropped, status,
                             time.monotonic() - self._spawned, self._spawned, self._marks.get("start"),
                             self._marks.get("end"), note_for(outcome, self.limits))

    def _data_full(self) -> bool:
        try:
            found = os.statvfs(self.data)
        except OSError:
            return False
        return found.f_bavail * found.f_frsize < FULL_BELOW_BYTES

    async def close(self, *, settle: bool = False) -> None:
        """End the sandbox (its init exits when stdin closes) and remove the call's cgroup. Never raises but for
        cancellation, which still ends everything first. ``settle``: wait for the cgroup's removal too (a loop of
        its own about to end — the start-up proof, ``doctor`` — would otherwise cancel it and leave the cgroup)."""
        process = self._process
        try:
            if process is not None:
                if process.stdin is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        process.stdin.close()
                try:
                    await asyncio.wait_for(asyncio.shield(process.wait()), INIT_GRACE_SECONDS)
                except TimeoutError:
                    self._kill()
                    await process.wait()
        except BaseException:
            self._kill()
            raise
        finally:
            if self._follower is not None:
                self._follower.cancel()
            for transport in self._transports:
                transport.close()
            if self._data_fd is not None:  # the call's in-memory files are freed with it
                self._data_threads.close_when_idle(self._data_fd)
                self._data_fd = None
            if self._cgroup and settle:
                await asyncio.to_thread(cgroups.remove, self._cgroup)
            elif self._cgroup:  # emptied and removed off the answer's path (a v1 cgroup stays busy a few ms)
                removal = asyncio.ensure_future(asyncio.to_thread(cgroups.remove, self._cgroup))
                _REMOVALS.add(removal)
                removal.add_done_callback(_REMOVALS.discard)

    def _kill(self) -> None:
        """The last resort: the init first (its namespace ends with it), then bubblewrap's process group."""
        for pid, kill in ((self._init_pid, os.kill), (self._process.pid if self._process else None, os.killpg)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
