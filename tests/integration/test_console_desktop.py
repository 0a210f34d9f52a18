"""The console beside a real desktop session: the real sandbox's desktop (Xvfb, Chromium, the egress proxy), the
fake model scripted call by call, the system's Chromium driven by Playwright looking at the session's console page.
Its computer calls' screenshots are shown in the order they were taken, its desktop is shown live while it runs,
and an origin the desktop's browser waits for is approved from the page, after which the turn goes on and the page
loads. The console is under ``auth: header`` here: the browser carries the tenant header as Envoy would set it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle
from tests.integration.test_agents_desktop import CANNOT, TOOLS, Session, computer
from tests.integration.test_agents_desktop_approvals import navigate
from tests.integration.test_desktop import Site, _site, until
from tests.support.bridge import Sidecar, running_sidecar

CHROMIUM = "/usr/bin/chromium"
TENANT = {"x-tenant-id": "alpha"}
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
pytestmark = [
    pytest.mark.skipif((CANNOT is not None or not os.path.exists(CHROMIUM)) and not os.environ.get("CI"),
                       reason=f"no desktop or no Chromium here: {CANNOT}"),
    pytest.mark.store_proven(
        "tests/integration/test_agents_desktop_approvals.py", "tests/integration/test_console.py",
        reason="a desktop session's items and its approvals are stored as in test_agents_desktop_approvals, the "
               "console's reads as in test_console, both run on PostgreSQL (no line of store/postgres only this "
               "module covers)")]


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    made, runner = await _site()
    yield made
    await runner.cleanup()


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory, site: Site) -> AsyncIterator[Sidecar]:
    directory = tmp_path_factory.mktemp("console-desktop")
    async with running_sidecar(str(directory), fake_upstream, extproc=False, ready_headers=TENANT,
                               env={"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CONSOLE": "on",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{site.port}"}) as made:
        yield made


async def test_screenshots_in_order_the_live_desktop_and_an_origin_approved_from_the_page(
        sidecar: Sidecar, site: Site) -> None:
    from playwright.async_api import async_playwright

    environment = {"type": "openai_hosted", "desktop": {"enabled": True},
                   "network": {"access": "restricted", "allowed_domains": ["127.0.0.1"]}}
    async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT},
                                     timeout=aiohttp.ClientTimeout(total=120)) as http:
        async with http.post("/v1/agents/sessions", json={
                "agent": {"model": MODEL, "tools": TOOLS}, "environment": environment, "stream": True,
                "input": computer({"type": "screenshot"})}) as answer:
            assert answer.status == 200, await answer.text()
            first = frames(await read_until_idle(answer))
        session = Session(http, first[0][1]["session"]["id"], approve_origins=False)
        session.last = first[-1][0]
        await session.turn(computer({"type": "move", "x": 10, "y": 10}))
        events = await navigate(session, f"http://127.0.0.1:{site.port}/approved-page")
        assert events[-1]["type"] == "agent.session.requires_action"
        assert not site.seen  # held until the client decides
        async with http.get(f"/v1/agents/sessions/{session.id}/items", params={"order": "asc", "limit": "100"}) as got:
            shots = [item["output"]["image_url"] for item in (await got.json())["data"]
                     if item["type"] == "computer_use_call" and item.get("output")]
        assert len(shots) >= 4  # the screenshot, the move, and the navigation's calls

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            context = await browser.new_context(extra_http_headers=TENANT)  # as Envoy sets it (auth: header)
            page = await context.new_page()
            await page.goto(f"{sidecar.http_url}/console/sessions/{session.id}")
            shown = await page.eval_on_selector_all("#screenshots img", "images => images.map(image => image.src)")
            assert shown == shots  # every screenshot, in the order the calls were made
            live = page.locator("#live img")
            assert await live.count() == 1  # the desktop, live: its frame stream on the page
            await page.wait_for_function("document.querySelector('#live img').naturalWidth > 0", timeout=30_000)
            pending = page.locator("#pending")
            assert f"127.0.0.1:{site.port}" in await pending.inner_text()
            if SHOTS:
                await page.screenshot(path=str(Path(SHOTS) / "console-desktop.png"), full_page=True)
            await pending.locator("button.approve").first.click()
            await page.wait_for_url(f"{sidecar.http_url}/console/sessions/{session.id}")
            assert await until(lambda: any(path.startswith("/approved-page") for path in site.seen), 60)
            await browser.close()
        rest = await session.until_quiet()  # the turn went on once the page approved, to its end
        assert rest[-1]["type"] == "agent.session.idle"
        assert [event["type"] for event in rest].count("agent.session.turn.completed") == 1
