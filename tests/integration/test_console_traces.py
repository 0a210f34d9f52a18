"""A response's and a session turn's timing and trace in the console, in a real browser: a real sidecar (console on,
loopback without keys, nothing but the console extra installed: no OpenTelemetry exporter configured) with a real
Envoy in front, traffic made through both doors with the openai SDK, and the system's Chromium driven by Playwright.

What it proves: a streamed response's page shows its time to first token as stored and close to what the client
measured; a response that waited for the one upstream connection says how long; a plain response and a session's
turn each have a waterfall whose spans open, on a click, to the model call's attributes, the messages it was sent
and the answer it made; no inline script is needed (the pages' CSP allows none)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.test_agents_api import BETA, read_until_idle
from tests.support.bridge import running_sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.sdk import async_sdk

MODEL = "fake-model"
CHROMIUM = "/usr/bin/chromium"
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")  # saves the pages' screenshots there (docs/console.md's pictures)
FIRST_TOKEN_MS = 250
HELD_MS = 500

pytestmark = [pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                 reason="no system Chromium at /usr/bin/chromium"),
              pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")]


@dataclass
class Made:
    streamed: str = ""  # through Envoy, its first token held FIRST_TOKEN_MS
    client_ttft_ms: float = 0.0  # what the client measured of it
    plain: str = ""  # through the HTTP door
    waited: list[str] | None = None  # two at once on one upstream connection
    session: str = ""
    tooled: str = ""  # through the HTTP door: an MCP call, then the answer


@dataclass
class Site:
    url: str
    made: Made


@pytest.fixture(scope="module")
async def site(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory,
               mcp: MCPTestServer) -> AsyncIterator[Site]:
    tmp = tmp_path_factory.mktemp("console_traces")
    async with running_sidecar(str(tmp), fake_upstream, "--db", str(tmp / "bridge.db"),
                               env={"RESPONSES_BRIDGE_CONSOLE": "on", "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": "1",
                                    "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "30",
                                    "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}) as sidecar, \
            envoy_before(sidecar) as envoy:
        made = Made()
        async with async_sdk(base_url=f"{envoy}/v1", api_key="sk-test", max_retries=0, timeout=60) as via_envoy:
            async for _ in await via_envoy.responses.create(model=MODEL, input="warm", stream=True):
                pass
            sent = time.perf_counter()
            async for event in await via_envoy.responses.create(
                    model=MODEL, stream=True, input=f"the streamed kingfisher [first_byte_delay={FIRST_TOKEN_MS}]"):
                if event.type == "response.output_text.delta" and not made.client_ttft_ms:
                    made.client_ttft_ms = (time.perf_counter() - sent) * 1000
                if event.type == "response.completed":
                    made.streamed = event.response.id
        async with async_sdk(base_url=f"{sidecar.http_url}/v1", api_key="sk-test", max_retries=0,
                             timeout=60) as http_door:
            made.plain = (await http_door.responses.create(model=MODEL, input="the plain heron question")).id
            both = await asyncio.gather(*(http_door.responses.create(
                model=MODEL, input=f"queued {n} [header_delay={HELD_MS}]") for n in (1, 2)))
            made.waited = [response.id for response in both]
            tool = {"type": "mcp", "server_label": "tools", "server_url": mcp.json_url, "require_approval": "never",
                    "allowed_tools": ["echo"]}
            made.tooled = (await http_door.responses.create(
                model=MODEL, input='call tools__echo [args={"text": "the echoed wren"}]',
                tools=[tool])).id  # type: ignore[list-item]
        async with aiohttp.ClientSession(sidecar.http_url) as http:
            body = {"agent": {"model": MODEL}, "environment": {"type": "none"}, "stream": True,
                    "input": "the session's lapwing turn"}
            async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
                assert answer.status == 200, await answer.text()
                raw = await read_until_idle(answer)
        found = re.search(rb'"session":\{"id":"([\w-]+)"', raw) or re.search(rb'"session_id":"([\w-]+)"', raw)
        assert found is not None, raw[:500]
        made.session = found.group(1).decode()
        yield Site(sidecar.http_url, made)


@pytest.fixture(scope="module")
async def page(site: Site) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = await browser.new_context()
            opened = await context.new_page()
            errors: list[str] = []
            opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            yield opened
            assert not [error for error in errors if "Content Security Policy" in error], errors
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


def millis(text: str) -> float:
    return float(text.split()[0])


async def test_a_streamed_responses_page_shows_its_time_to_first_token(site: Site, page: Any) -> None:
    await page.goto(f"{site.url}/console/logs/{site.made.streamed}")
    shown = millis(await page.inner_text("dl.timing dd[data-fact='time to first token']"))
    assert FIRST_TOKEN_MS <= shown <= site.made.client_ttft_ms + 1.0, (shown, site.made.client_ttft_ms)
    assert millis(await page.inner_text("dl.timing dd[data-fact='latency']")) >= shown
    assert await page.locator("svg.waterfall a.span-link[data-kind='model']").count() == 1
    await shot(page, "trace")


async def test_a_response_that_waited_for_a_pool_shows_the_wait(site: Site, page: Any) -> None:
    waits = []
    for response_id in site.made.waited or ():
        await page.goto(f"{site.url}/console/logs/{response_id}")
        fact = page.locator("dl.timing dd[data-fact='waited for upstream connections']")
        waits.append(millis(await fact.inner_text()) if await fact.count() else 0.0)
        if waits[-1]:
            assert await page.locator("svg.waterfall rect.wait").count() == 1
    assert max(waits) >= HELD_MS / 2, waits


async def test_a_plain_responses_span_opens_to_its_input_and_output(site: Site, page: Any) -> None:
    await page.goto(f"{site.url}/console/logs/{site.made.plain}")
    await page.click("svg.waterfall a.span-link[data-kind='model']")
    await page.wait_for_url(re.compile(rf"/console/logs/{site.made.plain}/trace/0$"))
    attributes = await page.inner_text("#span-attributes")
    assert MODEL in attributes and "gen_ai.usage.output_tokens" in attributes
    assert "the plain heron question" in await page.inner_text("#span-input")  # the messages it was sent
    assert "the plain heron question" in await page.inner_text("#span-output")  # the fake's echo: its answer
    await shot(page, "span")


async def test_a_session_turns_trace_opens_to_its_model_calls(site: Site, page: Any) -> None:
    await page.goto(f"{site.url}/console/sessions/{site.made.session}/traces")
    turn = page.locator("section.turn-trace")
    assert await turn.count() == 1
    assert await turn.locator("a.span-link[data-kind='response']").count() >= 1
    await shot(page, "turn-trace")
    await turn.locator("a.span-link[data-kind='model']").first.click()
    await page.wait_for_url(re.compile(r"/console/logs/[\w-]+/trace/[0-9]+$"))
    assert "the session's lapwing turn" in await page.inner_text("#span-input")
    assert await page.locator("#span-output article").count() >= 1
    assert MODEL in await page.inner_text("#span-attributes")


async def test_a_tool_calls_span_opens_to_its_arguments_and_result(site: Site, page: Any) -> None:
    await page.goto(f"{site.url}/console/logs/{site.made.tooled}")
    assert await page.locator("svg.waterfall a.span-link[data-kind='model']").count() == 2  # the call, the answer
    await page.click("svg.waterfall a.span-link[data-kind='tool']")
    await page.wait_for_url(re.compile(rf"/console/logs/{site.made.tooled}/trace/[0-9]+$"))
    assert "echo" in await page.inner_text("#span-attributes")
    called = await page.inner_text("#span-output")
    assert called.count("the echoed wren") >= 2  # its arguments and its result, from the stored mcp_call item


async def test_another_span_number_is_a_404_page(site: Site, page: Any) -> None:
    answer = await page.goto(f"{site.url}/console/logs/{site.made.plain}/trace/99")
    assert answer.status == 404
