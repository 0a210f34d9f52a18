"""A desktop's browser on its egress proxy, through the openai SDK's ``client.beta.agents`` and a scripted model
(tests/integration/test_agents_desktop.py's fixtures): bounded as a browser needs — connections open at once, new
ones and bytes a second — never by a count over its life, so a session browses page after page; and whatever the
proxy refuses is told to the model after the call's screenshot, never a silent ``completed``.

- ten pages of 100 images each (1,000 connections: the proxy serves one request a connection, where a lifetime
  count of 64 stopped the browsing at the second page), then the next page: every image and the page reached, no
  refusal told (the control);
- a page with one image on a host the environment does not allow: the model is told which host was refused and why;
- a deployment whose connection rate is tight: a page of 100 images passes its burst, and the model is told of the
  connections refused at the rate, naming the setting;
- a page whose button leads to a URL whose request head passes the proxy's 32 KiB: the click's call is told the
  proxy refused it as too large, beside the same button leading to a URL of 2,000 characters, reached and nothing
  told (the control); and a page's ``ws://`` WebSocket, which Chromium tunnels by ``CONNECT`` and the proxy closes
  for carrying no TLS: told too.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.test_agents_api import BETA, MODEL
from tests.integration.test_agents_desktop import (
    ENVIRONMENT,
    NEEDS_DESKTOP,
    TENANT,
    TOOLS,
    Session,
    _client,
    _reached,
    calls_of,
    computer,
)
from tests.integration.test_desktop import until
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar

pytestmark = [NEEDS_DESKTOP, pytest.mark.store_proven(
    "tests/integration/test_agents_desktop_approvals.py", "tests/integration/test_agents_restart.py",
    reason="a desktop session's items and events are stored as any session's; nothing here reads the store "
           "otherwise")]

PAGES, IMAGES = 10, 100
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
"""A one-pixel GIF: each image is its own URL, its own request, its own connection through the proxy."""


class Pictures:
    """A loopback site: ``/page/N`` holds ``IMAGES`` images ``/img/N/i``, ``/next`` none; ``/mixed`` one image of
    its own and one on ``foreign`` (a host to be refused). Each request's path is kept."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.port = 0
        self.foreign = ""

    def images(self, page: int | str) -> int:
        return sum(path.startswith(f"/img/{page}/") for path in self.seen)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.path)
        if request.path.startswith("/img/"):
            return web.Response(body=PIXEL, content_type="image/gif")
        if request.path.startswith("/page/"):
            page = request.path.rsplit("/", 1)[1]
            tags = "".join(f'<img src="/img/{page}/{index}" width="8" height="8">' for index in range(IMAGES))
            return web.Response(text=f"<!doctype html><h1>page {page}</h1>{tags}", content_type="text/html")
        if request.path.startswith("/button/"):  # one button over the whole page, to /landed/N?q=<N characters>
            size = int(request.path.rsplit("/", 1)[1])
            script = f"location.href = '/landed/{size}?q=' + 'a'.repeat({size})"
            return web.Response(text=f'<!doctype html><button onclick="{script}" style="position: fixed; inset: 0; '
                                     f'font-size: 64px">go {size}</button>', content_type="text/html")
        if request.path == "/socket":  # Chromium opens a ws:// WebSocket through its proxy by CONNECT
            return web.Response(text=f'<!doctype html><h1>socket</h1><script>new WebSocket('
                                     f'"ws://127.0.0.1:{self.port}/ws")</script>', content_type="text/html")
        if request.path == "/mixed":
            return web.Response(text=f'<!doctype html><h1>mixed</h1><img src="/img/mixed/0"><img src="{self.foreign}">',
                                content_type="text/html")
        return web.Response(text="<!doctype html><h1>next</h1>", content_type="text/html")


@pytest.fixture(scope="module")
async def pictures() -> AsyncIterator[Pictures]:
    site = Pictures()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", site.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    served = web.TCPSite(runner, "127.0.0.1", 0)
    await served.start()
    site.port = served._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    site.foreign = f"http://localhost:{site.port}/img/foreign/0"  # the same server, a name the policy lacks
    yield site
    await runner.cleanup()


def _sidecar(directory: Path, fake_upstream: str, port: int, **env: str) -> Any:
    return running_sidecar(str(directory), fake_upstream, extproc=False, ready_headers=TENANT,
                           log_file=directory / "sidecar.log",
                           env={"RESPONSES_BRIDGE_AUTH": "header",
                                "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{port}", **env})


async def go(session: Session, url: str) -> list[dict[str, Any]]:
    """One computer call, as a model does it: the address bar, the address, Enter."""
    return await session.turn(computer({"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": url},
                                       {"type": "keypress", "keys": ["ENTER"]}))


def told_last(body: dict[str, Any]) -> str:
    """What the model was told after the last computer call's screenshot: that call's note, or nothing."""
    last = max(index for index, message in enumerate(body["messages"]) if message["role"] == "tool")
    return " ".join(told({"messages": body["messages"][last:]}))


def told(body: dict[str, Any]) -> list[str]:
    """What the model was told in text after the computer calls' screenshots (the calls' notes)."""
    return [message["content"] for message in body["messages"] if message["role"] == "user"
            and isinstance(message["content"], str) and message["content"].startswith("(computer call ")]


async def _session(sidecar: Sidecar) -> tuple[Any, str]:
    alpha = _client(sidecar, "alpha")
    agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
    made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment=ENVIRONMENT)
    return alpha, made.id


async def test_a_session_browses_a_thousand_images_and_is_told_of_a_refused_host(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory, pictures: Pictures) -> None:
    directory = tmp_path_factory.mktemp("agents-desktop-network")
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with _sidecar(directory, fake_upstream, pictures.port) as sidecar:
        alpha, session_id = await _session(sidecar)
        try:
            async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
                session = Session(http, session_id)
                await upstream.clear()
                for page in range(PAGES):
                    events = await go(session, f"http://127.0.0.1:{pictures.port}/page/{page}")
                    assert all(call["status"] == "completed" for call in calls_of(events))
                    assert await until(lambda page=page: pictures.images(page) == IMAGES), (  # type: ignore[misc]
                        page, pictures.images(page))
                await go(session, f"http://127.0.0.1:{pictures.port}/next")
                assert await until(lambda: "/next" in pictures.seen)
                assert sum(path.startswith("/img/") for path in pictures.seen) == PAGES * IMAGES
                await session.turn(computer({"type": "wait"}))
                # the control: a thousand images and eleven pages, and nothing refused to tell
                assert not any("refused" in text for text in told(await upstream.last_body())), told(
                    await upstream.last_body())

                events = await go(session, f"http://127.0.0.1:{pictures.port}/mixed")
                assert await until(lambda: "/img/mixed/0" in pictures.seen)
                if not any("localhost" in text for text in told(await upstream.last_body())):
                    await session.turn(computer({"type": "wait"}))  # refused after the screen settled: next call
                said = " ".join(text for text in told(await upstream.last_body()) if "localhost" in text)
                assert "network refused" in said and "[denied_domain]" in said, said
                assert "not in the container's allowed domains" in said, said
                assert "/img/foreign/0" not in pictures.seen  # refused, never reached
                calls = calls_of(events)
                assert calls and all(call["status"] == "completed" for call in calls)
        finally:
            await alpha.beta.agents.sessions.delete(session_id)
            await alpha.close()


async def test_a_connection_rate_passed_is_told_to_the_model(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory, pictures: Pictures) -> None:
    """A deployment's tight rate (a burst of 30, then one every 100 s, no wait): a page of 100 images gets its
    burst, the rest refused, and the model is told why, naming the setting."""
    directory = tmp_path_factory.mktemp("agents-desktop-rate")
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    tight = {"RESPONSES_BRIDGE_DESKTOP_EGRESS_CONNECTION_BURST": "30",
             "RESPONSES_BRIDGE_DESKTOP_EGRESS_CONNECTIONS_PER_SECOND": "0.01",
             "RESPONSES_BRIDGE_DESKTOP_EGRESS_WAIT_SECONDS": "0"}
    async with _sidecar(directory, fake_upstream, pictures.port, **tight) as sidecar:
        alpha, session_id = await _session(sidecar)
        try:
            async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
                session = Session(http, session_id)
                await upstream.clear()
                await go(session, f"http://127.0.0.1:{pictures.port}/page/rate")
                await session.turn(computer({"type": "wait"}))
                notes = [text for entry in await upstream.entries() for text in told(entry["body"])
                         if "connection_rate" in text]
                assert notes, [told(entry["body"]) for entry in await upstream.entries()]
                assert "RESPONSES_BRIDGE_DESKTOP_EGRESS_CONNECTIONS_PER_SECOND" in notes[0], notes[0]
                assert 0 < pictures.images("rate") < IMAGES  # its burst served, the rest refused
        finally:
            await alpha.beta.agents.sessions.delete(session_id)
            await alpha.close()


async def test_a_url_too_long_for_the_proxy_is_told_with_the_click(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory, pictures: Pictures) -> None:
    """Issue 98's refusal the model was not told: a button leading to a URL of 40,000 characters (a request head
    over the proxy's 32 KiB), clicked — the call ``completed``, and now the model told the proxy refused the request
    as too large, naming the host; the same button to a URL of 2,000 characters is reached with nothing told (the
    control). Then a page's ``ws://`` WebSocket: a tunnel the proxy closes for carrying no TLS, told as well."""
    directory = tmp_path_factory.mktemp("agents-desktop-too-long")
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with _sidecar(directory, fake_upstream, pictures.port) as sidecar:
        alpha, session_id = await _session(sidecar)
        try:
            async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
                session = Session(http, session_id)
                said: dict[int, str] = {}
                for size in (2000, 40_000):  # the control first
                    await go(session, f"http://127.0.0.1:{pictures.port}/button/{size}")
                    assert await _reached(session, lambda size=size: f"/button/{size}" in pictures.seen), (  # type: ignore[misc]
                        pictures.seen[-5:])
                    await session.turn(computer({"type": "wait"}))  # the page drawn before the model clicks it
                    await upstream.clear()
                    clicked = await session.turn(computer({"type": "click", "button": "left", "x": 640, "y": 400}))
                    assert [call["status"] for call in calls_of(clicked)] == ["completed"]
                    said[size] = told_last(await upstream.last_body())
                    if size > 2000 and "head_too_large" not in said[size]:
                        # the screen settled before the browser's request reached the proxy: the next call's
                        await session.turn(computer({"type": "wait"}))
                        said[size] += told_last(await upstream.last_body())
                assert await until(lambda: "/landed/2000" in pictures.seen), pictures.seen[-5:]
                # (the browser's own requests, refused, may be told beside: none of the page's host)
                assert "a request to 127.0.0.1 was refused" not in said[2000], said[2000]
                assert "/landed/40000" not in pictures.seen  # refused, never reached
                long = said[40_000]
                assert "network refused:" in long and "[head_too_large]" in long, long
                assert "a request to 127.0.0.1 was refused: the request head is over 32 KiB" in long, long

                await upstream.clear()
                await go(session, f"http://127.0.0.1:{pictures.port}/socket")
                assert await _reached(session, lambda: "/socket" in pictures.seen), pictures.seen[-5:]
                for _ in range(3):  # the socket's origin (https://…) approved on the way, then its tunnel closed
                    notes = [text for entry in await upstream.entries() for text in told(entry["body"])
                             if "[not_tls]" in text]
                    if notes:
                        break
                    await session.turn(computer({"type": "wait"}))
                assert notes and "the tunnel carried no TLS" in notes[0], [
                    told(entry["body"]) for entry in await upstream.entries()]
                assert "/ws" not in pictures.seen
        finally:
            await alpha.beta.agents.sessions.delete(session_id)
            await alpha.close()
