"""An ``openai_hosted`` environment's packages, installed at its start from the operator's indexes, through both
doors with the SDK's strict types. The indexes are real local servers the test runs (no internet): a PEP 503
simple index holding a tiny wheel the test builds, and an npm registry holding a tiny tarball; the deployment names
them (``RESPONSES_BRIDGE_PACKAGE_INDEXES``) and lets the egress proxy reach them (``127.0.0.1:<port>``). The
session's container has no network of its own, so the install could only have come through the proxy under its own
policy; every later command imports the packages (``PYTHONPATH``, ``NODE_PATH``, ``PATH`` at ``/mnt/packages``),
which are neither the container's files nor the session's artifacts. A package no index holds fails the
environment (``agent.session.environment.failed``) naming it, and the turn with it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openai.types.beta import AgentSession

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle, strict
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_container_store.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

WHEEL = "tinypkg-1.0-py3-none-any.whl"
NODE_PACKAGE = {"name": "tinynode", "version": "1.0.0", "main": "index.js", "bin": {"tinynodebin": "cli.js"}}


def tiny_wheel() -> bytes:
    """A pure-Python wheel: ``tinypkg`` (``WORD``) and a console script ``tinyword``."""
    files = {"tinypkg/__init__.py": b"WORD = 'tiny-42'\n\ndef main():\n    print(WORD)\n",
             "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
             "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n",
             "tinypkg-1.0.dist-info/entry_points.txt": b"[console_scripts]\ntinyword = tinypkg:main\n"}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in {**files, "tinypkg-1.0.dist-info/RECORD": "\n".join(record).encode() + b"\n"}.items():
            archive.writestr(path, data)
    return buffer.getvalue()


def tiny_tarball() -> bytes:
    """An npm package ``tinynode`` whose ``main`` exports ``'node-42'``, with a command ``tinynodebin``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in {"package/package.json": json.dumps(NODE_PACKAGE).encode(),
                           "package/index.js": b"module.exports = 'node-42';\n",
                           "package/cli.js": b"#!/usr/bin/env node\nconsole.log('bin-42');\n"}.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class Indexes:
    port: int
    seen: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def indexes() -> AsyncIterator[Indexes]:
    wheel, tarball = tiny_wheel(), tiny_tarball()
    found = Indexes(0)

    async def simple(request: web.Request) -> web.Response:
        found.seen.append(request.path)
        if request.match_info["project"] != "tinypkg":
            raise web.HTTPNotFound()
        digest = hashlib.sha256(wheel).hexdigest()
        return web.Response(text=f'<html><body><a href="/files/{WHEEL}#sha256={digest}">{WHEEL}</a></body></html>',
                            content_type="text/html")

    async def files(request: web.Request) -> web.Response:
        found.seen.append(request.path)
        return web.Response(body=wheel, content_type="application/octet-stream")

    async def packument(request: web.Request) -> web.Response:
        found.seen.append(request.path)
        if request.match_info["name"] != "tinynode":
            raise web.HTTPNotFound()
        dist = {"tarball": f"http://127.0.0.1:{found.port}/npm/tinynode/-/tinynode-1.0.0.tgz",
                "shasum": hashlib.sha1(tarball).hexdigest(),
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()}
        manifest = {**NODE_PACKAGE, "dist": dist}  # a registry's version document: the package.json and dist
        return web.json_response({"name": "tinynode", "dist-tags": {"latest": "1.0.0"},
                                  "versions": {"1.0.0": manifest}})

    async def npm_tarball(request: web.Request) -> web.Response:
        found.seen.append(request.path)
        return web.Response(body=tarball, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/simple/{project}/", simple)
    app.router.add_get("/files/{name}", files)
    app.router.add_get("/npm/{name}", packument)
    app.router.add_get("/npm/{name}/-/{file}", npm_tarball)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield found
    await runner.cleanup()


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, indexes: Indexes,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    base = f"http://127.0.0.1:{indexes.port}"
    async with running_gateway(str(tmp_path_factory.mktemp("packages")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "60",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{indexes.port}",
                                    "RESPONSES_BRIDGE_PACKAGE_INDEXES": f"python={base}/simple,npm={base}/npm"}
                               ) as gateway:
        yield gateway


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


def commands(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [event["item"] for _, event in events
            if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "command_execution"]


async def start(http: aiohttp.ClientSession, environment: dict[str, Any],
                command: str) -> list[tuple[str, dict[str, Any]]]:
    async with http.post("/v1/agents", json={"model": MODEL, "instructions": "Use the shell."},
                         headers=BETA) as answer:
        agent = await answer.json()
    body = {"agent_id": agent["id"], "environment": {"type": "openai_hosted", "container_size": "small",
                                                     **environment},
            "stream": True, "input": f"sh: {command}"}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        assert answer.status == 200, await answer.text()
        return frames(await read_until_idle(answer))


async def test_packages_from_the_operators_indexes_serve_every_later_command(base_url: str,
                                                                           indexes: Indexes) -> None:
    async with aiohttp.ClientSession(base_url, timeout=aiohttp.ClientTimeout(total=180)) as http, \
            async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        seen = len(indexes.seen)
        events = await start(http, {"packages": {"python": ["tinypkg==1.0"], "npm": ["tinynode@1.0.0"]}},
                             "python3 -c 'import tinypkg; print(tinypkg.WORD)' && tinyword && "
                             "node -e 'console.log(require(\"tinynode\"))' && tinynodebin && ls -A /mnt/data | wc -l")
        kinds = [event["type"] for _, event in events]
        errors = [event.get("environment", {}).get("error") for _, event in events[:3]]
        assert kinds[:3] == ["agent.session.created", "agent.session.environment.pending",
                             "agent.session.environment.ready"], (kinds, errors)  # a failed install says why
        assert events[2][1]["environment"]["error"] is None
        [command] = commands(events)
        assert command["exit_code"] == 0 and command["output"] == "tiny-42\ntiny-42\nnode-42\nbin-42\n0\n", command
        assert {"/simple/tinypkg/", f"/files/{WHEEL}", "/npm/tinynode"} <= set(indexes.seen[seen:])
        session_id = events[0][1]["session"]["id"]
        session = await sdk.beta.agents.sessions.retrieve(session_id)
        async with http.get(f"/v1/agents/sessions/{session_id}", headers=BETA) as answer:
            strict(AgentSession, await answer.json())
        assert session.environment.type == "openai_hosted"
        assert session.environment.packages.model_dump() == {"npm": ["tinynode@1.0.0"], "python": ["tinypkg==1.0"],
                                                             "system": []}
        # not the container's files, nor the session's artifacts; read-only for the model's commands
        container_id = session.environment.id
        assert (await sdk.containers.files.list(container_id)).data == []
        assert (await sdk.beta.agents.sessions.artifacts.list(session_id)).data == []
        await sdk.beta.agents.sessions.events.create(session_id, events=[{  # type: ignore[list-item]
            "type": "agent.session.input.message", "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "sh: python3 -c 'import tinypkg; print(tinypkg.__file__)'; "
                                               "touch /mnt/packages/python/x 2>&1 | grep -c Read-only; "
                                               "python3 -c 'import urllib.request as u; u.urlopen("
                                               f"\"http://127.0.0.1:{indexes.port}/simple/tinypkg/\", timeout=5)' "
                                               "2>/dev/null || echo no-network"}]}]}])
        async with http.get(f"/v1/agents/sessions/{session_id}/events",
                            headers={**BETA, "Last-Event-ID": events[-1][0]}) as answer:
            later = frames(await read_until_idle(answer))
        [command] = commands(later)
        # the container's own network is as it was: none for the model's commands
        assert command["output"] == "/mnt/packages/python/tinypkg/__init__.py\n1\nno-network\n", command
        await sdk.beta.agents.sessions.delete(session_id)


async def test_a_package_no_index_holds_fails_the_environment_naming_it(gateway: Gateway) -> None:
    async with aiohttp.ClientSession(gateway.sidecar.http_url, timeout=aiohttp.ClientTimeout(total=180)) as http:
        events = await start(http, {"packages": {"python": ["tinypkg", "nosuchpkg>=1"]}}, "echo never")
    kinds = [event["type"] for _, event in events]
    assert kinds[:3] == ["agent.session.created", "agent.session.environment.pending",
                         "agent.session.environment.failed"], kinds
    error = events[2][1]["environment"]["error"]
    assert error["code"] == "package_install_failed" and "'nosuchpkg>=1'" in error["message"], error
    assert commands(events) == []
    failed = next(event for _, event in events if event["type"] == "agent.session.turn.failed")
    assert failed["turn"]["error"]["code"] == "sandbox_error"  # the SDK's codes of a turn's error
    assert "nosuchpkg" in failed["turn"]["error"]["message"]


@pytest.mark.parametrize(("packages", "param"), [
    ({"python": ["--index-url=http://elsewhere/simple"]}, "environment.packages.python[0]"),
    ({"python": ["tinypkg", "-e ."]}, "environment.packages.python[1]"),
    ({"python": ["tinypkg @ https://elsewhere/tinypkg.whl"]}, "environment.packages.python[0]"),
    ({"python": ["./tinypkg"]}, "environment.packages.python[0]"),
    ({"npm": ["git+https://elsewhere/x.git"]}, "environment.packages.npm[0]"),
    ({"npm": ["tinynode@file:../x"]}, "environment.packages.npm[0]"),
    ({"npm": ["tinynode@http://elsewhere/x.tgz"]}, "environment.packages.npm[0]"),
    ({"python": [f"p{n}" for n in range(51)]}, "environment.packages.python"),
    ({"system": ["curl"]}, "environment.packages.system"),
])
async def test_an_entry_that_is_no_package_is_a_400_naming_it(gateway: Gateway, packages: dict[str, Any],
                                                              param: str) -> None:
    async with aiohttp.ClientSession(gateway.sidecar.http_url) as http:
        async with http.post("/v1/agents", json={"model": MODEL}, headers=BETA) as answer:
            agent = await answer.json()
        async with http.get("/v1/containers?limit=100") as answer:
            before = len((await answer.json())["data"])
        body = {"agent_id": agent["id"], "input": "hi",
                "environment": {"type": "openai_hosted", "packages": packages}}
        async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
            error = (await answer.json())["error"]
            assert answer.status == 400 and error["param"] == param, error
            assert set(error) == {"message", "type", "param", "code"}
        async with http.get("/v1/containers?limit=100") as answer:
            assert len((await answer.json())["data"]) == before  # nothing made
