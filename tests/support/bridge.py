"""Starting the sidecar as users do (the CLI, in its own process) and reading what the fake upstream received."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import aiohttp

from responses_bridge.procs import ManagedProcess, free_port

PYTHON = sys.executable


@dataclass
class Sidecar:
    upstream_url: str  # the fake upstream's base URL (…/v1)
    http_url: str  # the sidecar's HTTP door
    extproc_port: int
    process: ManagedProcess


def start_sidecar(tmp_dir: str, upstream_url: str, *extra: str, env: dict[str, str] | None = None,
                  extproc: bool = True) -> tuple[ManagedProcess, int, int]:
    http_port, extproc_port = free_port(), free_port()
    argv = [PYTHON, "-m", "responses_bridge", "serve", "--upstream", upstream_url, "--http-port", str(http_port),
            "--extproc-port", str(extproc_port), "--db", os.path.join(tmp_dir, f"bridge-{http_port}.db"), *extra]
    if not extproc:
        argv.append("--no-extproc")
    process = ManagedProcess(argv, f"sidecar:{http_port}", quiet=False)
    if env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    else:
        process.start()
    return process, http_port, extproc_port


class UpstreamLog:
    """What the fake upstream received: the bridge's Chat Completions requests, as sent."""

    def __init__(self, base: str) -> None:
        self.base = base

    async def clear(self) -> None:
        async with aiohttp.ClientSession() as session:
            await session.delete(f"{self.base}/_fake/requests")

    async def entries(self) -> list[dict]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.base}/_fake/requests") as response:
                return (await response.json())["data"]

    async def last_body(self) -> dict:
        entries = await self.entries()
        assert entries, "the upstream received no request"
        return entries[-1]["body"]
