"""The code of a code interpreter call decoded from its streamed JSON arguments, however the pieces are cut."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from responses_bridge.engine.tools.code_stream import CodeStream
from responses_bridge.engine.tools.server import CodeInterpreterReader, code_of


def _decoded(raw: str, cuts: list[int]) -> str:
    stream = CodeStream()
    out, start = [], 0
    for cut in [*sorted(set(cut % (len(raw) + 1) for cut in cuts)), len(raw)]:
        out.append(stream.feed(raw[start:cut]))
        start = cut
    return "".join(out)


@given(st.text(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=40), st.booleans())
def test_every_cut_decodes_to_the_code(code: str, cuts: list[int], ascii_only: bool) -> None:
    raw = json.dumps({"code": code}, ensure_ascii=ascii_only)
    assert _decoded(raw, cuts) == code


def test_a_surrogate_pair_split_between_pieces_waits_for_its_second_half() -> None:
    stream = CodeStream()
    assert stream.feed('{"code": "a\\ud83d') == "a"
    assert stream.feed('\\ude00b"}') == "\U0001F600b"


def test_arguments_that_are_not_the_expected_object_give_no_deltas() -> None:
    stream = CodeStream()
    assert stream.feed("print(1)") == ""
    assert code_of("print(1)") == "print(1)"
    assert CodeStream().feed('{"other": 1, "code": "x"}') == ""


def test_the_reader_sends_what_the_stream_could_not_follow_at_the_end() -> None:
    reader = CodeInterpreterReader({"id": "ci_1", "type": "code_interpreter_call", "status": "in_progress",
                                    "code": "", "container_id": "cntr_1", "outputs": None}, 0)
    assert reader.feed("print(") == []
    events = reader.close("print(2)", "completed")
    assert [event["type"] for event in events] == ["response.code_interpreter_call_code.delta",
                                                   "response.code_interpreter_call_code.done",
                                                   "response.code_interpreter_call.interpreting"]
    assert events[0]["delta"] == "print(2)" and reader.item["code"] == "print(2)"
    assert reader.item["status"] == "interpreting" and reader.pending


def test_a_call_cut_short_is_incomplete_and_never_runs() -> None:
    reader = CodeInterpreterReader({"id": "ci_1", "type": "code_interpreter_call", "status": "in_progress",
                                    "code": "", "container_id": "cntr_1", "outputs": None}, 0)
    reader.feed('{"code": "while')
    events = reader.close('{"code": "while', "incomplete")
    assert reader.item["status"] == "incomplete" and not reader.pending
    assert events[-1]["type"] == "response.code_interpreter_call_code.done"
