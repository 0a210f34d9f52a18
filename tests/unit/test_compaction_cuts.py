"""Automatic compaction's pure parts: where the context is cut, what a compaction item stands for on replay."""

from __future__ import annotations

import os

import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses import auto_compaction, compaction
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request_object
from responses_bridge.sealing import Sealer
from responses_bridge.services.responses.compaction import split_kept

SEALER = Sealer(os.urandom(32))


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def assistant(text: str) -> dict:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


CALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "42"}


def test_split_items_keeps_the_latest_question_and_what_follows_it() -> None:
    assert auto_compaction.split_items([user("a"), assistant("b"), user("c")]) == (
        [user("a"), assistant("b")], [user("c")])
    assert auto_compaction.split_items([user("a"), assistant("b"), user("c"), user("d")]) == (
        [user("a"), assistant("b")], [user("c"), user("d")])
    # a client tool's call and output stay with the question they answer
    assert auto_compaction.split_items([user("a"), assistant("b"), user("c"), CALL, OUTPUT]) == (
        [user("a"), assistant("b")], [user("c"), CALL, OUTPUT])
    assert auto_compaction.split_items([user("a"), user("b")]) is None  # nothing before the question
    assert auto_compaction.split_items([assistant("a")]) is None


def test_split_messages_keeps_head_question_and_last_turn() -> None:
    system = {"role": "system", "content": "be brief"}
    question = {"role": "user", "content": "look it up"}
    call1 = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}
    result1 = {"role": "tool", "tool_call_id": "c1", "content": "one"}
    call2 = {"role": "assistant", "content": None, "tool_calls": [{"id": "c2"}]}
    result2 = {"role": "tool", "tool_call_id": "c2", "content": "two"}
    assert auto_compaction.split_messages([system, question, call1, result1]) is None  # nothing in between
    split = auto_compaction.split_messages([system, question, call1, result1, call2, result2])
    assert split is not None
    assert (split.head, split.middle, split.last_user, split.tail) == (
        [system], [call1, result1], question, [call2, result2])
    assert auto_compaction.compacted_messages(split, "S") == [system, {"role": "user", "content": "S\n\nlook it up"},
                                                              call2, result2]
    parts = dict(question, content=[{"type": "text", "text": "look"}])
    split.last_user = parts
    assert auto_compaction.compacted_messages(split, "S")[1]["content"] == [{"type": "text", "text": "S\n\n"},
                                                                           {"type": "text", "text": "look"}]


def test_an_automatic_compaction_stands_for_everything_before_it() -> None:
    blob = compaction.seal_summary(SEALER, "they met", "m", 2, [user("kept")])
    item = {"type": "compaction", "id": "cmp_1", "encrypted_content": blob}
    history, items = compaction.expand_context([user("old"), assistant("older")],
                                               [user("x"), item, assistant("after"), user("new")], SEALER)
    assert history == []
    assert items[0]["content"][0]["text"] == compaction.SUMMARY_PREFIX + "they met"
    assert items[1:] == [user("kept"), assistant("after"), user("new")]
    # in history, it drops the history before it only
    history, items = compaction.expand_context([user("old"), item, assistant("after")], [user("new")], SEALER)
    assert history[1:] == [user("kept"), assistant("after")] and items == [user("new")]
    # a /v1/responses/compact item stands for the summarised part only: what is around it stays
    plain = {"type": "compaction", "id": "cmp_2",
             "encrypted_content": compaction.seal_summary(SEALER, "s", "m", 1)}
    _, items = compaction.expand_context([], [user("before"), plain, user("after")], SEALER)
    assert [i["content"][0]["text"] for i in items] == ["before", compaction.SUMMARY_PREFIX + "s", "after"]


def test_a_forged_kept_list_is_a_400() -> None:
    blob = SEALER.seal(compaction.PURPOSE, {"v": 1, "summary": "s", "kept": ["not an item"]})
    with pytest.raises(APIError) as refused:
        compaction.expand([{"type": "compaction", "id": "c", "encrypted_content": blob}], SEALER)
    assert refused.value.code == "invalid_encrypted_content"


def test_compacting_again_summarises_an_earlier_automatic_compaction() -> None:
    summary = compaction.summary_message("cmp_1", "s")
    kept = user("kept")
    originals = [user("new")]
    ids = {id(item) for item in originals}
    expanded = [summary, kept, *originals]
    assert split_kept(expanded, lambda item: id(item) in ids) == ([2], [0, 1])


def test_the_threshold() -> None:
    def request(entry: dict) -> object:
        return parse_request_object({"model": "m", "input": "hi", "context_management": [entry]})

    assert auto_compaction.threshold(request({"type": "compaction", "compact_threshold": 7}),
                                     EngineOptions()) == 7
    assert auto_compaction.threshold(request({"type": "compaction"}), EngineOptions(context_window=1000)) == 800
    with pytest.raises(APIError) as refused:
        auto_compaction.threshold(request({"type": "compaction"}), EngineOptions())
    assert refused.value.param == "context_management[0].compact_threshold"
    assert auto_compaction.threshold(parse_request_object({"model": "m", "input": "hi"}), EngineOptions()) is None
