"""What the sandbox backs is built on first use (runtime_sandbox.py), over a real SQLite store: a start with no
container stored builds nothing and says what the host's sandbox is (its check ran in a process of its own); a
start over a container a stopped process left to expire opens everything and purges it; the Containers API's
first request builds its service without the sandbox; the code interpreter's first use opens the rest and takes
the stand-in's place in the tool loop."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from responses_bridge.config.settings import Settings
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.server_tools import ServerTools, ServerToolServices
from responses_bridge.run.tools.code_interpreter import CodeToolOptions
from responses_bridge.runtime_sandbox import LazyCodeInterpreter, LazyHostedShell, SandboxServices
from responses_bridge.sealing import Sealer
from responses_bridge.services.files.files import FileService, files_directory
from responses_bridge.store.open import StoreSet, open_stores
from responses_bridge.store.records import StoredContainer


@dataclass
class Opened:
    settings: Settings
    stores: StoreSet
    files: FileService
    tools: ServerTools

    async def start(self) -> SandboxServices:
        return await SandboxServices.start(self.settings, self.stores.containers, self.stores.skills, self.files,
                                           self.tools, Sealer(os.urandom(32)))


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Opened]:
    db = str(tmp_path / "bridge.db")
    settings = Settings()
    stores = await open_stores(db, None)
    files = FileService(stores.files, files_directory(db), settings.max_file_bytes, contents=stores.file_bytes)
    await files.start()
    tools = ServerTools(ServerToolServices.configured(settings.mcp_limits(), settings.web_search_settings()))
    try:
        yield Opened(settings, stores, files, tools)
    finally:
        await files.aclose()
        await stores.close()


async def test_a_start_with_no_container_stored_builds_nothing_and_says_what_the_sandbox_is(opened: Opened) -> None:
    with capture_logs() as logs:
        services = await opened.start()
    try:
        said = [line for line in logs if line["event"] in ("sandbox_ready", "sandbox_unavailable")]
        assert len(said) == 1, logs  # the start check's verdict, logged by this process
        if said[0]["event"] == "sandbox_unavailable":
            assert said[0]["log_level"] == "warning" and said[0]["reason"]
        assert not services.opened
        # the tools are still served (a request with one is refused or run as before), by stand-ins until used
        assert isinstance(opened.tools.services.code, LazyCodeInterpreter)
        assert isinstance(opened.tools.services.shell, LazyHostedShell)
        assert {"code_interpreter", "shell"} <= opened.tools.services.served
    finally:
        await services.aclose()


async def test_a_container_left_to_expire_opens_everything_at_start_and_is_purged(opened: Opened) -> None:
    past = int(time.time()) - 3600
    await opened.stores.containers.create_container(
        StoredContainer("cntr_left", "left", past, past, 1), tenant="t", max_containers=None)
    with capture_logs() as logs:
        services = await opened.start()
    try:
        assert services.opened
        assert await opened.stores.containers.expired_containers(1 << 62, 1) == []  # purged
        assert any(line["event"] == "containers_expired_purged" for line in logs)
        assert not isinstance(opened.tools.services.code, LazyCodeInterpreter)  # the real one, in place
    finally:
        await services.aclose()


async def test_the_containers_api_is_built_without_the_sandbox_and_the_first_code_run_opens_it(opened: Opened) -> None:
    services = await opened.start()
    try:
        containers = await services.containers_api()
        created = await containers.create({"name": "mine"}, tenant="t")
        assert created["name"] == "mine" and not services.opened
        assert services.skills is services.skills  # built once, by its first reader
        options = CodeToolOptions.from_tool({"type": "code_interpreter", "container": {"type": "auto"}}, 0)
        code = opened.tools.services.code
        assert isinstance(code, LazyCodeInterpreter)
        try:
            await code.check(options, tenant="t")
        except APIError as refused:  # a host where bubblewrap cannot run: refused, naming why, as before
            assert refused.code == "sandbox_unavailable"
        assert services.opened
        real = opened.tools.services.code
        assert not isinstance(real, LazyCodeInterpreter) and real is not None
        assert code.unavailable == real.unavailable
        assert services.containers is containers  # the Containers API's service is the tools' own
    finally:
        await services.aclose()
