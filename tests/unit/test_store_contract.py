"""The store contract, run on both stores: SQLite and a real PostgreSQL server (tests/support/stores.py).

Everything here is what callers rely on whichever store is configured: exact round trips, cursor pages, chains,
conversations, prompts, the event log, retention purges, and ownership (another tenant's object answers exactly
like a missing one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.store.base import ConversationStore, PromptStore, ResponseStore
from responses_bridge.store.records import (
    InvalidCursor,
    InvalidPageArgs,
    PromptVersionConflict,
    ResponseFilter,
    ResponseIdTaken,
)
from tests.support.stores import KINDS, Stores, open_stores
from tests.unit.test_store import assistant_item, make_response, user_item

A, B = "team-a", "team-b"


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with open_stores(request.param, request, tmp_path) as opened:
        yield opened


async def chain(stores: Stores, length: int, *, tenant: str = A, prefix: str = "resp") -> list[str]:
    ids: list[str] = []
    previous = None
    for n in range(length):
        response_id = f"{prefix}_{n}"
        await stores.responses.save_response(make_response(response_id, previous=previous),
                                             [user_item(f"in_{prefix}_{n}")], tenant=tenant)
        ids.append(response_id)
        previous = response_id
    return ids


def ids_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


# -- responses ----------------------------------------------------------------------------------------------------


async def test_protocols(stores: Stores) -> None:
    assert isinstance(stores.responses, ResponseStore)
    assert isinstance(stores.conversations, ConversationStore)
    assert isinstance(stores.prompts, PromptStore)
    assert stores.responses.is_open
    assert stores.responses.write_stall_seconds() == 0.0


async def test_round_trip_is_exact_and_owned(stores: Stores) -> None:
    response = make_response("resp_1")
    await stores.responses.save_response(response, [user_item("in_1")], tenant=A)
    assert await stores.responses.get_response("resp_1", tenant=A) == response
    assert await stores.responses.get_response("resp_1", tenant=B) is None
    assert await stores.responses.get_response("resp_missing", tenant=A) is None


async def test_update_in_place_replaces_items(stores: Stores) -> None:
    await stores.responses.save_response(make_response("r", status="in_progress", output=[]), [user_item("i1")],
                                         tenant=A)
    done = make_response("r", output=[assistant_item("m1"), assistant_item("m2")])
    await stores.responses.save_response(done, [user_item("i1")], tenant=A)
    assert await stores.responses.get_response("r", tenant=A) == done
    assert ids_of(await stores.responses.load_history("r", tenant=A)) == ["i1", "m1", "m2"]


async def test_an_id_of_another_tenant_is_never_overwritten(stores: Stores) -> None:
    original = make_response("r")
    await stores.responses.save_response(original, [user_item("i1")], tenant=A)
    with pytest.raises(ResponseIdTaken):
        await stores.responses.save_response(make_response("r", output=[assistant_item("evil")]),
                                             [user_item("evil_in")], tenant=B)
    assert await stores.responses.get_response("r", tenant=A) == original
    assert ids_of(await stores.responses.load_history("r", tenant=A)) == ["i1", "msg_r"]


async def test_delete_is_owned_and_takes_items_and_events(stores: Stores) -> None:
    await stores.responses.save_response(make_response("r"), [user_item("i1")], tenant=A)
    await stores.events.append("r", [(0, b"event: a\n\n")], tenant=A)
    assert not await stores.responses.delete_response("r", tenant=B)
    assert await stores.responses.get_response("r", tenant=A) is not None
    assert await stores.responses.delete_response("r", tenant=A)
    assert not await stores.responses.delete_response("r", tenant=A)
    assert await stores.responses.load_history("r", tenant=A) is None
    assert await stores.events.after("r", -1, tenant=A) == []
    # the id is free again, with nothing left over from before
    await stores.responses.save_response(make_response("r"), [], tenant=B)
    assert ids_of(await stores.responses.load_history("r", tenant=B)) == ["msg_r"]


async def test_missing_id_is_refused(stores: Stores) -> None:
    with pytest.raises(ValueError, match="'id'"):
        await stores.responses.save_response({"object": "response"}, [], tenant=A)


# -- input items --------------------------------------------------------------------------------------------------


@pytest.fixture
async def paged(stores: Stores) -> Stores:
    await stores.responses.save_response(make_response("p"), [user_item(f"it_{n}") for n in range(7)], tenant=A)
    return stores


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_input_item_pages(paged: Stores, order: str) -> None:
    everything = [f"it_{n}" for n in range(7)]
    if order == "desc":
        everything.reverse()
    seen: list[str] = []
    after = None
    while True:
        page = await paged.responses.list_input_items("p", tenant=A, after=after, limit=3, order=order)
        seen += ids_of(page.data)
        if not page.has_more:
            break
        after = page.last_id
    assert seen == everything
    before = await paged.responses.list_input_items("p", tenant=A, before=everything[5], limit=2, order=order)
    assert ids_of(before.data) == everything[3:5]
    assert before.has_more


async def test_input_items_errors_and_owner(paged: Stores) -> None:
    assert await paged.responses.list_input_items("p", tenant=B) is None
    assert await paged.responses.list_input_items("nope", tenant=A) is None
    with pytest.raises(InvalidCursor):
        await paged.responses.list_input_items("p", tenant=A, after="msg_p")  # an output item is no cursor
    with pytest.raises(InvalidPageArgs):
        await paged.responses.list_input_items("p", tenant=A, limit=0)
    with pytest.raises(InvalidPageArgs):
        await paged.responses.list_input_items("p", tenant=A, order="up")


# -- history ------------------------------------------------------------------------------------------------------


async def test_history_of_a_twenty_turn_chain(stores: Stores) -> None:
    ids = await chain(stores, 20)
    history = await stores.responses.load_history(ids[-1], tenant=A)
    assert ids_of(history) == [part for n in range(20) for part in (f"in_resp_{n}", f"msg_resp_{n}")]
    assert await stores.responses.load_history(ids[-1], tenant=B) is None


async def test_deleted_or_foreign_link_cuts_the_chain(stores: Stores) -> None:
    ids = await chain(stores, 4)
    assert await stores.responses.delete_response(ids[1], tenant=A)
    assert ids_of(await stores.responses.load_history(ids[3], tenant=A)) == [
        "in_resp_2", "msg_resp_2", "in_resp_3", "msg_resp_3"]
    # B continues from A's response id: B's walk stops at the id it does not own
    await stores.responses.save_response(make_response("b_1", previous=ids[3]), [user_item("in_b")], tenant=B)
    assert ids_of(await stores.responses.load_history("b_1", tenant=B)) == ["in_b", "msg_b_1"]


async def test_history_of_a_response_without_items_is_empty(stores: Stores) -> None:
    await stores.responses.save_response(make_response("e", output=[]), [], tenant=A)
    assert await stores.responses.load_history("e", tenant=A) == []


# -- listing ------------------------------------------------------------------------------------------------------


def listed(response_id: str, created_at: int, *, model: str = "m1", status: str = "completed",
           metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "created_at": created_at, "status": status, "model": model,
            "output": [], "metadata": metadata or {}}


async def test_listing_order_cursors_filters_and_owner(stores: Stores) -> None:
    rows = [listed(f"r{n:02d}", 1000 + n // 2, model="m2" if n % 3 == 0 else "m1",
                   status="failed" if n % 4 == 0 else "completed", metadata={"team": "x" if n % 2 else "y"})
            for n in range(12)]
    for row in rows:
        await stores.responses.save_response(row, [], tenant=A)
    await stores.responses.save_response(listed("other", 1005), [], tenant=B)
    newest_first = [row["id"] for row in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)]
    seen: list[str] = []
    after = None
    while True:
        page = await stores.responses.list_responses(tenant=A, after=after, limit=5)
        seen += page.ids
        if not page.has_more:
            break
        after = page.ids[-1]
    assert seen == newest_first
    first = await stores.responses.list_responses(tenant=A, limit=1)
    assert orjson.loads(first.data[0]) == rows[-1]
    previous = await stores.responses.list_responses(tenant=A, before=newest_first[6], limit=3)
    assert previous.ids == newest_first[3:6]
    ascending = await stores.responses.list_responses(tenant=A, limit=100, order="asc")
    assert ascending.ids == newest_first[::-1]
    models = await stores.responses.list_responses(tenant=A, limit=100, where=ResponseFilter(model="m2"))
    assert set(models.ids) == {row["id"] for row in rows if row["model"] == "m2"}
    both = ResponseFilter(status="failed", metadata=(("team", "y"),))
    filtered = await stores.responses.list_responses(tenant=A, limit=100, where=both)
    assert set(filtered.ids) == {row["id"] for row in rows if row["status"] == "failed"
                                 and row["metadata"]["team"] == "y"}
    two_pairs = ResponseFilter(metadata=(("team", "x"), ("absent", "z")))
    assert (await stores.responses.list_responses(tenant=A, limit=100, where=two_pairs)).ids == []
    assert (await stores.responses.list_responses(tenant=B, limit=100)).ids == ["other"]
    with pytest.raises(InvalidCursor):
        await stores.responses.list_responses(tenant=A, after="other")
    with pytest.raises(InvalidCursor):
        await stores.responses.list_responses(tenant=B, before="r01")


async def test_concurrent_saves_all_land(stores: Stores) -> None:
    await asyncio.gather(*(stores.responses.save_response(make_response(f"c{n}"), [user_item(f"ci{n}")], tenant=A)
                           for n in range(40)))
    page = await stores.responses.list_responses(tenant=A, limit=100)
    assert sorted(page.ids) == sorted(f"c{n}" for n in range(40))


# -- retention -----------------------------------------------------------------------------------------------------


async def test_purge_responses_by_tenant_cutoff(stores: Stores) -> None:
    for n, tenant in enumerate((A, A, B)):
        await stores.responses.save_response(listed(f"old{n}", 100), [user_item(f"o{n}")], tenant=tenant)
    await stores.responses.save_response(listed("running", 100, status="in_progress"), [], tenant=A)
    await stores.responses.save_response(listed("new", 900), [], tenant=A)
    await stores.events.append("old0", [(0, b"x")], tenant=A)
    assert sorted(await stores.responses.response_tenants()) == [A, B]
    assert await stores.responses.purge_responses({A: 500}, limit=1) == 1
    assert await stores.responses.purge_responses({A: 500}, limit=10) == 1
    assert await stores.responses.purge_responses({A: 500}, limit=10) == 0
    assert (await stores.responses.list_responses(tenant=A, limit=10, order="asc")).ids == ["running", "new"]
    assert await stores.responses.get_response("old2", tenant=B) is not None
    assert await stores.events.after("old0", -1, tenant=A) == []


# -- event log ----------------------------------------------------------------------------------------------------


async def test_event_log(stores: Stores) -> None:
    await stores.responses.save_response(listed("bg", 100, status="queued"), [], tenant=A)
    await stores.events.append("bg", [(0, b"e0"), (1, b"e1"), (2, b"e2")], tenant=A)
    await stores.events.append("bg", [(2, b"again"), (3, b"e3")], tenant=A)
    await stores.events.append("bg", [(4, b"intruder")], tenant=B)
    assert await stores.events.after("bg", 0, tenant=A) == [(1, b"e1"), (2, b"e2"), (3, b"e3")]
    assert await stores.events.after("bg", -1, tenant=B) == []
    await stores.events.truncate("bg", 3, tenant=B)
    await stores.events.truncate("bg", 3, tenant=A)
    assert [seq for seq, _ in await stores.events.after("bg", -1, tenant=A)] == [0, 1, 2]
    assert await stores.events.unfinished() == [(A, listed("bg", 100, status="queued"))]
    final = listed("bg", 100, status="completed")
    await stores.events.end_response(final, lambda n: f"done {n}".encode(), tenant=B)
    assert (await stores.responses.get_response("bg", tenant=A))["status"] == "queued"
    await stores.events.end_response(final, lambda n: f"done {n}".encode(), tenant=A)
    assert await stores.responses.get_response("bg", tenant=A) == final
    assert (await stores.events.after("bg", 2, tenant=A)) == [(3, b"done 3")]
    assert await stores.events.unfinished() == []


# -- conversations ------------------------------------------------------------------------------------------------


async def test_conversation_items_in_order_and_owned(stores: Stores) -> None:
    conversations = stores.conversations
    await conversations.create_conversation("conv_1", 100, {"topic": "t"}, [user_item("a")], tenant=A)
    assert await conversations.append_items("conv_1", [user_item("b"), user_item("c")], tenant=A)
    assert not await conversations.append_items("conv_1", [user_item("x")], tenant=B)
    assert ids_of(await conversations.load_items("conv_1", tenant=A)) == ["a", "b", "c"]
    assert await conversations.load_items("conv_1", tenant=B) is None
    assert (await conversations.get_conversation("conv_1", tenant=A)).metadata == {"topic": "t"}
    assert await conversations.get_conversation("conv_1", tenant=B) is None
    assert await conversations.update_conversation("conv_1", {"x": "y"}, tenant=B) is None
    assert (await conversations.update_conversation("conv_1", {"x": "y"}, tenant=A)).metadata == {"x": "y"}
    page = await conversations.list_items("conv_1", tenant=A, limit=2, order="asc")
    assert ids_of(page.data) == ["a", "b"] and page.has_more
    page = await conversations.list_items("conv_1", tenant=A, after="b", order="asc")
    assert ids_of(page.data) == ["c"] and not page.has_more
    assert ids_of((await conversations.list_items("conv_1", tenant=A, after="c")).data) == ["b", "a"]
    assert await conversations.list_items("conv_1", tenant=B) is None
    with pytest.raises(InvalidCursor):
        await conversations.list_items("conv_1", tenant=A, after="zz")
    assert (await conversations.get_item("conv_1", "b", tenant=A))["id"] == "b"
    assert await conversations.get_item("conv_1", "b", tenant=B) is None
    assert not await conversations.delete_item("conv_1", "b", tenant=B)
    assert await conversations.delete_item("conv_1", "b", tenant=A)
    assert ids_of(await conversations.load_items("conv_1", tenant=A)) == ["a", "c"]
    assert not await conversations.delete_conversation("conv_1", tenant=B)
    assert await conversations.delete_conversation("conv_1", tenant=A)
    assert await conversations.load_items("conv_1", tenant=A) is None


async def test_empty_conversation_and_concurrent_appends(stores: Stores) -> None:
    conversations = stores.conversations
    await conversations.create_conversation("conv_e", 100, {}, [], tenant=A)
    assert await conversations.load_items("conv_e", tenant=A) == []
    assert await conversations.append_items("conv_e", [], tenant=A)
    await asyncio.gather(*(conversations.append_items("conv_e", [user_item(f"p{n}_{k}") for k in range(3)],
                                                      tenant=A) for n in range(10)))
    items = ids_of(await conversations.load_items("conv_e", tenant=A))
    assert len(items) == 30 and len(set(items)) == 30
    for n in range(10):  # each append stays contiguous
        start = items.index(f"p{n}_0")
        assert items[start:start + 3] == [f"p{n}_0", f"p{n}_1", f"p{n}_2"]


async def test_a_turn_joins_only_the_tenants_conversation(stores: Stores) -> None:
    await stores.conversations.create_conversation("conv_t", 100, {}, [user_item("first")], tenant=A)
    await stores.responses.save_response(make_response("turn_b"), [user_item("in_b")], tenant=B,
                                         conversation_id="conv_t")
    await stores.responses.save_response(make_response("turn_a"), [user_item("in_a")], tenant=A,
                                         conversation_id="conv_t")
    assert ids_of(await stores.conversations.load_items("conv_t", tenant=A)) == ["first", "in_a", "msg_turn_a"]
    assert await stores.responses.get_response("turn_b", tenant=B) is not None


async def test_conversation_listing_and_purge(stores: Stores) -> None:
    for n in range(5):
        await stores.conversations.create_conversation(f"cv{n}", 100 + n, {}, [], tenant=A)
    await stores.conversations.create_conversation("cvb", 100, {}, [], tenant=B)
    page = await stores.conversations.list_conversations(tenant=A, limit=2)
    assert [c.id for c in page.data] == ["cv4", "cv3"] and page.has_more
    page = await stores.conversations.list_conversations(tenant=A, after="cv3", limit=10, order="desc")
    assert [c.id for c in page.data] == ["cv2", "cv1", "cv0"] and not page.has_more
    page = await stores.conversations.list_conversations(tenant=A, before="cv1", limit=10, order="asc")
    assert [c.id for c in page.data] == ["cv0"]
    with pytest.raises(InvalidCursor):
        await stores.conversations.list_conversations(tenant=A, after="cvb")
    assert sorted(await stores.conversations.conversation_tenants()) == [A, B]
    assert await stores.conversations.purge_conversations({A: 103}, limit=100) == 3
    assert [c.id for c in (await stores.conversations.list_conversations(tenant=A)).data] == ["cv4", "cv3"]
    assert await stores.conversations.get_conversation("cvb", tenant=B) is not None


# -- prompts ------------------------------------------------------------------------------------------------------


async def test_prompt_versions_defaults_conflicts_and_owner(stores: Stores) -> None:
    prompts = stores.prompts
    await prompts.create_prompt("pmpt_1", 100, {"name": "one", "instructions": "v1"}, tenant=A)
    v2 = await prompts.add_version("pmpt_1", 101, {"name": "one", "instructions": "v2"}, 1, tenant=A)
    assert v2 is not None and v2.version == 2 and v2.latest_version == 2
    with pytest.raises(PromptVersionConflict):
        await prompts.add_version("pmpt_1", 102, {"instructions": "stale"}, 1, tenant=A)
    assert await prompts.add_version("pmpt_1", 102, {"instructions": "x"}, tenant=B) is None
    assert (await prompts.get_prompt("pmpt_1", tenant=A)).body["instructions"] == "v2"
    assert await prompts.get_prompt("pmpt_1", tenant=B) is None
    assert (await prompts.get_prompt("pmpt_1", 1, tenant=A)).body["instructions"] == "v1"
    assert await prompts.get_prompt("pmpt_1", 9, tenant=A) is None
    assert await prompts.set_default_version("pmpt_1", 1, tenant=B) is None
    assert await prompts.set_default_version("pmpt_1", 9, tenant=A) is None
    default = await prompts.set_default_version("pmpt_1", 1, tenant=A)
    assert default is not None and default.default_version == 1
    assert (await prompts.get_prompt("pmpt_1", tenant=A)).version == 1
    assert [v.version for v in await prompts.list_versions("pmpt_1", tenant=A)] == [1, 2]
    assert await prompts.list_versions("pmpt_1", tenant=B) is None
    assert not await prompts.delete_prompt("pmpt_1", tenant=B)
    assert await prompts.delete_prompt("pmpt_1", tenant=A)
    assert await prompts.get_prompt("pmpt_1", tenant=A) is None


async def test_concurrent_prompt_updates_from_one_version_one_wins(stores: Stores) -> None:
    await stores.prompts.create_prompt("pmpt_c", 100, {"instructions": "v1"}, tenant=A)
    outcomes = await asyncio.gather(*(stores.prompts.add_version("pmpt_c", 101, {"instructions": f"w{n}"}, 1,
                                                                 tenant=A) for n in range(6)),
                                    return_exceptions=True)
    assert sum(1 for outcome in outcomes if not isinstance(outcome, BaseException)) == 1
    assert all(isinstance(outcome, PromptVersionConflict) for outcome in outcomes
               if isinstance(outcome, BaseException))


async def test_prompt_listing_is_per_tenant_in_creation_order(stores: Stores) -> None:
    for n in range(5):
        await stores.prompts.create_prompt(f"pm{n}", 100, {"instructions": str(n)}, tenant=A)
    await stores.prompts.create_prompt("pmb", 100, {}, tenant=B)
    first, more = await stores.prompts.list_prompts(tenant=A, limit=2)
    assert [p.id for p in first] == ["pm4", "pm3"] and more
    rest, more = await stores.prompts.list_prompts(tenant=A, after="pm3", limit=10)
    assert [p.id for p in rest] == ["pm2", "pm1", "pm0"] and not more
    ascending, _ = await stores.prompts.list_prompts(tenant=A, after="pm2", order="asc")
    assert [p.id for p in ascending] == ["pm3", "pm4"]
    assert [p.id for p in (await stores.prompts.list_prompts(tenant=B))[0]] == ["pmb"]


# --- the bridge's own API keys -------------------------------------------------------------------------------------


async def test_api_keys_resolve_only_the_genuine_key_and_revoking_keeps_the_row(stores: Stores) -> None:
    text, made = await stores.api_keys.create_key(A, expires_at=4_000_000_000)
    other, _ = await stores.api_keys.create_key(B)
    resolved = await stores.api_keys.resolve_key(text)
    assert resolved is not None and resolved.key == made and resolved.key.tenant == A
    assert (await stores.api_keys.resolve_key(other)).key.tenant == B
    key_id, secret = text.split("_", 2)[1:]
    forged = f"rbk_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    for wrong in (forged, f"rbk_{'0' * 12}_{secret}", text + "x", "", "not a key"):
        assert await stores.api_keys.resolve_key(wrong) is None, wrong
    assert await stores.api_keys.revoke_key(made.id)
    assert not await stores.api_keys.revoke_key("0" * 12)
    revoked = (await stores.api_keys.resolve_key(text)).key
    assert revoked.revoked_at is not None and not revoked.usable(revoked.revoked_at)
    await stores.api_keys.revoke_key(made.id)  # revoking again keeps the first time
    assert (await stores.api_keys.resolve_key(text)).key.revoked_at == revoked.revoked_at
    listed = await stores.api_keys.list_keys()
    assert listed == sorted(listed, key=lambda key: (key.created_at, key.id))  # oldest first
    assert {key.id for key in listed} == {made.id, (await stores.api_keys.resolve_key(other)).key.id}
    assert all(not hasattr(key, "secret_hash") for key in listed)


async def test_an_operators_key_is_marked_and_a_key_is_found_by_its_id(stores: Stores) -> None:
    """The console's sign-in: an operator's key keeps its mark through every read; a key's row is found by its id
    alone (never its secret), revoked or not."""
    text, made = await stores.api_keys.create_key("ops", operator=True)
    _, plain = await stores.api_keys.create_key(A)
    assert made.operator and not plain.operator
    assert (await stores.api_keys.resolve_key(text)).key.operator  # type: ignore[union-attr]
    assert await stores.api_keys.find_key(made.id) == made
    assert await stores.api_keys.find_key(plain.id) == plain
    assert await stores.api_keys.find_key("0" * 12) is None
    await stores.api_keys.revoke_key(made.id)
    found = await stores.api_keys.find_key(made.id)
    assert found is not None and found.operator and found.revoked_at is not None
    assert {key.id: key.operator for key in await stores.api_keys.list_keys()} == {made.id: True, plain.id: False}


async def test_a_console_sign_out_is_kept_until_its_cookie_expires_then_dropped(stores: Stores) -> None:
    """Sign-out ends a console sign-in on the server: the store says so for that sign-in only; a row past its
    expiry goes when the next sign-out is written, so the table never grows with old ones."""
    import time

    now = int(time.time())
    assert not await stores.api_keys.sign_in_ended("a" * 32)
    await stores.api_keys.end_sign_in("a" * 32, now + 3600)
    await stores.api_keys.end_sign_in("b" * 32, now - 1)  # already expired: dropped by the next one
    assert await stores.api_keys.sign_in_ended("a" * 32) and not await stores.api_keys.sign_in_ended("c" * 32)
    assert await stores.api_keys.sign_in_ended("b" * 32)  # past its expiry but not yet dropped: a read writes nothing
    await stores.api_keys.end_sign_in("a" * 32, now + 7200)  # twice: kept once, and the expired row dropped
    assert await stores.api_keys.sign_in_ended("a" * 32) and not await stores.api_keys.sign_in_ended("b" * 32)


async def test_listing_narrowed_to_a_time_range(stores: Stores) -> None:
    """The console's time filter: ``created_after`` (inclusive) and ``created_before`` (exclusive) bound the page
    as a range of the listing index, with the other filters and the cursors."""
    for n in range(6):
        await stores.responses.save_response(listed(f"t{n}", 1000 + n * 10, model="m2" if n % 2 else "m1"), [],
                                             tenant=A)
    since = await stores.responses.list_responses(tenant=A, where=ResponseFilter(created_after=1020))
    assert since.ids == ["t5", "t4", "t3", "t2"]
    window = ResponseFilter(created_after=1010, created_before=1040, model="m1")
    assert (await stores.responses.list_responses(tenant=A, where=window)).ids == ["t2"]
    since_1010 = ResponseFilter(created_after=1010)
    paged = await stores.responses.list_responses(tenant=A, after="t4", limit=2, where=since_1010)
    assert paged.ids == ["t3", "t2"] and paged.has_more
    assert (await stores.responses.list_responses(tenant=B, where=ResponseFilter(created_after=0))).ids == []


# --- a NUL character from a client (PostgreSQL's text cannot hold one) ---------------------------------------------


async def test_a_nul_in_ids_and_metadata_finds_nothing_or_round_trips(stores: Stores) -> None:
    odd = listed("r_nul", 1000, metadata={"team": "a\x00b"})
    await stores.responses.save_response(odd, [user_item("i_nul", "text with \x00 inside")], tenant=A)
    assert await stores.responses.get_response("r_nul", tenant=A) == odd  # the body is stored as JSON, unchanged
    history = await stores.responses.load_history("r_nul", tenant=A)
    assert history is not None and history[0]["content"][0]["text"] == "text with \x00 inside"
    page = await stores.responses.list_responses(tenant=A, where=ResponseFilter(metadata=(("team", "a\x00b"),)))
    assert page.ids == ["r_nul"]
    for missing in ("r_\x00", "\x00"):
        assert await stores.responses.get_response(missing, tenant=A) is None
        assert await stores.responses.load_history(missing, tenant=A) is None
        assert await stores.conversations.get_conversation(missing, tenant=A) is None
        assert await stores.prompts.get_prompt(missing, tenant=A) is None
        assert not await stores.responses.delete_response(missing, tenant=A)
        assert await stores.api_keys.resolve_key(missing) is None
