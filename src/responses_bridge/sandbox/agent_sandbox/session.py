"""One call in a claimed sandbox pod (a :class:`~..backend.SandboxSession`): the container's files laid out by the
caller in a staging directory of the bridge's (:attr:`PodSession.data`), written into the pod's ``/mnt/data`` when
the run starts, the code run through the process API, and what it changed brought back (transfer.py) before
:meth:`PodSession.run` returns — so the container path reads the call's files back exactly as on bubblewrap.

A Python job runs ``python -`` in ``/mnt/data`` with the code on its stdin (no argument-length limit, no file of
the bridge's left in the pod); a shell job runs each command with ``/bin/sh -c`` in turn, each within its own
timeout and what is left of the call's, and reports them in the launcher's records (sandbox/shell.py reads them as
it reads bubblewrap's). Every limit the tools promise holds per call: the time limit (the process killed through
the API, the files still collected), the output kept (bounded captures as it streams in), the files' sizes
(collected whole or not at all); memory, processes and disk are the pod's (its template's limits).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
from k8s_agent_sandbox.exceptions import SandboxError

from ..backend import JobKind
from ..command import PACKAGE_BINS, PACKAGE_PATHS
from ..data_threads import T
from ..identity import SandboxIdentity
from ..limits import SandboxLimits
from ..result import Outcome, SandboxResult, SandboxUnavailable, ended_by_memory, note_for
from . import transfer
from .process import Ran, run_process

SIGKILL_STATUS = 137
"""A command the runtime reports ended by a signal (-1, Go's ``ExitCode()``), as a shell reports a killed one."""

WRITE_BACK_GRACE_SECONDS = 5.0
ENV = {"HOME": "/tmp", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
       # an agent environment's packages, where it has some (bound as on bubblewrap: ../command.py)
       "PATH": f"{PACKAGE_BINS}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **PACKAGE_PATHS}


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedPod:
    """A Ready pod of a call's: its ``k8s_agent_sandbox`` sandbox, the process API's stub, the environment its
    processes get (the egress proxy's URL with the call's credential, secrets' placeholders), how long the claim
    took."""

    sandbox: Any
    stub: Any
    environment: dict[str, str]
    claimed_in: float


class PodSession:
    """A started call in ``sandbox`` (a ``k8s_agent_sandbox`` ``AsyncSandbox``) over the staging ``root``."""

    def __init__(self, sandbox: Any, stub: Any, limits: SandboxLimits, root: Path, *, python: str,
                 claimed_in: float, environment: dict[str, str] | None = None, runtime_root: str = "/mnt") -> None:
        self._sandbox = sandbox
        self._stub = stub
        self._limits = limits
        self._root = root
        self._python = python
        self._data = transfer.pod_path(transfer.DATA_DIR, runtime_root)  # /mnt/data as the file API names it
        self._env = {**ENV, **(environment or {})}  # the egress proxy's URL and placeholders, under a policy
        self.claimed_in = claimed_in
        self._ready_at = time.monotonic()
        self._deadline = self._ready_at + limits.timeout + WRITE_BACK_GRACE_SECONDS
        self._stdout = b""
        self._on_stdout: Callable[[bytes], None] | None = None
        self.notes: list[str] = []
        self.first_output: float | None = None

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    @property
    def data(self) -> Path:
        return self._root

    @property
    def identity(self) -> SandboxIdentity:
        return SandboxIdentity()  # the staging directory is the bridge's own; the pod has its own uid

    def in_thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        return asyncio.to_thread(function, *arguments)  # a directory of its own path: no descriptor to outlive

    def thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        return asyncio.to_thread(function, *arguments)

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def seconds_for_code(self) -> float:
        return self._limits.timeout

    @property
    def stdout_bytes(self) -> bytes:
        return self._stdout

    async def run(self, code: str, *, job: JobKind = "python",
                  on_stdout: Callable[[bytes], None] | None = None) -> SandboxResult:
        """Lay the files out in the pod, run, bring back what changed. Raises :class:`SandboxUnavailable` (the
        call's failure, worded) when the pod's APIs fail or do not answer in time: never a hang, never a 500."""
        self._on_stdout = on_stdout
        try:
            return await self._run(code, job)
        except TimeoutError:
            raise SandboxUnavailable(f"the sandbox pod's file API did not take the container's files within "
                                     f"{self._limits.timeout:g} s") from None
        except (SandboxError, httpx.HTTPError, grpc.RpcError, RuntimeError, OSError) as error:
            raise SandboxUnavailable(f"the sandbox pod failed the call ({_said(error)})") from None

    async def _run(self, code: str, job: JobKind) -> SandboxResult:
        files = self._sandbox.files
        started = time.monotonic()
        async with asyncio.timeout(self._limits.timeout):  # the lay-out is the bridge's, not the code's time
            await transfer.upload_tree(files, self._root, self._data)
            before = await transfer.list_tree(files, self._data)
        code_deadline = time.monotonic() + self._limits.timeout
        if job == "shell":
            result = await self._shell(code, code_deadline)
        else:
            ran = await run_process(self._stub, [self._python, "-"], cwd=self._data, env=self._env,
                                    seconds=code_deadline - time.monotonic(), keep=self._limits.output_bytes,
                                    stdin=code.encode("utf-8", "replace"))
            self.first_output = ran.first_output
            self._stdout = bytes(ran.out.kept)
            result = self._result(ran, started)
        try:
            async with asyncio.timeout(self._limits.timeout + WRITE_BACK_GRACE_SECONDS):
                self.notes = await transfer.collect(files, self._data, self._root, before,
                                                    file_bytes=self._limits.file_bytes,
                                                    total_bytes=self._limits.container_bytes)
        except TimeoutError:
            self.notes = ["The pod's files could not all be brought back in time: changes not brought back are "
                          "lost."]
        self._deadline = max(self._deadline, time.monotonic() + WRITE_BACK_GRACE_SECONDS)
        if self.notes:  # said with the call's outcome, as the write-back's own notes are
            result = dataclasses.replace(result, note=" ".join([result.note, *self.notes]).strip())
        return result

    def _result(self, ran: Ran, started: float) -> SandboxResult:
        stderr = ran.err.text()
        outcome: Outcome
        if ran.timed_out:
            outcome = "timeout"
        elif ran.exit_code is not None and ended_by_memory(stderr, -9 if ran.exit_code in (-1, 137) else 0):
            outcome = "memory"
        elif "No space left on device" in stderr:
            outcome = "disk"
        elif ran.exit_code == 0:
            outcome = "output_capped" if ran.out.dropped or ran.err.dropped else "ok"
        else:
            outcome = "error"
        return SandboxResult(outcome, ran.out.text(), stderr, ran.out.dropped, ran.err.dropped, ran.exit_code,
                             ran.finished - started, spawned=started, started=ran.started, finished=ran.finished,
                             note=note_for(outcome, self._limits))

    async def _shell(self, source: str, deadline: float) -> SandboxResult:
        """A shell job (sandbox/shell.py's JSON): each command in turn, a record each, as the launcher writes them."""
        job = orjson.loads(source)
        room, keep = int(job["room"]), int(job["keep"])
        env = {**self._env, **{str(name): str(value) for name, value in (job.get("env") or {}).items()}}
        started = time.monotonic()
        records = bytearray()
        outcome: Outcome = "ok"
        for index, command in enumerate(job["commands"]):
            left = deadline - time.monotonic()
            if left <= 0.05:
                record = _record(index, "skipped", 0, b"", b"", 0, 0)
                outcome = "timeout"
            else:
                ran = await run_process(self._stub, ["/bin/sh", "-c", str(command)], cwd=self._data, env=env,
                                        seconds=min(float(job["timeout"]), left), keep=keep)
                if self.first_output is None:
                    self.first_output = ran.first_output
                code = SIGKILL_STATUS if ran.exit_code is None or ran.exit_code < 0 else ran.exit_code  # -1: a signal
                record = _record(index, "timeout" if ran.timed_out else "exit", code, bytes(ran.out.kept),
                                 bytes(ran.err.kept), ran.out.dropped, ran.err.dropped)
            if len(record) > room:
                break
            records += record
            room -= len(record)
            if self._on_stdout is not None:  # each command's record as it ends (the process API's own output
                self._on_stdout(record)      # is read whole per command here)
        self._stdout = bytes(records)
        finished = time.monotonic()
        return SandboxResult(outcome, "", "", exit_code=0, seconds=finished - started, spawned=started,
                             started=started, finished=finished, note=note_for(outcome, self._limits))


def _said(error: BaseException) -> str:
    """An API failure in a few words (a gRPC status's code and details, else the error's own first line)."""
    if isinstance(error, grpc.RpcError):
        return f"{error.code()}: {error.details()}"
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _record(index: int, kind: str, code: int, out: bytes, err: bytes, out_dropped: int, err_dropped: int) -> bytes:
    """One command's record, in the launcher's form (launcher.py's shell mode; sandbox/shell.py reads it)."""
    return f"{index} {kind} {code} {len(out)} {len(err)} {out_dropped} {err_dropped}\n".encode() + out + err
