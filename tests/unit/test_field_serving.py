"""Every field served or refused by name: the enumerations OpenAI's types close are checked from the generated table
(protocol/known_fields.py), the service's own options (``reasoning.context`` / ``mode``, ``access_programs``,
``image.context_compression``) are served where the backend does what they ask or refused naming them
(engine/served_fields.py), and what is served is echoed in a Response the SDK's strict types accept."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.output_builder import OutputBuilder
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.engine.tools.tools import ToolPlan, plan_tools
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.known_fields_table import REQUEST
from responses_bridge.protocol.responses.request import parse_request
from tools.docs.known_fields import known_fields_table

DROP = EngineOptions()
SENT_BACK = EngineOptions(reasoning_history="reasoning_content")


def parse(extra: dict[str, Any], mode: str = "reject") -> Any:
    return parse_request(orjson.dumps({"model": "m", "input": "hi", **extra}), unknown_fields=mode)  # type: ignore[arg-type]


def refused(extra: dict[str, Any], options: EngineOptions = DROP) -> APIError:
    with pytest.raises(APIError) as raised:
        build_chat_request(parse(extra), [], options)
    assert raised.value.status == 400
    return raised.value


ENUMS: list[tuple[dict[str, Any], str]] = [
    ({"reasoning": {"effort": "bogus"}}, "reasoning.effort"),
    ({"service_tier": "bogus"}, "service_tier"),
    ({"reasoning": {"summary": "short"}}, "reasoning.summary"),
    ({"reasoning": {"context": "last_turn"}}, "reasoning.context"),
    ({"access_programs": {"cyber": "daybreak_green"}}, "access_programs.cyber"),
    ({"image": {"context_compression": "on"}}, "image.context_compression"),
    ({"tools": [{"type": "web_search", "search_context_size": "huge"}]}, "tools[0].search_context_size"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"], "ranking_options": {"ranker": "best"}}]},
     "tools[0].ranking_options.ranker"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "sometimes", "tools": []}}, "tool_choice.mode"),
    ({"include": ["reasoning.encrypted_content", "everything"]}, "include[1]"),
]


@pytest.mark.parametrize(("extra", "param"), ENUMS, ids=[case[1] for case in ENUMS])
def test_a_value_outside_an_enumeration_is_a_400_naming_its_path(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as raised:
        parse(extra)
    error = raised.value
    assert (error.status, error.param, error.code) == (400, param, "invalid_value")
    assert orjson.loads(error.body())["error"]["type"] == "invalid_request_error"
    assert error.message.startswith(f"Invalid value for '{param}': '") and "Supported values are: '" in error.message


def test_the_supported_values_are_the_sdks() -> None:
    message = ""
    try:
        parse({"reasoning": {"effort": "bogus"}})
    except APIError as error:
        message = error.message
    assert message.endswith("Supported values are: 'high', 'low', 'max', 'medium', 'minimal', 'none', 'xhigh'.")
    assert REQUEST["service_tier"] == ("enum", ("auto", "default", "fast", "flex", "priority", "scale", "ultrafast"))
    assert known_fields_table() == REQUEST  # the committed table is what the installed SDK makes


def test_an_open_enumeration_and_a_wrong_type_are_judged_as_openai_judges_them() -> None:
    assert REQUEST["reasoning"]["mode"] is None  # Union[str, Literal[...]]: any string is the service's to judge
    with pytest.raises(APIError) as raised:
        parse({"tools": [{"type": "web_search", "search_context_size": 3}]})
    assert (raised.value.param, raised.value.code) == ("tools[0].search_context_size", "invalid_type")


def test_warn_mode_accepts_a_newer_value_as_it_accepts_a_newer_field() -> None:
    assert parse({"service_tier": "hyperfast"}, mode="warn").params.service_tier == "hyperfast"


@pytest.mark.parametrize(("extra", "param", "options"), [
    ({"reasoning": {"context": "all_turns"}}, "reasoning.context", DROP),
    ({"reasoning": {"context": "current_turn"}}, "reasoning.context", DROP),
    ({"reasoning": {"mode": "pro"}}, "reasoning.mode", SENT_BACK),
    ({"access_programs": {"cyber": "daybreak_red"}}, "access_programs.cyber", DROP),
    ({"image": {"context_compression": "enabled"}}, "image.context_compression", DROP),
])
def test_what_the_backend_cannot_serve_is_a_400_naming_it(extra: dict[str, Any], param: str,
                                                           options: EngineOptions) -> None:
    error = refused(extra, options)
    assert (error.param, error.code) == (param, "unsupported_value")
    assert error.message.startswith(f"'{param}': ")


def test_what_the_backend_serves_goes_nowhere_it_is_not_known_and_is_echoed() -> None:
    extra = {"reasoning": {"effort": "low", "context": "all_turns", "mode": "standard"},
             "access_programs": {"cyber": "standard"}, "image": {"context_compression": "auto"}, "user": "u-1"}
    request = parse(extra)
    body = build_chat_request(request, [], SENT_BACK)
    assert body["reasoning_effort"] == "low" and body["user"] == "u-1"
    assert not {"reasoning", "access_programs", "image", "context", "mode"} & set(body)
    response = new_response("resp_1", request)
    assert response["reasoning"] == {"effort": "low", "summary": None, "context": "all_turns", "mode": "standard"}
    assert response["access_programs"] == {"cyber": "standard"}
    assert response["image"] == {"context_compression": "disabled"}  # in effect: the backend compresses nothing
    assert response["user"] == "u-1"
    Response.model_validate(response, strict=True)


def test_a_function_tools_own_fields_are_echoed_and_typed() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "defer_loading": False,
            "async": True, "output_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}
    response = new_response("resp_1", parse({"tools": [tool]}))
    assert response["tools"] == [{**tool, "description": None, "strict": None}]
    parsed = Response.model_validate(response, strict=True)
    assert parsed.tools[0].async_ is True  # type: ignore[union-attr]
    for key, value in (("async", "yes"), ("defer_loading", 1), ("output_schema", "object")):
        with pytest.raises(APIError) as raised:
            parse({"tools": [{**tool, key: value}]})
        assert (raised.value.param, raised.value.code) == (f"tools[0].{key}", "invalid_type")


@pytest.mark.parametrize(("reported", "echoed"), [("flex", "flex"), (None, "default"), ("priority", "priority")])
def test_the_tier_echoed_is_the_one_the_upstream_served(reported: str | None, echoed: str) -> None:
    request = parse({"service_tier": "priority"})
    builder = OutputBuilder(new_response("resp_1", request), None)
    assert builder.response["service_tier"] == "default"  # not what was asked: nothing has served it yet
    builder.feed({"choices": [{"index": 0, "delta": {"content": "hi"}}], "service_tier": "scale"})
    assert builder.response["service_tier"] == "default"  # read from the turn's last chunk, not every chunk
    builder.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "service_tier": reported})
    assert builder.response["service_tier"] == echoed
    builder.feed({"choices": [], "usage": {"prompt_tokens": 1}, "service_tier": "flex"})  # a stream's usage chunk
    assert builder.response["service_tier"] == "flex"


def _reasoning(text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": f"rs_{text}", "summary": [], "content": [{"type": "reasoning_text",
                                                                               "text": text}]}


def _said(text: str) -> dict[str, Any]:
    return {"type": "message", "id": f"msg_{text}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


@pytest.mark.parametrize(("context", "sent_back"), [
    ("all_turns", ["before", "now"]), ("auto", ["before", "now"]), ("current_turn", ["now"])])
def test_reasoning_context_chooses_which_reasoning_is_rendered_back(context: str, sent_back: list[str]) -> None:
    """With a backend given reasoning back (reasoning_history: reasoning_content): ``current_turn`` leaves out the
    reasoning of the turns before the last user message, ``all_turns`` (and ``auto``, the profile's) keeps it."""
    history = [{"type": "message", "id": "msg_u1", "role": "user", "status": "completed",
                "content": [{"type": "input_text", "text": "first"}]}, _reasoning("before"), _said("one")]
    input_items = [{"role": "user", "content": "second"}, _reasoning("now"), _said("two")]
    request = parse({"input": input_items, "reasoning": {"context": context}})
    body = build_chat_request(request, history, SENT_BACK)
    assert [message.get("reasoning_content") for message in body["messages"] if "reasoning_content" in message] \
        == sent_back


def test_a_servers_and_a_namespaces_description_reach_the_model() -> None:
    """Descriptions of a group of functions are no function's own: the model reads them before each function's."""
    plan = ToolPlan()
    plan.add_mcp_tools("wiki", [{"name": "lookup", "description": "Look a page up."}, {"name": "list"}],
                       server_description="The team's wiki.")
    assert [function["description"] for function in plan.functions] == [
        "The team's wiki.\n\nLook a page up.", "The team's wiki."]
    namespace = {"type": "namespace", "name": "wiki", "description": "The team's wiki.",
                 "tools": [{"type": "function", "name": "lookup"}]}
    assert plan_tools([namespace]).functions[0]["description"] == "The team's wiki."
