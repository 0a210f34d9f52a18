"""The console's reads (store/browsing.py) and the pages built on them (adapters/http/console/logs.py, detail.py), on
both stores: sizes before content, a text found by the database however it is escaped in the stored JSON, a search
that stops at its byte budget saying so and continues from where it stopped, a page of large responses that ends
at its read budget, a response's items a page at a time and each bounded; and every read the tenant's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.adapters.http.console import detail, logs
from responses_bridge.adapters.http.console.items import ItemView, clip
from responses_bridge.adapters.http.console.visible import visible
from responses_bridge.store.browsing import ResponseBrowser, as_stored, like_pattern, whole_string
from responses_bridge.store.records import InvalidCursor, ResponseFilter
from tests.support.stores import KINDS, Stores, open_stores
from tests.unit.test_store import make_response, user_item

A, B = "team-a", "team-b"
EVERY = ResponseFilter()


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with open_stores(request.param, request, tmp_path) as opened:
        yield opened


def answer(response_id: str, text: str, *, created: int, tools: list[dict[str, Any]] | None = None,
           calls: Sequence[str] = ()) -> dict[str, Any]:
    response = make_response(response_id, output=[
        {"id": f"msg_{response_id}", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": text, "annotations": []}]},
        *({"id": f"fc_{response_id}_{n}", "type": "function_call", "call_id": f"call_{n}", "name": name,
           "arguments": "{}", "status": "completed"} for n, name in enumerate(calls))])
    response["created_at"] = created
    response["tools"] = tools or []
    return response


async def save(stores: Stores, response: dict[str, Any], tenant: str = A, inputs: int = 1) -> None:
    await stores.responses.save_response(response, [user_item(f"in_{response['id']}_{n}") for n in range(inputs)],
                                         tenant=tenant)


async def test_sizes_come_before_content_and_every_read_is_the_tenants(stores: Stores) -> None:
    browser: ResponseBrowser = stores.responses.browser
    for n in range(5):
        await save(stores, answer(f"resp_{n}", "x" * (1000 * (n + 1)), created=1000 + n))
    await save(stores, answer("resp_b", "bravo's", created=2000), tenant=B)
    sizes, more = await browser.response_sizes(tenant=A, after=None, where=EVERY, limit=3)
    assert [name for name, _ in sizes] == ["resp_4", "resp_3", "resp_2"] and more
    for name, size in sizes:
        stored = await browser.response_json(name, tenant=A)
        assert stored is not None and len(stored) == size
        assert orjson.loads(stored) == await stores.responses.get_response(name, tenant=A)
    batch = dict(await browser.responses_json(["resp_4", "resp_b", "resp_0", "nothing"], tenant=A))
    assert sorted(batch) == ["resp_0", "resp_4"] and batch["resp_0"] == await browser.response_json("resp_0", tenant=A)
    rest, more = await browser.response_sizes(tenant=A, after="resp_2", where=EVERY, limit=3)
    assert [name for name, _ in rest] == ["resp_1", "resp_0"] and not more
    with pytest.raises(InvalidCursor):
        await browser.response_sizes(tenant=A, after="resp_b", where=EVERY, limit=3)
    assert await browser.response_json("resp_b", tenant=A) is None
    assert await browser.responses_containing(["resp_b", "resp_0"], [as_stored("bravo")], tenant=A) == set()
    assert await browser.response_chain("resp_b", tenant=A, depth=5) == []
    assert await browser.item_sizes("resp_b", "input", tenant=A, start=0, limit=5) is None
    assert await browser.items_json("resp_b", "input", [0], tenant=A) == []


async def test_a_text_is_found_as_the_stored_json_holds_it(stores: Stores) -> None:
    browser: ResponseBrowser = stores.responses.browser
    texts = {"plain": "the Periwinkle heron", "quoted": 'she said "ok" then\nleft', "wild": "100% of a_b",
             "accent": "crème brûlée"}
    for n, (name, text) in enumerate(texts.items()):
        await save(stores, answer(name, text, created=1000 + n))
    ids = list(texts)

    async def found(text: str) -> set[str]:
        return await browser.responses_containing(ids, [as_stored(text)], tenant=A)

    assert await found("periwinkle HERON") == {"plain"}  # ASCII letters in either case
    assert await found('"ok" then\nleft') == {"quoted"}  # a quote and a newline, escaped in the JSON as stored
    assert await found("100% of a_b") == {"wild"} and await found("0% of a") == {"wild"}
    assert await found("1_0") == set() and await found("of %") == set()  # LIKE's wildcards are only themselves
    assert await found("crème") == {"accent"} and await found("CRèME") == {"accent"}  # ASCII letters only
    assert await found("no such words") == set()
    both = [as_stored("heron"), as_stored("Periwinkle")]
    assert await browser.responses_containing(ids, both, tenant=A) == {"plain"}


async def test_a_search_stops_at_its_budget_says_so_and_continues(stores: Stores,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    browser: ResponseBrowser = stores.responses.browser
    filler = "f" * 200_000
    for n in range(12):
        await save(stores, answer(f"resp_{n:02}", filler + (" kingfisher" if n in (0, 1) else ""), created=1000 + n))
    monkeypatch.setattr(logs, "SEARCH_BYTES", 1_000_000)
    monkeypatch.setattr(logs, "STATEMENT_BYTES", 450_000)
    filters = logs.Filters(text="KINGFISHER")
    page = await logs.log_page(browser, A, filters, None)
    assert page.searching and not page.rows and page.next_after is not None
    assert 1_000_000 <= page.scanned_bytes < 1_500_000 and page.scanned_mb == "1"
    found: list[str] = []
    cursor: str | None = page.next_after
    for _ in range(5):
        page = await logs.log_page(browser, A, filters, cursor)
        found += [row.id for row in page.rows]
        cursor = page.next_after
        if cursor is None:
            break
    assert found == ["resp_01", "resp_00"] and cursor is None and not page.searching
    assert page.rows[0].summary.startswith("f" * 100)
    monkeypatch.setattr(logs, "SEARCH_BYTES", 1 << 40)
    monkeypatch.setattr(logs, "SEARCH_ROWS", 4)  # however small the responses, a page examines so many at most
    page = await logs.log_page(browser, A, filters, None)
    assert page.searching and page.scanned == 4 and page.next_after == "resp_08"


async def test_a_page_of_large_responses_ends_at_its_read_budget(stores: Stores,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    browser: ResponseBrowser = stores.responses.browser
    for n in range(6):
        await save(stores, answer(f"resp_{n}", "y" * 300_000, created=1000 + n))
    monkeypatch.setattr(logs, "ROWS_BYTES", 700_000)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(6):
        page = await logs.log_page(browser, A, logs.Filters(), cursor)
        assert len(page.rows) <= 2 and (page.read_cut or page.next_after is None)
        seen += [row.id for row in page.rows]
        cursor = page.next_after
        if cursor is None:
            break
    assert seen == [f"resp_{n}" for n in reversed(range(6))]


async def test_a_tool_filter_takes_only_responses_that_used_the_tool(stores: Stores) -> None:
    browser: ResponseBrowser = stores.responses.browser
    weather = {"type": "function", "name": "lookup_weather", "parameters": {}}
    await save(stores, answer("called", "x", created=1001, tools=[weather], calls=["lookup_weather"]))
    await save(stores, answer("named", "lookup_weather is a word here", created=1002))
    await save(stores, answer("other", "nothing", created=1003))
    page = await logs.log_page(browser, A, logs.Filters(tool="Lookup_Weather"), None)
    assert [row.id for row in page.rows] == ["called"] and page.rows[0].tools == ["lookup_weather"]
    assert whole_string('a"b') == '"a\\"b"' and like_pattern("a_b%") == "%a\\_b\\%%"


async def test_a_responses_items_come_a_page_at_a_time_each_bounded(stores: Stores,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    browser: ResponseBrowser = stores.responses.browser
    first = answer("first", "earlier", created=1000)
    await save(stores, first)
    second = answer("second", "later", created=1001)
    second["previous_response_id"] = "first"
    await save(stores, second, inputs=120)
    third = answer("third", "last", created=1002)
    third["previous_response_id"] = "gone"
    await save(stores, third)

    shown = await detail.response_detail(browser, A, "second", lambda model: None, {"input": 0, "output": 0})
    assert shown is not None and [item.position for item in shown.inputs.shown] == list(range(50))
    assert shown.inputs.next_start == 50 and shown.outputs.next_start is None
    assert shown.chain == [("first", "earlier")] and shown.chain_gap is None
    later = await detail.item_page(browser, A, "second", "input", 100)
    assert later is not None and [item.position for item in later.shown] == list(range(100, 120))
    assert later.next_start is None
    gap = await detail.response_detail(browser, A, "third", lambda model: None, {})
    assert gap is not None and gap.chain == [] and gap.chain_gap == "gone"
    assert await detail.response_detail(browser, B, "second", lambda model: None, {}) is None

    monkeypatch.setattr(detail, "ITEMS_BYTES", 1)  # one item a page, whatever its size
    one = await detail.item_page(browser, A, "second", "input", 7)
    assert one is not None and [item.position for item in one.shown] == [7] and one.next_start == 8
    own = await detail.one_item(browser, A, "second", "input", 7)
    assert own is not None and own.item.text == ["text of in_second_7"]
    assert await detail.one_item(browser, B, "second", "input", 7) is None


def test_an_item_is_bounded_and_says_so() -> None:
    big = ItemView("function_call", "f" * 1000, "call", text=["t" * 3000],
                   blocks=[("arguments", "a" * 3000), ("output", "o" * 10)],
                   images=["data:image/png;base64," + "A" * 5000], links=[("title", "https://example.com/")])
    assert clip(big, 4000)
    assert len(big.title) <= 201 and big.text == ["t" * 3000]
    assert big.blocks[0][1].startswith("a" * 1000) and "2000 more characters" in big.blocks[0][1]
    assert big.blocks[1] == ("output", "… (10 more characters)") and not big.images
    assert big.blocks[-1][0] == "image"
    small = ItemView("message", "user", "message", text=["hello"])
    assert not clip(small, 4000) and small.text == ["hello"]


def test_bidi_controls_are_shown_not_obeyed() -> None:
    from markupsafe import Markup

    assert visible("file\u202etxt.exe") == "file\u27e8U+202E\u27e9txt.exe"
    assert visible("\u2066a\u2069\u200f") == "\u27e8U+2066\u27e9a\u27e8U+2069\u27e9\u27e8U+200F\u27e9"
    assert visible("plain") == "plain" and visible(3) == 3
    marked = visible(Markup("<b>\u202e</b>"))
    assert isinstance(marked, Markup) and marked == Markup("<b>\u27e8U+202E\u27e9</b>")
