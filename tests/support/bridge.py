"""Starting the sidecar as users do (the CLI, in its own process) and reading what the fake upstream received."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support import sqlite_template, zygote
from tests.support.postgres import sidecar_env

PYTHON = sys.executable
OWN_DATABASE_SETTINGS = ("RESPONSES_BRIDGE_DATABASE_URL", "RESPONSES_BRIDGE_DB", "RESPONSES_BRIDGE_RUN_AS",
                         "RESPONSES_BRIDGE_CONFIG")
"""Settings with which a sidecar's database may be other than its ``--db`` file, or made by another user: such a
sidecar starts on no copy of a migrated database (sqlite_template.py)."""


@dataclass
class Sidecar:
    upstream_url: str  # the fake upstream's base URL (…/v1)
    http_url: str  # the sidecar's HTTP door
    extproc_port: int
    process: ManagedProcess


def keys_command(db: str, *args: str, own_sqlite: bool = False) -> subprocess.CompletedProcess[str]:
    """``responses-bridge keys …`` on the database of the sidecar started with ``--db db``: the same PostgreSQL
    database when the run puts sidecars there (:func:`sidecar_env`), else that SQLite file. ``own_sqlite``: that
    SQLite file whatever the switch says (for a sidecar started with ``own_sqlite``, which it then does not read)."""
    env = {**os.environ, "RESPONSES_BRIDGE_DB": "", **({} if own_sqlite else sidecar_env(db))}
    return zygote.run([PYTHON, "-m", "responses_bridge", "keys", *args, "--db", db], timeout=60, env=env)


_CREATE_KEYS = """
import sys
from responses_bridge.cli import main
for tenant in sys.argv[2:]:
    if main(["keys", "create", "--tenant", tenant, "--db", sys.argv[1]]):
        sys.exit(f"keys create --tenant {tenant} failed")
"""


def create_keys(db: str, tenants: Sequence[str]) -> dict[str, str]:
    """A key for each of ``tenants``, made by ``responses-bridge keys create`` as :func:`keys_command` makes one,
    but every one in a single process: a suite of many tenants paid a Python start and the bridge's import per key
    (68 in one module: 16 CPU-s)."""
    env = {**os.environ, "RESPONSES_BRIDGE_DB": "", **sidecar_env(db)}
    made = subprocess.run([PYTHON, "-c", _CREATE_KEYS, db, *tenants], capture_output=True, text=True, timeout=120,
                          check=False, env=env)
    assert made.returncode == 0, made.stderr
    keys = made.stdout.split()
    assert len(keys) == len(tenants), made.stdout
    return dict(zip(tenants, keys, strict=True))


def start_sidecar(tmp_dir: str, upstream_url: str, *extra: str, env: dict[str, str] | None = None,
                  extproc: bool = True, log_file: Path | None = None,
                  wrap: Sequence[str] = (), own_sqlite: bool = False,
                  new_database: bool = False) -> tuple[ManagedProcess, int, int]:
    """``wrap``: a command that runs the sidecar's (``unshare -m …``: a host set up differently), exec'ing it.
    ``own_sqlite``: on its own SQLite file whatever the run's store switch says, which it then does not read — for
    the modules marked ``store_free`` (tests/conftest.py), whose subject is not the store. On a new SQLite file of
    its own (no ``--db`` in ``extra``) it starts on a copy of a migrated one (sqlite_template.py), unless
    ``new_database``: then it makes and migrates the file itself."""
    http_port, extproc_port = free_port(), free_port()
    own_file = os.path.join(tmp_dir, f"bridge-{http_port}.db")
    argv = [PYTHON, "-m", "responses_bridge", "serve", "--upstream", upstream_url, "--http-port", str(http_port),
            "--extproc-port", str(extproc_port), "--db", own_file, *extra]
    if not extproc:
        argv.append("--no-extproc")
    db_path = argv[len(argv) - 1 - argv[::-1].index("--db") + 1]  # the last --db given wins, as in the CLI
    switched = {} if own_sqlite else sidecar_env(db_path)  # PostgreSQL when the run asks (tests/support/postgres.py)
    env = {**switched, **(env or {})}
    given = {**os.environ, **env}
    if (db_path == own_file and not switched and not new_database and not wrap
            and not any(arg.split("=")[0] == "--config" for arg in extra)
            and not any(given.get(key) for key in OWN_DATABASE_SETTINGS)):
        sqlite_template.place(own_file)
    process = ManagedProcess([*wrap, *argv], f"sidecar:{http_port}", quiet=False, env=env or None, log_file=log_file)
    process.start()
    return process, http_port, extproc_port


@asynccontextmanager
async def running_fake_upstream(*extra: str) -> AsyncIterator[str]:
    """The fake model as a process of its own (``responses-bridge fake-upstream``, EXTRA its options) on a free
    loopback port, ready: its ``/v1`` URL; stopped on the way out. For the benchmarks, whose measured sidecars must
    not share a loop with the model they call."""
    port = free_port()
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port), *extra],
                             f"fake-upstream:{port}")
    process.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", process=process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.stop()


@asynccontextmanager
async def running_sidecar(tmp_dir: str, upstream_url: str, *extra: str, env: dict[str, str] | None = None,
                          extproc: bool = True, log_file: Path | None = None,
                          ready_headers: dict[str, str] | None = None,
                          wrap: Sequence[str] = (), own_sqlite: bool = False,
                          new_database: bool = False) -> AsyncIterator[Sidecar]:
    """A started sidecar, ready (its HTTP door answers), stopped on exit; ``log_file``: where its log goes;
    ``ready_headers``: sent with the readiness polls (``auth: header`` answers nobody who names no tenant)."""
    process, http_port, extproc_port = start_sidecar(tmp_dir, upstream_url, *extra, env=env, extproc=extproc,
                                                     log_file=log_file, wrap=wrap, own_sqlite=own_sqlite,
                                                     new_database=new_database)
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health", process=process, headers=ready_headers)
        yield Sidecar(upstream_url, f"http://127.0.0.1:{http_port}", extproc_port, process)
    finally:
        # stopped off the event loop: what the sidecar sends on its way out (its last span export, an MCP session's
        # close) may go to a server this loop serves, which a blocking wait would hold until the sidecar gave up
        await asyncio.to_thread(process.stop)


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


async def budget_held_bytes(http_url: str) -> int:
    """What a sidecar's memory budget holds now (its ``/metrics`` gauge), read at its HTTP door ``http_url``."""
    async with aiohttp.ClientSession() as session, session.get(f"{http_url}/metrics") as response:
        text = await response.text()
    found = re.search(r"^responses_bridge_memory_budget_held_bytes(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert found, "no memory budget gauge in /metrics"
    return int(float(found.group(1)))


def log_lines(log_path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a sidecar's log file (its stderr, written to ``log_path``)."""
    return [orjson.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


def finished_requests(log_path: Path, door: str, *, identified: bool = False) -> list[dict[str, Any]]:
    """The door's ``request_finished`` lines, health checks left out; ``identified``: only those with a tenant."""
    return [line for line in log_lines(log_path) if line.get("event") == "request_finished"
            and line.get("door") == door and not str(line.get("route", "")).startswith("GET /health")
            and (not identified or "tenant" in line)]


async def finished_after(log_path: Path, door: str, before: int, *, identified: bool = False) -> list[dict[str, Any]]:
    """The lines after the first ``before``, once there are any (the ext_proc door writes its line when Envoy
    closes the stream, just after the client has its answer); empty if none come within 10 s."""
    for _ in range(400):
        lines = finished_requests(log_path, door, identified=identified)
        if len(lines) > before:
            return lines[before:]
        await asyncio.sleep(0.025)
    return []
