"""Sessions with an ``openai_hosted`` environment through both doors: a container on the bridge's sandbox made with
the session, the hosted shell over it in every turn (the fake upstream calls ``shell`` when the user writes
``sh: <command>``), its commands told as ``command_execution`` items, the files a turn leaves published as the
session's artifacts, which the client lists, downloads and deletes. Every 2xx answer and every event is validated
strictly with the SDK's own types; what the bridge cannot give an environment is a 400 naming it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta import AgentSession
from openai.types.beta.agents.sessions import SessionArtifact, SessionArtifactDeleted, Turn

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle, strict
from tests.integration.test_skills import MANIFEST, skill_zip
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
    "tests/integration/test_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/unit/test_container_store.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

HOSTED = {"type": "openai_hosted", "container_size": "small", "network": {"access": "disabled"}}


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("hosted")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "10"}) as gateway:
        yield gateway


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url) as session:
        yield session


@pytest.fixture
async def beta_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


def message(text: str) -> dict[str, Any]:
    return {"type": "agent.session.input.message",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}


def commands(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The finished ``command_execution`` items of a stream."""
    return [event["item"] for _, event in events
            if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "command_execution"]


async def test_two_turns_use_the_shell_and_files_and_leave_artifacts(beta_client: openai.AsyncOpenAI,
                                                                      http: aiohttp.ClientSession) -> None:
    agent = await beta_client.beta.agents.create(model=MODEL, instructions="Use the shell.")
    body = {"agent_id": agent.id, "environment": HOSTED, "stream": True,
            "input": "sh: printf 'alpha\\nbeta\\n' > /mnt/data/notes.txt && wc -l < /mnt/data/notes.txt"}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        assert answer.status == 200
        first = frames(await read_until_idle(answer))
    kinds = [event["type"] for _, event in first]
    session_id = first[0][1]["session"]["id"]
    environment_id = first[0][1]["session"]["environment"]["id"]
    assert environment_id.startswith("cntr_")
    assert kinds[:3] == ["agent.session.created", "agent.session.environment.pending",
                         "agent.session.environment.ready"]
    assert [event["environment"]["status"] for _, event in first[1:3]] == ["pending", "ready"]
    added = [event["item"] for _, event in first if event["type"] == "agent.session.turn.item.added"
             and event["item"]["type"] == "command_execution"]
    [command] = commands(first)
    assert added[0]["id"] == command["id"] and added[0]["status"] == "in_progress"
    assert command["command"].startswith("printf") and command["exit_code"] == 0
    assert command["status"] == "completed" and command["output"].strip() == "2"
    text = "".join(event["delta"] for _, event in first if event["type"] == "agent.session.turn.output_text.delta")
    assert "Tool result:" in text and "2" in text
    assert kinds[-2:] == ["agent.session.turn.completed", "agent.session.idle"]

    session = await beta_client.beta.agents.sessions.retrieve(session_id)
    async with http.get(f"/v1/agents/sessions/{session_id}", headers=BETA) as answer:
        strict(AgentSession, await answer.json())
    assert session.environment.type == "openai_hosted" and session.environment.id == environment_id
    assert session.environment.container_size == "small" and session.environment.network.access == "disabled"

    # the second turn works on the first one's file, in the same container
    await beta_client.beta.agents.sessions.events.create(session_id, events=[  # type: ignore[list-item]
        message("sh: sort -r /mnt/data/notes.txt > /mnt/data/sorted.txt && cat /mnt/data/sorted.txt")])
    async with http.get(f"/v1/agents/sessions/{session_id}/events",
                        headers={**BETA, "Last-Event-ID": first[-1][0]}) as answer:
        second = frames(await read_until_idle(answer))
    [command] = commands(second)
    assert command["exit_code"] == 0 and command["output"] == "beta\nalpha\n"
    turns = [strict(Turn, turn.model_dump(mode="json", exclude_unset=True))
             for turn in (await beta_client.beta.agents.sessions.turns.list(session_id, order="asc")).data]
    assert [turn.status for turn in turns] == ["completed", "completed"]
    items = (await beta_client.beta.agents.sessions.items.list(session_id, order="asc")).data
    assert [item.type for item in items].count("command_execution") == 2

    # each turn's new files are its artifacts (the unchanged notes.txt is not published again)
    async with http.get(f"/v1/agents/sessions/{session_id}/artifacts?order=asc", headers=BETA) as answer:
        listed = await answer.json()
    artifacts = [strict(SessionArtifact, artifact) for artifact in listed["data"]]
    assert [(a.path, a.turn_id, a.size_bytes) for a in artifacts] == [
        ("/mnt/data/notes.txt", turns[0].id, 11), ("/mnt/data/sorted.txt", turns[1].id, 11)]
    assert all(a.session_id == session_id and a.environment_id == environment_id for a in artifacts)
    artifacts_api = beta_client.beta.agents.sessions.artifacts
    sorted_file = await artifacts_api.retrieve(artifacts[1].id, session_id=session_id)
    assert sorted_file == artifacts[1]
    content = await artifacts_api.content(artifacts[1].id, session_id=session_id)
    assert content.read() == b"beta\nalpha\n"
    filtered = await artifacts_api.list(session_id, environment_id="cntr_other")
    assert filtered.data == []

    # an artifact is immutable: a later turn changing the file publishes a new one
    await beta_client.beta.agents.sessions.events.create(session_id, events=[  # type: ignore[list-item]
        message("sh: echo gamma >> /mnt/data/notes.txt")])
    async with http.get(f"/v1/agents/sessions/{session_id}/events",
                        headers={**BETA, "Last-Event-ID": second[-1][0]}) as answer:
        await read_until_idle(answer)
    content = await artifacts_api.content(artifacts[0].id, session_id=session_id)
    assert content.read() == b"alpha\nbeta\n"
    newest = (await artifacts_api.list(session_id, order="desc", limit=1)).data[0]
    assert newest.path == "/mnt/data/notes.txt" and newest.size_bytes == 17

    async with http.delete(f"/v1/agents/sessions/{session_id}/artifacts/{artifacts[0].id}",
                           headers=BETA) as answer:
        assert strict(SessionArtifactDeleted, await answer.json()).deleted is True
    with pytest.raises(openai.NotFoundError):
        await artifacts_api.retrieve(artifacts[0].id, session_id=session_id)
    with pytest.raises(openai.NotFoundError):
        await artifacts_api.content(artifacts[0].id, session_id=session_id)

    # the session's container goes with it
    await beta_client.beta.agents.sessions.delete(session_id)
    with pytest.raises(openai.NotFoundError):
        await beta_client.containers.retrieve(environment_id)


async def test_a_container_gone_is_an_expired_environment(gateway: Gateway) -> None:
    async with async_sdk(base_url=f"{gateway.sidecar.http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client, aiohttp.ClientSession(gateway.sidecar.http_url) as http:
        agent = await client.beta.agents.create(model=MODEL)
        session = await client.beta.agents.sessions.create(agent_id=agent.id, environment=HOSTED,  # type: ignore[arg-type]
                                                           input="hello")
        async with http.get(f"/v1/agents/sessions/{session.id}/events", headers=BETA) as answer:
            first = frames(await read_until_idle(answer))
        await client.containers.delete(session.environment.id)  # type: ignore[union-attr]
        await client.beta.agents.sessions.events.create(session.id, events=[message("again")])  # type: ignore[list-item]
        async with http.get(f"/v1/agents/sessions/{session.id}/events",
                            headers={**BETA, "Last-Event-ID": first[-1][0]}) as answer:
            later = frames(await read_until_idle(answer))
        kinds = [event["type"] for _, event in later]
        assert "agent.session.environment.expired" in kinds and "agent.session.turn.failed" in kinds
        failed = next(event for _, event in later if event["type"] == "agent.session.turn.failed")
        assert failed["turn"]["error"]["code"] == "sandbox_error"


@pytest.mark.parametrize(("environment", "param"), [
    ({"desktop": {"enabled": 1}}, "environment.desktop"),
    ({"network": {"access": "enabled"}}, "environment.network.access"),
    ({"network": {"access": "restricted", "blocked_domains": ["example.com"]}}, "environment.network.blocked_domains"),
    ({"network": {"access": "restricted"}}, "environment.network.allowed_domains"),
    ({"packages": {"python": ["numpy"]}}, "environment.packages.python"),
    ({"skills": [{"type": "skill_reference", "skill_id": "skill_missing"}]}, "environment.skills[0].skill_id"),
    ({"plugins": [{"type": "inline"}]}, "environment.plugins[0].name"),
    ({"environment_id": "env_1"}, "environment.environment_id"),
    ({"container_size": "huge"}, "environment.container_size"),
    ({"shared": True}, "environment.shared"),
])
async def test_what_a_hosted_environment_cannot_have_is_a_400(gateway: Gateway, environment: dict[str, Any],
                                                             param: str) -> None:
    async with aiohttp.ClientSession(gateway.sidecar.http_url) as http:
        async with http.post("/v1/agents", json={"model": MODEL}, headers=BETA) as answer:
            agent = await answer.json()
        async with http.get("/v1/containers?limit=100") as answer:
            before = len((await answer.json())["data"])
        body = {"agent_id": agent["id"], "input": "hi", "environment": {"type": "openai_hosted", **environment}}
        async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
            error = (await answer.json())["error"]
            assert answer.status in (400, 404) and error["param"] == param, error
        async with http.get("/v1/containers?limit=100") as answer:
            assert len((await answer.json())["data"]) == before  # nothing made


async def test_restricted_network_is_the_containers_allowlist(gateway: Gateway) -> None:
    async with async_sdk(base_url=f"{gateway.sidecar.http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client:
        agent = await client.beta.agents.create(model=MODEL)
        session = await client.beta.agents.sessions.create(
            agent_id=agent.id, input="hello", environment={  # type: ignore[arg-type]
                "type": "openai_hosted", "container_size": "large",
                "network": {"access": "restricted", "allowed_domains": ["example.com"]}})
        environment = session.environment
        assert environment.type == "openai_hosted" and environment.container_size == "large"
        assert environment.network.access == "restricted" and environment.network.allowed_domains == ["example.com"]
        container = await client.containers.retrieve(environment.id)
        assert container.memory_limit == "16g"
        assert container.network_policy is not None and container.network_policy.type == "allowlist"
        assert container.network_policy.allowed_domains == ["example.com"]
        await client.beta.agents.sessions.delete(session.id)


async def test_the_environments_skills_are_laid_out_for_the_shell(gateway: Gateway) -> None:
    inline = {"type": "inline", "name": "inline-tool", "description": "An inline tool.",
              "source": {"type": "base64", "media_type": "application/zip",
                         "data": base64.b64encode(skill_zip(MANIFEST.replace("csv-insights", "inline"))).decode()}}
    async with async_sdk(base_url=f"{gateway.sidecar.http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client, aiohttp.ClientSession(gateway.sidecar.http_url) as http:
        made = await client.skills.create(files=("s.zip", skill_zip(), "application/zip"))
        agent = await client.beta.agents.create(model=MODEL)
        environment = {**HOSTED, "skills": [{"type": "skill_reference", "skill_id": made.id}, inline]}
        body = {"agent_id": agent.id, "environment": environment, "stream": True,
                "input": "sh: sed -s -n 2p /mnt/skills/csv-insights/SKILL.md /mnt/skills/inline-tool/SKILL.md"}
        async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
            events = frames(await read_until_idle(answer))
        [command] = commands(events)
        assert command["exit_code"] == 0 and command["output"] == "name: csv-insights\nname: inline\n"
        session = await client.beta.agents.sessions.retrieve(events[0][1]["session"]["id"])
        assert session.environment.type == "openai_hosted"
        shown = [skill.model_dump() for skill in session.environment.skills]
        assert shown == [{"type": "skill_reference", "skill_id": made.id, "name": "csv-insights",
                          "description": made.description, "version": "1"},
                         {"type": "inline", "name": "inline-tool", "description": "An inline tool."}], shown
        await client.beta.agents.sessions.delete(session.id)
        await client.skills.delete(made.id)


@pytest.fixture(scope="module")
async def tenanted(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """A sidecar whose tenant is the ``x-tenant-id`` header (RESPONSES_BRIDGE_AUTH=header), HTTP door; a container
    holds 64 bytes of files."""
    async with running_sidecar(str(tmp_path_factory.mktemp("hosted-tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header",
                                    "RESPONSES_BRIDGE_CODE_MAX_CONTAINER_BYTES": "64"},
                               ready_headers={"x-tenant-id": "alpha"}) as sidecar:
        yield sidecar


async def test_another_tenants_artifacts_are_a_404(tenanted: Sidecar) -> None:
    clients = {tenant: async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                          timeout=60, default_headers={"x-tenant-id": tenant})
               for tenant in ("alpha", "other")}
    try:
        alpha, other = clients["alpha"], clients["other"]
        agent = await alpha.beta.agents.create(model=MODEL)
        session = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment=HOSTED,  # type: ignore[arg-type]
                                                          input="sh: echo secret > /mnt/data/mine.txt")
        async with aiohttp.ClientSession(tenanted.http_url) as http:
            async with http.get(f"/v1/agents/sessions/{session.id}/events",
                                headers={**BETA, "x-tenant-id": "alpha"}) as answer:
                await read_until_idle(answer)
        [artifact] = (await alpha.beta.agents.sessions.artifacts.list(session.id)).data
        theirs = other.beta.agents.sessions.artifacts
        for call in (theirs.list(session.id), theirs.retrieve(artifact.id, session_id=session.id),
                     theirs.content(artifact.id, session_id=session.id),
                     theirs.delete(artifact.id, session_id=session.id),
                     other.containers.retrieve(artifact.environment_id)):
            with pytest.raises(openai.NotFoundError):
                await call
        # an artifact is found under its own session only
        second = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment={"type": "none"}, input="x")
        with pytest.raises(openai.NotFoundError):
            await alpha.beta.agents.sessions.artifacts.retrieve(artifact.id, session_id=second.id)
        content = await alpha.beta.agents.sessions.artifacts.content(artifact.id, session_id=session.id)
        assert content.read() == b"secret\n"
    finally:
        for client in clients.values():
            await client.close()


async def test_a_sessions_artifacts_hold_a_containers_bytes_at_most(tenanted: Sidecar) -> None:
    async with async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0, timeout=60,
                                  default_headers={"x-tenant-id": "alpha"}) as client, \
            aiohttp.ClientSession(tenanted.http_url, headers={**BETA, "x-tenant-id": "alpha"}) as http:
        agent = await client.beta.agents.create(model=MODEL)
        session = await client.beta.agents.sessions.create(agent_id=agent.id, environment=HOSTED,  # type: ignore[arg-type]
                                                           input="sh: seq 10 20 > /mnt/data/a.txt")  # 33 bytes
        async with http.get(f"/v1/agents/sessions/{session.id}/events") as answer:
            first = frames(await read_until_idle(answer))
        await client.beta.agents.sessions.events.create(session.id, events=[  # type: ignore[list-item]
            message("sh: rm /mnt/data/a.txt && seq 30 40 > /mnt/data/b.txt")])  # 33 more: past the 64
        async with http.get(f"/v1/agents/sessions/{session.id}/events",
                            headers={"Last-Event-ID": first[-1][0]}) as answer:
            [command] = commands(frames(await read_until_idle(answer)))
        assert command["exit_code"] == 0  # the container kept it (a.txt is gone)
        listed = (await client.beta.agents.sessions.artifacts.list(session.id)).data
        assert [(artifact.path, artifact.size_bytes) for artifact in listed] == [("/mnt/data/a.txt", 33)]
