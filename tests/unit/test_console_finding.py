"""The logs' finding on both stores (store/browsing.py, adapters/http/console/logs.py and log_filters.py): a text in a
request's input items finds its response; the filters the index holds (metadata, a time range) and those found in
the stored JSON then checked (user, conversation, error code) each take exactly their responses and only the
tenant's; a page without a search says its total and pages newer as well as older; a row's answer says what it is;
prices sum exactly; and a return path after signing in is the console's own or none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.adapters.http.console import logs
from responses_bridge.adapters.http.console.items import summary_text
from responses_bridge.adapters.http.console.pricing import Prices, money, tokens
from responses_bridge.adapters.http.console.sign_in import return_path
from responses_bridge.config.console import ModelPrice
from responses_bridge.store.browsing import ResponseBrowser
from responses_bridge.store.records import ResponseFilter
from tests.support.stores import KINDS, Stores, open_stores
from tests.unit.test_console_browsing import answer
from tests.unit.test_store import user_item

A, B = "team-a", "team-b"


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with open_stores(request.param, request, tmp_path) as opened:
        yield opened


async def save(stores: Stores, response: dict[str, Any], said: str = "", tenant: str = A,
               metadata: dict[str, str] | None = None) -> None:
    response["metadata"] = metadata or {}
    await stores.responses.save_response(response, [user_item(f"in_{response['id']}", said or None)], tenant=tenant)


async def ids(browser: ResponseBrowser, filters: logs.Filters, tenant: str = A) -> list[str]:
    return [row.id for row in (await logs.log_page(browser, tenant, filters, None)).rows]


async def test_a_word_only_in_the_input_finds_its_response(stores: Stores) -> None:
    browser: ResponseBrowser = stores.responses.browser
    await save(stores, answer("asked", "an answer", created=1000), "where does the Ochre pelican nest")
    await save(stores, answer("other", "another answer", created=1001), "nothing here")
    await save(stores, answer("theirs", "theirs", created=1002), "the ochre pelican", tenant=B)
    assert await ids(browser, logs.Filters(text="ochre PELICAN")) == ["asked"]
    assert await ids(browser, logs.Filters(text="another answer")) == ["other"]  # the response's own JSON still
    assert await ids(browser, logs.Filters(text="ochre pelican"), tenant=B) == ["theirs"]
    sizes, _ = await browser.response_sizes(tenant=A, after=None, where=ResponseFilter(), limit=5, inputs=True)
    plain, _ = await browser.response_sizes(tenant=A, after=None, where=ResponseFilter(), limit=5)
    assert all(counted > alone for (_, counted), (_, alone) in zip(sizes, plain, strict=True))


async def test_each_filter_takes_exactly_its_responses(stores: Stores) -> None:
    browser: ResponseBrowser = stores.responses.browser
    first = answer("first", "x", created=1000)
    first.update(user="u-1", conversation={"id": "conv_1"})
    second = answer("second", "conv_1", created=2000)  # the values as whole strings, in other fields
    second.update(instructions="u-1", safety_identifier="u-2", status="failed",
                  error={"code": "rate_limit_exceeded", "message": "m"})
    await save(stores, first, metadata={"project": "kestrel"})
    await save(stores, second, metadata={"project": "osprey"})
    await save(stores, answer("theirs", "x", created=1500), tenant=B, metadata={"project": "kestrel"})
    assert await ids(browser, logs.Filters(meta="project=kestrel")) == ["first"]
    assert await ids(browser, logs.Filters(meta="project=kestrel"), tenant=B) == ["theirs"]
    assert await ids(browser, logs.Filters(user="u-1")) == ["first"]  # named, not merely written elsewhere
    assert await ids(browser, logs.Filters(user="u-2")) == ["second"]  # a safety_identifier too
    assert await ids(browser, logs.Filters(conversation="conv_1")) == ["first"]
    assert await ids(browser, logs.Filters(error="rate_limit_exceeded")) == ["second"]
    assert await ids(browser, logs.Filters.of({"start": "1970-01-01T00:16", "end": "1970-01-01T00:30"})) == ["first"]
    assert logs.Filters.of({"start": "yesterday", "meta": "no pair", "status": "odd"}).query() == {}


async def test_a_plain_page_says_its_total_and_pages_both_ways(stores: Stores) -> None:
    browser: ResponseBrowser = stores.responses.browser
    for n in range(30):
        await save(stores, answer(f"resp_{n:02}", "x", created=1000 + n))
    first = await logs.log_page(browser, A, logs.Filters(), None)
    assert first.total == 30 and len(first.rows) == 25 and first.newer_before is None
    assert first.next_after == "resp_05"
    second = await logs.log_page(browser, A, logs.Filters(), first.next_after)
    assert [row.id for row in second.rows] == [f"resp_{n:02}" for n in reversed(range(5))]
    assert second.next_after is None and second.newer_before == "resp_04"
    back = await logs.log_page(browser, A, logs.Filters(), None, second.newer_before)
    assert [row.id for row in back.rows] == [row.id for row in first.rows]
    assert back.newer_before is None and back.next_after == "resp_05"
    assert await browser.count_responses(tenant=A, where=ResponseFilter(), cap=10) == 11  # counted no further
    assert await browser.count_responses(tenant=B, where=ResponseFilter(), cap=10) == 0


def test_a_rows_answer_says_what_it_is() -> None:
    refused = {"output": [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't help."}]}]}
    assert summary_text(refused) == "refused: I can't help."
    calls = {"output": [{"type": "function_call", "name": "lookup_weather"}, {"type": "web_search_call"}]}
    assert summary_text(calls) == "calls lookup_weather(), web_search_call"


def test_prices_sum_exactly() -> None:
    prices = Prices({"gpt-4o": ModelPrice(input=Decimal("2.5"), cached_input=Decimal("1.25"), output=Decimal(10)),
                     "gpt-4*": ModelPrice(input=Decimal(30), output=Decimal(60))})
    usage = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400}, "output_tokens": 100}
    assert prices.spend("gpt-4o", usage) == Decimal("0.003")  # (600 x 2.5 + 400 x 1.25 + 100 x 10) per million
    assert prices.spend("gpt-4-turbo", usage) == Decimal("0.036")  # the prefix; cached at the input price
    assert prices.spend("llama", usage) is None and prices.spend("gpt-4o", None) is None
    assert money(sum((Decimal("0.0000001"),) * 10, Decimal(0))) == "0.000001" and money(None) == ""
    assert not Prices({})


@pytest.mark.parametrize("value", ["https://elsewhere.example/console/logs", "//elsewhere.example/console/",
                                   "/\\elsewhere.example", "/console/../v1/responses", "/console/%2e%2e/v1",
                                   "/console/a%2fb", "/v1/responses", "javascript:alert(1)", "/console/x\r\ny",
                                   "/console/sign-in?next=/console/logs", "/console/" + "a" * 3000, "", None])
def test_a_return_path_elsewhere_is_refused(value: str | None) -> None:
    assert return_path(value) is None


def test_a_console_path_is_returned_to() -> None:
    assert return_path("/console/logs/resp_1?output=50") == "/console/logs/resp_1?output=50"
    assert return_path("/console/sessions/sesn_1/traces") == "/console/sessions/sesn_1/traces"


def timed(ttft_ms: float, latency_ms: float) -> list[Any]:
    """A stored timing document as observability/timing.py keeps it: ``[3, ttft ms, latency ms, origin, waits,
    upstream, replica, spans, dropped]``."""
    return [3, ttft_ms, latency_ms, 0.0, {}, None, None, [], 0]


async def test_a_sorted_page_lists_the_slowest_first_with_their_times(stores: Stores) -> None:
    browser: ResponseBrowser = stores.responses.browser
    latencies = [120.0, 5.5, 900.0, 40.0]
    for n, latency in enumerate(latencies):
        await stores.responses.save_response(answer(f"timed_{n}", "x", created=1000 + n), [], tenant=A,
                                             timing=timed(latency / 10, latency))
    await save(stores, answer("untimed", "x", created=1100))
    await stores.responses.save_response(answer("theirs", "x", created=1200), [], tenant=B,
                                         timing=timed(1.0, 5000.0))
    page = await logs.log_page(browser, A, logs.Filters(sort="latency"), None)
    assert [row.id for row in page.rows] == ["timed_2", "timed_0", "timed_3", "timed_1"]
    assert [row.latency_ms for row in page.rows] == [900.0, 120.0, 40.0, 5.5] and page.rows[0].ttft_ms == 90.0
    assert page.next_offset is None and page.previous_offset is None
    by_ttft = await logs.log_page(browser, A, logs.Filters(sort="ttft", model="nothing"), None)
    assert by_ttft.rows == []
    newest = await logs.log_page(browser, A, logs.Filters(), None)
    assert newest.rows[0].id == "untimed" and newest.rows[0].latency_ms is None
    sizes, more = await browser.slowest_sizes(tenant=A, where=ResponseFilter(), by="ttft", offset=1, limit=2)
    assert [name for name, _ in sizes] == ["timed_0", "timed_3"] and more


def test_usage_totals_spend_is_the_sum_of_each_responses() -> None:
    from responses_bridge.adapters.http.console.usage import totals

    prices = Prices({"m": ModelPrice(input=Decimal("0.15"), cached_input=Decimal("0.075"), output=Decimal("0.6"))})
    usages = [{"input_tokens": 10 + n, "input_tokens_details": {"cached_tokens": n % 4}, "output_tokens": 3 * n}
              for n in range(50)]
    summed = [51, 0, 0, 0, 0, 1]  # one said no usage: counted, not priced
    for usage in usages:
        counted = tokens(usage)
        assert counted is not None
        for n, value in enumerate(counted, start=1):
            summed[n] += value
    free, priced = totals("t", {"m": summed, "free": [1, 1, 0, 4, 5, 0]}, prices)
    assert priced.spend == sum((prices.spend("m", usage) or Decimal(0) for usage in usages), Decimal(0))
    assert priced.requests == 51 and priced.unpriced == 1
    assert free.spend is None and free.unpriced == 0 and free.total_tokens == 5


def test_a_running_responses_pieces_are_its_text_masked_until_it_ends() -> None:
    from responses_bridge.adapters.http.console.live import pieces

    def frame(kind: str, **fields: Any) -> bytes:
        return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **fields}) + b"\n\n"

    running = (frame("response.created", response={}) + frame("response.output_text.delta", delta="Hello ")
               + frame("response.output_text.delta", delta="key sk-abcdefghijklmnopqrstuvwx"))
    texts, ended = pieces(running)
    assert texts[0] == "Hello " and "abcdefghijklmnop" not in texts[1] and not ended
    assert pieces(frame("response.refusal.delta", delta="no") + frame("response.completed", response={})) == (
        ["no"], True)


USAGES: list[Any] = [
    {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 20}, "output_tokens": 30, "total_tokens": 150},
    {"prompt_tokens": 7, "prompt_tokens_details": {"cached_tokens": 9}, "completion_tokens": 2},  # cached > input
    {"input_tokens": 5, "output_tokens": None, "total_tokens": 5},  # counts none: a request, never priced
    {"input_tokens": 3, "input_tokens_details": "odd", "output_tokens": 4, "total_tokens": 7},
    None,  # no usage at all (a failed response)
    {"input_tokens": 1_000_003, "input_tokens_details": {"cached_tokens": 999_999}, "output_tokens": 77_777,
     "total_tokens": 1_077_780},
]


def parsed_usage(responses: list[dict[str, Any]], prices: Prices) -> dict[str, tuple[Any, ...]]:
    """Usage's totals by model as the page counted them before its columns: each stored response parsed, its
    tokens counted by pricing.tokens(), each priced response's spend summed (the control the SQL sums must equal)."""
    found: dict[str, list[Any]] = {}
    for response in responses:
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
        total = usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else 0
        into = found.setdefault(str(response.get("model") or "?"), [0, 0, 0, 0, 0, 0, None])
        counted = tokens(usage)
        into[0] += 1
        into[4] += total
        if counted is None:
            into[5] += 1
            continue
        for n, value in enumerate(counted, start=1):
            into[n] += value
        spent = prices.spend(str(response.get("model")), usage)
        if spent is not None:
            into[6] = (into[6] or Decimal(0)) + spent
    return {model: tuple(sums) for model, sums in found.items()}


async def test_usage_sums_in_the_database_equal_the_parsed_responses_by_model_and_key(stores: Stores) -> None:
    from responses_bridge.adapters.http.console import usage as usage_page
    from responses_bridge.store.timings import CALLER_KEY_ID

    prices = Prices({"gpt-4o": ModelPrice(input=Decimal("2.5"), cached_input=Decimal("1.25"), output=Decimal("10")),
                     "mini*": ModelPrice(input=Decimal("0.15"), output=Decimal("0.6"))})
    now = int(__import__("time").time())
    mine: list[dict[str, Any]] = []
    for n in range(24):
        response = answer(f"use_{n}", "x", created=now - 60 * n)
        response["model"] = ("gpt-4o", "mini-2", "free-model", "")[n % 4]
        usage = USAGES[n % len(USAGES)]
        if usage is None:
            response.pop("usage", None)
        else:
            response["usage"] = usage
        mine.append(response)
        if n % 3 == 0:  # made with key_1, as the identity says it (a context variable: no argument passed)
            made = CALLER_KEY_ID.set("key_1")
            try:
                await stores.responses.save_response(response, [], tenant=A)
            finally:
                CALLER_KEY_ID.reset(made)
        else:
            await stores.responses.save_response(response, [], tenant=A, key_id="key_2" if n % 3 == 1 else None)
    theirs = answer("use_theirs", "x", created=now)
    theirs["usage"] = USAGES[0]
    await stores.responses.save_response(theirs, [], tenant=B, key_id="key_1")  # another tenant's, same key id
    old = answer("use_old", "x", created=now - 2 * 86400)  # outside the day's window
    old["usage"] = USAGES[0]
    await stores.responses.save_response(old, [], tenant=A, key_id="key_1")

    shown = await usage_page.usage(stores.responses, [A], "24h", by_tenant=False, prices=prices)
    expected = parsed_usage(mine, prices)
    assert {total.model: (total.requests, total.input_tokens, total.cached_tokens, total.output_tokens,
                          total.total_tokens, total.unpriced if total.spend is not None else 0, total.spend)
            for total in shown.totals} == {
        model: (*sums[:5], sums[5] if sums[6] is not None else 0, sums[6]) for model, sums in expected.items()}
    assert shown.counted == 24 and not shown.cut_short
    assert sum(series.requests for series in shown.charts[0].series) == 24
    by_key = {total.key: total for total in shown.by("key")}
    assert set(by_key) == {"key_1", "key_2", usage_page.NO_KEY}
    assert [by_key[key].requests for key in ("key_1", "key_2", usage_page.NO_KEY)] == [8, 8, 8]
    assert by_key["key_1"].spend == sum((value for value in (
        prices.spend(str(response["model"]), response.get("usage")) for response in mine[::3]) if value is not None),
        Decimal(0))
    assert sum((total.spend or Decimal(0) for total in by_key.values()), Decimal(0)) == shown.spend

    browser: ResponseBrowser = stores.responses.browser
    keyed, _ = await browser.response_sizes(tenant=A, after=None, where=ResponseFilter(key_id="key_1"), limit=50)
    assert {name for name, _ in keyed} == {"use_old", *(f"use_{n}" for n in range(0, 24, 3))}
    assert await browser.count_responses(tenant=B, where=ResponseFilter(key_id="key_2"), cap=10) == 0
    page = await logs.log_page(browser, A, logs.Filters(key="key_2"), None)
    assert {row.id for row in page.rows} == {f"use_{n}" for n in range(1, 24, 3)}


async def test_the_migration_fills_usage_columns_as_a_save_does(stores: Stores) -> None:
    from responses_bridge.store.timings import POSTGRES_USAGE_BACKFILL, SQLITE_USAGE_BACKFILL, usage_columns

    saved: dict[str, tuple[Any, ...]] = {}
    for n, usage in enumerate([*USAGES, {"input_tokens": 2}, {"prompt_tokens": 4, "completion_tokens": 1,
                                                              "input_tokens_details": {"cached_tokens": 3}}]):
        response = answer(f"fill_{n}", "x", created=1000 + n)
        response["usage"] = usage
        await stores.responses.save_response(response, [], tenant=A)
        saved[response["id"]] = usage_columns(response)
    columns = "input_tokens, cached_tokens, output_tokens, coalesce(total_tokens, 0)"
    if stores.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(stores.responses.path) as conn:
            conn.execute("UPDATE responses SET input_tokens = NULL, cached_tokens = NULL, output_tokens = NULL, "
                         "total_tokens = NULL")
            conn.execute(SQLITE_USAGE_BACKFILL)
            filled = {row[0]: tuple(row[1:]) for row in conn.execute(f"SELECT id, {columns} FROM responses")}
    else:
        async with stores.responses.db.transaction() as conn:
            await conn.execute("UPDATE responses SET input_tokens = NULL, cached_tokens = NULL, "
                               "output_tokens = NULL, total_tokens = NULL")
            await conn.execute(POSTGRES_USAGE_BACKFILL)
            filled = {row[0]: tuple(row[1:]) for row in await conn.fetch(f"SELECT id, {columns} FROM responses")}
    assert filled == saved
