"""The harness side of ``codex exec-server``'s JSON-RPC, over the websocket its direct transport opened to the bridge
(``direct_jsonrpc_v1``: one JSON-RPC message per text frame, the exec-server answering the bridge's requests).

The bridge sends ``initialize`` and ``initialized``, then ``process/start`` and ``process/read`` for each command the
model asks for. The exec-server's notifications (``process/output``, ``process/exited``, ``process/closed``) are
dropped: ``process/read`` returns the same output, so nothing is kept per notification and memory per connection is
the frames in flight (``max_msg_size``) and one command's output up to its cap. A request the exec-server sends the
bridge is answered "method not found". A command's own failure is its outcome; a connection gone is
:class:`ExecutorGone`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import WSMsgType, web

log = structlog.get_logger("responses_bridge.executor")

MAX_FRAME_BYTES = 4 * 1024 * 1024  # one JSON-RPC message; a process/read asks for at most READ_BYTES of output
READ_BYTES = 256 * 1024
READ_WAIT_MS = 1000
EXITED_QUIET_READS = 2  # empty reads after the process exited before its output is taken as ended
CALL_TIMEOUT = 30.0  # seconds for one request's answer (a read waits READ_WAIT_MS at most)
DEFAULT_OUTPUT_CAP = 1024 * 1024  # bytes kept of one command's stdout and of its stderr when the call sets no limit
DEFAULT_COMMAND_TIMEOUT_MS = 10 * 60 * 1000
COMMAND_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class ExecutorGone(Exception):
    """The exec-server's connection closed (or never finished ``initialize``)."""


class ExecutorError(Exception):
    """The exec-server answered a request with a JSON-RPC error (its message, safe to show the model)."""


@dataclass(slots=True)
class CommandOutcome:
    """One command as it ended: what it printed (capped), its exit code (None: killed at its timeout)."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    dropped: int = 0


@dataclass(slots=True)
class _Capped:
    limit: int
    parts: list[bytes] = field(default_factory=list)
    kept: int = 0
    dropped: int = 0

    def add(self, chunk: bytes) -> None:
        room = max(0, self.limit - self.kept)
        if room:
            self.parts.append(chunk[:room])
            self.kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", "replace")


class Channel(Protocol):
    """How JSON-RPC messages cross to one exec-server: text frames (its direct transport, :class:`DirectChannel`)
    or Noise records in relay frames (noise.py)."""

    async def send(self, message: bytes) -> None: ...

    def messages(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class DirectChannel:
    """``direct_jsonrpc_v1``: one JSON-RPC message per text frame."""

    def __init__(self, socket: web.WebSocketResponse) -> None:
        self.socket = socket

    async def send(self, message: bytes) -> None:
        if self.socket.closed:
            raise ExecutorGone("the exec-server disconnected")
        try:
            await self.socket.send_str(message.decode())
        except (ConnectionError, RuntimeError) as error:
            raise ExecutorGone("the exec-server disconnected") from error

    async def messages(self) -> AsyncIterator[bytes]:
        async for message in self.socket:
            if message.type == WSMsgType.TEXT:
                yield message.data.encode()

    async def close(self) -> None:
        await self.socket.close()


class ExecutorConnection:
    """One exec-server, as the bridge's JSON-RPC client over its :class:`Channel`. :meth:`serve` reads until the
    channel closes."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.Event()
        self.shell = "/bin/bash"
        self.info: dict[str, Any] = {}

    async def serve(self) -> None:
        """Read the exec-server's messages until the websocket closes; every request still waiting then fails."""
        try:
            async for message in self.channel.messages():
                try:
                    decoded = orjson.loads(message)
                except orjson.JSONDecodeError:
                    log.warning("executor_message_malformed")
                    continue
                if isinstance(decoded, dict):
                    await self._take(decoded)
        finally:
            self.closed.set()
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ExecutorGone("the exec-server disconnected"))
            self._waiting.clear()

    async def _take(self, message: dict[str, Any]) -> None:
        ident = message.get("id")
        if "method" in message:
            if ident is not None:  # the exec-server asks the harness something: the bridge serves no such method
                await self._send({"id": ident, "error": {"code": -32601, "message": "method not found"}})
            return  # a notification: its content comes again from process/read
        waiter = self._waiting.pop(ident, None) if isinstance(ident, int) else None
        if waiter is None or waiter.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            waiter.set_exception(ExecutorError(str(error.get("message") or "error")[:2000]))
        else:
            waiter.set_result(message.get("result"))

    async def _send(self, message: dict[str, Any]) -> None:
        if self.closed.is_set():
            raise ExecutorGone("the exec-server disconnected")
        await self.channel.send(orjson.dumps(message))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.channel.close()

    async def call(self, method: str, params: dict[str, Any], timeout: float = CALL_TIMEOUT) -> Any:
        """``method``'s result; :class:`ExecutorError` for its JSON-RPC error, :class:`ExecutorGone` when the
        connection closes or no answer comes within ``timeout``."""
        if self.closed.is_set():
            raise ExecutorGone("the exec-server disconnected")
        ident = next(self._ids)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        try:
            await self._send({"id": ident, "method": method, "params": params})
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise ExecutorGone(f"the exec-server did not answer {method}") from None
        finally:
            self._waiting.pop(ident, None)

    async def initialize(self) -> None:
        """The handshake's first half: ``initialize`` (what it says of its machine: its shell)."""
        result = await self.call("initialize", {"clientName": "responses-bridge"})
        info = (result or {}).get("environmentInfo") if isinstance(result, dict) else None
        if isinstance(info, dict):
            shell = (info.get("shell") or {}).get("path")
            if isinstance(shell, str) and shell.startswith("/"):
                self.shell = shell

    async def initialized(self) -> None:
        """The handshake's end (sent once the connection serves its environment, so an exec-server told
        ``initialized`` is one the session's next command goes to)."""
        await self._send({"method": "initialized", "params": {}})

    async def run(self, command: str, cwd: str, *, timeout_ms: int | None, output_cap: int | None) -> CommandOutcome:
        """One command, run by the exec-server's shell in ``cwd`` (an absolute path on its machine), read to its end
        (``process/read`` long-polls), terminated at ``timeout_ms``."""
        process_id = f"rb-{uuid.uuid4().hex}"
        cap = output_cap if output_cap is not None else DEFAULT_OUTPUT_CAP
        stdout, stderr = _Capped(cap), _Capped(cap)
        await self.call("process/start", {
            "processId": process_id, "argv": [self.shell, "-c", command], "cwd": PurePosixPath(cwd).as_uri(),
            "env": dict(COMMAND_ENV), "tty": False, "pipeStdin": False, "arg0": None})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_ms or DEFAULT_COMMAND_TIMEOUT_MS) / 1000
        after: int | None = None
        quiet_after_exit = 0
        try:
            while True:
                if loop.time() >= deadline:
                    with contextlib.suppress(ExecutorError):
                        await self.call("process/terminate", {"processId": process_id})
                    return CommandOutcome(stdout.text(), stderr.text(), None, timed_out=True,
                                          dropped=stdout.dropped + stderr.dropped)
                wait = max(1, min(READ_WAIT_MS, int((deadline - loop.time()) * 1000)))
                read = await self.call("process/read", {"processId": process_id, "afterSeq": after,
                                                        "maxBytes": READ_BYTES, "waitMs": wait})
                if not isinstance(read, dict):
                    raise ExecutorError("process/read answered no object")
                for chunk in read.get("chunks") or ():
                    data = base64.b64decode(str(chunk.get("chunk") or ""))
                    (stderr if chunk.get("stream") == "stderr" else stdout).add(data)
                next_seq = read.get("nextSeq")
                if isinstance(next_seq, int) and next_seq > 0:
                    after = next_seq - 1
                if read.get("failure"):
                    raise ExecutorError(str(read["failure"])[:2000])
                # closed: all its output was read; exited with nothing more for a few reads: a child it left holds
                # its output open (a background job), which the command's own outcome does not wait for
                quiet_after_exit = quiet_after_exit + 1 if read.get("exited") and not read.get("chunks") else 0
                if read.get("closed") or quiet_after_exit > EXITED_QUIET_READS:
                    code = read.get("exitCode")
                    return CommandOutcome(stdout.text(), stderr.text(), code if isinstance(code, int) else None,
                                          dropped=stdout.dropped + stderr.dropped)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # the turn was cancelled: the command does not go on without it
                await asyncio.shield(self.call("process/terminate", {"processId": process_id}, timeout=5))
            raise
