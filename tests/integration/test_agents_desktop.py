"""The agent tool ``computer_use`` on a chat backend, through the openai SDK's ``client.beta.agents``: a session whose
``openai_hosted`` environment has a desktop (``desktop.enabled``), driven by the fake model (scripted: each user
message says ``call computer [args64=…]`` with the batch of actions), on the real sandbox's desktop (Xvfb, Chromium,
xdotool in one bubblewrap call), its browser on the network only through the egress proxy and the environment's
allowlist. A loopback page (this test's aiohttp server) records what the browser did to it: a click on its button,
the text typed into its field and sent with Enter; a second server the policy does not allow records that nothing
reached it. The session's ``computer_use_call`` items carry the JPEG after each call; the model's next request
holds it as an ``image_url`` (the fake's recorded requests), only the newest three of them kept. Another tenant
cannot read or drive the session (404). One session and one desktop serve the module's main test (a desktop
starts in about a second, each model turn a few hundred milliseconds)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from PIL import Image

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.desktop.requirements import missing_packages, pillow_problem
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle
from tests.integration.test_desktop import BUTTON, FIELD, Site, _site, until
from tests.support.agent_doors import base_fixture, envoy_fixture  # noqa: F401
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.sdk import async_sdk

CANNOT = (check_bubblewrap()[1] or (None if CgroupParent.find() is not None else "no cgroup per call here")
          or (f"missing: {', '.join(missing_packages())}" if missing_packages() else None) or pillow_problem())
NEEDS_DESKTOP = pytest.mark.skipif(CANNOT is not None and not os.environ.get("CI"), reason=f"no desktop here: {CANNOT}")
pytestmark = [NEEDS_DESKTOP, pytest.mark.store_proven(
    "tests/integration/test_agents_desktop_approvals.py", "tests/integration/test_agents_restart.py",
    reason="a desktop session's items and events are stored as any session's (test_agents_restart), and a desktop "
           "session runs on PostgreSQL in test_agents_desktop_approvals (scripts/pg-coverage: no line of "
           "store/postgres that only this module covers)")]

TENANT = {"x-tenant-id": "alpha"}
ENVIRONMENT = {"type": "openai_hosted", "container_size": "small", "desktop": {"enabled": True},
               "network": {"access": "restricted", "allowed_domains": ["127.0.0.1"]}}
TOOLS = [{"type": "computer_use", "include_screenshots": True}]


@pytest.fixture(scope="module")
async def sites() -> AsyncIterator[tuple[Site, Site]]:
    """The page the environment allows (127.0.0.1), and one it does not (reached as ``localhost``)."""
    (allowed, first), (refused, second) = await _site(), await _site()
    yield allowed, refused
    await first.cleanup()
    await second.cleanup()


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory,
                  sites: tuple[Site, Site]) -> AsyncIterator[Sidecar]:
    allowed, refused = sites
    directory = tmp_path_factory.mktemp("agents-desktop")
    async with running_sidecar(str(directory), fake_upstream, extproc=False, ready_headers=TENANT,
                               log_file=Path(directory) / "sidecar.log",
                               env={"RESPONSES_BRIDGE_AUTH": "header",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS":
                                        f"127.0.0.1:{allowed.port},127.0.0.1:{refused.port}"}) as started:
        yield started


def _client(sidecar: Sidecar | str, tenant: str) -> openai.AsyncOpenAI:
    base = sidecar if isinstance(sidecar, str) else sidecar.http_url
    return async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60,
                     default_headers={"x-tenant-id": tenant})


def computer(*actions: dict[str, Any]) -> str:
    """The user message that makes the fake model call ``computer`` with ``actions``."""
    return f"call computer [args64={base64.b64encode(orjson.dumps({'actions': list(actions)})).decode()}]"


class Session:
    """One session of the test, driven turn by turn over the HTTP door (its events read as the SDK's types).
    ``approve_origins``: each origin the browser waits for is approved as it is asked (the session's
    ``computer_use_approval_request`` required actions), as a client that trusts the environment's allowlist does;
    False: a turn's events end where the session requires action."""

    def __init__(self, http: aiohttp.ClientSession, session_id: str, approve_origins: bool = True) -> None:
        self.http = http
        self.id = session_id
        self.last: str | None = None
        self.approve_origins = approve_origins
        self.computer_calls = 0  # the computer calls the fake model was told to make

    async def turn(self, text: str) -> list[dict[str, Any]]:
        """One user message; the turn's events once the session is idle again (or requires action)."""
        self.computer_calls += text.startswith("call computer ")
        await self.send({"type": "agent.session.input.message",
                         "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]})
        return await self.until_quiet()

    async def send(self, *events: dict[str, Any], status: int = 202) -> dict[str, Any] | None:
        async with self.http.post(f"/v1/agents/sessions/{self.id}/events", json={"events": list(events)}) as answer:
            assert answer.status == status, await answer.text()
            return None if status == 202 else await answer.json()

    async def until_quiet(self) -> list[dict[str, Any]]:
        """The session's events from the last read until it is idle or requires action (origins approved on the
        way when ``approve_origins``)."""
        events: list[dict[str, Any]] = []
        while True:
            found = await self.read()
            events += found
            if found[-1]["type"] != "agent.session.requires_action" or not self.approve_origins:
                return events
            asked = [action for action in found[-1]["session"]["required_actions"]
                     if action["type"] == "computer_use_approval_request"
                     and action["request"]["type"] == "browser_origin_access"]
            assert asked, found[-1]
            await self.send(*({"type": "agent.session.input.computer_use_approval_request_result",
                               "request_id": action["request_id"],
                               "response": {"type": "browser_origin_access", "decision": "approve"}}
                              for action in asked))

    async def read(self) -> list[dict[str, Any]]:
        headers = {"Last-Event-ID": self.last} if self.last else {}
        raw = b""
        async with self.http.get(f"/v1/agents/sessions/{self.id}/events", headers=headers) as answer:
            async for chunk in answer.content.iter_any():
                raw += chunk
                if raw.endswith(b"\n\n") and (b"event: agent.session.idle\n" in raw
                                               or b"event: agent.session.requires_action\n" in raw):
                    found = frames(raw)
                    if found and found[-1][1]["type"] in ("agent.session.idle", "agent.session.requires_action"):
                        break
        found = frames(raw)
        self.last = found[-1][0]
        return [event for _, event in found]


def calls_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
            and event["item"]["type"] == "computer_use_call"]


def jpeg(url: str) -> Image.Image:
    assert url.startswith("data:image/jpeg;base64,"), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "JPEG"
    image.load()
    return image


def images_in(body: dict[str, Any]) -> list[str]:
    """The image URLs of a Chat Completions request's messages."""
    return [part["image_url"]["url"] for message in body["messages"] if isinstance(message.get("content"), list)
            for part in message["content"] if part.get("type") == "image_url"]


async def _reached(session: Session, seen: Callable[[], bool]) -> bool:
    """Until the page's server saw the browser's request (bounded polling). On a loaded machine the screen may
    settle before the browser has sent it — then nobody was asked to approve its origin yet — so the model waits
    once, as a model does on a page not loaded yet (the origin asked, and approved, on the way)."""
    if await until(seen, 10):
        return True
    await session.turn(computer({"type": "wait"}))
    return await until(seen)


async def navigate(session: Session, url: str) -> list[dict[str, Any]]:
    """As a model does: the address bar focused, the address typed, then Enter, one call each (it looks between)."""
    events = []
    for action in ({"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": url},
                   {"type": "keypress", "keys": ["ENTER"]}):
        events += await session.turn(computer(action))
    return events


async def test_a_session_drives_the_browser_on_its_desktop(sidecar: Sidecar, sites: tuple[Site, Site]) -> None:
    allowed, refused = sites
    upstream = UpstreamLog(sidecar.upstream_url.removesuffix("/v1"))
    alpha, other = _client(sidecar, "alpha"), _client(sidecar, "other")
    try:
        agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
        made = await alpha.beta.agents.sessions.create(agent_id=agent.id,
                                                       environment=ENVIRONMENT)
        assert made.environment.type == "openai_hosted" and made.environment.desktop.enabled
        async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
            session = Session(http, made.id)
            await upstream.clear()
            events = await navigate(session, f"http://127.0.0.1:{allowed.port}/")
            assert await _reached(session, lambda: "/" in allowed.seen), allowed.seen  # through the egress proxy
            started = [event["item"] for event in events if event["type"] == "agent.session.turn.item.added"
                       and event["item"]["type"] == "computer_use_call"]
            assert [item["status"] for item in started] == ["in_progress"] * 3
            done = calls_of(events)
            assert [item["status"] for item in done] == ["completed"] * 3 and done[0]["id"] == started[0]["id"]
            assert done[0]["title"] == "keypress CTRL+L" and done[1]["title"].startswith("type 'http://127.0.0.1")
            assert jpeg(done[-1]["output"]["image_url"]).size == (1280, 800)
            # the model was offered one function, computer, whose actions are the GA computer actions
            requests = [entry["body"] for entry in await upstream.entries()]
            [function] = [tool["function"] for tool in requests[0]["tools"] if tool["function"]["name"] == "computer"]
            assert list(function["parameters"]["properties"]) == function["parameters"]["required"] == ["actions"]
            assert function["parameters"]["properties"]["actions"]["items"]["properties"]["type"]["enum"] == [
                "click", "double_click", "drag", "keypress", "move", "screenshot", "scroll", "type", "wait"]
            assert "1280x800" in requests[0]["messages"][0]["content"]
            # the screenshot after a call reached the model as an image, right after the call's tool message
            answered = requests[1]["messages"]
            assert answered[-2]["role"] == "tool" and answered[-1]["role"] == "user"
            assert answered[-1]["content"][1]["image_url"]["url"] == done[0]["output"]["image_url"]

            await session.turn(computer({"type": "wait"}))  # the page drawn before the model clicks it
            clicked = await session.turn(computer({"type": "click", "button": "left", "x": BUTTON[0],
                                                   "y": BUTTON[1]}))
            assert await until(lambda: "/clicked" in allowed.seen), allowed.seen
            assert calls_of(clicked)[0]["title"] == f"click ({BUTTON[0]}, {BUTTON[1]})"
            await session.turn(computer({"type": "click", "button": "left", "x": FIELD[0], "y": FIELD[1]},
                                        {"type": "type", "text": "hello desktop"},
                                        {"type": "keypress", "keys": ["ENTER"]}))
            assert await until(lambda: "/submit?text=hello+desktop" in allowed.seen), allowed.seen

            # only the newest three screenshots are sent; each older one is a one-line note
            last = await upstream.last_body()
            assert len(images_in(last)) == 3
            notes = [message["content"] for message in last["messages"] if message["role"] == "user"
                     and isinstance(message["content"], str) and "is left out" in message["content"]]
            assert len(notes) == session.computer_calls - 3  # six calls so far (seven if the model waited)

            # a bad action list is told to the model, which may try again; nothing crashed
            bad = await session.turn(computer({"type": "click", "button": "left", "x": 5000, "y": 1}))
            [failed] = calls_of(bad)
            assert failed["status"] == "failed" and failed["output"] is not None  # the screen as it was
            told = (await upstream.last_body())["messages"][-1]
            assert "Invalid actions" in told["content"] and "actions[0].x" in told["content"], told
            assert bad[-2]["type"] == "agent.session.turn.completed"

            # a host the environment's network does not allow is never reached from the browser
            await navigate(session, f"http://localhost:{refused.port}/secret")
            await navigate(session, f"http://127.0.0.1:{allowed.port}/after")
            assert await until(lambda: "/after" in allowed.seen), allowed.seen  # it did navigate, after it
            assert refused.seen == []

            # the session's items: every call with its screenshot
            items = [item async for item in alpha.beta.agents.sessions.items.list(made.id)]
            kept = [item for item in items if item.type == "computer_use_call"]
            assert len(kept) == session.computer_calls and all(jpeg(item.output.image_url) for item in kept)

            # its desktop watched live: the link on the session's retrieve, the page, its first frame the screen
            await _watched(sidecar, (await alpha.beta.agents.sessions.retrieve(made.id)).model_extra or {})

            # another tenant can neither read nor drive it
            theirs = other.beta.agents.sessions
            drive = [{"type": "agent.session.input.message", "input": [
                {"role": "user", "content": [{"type": "input_text", "text": computer({"type": "screenshot"})}]}]}]
            for call in (lambda: theirs.retrieve(made.id), lambda: theirs.items.list(made.id),
                         lambda: theirs.events.create(made.id, events=drive)):
                with pytest.raises(openai.NotFoundError):
                    await call()

            # the session deleted: its desktop stops with it
            browsers = _browsers(sidecar)
            assert browsers
            await alpha.beta.agents.sessions.delete(made.id)
            assert await until(lambda: not _browsers(sidecar)), _browsers(sidecar)
    finally:
        await alpha.close()
        await other.close()


@pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
async def _watched(sidecar: Sidecar, session: dict[str, Any]) -> None:
    """The session's live view (docs/agents.md, Watching a desktop) shows its running desktop: the page opened by
    the link's token, its image the frames the view token opens, the first a JPEG of the desktop's size."""
    link = session["desktop_live_url"]
    assert link.startswith(sidecar.http_url)
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as answer:
            assert answer.status == 200, await answer.text()
            page = await answer.text()
        frames_at = page.split('src="', 1)[1].split('"', 1)[0]
        assert frames_at.startswith("frames?token=")
        async with http.get(link.split("live?", 1)[0] + frames_at.replace("&amp;", "&")) as answer:
            assert answer.status == 200 and answer.content_type == "multipart/x-mixed-replace"
            seen = b""
            while b"\xff\xd9" not in seen.partition(b"\r\n\r\n")[2]:  # the first part: to its JPEG's end marker
                piece = await asyncio.wait_for(answer.content.readany(), 30)
                assert piece, seen[:200]
                seen += piece
    head, _, rest = seen.partition(b"\r\n\r\n")
    assert b"image/jpeg" in head, head
    assert Image.open(io.BytesIO(rest[:rest.index(b"\xff\xd9") + 2])).size == (1280, 800)


async def test_computer_use_needs_a_desktop_in_the_environment_through_both_doors(base: str) -> None:
    """The refusals' status and shape, and a session with a desktop whose computer call's item and screenshot come
    through the door's event stream (Envoy passes the stream on as it is written), read with the SDK's types."""
    alpha = _client(base, "alpha")
    try:
        agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
        for environment in ({"type": "none"}, {**ENVIRONMENT, "desktop": {"enabled": False}}):
            with pytest.raises(openai.BadRequestError) as refused:
                await alpha.beta.agents.sessions.create(agent_id=agent.id,
                                                        environment=environment)
            assert "needs a desktop" in refused.value.message and refused.value.param == "agent.tools[0].type"
            assert refused.value.code == "invalid_value"
        made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment=ENVIRONMENT)
        assert made.status == "idle"  # with one: served, the desktop not started before the first call
        await alpha.beta.agents.sessions.delete(made.id)
        template = await alpha.beta.agents.environments.templates.create(
            desktop={"enabled": True}, network=ENVIRONMENT["network"])
        assert template.desktop.enabled
        made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment={  # a template's desktop
            "type": "openai_hosted", "environment_template_id": template.id})
        assert made.environment.desktop.enabled
        async with aiohttp.ClientSession(base, headers={**BETA, **TENANT}) as http:
            events = await Session(http, made.id).turn(computer({"type": "screenshot"}))
        [call] = calls_of(events)
        assert call["status"] == "completed" and jpeg(call["output"]["image_url"]).size == (1280, 800)
        await alpha.beta.agents.sessions.delete(made.id)
    finally:
        await alpha.close()


def _browsers(sidecar: Sidecar) -> list[int]:
    """The Chromium processes under the sidecar's process (its desktops' browsers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, waiting = [], [sidecar.process.pid]
    while waiting:
        pid = waiting.pop()
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "chromium":
                    found.append(pid)
        except OSError:
            pass
        waiting += children.get(pid, [])
    return found


async def _session_mid_call(http: aiohttp.ClientSession, *actions: dict[str, Any]) -> str:
    """A new session whose first turn's computer call performs ``actions``: its id, once the desktop performs
    them (the call's item is out)."""
    async with http.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": TOOLS}, "environment": ENVIRONMENT, "stream": True,
            "input": computer(*actions)}) as answer:
        assert answer.status == 200
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b'"computer_use_call"' in raw:
                break
    return str(frames(raw.rsplit(b"\n\n", 1)[0] + b"\n\n")[0][1]["session"]["id"])


async def _until_idle(http: aiohttp.ClientSession, session_id: str) -> None:
    """Until the session is idle (bounded polling: its resumed turn ended)."""
    for _ in range(600):
        async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
            if (await answer.json())["status"] == "idle":
                return
        await asyncio.sleep(0.05)


async def test_a_turn_stopped_during_its_actions_fails_saying_why_and_the_next_gets_a_fresh_desktop(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The server is killed while the desktop performs the model's actions: the desktop goes with it (a process of
    the server), so the restarted server (or, sharing PostgreSQL, the replica taking the session over) ends that
    turn ``failed``, saying why, instead of claiming it done or acting again blind; the session's next computer
    call starts a fresh desktop, and the model is told so."""
    directory = str(tmp_path_factory.mktemp("agents-desktop-restart"))
    db = ["--db", os.path.join(directory, "bridge.db")]
    env = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2"}
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as first:
        async with aiohttp.ClientSession(first.http_url, headers=BETA) as http:
            session_id = await _session_mid_call(http, {"type": "screenshot"}, *[{"type": "wait"}] * 20)
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.process.wait()  # type: ignore[union-attr]
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as second:
        async with aiohttp.ClientSession(second.http_url, headers=BETA) as http:
            session = Session(http, session_id)
            await _until_idle(http, session_id)
            async with http.get(f"/v1/agents/sessions/{session_id}/turns") as answer:
                [turn] = (await answer.json())["data"]
            assert turn["status"] == "failed" and "performed the model's computer actions" in turn["error"]["message"]
            async with http.get(f"/v1/agents/sessions/{session_id}/items") as answer:
                [stopped] = [item for item in (await answer.json())["data"] if item["type"] == "computer_use_call"]
            assert stopped["status"] == "failed" and stopped["title"].startswith("screenshot; wait; wait")
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as answer:  # up to the idle now
                session.last = frames(await read_until_idle(answer))[-1][0]
            await upstream.clear()
            events = await session.turn(computer({"type": "screenshot"}))
            [call] = calls_of(events)
            assert call["status"] == "completed" and jpeg(call["output"]["image_url"]).size == (1280, 800)
            told = (await upstream.last_body())["messages"][-1]["content"]
            assert "fresh desktop" in told and "restarted" in told, told
            async with http.delete(f"/v1/agents/sessions/{session_id}") as answer:
                assert answer.status == 200


async def test_a_model_that_reads_no_images_is_refused_at_the_turns_start(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``RESPONSES_BRIDGE_IMAGES=false`` (a text-only model): the turn fails at its start with the switch named,
    and no desktop is started or driven blind."""
    directory = str(tmp_path_factory.mktemp("agents-desktop-blind"))
    images_off = {"RESPONSES_BRIDGE_IMAGES": "false"}
    async with running_sidecar(directory, fake_upstream, extproc=False, env=images_off) as blind, \
            aiohttp.ClientSession(blind.http_url, headers=BETA) as http:
        async with http.post("/v1/agents/sessions", json={
                "agent": {"model": MODEL, "tools": TOOLS}, "environment": ENVIRONMENT, "stream": True,
                "input": computer({"type": "screenshot"})}) as answer:
            assert answer.status == 200
            events = [event for _, event in frames(await read_until_idle(answer))]
        [failed] = [event for event in events if event["type"] == "agent.session.turn.failed"]
        assert "'images'" in failed["turn"]["error"]["message"], failed
        assert calls_of(events) == [] and not _browsers(blind)


async def test_desktop_enabled_where_no_desktop_can_run_is_a_400_naming_why(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The sandbox in its single-process mode (``RESPONSES_BRIDGE_CODE_CGROUP=false``) runs no desktop: a session's
    and a standalone environment's ``desktop.enabled`` is a 400 saying what is missing (as for a missing Debian
    package: sandbox/desktop/requirements.py), before any container is made."""
    directory = str(tmp_path_factory.mktemp("agents-desktop-none"))
    async with running_sidecar(directory, fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_CODE_CGROUP": "false"}) as plain, \
            aiohttp.ClientSession(plain.http_url, headers=BETA) as http:
        for path, body in (("/v1/agents/sessions", {"agent": {"model": MODEL, "tools": TOOLS},
                                                    "environment": ENVIRONMENT}),
                           ("/v1/agents/environments", {"environment": ENVIRONMENT})):
            async with http.post(path, json=body) as answer:
                error = (await answer.json())["error"]
                assert answer.status == 400 and error["param"] == "environment.desktop.enabled", error
                assert "cgroup mode" in error["message"] and set(error) == {"message", "type", "param", "code"}
        async with http.get("/v1/containers") as answer:
            assert (await answer.json())["data"] == []


async def test_a_standalone_environment_without_a_desktop_gives_none(sidecar: Sidecar) -> None:
    """A session taking an existing environment (``environment_id``) has that environment's desktop: without one,
    a computer call fails and the model is told why; no desktop is started."""
    upstream = UpstreamLog(sidecar.upstream_url.removesuffix("/v1"))
    alpha = _client(sidecar, "alpha")
    try:
        environment = await alpha.beta.agents.environments.create(
            environment={**ENVIRONMENT, "desktop": {"enabled": False}})
        agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
        made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment={
            "type": "openai_hosted", "environment_id": environment.id})
        async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
            events = await Session(http, made.id).turn(computer({"type": "screenshot"}))
        [call] = calls_of(events)
        assert call["status"] == "failed" and call["output"] is None and not _browsers(sidecar)
        told = (await upstream.last_body())["messages"][-1]["content"]
        assert "has no desktop" in told, told
        await alpha.beta.agents.sessions.delete(made.id)
    finally:
        await alpha.close()


async def test_a_drain_during_a_computer_call_hands_the_turn_on_after_it(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGTERM while the desktop performs the model's actions: the drain lets the call finish, its answer (the
    screenshot) is stored as the next step's input, and the restarted server resumes the turn from it: the model
    gets the screenshot, the turn completes, the call told once."""
    directory = str(tmp_path_factory.mktemp("agents-desktop-drain"))
    db = ["--db", os.path.join(directory, "bridge.db")]
    env = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2"}
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as first:
        async with aiohttp.ClientSession(first.http_url, headers=BETA) as http:
            session_id = await _session_mid_call(http, *[{"type": "wait"}] * 3)
            # SIGTERM to the sidecar alone, as Kubernetes sends it (its process group's signal also reached the
            # desktop's bubblewrap while it was being made, on a loaded host: the call failed, not drained)
            assert first.process.pid is not None and first.process.process is not None
            os.kill(first.process.pid, signal.SIGTERM)
            assert await asyncio.to_thread(first.process.process.wait, 20.0) == 0
    await upstream.clear()
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as second:
        async with aiohttp.ClientSession(second.http_url, headers=BETA) as http:
            await _until_idle(http, session_id)
            async with http.get(f"/v1/agents/sessions/{session_id}/turns") as answer:
                [turn] = (await answer.json())["data"]
            assert turn["status"] == "completed", turn
            async with http.get(f"/v1/agents/sessions/{session_id}/items") as answer:
                [call] = [item for item in (await answer.json())["data"] if item["type"] == "computer_use_call"]
            assert call["status"] == "completed" and jpeg(call["output"]["image_url"]).size == (1280, 800)
            resumed = (await upstream.entries())[0]["body"]["messages"]  # the model got the call's screenshot
            assert images_in({"messages": resumed}) == [call["output"]["image_url"]]
            async with http.delete(f"/v1/agents/sessions/{session_id}") as answer:
                assert answer.status == 200
