"""The console's edges against a real sidecar (keys mode, two tenants, the store the run asks for): what a page of it
reads, holds and sends is bounded whatever a tenant stored, and a search never holds another tenant's API calls.

What it proves, each beside its control:
- a text search over 40 stored 5 MB responses finds the two that hold the text, while another tenant's small API
  calls (``GET /v1/responses/{id}``, its key resolved on each) keep answering: not one waits behind the search, their
  p95 stays within 100 ms or a generous multiple of the same calls' p95 with no search running, and the sidecar's
  RSS grows by far less than the searched bytes (the finding: 106 such responses took 3.3 s, RSS 233 -> 770 MiB,
  and the other tenant's 1 ms call 1.25 s);
- a response of 10,000 items, and one of 700 calls of 20 KB each, is a page of at most 2 MB (they were 3.4 MB and
  14 MB): its items come 50 at a time with a link to the next, each cut one links to its own page, which shows it;
- a bidi override stored in a response's text shows as a visible marker on every page, never as the control itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest

from tests.support.bridge import Sidecar, create_keys, running_sidecar
from tests.support.memory import peak_while, status_kb
from tests.support.postgres import STORE_ENV

MODEL = "fake-model"
ALPHA, BRAVO = "alpha", "bravo"
BIG = 5 * 1024 * 1024
STORED = 40
NEEDLE = "kingfisher"
PAGE_BOUND = 2 * 1024 * 1024
RLO = "\u202e"


@dataclass
class Setup:
    sidecar: Sidecar
    keys: dict[str, str]
    cookie: str  # alpha's console cookie
    big: list[str]  # alpha's 40 large responses, oldest first
    bravo: str  # bravo's small response


async def create(session: aiohttp.ClientSession, url: str, key: str, body: dict) -> dict:
    async with session.post(f"{url}/v1/responses", json={"model": MODEL, **body},
                            headers={"Authorization": f"Bearer {key}"}) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def sign_in(session: aiohttp.ClientSession, url: str, key: str) -> str:
    async with session.post(f"{url}/console/sign-in", data={"key": key}, allow_redirects=False,
                            headers={"Origin": url}) as answer:
        assert answer.status == 303, await answer.text()
        return answer.cookies["rb_console"].value


async def page(session: aiohttp.ClientSession, setup: Setup, path: str) -> tuple[int, str]:
    async with session.get(f"{setup.sidecar.http_url}{path}", allow_redirects=False,
                           headers={"Cookie": f"rb_console={setup.cookie}"}) as answer:
        return answer.status, await answer.text()


@pytest.fixture(scope="module")
async def setup(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("console-reads")
    db = str(tmp / "bridge.db")
    keys = create_keys(db, [ALPHA, BRAVO])
    async with running_sidecar(str(tmp), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_CONSOLE": "on"}) as sidecar, \
            aiohttp.ClientSession() as session:
        url = sidecar.http_url
        filler = "lorem ipsum dolor sit amet " * (BIG // 2 // 27)  # echoed: the stored response holds it twice over
        big: list[str] = []
        for n in range(STORED):  # one at a time, oldest first: the needle is in the two the search reaches last
            text = f"{NEEDLE} {n} " + filler if n < 2 else f"plain {n} " + filler
            big.append((await create(session, url, keys[ALPHA], {"input": text, "store": True}))["id"])
        bravo = (await create(session, url, keys[BRAVO], {"input": "bravo's small question"}))["id"]
        yield Setup(sidecar, keys, await sign_in(session, url, keys[ALPHA]), big, bravo)


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 2 else latencies[0]


async def bravo_calls(session: aiohttp.ClientSession, setup: Setup, until: asyncio.Event | None,
                      count: int = 0) -> list[tuple[float, float]]:
    """Bravo's ``GET /v1/responses/{id}``, one after another, until ``until`` is set (or ``count`` of them):
    each call's (start, end) on the monotonic clock."""
    spans: list[tuple[float, float]] = []
    headers = {"Authorization": f"Bearer {setup.keys[BRAVO]}"}
    while (until is not None and not until.is_set()) or len(spans) < count:
        started = time.monotonic()
        async with session.get(f"{setup.sidecar.http_url}/v1/responses/{setup.bravo}", headers=headers) as answer:
            assert answer.status == 200
            await answer.read()
        spans.append((started, time.monotonic()))
        await asyncio.sleep(0.01)
    return spans


async def test_a_search_over_large_responses_never_holds_another_tenants_calls(setup: Setup) -> None:
    pid = setup.sidecar.process.pid
    async with aiohttp.ClientSession() as session:
        control = [end - start for start, end in await bravo_calls(session, setup, None, count=60)]
        before = status_kb(pid, "VmRSS")
        done = asyncio.Event()
        searches: list[tuple[float, float, str]] = []

        async def search() -> None:
            try:
                for _ in range(3):
                    started = time.monotonic()
                    status, html = await page(session, setup, f"/console/logs?text={NEEDLE.upper()}")
                    assert status == 200
                    searches.append((started, time.monotonic(), html))
            finally:
                done.set()

        calls = asyncio.create_task(bravo_calls(session, setup, done))
        peak, _ = await peak_while(lambda: status_kb(pid, "VmRSS"), before, search())
        spans = await calls
    for _, _, html in searches:
        found = re.findall(r'class="response-link" href="/console/logs/([\w.-]+)"', html)
        assert found == [setup.big[1], setup.big[0]], found  # the two holding the text, newest first
        assert "Search stopped" not in html  # 40 x 5 MB is within one page's budget
    took = sorted(end - start for start, end, _ in searches)
    during = [end - start for start, end in spans]
    print(f"\nsearch over {STORED} x {BIG >> 20} MB: {[f'{t:.2f}' for t in took]} s; bravo p95 "
          f"{p95(during) * 1000:.0f} ms during ({len(during)} calls) vs {p95(control) * 1000:.0f} ms control; "
          f"RSS +{(peak - before) / 1024:.0f} MiB")
    # the 2 s is measured, not asserted (alone: SQLite 0.14-0.53 s, PostgreSQL 1.4-1.9 s, whose server
    # decompresses, converts and lower-cases each TOASTed 5 MB row before its strpos): the full suite's seven
    # workers on two cores stretch any wall-clock figure several times over. What is asserted is the shape: the
    # best of three within a bound no search that parsed the rows on the event loop met (3.3 s for 106 there,
    # alone), here with room for the load (PostgreSQL: 1.1 s alone, 15.7 s once in a full run, its server shared
    # by the pass's workers and the sqlite pass's seven on two cores)
    assert took[0] < (8.0 if os.environ.get(STORE_ENV, "sqlite") == "sqlite" else 24.0), took
    for start, end, _ in searches:  # bravo's calls went on during a search: none waited for the search to end
        if end - start > 0.3:  # (a search quicker than that leaves room for too few calls to count)
            assert sum(1 for call_start, call_end in spans if start <= call_start and call_end <= end) >= 2
    # beside its control, measured in the same load: the 100 ms holds alone (37-67 ms vs 12-15 ms), while
    # the suite's load alone moves a p95 by hundreds of milliseconds; a call queued behind a search waited for all
    # of it (1.25 s before)
    assert p95(during) <= max(0.3, 4 * p95(control) + 0.15), (during, control)
    assert (peak - before) / 1024 < 160  # MiB: one response parsed at a time, never the 200 MB searched


async def test_a_response_of_10000_items_is_a_bounded_page_with_the_rest_a_link_away(setup: Setup) -> None:
    calls: list[dict] = []
    for n in range(5000):
        calls += [{"type": "function_call", "call_id": f"call_{n}", "name": "lookup", "arguments": f'{{"n": {n}}}'},
                  {"type": "function_call_output", "call_id": f"call_{n}", "output": f"result {n}"}]
    async with aiohttp.ClientSession() as session:
        made = await create(session, setup.sidecar.http_url, setup.keys[ALPHA],
                            {"input": [*calls, {"role": "user", "content": "and now?"}],
                             "tools": [{"type": "function", "name": "lookup", "parameters": {}}]})
        status, html = await page(session, setup, f"/console/logs/{made['id']}")
        assert status == 200 and len(html.encode()) <= PAGE_BOUND, len(html.encode())
        assert html.count('class="item ') == 50 + len(made["output"])
        more = re.search(r'class="more-items" href="([^"]+)"', html)
        assert more is not None and "input=50" in more.group(1)
        status, following = await page(session, setup, more.group(1).replace("&amp;", "&"))
        assert status == 200 and "call_25" in following and "call_24" not in following
        status, last = await page(session, setup, f"/console/logs/{made['id']}?input=9990")
        assert status == 200 and "and now?" in last and 'class="more-items"' not in last
        for odd in ("-1", "\u00b2", "1e3", "x", "9" * 40):  # a start that is no small whole number: the first page
            status, first = await page(session, setup, f"/console/logs/{made['id']}?input={odd}")
            assert status == 200 and 'class="more-items"' in first and "call_0" in first
    print(f"\n10,000 items: a page of {len(html.encode()) / 1024:.0f} KB")


async def test_700_calls_of_20_kb_are_a_bounded_page_each_cut_linking_to_its_own_page(setup: Setup) -> None:
    payload = "w" * 20_000
    calls: list[dict] = []
    for n in range(700):
        calls += [{"type": "function_call", "call_id": f"call_{n}", "name": "lookup",
                   "arguments": orjson.dumps({"n": n, "data": payload}).decode()},
                  {"type": "function_call_output", "call_id": f"call_{n}", "output": f"result {n}"}]
    async with aiohttp.ClientSession() as session:
        made = await create(session, setup.sidecar.http_url, setup.keys[ALPHA],
                            {"input": [*calls, {"role": "user", "content": "so?"}],
                             "tools": [{"type": "function", "name": "lookup", "parameters": {}}]})
        status, html = await page(session, setup, f"/console/logs/{made['id']}")
        assert status == 200 and len(html.encode()) <= PAGE_BOUND, len(html.encode())
        whole = re.findall(r'class="show-more" href="([^"]+)"', html)
        assert len(whole) == 25  # every call was cut (its outputs were not)
        status, own = await page(session, setup, whole[0].replace("&amp;", "&"))
        assert status == 200 and payload in own  # the whole item, on its own page
        assert (await page(session, setup, f"/console/logs/{made['id']}/input/999999"))[0] == 404
    print(f"\n700 calls of 20 KB: a page of {len(html.encode()) / 1024:.0f} KB")


async def test_a_bidi_override_shows_as_a_marker_not_as_itself(setup: Setup) -> None:
    async with aiohttp.ClientSession() as session:
        made = await create(session, setup.sidecar.http_url, setup.keys[ALPHA],
                            {"input": f"invoice{RLO}fdp.exe", "instructions": f"be {RLO}terse"})
        plain = await create(session, setup.sidecar.http_url, setup.keys[ALPHA], {"input": "invoice.pdf"})
        pages = [await page(session, setup, path) for path in (
            "/console/logs", f"/console/logs/{made['id']}", f"/console/logs/{made['id']}/input/0",
            "/console/logs?text=invoice")]
        status, control = await page(session, setup, f"/console/logs/{plain['id']}")
    for status, html in pages:
        assert status == 200
        assert RLO not in html and "\u27e8U+202E\u27e9" in html
    assert status == 200 and "invoice.pdf" in control and "U+202E" not in control  # the control: no marker
