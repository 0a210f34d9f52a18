"""The console's one route on the HTTP door, in-process over a runtime on an in-memory store: off by default (a 404
as for any unknown URL), its pages imported only by the first ``/console`` request, open without keys on loopback
only, and its sign-in cookie refused when altered or expired. (The pages themselves, in a real browser against a
real sidecar, are tests/integration/test_console.py.)"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp.test_utils import TestClient, TestServer

from responses_bridge.adapters.http.app import create_app
from responses_bridge.adapters.http.console import sign_in
from responses_bridge.config.settings import Settings
from responses_bridge.store.sqlite.api_keys import SQLiteApiKeyStore
from responses_bridge.store.sqlite.responses import SQLiteResponseStore
from tests.support.runtime import runtime_over

PAGES = "responses_bridge.adapters.http.console.pages"


@asynccontextmanager
async def door(**settings: object) -> AsyncIterator[TestClient]:
    async with SQLiteResponseStore(":memory:") as store:
        runtime = runtime_over(store, Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", **settings))
        runtime.api_keys = SQLiteApiKeyStore(store)
        async with TestClient(TestServer(create_app(runtime))) as client:
            yield client


async def test_the_console_is_off_unless_asked_for() -> None:
    async with door() as client:
        answer = await client.get("/console/logs")
        assert answer.status == 404 and (await answer.json())["error"]["code"] == "unknown_url"


async def test_its_pages_load_on_the_first_console_request_only() -> None:
    for name in [name for name in sys.modules if name.startswith(PAGES)]:
        del sys.modules[name]
    async with door(console="on") as client:
        assert (await client.get("/health")).status == 200
        assert PAGES not in sys.modules  # serving the API imports none of it
        answer = await client.get("/console/logs")  # auth: none, from loopback: the operator of the one tenant
        assert answer.status == 200 and "default-src 'self'" in answer.headers["Content-Security-Policy"]
        assert PAGES in sys.modules
        proxied = await client.get("/console/logs", headers={"X-Forwarded-Proto": "http"})  # loopback, but a proxy's
        assert proxied.status == 403 and "loopback only" in await proxied.text()
    async with door(console="on", console_remote=True) as client:
        assert (await client.get("/console/logs", headers={"X-Forwarded-Proto": "http"})).status == 200


async def test_with_keys_a_page_asks_for_a_sign_in_and_the_api_for_its_key() -> None:
    async with door(console="on", auth="keys") as client:
        answer = await client.get("/console/logs", allow_redirects=False)
        assert answer.status == 303 and answer.headers["Location"] == "/console/sign-in"
        assert (await client.get("/v1/responses/resp_x")).status == 401  # the API's own check stands


@pytest.mark.parametrize(("address", "loopback"), [("127.0.0.1", True), ("::1", True), ("10.1.2.3", False),
                                                   ("", False), ("not-an-address", False)])
def test_loopback_is_what_the_address_says(address: str, loopback: bool) -> None:
    assert sign_in._loopback(address) is loopback


async def test_a_cookie_is_a_sealed_key_id_that_expires() -> None:
    async with SQLiteResponseStore(":memory:") as store:
        runtime = runtime_over(store, Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", auth="keys",
                                               console="on"))
        runtime.api_keys = keys = SQLiteApiKeyStore(store)
        text, key = await keys.create_key("acme")
        signing = sign_in.SignIn(runtime)
        cookie = await signing.sign_in(text)
        assert cookie is not None and text not in cookie and key.id not in cookie
        viewer = await signing._cookie_viewer(cookie)
        assert viewer is not None and (viewer.tenant, viewer.operator, viewer.key_id) == ("acme", False, key.id)
        assert await signing._cookie_viewer(cookie[:-4] + "AAAA") is None  # altered
        expired = runtime.sealer.seal(sign_in.PURPOSE, {"k": key.id, "c": "x", "e": int(time.time()) - 1})
        assert await signing._cookie_viewer(expired) is None
        await keys.revoke_key(key.id)
        assert await signing._cookie_viewer(cookie) is None  # revoked: signed out at the next page
        assert await signing.sign_in("rbk_000000000000_" + "A" * 43) is None
