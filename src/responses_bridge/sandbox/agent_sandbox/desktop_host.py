"""Desktops on the ``agent-sandbox`` backend: one pod of the desktop pool (``RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_
POOL``, deploy/kubernetes/components/agent-sandbox-desktop: the desktop image) claimed for each desktop, for as long
as it runs (backend.py's ``pod``), holding none of the code slots: the desktops' own pool bounds how many run.

The desktop's process (sandbox/desktop/agent.py) runs there through the runtime's process API, as the model's code
does: started with ``Start`` and the desktop's source on its command line (its stdin is the request channel), it
answers on its stdout — the ready line, then each answer's head and JPEG — which the stream brings back as it is
written, and reads its requests from its stdin (``WriteStdin``, in order, from one sender task). The pod is another
machine: no Unix socket of the call's can be shared with it, and the API is the one way in the pods' NetworkPolicy
allows. The browser's network is the call's egress proxy behind the bridge's egress door, with the call's own
credential (agent.py relays the browser to it: sandbox/desktop/proxy_relay.py) and the session's origin approvals
asked by that proxy, as on bubblewrap. What a pod's desktop cannot give: its memory (the pod's cgroup is the
node's; :meth:`PodLink.memory` is None — the pod's limit bounds it) and its processes' host pids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import grpc
from google.protobuf import empty_pb2
from k8s_agent_sandbox.commands._process_stubs import process_pb2

from ..cgroups.per_call import MemoryUse
from ..desktop.desktop import DesktopUnavailable
from ..desktop.host import HEAD_LIMIT, Channel, DesktopLink, Sender
from ..egress.origins import OriginGate
from ..egress.policy import NetworkPolicy
from ..limits import SandboxLimits
from ..result import Capture, SandboxResult
from . import transfer
from .session import ENV, ClaimedPod

NO_POOL = ("RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL names no warm pool of desktop pods (the Kustomize component "
           "deploy/kubernetes/components/agent-sandbox-desktop adds one, with the desktop image)")
STDERR_KEPT = 4096


class PodClaims(Protocol):
    """What a desktop takes of the backend (backend.py's :class:`AgentSandboxBackend`): its pods, its refusals."""

    unavailable: str | None
    python: str
    runtime_root: str

    def network_refusal(self) -> str | None: ...

    def pod(self, pool: str, *, tenant: str, network: NetworkPolicy | None, seconds: float,
            origins: OriginGate | None = None) -> AbstractAsyncContextManager[ClaimedPod]: ...


class PodDesktopHost:
    """Desktops in pods of ``pool`` (None: none runs here, :meth:`unavailable` says which setting)."""

    uid: int | None = None  # the pod's, not this machine's

    def __init__(self, backend: PodClaims, pool: str | None) -> None:
        self.backend = backend
        self.pool = pool

    def unavailable(self, browser: str) -> str | None:
        """Why no desktop runs on this backend: the pool unset, or the backend itself unable to run. What the
        image holds (the browser, the display) is the image's: a pod without it fails to start, saying so."""
        if self.pool is None:
            return NO_POOL
        return self.backend.unavailable

    @contextlib.asynccontextmanager
    async def open(self, *, tenant: str, network: NetworkPolicy | None, limits: SandboxLimits, user_namespaces: bool,
                   origins: OriginGate | None) -> AsyncIterator[DesktopLink]:
        """One pod for the desktop's life (``limits.timeout``: its outer bound, the claim's shutdown time past it);
        its memory, processes and CPU are the pod template's (the component's), not ``limits``'."""
        assert self.pool is not None  # unavailable() said None
        if network is not None:
            refused = self.backend.network_refusal()
            if refused is not None:
                raise DesktopUnavailable(refused)
        async with self.backend.pod(self.pool, tenant=tenant, network=network, seconds=limits.timeout,
                                    origins=origins) as pod:
            link = PodLink(pod.stub, python=self.backend.python, env={**ENV, **pod.environment},
                           cwd=transfer.pod_path(transfer.DATA_DIR, self.backend.runtime_root))
            try:
                yield link
            finally:
                await link.close()


class PodLink:
    """The desktop's process in its pod: run through ``Start``, driven over its stdin and stdout."""

    channel: Channel = "stdio"
    init_pid: int | None = None

    def __init__(self, stub: Any, *, python: str, env: dict[str, str], cwd: str) -> None:
        self._stub = stub
        self._python = python
        self._env = env
        self._cwd = cwd
        self._answers = asyncio.StreamReader(limit=HEAD_LIMIT)
        self._started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._stdin: _Stdin | None = None

    async def run(self, code: str, on_stdout: Callable[[bytes], None]) -> SandboxResult:
        """Run the desktop's process until it ends: its first line to ``on_stdout``, the rest to the answers'
        stream; what it wrote on stderr kept (bounded) for why it ended."""
        stream = self._stub.Start(process_pb2.StartRequest(config=process_pb2.ProcessConfig(
            command=[self._python, "-c", code], env_vars=self._env, cwd=self._cwd)))
        err = Capture(STDERR_KEPT)
        first_line = True
        exit_code: int | None = None
        note = ""
        try:
            async for event in stream:
                which = event.WhichOneof("event")
                if which == "init" and not self._started.done():
                    self._started.set_result(event.init.process_id)
                elif which == "stdout":
                    data = bytes(event.stdout)
                    if first_line:
                        end = data.find(b"\n")
                        on_stdout(data if end < 0 else data[:end + 1])
                        if end < 0:
                            continue
                        first_line, data = False, data[end + 1:]
                    if data:
                        self._answers.feed_data(data)
                elif which == "stderr":
                    err.data_received(event.stderr)
                elif which == "exit":
                    exit_code = event.exit.exit_code
        except grpc.aio.AioRpcError as error:
            note = f"the pod's process API failed ({error.code().name}: {error.details() or ''})"
        finally:
            stream.cancel()
            self._answers.feed_eof()
            if not self._started.done():
                self._started.set_exception(DesktopUnavailable(note or "the desktop's process never started"))
                self._started.exception()  # retrieved: run's caller reads the end, not this
        return SandboxResult("ok" if exit_code == 0 else "error", "", err.text(), exit_code=exit_code,
                             note=note or (f"its process ended with status {exit_code}" if exit_code else ""))

    async def connect(self) -> tuple[asyncio.StreamReader, Sender]:
        if self._stdin is None:
            self._stdin = _Stdin(self._stub, await self._started)
        return self._answers, self._stdin

    def memory(self) -> MemoryUse | None:
        return None

    async def close(self) -> None:
        if self._stdin is not None:
            await self._stdin.aclose()


class _Stdin:
    """The process's stdin: what :meth:`write` is given, sent in order by one task (``WriteStdin`` each);
    :meth:`drain` waits until all of it went, raising ``OSError`` once a write failed."""

    def __init__(self, stub: Any, process_id: int) -> None:
        self._stub = stub
        self._process_id = process_id
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._failed: str | None = None
        self._closed = False
        self._task = asyncio.ensure_future(self._send())

    def write(self, data: bytes) -> None:
        if self._failed is not None or self._closed:
            raise OSError(self._failed or "the desktop's stdin is closed")
        self._queue.put_nowait(data)

    async def drain(self) -> None:
        await self._queue.join()
        if self._failed is not None:
            raise OSError(self._failed)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)  # its end, after what was written

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._queue.join()), 2.0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _send(self) -> None:
        while True:
            data = await self._queue.get()
            try:
                if self._failed is None:
                    request = process_pb2.WriteStdinRequest(process_id=self._process_id, eof=empty_pb2.Empty()) \
                        if data is None else process_pb2.WriteStdinRequest(process_id=self._process_id, input=data)
                    await self._stub.WriteStdin(request)
            except grpc.aio.AioRpcError as error:
                self._failed = f"the pod's process API refused the desktop's input ({error.code().name})"
            finally:
                self._queue.task_done()
