"""An ``openai_hosted`` environment's ``system`` packages (Debian packages), fetched at its start from the
operator's Debian repository and unpacked into the environment's package tree, through both doors with the SDK's
strict types. The repository is a real local server the test runs (no internet): a flat repository (``Packages``
beside the ``.deb`` files) holding a tiny package the test builds with ``dpkg-deb``, named by the deployment
(``RESPONSES_BRIDGE_PACKAGE_INDEXES=debian=[trusted=yes] URL ./``) and reachable through the egress proxy alone.
Every later command finds the package's programs on its ``PATH``; a package the repository does not hold fails the
environment naming it; a name that is no Debian package is a 400 naming it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openai.types.beta import AgentSession

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import BETA, strict
from tests.integration.test_agents_packages import commands, start
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused"),
              pytest.mark.skipif(not (shutil.which("apt-get") and shutil.which("dpkg-deb")),
                                 reason="apt-get and dpkg-deb are needed in the sandbox (the host's /usr)")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_container_store.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

DEB = "tinysys_1.0_all.deb"


def tiny_deb(where: Path) -> bytes:
    """A Debian package holding ``/usr/bin/tinysys`` (prints ``sys-42``), built by ``dpkg-deb``."""
    root = where / "tinysys"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: tinysys\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: Tests <tests@example.com>\nDescription: a tiny tool\n")
    program = root / "usr" / "bin" / "tinysys"
    program.write_text("#!/bin/sh\necho sys-42\n")
    program.chmod(0o755)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(where / DEB)], check=True,
                   capture_output=True)
    return (where / DEB).read_bytes()


@dataclass
class Repository:
    port: int
    seen: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def repository(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Repository]:
    deb = tiny_deb(tmp_path_factory.mktemp("deb"))
    index = (f"Package: tinysys\nVersion: 1.0\nArchitecture: all\nMaintainer: Tests <tests@example.com>\n"
             f"Filename: ./{DEB}\nSize: {len(deb)}\nSHA256: {hashlib.sha256(deb).hexdigest()}\n"
             "Description: a tiny tool\n\n")
    found = Repository(0)

    async def serve(request: web.Request) -> web.Response:
        found.seen.append(request.path)
        name = request.match_info["tail"].rsplit("/", 1)[-1]  # apt asks for ./Packages as /debian/./Packages
        if name == "Packages":
            return web.Response(text=index)
        if name == DEB:
            return web.Response(body=deb, content_type="application/vnd.debian.binary-package")
        raise web.HTTPNotFound()  # no Release, no compressed index: a flat repository the operator trusts

    app = web.Application()
    app.router.add_get("/debian/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield found
    await runner.cleanup()


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, repository: Repository,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    source = f"debian=[trusted=yes] http://127.0.0.1:{repository.port}/debian/ ./"
    async with running_gateway(str(tmp_path_factory.mktemp("system-packages")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "60",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{repository.port}",
                                    "RESPONSES_BRIDGE_PACKAGE_INDEXES": source}) as gateway:
        yield gateway


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


async def test_a_system_package_serves_every_later_command(base_url: str, repository: Repository) -> None:
    async with aiohttp.ClientSession(base_url, timeout=aiohttp.ClientTimeout(total=180)) as http, \
            async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        seen = len(repository.seen)
        events = await start(http, {"packages": {"system": ["tinysys"]}},
                             "tinysys && command -v tinysys && ls -A /mnt/data | wc -l")
        kinds = [event["type"] for _, event in events]
        assert kinds[:3] == ["agent.session.created", "agent.session.environment.pending",
                             "agent.session.environment.ready"], (kinds, events[2][1]["environment"])
        [command] = commands(events)
        assert command["exit_code"] == 0, command
        assert command["output"] == "sys-42\n/mnt/packages/system/usr/bin/tinysys\n0\n", command
        assert {"Packages", DEB} <= {path.rsplit("/", 1)[-1] for path in repository.seen[seen:]}
        session_id = events[0][1]["session"]["id"]
        async with http.get(f"/v1/agents/sessions/{session_id}", headers=BETA) as answer:
            session = strict(AgentSession, await answer.json())
        assert session.environment.type == "openai_hosted"
        assert session.environment.packages.model_dump() == {"npm": [], "python": [], "system": ["tinysys"]}
        assert (await sdk.containers.files.list(session.environment.id)).data == []  # not the container's files
        await sdk.beta.agents.sessions.delete(session_id)


async def test_a_package_the_repository_lacks_fails_the_environment_naming_it(gateway: Gateway) -> None:
    async with aiohttp.ClientSession(gateway.sidecar.http_url, timeout=aiohttp.ClientTimeout(total=180)) as http:
        events = await start(http, {"packages": {"system": ["tinysys", "nosuchdeb"]}}, "echo never")
    kinds = [event["type"] for _, event in events]
    assert kinds[2] == "agent.session.environment.failed", kinds
    error = events[2][1]["environment"]["error"]
    assert error["code"] == "package_install_failed" and "'nosuchdeb'" in error["message"], error
    assert commands(events) == []


@pytest.mark.parametrize(("entry", "param"), [
    ("--allow-unauthenticated", "environment.packages.system[0]"),
    ("../tinysys.deb", "environment.packages.system[0]"),
    ("Tinysys", "environment.packages.system[0]"),
    ("tinysys=1.0 evil", "environment.packages.system[0]"),
])
async def test_an_entry_that_is_no_debian_package_is_a_400_naming_it(gateway: Gateway, entry: str,
                                                                     param: str) -> None:
    async with aiohttp.ClientSession(gateway.sidecar.http_url) as http:
        body: dict[str, Any] = {"agent": {"model": "fake-model"}, "input": "x", "environment": {
            "type": "openai_hosted", "packages": {"system": [entry]}}}
        async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
    assert (error["param"], error["code"]) == (param, "invalid_value")
