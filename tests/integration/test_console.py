"""The console in a real browser: a real sidecar's HTTP door (keys mode, two tenants and an operator, each with a
key made by ``responses-bridge keys create``), traffic made through it with the openai SDK, and the system's
Chromium driven by Playwright (never a browser of its own) signing in, searching, following links and posting
forms as a person would.

What it proves: a sign-in takes a key and answers with a sealed, HttpOnly, SameSite=Strict cookie (the key is never
in a page); a response is found by its text and shown as the conversation it was (a function call's arguments,
its output, the chain back through ``previous_response_id``); the usage chart counts the requests just made; an
operator sees a tenant holding a shared pool and revokes a key (which the API then refuses); another tenant,
crawling every page and link it can reach, sees none of the first tenant's objects; markup a model or a client
wrote shows as text; a form posted from another site changes nothing; no key or secret is in any page's HTML.

``CONSOLE_SCREENSHOTS=<dir>`` saves each page's screenshot there (docs/console.md's pictures)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config.filters import Auth
from tests.support.bridge import create_keys, keys_command, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.sdk import async_sdk

MODEL = "fake-model"
ALPHA, BRAVO = "alpha", "bravo"
CHROMIUM = "/usr/bin/chromium"
XSS = "<img src=x onerror=alert(1)>"
MARKUP_TITLE = "<script>alert('title')</script><b>bold</b>"
WEATHER = {"type": "function", "name": "lookup_weather", "description": "the weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                reason="no system Chromium at /usr/bin/chromium")


@dataclass
class Made:
    """What the traffic stored, by tenant."""

    call: str = ""  # alpha's response with the function call
    answer: str = ""  # alpha's response answering it (previous_response_id: call)
    search: str = ""  # alpha's response found by its text
    xss: str = ""  # alpha's response whose text is markup
    titled: str = ""  # alpha's response whose input carries a citation titled with markup
    bravo: str = ""
    session: str = ""  # alpha's agent session, its MCP call approved from the console
    chat: str = ""  # alpha's stored chat completion (through Envoy)
    hosted: str = ""  # alpha's session in a hosted environment, with an artifact
    artifact: str = ""  # that artifact's download, on the console


@dataclass
class Console:
    url: str  # the sidecar's HTTP door, where the console is
    envoy: str  # Envoy's listener in front of it (keys mode): the other door the traffic takes
    db: str
    keys: dict[str, str]  # alpha, bravo, and the operator's
    made: Made
    secrets: list[str]  # every key and the sealing key: never in a page

    def sdk(self, tenant: str, door: str = "http") -> openai.AsyncOpenAI:
        base = self.url if door == "http" else self.envoy
        return async_sdk(base_url=f"{base}/v1", api_key=self.keys[tenant], max_retries=0, timeout=60)

    def key_rows(self) -> dict[str, list[str]]:
        """``keys list`` of the sidecar's database, by key id."""
        listed = keys_command(self.db, "list")
        assert listed.returncode == 0, listed.stderr
        return {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}


async def make_traffic(console: Console) -> None:
    """Alpha's responses through both doors (the function call and its answer through Envoy, the rest through the
    HTTP door), bravo's one."""
    alpha, via_envoy, bravo, made = console.sdk(ALPHA), console.sdk(ALPHA, "envoy"), console.sdk(BRAVO), console.made
    call = await via_envoy.responses.create(model=MODEL, input="call lookup_weather Paris", tools=[WEATHER])  # type: ignore[list-item]
    function_call = next(item for item in call.output if item.type == "function_call")
    answer = await via_envoy.responses.create(model=MODEL, previous_response_id=call.id, tools=[WEATHER],  # type: ignore[list-item]
                                              input=[{"type": "function_call_output", "call_id": function_call.call_id,
                                                      "output": "sunny and 21 degrees"}])
    search = await alpha.responses.create(model=MODEL, input="the periwinkle heron flies at dawn")
    xss = await alpha.responses.create(model=MODEL, input=XSS)
    titled = await alpha.responses.create(model=MODEL, input=[
        {"role": "assistant", "content": [{"type": "output_text", "text": "see the page", "annotations": [
            {"type": "url_citation", "title": MARKUP_TITLE, "url": "https://example.com/", "start_index": 0,
             "end_index": 3}]}]},
        {"role": "user", "content": "what did that page say?"}])
    chat = await via_envoy.chat.completions.create(model=MODEL, store=True, messages=[
        {"role": "user", "content": "a stored chat about quinces"}])
    made.chat = chat.id
    other = await bravo.responses.create(model=MODEL, input="bravo's own marmalade question")
    made.call, made.answer, made.search, made.xss, made.titled, made.bravo = (
        call.id, answer.id, search.id, xss.id, titled.id, other.id)


@pytest.fixture(scope="module")
async def console(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory,
                  mcp: MCPTestServer) -> AsyncIterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    db = str(tmp / "bridge.db")
    keys = create_keys(db, [ALPHA, BRAVO])
    made_operator = keys_command(db, "create", "--operator", "--tenant", "ops")
    assert made_operator.returncode == 0, made_operator.stderr
    keys["operator"] = made_operator.stdout.strip()
    async with running_sidecar(str(tmp), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_CONSOLE": "on",
                                    "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}) as sidecar, \
            envoy_before(sidecar, auth=Auth(mode="keys")) as envoy:
        sealing = tmp / "sealing.key"
        started = Console(sidecar.http_url, envoy, db, keys, Made(),
                          [*keys.values(), *([sealing.read_text().strip()] if sealing.exists() else [])])
        await make_traffic(started)
        yield started


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def signed_in(browser: Any, console: Console, who: str) -> Any:
    """A fresh browser context signed in with ``who``'s key, through the sign-in page; its page."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{console.url}/console")
    assert page.url.endswith("/console/sign-in")
    await page.fill("input[name=key]", console.keys[who])
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/console/logs$"))
    return page


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


async def test_signing_in_sets_a_sealed_strict_cookie_and_no_page_carries_the_key(browser: Any,
                                                                                  console: Console) -> None:
    page = await signed_in(browser, console, ALPHA)
    cookies = await page.context.cookies()
    assert [cookie["name"] for cookie in cookies] == ["rb_console"]
    cookie = cookies[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert console.keys[ALPHA] not in cookie["value"] and cookie["value"].startswith("rb1.")
    assert await page.evaluate("document.cookie") == ""  # no script of the page can read it
    assert console.keys[ALPHA] not in await page.content()
    await page.context.close()
    # a wrong key is refused on the page, with nothing set
    context = await browser.new_context()
    wrong = await context.new_page()
    await wrong.goto(f"{console.url}/console/sign-in")
    await wrong.fill("input[name=key]", "rbk_000000000000_" + "A" * 43)
    await wrong.click("button[type=submit]")
    assert "not accepted" in await wrong.inner_text(".error")
    await shot(wrong, "sign-in")
    assert await context.cookies() == []
    await context.close()


async def test_a_response_is_found_by_its_text_and_shows_its_call_its_output_and_its_chain(
        browser: Any, console: Console) -> None:
    page = await signed_in(browser, console, ALPHA)
    await shot(page, "logs")
    await page.fill("input[name=text]", "periwinkle heron")
    await page.click(".filters button[type=submit]")
    links = page.locator("#responses a.response-link")
    assert await links.all_inner_texts() == [console.made.search]
    await page.goto(f"{console.url}/console/logs/{console.made.answer}")
    conversation = await page.inner_text(".conversation")
    assert "sunny and 21 degrees" in conversation  # the call's output, as the answer's input
    assert "Tool result: sunny and 21 degrees" in conversation  # the model's answer to it
    await shot(page, "response")
    await page.click("#chain a.chain-link")  # back along previous_response_id
    await page.wait_for_url(re.compile(re.escape(console.made.call)))
    call = page.locator("article.call")
    assert "lookup_weather" in await call.inner_text()
    assert '"city": "Paris"' in await call.locator("pre").first.inner_text()  # its arguments
    await page.context.close()


async def test_a_stored_chat_completion_is_listed_and_shown_with_its_messages(browser: Any,
                                                                            console: Console) -> None:
    page = await signed_in(browser, console, ALPHA)
    await page.click("text=chat completions")
    assert await page.locator("#chats a.chat-link").all_inner_texts() == [console.made.chat]
    await page.click("#chats a.chat-link")
    conversation = await page.inner_text(".conversation")
    assert "a stored chat about quinces" in conversation and "Echo: a stored chat about quinces" in conversation
    await page.context.close()


async def test_the_usage_chart_counts_the_requests_just_made(browser: Any, console: Console) -> None:
    page = await signed_in(browser, console, ALPHA)
    await page.goto(f"{console.url}/console/usage")
    legend = page.locator("section.chart").first.locator(f"li[data-series='{MODEL}']")
    before = int(await legend.get_attribute("data-requests") or "0")
    assert before == 5  # alpha's five responses (bravo's is not alpha's)
    await console.sdk(ALPHA).responses.create(model=MODEL, input="one more")
    await page.reload()
    assert int(await legend.get_attribute("data-requests") or "0") == before + 1
    assert await page.locator("section.chart svg rect").count() >= 1
    await shot(page, "usage")
    await page.context.close()


async def test_markup_a_model_or_a_client_wrote_shows_as_text(browser: Any, console: Console) -> None:
    page = await signed_in(browser, console, ALPHA)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(f"{console.url}/console/logs/{console.made.xss}")
    assert XSS in await page.inner_text(".conversation")  # the client's text and the model's echo, as text
    assert await page.locator("img[src=x]").count() == 0
    await page.goto(f"{console.url}/console/logs/{console.made.titled}")
    assert MARKUP_TITLE in await page.inner_text("ul.links")  # a cited page's title, as text
    assert await page.locator("ul.links b, ul.links script").count() == 0
    await page.goto(f"{console.url}/console/logs?text=" + "%3Cimg")
    assert XSS in await page.inner_text("#responses")
    await asyncio.sleep(0.2)
    assert dialogs == []
    await page.context.close()


async def test_an_operator_sees_a_tenant_holding_a_pool_and_revokes_a_key(browser: Any, console: Console) -> None:
    page = await signed_in(browser, console, "operator")
    # bravo holds an upstream connection: a streamed answer whose words come slowly
    stream = asyncio.create_task(_slow_stream(console))
    try:
        for _ in range(100):
            await page.goto(f"{console.url}/console/operations")
            holder = page.locator("[data-pool='upstream connections'] tr.holder[data-tenant='bravo']")
            if await holder.count():
                break
            await asyncio.sleep(0.1)
        assert await holder.count() == 1
        upstream = await page.inner_text("tr.upstream[data-upstream='default']")  # its calls, as metrics count them
        assert re.search(r"\b\d+ answered, \d+ ms to headers on average, none failed", upstream), upstream
        await shot(page, "operations")
    finally:
        await stream
    # a key made here for a new tenant, shown once, then revoked: the API refuses it from then on
    await page.fill("#keys input[name=tenant]", "charlie")
    await page.click("#keys button[type=submit]")
    made = (await page.inner_text("pre.secret")).strip()
    charlie = async_sdk(base_url=f"{console.url}/v1", api_key=made, max_retries=0, timeout=60)
    assert (await charlie.responses.create(model=MODEL, input="hi")).status == "completed"
    await page.goto(f"{console.url}/console/operations")
    key_id = made.split("_")[1]
    await page.click(f"tr.key[data-key='{key_id}'] button")
    await page.wait_for_url(re.compile(r"/console/operations$"))
    assert await page.locator(f"tr.key[data-key='{key_id}'] button").count() == 0
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        await charlie.responses.create(model=MODEL, input="hi again")
    await page.context.close()


async def _slow_stream(console: Console) -> None:
    stream = await console.sdk(BRAVO).responses.create(model=MODEL, input="slowly [chunks=30] [delay=100]",
                                                       stream=True)
    async for _ in stream:
        pass


async def test_a_session_waits_for_an_approval_given_on_its_page_and_its_trace_is_a_waterfall(
        browser: Any, console: Console, mcp: MCPTestServer) -> None:
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["echo"],
            "transport": {"type": "http", "server_url": mcp.http_url}}
    headers = {"OpenAI-Beta": "agents=v1", "Authorization": f"Bearer {console.keys[ALPHA]}"}
    async with aiohttp.ClientSession(console.url, headers=headers) as http, http.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": [tool]}, "environment": {"type": "none"}, "stream": True,
            "input": 'call tools__echo [args={"text": "approve me"}]'}) as answer:
        assert answer.status == 200, await answer.text()
        async for line in answer.content:
            if line.startswith(b"event: agent.session.requires_action"):
                break
        async with http.get("/v1/agents/sessions", params={"limit": "1"}) as listed:
            console.made.session = (await listed.json())["data"][0]["id"]
    page = await signed_in(browser, console, ALPHA)
    await page.goto(f"{console.url}/console/sessions")
    await shot(page, "sessions")
    await page.click(f"a.session-link:text('{console.made.session}')")
    pending = page.locator("#pending")
    assert "Allow the MCP server 'tools' to run its tool 'echo'?" in await pending.inner_text()
    await shot(page, "session-pending")
    await pending.locator("button.approve").click()  # the page's form: the API's own service call
    await page.wait_for_url(re.compile(re.escape(console.made.session) + "$"))
    for _ in range(100):  # the turn goes on: the call is made, the model answers, the session is idle
        timeline = await page.inner_text(".timeline")
        if "Tool result:" in timeline:
            break
        await asyncio.sleep(0.1)
        await page.reload()
    assert "mcp call: echo on tools" in timeline and "approve me" in timeline and "Tool result:" in timeline
    assert await page.locator("#pending").count() == 0
    assert await page.locator(".timeline h3.turn").count() == 1  # the items, under the one turn they belong to
    await shot(page, "session")
    await page.click("text=traces (waterfall)")
    assert await page.locator("section.waterfall svg rect").count() >= 2  # the turn and what it did inside
    await shot(page, "traces")
    await page.context.close()


async def test_a_sessions_artifact_downloads_from_its_page(browser: Any, console: Console) -> None:
    headers = {"OpenAI-Beta": "agents=v1", "Authorization": f"Bearer {console.keys[ALPHA]}"}
    hosted = {"type": "openai_hosted", "container_size": "small", "network": {"access": "disabled"}}
    async with aiohttp.ClientSession(console.url, headers=headers) as http, http.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL}, "environment": hosted, "stream": True,
            "input": "sh: printf 'kept for later' > /mnt/data/note.txt"}) as answer:
        assert answer.status == 200, await answer.text()
        raw = await answer.read()  # the stream ends when the session is idle
        session_id = orjson.loads(raw.split(b"data: ", 1)[1].split(b"\n", 1)[0])["session"]["id"]
    console.made.hosted = session_id
    page = await signed_in(browser, console, ALPHA)
    await page.goto(f"{console.url}/console/sessions/{session_id}")
    assert "printf" in await page.inner_text(".timeline")
    [link] = await page.eval_on_selector_all("#artifacts a.artifact", "links => links.map(a => a.href)")
    console.made.artifact = link
    download = await page.request.get(link)  # with the page's cookie, as a click would
    assert download.status == 200 and "attachment" in download.headers["content-disposition"]
    assert await download.body() == b"kept for later"
    assert (await page.request.get(link.replace(session_id, made_up(session_id)))).status == 404
    await page.context.close()


def made_up(session_id: str) -> str:
    """Another id of the same shape, which names no session."""
    return session_id[:-4] + ("0000" if not session_id.endswith("0000") else "1111")


async def test_an_operator_sees_every_tenant_and_keys_list_names_its_key(browser: Any, console: Console) -> None:
    page = await signed_in(browser, console, "operator")
    await page.goto(f"{console.url}/console/logs?tenant=alpha")
    assert console.made.search in await page.inner_text("#responses")
    await page.goto(f"{console.url}/console/logs?tenant=bravo")
    assert console.made.bravo in await page.inner_text("#responses")
    await page.goto(f"{console.url}/console/usage")  # every tenant's, and a chart by tenant
    by_tenant = page.locator("section.chart", has_text="Requests by tenant")
    assert {await item.get_attribute("data-series") for item in await by_tenant.locator("li").all()} >= {ALPHA, BRAVO}
    rows = console.key_rows()
    assert rows[console.keys["operator"].split("_")[1]][5] == "operator"
    assert rows[console.keys[ALPHA].split("_")[1]][5] == "tenant"
    await page.context.close()


async def crawl(page: Any, start: str, *, limit: int = 150) -> dict[str, str]:
    """Every console page reachable by links from ``start`` (GET only, same origin): URL to HTML (a CSV export's
    link: its text)."""
    seen: dict[str, str] = {}
    queue = [start]
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(start))
    while queue and len(seen) < limit:
        url = queue.pop(0)
        if url in seen:
            continue
        if urlsplit(url).path.endswith(".csv"):  # an export: a download, read as text (checked as a page is)
            seen[url] = await (await page.request.get(url)).text()
            continue
        await page.goto(url)
        seen[url] = await page.content()
        for href in await page.eval_on_selector_all("a[href]", "links => links.map(link => link.href)"):
            target = urljoin(url, href).split("#")[0]
            if (target.startswith(origin + "/console") and target not in seen and "/static/" not in target
                    and "/artifacts/" not in target):  # a download, not a page (tried apart)
                queue.append(target)
    return seen


async def test_another_tenant_sees_none_of_the_first_tenants_objects_on_any_page(browser: Any,
                                                                              console: Console) -> None:
    page = await signed_in(browser, console, BRAVO)
    made = console.made
    alphas = [made.call, made.answer, made.search, made.xss, made.titled, made.chat,
              *(found for found in (made.session, made.hosted) if found)]
    pages = await crawl(page, f"{console.url}/console/logs")
    pages.update(await crawl(page, f"{console.url}/console/logs?tenant=alpha"))  # a tenant's choice is ignored
    pages.update(await crawl(page, f"{console.url}/console/sessions?tenant=alpha"))
    pages.update(await crawl(page, f"{console.url}/console/chats?tenant=alpha"))
    assert (await page.goto(f"{console.url}/console/chats/{made.chat}?tenant=alpha")).status == 404
    if made.artifact:  # alpha's artifact, its address known: the API's 404, no bytes
        refused = await page.request.get(made.artifact + "?tenant=alpha")
        assert refused.status == 404 and b"kept for later" not in await refused.body()
    if made.session:  # asked for by id: the sessions service's 404, on the session's page and its traces'
        for path in (f"/console/sessions/{made.session}", f"/console/sessions/{made.session}/traces"):
            assert (await page.goto(f"{console.url}{path}")).status == 404
    assert len(pages) >= 4
    for url, html in pages.items():
        for alpha in alphas:
            assert alpha not in html, url
        assert "periwinkle" not in html and "Paris" not in html and "quinces" not in html, url
    assert any(made.bravo in html for html in pages.values())
    for alpha in alphas:  # asked for by id: the API's answer, not found
        answer = await page.goto(f"{console.url}/console/logs/{alpha}?tenant=alpha")
        assert answer.status == 404 and alpha not in (await page.content()).split("<main>")[1].replace(
            f"/console/logs/{alpha}", "")
    denied = await page.goto(f"{console.url}/console/operations")
    assert denied.status == 403  # Operations: operators only
    await page.context.close()


async def test_no_key_or_secret_is_in_any_pages_html(browser: Any, console: Console) -> None:
    for who in (ALPHA, BRAVO, "operator"):
        page = await signed_in(browser, console, who)
        pages = await crawl(page, f"{console.url}/console/logs")
        pages.update(await crawl(page, f"{console.url}/console/operations"))
        cookie = (await page.context.cookies())[0]["value"]
        for url, html in pages.items():
            for secret in [*console.secrets, cookie]:
                assert secret not in html, url
            assert not re.search(r"rbk_[0-9a-f]{12}_", html), url
        await page.context.close()


async def test_a_form_posted_from_another_site_changes_nothing(browser: Any, console: Console) -> None:
    target = console.keys[BRAVO].split("_")[1]
    page = await signed_in(browser, console, "operator")  # the operator's cookie is in this browser
    evil_port = free_port()
    # another site: a page of its own origin (localhost, not 127.0.0.1) posting to the console by itself
    form = (f"<form id=f method=post action='{console.url}/console/operations/keys/{target}/revoke'>"
            "<input name=csrf value=guess></form><script>document.getElementById('f').submit()</script>")

    async def other_site(request: web.Request) -> web.Response:
        return web.Response(text=form, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", other_site)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", evil_port).start()
    try:
        answers: list[int] = []
        page.on("response", lambda response: answers.append(response.status) if "/revoke" in response.url else None)
        await page.goto(f"http://localhost:{evil_port}/")
        await page.wait_for_load_state("networkidle")
        assert answers and all(status in (303, 403) for status in answers), answers
    finally:
        await runner.cleanup()
    assert console.key_rows()[target][4] == "-"  # bravo's key not revoked ...
    assert (await console.sdk(BRAVO).responses.create(model=MODEL, input="still here")).status == "completed"
    # ... and the same post with the operator's cookie but without the page's token, even claiming the console's
    # own origin, is refused too
    cookie = (await page.context.cookies())[0]["value"]
    async with aiohttp.ClientSession() as session, session.post(
            f"{console.url}/console/operations/keys/{target}/revoke", data={"csrf": "guess"},
            cookies={"rb_console": cookie}, allow_redirects=False,
            headers={"Origin": console.url, "Sec-Fetch-Site": "same-origin"}) as answer:
        assert answer.status == 403
    assert console.key_rows()[target][4] == "-"
    await page.context.close()


async def test_pages_carry_a_strict_policy_and_the_api_is_untouched(console: Console) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{console.url}/console/sign-in") as answer:
            policy = answer.headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "unsafe-inline" not in policy
            assert "<script" not in await answer.text()
        async with session.get(f"{console.url}/console/logs", allow_redirects=False) as answer:
            assert answer.status == 303 and answer.headers["Location"] == "/console/sign-in"
        async with session.get(f"{console.url}/v1/responses/{console.made.call}") as answer:
            assert answer.status == 401  # the API still wants its key: the console's route opened nothing


async def test_without_keys_the_console_answers_loopback_only_not_envoys_clients(fake_upstream: str,
                                                                               tmp_path: Path) -> None:
    """``auth: none``: the console on the HTTP door from loopback is its tenant's operator; the same page asked for
    through Envoy's listener (which may face anyone, and forwards from loopback) is a 403."""
    async with running_sidecar(str(tmp_path), fake_upstream, env={"RESPONSES_BRIDGE_CONSOLE": "on"}) as sidecar, \
            envoy_before(sidecar) as envoy, aiohttp.ClientSession() as session:
        async with session.get(f"{sidecar.http_url}/console/operations") as answer:
            assert answer.status == 200 and "Operations" in await answer.text()
        async with session.get(f"{envoy}/console/operations") as answer:
            assert answer.status == 403 and "loopback only" in await answer.text()
