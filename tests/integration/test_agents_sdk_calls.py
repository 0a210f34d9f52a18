"""SDK calls of the Agents API answered as the SDK's types say, through both doors (agent_doors' ``base``: the HTTP
door, and an Envoy in front), every 2xx validated strictly: a session made without ``input`` (idle, no turn, until
its first input event); the create answer of a session whose first turn is queued (``in_progress``, not ``idle``);
``capability_directories`` of a self-hosted and a hosted environment and of a template (checked, shown, their skills
and ``AGENTS.md`` told to the model); ``item_reference`` and ``{"id"}`` input items naming any item the tenant stored
(a response's input or output, a conversation's item) without ``previous_response_id``, in a response's input
and in a conversation's new items, another tenant's a 404 like a missing one. The sidecar authenticates with the
bridge's keys, so two tenants share it (Envoy checking them too). A template's directories made a session's and a
hosted environment's capabilities told to the model are behind the door: on the HTTP door alone (agent_doors
``doors``); the rest is what the SDK sends and parses, through both."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta import AgentSession
from openai.types.beta.agents.environments import EnvironmentTemplate
from openai.types.conversations import ConversationItemList

from responses_bridge.envoy_config import Auth
from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.command import python_binds
from responses_bridge.sandbox.doctor import check_bubblewrap
from responses_bridge.sandbox.identity import SandboxIdentity
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import TIMEOUT, base_fixture, doors  # noqa: F401
from tests.support.bridge import Sidecar, keys_command, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk
from tests.support.sdk_strict import strict_response

pytestmark = [
    pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
    pytest.mark.store_proven(
        "tests/integration/test_replicas_code.py",
        "tests/unit/test_store_contract.py",
        "tests/integration/test_agents_automations_replicas.py",
        "tests/unit/test_agent_store.py",
        "tests/integration/test_input_references.py",
        reason="every store/postgres line it covers on PostgreSQL is covered by the modules named "
               "(scripts/pg-coverage)",
    ),
]
TENANTS = ("alpha", "beta")


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.path.join(str(tmp_path_factory.mktemp("agents-sdk")), "bridge.db")


@pytest.fixture(scope="module")
def keys(database: str) -> dict[str, str]:
    made = {}
    for tenant in TENANTS:
        done = keys_command(database, "create", "--tenant", tenant)
        assert done.returncode == 0, done.stderr
        made[tenant] = done.stdout.strip()
    return made


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, database: str, keys: dict[str, str]) -> AsyncIterator[Sidecar]:
    async with running_sidecar(os.path.dirname(database), fake_upstream, "--db", database,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_CODE_TIMEOUT": "10"}) as started:
        yield started


@pytest.fixture(scope="module", name="envoy")
async def envoy_fixture(sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(sidecar, auth=Auth(mode="keys")) as url:
        yield url


@pytest.fixture
async def door(base: str, keys: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base, headers={**BETA, "Authorization": f"Bearer {keys['alpha']}"},
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
        yield http


def _client(base: str, key: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=TIMEOUT)


@pytest.fixture
async def sdk(base: str, keys: dict[str, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    async with _client(base, keys["alpha"]) as client:
        yield client


@pytest.fixture
async def other(base: str, keys: dict[str, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    async with _client(base, keys["beta"]) as client:
        yield client


async def call(door: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with door.request(method, path, json=body) as answer:
        return answer.status, await answer.json()


async def until_idle(door: aiohttp.ClientSession, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with door.get(f"/v1/agents/sessions/{session_id}/events", params={"until_idle": "true"}) as answer:
        assert answer.status == 200
        return frames(await read_until_idle(answer))


def message(text: str) -> dict[str, Any]:
    return {"type": "agent.session.input.message",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}


def refused(status: int, answer: Any, param: str, code: str | None = None) -> None:
    assert status == 400, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["param"] == param, answer
    if code is not None:
        assert answer["error"]["code"] == code, answer


async def upstream_texts(sidecar: Sidecar, marker: str) -> list[str]:
    """The text of every message of the upstream requests whose last message holds ``marker``."""
    async with aiohttp.ClientSession() as http, \
            http.get(sidecar.upstream_url.removesuffix("/v1") + "/_fake/requests") as answer:
        recorded = (await answer.json())["data"]
    texts = []
    for entry in recorded:
        body = entry["body"]
        if isinstance(body, dict) and marker in str(body.get("messages", [])[-1:]):
            texts += [str(message.get("content")) for message in body["messages"]]
    assert texts, f"no upstream request holds {marker}"
    return texts


# --- sessions: input optional, the create answer's status ----------------------------------------------------


async def test_a_session_made_without_input_is_idle_until_its_first_input(door: aiohttp.ClientSession,
                                                                         sdk: openai.AsyncOpenAI) -> None:
    environment = {"type": "self_hosted", "workspace_directory": "/srv/project"}
    status, made = await call(door, "POST", "/v1/agents/sessions", {"agent": {"model": MODEL},
                                                                    "environment": environment})
    assert status == 200, made
    assert strict(AgentSession, made).status == "idle"
    session = await sdk.beta.agents.sessions.create(agent={"model": MODEL},
                                                    environment=environment)  # type: ignore[arg-type]
    assert session.status == "idle"
    assert (await sdk.beta.agents.sessions.turns.list(session.id)).data == []
    assert (await sdk.beta.agents.sessions.retrieve(session.id)).status == "idle"

    await sdk.beta.agents.sessions.events.create(session.id, events=[message("first words")])  # type: ignore[list-item]
    events = await until_idle(door, session.id)
    kinds = [event["type"] for _, event in events]
    assert kinds[0] == "agent.session.created" and kinds[-2:] == ["agent.session.turn.completed",
                                                                  "agent.session.idle"]
    assert kinds.count("agent.session.in_progress") == 1
    turns = (await sdk.beta.agents.sessions.turns.list(session.id)).data
    assert [turn.status for turn in turns] == ["completed"]

    # required where the SDK says so: the 'none' environment, and a streamed create not self-hosted
    status, answer = await call(door, "POST", "/v1/agents/sessions", {"agent": {"model": MODEL},
                                                                      "environment": {"type": "none"}})
    refused(status, answer, "input", "missing_required_parameter")
    status, answer = await call(door, "POST", "/v1/agents/sessions", {
        "agent": {"model": MODEL}, "stream": True, "environment": {"type": "openai_hosted"}})
    refused(status, answer, "input", "missing_required_parameter")


async def test_the_create_answer_of_a_queued_turn_says_in_progress(door: aiohttp.ClientSession,
                                                                   sdk: openai.AsyncOpenAI) -> None:
    status, made = await call(door, "POST", "/v1/agents/sessions", {
        "agent": {"model": MODEL}, "environment": {"type": "none"}, "input": "hello"})
    assert status == 200, made
    assert strict(AgentSession, made).status == "in_progress"
    session = await sdk.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                    input="hello again")
    assert session.status == "in_progress"
    for session_id in (made["id"], session.id):  # polling until idle from the answer waits for the turn
        kinds = [event["type"] for _, event in await until_idle(door, session_id)]
        assert kinds.count("agent.session.in_progress") == 1 and kinds[-1] == "agent.session.idle"
        assert kinds.index("agent.session.turn.created") < kinds.index("agent.session.in_progress")
        assert (await sdk.beta.agents.sessions.retrieve(session_id)).status == "idle"


@doors("http")
async def test_a_session_deleted_while_its_turn_runs_is_gone_with_its_turn(sdk: openai.AsyncOpenAI) -> None:
    """Its running turn is stopped with it (the turn's model call held by the fake upstream), and the session, its
    turns and its items are 404s."""
    session = await sdk.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                    input="slow [stall=5000]")
    assert session.status == "in_progress"
    assert (await sdk.beta.agents.sessions.delete(session.id)).deleted is True
    for gone in (sdk.beta.agents.sessions.retrieve(session.id), sdk.beta.agents.sessions.turns.list(session.id),
                 sdk.beta.agents.sessions.items.list(session.id)):
        with pytest.raises(openai.NotFoundError):
            await gone


# --- capability directories ------------------------------------------------------------------------------------


async def test_capability_directories_are_checked_and_shown(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI,
                                                            sidecar: Sidecar) -> None:
    marker = f"caps-{uuid.uuid4().hex[:12]}"
    environment = {"type": "self_hosted", "workspace_directory": f"/srv/{marker}",
                   "capability_directories": ["skills", "/opt/caps/", "./skills"]}
    status, made = await call(door, "POST", "/v1/agents/sessions", {
        "agent": {"model": MODEL}, "environment": environment, "input": f"hello {marker}"})
    assert status == 200, made
    shown = strict(AgentSession, made).environment
    assert shown.capability_directories == [f"/srv/{marker}/skills", "/opt/caps"]  # type: ignore[union-attr]
    await until_idle(door, made["id"])
    told = "\n".join(await upstream_texts(sidecar, marker))  # the client's directories, named to the model
    assert f"- /srv/{marker}/skills" in told and "- /opt/caps" in told and "SKILL.md" in told

    template = await sdk.beta.agents.environments.templates.create(capability_directories=["caps", "/workspace/x/"])
    async with door.get(f"/v1/agents/environments/templates/{template.id}") as answer:
        strict(EnvironmentTemplate, await answer.json())
    assert template.capability_directories == ["/workspace/caps", "/workspace/x"]

    base = {"agent": {"model": MODEL}, "input": "hi"}
    for directories, param, code in [
            (["../up"], "environment.capability_directories[0]", "invalid_value"),
            (["ok", "a/../../b"], "environment.capability_directories[1]", "invalid_value"),
            (["/etc"], "environment.capability_directories[0]", "invalid_value"),  # outside the workspace
            ([f"d{index}" for index in range(17)], "environment.capability_directories", "array_above_max_length"),
            (["x" * 1025], "environment.capability_directories[0]", "invalid_value"),
            ("caps", "environment.capability_directories", "invalid_type")]:
        status, answer = await call(door, "POST", "/v1/agents/sessions", {
            **base, "environment": {"type": "openai_hosted", "capability_directories": directories}})
        refused(status, answer, param, code)
    status, answer = await call(door, "POST", "/v1/agents/sessions", {**base, "environment": {
        "type": "self_hosted", "workspace_directory": "/srv", "capability_directories": ["a\x00b"]}})
    refused(status, answer, "environment.capability_directories[0]", "invalid_value")
    status, answer = await call(door, "POST", "/v1/agents/environments/templates",
                                {"capability_directories": ["../x"]})
    refused(status, answer, "capability_directories[0]", "invalid_value")


SKILL = b"---\nname: csv-tools\ndescription: Summarise CSV files.\n---\n\nRun summarise.py on the file.\n"


def inline(path: str, data: bytes) -> dict[str, Any]:
    return {"type": "inline", "path": path, "data": base64.b64encode(data).decode()}


@doors("http")
@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
@pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here")
async def test_a_templates_directories_are_its_sessions(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI) -> None:
    """A hosted session made from a template, without input: idle, no turn (no sandbox call), the template's
    directories its own."""
    template = await sdk.beta.agents.environments.templates.create(capability_directories=["caps"])
    environment = {"type": "openai_hosted", "environment_template_id": template.id}
    status, made = await call(door, "POST", "/v1/agents/sessions", {"agent": {"model": MODEL},
                                                                    "environment": environment})
    assert status == 200, made
    session = strict(AgentSession, made)
    shown = session.environment
    assert session.status == "idle" and shown.capability_directories == ["/workspace/caps"]  # type: ignore[union-attr]
    assert (await sdk.beta.agents.sessions.turns.list(session.id)).data == []
    status, made = await call(door, "POST", "/v1/agents/sessions", {"agent": {"model": MODEL}, "environment": {
        **environment, "capability_directories": ["other"]}})  # the session's own replace the template's
    assert status == 200 and made["environment"]["capability_directories"] == ["/workspace/other"], made
    for session_id in (session.id, made["id"]):
        await sdk.beta.agents.sessions.delete(session_id)


def _runtime_unreachable() -> bool:
    """Can the sandbox's uid not reach the Python runtime every call binds (a runtime under /root)?"""
    identity = SandboxIdentity.for_process()
    return any(identity.unreachable(host) is not None for host, _ in python_binds())


@doors("http")
@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
@pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here")
@pytest.mark.skipif(_runtime_unreachable(), reason="the sandbox's uid cannot reach this Python runtime")
async def test_a_hosted_environments_capabilities_are_offered(door: aiohttp.ClientSession,
                                                              sidecar: Sidecar) -> None:
    marker = f"hosted-{uuid.uuid4().hex[:12]}"
    environment = {"type": "openai_hosted", "container_size": "small", "network": {"access": "disabled"},
                   "capability_directories": ["caps"],
                   "files": [inline("/workspace/caps/csv-tools/SKILL.md", SKILL),
                             inline("/workspace/caps/AGENTS.md", b"Be brief.\n"),
                             inline("/workspace/caps/broken/SKILL.md", b"no front matter\n"),
                             inline("/workspace/elsewhere/SKILL.md", SKILL.replace(b"csv-tools", b"not-offered"))]}
    status, made = await call(door, "POST", "/v1/agents/sessions", {
        "agent": {"model": MODEL, "instructions": "Use the shell."}, "environment": environment,
        "input": f"hello {marker}"})
    assert status == 200, made
    shown = strict(AgentSession, made).environment
    assert shown.capability_directories == ["/workspace/caps"]  # type: ignore[union-attr]
    events = await until_idle(door, made["id"])
    assert [event["type"] for _, event in events][-2:] == ["agent.session.turn.completed", "agent.session.idle"], \
        events[-2][1]["turn"]["error"]
    told = "\n".join(await upstream_texts(sidecar, marker))
    assert "Use the shell." in told
    assert "- csv-tools: Summarise CSV files. (/mnt/data/caps/csv-tools/SKILL.md)" in told
    assert "- /mnt/data/caps/AGENTS.md" in told
    assert "broken" not in told and "not-offered" not in told


# --- item references -------------------------------------------------------------------------------------------


async def test_an_item_reference_names_any_item_the_tenant_stored(door: aiohttp.ClientSession,
                                                                 sdk: openai.AsyncOpenAI,
                                                                 other: openai.AsyncOpenAI) -> None:
    first = await sdk.responses.create(model=MODEL, input="remember the lighthouse")
    said = first.output[0].id
    asked = (await sdk.responses.input_items.list(first.id)).data[0].id
    conversation = await sdk.conversations.create(items=[{"type": "message", "role": "user",
                                                          "content": "the harbour is north"}])
    noted = (await sdk.conversations.items.list(conversation.id)).data[0].id

    status, answer = await call(door, "POST", "/v1/responses", {"model": MODEL, "input": [
        {"type": "item_reference", "id": said}, {"id": asked}, {"type": "item_reference", "id": noted},
        {"role": "user", "content": "and then?"}]})
    assert status == 200, answer
    strict_response(answer)
    items = (await sdk.responses.input_items.list(answer["id"], order="asc")).data
    assert [(item.type, item.id) for item in items[:3]] == [("message", said), ("message", asked),
                                                           ("message", noted)]
    assert items[0].content[0].text == first.output_text  # type: ignore[union-attr]

    # a conversation's new items may name any stored item too
    status, added = await call(door, "POST", f"/v1/conversations/{conversation.id}/items",
                               {"items": [{"type": "item_reference", "id": said}]})
    assert status == 200, added
    strict(ConversationItemList, added)
    assert [(item["type"], item["id"]) for item in added["data"]] == [("message", said)]

    theirs = await other.conversations.create()
    for client, wanted in ((other, said), (other, noted), (sdk, "msg_never_stored")):  # another tenant's: missing
        with pytest.raises(openai.NotFoundError) as caught:
            await client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": wanted}])
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["code"], error["param"], error["type"]) == ("item_not_found", "input[0].id",
                                                                 "invalid_request_error")
    with pytest.raises(openai.NotFoundError) as caught:
        await other.conversations.items.create(theirs.id, items=[{"type": "item_reference", "id": said}])
    assert isinstance(caught.value.body, dict)
    assert (caught.value.body["code"], caught.value.body["param"]) == ("item_not_found", "items[0].id")
