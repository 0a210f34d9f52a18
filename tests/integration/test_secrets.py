"""No secret the bridge is given ever comes out of it: not in its logs, its metrics, its database, or the answers
and errors its clients get.

The secrets: the upstream key (``RESPONSES_BRIDGE_API_KEY``; a per-upstream ``api_key`` in a config file), the
client's own ``Authorization``, an ``mcp`` tool's ``headers`` and ``authorization``, and the web search provider's
key. Each is used for real (the fake upstream, the search server and a hostile MCP server record what they got),
through both doors of a sidecar behind a real Envoy, in successes and failures: a failing MCP server that echoes
the credentials it was sent, a failing search provider, an upstream 401. Then everything the sidecars and Envoy
wrote is searched: their logs (structured, debug level), ``/metrics`` and Envoy's stats, every file of the
databases (raw bytes, including the WAL) and every cell of every table, and every byte the clients received.

The search is shown to work: canaries sent the same way (input text stored in the database, a request id written
into the logs, a model name that labels a metric, an id named by an error message) must be found where they went.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from aiohttp import web

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.support import zygote
from tests.support.bridge import PYTHON
from tests.support.envoy import EnvoyProcess, have_envoy, start_envoy
from tests.support.mcp_server import running_mcp_server
from tests.support.sdk import async_sdk
from tests.support.search_server import SearchServer

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]


def _secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Secrets:
    upstream_env: str = field(default_factory=lambda: _secret("sk-upstream-env"))
    upstream_file: str = field(default_factory=lambda: _secret("sk-upstream-file"))
    client: str = field(default_factory=lambda: _secret("sk-client"))
    mcp_header: str = field(default_factory=lambda: _secret("mcp-header"))
    mcp_authorization: str = field(default_factory=lambda: _secret("mcp-token"))
    search: str = field(default_factory=lambda: _secret("brave"))

    def by_name(self) -> dict[str, str]:
        return dict(vars(self))


@dataclass(frozen=True)
class Canaries:
    """Harmless values sent where the secrets go, which the search must find (else it proves nothing)."""

    stored: str = field(default_factory=lambda: _secret("canary-input"))  # input text: in the database
    logged: str = field(default_factory=lambda: _secret("canary-request-id"))  # X-Request-Id: in every log line
    metric: str = field(default_factory=lambda: _secret("canary-model"))  # a model: a tokens metric label
    error: str = field(default_factory=lambda: _secret("canary-id"))  # an unknown id: named by the 404


class LoggedProcess(ManagedProcess):
    """A child process whose output goes to a file the test reads afterwards."""

    def __init__(self, argv: list[str], name: str, log: Path, env: dict[str, str]) -> None:
        super().__init__(argv, name, env=env)
        self.log = log

    def start(self) -> None:
        import os

        with open(self.log, "ab") as out:
            self.process = zygote.popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, **(self.env or {})})


class HostileMCPServer:
    """An MCP server that refuses the credentials it got and repeats them in its error, as a JSON-RPC error
    (which MCP clients quote) and as a 401's text, and records them (so the test knows they were sent)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _refuse(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        echo = f"invalid credentials: {request.headers.get('Authorization')} {request.headers.get('X-Api-Key')}"
        if request.method == "POST":
            try:
                call = await request.json()
            except ValueError:
                call = {}
            return web.json_response({"jsonrpc": "2.0", "id": call.get("id"),
                                      "error": {"code": -32001, "message": echo}})
        return web.Response(status=401, text=echo)

    async def __aenter__(self) -> HostileMCPServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._refuse)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@dataclass
class Sidecar:
    http_url: str
    extproc_port: int
    directory: Path
    log: Path
    process: LoggedProcess


async def _start(directory: Path, name: str, argv: list[str], env: dict[str, str]) -> Sidecar:
    directory.mkdir(parents=True, exist_ok=True)
    http_port, extproc_port = free_port(), free_port()
    log = directory / f"{name}.log"
    process = LoggedProcess([PYTHON, "-m", "responses_bridge", "serve", "--http-port", str(http_port),
                             "--extproc-port", str(extproc_port), "--db", str(directory / "bridge.db"), *argv],
                            name, log, {"RESPONSES_BRIDGE_LOG_LEVEL": "debug", **env})
    process.start()
    await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
    return Sidecar(f"http://127.0.0.1:{http_port}", extproc_port, directory, log, process)


@dataclass
class World:
    secrets: Secrets
    canaries: Canaries
    upstream: str  # the fake upstream's base URL (…/v1)
    env_keyed: Sidecar  # RESPONSES_BRIDGE_API_KEY, behind Envoy
    file_keyed: Sidecar  # a config file's upstreams[].api_key
    envoy: EnvoyProcess
    envoy_url: str
    mcp_url: str
    hostile: HostileMCPServer
    search: SearchServer
    client_saw: list[str] = field(default_factory=list)  # every body and error text the clients received


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    keys, canaries = Secrets(), Canaries()
    root = tmp_path_factory.mktemp("secrets")
    upstream_port, listen_port = free_port(), free_port()
    fake = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(upstream_port)],
                          "fake-upstream")
    fake.start()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    started: list[Sidecar] = []
    try:
        await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=fake)
        async with running_mcp_server() as mcp, HostileMCPServer() as hostile, \
                SearchServer(brave_key=keys.search) as search:
            tools_env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_WEB_SEARCH": "brave",
                         "BRAVE_API_KEY": keys.search, "RESPONSES_BRIDGE_WEB_SEARCH_URL": search.url,
                         "RESPONSES_BRIDGE_MCP_CONNECT_TIMEOUT": "3", "RESPONSES_BRIDGE_MCP_TOTAL_TIMEOUT": "6"}
            env_keyed = await _start(root / "env", "env-keyed", [
                "--upstream", upstream, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1"],
                {**tools_env, "RESPONSES_BRIDGE_API_KEY": keys.upstream_env})
            started.append(env_keyed)
            config = root / "bridge.yaml"
            config.write_text(yaml.safe_dump({"upstreams": [
                {"name": "main", "url": upstream, "api_key": keys.upstream_file}], "default_upstream": "main"}))
            file_keyed = await _start(root / "file", "file-keyed", ["--upstream", upstream, "--config", str(config),
                                                                   "--no-extproc"], tools_env)
            started.append(file_keyed)
            envoy = await start_envoy(render_bootstrap(
                listen_port=listen_port, extproc_port=env_keyed.extproc_port,
                http_port=int(env_keyed.http_url.rsplit(":", 1)[1]), upstream=upstream, admin_port=0),
                log_level="info")
            try:
                yield World(keys, canaries, upstream, env_keyed, file_keyed, envoy, f"http://127.0.0.1:{listen_port}",
                            mcp.http_url, hostile, search)
            finally:
                envoy.stop()
    finally:
        for sidecar in started:
            sidecar.process.stop()
        fake.stop()


# --- using every secret ------------------------------------------------------------------------------------------


def _mcp(world: World, url: str) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "tools", "server_url": url, "require_approval": "never",
            "headers": {"X-Api-Key": world.secrets.mcp_header}, "authorization": world.secrets.mcp_authorization}


async def _post(world: World, session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                **headers: str) -> tuple[int, str]:
    """A raw request, as a client sends it (with its own key); what came back is kept for the search."""
    headers = {"Authorization": f"Bearer {world.secrets.client}", **headers}
    async with session.post(f"{url}/v1/responses", json=body, headers=headers) as answer:
        text = await answer.text()
    world.client_saw.append(text)
    return answer.status, text


async def _exercise(world: World) -> None:
    keys, canaries = world.secrets, world.canaries
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for url in (world.envoy_url, world.env_keyed.http_url, world.file_keyed.http_url):
            for stream in (False, True):
                status, text = await _post(world, session, url, {
                    "model": "fake-model", "input": f"remember {canaries.stored}", "stream": stream,
                    "metadata": {"note": canaries.stored}}, **{"X-Request-Id": canaries.logged})
                assert status == 200 and canaries.stored in text
                # MCP: a working server (Envoy hands these to the HTTP door), and one that fails echoing the
                # credentials it was sent
                status, text = await _post(world, session, url, {
                    "model": "fake-model", "input": "call tools__add", "stream": stream,
                    "tools": [_mcp(world, world.mcp_url)]})
                assert status == 200 and "mcp_call" in text, text
                status, text = await _post(world, session, url, {
                    "model": "fake-model", "input": "call tools__add", "stream": stream,
                    "tools": [_mcp(world, world.hostile.url)]})
                assert status in (200, 400, 424) and "mcp" in text, text
                # web search: a working provider, then a failing one
                for mode in ("ok", "500"):
                    world.search.mode = mode
                    status, text = await _post(world, session, url, {
                        "model": "fake-model", "input": "call web_search widgets", "stream": stream,
                        "tools": [{"type": "web_search"}]})
                    assert status == 200 and "web_search_call" in text, text
                world.search.mode = "ok"
                # the upstream refuses its key; a server error; a model name that labels a metric
                for failure in ("401", "500"):
                    status, text = await _post(world, session, url, {
                        "model": "fake-model", "input": f"fail [error={failure}]", "stream": stream})
                    assert text
                status, _ = await _post(world, session, url, {"model": canaries.metric, "input": "hi"})
                assert status == 200
            # an error that names what the client gave (the canary of error texts)
            status, text = await _post(world, session, url, {
                "model": "fake-model", "input": "x", "previous_response_id": f"resp_{canaries.error}"})
            assert status in (400, 404) and canaries.error in text
        async with async_sdk(base_url=f"{world.envoy_url}/v1", api_key=keys.client, max_retries=0) as sdk:
            try:
                await sdk.responses.create(model="fake-model", input="fail [error=401]")
            except openai.APIStatusError as error:
                world.client_saw.append(json.dumps(error.body) + str(error))


# --- searching everything they wrote -----------------------------------------------------------------------------


def _database_text(directory: Path) -> str:
    """Every cell of every table of the database, as text (blobs decoded), and the raw bytes of every file
    beside it (the WAL, uploaded files), so nothing escapes by being binary or not yet checkpointed."""
    parts: list[str] = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(".log"):
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    with sqlite3.connect(directory / "bridge.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # names from sqlite_master
                for cell in row:
                    parts.append(cell.decode("utf-8", "replace") if isinstance(cell, bytes) else str(cell))
    return "\n".join(parts)


async def _text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return await answer.text()


async def _haystacks(world: World) -> dict[str, str]:
    sidecars = {"env-keyed": world.env_keyed, "file-keyed": world.file_keyed}
    found = {f"{name} log": sidecar.log.read_text(errors="replace") for name, sidecar in sidecars.items()}
    found["envoy log"] = world.envoy.log_tail(100_000)
    found.update({f"{name} /metrics": await _text(f"{sidecar.http_url}/metrics") for name, sidecar in sidecars.items()})
    found["envoy stats"] = await _text(f"{world.envoy.admin_url}/stats")
    found.update({f"{name} database": _database_text(sidecar.directory) for name, sidecar in sidecars.items()})
    found["answers to clients"] = "\n".join(world.client_saw)
    return found


async def test_no_secret_appears_in_logs_metrics_database_or_answers(world: World) -> None:
    await _exercise(world)
    keys, canaries = world.secrets, world.canaries
    # each secret was used: the upstream, the search provider and the failing MCP server got them
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{world.upstream.removesuffix('/v1')}/_fake/requests") as answer:
            sent = {entry["headers"].get("authorization") for entry in (await answer.json())["data"]}
    assert {f"Bearer {keys.upstream_env}", f"Bearer {keys.upstream_file}"} <= sent
    assert f"Bearer {keys.client}" not in sent  # a configured key replaces the client's own
    assert any(request.headers.get("X-Subscription-Token") == keys.search for request in world.search.requests)
    assert any(seen.get("X-Api-Key") == keys.mcp_header and seen.get("Authorization") ==
               f"Bearer {keys.mcp_authorization}" for seen in world.hostile.seen)

    haystacks = await _haystacks(world)
    # the search sees what is there: each canary where it was sent
    assert canaries.stored in haystacks["env-keyed database"] and canaries.stored in haystacks["file-keyed database"]
    assert canaries.logged in haystacks["env-keyed log"] and canaries.logged in haystacks["file-keyed log"]
    assert canaries.metric in haystacks["env-keyed /metrics"]
    assert canaries.error in haystacks["answers to clients"]
    assert '"level": "debug"' in haystacks["env-keyed log"]  # the logs were written at debug level
    leaks = [(name, where) for name, value in keys.by_name().items() for where, text in haystacks.items()
             if value.rsplit("-", 1)[1] in text]  # the random part alone: a leak with another prefix still shows
    assert not leaks, f"secrets found: {leaks}"
