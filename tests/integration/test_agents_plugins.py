"""An ``openai_hosted`` environment's ``plugins`` (inline Codex plugin zips), through both doors with the SDK's
strict types: a plugin's skills (each directory with a ``SKILL.md`` under its manifest's ``skills``) are laid out
for the shell beside the environment's own, and the plugin is shown on the session, on a standalone environment
and on a template. A plugin that brings apps, declares another name, or offers neither skill nor MCP server is a
400 naming it (its MCP servers: test_agents_plugin_mcp.py)."""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from openai.types.beta import AgentSession
from openai.types.beta.agents import EnvironmentInfo
from openai.types.beta.agents.environments import EnvironmentTemplate

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle, strict
from tests.integration.test_agents_packages import commands
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
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

HOSTED = {"type": "openai_hosted", "container_size": "small", "network": {"access": "disabled"}}
GREET = b"---\nname: greet\ndescription: Says hello to someone.\n---\nRun run.sh with a name.\n"


def plugin_zip(manifest: dict[str, Any], files: dict[str, bytes] | None = None, folder: str = "") -> str:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(f"{folder}.codex-plugin/plugin.json", orjson.dumps(manifest))
        for path, data in (files if files is not None else {
                "skills/greet/SKILL.md": GREET, "skills/greet/run.sh": b"echo hello $1\n",
                "skills/README.md": b"not a skill"}).items():
            archive.writestr(folder + path, data)
    return base64.b64encode(out.getvalue()).decode()


def plugin(name: str = "demo-plugin", **kwargs: Any) -> dict[str, Any]:
    manifest = {"name": name, "version": "1.0.0", "description": "A demo plugin.", "skills": "./skills"}
    return {"type": "inline", "name": name, "description": "A demo plugin.",
            "source": {"type": "base64", "media_type": "application/zip", "data": plugin_zip(manifest, **kwargs)}}


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("plugins")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "10"}) as gateway:
        yield gateway


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


async def test_a_plugins_skills_are_laid_out_and_the_plugin_shown(base_url: str) -> None:
    async with aiohttp.ClientSession(base_url, headers=BETA, timeout=aiohttp.ClientTimeout(total=120)) as http, \
            async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        body = {"agent": {"model": MODEL}, "environment": {**HOSTED, "plugins": [plugin(folder="demo/")]},
                "stream": True, "input": "sh: sed -n 2p /mnt/skills/greet/SKILL.md && sh /mnt/skills/greet/run.sh you"}
        async with http.post("/v1/agents/sessions", json=body) as answer:
            assert answer.status == 200, await answer.text()
            events = frames(await read_until_idle(answer))
        [command] = commands(events)
        assert command["exit_code"] == 0 and command["output"] == "name: greet\nhello you\n", command
        session_id = events[0][1]["session"]["id"]
        async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
            session = strict(AgentSession, await answer.json())
        assert session.environment.type == "openai_hosted"
        assert [p.model_dump() for p in session.environment.plugins] == [
            {"type": "inline", "name": "demo-plugin", "description": "A demo plugin."}]
        assert session.environment.skills == []  # the environment's own skills: none
        await sdk.beta.agents.sessions.delete(session_id)

        async with http.post("/v1/agents/environments", json={"environment": {**HOSTED,
                                                                               "plugins": [plugin()]}}) as answer:
            assert answer.status == 200, await answer.text()
            made = strict(EnvironmentInfo, await answer.json())
        assert [p.name for p in made.plugins] == ["demo-plugin"]
        assert [p.name for p in (await sdk.beta.agents.environments.retrieve(made.id)).plugins] == ["demo-plugin"]
        async with http.post("/v1/agents/environments/templates", json={"name": "with plugin",
                                                                         "plugins": [plugin()]}) as answer:
            assert answer.status == 200, await answer.text()
            template = strict(EnvironmentTemplate, await answer.json())
        assert [p.model_dump() for p in template.plugins] == [
            {"type": "inline", "name": "demo-plugin", "description": "A demo plugin."}]


@pytest.mark.parametrize(("entry", "param", "code"), [
    (plugin(files={"skills/greet/SKILL.md": GREET, ".app.json": b'{"apps": {"mail": {"id": "connector_1"}}}'}),
     "environment.plugins[0]", "unsupported_value"),
    ({**plugin(), "name": "other-name"}, "environment.plugins[0].name", "invalid_value"),
    (plugin(files={"docs/README.md": b"nothing"}), "environment.plugins[0]", "invalid_value"),
    ({**plugin(), "source": {"type": "base64", "media_type": "application/zip", "data": "bm90IGEgemlw"}},
     "environment.plugins[0].source.data", "invalid_zip"),
    ({"type": "url", "name": "x", "description": "y"}, "environment.plugins[0]", "invalid_value"),
])
async def test_a_plugin_that_cannot_be_served_is_a_400_naming_it(gateway: Gateway, entry: dict[str, Any],
                                                                 param: str, code: str) -> None:
    async with aiohttp.ClientSession(gateway.sidecar.http_url, headers=BETA) as http:
        async with http.get("/v1/containers?limit=100") as answer:
            before = len((await answer.json())["data"])
        body = {"agent": {"model": MODEL}, "input": "hi", "environment": {**HOSTED, "plugins": [entry]}}
        async with http.post("/v1/agents/sessions", json=body) as answer:
            error = (await answer.json())["error"]
        assert answer.status == 400 and (error["param"], error["code"]) == (param, code), error
        async with http.get("/v1/containers?limit=100") as answer:
            assert len((await answer.json())["data"]) == before  # nothing was made
