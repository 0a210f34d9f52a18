"""A desktop's browser that dies is started again, through the openai SDK's ``client.beta.agents`` and a scripted
model (tests/integration/test_agents_desktop.py's fixtures): ``CTRL+W`` on the last tab ends Chromium — the
screen black, the model told nothing, until now — and a kill (a crash, the kernel's out-of-memory killer) does the
same; the desktop notices, starts it again at its last address, and the model is told what happened after the
call's screenshot. The control: ``CTRL+T`` then ``CTRL+W`` leaves a tab, and the browser is never restarted.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from tests.integration.test_agents_api import BETA
from tests.integration.test_agents_desktop import NEEDS_DESKTOP, TENANT, Session, _browsers, calls_of, computer, jpeg
from tests.integration.test_agents_desktop_network import _session, _sidecar, go, told
from tests.integration.test_desktop import until
from tests.support.bridge import Sidecar, UpstreamLog

pytestmark = [NEEDS_DESKTOP, pytest.mark.store_proven(
    "tests/integration/test_agents_desktop_approvals.py", "tests/integration/test_agents_restart.py",
    reason="a desktop session's items and events are stored as any session's; nothing here reads the store "
           "otherwise")]
GONE = "The browser had gone"


@pytest.fixture(scope="module")
async def page() -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback page (a grey heading on white), every request's path kept."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="<!doctype html><body style='background:#eee'><h1>still here</h1>",
                            content_type="text/html", headers={"Cache-Control": "no-store"})  # loaded, not cached

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    served = web.TCPSite(runner, "127.0.0.1", 0)
    await served.start()
    yield served._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]
    await runner.cleanup()


def newest(body: dict[str, Any]) -> str:
    """What the model was told after its newest call's screenshot (the request's last message), or ''."""
    last = body["messages"][-1]
    return last["content"] if last["role"] == "user" and isinstance(last["content"], str) else ""


def black(image: Image.Image) -> bool:
    return image.convert("L").getextrema()[1] < 16


def shown(events: list[dict[str, Any]]) -> Image.Image:
    [call] = calls_of(events)
    assert call["status"] == "completed", call
    return jpeg(call["output"]["image_url"])


def _main_browser(sidecar: Sidecar) -> int:
    """The Chromium process whose parent is not one (the browser's own: its renderers and helpers are under it)."""
    found = _browsers(sidecar)
    for pid in found:
        with open(f"/proc/{pid}/stat") as stat:
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        if parent not in found:
            return pid
    raise AssertionError(f"no browser among {found}")


async def test_a_browser_closed_or_killed_is_back_at_its_last_address_and_the_model_told(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory, page: tuple[int, list[str]]) -> None:
    port, seen = page
    directory = tmp_path_factory.mktemp("agents-desktop-browser")
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with _sidecar(directory, fake_upstream, port) as sidecar:
        alpha, session_id = await _session(sidecar)
        try:
            async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
                session = Session(http, session_id)
                url = f"http://127.0.0.1:{port}/last"
                await go(session, url)
                assert await until(lambda: "/last" in seen)
                await session.turn(computer({"type": "wait"}))  # its address remembered once a call showed it

                # the control: a second tab opened, then closed — the browser stays, nothing to tell
                await upstream.clear()
                for keys in (["CTRL", "T"], ["CTRL", "W"]):
                    assert not black(shown(await session.turn(computer({"type": "keypress", "keys": keys}))))
                assert not any(GONE in text for entry in await upstream.entries() for text in told(entry["body"]))
                assert seen.count("/last") == 1

                # the last tab closed: the browser ends; the desktop starts it again at its last address
                await upstream.clear()
                closed = shown(await session.turn(computer({"type": "keypress", "keys": ["CTRL", "W"]})))
                if GONE not in newest(await upstream.last_body()):  # noticed on the next call
                    closed = shown(await session.turn(computer({"type": "screenshot"})))
                said = newest(await upstream.last_body())
                assert "last tab or window was closed" in said and url in said, said
                assert not black(closed)
                assert await until(lambda: seen.count("/last") == 2), seen  # loaded again, at its last address
                assert not black(shown(await session.turn(computer({"type": "screenshot"}))))
                assert GONE not in newest(await upstream.last_body())  # told once

                # killed (as the kernel's out-of-memory killer does): noticed and started again on the next call
                os.kill(_main_browser(sidecar), signal.SIGKILL)
                await upstream.clear()
                again = shown(await session.turn(computer({"type": "screenshot"})))
                said = newest(await upstream.last_body())
                assert "killed (SIGKILL" in said and url in said, said
                assert not black(again) and await until(lambda: seen.count("/last") == 3), seen
        finally:
            await alpha.beta.agents.sessions.delete(session_id)
            await alpha.close()
