"""An exec-server as ``codex exec-server --remote URL --environment-id ID --remote-transport direct --aws-sigv4``
behaves (codex 0.169, written from its protocol): registers at ``{URL}/cloud/environment/{ID}/direct/register`` with
``{"transport": "direct_jsonrpc_v1"}``, signed with SigV4 (service ``execute-api``), opens the websocket URL the
registry answers (signed too), and serves JSON-RPC there: ``initialize``, ``process/start`` (argv, a ``file://`` cwd),
``process/read`` (long-polled), ``process/terminate``, with ``process/output`` / ``exited`` / ``closed``
notifications as the real one sends them. Commands really run, on this machine.

``run_real_codex`` starts the real binary instead, where one is named by ``CODEX_TEST_BINARY``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson

from responses_bridge.services.agents.executor.sigv4 import signature

REGION, SERVICE = "us-east-1", "execute-api"


def signed_headers(method: str, url: str, body: bytes, key_id: str, secret: str,
                   content_type: str | None = None) -> dict[str, str]:
    """SigV4 headers for a request, as the AWS signer codex uses signs it (host and x-amz-date, and content-type
    when the request has one)."""
    parts = urlsplit(url)
    amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": parts.netloc, "x-amz-date": amz_date, **({"content-type": content_type} if content_type
                                                                else {})}
    names = sorted(headers)
    scope = f"{amz_date[:8]}/{REGION}/{SERVICE}/aws4_request"
    signed = signature(secret, method=method, raw_path=parts.path, raw_query=parts.query, headers=headers,
                       signed_headers=names, body=body, amz_date=amz_date, scope=scope)
    return {"x-amz-date": amz_date, **({"content-type": content_type} if content_type else {}),
            "authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={';'.join(names)}, "
                             f"Signature={signed}"}


@dataclass
class _Process:
    process: asyncio.subprocess.Process
    chunks: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    closed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


Served = TypeVar("Served", bound="FakeExecServer")


class FakeExecServer:
    """One registration and its websocket; ``requests`` keeps the JSON-RPC methods the harness called."""

    def __init__(self, remote: str, environment_id: str, key_id: str, secret: str) -> None:
        self.remote, self.environment_id, self.key_id, self.secret = remote.rstrip("/"), environment_id, key_id, secret
        self.requests: list[str] = []
        self.processes: dict[str, _Process] = {}
        self.seq = 0
        self.tasks: set[asyncio.Future[None]] = set()  # answers and output pumps under way

    async def register(self, http: aiohttp.ClientSession, body: bytes = b'{"transport":"direct_jsonrpc_v1"}',
                       ) -> tuple[int, dict[str, Any]]:
        url = f"{self.remote}/cloud/environment/{self.environment_id}/direct/register"
        headers = signed_headers("POST", url, body, self.key_id, self.secret, "application/json")
        async with http.post(url, data=body, headers=headers) as answer:
            return answer.status, await answer.json()

    async def serve(self, http: aiohttp.ClientSession, url: str, connected: asyncio.Event | None = None) -> None:
        """Connect to the registry's websocket URL and answer the harness until it closes (or this is cancelled:
        the commands still running are killed and reaped either way)."""
        try:
            async with http.ws_connect(url, headers=signed_headers("GET", url, b"", self.key_id, self.secret)) as ws:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    request = orjson.loads(message.data)
                    if "id" not in request:
                        if request.get("method") == "initialized" and connected is not None:
                            connected.set()  # the bridge serves the environment through this connection now
                        continue
                    self.requests.append(request["method"])
                    self._spawn(self._answer(ws, request))
        finally:
            await self.stop()

    async def stop(self) -> None:
        """The commands still running are killed and reaped, the answers under way finished."""
        for running in self.processes.values():
            _kill(running.process)
        # the pumps end at their processes' end of output, the answers within a read's wait
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 30)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, ws: aiohttp.ClientWebSocketResponse, request: dict[str, Any]) -> None:
        try:
            result = await getattr(self, "_" + request["method"].replace("/", "_"))(ws, request["params"])
            reply: dict[str, Any] = {"id": request["id"], "result": result}
        except KeyError as missing:
            reply = {"id": request["id"], "error": {"code": -32600, "message": f"unknown process id {missing}"}}
        if not ws.closed:
            await ws.send_str(orjson.dumps(reply).decode())

    async def _initialize(self, ws: Any, params: dict[str, Any]) -> dict[str, Any]:
        return {"sessionId": "fake", "environmentInfo": {"shell": {"name": "sh", "path": "/bin/sh"},
                                                         "platformOs": "linux"}}

    async def _process_start(self, ws: Any, params: dict[str, Any]) -> dict[str, Any]:
        cwd = unquote(urlsplit(params["cwd"]).path)
        process = await asyncio.create_subprocess_exec(*params["argv"], cwd=cwd, env=params["env"],
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                       start_new_session=True)  # killed as a group, children too
        running = self.processes[params["processId"]] = _Process(process)
        self._spawn(self._pump(ws, params["processId"], running))
        return {"processId": params["processId"], "sandboxType": "none"}

    async def _pump(self, ws: Any, process_id: str, running: _Process) -> None:
        async def stream(reader: asyncio.StreamReader, name: str) -> None:
            while data := await reader.read(4096):
                self.seq += 1
                chunk = {"seq": self.seq, "stream": name, "chunk": base64.b64encode(data).decode()}
                running.chunks.append(chunk)
                running.changed.set()
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(orjson.dumps({"method": "process/output",
                                                    "params": {"processId": process_id, **chunk}}).decode())

        assert running.process.stdout is not None and running.process.stderr is not None
        readers = asyncio.gather(stream(running.process.stdout, "stdout"), stream(running.process.stderr, "stderr"))
        while running.process.returncode is None:  # asyncio's wait() also waits for the output to close
            await asyncio.sleep(0.02)
        running.exit_code = running.process.returncode  # exited: a child it left may still hold its output
        running.changed.set()
        await readers
        await running.process.wait()
        running.closed = True
        running.changed.set()

    async def _process_read(self, ws: Any, params: dict[str, Any]) -> dict[str, Any]:
        running = self.processes[params["processId"]]
        after = params.get("afterSeq") or 0
        with contextlib.suppress(TimeoutError):
            while not running.closed and not any(chunk["seq"] > after for chunk in running.chunks):
                running.changed.clear()
                await asyncio.wait_for(running.changed.wait(), (params.get("waitMs") or 0) / 1000)
        chunks = [chunk for chunk in running.chunks if chunk["seq"] > after]
        next_seq = (chunks[-1]["seq"] if chunks else after) + 1
        return {"chunks": chunks, "nextSeq": next_seq, "exited": running.exit_code is not None,
                "exitCode": running.exit_code,
                "closed": running.closed, "failure": None, "sandboxDenied": False}

    async def _process_terminate(self, ws: Any, params: dict[str, Any]) -> dict[str, Any]:
        running = self.processes[params["processId"]]
        if running.closed:
            return {"running": False}
        _kill(running.process)
        return {"running": True}


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def running_fake_exec_server(remote: str, environment_id: str, key_id: str,
                             secret: str) -> contextlib.AbstractAsyncContextManager[FakeExecServer]:
    """A registered and connected fake exec-server, serving until the block ends."""
    return serving(FakeExecServer(remote, environment_id, key_id, secret))


@contextlib.asynccontextmanager
async def serving(server: Served) -> AsyncIterator[Served]:
    """``server`` registered (its transport's way) and connected, serving until the block ends."""
    async with aiohttp.ClientSession() as http:
        status, registered = await server.register(http)
        assert status == 200, registered
        connected = asyncio.Event()
        task = asyncio.ensure_future(server.serve(http, registered["url"], connected))
        await asyncio.wait_for(connected.wait(), 30)
        try:
            yield server
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def real_codex() -> str | None:
    """The real codex binary to test with (``CODEX_TEST_BINARY``), or None."""
    path = os.environ.get("CODEX_TEST_BINARY")
    return path if path and os.access(path, os.X_OK) else None
