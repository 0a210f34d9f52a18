"""``tool_calling: prompt`` (engine/tools/prompt.py): the tools described in the system message, and the calls read
back out of the answer's text the same way however the stream cuts it."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.profiles import options_for
from responses_bridge.engine.responses.translator import Translator
from responses_bridge.engine.tools.prompt import PromptToolCalls, as_prompt_tools
from responses_bridge.protocol.responses.request import parse_request

CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather\n  for a city",
                                            "parameters": CITY}}
POPULATION = {"type": "function", "function": {"name": "get_population",
                                               "parameters": {"type": "object", "properties": {}}}}
NAMES = ("get_weather", "get_population")


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "Weather in Oslo?"}],
            "tools": [WEATHER, POPULATION], **extra}


# --- the request ---------------------------------------------------------------------------------------------------


def test_a_free_choice_sends_no_tools_and_describes_them_in_a_system_message_of_its_own() -> None:
    original = body()
    wire, names = as_prompt_tools(original)
    assert names == NAMES and "tools" not in wire and "tool_choice" not in wire
    system = wire["messages"][0]
    assert system["role"] == "system" and wire["messages"][1:] == original["messages"]
    assert "functions.get_weather:\nWeather\n  for a city\n" in system["content"]
    assert '{"type":"object","properties":{"city":{"type":"string"}}}' in system["content"]
    assert "functions.get_population:" in system["content"] and "begin the message with 'message:'" in system["content"]
    assert original["tools"] == [WEATHER, POPULATION] and len(original["messages"]) == 1  # later turns build on it


def test_the_description_ends_the_first_system_message_and_required_and_single_are_said() -> None:
    messages = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": "hi"}, {"role": "system", "content": "Second."}]
    wire, _ = as_prompt_tools(body(messages=messages, tool_choice="required", parallel_tool_calls=False))
    first = wire["messages"][0]["content"]
    assert first.startswith("Be brief.\n\nYou have access to the following functions:")
    assert "you must respond with one or more function calls" in first and "at most one function" in first
    assert wire["messages"][2] == {"role": "system", "content": "Second."} and "parallel_tool_calls" not in wire


def test_none_offers_nothing_and_a_forced_call_is_said_in_words() -> None:
    wire, names = as_prompt_tools(body(tool_choice="none"))
    assert names is None and "tools" not in wire and len(wire["messages"]) == 1
    wire, names = as_prompt_tools(body(tool_choice={"type": "function", "function": {"name": "get_population"}}))
    assert names == ("get_population",) and "tools" not in wire and "tool_choice" not in wire
    described = wire["messages"][0]["content"]
    assert "functions.get_population:" in described and "functions.get_weather:" not in described
    assert "you must respond with one or more function calls" in described
    assert as_prompt_tools({"model": "m", "messages": []}) == ({"model": "m", "messages": []}, None)


# --- the answer ----------------------------------------------------------------------------------------------------


def read(pieces: list[str], *, finish: str | None = "stop", single: bool = False,
         usage_after: bool = False) -> tuple[str, list[tuple[str, str, str]], list[dict[str, Any]]]:
    """The text, the calls (name, arguments, id) and the chunks the builder would get for ``pieces``."""
    fed: list[dict[str, Any]] = []
    reader = PromptToolCalls(NAMES, fed.append, single=single)
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        reader.feed({"choices": [{"index": 0, "delta": {"content": piece},
                                  "finish_reason": finish if last else None}]})
    if usage_after:
        reader.feed({"choices": [], "usage": {"prompt_tokens": 3}})
    if finish is None:
        reader.end()
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in fed if chunk["choices"])
    calls = [(call["function"]["name"], call["function"]["arguments"], call["id"])
             for chunk in fed if chunk["choices"] for call in chunk["choices"][0]["delta"].get("tool_calls") or ()]
    return text, calls, fed


CALLS = 'functions.get_weather:\n{ "city": "Oslo" }\nfunctions.get_population:\n{}'


def test_calls_written_as_text_become_tool_call_deltas_and_the_finish_reason_says_so() -> None:
    text, calls, fed = read([CALLS])
    assert text == "" and [(name, args) for name, args, _ in calls] == [("get_weather", '{ "city": "Oslo" }'),
                                                                         ("get_population", "{}")]
    assert all(call_id.startswith("call_") for _, _, call_id in calls) and calls[0][2] != calls[1][2]
    assert fed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["index"] for c in fed[-1]["choices"][0]["delta"]["tool_calls"]] == [0, 1]
    _, only, _ = read([CALLS], single=True)  # parallel_tool_calls false: the first call
    assert [name for name, _, _ in only] == ["get_weather"]


def test_a_message_prefix_is_taken_off_and_text_before_a_call_stays_text() -> None:
    assert read(["message:", "\n  Hello\nthere"])[0] == "Hello\nthere"
    assert read(["message: The weather is 18°C"])[0] == "The weather is 18°C"
    text, calls, _ = read(["Let me look.\nfunctions.get_wea", "ther:\n", '{"city": "Rome"}'])
    assert text == "Let me look.\n" and [(n, a) for n, a, _ in calls] == [("get_weather", '{"city": "Rome"}')]


def test_what_is_not_a_known_marker_is_text_and_a_held_start_is_given_back() -> None:
    assert read(["functions.delete_all:\n{}"]) [0] == "functions.delete_all:\n{}"  # not offered: words
    assert read(["a\nfunc"]) == ("a\nfunc", [], read(["a\nfunc"])[2])
    assert read(["  mess"])[0] == "mess"
    assert read(["message"], finish=None)[0] == "message"  # the body ended with [DONE] alone
    text, calls, _ = read([CALLS], finish=None)
    assert text == "" and len(calls) == 2


def test_arguments_are_read_as_the_model_writes_them() -> None:
    def arguments(written: str) -> str:
        return read([f"functions.get_weather:\n{written}"])[1][0][1]
    assert json.loads(arguments("{&#34;city&#34;: &#34;Oslo&#34;}")) == {"city": "Oslo"}  # copied entities
    assert json.loads(arguments('```json\n{"city": "Oslo"}\n```')) == {"city": "Oslo"}
    assert arguments('{"city": "Oslo"} and then I will answer.') == '{"city": "Oslo"}'
    assert json.loads(arguments('{ "code": `const a = "x";\nreturn a` }')) == {"code": 'const a = "x";\nreturn a'}
    assert arguments("") == "{}" and arguments("city=Oslo") == "city=Oslo"  # not JSON: the call's reader says so


def test_chunks_without_text_pass_through_and_usage_after_the_end_is_kept() -> None:
    _, _, fed = read(["Hi"], usage_after=True)
    assert fed[-1] == {"choices": [], "usage": {"prompt_tokens": 3}}
    reasoning: list[dict[str, Any]] = []
    PromptToolCalls(NAMES, reasoning.append).feed({"choices": [{"index": 0, "delta": {"reasoning_content": "x"}}]})
    assert reasoning == [{"choices": [{"index": 0, "delta": {"reasoning_content": "x"}}]}]


ANSWERS = ["message:\nThe weather in Oslo is fine.\nfunctions are nice.", CALLS,
           "Checking.\nfunctions.get_population:\n{}", "  plain answer\n\nwith lines", "func"]


@given(st.sampled_from(ANSWERS), st.lists(st.integers(min_value=1, max_value=60), max_size=12),
       st.booleans())
def test_every_cut_of_the_stream_reads_as_the_whole_answer(answer: str, cuts: list[int], ended: bool) -> None:
    points = sorted({cut for cut in cuts if cut < len(answer)})
    pieces = [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)], strict=True)]
    whole_text, whole_calls, _ = read([answer])
    text, calls, _ = read(pieces, finish="stop" if ended else None)
    assert text == whole_text and [c[:2] for c in calls] == [c[:2] for c in whole_calls]


# --- through the translator ----------------------------------------------------------------------------------------


def test_the_translator_sends_the_prompt_form_and_reads_a_streamed_call_back() -> None:
    request = parse_request(orjson.dumps({"model": "m", "input": "Weather in Oslo?", "stream": True,
                                          "tools": [{"type": "function", "name": "get_weather",
                                                     "parameters": WEATHER["function"]["parameters"]}]}))
    translator = Translator(request, [], None, options_for(EngineOptions(), "llamacpp"))
    sent = orjson.loads(translator.build_first_request().body)
    assert "tools" not in sent and "functions.get_weather:" in sent["messages"][0]["content"]
    translator.on_upstream_headers(200, "text/event-stream")
    frames = b""
    for piece in ("functions.get_", 'weather:\n{"city"', ': "Oslo"}'):
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        frames += translator.on_upstream_chunk(b"data: " + orjson.dumps(chunk) + b"\n\n")
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    frames += translator.on_upstream_chunk(b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n")
    assert translator.complete() is None
    call = translator.response["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    assert b"response.output_text" not in frames + b"".join(translator.pending())
