"""item_reference items become the items they name, from the history or the input before them."""

from __future__ import annotations

from typing import Any

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.item_references import resolve_references


def message(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def ref(item_id: str) -> dict[str, Any]:
    return {"type": "item_reference", "id": item_id}


def test_references_become_copies_of_the_items_they_name() -> None:
    history = [message("msg_1", "from the chain")]
    items = [message("msg_2", "new"), ref("msg_1"), ref("msg_2")]
    resolved = resolve_references(history, items)
    assert resolved == [items[0], history[0], items[0]]
    assert resolved[1] is not history[0]  # a copy: the stored original never changes with it
    resolved[1]["content"].append("x")
    assert len(history[0]["content"]) == 1


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
