"""Several fake upstreams as the replicas of one backend, each its own process on its own port, and a sidecar
calling them all (``serve --upstream A --upstream B ...``): which replica served which model call is read from
each fake's own record of the bodies it received (``GET /_fake/requests``).

Usage (async)::

    async with running_fleet(tmp_dir, count=3) as fleet:
        fleet.sidecar.http_url, fleet.replicas[0].kill(), await fleet.served("marker") ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support.bridge import PYTHON, Sidecar, UpstreamLog, running_sidecar


@dataclass
class FakeReplica:
    url: str  # its /v1 base URL
    port: int
    process: ManagedProcess
    log: UpstreamLog

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: gone at once, as a crashed pod; its port refuses connections from now on."""
        if self.process.alive():
            os.kill(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):  # it is dead: stop() only reaps it
                self.process.stop(timeout=5)


@dataclass
class Fleet:
    replicas: list[FakeReplica]
    sidecar: Sidecar

    async def clear(self) -> None:
        await asyncio.gather(*(replica.log.clear() for replica in self.replicas if replica.process.alive()))

    async def bodies(self) -> list[list[dict[str, Any]]]:
        """Each live replica's received chat bodies (a dead one's: none), oldest first."""
        async def of(replica: FakeReplica) -> list[dict[str, Any]]:
            if not replica.process.alive():
                return []
            return [entry for entry in await replica.log.entries() if entry["path"] == "/v1/chat/completions"]
        return list(await asyncio.gather(*(of(replica) for replica in self.replicas)))

    async def served(self, marker: str) -> list[int]:
        """The replicas (indexes) that received a chat call whose last user message holds ``marker``."""
        found = []
        for index, entries in enumerate(await self.bodies()):
            if any(marker in last_user_text(entry["body"]) for entry in entries):
                found.append(index)
        return found


def last_user_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


async def _fake() -> FakeReplica:
    port = free_port()
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                             f"fake-replica:{port}")
    process.start()
    await wait_http(f"http://127.0.0.1:{port}/health", process=process)
    return FakeReplica(f"http://127.0.0.1:{port}/v1", port, process, UpstreamLog(f"http://127.0.0.1:{port}"))


@asynccontextmanager
async def running_fleet(tmp_dir: str, count: int = 3, *extra: str,
                        env: dict[str, str] | None = None) -> AsyncIterator[Fleet]:
    """``count`` fake replicas and a sidecar (both doors) with ``--upstream`` given once per replica."""
    async with AsyncExitStack() as stack:
        replicas = list(await asyncio.gather(*(_fake() for _ in range(count))))
        for replica in replicas:
            stack.callback(replica.process.stop)
        flags = [flag for replica in replicas[1:] for flag in ("--upstream", replica.url)]
        sidecar = await stack.enter_async_context(
            running_sidecar(tmp_dir, replicas[0].url, *flags, *extra, env=env, own_sqlite=True))
        yield Fleet(replicas, sidecar)
