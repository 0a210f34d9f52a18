"""The console finds things, prices them and follows a developer's loop, in a real browser: a real sidecar's HTTP
door (keys mode, two tenants, a price table for the model), Envoy in front carrying part of the traffic made with
the openai SDK, and the system's Chromium driven by Playwright.

What it proves: a word only in a request's input finds its response (the answer a refusal, said as one); a
metadata filter shows the responses that carry the pair, and another tenant none of them with the same filter;
each priced response's spend is summed exactly (decimals) on the Usage page and in its CSV, and a Logs query's CSV
holds the rows the query shows; a session waiting on the client's function lists that call; a running background
response shows its text while the API still says ``in_progress``; a link followed while signed out lands on its
object after signing in, and a return path elsewhere (another host, ``//``, a path out of the console) is never
followed; an object's raw JSON is one click from its page, copyable; none of it shows another tenant's objects.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.envoy_config.filters import Auth
from tests.support.bridge import create_keys, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk

MODEL = "fake-model"
ALPHA, BRAVO = "alpha", "bravo"
CHROMIUM = "/usr/bin/chromium"
PRICE = {"input": "2.5", "cached_input": "1.25", "output": "10"}
WEATHER = {"type": "function", "name": "lookup_weather", "description": "the weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                reason="no system Chromium at /usr/bin/chromium")


@dataclass
class Stack:
    url: str  # the sidecar's HTTP door (the console)
    envoy: str  # Envoy's listener in front of it
    keys: dict[str, str]
    made: dict[str, str] = field(default_factory=dict)

    def sdk(self, tenant: str, door: str = "http") -> openai.AsyncOpenAI:
        base = self.url if door == "http" else self.envoy
        return async_sdk(base_url=f"{base}/v1", api_key=self.keys[tenant], max_retries=0, timeout=60)


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("console-find")
    db = str(tmp / "bridge.db")
    keys = create_keys(db, [ALPHA, BRAVO])
    prices = orjson.dumps({MODEL: PRICE}).decode()
    async with running_sidecar(str(tmp), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_CONSOLE": "on",
                                    "RESPONSES_BRIDGE_CONSOLE_PRICES": prices}) as sidecar, \
            envoy_before(sidecar, auth=Auth(mode="keys")) as envoy:
        made = Stack(sidecar.http_url, envoy, keys)
        via_envoy, alpha, bravo = made.sdk(ALPHA, "envoy"), made.sdk(ALPHA), made.sdk(BRAVO)
        refused = await via_envoy.responses.create(model=MODEL, input="[refuse] where does the ochre pelican nest",
                                                   metadata={"project": "kestrel"})
        kestrel = await alpha.responses.create(model=MODEL, input="a kestrel question", metadata={"project": "kestrel"})
        osprey = await alpha.responses.create(model=MODEL, input="an osprey question", metadata={"project": "osprey"})
        other = await bravo.responses.create(model=MODEL, input="bravo's ochre pelican",
                                             metadata={"project": "kestrel"})
        chat = await via_envoy.chat.completions.create(model=MODEL, store=True, messages=[
            {"role": "system", "content": "the cormorant dives"}, {"role": "user", "content": "a stored chat"}])
        made.made.update(refused=refused.id, kestrel=kestrel.id, osprey=osprey.id, bravo=other.id, chat=chat.id)
        yield made


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(page: Any, stack: Stack, who: str) -> None:
    await page.fill("input[name=key]", stack.keys[who])
    await page.click("button[type=submit]")


async def signed_in(browser: Any, stack: Stack, who: str) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{stack.url}/console/sign-in")
    await sign_in(page, stack, who)
    await page.wait_for_url(re.compile(r"/console/logs$"))
    return page


async def shot(page: Any, name: str) -> None:
    """``CONSOLE_SCREENSHOTS=<dir>``: the page's screenshot there (docs/console.md's pictures)."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


async def listed(page: Any) -> list[str]:
    return list(await page.locator("#responses a.response-link").all_inner_texts())


async def test_a_word_only_in_the_input_finds_its_response_whose_answer_says_it_refused(
        browser: Any, stack: Stack) -> None:
    page = await signed_in(browser, stack, ALPHA)
    await page.fill("input[name=text]", "ochre pelican")
    await page.click(".filters button[type=submit]")
    assert await listed(page) == [stack.made["refused"]]  # not bravo's, which holds the same words
    assert "refused: I can't help with that." in await page.inner_text("#responses td.summary")
    await shot(page, "logs-search")
    raw = await (await page.request.get(f"{stack.url}/v1/responses/{stack.made['refused']}",
                                        headers={"Authorization": f"Bearer {stack.keys[ALPHA]}"})).text()
    assert "ochre" not in raw  # the word is in the input items only, not in the response's own JSON
    await page.context.close()


async def test_a_word_only_in_a_chat_completions_messages_finds_it(browser: Any, stack: Stack) -> None:
    page = await signed_in(browser, stack, ALPHA)
    await page.goto(f"{stack.url}/console/chats?text=CORMORANT")
    assert await page.locator("#chats a.chat-link").all_inner_texts() == [stack.made["chat"]]
    await page.goto(f"{stack.url}/console/chats?text=pelican")
    assert await page.locator("#chats a.chat-link").count() == 0
    await page.context.close()
    other = await signed_in(browser, stack, BRAVO)
    await other.goto(f"{stack.url}/console/chats?text=cormorant")
    assert await other.locator("#chats a.chat-link").count() == 0
    await other.context.close()


async def test_a_metadata_filter_shows_the_pairs_responses_and_another_tenant_none_of_them(
        browser: Any, stack: Stack) -> None:
    page = await signed_in(browser, stack, ALPHA)
    await page.goto(f"{stack.url}/console/logs?meta=project%3Dkestrel")
    assert sorted(await listed(page)) == sorted([stack.made["refused"], stack.made["kestrel"]])
    assert "2 stored responses match" in await page.inner_text("#total")
    assert await page.input_value("input[name=meta]") == "project=kestrel"
    await shot(page, "logs-filtered")
    await page.goto(f"{stack.url}/console/logs?meta=project%3Dosprey")
    assert await listed(page) == [stack.made["osprey"]]
    await page.context.close()
    other = await signed_in(browser, stack, BRAVO)
    await other.goto(f"{stack.url}/console/logs?meta=project%3Dkestrel")
    assert await listed(other) == [stack.made["bravo"]]
    exported = await (await other.request.get(f"{stack.url}/console/logs.csv")).text()
    assert stack.made["bravo"] in exported and not any(stack.made[name] in exported
                                                       for name in ("refused", "kestrel", "osprey"))
    for path in (f"/console/logs/{stack.made['kestrel']}/raw", f"/console/logs/{stack.made['kestrel']}/live"):
        assert (await other.request.get(f"{stack.url}{path}")).status == 404
    await other.context.close()


def spend(usage: dict[str, Any]) -> Decimal:
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    return (Decimal(usage["input_tokens"] - cached) * Decimal(PRICE["input"])
            + Decimal(cached) * Decimal(PRICE["cached_input"])
            + Decimal(usage["output_tokens"]) * Decimal(PRICE["output"])) / Decimal(1_000_000)


async def test_a_priced_models_spend_is_summed_exactly_on_usage_and_in_its_csv(browser: Any, stack: Stack) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.keys[ALPHA]}"}) as http, \
            http.get(f"{stack.url}/v1/responses", params={"limit": "100"}) as answer:
        stored = (await answer.json())["data"]
    expected = sum((spend(response["usage"]) for response in stored), Decimal(0))
    assert expected > 0
    page = await signed_in(browser, stack, ALPHA)
    await page.goto(f"{stack.url}/console/usage")
    assert Decimal(await page.inner_text("#spend-total")) == expected.quantize(Decimal("0.000001"))
    row = page.locator(f"#by-model tr[data-model='{MODEL}']")
    assert int(await row.locator("td").nth(1).inner_text()) == len(stored)
    await shot(page, "usage-spend")
    exported = await page.request.get(f"{stack.url}/console/usage.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(await exported.text())))
    assert [(line["tenant"], line["model"]) for line in lines] == [(ALPHA, MODEL)]
    assert Decimal(lines[0]["spend"]) == expected.quantize(Decimal("0.000001"))
    assert int(lines[0]["requests"]) == len(stored)
    # a Logs query's CSV: the rows it shows, each with its own spend
    logs = await page.request.get(f"{stack.url}/console/logs.csv?meta=project%3Dkestrel")
    rows = {line["id"]: line for line in csv.DictReader(io.StringIO(await logs.text()))}
    assert set(rows) == {stack.made["refused"], stack.made["kestrel"]}
    by_id = {response["id"]: response for response in stored}
    for response_id, line in rows.items():
        assert Decimal(line["spend"]) == spend(by_id[response_id]["usage"]).quantize(Decimal("0.000001"))
    await page.context.close()


async def test_a_session_waiting_on_the_clients_function_lists_the_call(browser: Any, stack: Stack) -> None:
    headers = {"OpenAI-Beta": "agents=v1", "Authorization": f"Bearer {stack.keys[ALPHA]}"}
    async with aiohttp.ClientSession(stack.url, headers=headers) as http, http.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": [WEATHER]}, "environment": {"type": "none"}, "stream": True,
            "input": "call lookup_weather Lisbon"}) as answer:
        assert answer.status == 200, await answer.text()
        async for line in answer.content:
            if line.startswith(b"event: agent.session.requires_action"):
                break
        async with http.get("/v1/agents/sessions", params={"limit": "1"}) as sessions:
            session_id = (await sessions.json())["data"][0]["id"]
    page = await signed_in(browser, stack, ALPHA)
    await page.goto(f"{stack.url}/console/sessions/{session_id}")
    call = page.locator("#pending .function-call")
    assert await call.count() == 1
    assert await call.locator(".call-name").inner_text() == "lookup_weather"
    assert '"city": "Lisbon"' in await call.locator("pre").inner_text()
    await shot(page, "session-function-call")
    await page.context.close()


async def test_a_running_responses_text_shows_before_it_completes(browser: Any, stack: Stack) -> None:
    running = await stack.sdk(ALPHA).responses.create(model=MODEL, background=True,
                                                      input="a slow answer [chunks=30] [delay=400]")
    page = await signed_in(browser, stack, ALPHA)
    await page.goto(f"{stack.url}/console/logs/{running.id}")
    assert await page.locator("#running").count() == 1
    await page.locator("#live-text", has_text="Echo:").wait_for(timeout=30_000)  # under the page's own CSP
    shown = await page.inner_text("#live-text")
    await shot(page, "response-running")
    now = await stack.sdk(ALPHA).responses.retrieve(running.id)
    assert now.status == "in_progress", (now.status, shown)  # shown while the API says it still runs
    # once it ends the page shows it as stored
    await page.locator("#running").wait_for(state="detached", timeout=60_000)
    assert "Echo: a slow answer" in await page.inner_text(".conversation")
    await page.context.close()


async def test_a_link_followed_signed_out_lands_on_its_object_after_signing_in(browser: Any, stack: Stack) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    target = f"/console/logs/{stack.made['kestrel']}/raw"
    await page.goto(f"{stack.url}{target}")
    assert "/console/sign-in?next=" in page.url
    await sign_in(page, stack, ALPHA)
    await page.wait_for_url(re.compile(re.escape(target) + "$"))
    assert stack.made["kestrel"] in await page.inner_text("#raw-json")
    await shot(page, "raw-json")
    # the raw JSON's copy button copies it
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    await page.click("button[data-copy=raw-json]")
    await page.wait_for_selector(".copied:not([hidden])")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert orjson.loads(copied)["id"] == stack.made["kestrel"]
    await context.close()


@pytest.mark.parametrize("elsewhere", ["https://elsewhere.example/console/logs", "//elsewhere.example/console/logs",
                                       "/\\elsewhere.example", "/console/../v1/responses",
                                       "/console/%2e%2e/v1/responses", "/v1/responses", "javascript:alert(1)",
                                       "/console/logs\r\nSet-Cookie: x=1"])
async def test_a_return_path_out_of_the_console_is_never_followed(stack: Stack, elsewhere: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.url}/console/sign-in?next={quote(elsewhere, safe='')}") as answer:
            assert answer.status == 200
            assert "elsewhere" not in await answer.text() and "/v1/responses" not in await answer.text()
        async with http.post(f"{stack.url}/console/sign-in", data={"key": stack.keys[ALPHA], "next": elsewhere},
                             headers={"Origin": stack.url}, allow_redirects=False) as answer:
            assert answer.status == 303 and answer.headers["Location"] == "/console/logs"
        async with http.get(f"{stack.url}{'/console/logs/x?a=b'}", allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["Location"] == "/console/sign-in?next=" + quote("/console/logs/x?a=b", safe="")


async def test_newer_and_older_pages_walk_the_list_both_ways(browser: Any, stack: Stack) -> None:
    sdk = stack.sdk(BRAVO)
    for n in range(27):  # more than a page (25)
        await sdk.responses.create(model=MODEL, input=f"page filler {n}")
    page = await signed_in(browser, stack, BRAVO)
    first = await listed(page)
    assert len(first) == 25 and await page.locator("a.newer").count() == 0
    await page.click("a.next")
    second = await listed(page)
    assert second and not set(second) & set(first)
    await page.click("a.newer")
    assert await listed(page) == first
    await page.context.close()


async def test_the_logs_show_each_responses_timing_and_sort_by_it(browser: Any, stack: Stack) -> None:
    page = await signed_in(browser, stack, ALPHA)
    await page.goto(f"{stack.url}/console/logs?meta=project%3Dkestrel")  # the module's first responses, both doors
    cells = await page.locator("#responses td.latency").all_inner_texts()
    assert len(cells) == 2 and all(cell.endswith(" ms") for cell in cells)  # timed by the bridge itself
    await page.click("#sort-latency")
    await page.wait_for_url(re.compile(r"sort=latency"))
    shown = [float(cell.removesuffix(" ms")) for cell in await page.locator("#responses td.latency").all_inner_texts()]
    assert shown == sorted(shown, reverse=True) and len(shown) == 2  # the metadata filter kept
    ttfts = await page.locator("#responses td.ttft").all_inner_texts()
    assert any(cell.endswith(" ms") for cell in ttfts)
    await page.context.close()


async def test_each_response_records_its_keys_id_through_both_doors_for_the_logs_filter_and_usage_by_key(
        browser: Any, stack: Stack) -> None:
    from responses_bridge.store.keys import parse

    alpha_key, bravo_key = (parse(stack.keys[who]) for who in (ALPHA, BRAVO))
    assert alpha_key is not None and bravo_key is not None
    alpha_id, bravo_id = alpha_key[0], bravo_key[0]
    by_envoy = await stack.sdk(ALPHA, "envoy").responses.create(model=MODEL, input="a keyed question via envoy")
    by_http = await stack.sdk(ALPHA).responses.create(model=MODEL, input="a keyed question via the http door")
    page = await signed_in(browser, stack, ALPHA)
    await page.goto(f"{stack.url}/console/logs?key={quote(alpha_id)}")
    shown = set(await listed(page))
    assert {by_envoy.id, by_http.id, stack.made["refused"], stack.made["kestrel"]} <= shown
    assert stack.made["bravo"] not in shown
    await page.goto(f"{stack.url}/console/logs?key={quote(bravo_id)}")  # another tenant's key: nothing of alpha's
    assert await listed(page) == []
    await page.goto(f"{stack.url}/console/usage")
    row = page.locator(f"#by-key tr[data-key='{alpha_id}']")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.keys[ALPHA]}"}) as http, \
            http.get(f"{stack.url}/v1/responses", params={"limit": "100"}) as answer:
        stored = (await answer.json())["data"]
    assert int(await row.locator("td").nth(1).inner_text()) == len(stored)  # every one of alpha's made by its key
    assert await page.locator(f"#by-key tr[data-key='{bravo_id}']").count() == 0
    assert stack.keys[ALPHA] not in await page.content()  # the key's id, never the key
    await page.context.close()
