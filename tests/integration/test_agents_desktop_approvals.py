"""The desktop's approvals through the openai SDK's ``client.beta.agents``: the real sandbox's desktop (Xvfb,
Chromium, its egress proxy), the fake model scripted call by call, loopback servers that count every TCP connection
they accept. An origin the browser has not been allowed is held: the session ``requires_action`` with a
``computer_use_approval_request`` (``browser_origin_access``) and its server sees no connection; approved, the page
loads and the turn completes; denied, another origin is never reached. A login page is a ``browser_authentication``
request (its fields, a session item too); the client's submitted password reaches the page's server and nowhere
else — not the database file nor its WAL (on PostgreSQL: the database's rows), the sidecar's log, the session's
event stream or any request the model received. Bad answers are 400s naming the field, never echoing a value;
another tenant's answer is a 404. One session and one desktop serve the module."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.integration.test_agents_api import BETA, MODEL
from tests.integration.test_agents_desktop import CANNOT, ENVIRONMENT, TOOLS, Session, _client, computer, until
from tests.integration.test_desktop_gate import PASSWORD, USERNAME, Server
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.postgres import database_name, shared_server, store_from_env

pytestmark = [pytest.mark.skipif(CANNOT is not None and not os.environ.get("CI"), reason=f"no desktop here: {CANNOT}")]

TENANT = {"x-tenant-id": "alpha"}
RESULT = "agent.session.input.computer_use_approval_request_result"


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[list[Server]]:
    """Two loopback origins the environment's network allows: one the client approves (with a login page at
    ``/login``), one it denies."""
    made, listening = [], []
    for _ in range(2):
        server = Server()
        server.release.set()  # a login's POST is answered at once
        listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        server.port = listener.sockets[0].getsockname()[1]
        made.append(server)
        listening.append(listener)
    yield made
    for listener in listening:
        listener.close()


@asynccontextmanager
async def desktop_sidecar(fake_upstream: str, directory: Path, ports: Iterable[int]) -> AsyncIterator[Sidecar]:
    """A sidecar of header tenants on ``directory`` (its SQLite file, its log) whose sandbox may reach the loopback
    ``ports``: the desktop tests' sites."""
    targets = ",".join(f"127.0.0.1:{port}" for port in ports)
    async with running_sidecar(str(directory), fake_upstream, "--db", str(directory / "bridge.db"), extproc=False,
                               ready_headers=TENANT, log_file=directory / "sidecar.log",
                               env={"RESPONSES_BRIDGE_AUTH": "header",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": targets}) as started:
        yield started


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory,
                  servers: list[Server]) -> AsyncIterator[tuple[Sidecar, Path]]:
    directory = tmp_path_factory.mktemp("agents-desktop-approvals")
    async with desktop_sidecar(fake_upstream, directory, (server.port for server in servers)) as started:
        yield started, directory


async def navigate(session: Session, url: str, *, asks: bool = True) -> list[dict[str, Any]]:
    """The address bar focused and the address typed (one call), then Enter (another): the events of the last.
    ``asks``: the browser's request is to be held for the client — on a loaded machine the screen may settle
    before the browser has sent it (nothing drawn yet), so the model waits (a ``wait`` call, as a model does on a
    page not loaded yet) until the session asks, a few times at most; and where it still was not asked (the
    address did not go where it was typed: a loaded run's address bar took the keys as it changed), the model
    types it again, once, as a model does when the screen shows it went wrong."""
    for _ in range(2):
        await session.turn(computer({"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": url}))
        events = await session.turn(computer({"type": "keypress", "keys": ["ENTER"]}))
        if not asks:
            return events
        events = await until_asked(session, events)
        if events[-1]["type"] == "agent.session.requires_action":
            return events
    return events


async def until_asked(session: Session, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events``, or, where the turn ended before the browser had sent the request its client must approve (the
    screen settled first on a loaded machine), the events of the ``wait`` calls the model makes until it is."""
    for _ in range(5):
        if events[-1]["type"] == "agent.session.requires_action":
            break
        events = await session.turn(computer({"type": "wait"}))
    return events


def asked(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's computer-use approval requests as the turn's last event (``requires_action``) lists them."""
    assert events[-1]["type"] == "agent.session.requires_action", [event["type"] for event in events]
    return [action for action in events[-1]["session"]["required_actions"]
            if action["type"] == "computer_use_approval_request"]


def answer(request_id: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"type": RESULT, "request_id": request_id, "response": response}


async def refused(session: Session, event: dict[str, Any], param: str) -> str:
    """The event's 400 names ``param``; its message."""
    body = await session.send(event, status=400)
    assert body is not None
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    return str(error["message"])


def told_model(body: dict[str, Any]) -> str:
    """The text of the user messages the model was sent last (what the bridge told it after a call)."""
    return " ".join(message["content"] for message in body["messages"]
                    if message["role"] == "user" and isinstance(message["content"], str))


async def test_origins_and_a_sign_in_are_asked_of_the_client(sidecar: tuple[Sidecar, Path],
                                                             servers: list[Server]) -> None:
    started, directory = sidecar
    approved, denied = servers
    upstream = UpstreamLog(started.upstream_url.removesuffix("/v1"))
    alpha, other = _client(started, "alpha"), _client(started, "other")
    try:
        agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
        made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment=ENVIRONMENT)
        async with aiohttp.ClientSession(started.http_url, headers={**BETA, **TENANT}) as http:
            session = Session(http, made.id, approve_origins=False)
            origin = f"http://127.0.0.1:{approved.port}"

            # an origin not approved: held, asked, its server never connected to meanwhile
            [request] = asked(await navigate(session, f"{origin}/"))
            assert request["request"] == {"type": "browser_origin_access", "origin": origin,
                                          "reason": request["request"]["reason"]}
            assert approved.connections == 0
            shown = await alpha.beta.agents.sessions.retrieve(made.id)
            assert shown.status == "requires_action"
            assert [action.request_id for action in shown.required_actions] == [request["request_id"]]

            # bad answers: a 400 naming the field; another tenant's: a 404
            wrong_kind = answer(request["request_id"], {"type": "browser_authentication", "action": "cancel"})
            await refused(session, wrong_kind, "events[0].response.type")
            await refused(session, answer(request["request_id"], {"type": "browser_origin_access",
                                                                   "decision": "maybe"}),
                          "events[0].response.decision")
            await refused(session, answer("cuareq_unknown", {"type": "browser_origin_access",
                                                              "decision": "approve"}), "request_id")
            with pytest.raises(openai.NotFoundError):
                await other.beta.agents.sessions.events.create(made.id, events=[answer(  # type: ignore[list-item]
                    request["request_id"], {"type": "browser_origin_access", "decision": "approve"})])
            assert approved.connections == 0

            # approved: the held request goes on, the page loads, the turn completes; the model is told
            await upstream.clear()
            await alpha.beta.agents.sessions.events.create(made.id, events=[answer(  # type: ignore[list-item]
                request["request_id"], {"type": "browser_origin_access", "decision": "approve"})])
            events = await session.until_quiet()
            assert events[-2]["type"] == "agent.session.turn.completed", [event["type"] for event in events]
            assert approved.paths()[0] == "/"
            said = told_model(await upstream.last_body())
            assert f"approved the browser's access to {origin}" in said, said

            # another origin, denied: never reached; the model is told
            other_origin = f"http://127.0.0.1:{denied.port}"
            [request] = asked(await navigate(session, f"{other_origin}/"))
            assert request["request"]["origin"] == other_origin
            await session.send(answer(request["request_id"], {"type": "browser_origin_access", "decision": "deny"}))
            events = await session.until_quiet()
            assert events[-2]["type"] == "agent.session.turn.completed"
            assert "denied the browser's access" in told_model(await upstream.last_body())
            await session.turn(computer({"type": "keypress", "keys": ["F5"]}))  # asked again: still refused
            assert denied.connections == 0

            # a login page on the approved origin: a browser_authentication request, and a session item
            events = await navigate(session, f"{origin}/login")
            [request] = asked(events)
            form = request["request"]
            assert form["type"] == "browser_authentication" and form["credential_origin"] == origin
            assert [(field["id"], field["type"], field["required"]) for field in form["fields"]] == [
                ("username", "email", True), ("password", "password", True)]
            [item] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.added"
                      and event["item"]["type"] == "computer_use_approval_request"]
            assert item["request_id"] == request["request_id"] and item["request"] == form

            # values that do not fit the form: 400s naming the field, never quoting the value
            message = await refused(session, answer(request["request_id"], {
                "type": "browser_authentication", "action": "submit",
                "fields": [{"field_id": "nope", "value": PASSWORD}]}), "events[0].response.fields[0].field_id")
            assert PASSWORD not in message
            await refused(session, answer(request["request_id"], {
                "type": "browser_authentication", "action": "submit",
                "fields": [{"field_id": "password", "value": PASSWORD}]}), "events[0].response.fields")
            await refused(session, answer(request["request_id"], {
                "type": "browser_authentication", "action": "submit",
                "fields": [{"field_id": "password", "value": 7}]}), "events[0].response.fields[0].value")

            # submitted (with an idempotency key, whose digest is stored): the page's server receives the values
            submit = answer(request["request_id"], {
                "type": "browser_authentication", "action": "submit",
                "fields": [{"field_id": "username", "value": USERNAME}, {"field_id": "password", "value": PASSWORD}]})
            async with http.post(f"/v1/agents/sessions/{made.id}/events", json={"events": [submit]},
                                 headers={"Idempotency-Key": "sign-in-1"}) as posted:
                assert posted.status == 202, await posted.text()
            events = await session.until_quiet()
            assert events[-2]["type"] == "agent.session.turn.completed", [event["type"] for event in events]
            assert await until(lambda: any(method == "POST" for method, _, _ in approved.requests))
            [(_, path, body)] = [one for one in approved.requests if one[0] == "POST"]
            assert path == "/login" and PASSWORD.encode() in body
            [result] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.added"
                        and event["item"]["type"] == "computer_use_approval_request_result"]
            assert result["response"] == {"type": "browser_authentication", "action": "submit",
                                          "selected_option": None}
            said = told_model(await upstream.last_body())
            assert "signed in on the page's form" in said, said

            # the form again, cancelled: left as it was, the model told; not asked again for that page
            [request] = asked(await navigate(session, f"{origin}/login"))
            await session.send(answer(request["request_id"], {"type": "browser_authentication", "action": "cancel"}))
            events = await session.until_quiet()
            assert events[-2]["type"] == "agent.session.turn.completed"
            [result] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.added"
                        and event["item"]["type"] == "computer_use_approval_request_result"]
            assert result["response"] == {"type": "browser_authentication", "action": "cancel"}
            assert "cancelled the sign-in" in told_model(await upstream.last_body())
            events = await session.turn(computer({"type": "screenshot"}))
            assert events[-1]["type"] == "agent.session.idle"
            assert [method for method, _, _ in approved.requests].count("POST") == 1

            # the values are nowhere else: the session's whole stream, the model's requests, the log, the store
            whole = Session(http, made.id, approve_origins=False)
            stream = orjson.dumps(await whole.read())
            requests = orjson.dumps(await upstream.entries())
            log = (directory / "sidecar.log").read_bytes()
            assert log, "the sidecar logged nothing"
            stored = _stored(directory)
            for secret in (PASSWORD, USERNAME):
                for where, seen in (("stream", stream), ("model", requests), ("log", log), ("store", stored)):
                    assert secret.encode() not in seen, f"{secret!r} found in the {where}"
            assert b"browser_authentication" in stored  # the store read is the session's (not an empty one)
            await alpha.beta.agents.sessions.delete(made.id)
    finally:
        await alpha.close()
        await other.close()


def _stored(directory: Path) -> bytes:
    """Everything the sidecar's database holds: the SQLite file and its WAL, or the PostgreSQL database's rows."""
    if store_from_env() == "postgres":
        return shared_server().dump(database_name(str(directory / "bridge.db")))
    return b"".join(path.read_bytes() for path in directory.glob("bridge.db*"))


async def test_an_origin_asked_before_a_restart_is_answered_after_it(fake_upstream: str,
                                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """``kill -9`` while the session requires action for an origin: the restarted server (on PostgreSQL, once the
    dead one's lease lapsed) has the same request; the client's approval completes the turn once, the model told
    the desktop is fresh (the held request went with the old one) and what was approved; the fresh desktop has the
    origin approved: the model's next navigation reaches it without asking again."""
    site = Server()
    listener = await asyncio.start_server(site.serve, "127.0.0.1", 0)
    site.port = listener.sockets[0].getsockname()[1]
    origin = f"http://127.0.0.1:{site.port}"
    directory = tmp_path_factory.mktemp("agents-desktop-approvals-restart")
    db = ["--db", str(directory / "bridge.db")]
    env = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2",
           "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{site.port}"}
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    go = computer({"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": f"{origin}/"},
                  {"type": "keypress", "keys": ["ENTER"]})
    try:
        async with running_sidecar(str(directory), fake_upstream, *db, extproc=False, env=env) as first:
            async with aiohttp.ClientSession(first.http_url, headers=BETA) as http:
                async with http.post("/v1/agents/sessions", json={
                        "agent": {"model": MODEL, "tools": TOOLS}, "environment": ENVIRONMENT, "input": go}) as made:
                    assert made.status == 200, await made.text()
                    session = Session(http, (await made.json())["id"], approve_origins=False)
                [request] = asked(await until_asked(session, await session.until_quiet()))
                os.killpg(first.process.pid, signal.SIGKILL)
                first.process.process.wait()  # type: ignore[union-attr]
        assert site.connections == 0
        async with running_sidecar(str(directory), fake_upstream, *db, extproc=False, env=env) as second:
            async with aiohttp.ClientSession(second.http_url, headers=BETA) as http:
                again = Session(http, session.id, approve_origins=False)
                again.last = session.last
                async with http.get(f"/v1/agents/sessions/{session.id}") as answer:
                    back = await answer.json()
                assert back["status"] == "requires_action" and back["required_actions"][0] == request, back
                await upstream.clear()
                approve = answer_of(request, "approve")
                for _ in range(150):  # a 409 session_busy until the dead server's lease lapsed (PostgreSQL)
                    async with http.post(f"/v1/agents/sessions/{session.id}/events", json={"events": [approve]}) \
                            as posted:
                        if posted.status == 202:
                            break
                        assert posted.status == 409, await posted.text()
                    await asyncio.sleep(0.2)
                events = await again.until_quiet()
                kinds = [event["type"] for event in events]
                assert kinds.count("agent.session.turn.completed") == 1 and kinds[-1] == "agent.session.idle", kinds
                said = told_model(await upstream.last_body())
                assert "fresh desktop" in said and f"approved the browser's access to {origin}" in said, said
                events = await again.turn(go)  # not asked again: the session's fresh desktop has it approved
                assert events[-1]["type"] == "agent.session.idle"
                assert await until(lambda: "/" in site.paths()), site.paths()
                async with http.delete(f"/v1/agents/sessions/{session.id}") as answer:
                    assert answer.status == 200
    finally:
        listener.close()


def answer_of(request: dict[str, Any], decision: str) -> dict[str, Any]:
    return answer(request["request_id"], {"type": "browser_origin_access", "decision": decision})
