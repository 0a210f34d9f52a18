"""A stand-in for an agent-sandbox pod on this machine: the sandbox runtime's two real APIs — files over REST
(``/v1/files/{path}``: GET a file or a directory's listing, HEAD, PUT atomically with parents made, DELETE;
``/v1/health``) and processes over gRPC (``process.v1.ProcessService``: Execute, streamed Start, WriteStdin,
SendSignal, from the stubs the ``k8s-agent-sandbox`` wheel ships) — on a loopback address of its own, the "pod IP",
with every process run in bubblewrap over the pod's root (its ``/mnt`` the pod's, the host's system read-only, no
network, its own PID namespace: the pod's kernel view, under an unprivileged uid).

What it is not: a pod's memory cgroup (each process gets ``RLIMIT_DATA`` of the pod's memory instead), gVisor, or a
NetworkPolicy (the egress path is tested at the proxy). It is what the ``agent-sandbox`` backend's tests and the
benchmark run against, started by kube.py's controller for each claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from responses_bridge.sandbox.command import python_binds
from responses_bridge.sandbox.identity import SandboxIdentity

try:
    from k8s_agent_sandbox.commands._process_stubs import process_pb2, process_pb2_grpc
except ImportError as missing:  # the stand-in speaks the runtime's own wire: its stubs come with the client
    raise ImportError("the stand-in pod needs the agent-sandbox extra: pip install "
                      "'responses-bridge[agent-sandbox]'") from missing

_ADDRESSES = itertools.count(2)
_NET = 20 + os.getpid() % 200
"""The second octet of this process's pod IPs (127.<n>.x.y): processes testing at once do not share addresses."""


def next_pod_ip() -> str:
    number = next(_ADDRESSES)
    return f"127.{_NET}.{number // 250}.{number % 250 + 2}"


def _entry(path: Path) -> dict[str, Any]:
    found = path.lstat()
    return {"name": path.name, "size": found.st_size, "type": "directory" if path.is_dir() else "file",
            "modified_at": datetime.fromtimestamp(found.st_mtime_ns / 1e9, UTC).isoformat().replace("+00:00", "Z"),
            "mode": f"{found.st_mode & 0o777:04o}"}


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


@dataclass
class _Process:
    process: asyncio.subprocess.Process
    exited: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class StandInPodServer:
    """One pod: ``root`` its file system (``mnt/`` bound at ``/mnt``), served at ``ip`` on the two ports."""

    ip: str
    rest_port: int
    grpc_port: int
    memory_bytes: int = 1 << 30
    network: bool = False
    """Share the host's network (for the egress tests: the pods' NetworkPolicy is not emulated here)."""
    runtime_root: str = "/mnt"
    """The runtime's root directory, as the sandbox image runs it (sandboxd ``--root-dir /mnt``)."""
    _answering: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared: the file API takes requests and answers none (a pod whose runtime stopped answering)."""
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="standin-pod-")))
    identity: SandboxIdentity = field(default_factory=SandboxIdentity.for_process)
    _runner: web.AppRunner | None = None
    _grpc: Any = None
    _processes: dict[int, _Process] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    async def start(self) -> None:
        self._answering.set()
        self.root.chmod(0o755)  # the pod's uid traverses it (mkdtemp makes it the bridge's alone)
        (self.root / "mnt" / "data").mkdir(parents=True)
        self._own(self.root / "mnt")
        self._own(self.root / "mnt" / "data")
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/v1/health", _health)
        app.router.add_route("*", "/v1/files/{path:.*}", self._files)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ip, self.rest_port).start()
        self._grpc = grpc.aio.server()
        process_pb2_grpc.add_ProcessServiceServicer_to_server(_Service(self), self._grpc)
        self._grpc.add_insecure_port(f"{self.ip}:{self.grpc_port}")
        await self._grpc.start()

    async def stop(self) -> None:
        self.hold(False)  # a held request ends with the pod, as a deleted pod's connections do
        for held in list(self._processes.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(held.process.pid, signal.SIGKILL)
        if self._grpc is not None:
            await self._grpc.stop(0)
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.to_thread(shutil.rmtree, self.root, True)

    def _own(self, path: Path) -> None:
        if self.identity.uid is not None:
            os.chown(path, self.identity.uid, self.identity.gid or self.identity.uid)

    # --- files -----------------------------------------------------------------------------------------------

    def _resolve(self, raw: str) -> Path | None:
        """A file API path on the pod's disk: relative to the runtime's root, never outside it."""
        base = self.root / self.runtime_root.lstrip("/")
        target = Path(os.path.normpath(base / urllib.parse.unquote(raw).lstrip("/")))
        if target != base and base not in target.parents:
            return None
        return target

    def hold(self, held: bool) -> None:
        """Stop answering file requests (``held``), or answer them again (those waiting first)."""
        if held:
            self._answering.clear()
        else:
            self._answering.set()

    async def _files(self, request: web.Request) -> web.StreamResponse:
        await self._answering.wait()
        raw = request.raw_path.split("/v1/files/", 1)[1].split("?", 1)[0]
        target = self._resolve(raw)
        if target is None:
            return _error(403, "PERMISSION_DENIED", "Path traversal outside sandbox root is forbidden.")
        if request.method in ("GET", "HEAD"):
            if not target.exists() or target.is_symlink():
                return _error(404, "NOT_FOUND", "no such file or directory")
            if target.is_dir():
                if request.method == "HEAD":
                    return web.Response(status=200)
                entries = [_entry(child) for child in sorted(target.iterdir())]
                return web.json_response({"path": "/" + str(target.relative_to(self.root)), "entries": entries})
            return web.FileResponse(target, headers={"Content-Type": "application/octet-stream"})
        if request.method == "PUT":
            mode = int(request.query.get("mode", "0644"), 8)
            target.parent.mkdir(parents=True, exist_ok=True)
            for parent in [target.parent, *target.parent.parents]:
                if parent == self.root / "mnt" or parent == self.root:
                    break
                self._own(parent)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".put-")
            with os.fdopen(fd, "wb") as handle:
                async for chunk in request.content.iter_chunked(1 << 16):
                    handle.write(chunk)
            os.chmod(temporary, mode)
            self._own(Path(temporary))
            os.replace(temporary, target)
            return web.Response(status=204)
        if request.method == "DELETE":
            if not target.exists():
                return _error(404, "NOT_FOUND", "no such file or directory")
            if target.is_dir():
                if request.query.get("recursive") != "true" and any(target.iterdir()):
                    return _error(409, "FAILED_PRECONDITION", "directory not empty")
                shutil.rmtree(target)
            else:
                target.unlink()
            return web.Response(status=204)
        return _error(405, "METHOD_NOT_ALLOWED", "method not allowed")

    # --- processes -------------------------------------------------------------------------------------------

    def command(self, argv: list[str], cwd: str | None) -> list[str]:
        """``argv`` in bubblewrap over the pod's root: the host's system read-only as the image, the pod's
        ``/mnt``, a fresh ``/tmp``, no network, a PID namespace whose end ends every process in it."""
        wrapped = ["bwrap", "--unshare-all", *(["--share-net"] if self.network else []), "--die-with-parent",
                   "--ro-bind", "/", "/", "--tmpfs", "/tmp",
                   "--tmpfs", "/run", "--tmpfs", "/root", "--tmpfs", "/home", "--dev", "/dev", "--proc", "/proc",
                   "--bind", str(self.root / "mnt"), "/mnt"]
        # the image's Python: the bridge's own and its virtual environment (its libraries: Pillow for a desktop's
        # screenshots), each where it lies, where the pod's uid reaches them (else the system's python3 only)
        for source, _ in python_binds():
            if self.identity.unreachable(source) is None:
                wrapped += ["--ro-bind", source, source]
        wrapped += ["--chdir", self.working_directory(cwd), "--", *argv]
        # the pod's memory as each process's RLIMIT_DATA (util-linux's prlimit: no preexec_fn in a gRPC server):
        # its writable private memory, nearer what a pod's memory cgroup counts than RLIMIT_AS, which also counts
        # address space only reserved — node reserves its heap's cage and an allocator arena for each thread that
        # allocates at once, so `npm install` under RLIMIT_AS at 1 GiB aborted (std::bad_alloc) now and then, as the
        # machine's load timed its threads; a pod would have run it
        return ["prlimit", f"--data={self.memory_bytes}", "--", *self.identity.wrap(wrapped)]

    def working_directory(self, cwd: str | None) -> str:
        """``cwd`` as sandboxd confines it: under the runtime's root (a path relative to it, or absolute within
        it); raises PermissionError for one outside."""
        root = self.runtime_root.rstrip("/") or "/"
        if not cwd:
            return root
        joined = os.path.normpath(cwd if cwd.startswith(root + "/") or cwd == root else f"{root}/{cwd.lstrip('/')}")
        if joined != root and not joined.startswith(root.rstrip("/") + "/"):
            raise PermissionError(f"cwd {cwd} escapes the sandbox root")
        return joined

    async def spawn(self, config: Any) -> tuple[int, _Process]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", **dict(config.env_vars)}
        process = await asyncio.create_subprocess_exec(
            *self.command(list(config.command), config.cwd if config.HasField("cwd") else None),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, env=env)
        number = next(self._ids)
        held = _Process(process)
        self._processes[number] = held
        return number, held


class _Service(process_pb2_grpc.ProcessServiceServicer):
    def __init__(self, pod: StandInPodServer) -> None:
        self.pod = pod

    async def Execute(self, request: Any, context: Any) -> Any:
        number, held = await self.pod.spawn(request.config)
        try:
            assert held.process.stdin is not None
            held.process.stdin.close()
            out, err = await held.process.communicate()
        finally:
            self.pod._processes.pop(number, None)
        return process_pb2.ExecuteResponse(exit_code=_code(held.process.returncode), stdout=out, stderr=err)

    async def Start(self, request: Any, context: Any) -> AsyncIterator[Any]:
        number, held = await self.pod.spawn(request.config)
        yield process_pb2.StartResponse(init=process_pb2.InitEvent(process_id=number))
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump(stream: asyncio.StreamReader, kind: str) -> None:
            while chunk := await stream.read(1 << 16):
                await queue.put(process_pb2.StartResponse(**{kind: chunk}))

        assert held.process.stdout is not None and held.process.stderr is not None
        pumps = [asyncio.ensure_future(pump(held.process.stdout, "stdout")),
                 asyncio.ensure_future(pump(held.process.stderr, "stderr"))]
        done = asyncio.ensure_future(asyncio.gather(*pumps))
        try:
            while not (done.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            await held.process.wait()
            yield process_pb2.StartResponse(exit=process_pb2.ExitEvent(exit_code=_code(held.process.returncode)))
        finally:
            for task in pumps:
                task.cancel()
            if held.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(held.process.pid, signal.SIGKILL)
            self.pod._processes.pop(number, None)

    async def WriteStdin(self, request: Any, context: Any) -> Any:
        held = self.pod._processes.get(request.process_id)
        if held is None or held.process.stdin is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no process {request.process_id}")
        assert held is not None and held.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if request.WhichOneof("payload") == "eof":
                held.process.stdin.close()
            else:
                held.process.stdin.write(request.input)
                await held.process.stdin.drain()
        return process_pb2.WriteStdinResponse()

    async def SendSignal(self, request: Any, context: Any) -> Any:
        held = self.pod._processes.get(request.process_id)
        if held is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no process {request.process_id}")
        assert held is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(held.process.pid, int(request.signal) or signal.SIGTERM)
        return process_pb2.SendSignalResponse()


def _code(returncode: int | None) -> int:
    """The exit code as sandboxd reports it (Go's ``ExitCode()``): -1 for a process a signal ended."""
    if returncode is None or returncode < 0:
        return -1
    return returncode


@dataclass
class StandInPods:
    """Starts a pod per claim for kube.py (its ``start_pod``), all on the same two ports. ``warm``: pods
    kept started ahead, as a SandboxWarmPool keeps them (a claim takes one and another is started behind it);
    0: each claim waits for its pod to start (a cold claim)."""

    rest_port: int
    grpc_port: int
    memory_bytes: int = 1 << 30
    network: bool = False
    warm: int = 0
    files_held: bool = False
    started: list[StandInPodServer] = field(default_factory=list)
    _ready: list[StandInPodServer] = field(default_factory=list)
    _filling: set[asyncio.Task[None]] = field(default_factory=set)

    async def _new(self) -> StandInPodServer:
        pod = StandInPodServer(next_pod_ip(), self.rest_port, self.grpc_port, self.memory_bytes, self.network)
        await pod.start()
        pod.hold(self.files_held)
        self.started.append(pod)
        return pod

    def hold_files(self, held: bool) -> None:
        """Make every pod's file API, started or to come, stop answering (or answer again)."""
        self.files_held = held
        for pod in self.started:
            pod.hold(held)

    async def fill(self) -> None:
        """Start pods until ``warm`` are ready."""
        while len(self._ready) < self.warm:
            self._ready.append(await self._new())

    async def __call__(self, claim: dict[str, Any]) -> StandInPodServer:
        if self._ready:
            pod = self._ready.pop(0)
            task = asyncio.ensure_future(self.fill())
            self._filling.add(task)
            task.add_done_callback(self._filling.discard)
            return pod
        return await self._new()

    async def stop(self) -> None:
        """Stop the warm pods no claim took."""
        for task in list(self._filling):
            task.cancel()
        while self._ready:
            await self._ready.pop().stop()
