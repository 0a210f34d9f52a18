"""The console's edges, asked as a hand-written client would (aiohttp, no browser): a real sidecar's HTTP door with
keys (two tenants and two operators, their keys made by ``responses-bridge keys create``) and one without keys.

What it proves, each beside its control: signing out ends that sign-in on the server (the cookie kept from before is
refused; another sign-in of the same key is not ended); the key a viewer is signed in with and the last usable
operator's key cannot be revoked from the console (a 409 saying why), while another key can; a form carrying only
``Origin`` (a browser that sends no ``Sec-Fetch-Site``) is accepted from the console's own origin and refused from
another or from ``null``, and the pages' referrer policy keeps that ``Origin`` (``same-origin``); a new key's tenant
name is checked (a newline, a NUL, 5,000 characters, ``*``, separators, a bidi override: refused whole, nothing
made), on the console and by ``keys create``; ``?tenant=*`` is a name, not every tenant; ``/favicon.ico`` is a 204,
never a 401."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responses_bridge.services.tenancy.tenant_names import MAX_CHARS
from tests.support.bridge import Sidecar, create_keys, keys_command, running_sidecar
from tests.support.sdk import async_sdk

MODEL = "fake-model"
CHROMIUM = "/usr/bin/chromium"
ALPHA, BRAVO = "alpha", "bravo"
BAD_NAMES = ["acme\nforged", "acme\x00nul", "a" * 5000, "a" * (MAX_CHARS + 1), "*", "team/a", "team:a", "a,b",
             "a b", "a;b", "evil\u202etxt.exe", "tab\tname", ""]


@dataclass
class Stack:
    sidecar: Sidecar
    db: str
    keys: dict[str, str]  # alpha, bravo, op1, op2

    @property
    def url(self) -> str:
        return self.sidecar.http_url

    def key_id(self, who: str) -> str:
        return self.keys[who].split("_")[1]

    def revoked(self) -> dict[str, bool]:
        """``keys list``: by key id, whether it is revoked."""
        listed = keys_command(self.db, "list")
        assert listed.returncode == 0, listed.stderr
        return {line.split()[0]: line.split()[4] != "-" for line in listed.stdout.splitlines()[1:]}


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("console-edges")
    db = str(tmp / "bridge.db")
    keys = create_keys(db, [ALPHA, BRAVO])
    for who in ("op1", "op2"):
        made = keys_command(db, "create", "--operator")  # the operator's default tenant (`operator`)
        assert made.returncode == 0, made.stderr
        keys[who] = made.stdout.strip()
    async with running_sidecar(str(tmp), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_CONSOLE": "on"}) as sidecar:
        started = Stack(sidecar, db, keys)
        for who in (ALPHA, BRAVO):
            client = async_sdk(base_url=f"{sidecar.http_url}/v1", api_key=keys[who], max_retries=0, timeout=60)
            await client.responses.create(model=MODEL, input=f"{who}'s counted response")
        yield started


async def sign_in(stack: Stack, who: str) -> str:
    """The cookie of a fresh sign-in with ``who``'s key, posted with ``Origin`` alone (no Sec-Fetch-Site)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.post(
            f"{stack.url}/console/sign-in", data={"key": stack.keys[who]}, allow_redirects=False,
            headers={"Origin": stack.url}) as answer:
        assert answer.status == 303 and answer.headers["Location"] == "/console/logs", await answer.text()
        return answer.cookies["rb_console"].value


async def page(stack: Stack, cookie: str, path: str) -> tuple[int, str, Mapping[str, str]]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.get(
            stack.url + path, headers={"Cookie": f"rb_console={cookie}"}, allow_redirects=False) as answer:
        return answer.status, await answer.text(), answer.headers


async def csrf(stack: Stack, cookie: str) -> str:
    status, html, _ = await page(stack, cookie, "/console/logs")  # every page's sign-out form carries it
    assert status == 200, html[:300]
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def post(stack: Stack, cookie: str, path: str, form: dict[str, str], *,
               origin: str | None = "self") -> tuple[int, str]:
    headers = {"Cookie": f"rb_console={cookie}"}
    if origin is not None:
        headers["Origin"] = stack.url if origin == "self" else origin
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.post(
            stack.url + path, data=form, headers=headers, allow_redirects=False) as answer:
        return answer.status, await answer.text()


async def test_signing_out_ends_that_sign_in_on_the_server(stack: Stack) -> None:
    kept, other = await sign_in(stack, ALPHA), await sign_in(stack, ALPHA)
    assert (await page(stack, kept, "/console/logs"))[0] == 200  # the control: the cookie works before
    token = await csrf(stack, kept)
    status, _ = await post(stack, kept, "/console/sign-out", {"csrf": token})
    assert status == 303
    status, _, headers = await page(stack, kept, "/console/logs")  # the same cookie replayed
    assert status == 303 and headers["Location"] == "/console/sign-in"
    assert (await page(stack, kept, "/console/operations"))[0] == 303
    # another sign-in with the same key is its own, and still works
    assert (await page(stack, other, "/console/logs"))[0] == 200


async def test_the_signed_in_key_and_the_last_operator_key_are_not_revoked_from_the_console(stack: Stack) -> None:
    cookie = await sign_in(stack, "op1")
    token = await csrf(stack, cookie)
    # the key this viewer is signed in with: refused, saying why, and still working
    status, html = await post(stack, cookie, f"/console/operations/keys/{stack.key_id('op1')}/revoke",
                              {"csrf": token})
    assert status == 409 and "signed in with" in html, html[:500]
    assert not stack.revoked()[stack.key_id("op1")]
    assert (await page(stack, cookie, "/console/operations"))[0] == 200
    # the control: another key (bravo's) is revoked, and the API refuses it at once
    status, _ = await post(stack, cookie, f"/console/operations/keys/{stack.key_id(BRAVO)}/revoke", {"csrf": token})
    assert status == 303 and stack.revoked()[stack.key_id(BRAVO)]
    async with aiohttp.ClientSession() as session, session.get(
            f"{stack.url}/v1/models", headers={"Authorization": f"Bearer {stack.keys[BRAVO]}"}) as answer:
        assert answer.status == 401
    # another operator's key: op1's stays usable, so op2's may go
    status, _ = await post(stack, cookie, f"/console/operations/keys/{stack.key_id('op2')}/revoke", {"csrf": token})
    assert status == 303 and stack.revoked()[stack.key_id("op2")]


async def test_without_keys_the_last_operator_key_is_not_revoked(fake_upstream: str, tmp_path: Path) -> None:
    """``auth: none``: the console's operator holds no key, so the last operator's key in the store is reachable by
    the form; it is refused, while the one before it (another still usable) is revoked."""
    db = str(tmp_path / "none.db")
    made = [keys_command(db, "create", "--operator") for _ in range(2)]
    assert all(one.returncode == 0 for one in made), [one.stderr for one in made]
    first, last = (one.stdout.strip().split("_")[1] for one in made)
    async with running_sidecar(str(tmp_path), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_CONSOLE": "on"}) as sidecar, aiohttp.ClientSession() as session:
        async with session.get(f"{sidecar.http_url}/console/operations") as answer:
            token = re.search(r'name="csrf" value="([^"]+)"', await answer.text())
        assert token is not None

        async def revoke(key_id: str) -> tuple[int, str]:
            async with session.post(f"{sidecar.http_url}/console/operations/keys/{key_id}/revoke",
                                    data={"csrf": token.group(1)}, headers={"Origin": sidecar.http_url},
                                    allow_redirects=False) as answer:
                return answer.status, await answer.text()

        assert (await revoke(first))[0] == 303
        status, html = await revoke(last)
        assert status == 409 and "last usable operator" in html, html[:500]
    listed = keys_command(db, "list").stdout.splitlines()[1:]
    revoked = {line.split()[0]: line.split()[4] != "-" for line in listed}
    assert revoked == {first: True, last: False}


async def test_forms_with_origin_alone_are_accepted_from_the_console_and_refused_from_elsewhere(
        stack: Stack) -> None:
    cookie = await sign_in(stack, "op1")  # itself a form posted with Origin alone
    token = await csrf(stack, cookie)
    status, _, headers = await page(stack, cookie, "/console/operations")
    assert headers["Referrer-Policy"] == "same-origin"  # what keeps a browser's Origin on these forms
    for origin in ("http://evil.example", "null", stack.url.replace("127.0.0.1", "localhost")):
        status, _ = await post(stack, cookie, "/console/operations/keys", {"csrf": token, "tenant": "never-made"},
                               origin=origin)
        assert status == 403, origin
    status, html = await post(stack, cookie, "/console/operations/keys", {"csrf": token, "tenant": "made-by-origin"})
    assert status == 200 and "made-by-origin" in html
    tenants = keys_command(stack.db, "list").stdout
    assert "made-by-origin" in tenants and "never-made" not in tenants


async def test_bad_tenant_names_are_refused_on_the_console_and_by_keys_create(stack: Stack) -> None:
    cookie = await sign_in(stack, "op1")
    token = await csrf(stack, cookie)
    before = stack.revoked()
    for name in BAD_NAMES:
        status, html = await post(stack, cookie, "/console/operations/keys", {"csrf": token, "tenant": name})
        assert status == 400, (name[:20], status)
        assert ("letters, digits" in html) or ("Name the tenant" in html), html[:300]
    assert stack.revoked().keys() == before.keys()  # no key was made
    for name in [name for name in BAD_NAMES if "\x00" not in name and name]:  # argv cannot carry a NUL
        made = keys_command(stack.db, "create", "--tenant", name)
        assert made.returncode == 2 and made.stdout == "" and "letters, digits" in made.stderr, (name[:20], made)
    assert stack.revoked().keys() == before.keys()
    # the controls: names of letters, digits (any script) and . _ - @ + ~ are made, on both
    status, html = await post(stack, cookie, "/console/operations/keys", {"csrf": token, "tenant": "team.a_b-c@x+y~z"})
    assert status == 200, html[:300]
    made = keys_command(stack.db, "create", "--tenant", "équipe-" + "a" * (MAX_CHARS - 7))
    assert made.returncode == 0, made.stderr


async def test_a_star_is_a_tenant_name_never_every_tenant(stack: Stack) -> None:
    cookie = await sign_in(stack, "op1")

    def counted(html: str) -> int:
        found = re.search(r"(\d+) stored responses counted", html)
        assert found is not None, html[:300]
        return int(found.group(1))

    every = counted((await page(stack, cookie, "/console/usage"))[1])
    assert every >= 2  # the control: alpha's and bravo's responses, counted for an operator asking for every tenant
    assert counted((await page(stack, cookie, "/console/usage?tenant=*"))[1]) == 0
    assert counted((await page(stack, cookie, "/console/usage?tenant=alpha"))[1]) >= 1
    status, html, _ = await page(stack, cookie, "/console/logs?tenant=*")
    assert status == 200 and "counted response" not in html


async def test_favicon_is_answered_without_a_key(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/favicon.ico") as answer:
            assert answer.status == 204
        async with session.get(f"{stack.url}/v1/models") as answer:
            assert answer.status == 401  # the control: the API still wants its key


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no system Chromium at /usr/bin/chromium")
async def test_a_browsers_own_forms_carry_the_consoles_origin(stack: Stack) -> None:
    """In Chromium: the sign-in and Operations forms go out with ``Origin`` the console's own (the ``same-origin``
    referrer policy; under ``no-referrer`` it was ``null``) and are accepted."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            posts: list[tuple[str, str | None]] = []

            async def seen(request: Any) -> None:
                if request.method == "POST":
                    posts.append((request.url, (await request.all_headers()).get("origin")))

            page.on("request", seen)
            await page.goto(f"{stack.url}/console/sign-in")
            await page.fill("input[name=key]", stack.keys["op1"])
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r"/console/logs$"))
            await page.goto(f"{stack.url}/console/operations")
            await page.fill("form[action='/console/operations/keys'] input[name=tenant]", "made-in-chromium")
            async with page.expect_response(lambda answer: answer.request.method == "POST"
                                            and answer.url.endswith("/console/operations/keys")) as made:
                await page.click("form[action='/console/operations/keys'] button[type=submit]")
            assert (await made.value).status == 200
            await page.wait_for_load_state()
            assert "made-in-chromium" in await page.content()
        finally:
            await browser.close()
    assert [url.removeprefix(stack.url) for url, _ in posts] == ["/console/sign-in", "/console/operations/keys"]
    assert all(origin == stack.url for _, origin in posts), posts
