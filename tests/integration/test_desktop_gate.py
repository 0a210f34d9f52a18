"""The desktop's origin gate and sign-in, in the real sandbox with the real Chromium: loopback servers that record
every TCP connection they accept show that an origin the client has not approved is not reached until it is, that
a denied one and one the network policy refuses (even if "allowed") are never reached; a login page is reported
with its fields, the values the client submits reach the page's server, and neither the screenshot taken after the
submission nor any log line shows them."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import structlog
from PIL import Image, ImageChops

from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.desktop import (
    Desktop,
    DesktopSettings,
    Screenshot,
    SignInError,
    desktop_unavailable,
    parse_actions,
)
from responses_bridge.sandbox.doctor import check_bubblewrap
from responses_bridge.sandbox.egress.policy import EgressRules, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressSettings
from tests.integration.test_desktop import until

pytestmark = pytest.mark.store_free

WIDTH, HEIGHT = 1280, 800
HOME = """<!doctype html><html><body style="margin:0;background:#fff"><h1>home</h1></body></html>"""
LOGIN = """<!doctype html><html><body style="margin:0;background:#fff">
<form action="/login" method="post" style="position:fixed;left:0;top:20vh;width:100vw;margin:0">
<label for="u">Email</label>
<input id="u" name="username" type="email" required style="display:block;width:90vw;height:15vh;font-size:60px;
  color:#00f;font-weight:bold">
<label for="p">Password</label>
<input id="p" name="password" type="password" required style="display:block;width:90vw;height:15vh;font-size:60px">
<button>Sign in</button></form></body></html>"""
USERNAME_FIELD = (WIDTH // 2, 300)
"""On the screen: the username field fills 20-35% of the viewport's height (plus a label), below the toolbar."""
USERNAME = "alice.secret-user@example.test"
PASSWORD = "pw-Zq8-never-seen"
WELCOME = """<!doctype html><html><body style="margin:0;background:#0c0"><h1>welcome</h1></body></html>"""


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes, bytes]:
    """The next HTTP/1.1 request on ``reader``: its method, its target as sent (a proxy sends the whole URL), its
    head and its body (``Content-Length`` bytes, none without one): what the test servers here need of HTTP."""
    head = await reader.readuntil(b"\r\n\r\n")
    method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return method, target, head, await reader.readexactly(length) if length else b""


@dataclass
class Server:
    """A loopback HTTP server counting the TCP connections it accepts, keeping each request; a POST to ``/login``
    is answered only once ``release`` is set (the browser shows the submitted form until then)."""

    port: int = 0
    connections: int = 0
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                method, target, _, body = await read_request(reader)
                path = target.split("://", 1)[-1].split("/", 1)[-1]
                self.requests.append((method, "/" + path, body))
                if method == "POST":
                    await asyncio.wait_for(self.release.wait(), 30)
                page = WELCOME if method == "POST" else LOGIN if path.startswith("login") else HOME
                data = page.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(data), data))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Three servers: the desktop's first page, another origin on loopback, and one reached only by ``localhost``
    (which the policy does not allow)."""
    made, listening = [], []
    for _ in range(3):
        server = Server()
        listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        server.port = listener.sockets[0].getsockname()[1]
        made.append(server)
        listening.append(listener)
    yield made
    for server, listener in zip(made, listening, strict=True):
        server.release.set()
        listener.close()


CANNOT = check_bubblewrap()[1] or (None if CgroupParent.find() is not None else "no cgroup per call here")
needs_desktop = pytest.mark.skipif(CANNOT is not None and not os.environ.get("CI"),
                                   reason=f"no desktop here: {CANNOT}")


async def _desktop(servers: list[Server], path: str = "/", on_origin: Callable[[str], None] | None = None) -> Desktop:
    rules = EgressRules.parse(",".join(f"127.0.0.1:{server.port}" for server in servers))
    sandbox = Sandbox.detect(SandboxLimits(timeout=30.0), egress=EgressSettings(rules, EgressLimits()))
    refused = desktop_unavailable(sandbox)
    if refused is not None and not os.environ.get("CI"):
        pytest.skip(refused)
    policy = parse_policy({"type": "allowlist", "allowed_domains": ["127.0.0.1"]}, "network_policy")
    made = Desktop(sandbox, tenant="t1", network=policy, on_origin=on_origin, settings=DesktopSettings(
        width=WIDTH, height=HEIGHT, url=f"http://127.0.0.1:{servers[0].port}{path}"))
    await made.start()
    return made


@pytest.fixture
async def desktop(servers: list[Server]) -> AsyncIterator[Desktop]:
    made = await _desktop(servers)
    try:
        yield made
    finally:
        await made.stop()


async def _go(desktop: Desktop, url: str) -> Screenshot:
    """Type ``url`` into the address bar and press Enter (one batch each, as the blocked-host test of
    test_desktop.py does: the bar's suggestions settle before Enter)."""
    shot = None
    for action in ({"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": url},
                   {"type": "keypress", "keys": ["ENTER"]}):
        shot = await desktop.act(parse_actions([action], WIDTH, HEIGHT))
    assert shot is not None
    return shot


@needs_desktop
async def test_an_origin_is_not_reached_until_its_client_allows_it(servers: list[Server]) -> None:
    first, other, _ = servers
    told: list[str] = []
    desktop = await _desktop(servers, on_origin=told.append)
    try:
        assert await until(lambda: "/" in first.paths())  # the first page's origin is approved with it
        origin = f"http://127.0.0.1:{other.port}"
        shot = await _go(desktop, f"{origin}/page")
        assert shot.pending_origins == (origin,) == desktop.pending_origins()  # the action returned, the page held
        assert told == [origin]
        await desktop.screenshot()
        assert other.connections == 0
        desktop.allow_origin(origin + "/")
        assert await until(lambda: "/page" in other.paths()), other.requests  # the held request went on
        assert desktop.pending_origins() == () and told == [origin]
    finally:
        await desktop.stop()


@needs_desktop
async def test_a_denied_origin_is_never_reached(desktop: Desktop, servers: list[Server]) -> None:
    first, other, _ = servers
    origin = f"http://127.0.0.1:{other.port}"
    await _go(desktop, f"{origin}/denied")
    assert await until(lambda: desktop.pending_origins() == (origin,))
    desktop.deny_origin(origin)
    assert desktop.pending_origins() == ()
    assert (await _go(desktop, f"{origin}/again")).pending_origins == ()  # refused at once now
    await _go(desktop, f"http://127.0.0.1:{first.port}/after")
    assert await until(lambda: "/after" in first.paths()), first.requests  # the browser did navigate, after it
    assert other.connections == 0


@needs_desktop
async def test_an_origin_the_policy_refuses_is_never_reached_even_if_allowed(desktop: Desktop,
                                                                            servers: list[Server]) -> None:
    first, _, refused = servers
    origin = f"http://localhost:{refused.port}"
    desktop.allow_origin(origin)  # the client approves it; the policy (127.0.0.1 only) does not
    assert (await _go(desktop, f"{origin}/secret")).pending_origins == ()
    await _go(desktop, f"http://127.0.0.1:{first.port}/after")
    assert await until(lambda: "/after" in first.paths()), first.requests
    assert refused.connections == 0


def _blue(jpeg: bytes) -> int:
    """Pixels of the username's colour (#00f, its strokes bold) in a screenshot."""
    red, green, blue = Image.open(io.BytesIO(jpeg)).convert("RGB").split()
    found = ImageChops.multiply(ImageChops.multiply(blue.point(lambda value: 255 if value > 180 else 0),
                                                    red.point(lambda value: 255 if value < 90 else 0)),
                                green.point(lambda value: 255 if value < 90 else 0))
    return found.histogram()[255]


@needs_desktop
async def test_a_sign_in_form_is_reported_and_filled_and_its_values_go_to_the_page_only(
        servers: list[Server], caplog: pytest.LogCaptureFixture) -> None:
    first = servers[0]
    caplog.set_level(logging.DEBUG)
    desktop = await _desktop(servers, "/login")
    try:
        look = parse_actions([{"type": "screenshot"}], WIDTH, HEIGHT)
        assert await until(lambda: "/login" in first.paths())
        shot = await desktop.act(look)
        for _ in range(100):
            if shot.sign_in is not None:
                break
            shot = await desktop.act(look)
        form = shot.sign_in
        assert form is not None and desktop.sign_in == form
        await desktop.screenshot()  # a plain screenshot (a watcher's) leaves the reported form as it is
        assert desktop.sign_in == form
        assert form.request() == {
            "type": "browser_authentication", "credential_origin": f"http://127.0.0.1:{first.port}",
            "fields": [{"id": "username", "label": "Email", "required": True, "type": "email"},
                       {"id": "password", "label": "Password", "required": True, "type": "password"}],
            "options": [], "reason": form.reason}
        desktop.cancel_sign_in()  # left as it is: the same page's form is not reported again
        assert (await desktop.act(look)).sign_in is None and desktop.sign_in is None

        reloaded = await desktop.act(parse_actions([{"type": "keypress", "keys": ["F5"]}], WIDTH, HEIGHT))
        for _ in range(100):
            if reloaded.sign_in is not None:
                break
            reloaded = await desktop.act(look)
        assert reloaded.sign_in is not None  # a new document: its form is reported
        with pytest.raises(SignInError) as bad:
            await desktop.submit_sign_in({"user": USERNAME, "password": PASSWORD})
        assert bad.value.param == "fields[0].field_id" and USERNAME not in bad.value.message
        # what the model types there is drawn in blue (the control for the pixel check below)
        type_there = parse_actions([
            {"type": "click", "button": "left", "x": USERNAME_FIELD[0], "y": USERNAME_FIELD[1]},
            {"type": "type", "text": "mmmmmmmm"}], WIDTH, HEIGHT)
        typed = await desktop.act(type_there)
        for attempt in range(150):  # drawn once the browser got to it: a loaded machine may take longer than
            if _blue(typed.jpeg) > 500:  # settling, and a click that came before the reloaded page took its
                break  # events is lost (a full run's: nothing drawn in 100 looks): clicked and typed again
            typed = await desktop.act(type_there) if attempt % 50 == 49 else await desktop.screenshot()
        assert _blue(typed.jpeg) > 500

        with structlog.testing.capture_logs() as logs:
            submitted = await desktop.submit_sign_in({"username": USERNAME, "password": PASSWORD})
            assert await until(lambda: any(method == "POST" for method, _, _ in first.requests))
            # the server holds its answer: the screen still shows the form, filled, with nothing of it drawn
            assert submitted.error is None and _blue(submitted.jpeg) < 50, _blue(submitted.jpeg)
            assert submitted.sign_in is None  # the submitted document's form is not asked for again
            assert _blue((await desktop.screenshot()).jpeg) < 50
            first.release.set()
            after = await desktop.act(look)
        body = next(body for method, _, body in first.requests if method == "POST").decode()
        assert body == "username=alice.secret-user%40example.test&password=pw-Zq8-never-seen"
        assert after.sign_in is None and desktop.sign_in is None
        for secret in (USERNAME, PASSWORD, "alice.secret-user%40example.test"):
            assert secret not in repr(logs) and secret not in caplog.text
            assert secret not in repr(submitted) and secret not in repr(after)
    finally:
        await desktop.stop()
    result = desktop._run.result() if desktop._run is not None else None
    assert result is not None and USERNAME not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
