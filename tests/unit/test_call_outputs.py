"""A function_call_output without call_id answers the first open call (of its name, when it names one)."""

from __future__ import annotations

from typing import Any

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.tools.call_outputs import pair_call_outputs


def call(call_id: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    item = {"type": "function_call", "call_id": call_id, "name": name, "arguments": "{}"}
    if namespace is not None:
        item["namespace"] = namespace
    return item


def output(**fields: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "output": "x", **fields}


def test_unnamed_outputs_answer_the_open_calls_in_order() -> None:
    history = [call("a", "f"), call("b", "g"), output(call_id="a")]
    items = [output(), call("c", "h"), output()]
    pair_call_outputs(history, items)
    assert [items[0]["call_id"], items[2]["call_id"]] == ["b", "c"]


def test_named_outputs_answer_the_first_open_call_of_their_name() -> None:
    history = [call("a", "f"), call("b", "g"), call("c", "g", "ns"), call("d", "f")]
    items = [output(name="g", namespace="ns"), output(name="f"), output(name="g"), output(name="f")]
    pair_call_outputs(history, items)
    assert [item["call_id"] for item in items] == ["c", "a", "b", "d"]


def test_an_output_with_its_call_id_is_left_alone_and_closes_its_call() -> None:
    items = [call("a", "f"), call("b", "f"), output(call_id="a"), output()]
    pair_call_outputs([], items)
    assert items[2]["call_id"] == "a" and items[3]["call_id"] == "b"


@pytest.mark.parametrize(("history", "items"), [
    ([], [output()]),
    ([call("a", "f"), output(call_id="a")], [output()]),
    ([call("a", "f")], [output(name="g")]),
    ([call("a", "f")], [output(), output()]),
])
def test_an_output_with_no_open_call_is_a_400_naming_its_call_id(history: list[dict[str, Any]],
                                                                 items: list[dict[str, Any]]) -> None:
    with pytest.raises(APIError) as caught:
        pair_call_outputs(history, items)
    assert caught.value.status == 400
    assert caught.value.param == f"input[{len(items) - 1}].call_id"
