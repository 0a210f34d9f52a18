"""item_reference items become the items they name, from the history or the input before them, shared; what they
will hold is reserved before they are expanded, every occurrence counted."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from responses_bridge.engine import reasoning
from responses_bridge.engine.reasoning import sealer_for_items
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.item_references import expansion, resolve_references, resolve_stored
from responses_bridge.protocol.tools.call_outputs import pair_call_outputs
from responses_bridge.sealing import Sealer


def message(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def ref(item_id: str) -> dict[str, Any]:
    return {"type": "item_reference", "id": item_id}


def call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": "weather", "arguments": "{}"}


def test_references_share_the_items_they_name_and_the_stages_that_write_leave_the_original() -> None:
    """A reference is the item it names, not a copy (250 references hold one item); the original is history too,
    so the stages that give an input item a field (a call output's ``call_id``, a reasoning item's opened text)
    write a copy into the input instead: the history's item never changes with it."""
    sealer = Sealer(b"k" * 32)
    sealed = {"type": "reasoning", "id": "rs_1", "summary": [],
              "encrypted_content": sealer_for_items(sealer)({"content": [{"text": "thought"}]})}
    unpaired = {"type": "function_call_output", "id": "fco_1", "output": "sunny"}
    history = [message("msg_1", "from the chain"), sealed, call("call_a")]
    items = [message("msg_2", "new"), ref("msg_1"), ref("msg_2"), ref("rs_1"), unpaired, ref("rs_1")]
    before = copy.deepcopy(history)
    resolved = resolve_references(history, items)
    assert resolved == [items[0], history[0], items[0], sealed, unpaired, sealed]
    assert resolved[1] is history[0] and resolved[2] is items[0] and resolved[3] is resolved[5] is sealed  # shared
    pair_call_outputs(history, resolved)
    reasoning.unseal_input(resolved, sealer)
    assert resolved[4]["call_id"] == "call_a" and "call_id" not in unpaired  # a copy took it
    assert resolved[3]["content"] == resolved[5]["content"] == [{"type": "reasoning_text", "text": "thought"}]
    assert history == before and "content" not in sealed  # the history's items as they were


def test_input_without_references_is_returned_as_it_is() -> None:
    items = [message("msg_2", "new")]
    assert resolve_references([], items) is items


@pytest.mark.parametrize(("history", "items"), [
    ([], [ref("msg_9")]),
    ([message("msg_1", "x")], [ref("msg_2"), message("msg_2", "later")]),  # only what came before
])
def test_an_unknown_item_is_a_404_naming_the_reference(history: list[dict[str, Any]],
                                                       items: list[dict[str, Any]]) -> None:
    with pytest.raises(APIError) as caught:
        resolve_references(history, items)
    assert (caught.value.status, caught.value.param, caught.value.code) == (404, "input[0].id", "item_not_found")


def test_the_expansion_counts_every_occurrence_and_names_what_the_store_must_find() -> None:
    big = message("msg_big", "x" * 100_000)
    history = [message("msg_1", "from the chain")]
    items = [big, *[ref("msg_big")] * 250, ref("msg_1"), ref("stored_1"), ref("stored_1")]
    missing, size, count = expansion(history, items)
    assert missing == ["stored_1", "stored_1"]  # once per reference: the store counts each
    assert count == 251 and size == 250 * len(orjson.dumps(big)) + len(orjson.dumps(history[0]))
    assert expansion(history, [message("msg_2", "plain")]) == ([], 0, 0)


class Finder:
    def __init__(self, found: dict[str, dict[str, Any]], log: list[str]) -> None:
        self.found, self.log = found, log

    async def find_items(self, item_ids: Sequence[str], *, tenant: str) -> dict[str, dict[str, Any]]:
        self.log.append(f"find {len(item_ids)}")
        return {item_id: self.found[item_id] for item_id in item_ids if item_id in self.found}


async def test_references_are_reserved_before_they_are_expanded_or_looked_up() -> None:
    log: list[str] = []
    stored = message("msg_s", "stored")
    finder = Finder({"msg_s": stored}, log)
    big = message("msg_big", "x" * 10_000)
    items = [big, ref("msg_big"), ref("msg_big"), ref("msg_s"), ref("msg_s"), ref("msg_s")]

    async def reserve(size: int, count: int, what: str) -> None:
        log.append(f"reserve {count} {size} {what}")

    resolved = await resolve_stored([], items, finder, tenant="t", reserve=reserve)
    assert log == [f"reserve 2 {2 * len(orjson.dumps(big))} 2 item_references to items the request holds",
                   "find 3"]
    assert resolved == [big, big, big, stored, stored, stored] and resolved[4] is resolved[5]

    async def refuse(size: int, count: int, what: str) -> None:
        raise APIError(503, "full", code="server_overloaded")

    log.clear()
    with pytest.raises(APIError):
        await resolve_stored([], items, finder, tenant="t", reserve=refuse)
    assert log == []  # refused before the store was read
    plain = [message("msg_2", "plain")]
    assert await resolve_stored([], plain, finder, tenant="t", reserve=refuse) is plain  # nothing reserved
