"""Watching a session's desktop live: a real sidecar's HTTP door (keys mode: two tenants with their own keys) with
a registry of desktops behind it, a real headless Chromium (the system's, through Playwright) opening the link a
session's retrieve gives, the real desktop (Xvfb and Chromium in the sandbox, as tests/integration/test_desktop.py
starts it) changing after an action, the openai SDK reading the link, and the ``desktop-url`` command printing it.

Where no desktop can run here (test_desktop.py's reasons), the browser test is skipped; the rest runs on a fake
desktop whose screen the test sets (the door and the feed are the subject there, not the desktop)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import openai
import pytest
from aiohttp import web
from PIL import Image
from pydantic import SecretStr

from responses_bridge.adapters.http.desktop_watch_tokens import WatchTokens
from responses_bridge.adapters.http.server import HttpDoor, start_http_server
from responses_bridge.config.settings import Settings
from responses_bridge.demo.procs import free_port
from responses_bridge.runtime import Runtime
from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.desktop import Desktop, DesktopSettings, desktop_unavailable, parse_actions
from responses_bridge.sandbox.doctor import check_bubblewrap
from responses_bridge.sandbox.egress.policy import EgressRules, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressSettings
from responses_bridge.serve import open_runtime
from responses_bridge.services.agents.desktop_watch.registry import Watchable
from tests.support.bridge import create_keys
from tests.support.cli import cli
from tests.support.postgres import sidecar_env
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_desktop_approvals.py", "tests/integration/test_agents_restart.py",
    reason="what it reads of the store is a session's retrieve and items, which those run on PostgreSQL "
           "(scripts/pg-coverage: no line of store/postgres that only this module covers)")
MODEL = "fake-model"
BETA = {"OpenAI-Beta": "agents=v1"}
ALPHA, OTHER = "alpha", "other"
WIDTH, HEIGHT = 640, 400
CHROMIUM = "/usr/bin/chromium"


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=80)
    return out.getvalue()


@dataclass(frozen=True)
class Shot:
    jpeg: bytes


@dataclass
class FakeDesktop:
    """A desktop whose screen the test sets; counts the screenshots taken of it."""

    screen: bytes = field(default_factory=lambda: jpeg((255, 255, 255)))
    width: int = WIDTH
    height: int = HEIGHT
    taken: int = 0
    stopped: bool = False

    async def screenshot(self) -> Shot:
        if self.stopped:
            raise RuntimeError("the desktop is not running")
        self.taken += 1
        return Shot(self.screen)


class Registry:
    """The sessions' desktops by tenant, as whatever runs them answers the door."""

    def __init__(self) -> None:
        self.desktops: dict[tuple[str, str], Watchable] = {}

    async def desktop_for(self, tenant: str, session_id: str) -> Watchable | None:
        return self.desktops.get((tenant, session_id))


@dataclass
class Door:
    url: str
    keys: dict[str, str]
    registry: Registry
    runtime: Runtime
    tmp: Path
    http: HttpDoor

    def sdk(self, tenant: str) -> openai.AsyncOpenAI:
        return async_sdk(base_url=f"{self.url}/v1", api_key=self.keys[tenant], max_retries=0, timeout=60)

    def auth(self, tenant: str) -> dict[str, str]:
        return {**BETA, "Authorization": f"Bearer {self.keys[tenant]}"}


@asynccontextmanager
async def serving(upstream: str, tmp: Path) -> AsyncIterator[Door]:
    """The sidecar's HTTP door in this process (its registry of desktops is the test's), on the run's store."""
    db = str(tmp / "bridge.db")
    keys = create_keys(db, [ALPHA, OTHER])
    database = sidecar_env(db).get("RESPONSES_BRIDGE_DATABASE_URL")
    settings = Settings(upstream=upstream, db=db, auth="keys", desktop_watchers_per_session=2, drain_timeout=60.0,
                        database_url=SecretStr(database) if database else None)
    runtime = await open_runtime(settings)
    registry = Registry()
    runtime.desktops = registry
    port = free_port()
    http = await start_http_server(runtime, "127.0.0.1", port)
    try:
        yield Door(f"http://127.0.0.1:{port}", keys, registry, runtime, tmp, http)
    finally:
        await http.close()
        await runtime.close()


@pytest.fixture(scope="module")
async def door(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Door]:
    async with serving(fake_upstream, tmp_path_factory.mktemp("desktop-watch")) as started:
        yield started


async def new_session(door: Door, tenant: str = ALPHA) -> str:
    async with door.sdk(tenant) as sdk:
        session = await sdk.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                        input="hello")
        return session.id


async def live_url(door: Door, session_id: str, tenant: str = ALPHA) -> str | None:
    """The session's ``desktop_live_url``, read by the SDK (its type still parses the session)."""
    async with door.sdk(tenant) as sdk:
        session = await sdk.beta.agents.sessions.retrieve(session_id)
    assert session.id == session_id
    found = (session.model_extra or {}).get("desktop_live_url")
    assert found is None or isinstance(found, str)
    return found


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code, body


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        body = await answer.json() if answer.content_type == "application/json" else await answer.text()
        return answer.status, body


class Parts:
    """The parts of one MJPEG stream, each checked as it comes (its boundary, its headers, its JPEG ending at the
    next boundary), read by a task of its own so that a test may stop waiting for one."""

    def __init__(self, answer: aiohttp.ClientResponse) -> None:
        assert answer.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        self.task = asyncio.ensure_future(self._read(answer.content))

    async def _read(self, content: aiohttp.StreamReader) -> None:
        buffer = b""
        try:
            async for chunk in content.iter_any():
                buffer += chunk
                while True:
                    head_end = buffer.find(b"\r\n\r\n")
                    end = buffer.find(b"\r\n--frame", head_end + 4) if head_end >= 0 else -1
                    if end < 0 or len(buffer) < end + len(b"\r\n--frame") + 2:
                        break
                    assert buffer.startswith(b"--frame\r\n"), buffer[:40]
                    assert buffer[len(b"--frame\r\n"):head_end + 4] == b"Content-Type: image/jpeg\r\n\r\n"
                    self.queue.put_nowait(buffer[head_end + 4:end])
                    buffer = buffer[end + 2:]
                    if buffer.startswith(b"--frame--"):
                        self.closed = True
        finally:
            self.queue.put_nowait(None)  # the stream ended (or was not what it must be: the task's error says)

    async def next(self, timeout: float = 30.0) -> bytes | None:
        """The next frame; None once the stream has ended."""
        return await asyncio.wait_for(self.queue.get(), timeout)


async def test_the_link_is_on_the_session_only_while_its_desktop_runs(door: Door) -> None:
    session_id = await new_session(door)
    assert await live_url(door, session_id) is None
    desktop = FakeDesktop()
    door.registry.desktops[(ALPHA, session_id)] = desktop
    url = await live_url(door, session_id)
    assert url is not None and url.startswith(f"{door.url}/v1/agents/sessions/{session_id}/desktop/live?token=")
    assert door.keys[ALPHA] not in url
    status, page = await get(url)  # the link alone opens the page: no key
    assert status == 200 and f'width="{WIDTH}" height="{HEIGHT}"' in page and "<script" not in page
    del door.registry.desktops[(ALPHA, session_id)]
    assert await live_url(door, session_id) is None


async def test_another_tenant_a_session_without_a_desktop_and_bad_tokens_are_refused(door: Door) -> None:
    session_id = await new_session(door)
    door.registry.desktops[(ALPHA, session_id)] = FakeDesktop()
    live = f"{door.url}/v1/agents/sessions/{session_id}/desktop/live"
    status, _ = await get(live, door.auth(ALPHA))  # the tenant's key opens the page as it opens other routes
    assert status == 200
    status, body = await get(live, door.auth(OTHER))  # another tenant: as if there were no such session
    assert status == 404
    assert_error(body, "desktop_not_found")
    status, body = await get(live)  # no key, no token
    assert status == 401
    assert_error(body, "invalid_api_key")

    without = await new_session(door)  # a session with no desktop
    status, body = await get(f"{door.url}/v1/agents/sessions/{without}/desktop/live", door.auth(ALPHA))
    assert status == 404
    assert_error(body, "desktop_not_found")

    url = await live_url(door, session_id)
    assert url is not None
    token = parse_qs(urlsplit(url).query)["token"][0]
    page_of = f"{door.url}/v1/agents/sessions/{{}}/desktop/live?token={{}}"
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    expired = WatchTokens(door.runtime.sealer, -1.0).mint("page", ALPHA, session_id)
    elsewhere = WatchTokens(os_sealer(), 300.0).mint("page", ALPHA, session_id)  # another deployment's key
    for target, code in ((page_of.format(session_id, forged), "invalid_token"),
                         (page_of.format(session_id, expired), "expired_token"),
                         (page_of.format(session_id, elsewhere), "invalid_token"),
                         (page_of.format(without, token), "invalid_token"),  # another session's link
                         # the page's token does not open the frames: only the view token the page names does
                         (f"{door.url}/v1/agents/sessions/{session_id}/desktop/frames?token={token}",
                          "invalid_token")):
        status, body = await get(target)
        assert status == 401, target
        assert_error(body, code)
    status, body = await get(f"{door.url}/v1/agents/sessions/{without}/desktop/frames?token="
                             + WatchTokens(door.runtime.sealer, 300.0).mint("view", ALPHA, without))
    assert status == 404
    assert_error(body, "desktop_not_found")


def os_sealer() -> Any:
    from responses_bridge.sealing import Sealer

    return Sealer(os.urandom(32))


async def test_frames_come_only_when_the_screen_changes_and_watchers_are_bounded(door: Door) -> None:
    session_id = await new_session(door)
    desktop = FakeDesktop()
    door.registry.desktops[(ALPHA, session_id)] = desktop
    view = WatchTokens(door.runtime.sealer, 300.0).mint("view", ALPHA, session_id)
    frames = f"{door.url}/agents/sessions/{session_id}/desktop/frames?token={view}"  # without /v1 too
    async with aiohttp.ClientSession() as http:
        async with http.get(frames) as first, http.get(frames) as second:
            assert first.status == second.status == 200
            one, two = Parts(first), Parts(second)
            assert await one.next() == await two.next() == desktop.screen
            async with http.get(frames) as third:  # past the bound of 2 watchers (the fixture's setting)
                assert third.status == 429
                assert_error(await third.json(), "rate_limit_exceeded")
            looked = desktop.taken
            with pytest.raises(TimeoutError):  # an unchanged screen sends nothing, though it is looked at
                await one.next(timeout=2.5)
            assert desktop.taken > looked
            desktop.screen = jpeg((200, 0, 0))
            assert await one.next() == await two.next() == desktop.screen
            desktop.stopped = True  # the desktop stops: the streams end
            del door.registry.desktops[(ALPHA, session_id)]
            assert await one.next() == await two.next() == desktop.screen  # the last screen, again, at the end
            assert await one.next() is None and await two.next() is None and one.closed and two.closed


async def test_a_drain_ends_the_open_views_at_once_not_at_its_deadline(fake_upstream: str, tmp_path: Path) -> None:
    async with serving(fake_upstream, tmp_path) as door:  # a door of its own: this one drains
        session_id = await new_session(door)
        desktop = FakeDesktop()
        door.registry.desktops[(ALPHA, session_id)] = desktop
        view = WatchTokens(door.runtime.sealer, 300.0).mint("view", ALPHA, session_id)
        async with aiohttp.ClientSession() as http, \
                http.get(f"{door.url}/v1/agents/sessions/{session_id}/desktop/frames?token={view}") as answer:
            parts = Parts(answer)
            assert await parts.next() == desktop.screen
            draining = asyncio.ensure_future(door.http.drain())  # its deadline (the fixture's) is 60 s away
            assert await parts.next() == desktop.screen and await parts.next() is None and parts.closed
            await asyncio.wait_for(draining, 30)


async def test_a_view_follows_the_sessions_desktop_started_again(door: Door) -> None:
    """The desktop stopped (its idle timeout) and the session's next call started a new one: the open view shows
    the new one's screen, and ends when there is none."""
    session_id = await new_session(door)
    first = FakeDesktop()
    door.registry.desktops[(ALPHA, session_id)] = first
    view = WatchTokens(door.runtime.sealer, 300.0).mint("view", ALPHA, session_id)
    async with aiohttp.ClientSession() as http, \
            http.get(f"{door.url}/v1/agents/sessions/{session_id}/desktop/frames?token={view}") as answer:
        parts = Parts(answer)
        assert await parts.next() == first.screen
        second = FakeDesktop(screen=jpeg((0, 0, 200)))
        door.registry.desktops[(ALPHA, session_id)] = second
        first.stopped = True
        assert await parts.next() == second.screen
        second.stopped = True
        del door.registry.desktops[(ALPHA, session_id)]
        assert await parts.next() == second.screen and await parts.next() is None and parts.closed


LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}


async def test_the_calls_beside_the_desktop_are_the_sessions_and_refresh_with_a_new_view_token(door: Door) -> None:
    async with door.sdk(ALPHA) as sdk:
        session = await sdk.beta.agents.sessions.create(agent={"model": MODEL, "tools": [LOOKUP]},
                                                        environment={"type": "none"},
                                                        input='call lookup [args={"word": "wren<b>"}]')
        for _ in range(300):  # the model's call, waiting for the client's result
            if (await sdk.beta.agents.sessions.retrieve(session.id)).status == "requires_action":
                break
            await asyncio.sleep(0.1)
    door.registry.desktops[(ALPHA, session.id)] = FakeDesktop()
    view = WatchTokens(door.runtime.sealer, 300.0).mint("view", ALPHA, session.id)
    status, page = await get(f"{door.url}/v1/agents/sessions/{session.id}/desktop/calls?token={view}")
    assert status == 200
    assert '<b>function_call</b> lookup <span class="status">' in page and "wren&lt;b&gt;" in page
    assert "<script" not in page and "wren<b>" not in page  # the arguments shown, escaped
    refresh = page.split('http-equiv="refresh" content="', 1)[1].split('"', 1)[0]
    token = unquote(refresh.split("token=", 1)[1])
    assert refresh.startswith("2;url=calls?token=") and token != view
    assert WatchTokens(door.runtime.sealer, 300.0).tenant_of(token, "view", session.id) == ALPHA
    status, _ = await get(f"{door.url}/v1/agents/sessions/{session.id}/desktop/calls?token={view}",
                          door.auth(OTHER))  # the token decides whose session it is, not a key beside it
    assert status == 200


def _view_token(page: str, where: str) -> str:
    """The view token a served page names: its image's (``frames``) or its calls' refresh (``calls``)."""
    named = page.split(f"{where}?token=", 1)[1].split('"', 1)[0]
    return unquote(named.split(";", 1)[0])


async def test_the_view_tokens_a_page_and_its_refresh_mint_end_with_the_page_token_that_opened_it(
        door: Door) -> None:
    """A link about to expire opens the page; the calls beside it refresh (each a new view token) past the link's
    expiry: every view token ends when the link does, and the refreshed one is refused once it has (401
    ``expired_token``). The control: a fresh link's page, refreshed at the same moment, still works."""
    session_id = await new_session(door)
    door.registry.desktops[(ALPHA, session_id)] = FakeDesktop()
    tokens = WatchTokens(door.runtime.sealer, 300.0)
    base = f"{door.url}/v1/agents/sessions/{session_id}/desktop"
    short = WatchTokens(door.runtime.sealer, 1.0).mint("page", ALPHA, session_id)  # the link ends in a second
    ends = tokens.expires(short, "page", session_id)
    status, page = await get(f"{base}/live?token={short}")
    assert status == 200
    view = _view_token(page, "frames")
    assert _view_token(page, "calls") == view and tokens.expires(view, "view", session_id) == ends
    status, calls = await get(f"{base}/calls?token={view}")
    assert status == 200
    refreshed = _view_token(calls, "calls")
    assert refreshed != view and tokens.expires(refreshed, "view", session_id) == ends  # never later

    status, fresh_page = await get(f"{base}/live?token={tokens.mint('page', ALPHA, session_id)}")  # the control
    assert status == 200
    kept = _view_token(fresh_page, "frames")
    assert tokens.expires(kept, "view", session_id) > ends

    while time.time() <= ends:  # the short link's end (about a second)
        await asyncio.sleep(0.1)
    for token in (view, refreshed):
        status, body = await get(f"{base}/calls?token={token}")
        assert status == 401
        assert_error(body, "expired_token")
        status, body = await get(f"{base}/frames?token={token}")
        assert status == 401
        assert_error(body, "expired_token")
    status, calls = await get(f"{base}/calls?token={kept}")
    assert status == 200
    assert tokens.expires(_view_token(calls, "calls"), "view", session_id) == tokens.expires(kept, "view",
                                                                                               session_id)
    status, keyed = await get(f"{base}/live", door.auth(ALPHA))  # a page opened with the key: the link's bound
    assert status == 200
    assert tokens.expires(_view_token(keyed, "frames"), "view", session_id) > ends + 200
    del door.registry.desktops[(ALPHA, session_id)]


async def test_the_desktop_url_command_prints_the_link(door: Door, tmp_path: Path) -> None:
    session_id = await new_session(door)
    door.registry.desktops[(ALPHA, session_id)] = FakeDesktop()
    printed = await asyncio.to_thread(cli, tmp_path, "desktop-url", session_id, "--url", door.url,
                                      "--api-key", door.keys[ALPHA])
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith(f"{door.url}/v1/agents/sessions/{session_id}/desktop/live?token=")
    status, _ = await get(url)
    assert status == 200
    refused = await asyncio.to_thread(cli, tmp_path, "desktop-url", session_id, "--url", door.url,
                                      env={"OPENAI_API_KEY": door.keys[OTHER]})  # the key from the environment
    assert refused.returncode == 1 and "404" in refused.stderr and refused.stdout == "", refused
    without = await new_session(door)
    none = await asyncio.to_thread(cli, tmp_path, "desktop-url", without, "--url", f"{door.url}/v1",
                                   "--api-key", door.keys[ALPHA])
    assert none.returncode == 1 and "has no running desktop" in none.stderr, none
    helped = await asyncio.to_thread(cli, tmp_path, "desktop-url", "--help")
    assert helped.returncode == 0 and "desktop_live_url" in helped.stdout


# --- in a real browser, the real desktop -----------------------------------------------------------------------

SCREEN = (1024, 640)
PAGE = """<!doctype html><html><body style="margin:0;background:#fff">
<button id="b" style="position:fixed;left:0;top:0;width:100vw;height:100vh;font-size:40px;background:#ddd"
  onclick="document.body.innerHTML='';document.body.style.background='#c00'">Press me</button></body></html>"""
CANNOT = check_bubblewrap()[1] or (None if CgroupParent.find() is not None else "no cgroup per call here")
needs_desktop = pytest.mark.skipif((CANNOT is not None or not os.path.exists(CHROMIUM)) and not os.environ.get("CI"),
                                   reason=f"no desktop here: {CANNOT or f'{CHROMIUM} is missing'}")


@pytest.fixture
async def real_desktop() -> AsyncIterator[Desktop]:
    """A desktop in the sandbox, as test_desktop.py starts one, its browser on a loopback page with a button that
    fills the screen and turns it red."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sandbox = Sandbox.detect(SandboxLimits(timeout=30.0),
                             egress=EgressSettings(EgressRules.parse(f"127.0.0.1:{port}"), EgressLimits()))
    refused = desktop_unavailable(sandbox)
    if refused is not None and not os.environ.get("CI"):
        await runner.cleanup()
        pytest.skip(refused)
    desktop = Desktop(sandbox, tenant=ALPHA,
                      network=parse_policy({"type": "allowlist", "allowed_domains": ["127.0.0.1"]}, "network_policy"),
                      settings=DesktopSettings(width=SCREEN[0], height=SCREEN[1], url=f"http://127.0.0.1:{port}/"))
    await desktop.start()
    try:
        yield desktop
    finally:
        await desktop.stop()
        await runner.cleanup()


def redness(png: bytes) -> float:
    """How much redder than green the image is on average (0 for greys and white; ~200 for #c00)."""
    image = Image.open(io.BytesIO(png)).convert("RGB").resize((32, 20))
    red, green, _ = (band.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)) for band in image.split())
    return float(red) - float(green)  # type: ignore[arg-type]


async def until(check: Any, seconds: float = 60.0) -> Any:
    for _ in range(int(seconds / 0.2)):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    return await check()


@needs_desktop
async def test_a_browser_shows_the_desktop_live_and_its_change_after_an_action(door: Door,
                                                                              real_desktop: Desktop) -> None:
    from playwright.async_api import async_playwright

    session_id = await new_session(door)
    door.registry.desktops[(ALPHA, session_id)] = real_desktop
    try:
        url = await live_url(door, session_id)
        assert url is not None
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 800})
                opened = await page.goto(url, wait_until="domcontentloaded")
                assert opened is not None and opened.status == 200
                image = page.locator("img#desktop")
                size = "() => [document.getElementById('desktop').naturalWidth, " \
                       "document.getElementById('desktop').naturalHeight]"
                assert await until(lambda: _equal(page.evaluate(size), list(SCREEN))), await page.evaluate(size)

                async def drawn() -> bool:  # the page's grey button, as the desktop's browser drew it
                    shot = Image.open(io.BytesIO(await image.screenshot())).convert("L")
                    mean = shot.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
                    return isinstance(mean, int) and 150 < mean < 245

                assert await until(drawn), "the desktop's page never showed in the view"
                before = await image.screenshot()
                assert redness(before) < 20
                done = await real_desktop.act(parse_actions(
                    [{"type": "click", "button": "left", "x": SCREEN[0] // 2, "y": SCREEN[1] // 2}], *SCREEN))
                assert done.error is None

                async def red() -> bool:
                    return redness(await image.screenshot()) > 100

                assert await until(red), "the view did not change after the click"
                calls = page.frame_locator("iframe#calls").locator("ol#calls")
                assert "No calls yet." in await calls.inner_text()

                # another tenant, with its own key, finds no such desktop; a forged or expired link opens nothing
                other = await browser.new_context(extra_http_headers={"Authorization": f"Bearer {door.keys[OTHER]}"})
                theirs = await (await other.new_page()).goto(url.split("?")[0])
                assert theirs is not None and theirs.status == 404
                assert_error(await theirs.json(), "desktop_not_found")
                expired = WatchTokens(door.runtime.sealer, -1.0).mint("page", ALPHA, session_id)
                for token, code in ((url.split("token=")[1][:-8] + "AAAAAAAA", "invalid_token"),
                                    (expired, "expired_token")):
                    refused = await page.goto(f"{url.split('?')[0]}?token={token}")
                    assert refused is not None and refused.status == 401
                    assert_error(await refused.json(), code)
            finally:
                await browser.close()
    finally:
        del door.registry.desktops[(ALPHA, session_id)]


async def _equal(found: Any, expected: Any) -> bool:
    return bool(await found == expected)
