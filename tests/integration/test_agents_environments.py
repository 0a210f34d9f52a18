"""Environment templates, standalone environments and their files (``client.beta.agents.environments``) through
both doors, and sessions made from a template: the session starts with the template's files, its setup commands
have run (in order, with its ``env``), and what the session gives inline replaces the template's field, its network
only narrower. Every 2xx answer is validated strictly with the SDK's own types; what the bridge cannot give an
environment is a 400 naming it, and nothing is made."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta import AgentSession
from openai.types.beta.agents import EnvironmentInfo
from openai.types.beta.agents.environments import EnvironmentFile, EnvironmentTemplate, EnvironmentTemplateDeleted

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle, strict
from tests.integration.test_agents_hosted import commands
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/unit/test_containers_service.py",
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

SECRET_ENV = "env-value-93b1c0de"
UNSEEN_ENV = "never-printed-5a0f7c21"  # given to the setup commands, printed by none
SECRET_COMMAND = "printf '%s' \"$GREETING\" > /workspace/setup/greeting.txt"


def inline(path: str, data: bytes) -> dict[str, Any]:
    return {"type": "inline", "path": path, "data": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("environments-log") / "sidecar.log"


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory,
                  log_file: Path) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("environments")
    async with running_gateway(str(directory), fake_upstream, "--log-level", "debug",
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "10"}, log_file=log_file) as gateway:
        yield gateway


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url, headers=BETA) as session:
        yield session


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def test_templates_are_created_read_updated_listed_and_deleted(client: openai.AsyncOpenAI,
                                                                    http: aiohttp.ClientSession) -> None:
    templates = client.beta.agents.environments.templates
    body = {"name": "data tools", "files": [inline("/workspace/data/a.txt", b"alpha\n")],
            "network": {"access": "restricted", "allowed_domains": ["example.com"]},
            "env": {"GREETING": SECRET_ENV}, "setup_commands": [{"command": SECRET_COMMAND}],
            "skills": [{"type": "skill_reference", "skill_id": "skill_abc", "version": "latest"}]}
    async with http.post("/v1/agents/environments/templates", json=body) as answer:
        raw = await answer.text()
        assert answer.status == 200, raw
        made = strict(EnvironmentTemplate, await answer.json())
    # neither env, setup commands nor an inline file's bytes are ever returned
    assert SECRET_ENV not in raw and "GREETING" not in raw and "printf" not in raw
    assert base64.b64encode(b"alpha\n").decode() not in raw
    assert made.name == "data tools" and made.id.startswith("envtpl_")
    assert [file.model_dump() for file in made.files] == [{"type": "inline", "path": "/workspace/data/a.txt",
                                                           "size_bytes": 6}]
    assert made.network.access == "restricted" and made.network.allowed_domains == ["example.com"]
    assert made.packages.python == [] and made.plugins == [] and made.desktop is not None
    assert [skill.model_dump() for skill in made.skills] == [{"type": "skill_reference", "skill_id": "skill_abc",
                                                             "version": "latest"}]

    async with http.get(f"/v1/agents/environments/templates/{made.id}") as answer:
        assert strict(EnvironmentTemplate, await answer.json()) == made
    updated = await templates.update(made.id, name=None, network=None, files=[
        {"type": "inline", "path": "/workspace/b.txt", "data": base64.b64encode(b"beta").decode()}])
    assert updated.name is None and updated.network.access == "disabled"
    assert [file.path for file in updated.files] == ["/workspace/b.txt"] and updated.skills == made.skills
    async with http.post(f"/v1/agents/environments/templates/{made.id}", json={"env": {"X": "1"}}) as answer:
        strict(EnvironmentTemplate, await answer.json())

    second = await templates.create()
    async with http.get("/v1/agents/environments/templates?limit=1&order=desc") as answer:
        listed = await answer.json()
    assert [strict(EnvironmentTemplate, entry).id for entry in listed["data"]] == [second.id]
    assert listed["has_more"] is True
    ids = [template.id async for template in templates.list(order="asc", limit=1)]
    assert ids.index(made.id) < ids.index(second.id)

    async with http.delete(f"/v1/agents/environments/templates/{made.id}") as answer:
        assert strict(EnvironmentTemplateDeleted, await answer.json()).deleted is True
    with pytest.raises(openai.NotFoundError):
        await templates.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        await templates.delete(made.id)
    await templates.delete(second.id)


async def test_a_session_from_a_template_starts_with_its_files(client: openai.AsyncOpenAI,
                                                               http: aiohttp.ClientSession, tmp_path: Path) -> None:
    local = tmp_path / "notes.txt"
    local.write_bytes(b"uploaded notes\n")
    prepared = await client.beta.agents.environments.files.prepare({"/workspace/docs/notes.txt": local})
    template = await client.beta.agents.environments.templates.create(
        files=[inline("/workspace/data/a.txt", b"alpha\n"), *prepared.files],
        env={"GREETING": SECRET_ENV, "UNSEEN": UNSEEN_ENV},
        setup_commands=[{"command": "mkdir -p setup"}, {"command": SECRET_COMMAND},
                        {"command": "ls > listing.txt", "cwd": "/workspace/data"}])
    agent = await client.beta.agents.create(model=MODEL, instructions="Use the shell.")
    body = {"agent_id": agent.id, "stream": True,
            "environment": {"type": "openai_hosted", "environment_template_id": template.id,
                            "container_size": "small"},
            "input": "sh: cat /workspace/data/a.txt /workspace/docs/notes.txt /mnt/data/setup/greeting.txt "
                     "/mnt/data/data/listing.txt && printf '%s' \"$UNSEEN\" | wc -c"}
    async with http.post("/v1/agents/sessions", json=body) as answer:
        assert answer.status == 200, await answer.text()
        events = frames(await read_until_idle(answer))
    [command] = commands(events)
    assert command["exit_code"] == 0, command
    # the files, what the setup commands made with env, and env for the agent's own commands too
    assert command["output"] == f"alpha\nuploaded notes\n{SECRET_ENV}a.txt\nlisting.txt\n{len(UNSEEN_ENV)}\n"
    session_id = events[0][1]["session"]["id"]
    async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
        raw = await answer.text()
        session = strict(AgentSession, await answer.json())
    assert SECRET_ENV not in raw and "printf" not in raw
    environment = session.environment
    assert environment.type == "openai_hosted" and environment.container_size == "small"
    assert [(file.type, file.path, file.size_bytes) for file in environment.files] == [
        ("inline", "/workspace/data/a.txt", 6), ("file_id", "/workspace/docs/notes.txt", 15)]
    assert environment.files[1].file_id == prepared.uploaded_file_ids[0]  # type: ignore[union-attr]
    # what the setup commands made is the environment's start, not an artifact of the first turn
    assert (await client.beta.agents.sessions.artifacts.list(session_id)).data == []

    # the session's environment is one of /v1/agents/environments: its live files, and one uploaded between turns
    files_api = client.beta.agents.environments.files
    made = await files_api.create(environment.id, type="inline", path="/workspace/data/c.txt",
                                  data=base64.b64encode(b"gamma").decode())
    assert strict(EnvironmentFile, made.model_dump(mode="json")).size_bytes == 5
    async with http.get(f"/v1/agents/environments/{environment.id}/files?path=/workspace/data&order=asc") as answer:
        listed = await answer.json()
    paths = [strict(EnvironmentFile, entry).path for entry in listed["data"]]
    assert paths == ["/workspace/data/a.txt", "/workspace/data/c.txt", "/workspace/data/listing.txt"]
    everything = [file.path async for file in files_api.list(environment.id, limit=2, order="desc")]
    assert everything == sorted(everything, key=lambda path: path.split("/"), reverse=True)
    assert set(everything) == {*paths, "/workspace/docs/notes.txt", "/workspace/setup/greeting.txt"}

    # the template changed or deleted later leaves the session as it was
    await client.beta.agents.environments.templates.delete(template.id)
    assert (await client.beta.agents.sessions.retrieve(session_id)).environment == environment
    await client.beta.agents.sessions.delete(session_id)
    with pytest.raises(openai.NotFoundError):
        await files_api.list(environment.id)


async def test_inline_fields_replace_the_templates_and_network_only_narrows(client: openai.AsyncOpenAI,
                                                                            http: aiohttp.ClientSession) -> None:
    template = await client.beta.agents.environments.templates.create(
        files=[inline("/workspace/a.txt", b"a")],
        network={"access": "restricted", "allowed_domains": ["example.com", "example.org"]})
    agent = await client.beta.agents.create(model=MODEL)
    hosted = {"type": "openai_hosted", "environment_template_id": template.id}
    session = await client.beta.agents.sessions.create(
        agent_id=agent.id, input="hello", environment={  # type: ignore[arg-type]
            **hosted, "files": [inline("/workspace/b.txt", b"bb")],
            "network": {"access": "restricted", "allowed_domains": ["example.org"]}})
    environment = session.environment
    assert environment.type == "openai_hosted"
    assert [file.path for file in environment.files] == ["/workspace/b.txt"]
    assert environment.network.allowed_domains == ["example.org"]
    inherited = await client.beta.agents.sessions.create(agent_id=agent.id, input="hello",
                                                         environment=hosted)  # type: ignore[arg-type]
    assert inherited.environment.network.allowed_domains == ["example.com", "example.org"]  # type: ignore[union-attr]
    for network in ({"access": "restricted", "allowed_domains": ["example.net"]}, {"access": "enabled"}):
        async with http.post("/v1/agents/sessions", json={"agent_id": agent.id, "input": "x",
                                                          "environment": {**hosted, "network": network}}) as answer:
            assert answer.status == 400
            assert (await answer.json())["error"]["param"].startswith("environment.network")
    closed = await client.beta.agents.environments.templates.create()
    async with http.post("/v1/agents/sessions", json={
            "agent_id": agent.id, "input": "x", "environment": {
                "type": "openai_hosted", "environment_template_id": closed.id,
                "network": {"access": "restricted", "allowed_domains": ["example.com"]}}}) as answer:
        assert answer.status == 400 and (await answer.json())["error"]["param"] == "environment.network"
    for made in (session, inherited):
        await client.beta.agents.sessions.delete(made.id)


async def test_standalone_environments_and_their_files(client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                                      tmp_path: Path) -> None:
    template = await client.beta.agents.environments.templates.create(
        files=[inline("/workspace/seed.txt", b"seed")], setup_commands=[{"command": "echo made > made.txt"}])
    environments = client.beta.agents.environments
    async with http.post("/v1/agents/environments", json={"environment": {
            "type": "openai_hosted", "environment_template_id": template.id}}) as answer:
        assert answer.status == 200, await answer.text()
        made = strict(EnvironmentInfo, await answer.json())
    assert made.status == "ready" and made.type == "openai_hosted" and made.id.startswith("cntr_")
    assert [(file.path, file.size_bytes) for file in made.files] == [("/workspace/seed.txt", 4)]
    async with http.get(f"/v1/agents/environments/{made.id}") as answer:
        assert strict(EnvironmentInfo, await answer.json()) == made
    other = await environments.create(environment={"type": "openai_hosted"})
    async with http.get("/v1/agents/environments?limit=1&type=openai_hosted") as answer:
        listed = await answer.json()
    assert [strict(EnvironmentInfo, entry).id for entry in listed["data"]] == [other.id]
    assert listed["has_more"] is True

    local = tmp_path / "upload.bin"
    local.write_bytes(b"\x00\x01uploaded")
    staged = await environments.files.upload(made.id, file=local, path="/workspace/in/upload.bin")
    assert staged.file.path == "/workspace/in/upload.bin" and staged.file.size_bytes == 10
    replaced = await environments.files.create(made.id, type="inline", path="/workspace/seed.txt",
                                               data=base64.b64encode(b"seed two").decode())
    assert replaced.size_bytes == 8 and replaced.environment_id == made.id
    for bad, param in (({"type": "inline", "path": "/etc/passwd", "data": ""}, "path"),
                       ({"type": "file_id", "path": "/workspace/x", "file_id": "file-missing"}, "file_id"),
                       ({"type": "inline", "path": "/workspace/x"}, "data")):
        async with http.post(f"/v1/agents/environments/{made.id}/files", json=bad) as answer:
            error = (await answer.json())["error"]
            assert answer.status in (400, 404) and error["param"] == param, error
    async with http.get(f"/v1/agents/environments/{made.id}/files?order=asc") as answer:
        listed = await answer.json()
    assert [(strict(EnvironmentFile, entry).path, entry["size_bytes"]) for entry in listed["data"]] == [
        ("/workspace/in/upload.bin", 10), ("/workspace/made.txt", 5), ("/workspace/seed.txt", 8)]
    container = await client.containers.retrieve(made.id)  # the environment is a container of /v1/containers
    assert container.id == made.id

    # a session takes the environment as it is (environment_id), alone: its files are the agent's
    agent = await client.beta.agents.create(model=MODEL)
    for extra, param in (({"files": []}, "environment.files"),
                         ({"environment_template_id": template.id}, "environment.environment_id")):
        async with http.post("/v1/agents/sessions", json={"agent_id": agent.id, "input": "x", "environment": {
                "type": "openai_hosted", "environment_id": made.id, **extra}}) as answer:
            assert answer.status == 400 and (await answer.json())["error"]["param"] == param
    body = {"agent_id": agent.id, "stream": True, "input": "sh: cat /workspace/seed.txt /workspace/made.txt",
            "environment": {"type": "openai_hosted", "environment_id": made.id}}
    async with http.post("/v1/agents/sessions", json=body) as answer:
        assert answer.status == 200, await answer.text()
        events = frames(await read_until_idle(answer))
    [command] = commands(events)
    assert command["output"] == "seed twomade\n"
    session = strict(AgentSession, events[0][1]["session"])
    assert session.environment.id == made.id and session.environment.files == made.files  # type: ignore[union-attr]
    async with http.post("/v1/agents/sessions", json={**body, "stream": False}) as answer:
        error = (await answer.json())["error"]
        assert answer.status == 400 and error["code"] == "environment_in_use", error
    await client.beta.agents.sessions.delete(session.id)  # the environment goes with the session that took it
    for gone in (environments.retrieve(made.id), environments.files.list(made.id)):
        with pytest.raises(openai.NotFoundError):
            await gone
    await client.containers.delete(other.id)  # an environment whose container expired is there, expired
    assert (await environments.retrieve(other.id)).status == "expired"
    async with http.get(f"/v1/agents/environments/{other.id}/files") as answer:
        assert answer.status == 400 and (await answer.json())["error"]["code"] == "environment_expired"


@pytest.mark.parametrize(("body", "param"), [
    ({"files": [{"type": "inline", "path": "/tmp/a", "data": ""}]}, "files[0].path"),
    ({"files": [{"type": "inline", "path": "/workspace/a/../b", "data": ""}]}, "files[0].path"),
    ({"files": [{"type": "inline", "path": "/workspace/outputs", "data": ""}]}, "files[0].path"),
    ({"files": [{"type": "inline", "path": "/workspace/a", "data": "not base64!"}]}, "files[0].data"),
    ({"files": [inline("/workspace/a", b""), inline("/workspace/a/b", b"")]}, "files[1].path"),
    ({"files": [{"type": "url", "path": "/workspace/a"}]}, "files[0].type"),
    ({"setup_commands": [{"command": ""}]}, "setup_commands[0].command"),
    ({"setup_commands": [{"command": "true", "cwd": "/etc"}]}, "setup_commands[0].cwd"),
    ({"env": {"1BAD": "x"}}, "env.1BAD"),
    ({"env": {"A": 1}}, "env.A"),
    ({"desktop": {"enabled": "yes"}}, "desktop"),
    ({"plugins": [{"type": "inline"}]}, "plugins[0].name"),
    ({"capability_directories": ["/etc/caps"]}, "capability_directories[0]"),
    ({"shared": True}, "shared"),
])
async def test_what_a_template_cannot_hold_is_a_400_naming_it(http: aiohttp.ClientSession, body: dict[str, Any],
                                                              param: str) -> None:
    async with http.post("/v1/agents/environments/templates", json=body) as answer:
        error = (await answer.json())["error"]
        assert answer.status == 400 and error["param"] == param, error
        assert set(error) == {"message", "type", "param", "code"}


async def test_what_an_environment_cannot_have_is_a_400_and_nothing_is_made(gateway: Gateway,
                                                                            log_file: Path) -> None:
    async with aiohttp.ClientSession(gateway.sidecar.http_url, headers=BETA) as http:
        async with http.post("/v1/agents", json={"model": MODEL}) as answer:
            agent = await answer.json()
        async with http.get("/v1/containers?limit=100") as answer:
            before = len((await answer.json())["data"])
        cases: list[tuple[str, dict[str, Any], int, str]] = [
            ("/v1/agents/environments", {"environment": {"type": "openai_hosted"}, "vault_ids": ["vault_1"]},
             404, "vault_id"),
            ("/v1/agents/environments", {"environment": {"type": "openai_hosted", "environment_id": "cntr_1"}},
             400, "environment.environment_id"),
            ("/v1/agents/sessions", {"agent_id": agent["id"], "input": "x", "environment": {
                "type": "openai_hosted", "environment_id": "cntr_missing"}}, 404, "environment.environment_id"),
            ("/v1/agents/environments", {"environment": {"type": "self_hosted"}}, 400, "environment.type"),
            ("/v1/agents/environments", {"environment": {"type": "openai_hosted", "environment_template_id":
                                                          "envtpl_missing"}}, 404,
             "environment.environment_template_id"),
            ("/v1/agents/sessions", {"agent_id": agent["id"], "input": "x", "environment": {
                "type": "openai_hosted", "environment_template_id": "envtpl_missing"}}, 404,
             "environment.environment_template_id"),
            ("/v1/agents/sessions", {"agent_id": agent["id"], "input": "x", "environment": {
                "type": "openai_hosted", "files": [{"type": "file_id", "file_id": "file-missing",
                                                    "path": "/workspace/a"}]}}, 404, "environment.files[0].file_id"),
            ("/v1/agents/sessions", {"agent_id": agent["id"], "input": "x", "environment": {
                "type": "openai_hosted", "env": {"A": "1"},
                "setup_commands": [{"command": "true"}, {"command": "test \"$A\" = 2"}]}}, 400,
             "environment.setup_commands[1]"),
        ]
        for path, body, status, param in cases:
            async with http.post(path, json=body) as answer:
                error = (await answer.json())["error"]
                assert answer.status == status and error["param"] == param, (body, error)
        async with http.get("/v1/containers?limit=100") as answer:
            assert len((await answer.json())["data"]) == before  # nothing made, nothing left half made
    log = log_file.read_text(errors="replace")  # the module's earlier tests gave env and setup commands too
    assert "sandbox_ready" in log
    for secret in (UNSEEN_ENV, "GREETING", "mkdir -p setup", '"$A"'):  # values, setup commands
        at = log.find(secret)
        assert at < 0, log[max(0, at - 600):at + 100]


@pytest.fixture(scope="module")
async def tenanted(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("environments-tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": "alpha"}) as sidecar:
        yield sidecar


async def test_another_tenants_templates_and_environments_are_a_404(tenanted: Sidecar) -> None:
    clients = {tenant: async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                          timeout=60, default_headers={"x-tenant-id": tenant})
               for tenant in ("alpha", "other")}
    try:
        alpha, other = clients["alpha"], clients["other"]
        template = await alpha.beta.agents.environments.templates.create(files=[inline("/workspace/a", b"a")])
        environment = await alpha.beta.agents.environments.create(
            environment={"type": "openai_hosted", "environment_template_id": template.id})
        theirs = other.beta.agents.environments
        for call in (theirs.templates.retrieve(template.id), theirs.templates.update(template.id, name="x"),
                     theirs.templates.delete(template.id), theirs.retrieve(environment.id),
                     theirs.files.list(environment.id),
                     theirs.files.create(environment.id, type="inline", path="/workspace/b", data=""),
                     theirs.create(environment={"type": "openai_hosted",  # type: ignore[typeddict-unknown-key]
                                                "environment_template_id": template.id})):
            with pytest.raises(openai.NotFoundError):
                await call
        assert (await theirs.templates.list()).data == [] and (await theirs.list()).data == []
        agent = await other.beta.agents.create(model=MODEL)
        with pytest.raises(openai.NotFoundError):
            await other.beta.agents.sessions.create(agent_id=agent.id, input="x", environment={
                "type": "openai_hosted", "environment_template_id": template.id})
        assert [file.path async for file in alpha.beta.agents.environments.files.list(environment.id)] == [
            "/workspace/a"]
    finally:
        for client in clients.values():
            await client.close()
