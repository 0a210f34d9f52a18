"""A session's artifacts count in its tenant's ``max_stored_bytes`` (RESPONSES_BRIDGE_TENANT_MAX_STORED_BYTES),
through both doors: a turn whose new file would pass the limit as an artifact completes, keeps the files that fit,
and tells the one not kept in an ``error`` event naming it, before the turn's end; the artifact is not listed, and
the bytes it would have taken are not kept. The session's deletion gives the bytes back. Every event is validated
strictly with the SDK's types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta.agents.sessions import SessionArtifact

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
    "tests/unit/test_postgres_file_bytes.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

HOSTED = {"type": "openai_hosted", "container_size": "small", "network": {"access": "disabled"}}
LIMIT = 3_000_000
FIRST, SECOND = 800_000, 1_200_000  # the second fits as a container file (2.8 MB in all), not also as an artifact


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("artifact-quota")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "10",
                                    "RESPONSES_BRIDGE_TENANT_MAX_STORED_BYTES": str(LIMIT)}) as gateway:
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


def write(path: str, size: int) -> dict[str, Any]:
    return {"type": "agent.session.input.message", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": f"sh: head -c {size} /dev/zero > {path} && echo written"}]}]}


async def test_an_artifact_past_the_quota_is_not_kept_and_the_turn_is(beta_client: openai.AsyncOpenAI,
                                                                      http: aiohttp.ClientSession) -> None:
    agent = await beta_client.beta.agents.create(model=MODEL, instructions="Use the shell.")
    body = {"agent_id": agent.id, "environment": HOSTED, "stream": True,
            "input": f"sh: head -c {FIRST} /dev/zero > /mnt/data/first.bin && echo written"}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        assert answer.status == 200
        first = frames(await read_until_idle(answer))
    session_id = first[0][1]["session"]["id"]
    assert [event["type"] for _, event in first][-2:] == ["agent.session.turn.completed", "agent.session.idle"]
    assert not [event for _, event in first if event["type"] == "error"]

    await beta_client.beta.agents.sessions.events.create(session_id, events=[  # type: ignore[list-item]
        write("/mnt/data/second.bin", SECOND)])
    async with http.get(f"/v1/agents/sessions/{session_id}/events",
                        headers={**BETA, "Last-Event-ID": first[-1][0]}) as answer:
        second = frames(await read_until_idle(answer))
    kinds = [event["type"] for _, event in second]
    assert kinds[-3:] == ["error", "agent.session.turn.completed", "agent.session.idle"], kinds
    error = second[-3][1]["error"]
    assert error["code"] == "storage_limit_exceeded" and "'/mnt/data/second.bin'" in error["message"]
    assert f"({SECOND} bytes)" in error["message"] and str(LIMIT) in error["message"]
    command = [event["item"] for _, event in second if event["type"] == "agent.session.turn.item.done"
               and event["item"]["type"] == "command_execution"]
    assert command[0]["output"].strip() == "written"  # the command ran and its file is in the container

    turns = (await beta_client.beta.agents.sessions.turns.list(session_id, order="asc")).data
    assert [turn.status for turn in turns] == ["completed", "completed"]
    async with http.get(f"/v1/agents/sessions/{session_id}/artifacts?order=asc", headers=BETA) as answer:
        listed = await answer.json()
    artifacts = [strict(SessionArtifact, artifact) for artifact in listed["data"]]
    assert [(artifact.path, artifact.size_bytes) for artifact in artifacts] == [("/mnt/data/first.bin", FIRST)]

    # the session's deletion gives its container's and its artifacts' bytes back: the next door starts clean
    assert (await beta_client.beta.agents.sessions.delete(session_id)).deleted
