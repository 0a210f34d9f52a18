"""An agent session's ``openai_hosted`` environment on the network, through both doors with the SDK's strict types:
its vaults' ``environment_variable`` credentials reach a test host (a real local HTTP server the deployment lets
the egress proxy reach, ``127.0.0.1:<its port>``) in the requests the session's shell commands make, while the
sandbox holds a placeholder and no answer of the bridge, stream event, item, log line (at debug), exported trace
span, database file or the command's own output holds the value — the host echoes what it was sent, and the proxy
masks it on the way back. And its network as a block list: ``restricted`` with ``blocked_domains`` (every host
but those) and ``enabled`` (every host), where the deployment allows them
(``RESPONSES_BRIDGE_CODE_EGRESS_UNRESTRICTED``). The sandbox, its egress proxy and the credentials it puts in are
behind the door: those tests run on the HTTP door alone (agent_doors ``doors``); the refusals go through both."""

from __future__ import annotations

import base64
import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent
from typing import Any
from urllib.parse import quote

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from openai.types.beta import AgentSession
from openai.types.beta.agents.sessions import Turn

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

SECRET = "vault-env-secret-9d2f6c1b7a"


@dataclass
class LocalHost:
    """The host the session's code may reach: ``/echo`` answers with the ``Authorization`` it got, ``/encoded`` with
    it encoded; ``seen`` holds the headers of every request either got."""

    port: int
    seen: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Traces:
    """An OTLP/HTTP receiver keeping every export's bytes, to look for the secret in."""

    port: int
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
async def test_host() -> AsyncIterator[LocalHost]:
    host = LocalHost(0)

    async def echo(request: web.Request) -> web.Response:
        host.seen.append(dict(request.headers))
        return web.Response(text=f"you sent {request.headers.get('Authorization', '')}")

    async def encoded(request: web.Request) -> web.Response:
        """The credential it got, encoded as a host may return it: base64 (inside a longer base64 text too),
        percent-encoded and hex."""
        host.seen.append(dict(request.headers))
        raw = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        return web.Response(text="\n".join([
            base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
            base64.b64encode(b'{"seen": "' + raw + b'"}').decode(), quote(raw.decode(), safe=""),
            raw.hex(), raw.hex().upper()]))

    app = web.Application()
    app.router.add_get("/echo", echo)
    app.router.add_get("/encoded", encoded)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield host
    await runner.cleanup()


@pytest.fixture(scope="module")
async def traces() -> AsyncIterator[Traces]:
    found = Traces(0)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        found.bodies.append(gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield found
    await runner.cleanup()


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-egress")


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, bridge_dir: Path, test_host: LocalHost,
                  traces: Traces) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(bridge_dir), fake_upstream, "--log-level", "debug",
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "20",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{test_host.port}",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_UNRESTRICTED": "true",
                                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{traces.port}",
                                    "OTEL_BSP_SCHEDULE_DELAY": "50"},
                               log_file=bridge_dir / "sidecar.log") as started:
        yield started


def python(script: str) -> str:
    """The user message that makes the fake model run ``script`` with python3 in the hosted shell."""
    command = f"python3 - <<'PY'\n{dedent(script)}\nPY"
    return f"call shell [args64={base64.b64encode(orjson.dumps({'commands': [command]})).decode()}]"


FETCH = """
    import json, os, urllib.request, urllib.error

    def fetch(url, headers=None):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
                return [answer.status, answer.read().decode()[:200]]
        except urllib.error.HTTPError as error:
            return [error.code, error.headers.get("X-Egress-Outcome")]
        except Exception as error:
            return ["error", type(error).__name__]
"""


async def run_session(door: aiohttp.ClientSession, body: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    """A streamed session's first turn: the raw stream and the JSON its one shell command printed last."""
    async with door.post("/v1/agents/sessions", json={**body, "stream": True}) as answer:
        assert answer.status == 200, await answer.text()
        raw = await read_until_idle(answer)
    events = frames(raw)
    done = [event["item"] for _, event in events if event["type"] == "agent.session.turn.item.done"
            and event["item"]["type"] == "command_execution"]
    assert len(done) == 1, events
    assert done[0]["exit_code"] == 0, done[0]
    return [raw], dict(orjson.loads(done[0]["output"].strip().splitlines()[-1]), _session=events[0][1]["session"])


async def vault_with(sdk: openai.AsyncOpenAI, networking: dict[str, Any], name: str = "TRACKER_TOKEN") -> str:
    vault = await sdk.beta.agents.vaults.create(name="environment")
    await sdk.beta.agents.vaults.credentials.create(vault.id, name="tracker", auth={  # type: ignore[arg-type]
        "type": "environment_variable", "secret_name": name, "secret_value": SECRET, "networking": networking})
    return vault.id


@doors("http")
async def test_a_vault_credential_reaches_the_host_and_nothing_else_reveals_it(
        door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI, test_host: LocalHost, traces: Traces,
        bridge_dir: Path) -> None:
    vault_id = await vault_with(sdk, {"type": "limited", "allowed_hosts": ["127.0.0.1"]})
    agent = await sdk.beta.agents.create(model=MODEL, instructions="Use the shell.")
    environment = {"type": "openai_hosted", "container_size": "small",
                   "network": {"access": "restricted", "allowed_domains": ["127.0.0.1"]}}
    before = len(test_host.seen)
    bodies, found = await run_session(door, {"agent_id": agent.id, "environment": environment,
                                             "vault_ids": [vault_id], "input": python(FETCH + f"""
    placeholder = os.environ["TRACKER_TOKEN"]
    environ = open("/proc/self/environ", "rb").read().decode("latin-1")
    print(json.dumps({{
        "placeholder": placeholder,
        "echo": fetch("http://127.0.0.1:{test_host.port}/echo", {{"Authorization": "Bearer " + placeholder}}),
        "in_sandbox": ({SECRET[:8]!r} + {SECRET[8:]!r}) in environ,
    }}))
    """)})
    # the host got the credential; the code held a placeholder, and the echo came back masked
    assert len(test_host.seen) == before + 1 and test_host.seen[-1]["Authorization"] == f"Bearer {SECRET}"
    assert found["placeholder"] != SECRET and found["in_sandbox"] is False
    assert found["echo"][0] == 200 and found["echo"][1].startswith("you sent Bearer ")
    assert SECRET not in found["echo"][1] and found["placeholder"][:len(SECRET)] in found["echo"][1]
    session = found["_session"]
    strict(AgentSession, session)
    assert session["vault_ids"] == [vault_id]

    seen = list(bodies)
    session_id, container_id = session["id"], session["environment"]["id"]
    for path in (f"/v1/agents/sessions/{session_id}", f"/v1/agents/sessions/{session_id}/items",
                 f"/v1/agents/sessions/{session_id}/turns", f"/v1/agents/sessions/{session_id}/events?until_idle=true",
                 f"/v1/containers/{container_id}", f"/v1/vaults/{vault_id}/credentials"):
        async with door.get(path) as answer:
            assert answer.status == 200, path
            seen.append(await answer.read())
    turns = (await sdk.beta.agents.sessions.turns.list(session_id)).data
    assert [strict(Turn, turn.model_dump(mode="json", exclude_unset=True)).status for turn in turns] == ["completed"]
    container = await sdk.containers.retrieve(container_id)
    assert container.network_policy is not None and container.network_policy.allowed_domains == ["127.0.0.1"]
    assert not [body for body in seen if SECRET.encode() in body]
    await sdk.beta.agents.sessions.delete(session_id)
    # nor the bridge's log at debug, its exported spans, nor any file of its database (rows, WAL)
    assert traces.bodies, "no span was exported"
    assert not [body for body in traces.bodies if SECRET.encode() in body]
    for path in bridge_dir.iterdir():
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path.name


@doors("http")
async def test_a_host_returning_the_credential_encoded_returns_it_masked(
        door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI, test_host: LocalHost) -> None:
    """A host that answers with the credential base64-, percent- or hex-encoded: the command's output, and so the
    session's items and store, hold none of those forms (the proxy masks each like the value)."""
    vault_id = await vault_with(sdk, {"type": "limited", "allowed_hosts": ["127.0.0.1"]})
    agent = await sdk.beta.agents.create(model=MODEL, instructions="Use the shell.")
    environment = {"type": "openai_hosted", "container_size": "small",
                   "network": {"access": "restricted", "allowed_domains": ["127.0.0.1"]}}
    bodies, found = await run_session(door, {"agent_id": agent.id, "environment": environment,
                                             "vault_ids": [vault_id], "input": python(FETCH + f"""
    placeholder = os.environ["TRACKER_TOKEN"]
    request = urllib.request.Request("http://127.0.0.1:{test_host.port}/encoded",
                                     headers={{"Authorization": "Bearer " + placeholder}})
    with urllib.request.urlopen(request, timeout=10) as answer:
        print(json.dumps({{"encoded": answer.read().decode().split("\\n")}}))
    """)})
    assert test_host.seen[-1]["Authorization"] == f"Bearer {SECRET}"  # the host got the value
    lines = found["encoded"]
    assert len(lines) == 6
    forms = [base64.b64encode(SECRET.encode()).decode(), base64.urlsafe_b64encode(SECRET.encode()).decode(),
             quote(SECRET, safe=""), SECRET.encode().hex(), SECRET.encode().hex().upper()]
    for line in lines:
        padded = line + "=" * (-len(line) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(ValueError):
                assert SECRET.encode() not in decode(padded), line
        assert SECRET.encode().hex() not in line.lower(), line
    everything = b"".join(bodies)
    assert not [form for form in forms if form.rstrip("=").encode() in everything]


@doors("http")
async def test_a_block_list_lets_through_every_host_but_its_own(door: aiohttp.ClientSession,
                                                                sdk: openai.AsyncOpenAI, test_host: LocalHost) -> None:
    agent = await sdk.beta.agents.create(model=MODEL)
    vault_id = await vault_with(sdk, {"type": "limited", "allowed_hosts": ["127.0.0.1"]}, "HOST_TOKEN")
    script = python(FETCH + f"""
    print(json.dumps({{
        "host": fetch("http://127.0.0.1:{test_host.port}/echo", {{"Authorization": os.environ.get("HOST_TOKEN", "-")}}),
        "blocked": fetch("http://blocked.example/"),
        "under": fetch("http://api.blocked.example/"),
    }}))
    """)
    before = len(test_host.seen)
    _, found = await run_session(door, {"agent_id": agent.id, "vault_ids": [vault_id], "input": script,
                                        "environment": {"type": "openai_hosted", "network": {
                                            "access": "restricted", "blocked_domains": ["blocked.example"]}}})
    assert found["host"][0] == 200 and SECRET not in found["host"][1]
    assert test_host.seen[before]["Authorization"] == SECRET  # a limited credential's host that is not blocked
    assert found["blocked"] == [403, "denied_domain"] and found["under"] == [403, "denied_domain"]
    network = strict(AgentSession, found["_session"]).environment.network  # type: ignore[union-attr]
    assert network.access == "restricted" and network.allowed_domains == []
    async with door.get(f"/v1/containers/{found['_session']['environment']['id']}") as answer:
        assert (await answer.json())["network_policy"] == {"type": "allowlist"}  # no form there for a block list

    _, found = await run_session(door, {"agent_id": agent.id, "input": script, "environment": {
        "type": "openai_hosted", "network": {"access": "restricted", "blocked_domains": ["127.0.0.1"]}}})
    assert found["host"] == [403, "denied_domain"]
    _, found = await run_session(door, {"agent_id": agent.id, "input": script,
                                        "environment": {"type": "openai_hosted", "network": {"access": "enabled"}}})
    assert found["host"][0] == 200 and found["blocked"][1] != "denied_domain"  # not blocked (nor resolved)
    assert strict(AgentSession, found["_session"]).environment.network.access == "enabled"  # type: ignore[union-attr]


async def next_turn(door: aiohttp.ClientSession, session_id: str, text: str, after: str) -> list[tuple[str, Any]]:
    """Another turn of the session, its events read from ``after`` until the session is idle."""
    async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
            {"type": "agent.session.input.message",
             "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}]}) as answer:
        assert answer.status == 202, await answer.text()
    async with door.get(f"/v1/agents/sessions/{session_id}/events", headers={"Last-Event-ID": after}) as answer:
        return frames(await read_until_idle(answer))


@doors("http")
async def test_each_turn_uses_the_credential_as_it_is_now(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI,
                                                          test_host: LocalHost) -> None:
    vault_id = await vault_with(sdk, {"type": "limited", "allowed_hosts": ["127.0.0.1"]}, "ROTATED_TOKEN")
    [credential] = (await sdk.beta.agents.vaults.credentials.list(vault_id)).data
    agent = await sdk.beta.agents.create(model=MODEL)
    script = python(FETCH + f"""
    token = os.environ.get("ROTATED_TOKEN", "unset")
    print(json.dumps({{"fetch": fetch("http://127.0.0.1:{test_host.port}/echo", {{"Authorization": token}})}}))
    """)
    async with door.post("/v1/agents/sessions", json={
            "agent_id": agent.id, "vault_ids": [vault_id], "input": script, "stream": True, "environment": {
                "type": "openai_hosted", "network": {"access": "restricted", "allowed_domains": ["127.0.0.1"]}}}
            ) as answer:
        events = frames(await read_until_idle(answer))
    session_id = events[0][1]["session"]["id"]
    assert test_host.seen[-1]["Authorization"] == SECRET

    await sdk.beta.agents.vaults.credentials.update(credential.id, vault_id=vault_id, auth={  # type: ignore[arg-type]
        "type": "environment_variable", "secret_value": SECRET + "-rotated"})
    events = await next_turn(door, session_id, script, events[-1][0])
    assert test_host.seen[-1]["Authorization"] == SECRET + "-rotated"
    [output] = [event["item"]["output"] for _, event in events if event["type"] == "agent.session.turn.item.done"
                and event["item"]["type"] == "command_execution"]
    assert SECRET not in output

    await sdk.beta.agents.vaults.delete(vault_id)
    seen = len(test_host.seen)
    events = await next_turn(door, session_id, script, events[-1][0])
    assert [event["type"] for _, event in events][-2:] == ["agent.session.turn.completed", "agent.session.idle"]
    assert len(test_host.seen) == seen + 1
    assert test_host.seen[-1]["Authorization"] == "unset"  # no credential in the container any more
    await sdk.beta.agents.sessions.delete(session_id)


@pytest.mark.parametrize(("network", "networking", "param"), [
    ({"access": "enabled"}, {"type": "unrestricted"}, "vault_ids"),
    ({"access": "restricted", "blocked_domains": ["a.example"]}, {"type": "unrestricted"}, "vault_ids"),
    ({"access": "restricted", "blocked_domains": ["*.a.example"]}, None, "environment.network.blocked_domains[0]"),
    ({"access": "restricted", "blocked_domains": ["a.example"], "allowed_domains": ["b.example"]}, None,
     "environment.network.blocked_domains"),
    ({"access": "enabled", "allowed_domains": ["b.example"]}, None, "environment.network.allowed_domains"),
])
async def test_networks_and_credentials_that_do_not_fit_are_a_400(door: aiohttp.ClientSession,
                                                                  sdk: openai.AsyncOpenAI, network: dict[str, Any],
                                                                  networking: dict[str, Any] | None,
                                                                  param: str) -> None:
    agent = await sdk.beta.agents.create(model=MODEL)
    vaults = [await vault_with(sdk, networking)] if networking is not None else []
    body = {"agent_id": agent.id, "input": "hi", "vault_ids": vaults,
            "environment": {"type": "openai_hosted", "network": network}}
    async with door.get("/v1/containers?limit=100") as answer:
        before = len((await answer.json())["data"])
    async with door.post("/v1/agents/sessions", json=body) as answer:
        error = (await answer.json())["error"]
        assert answer.status == 400 and error["param"] == param, error
    async with door.get("/v1/containers?limit=100") as answer:
        assert len((await answer.json())["data"]) == before  # nothing made
