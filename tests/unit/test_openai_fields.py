"""``prompt_cache_retention``, ``prompt_cache_options`` and ``moderation``: parsed with OpenAI's shapes, forwarded to
an upstream whose profile knows them (``openai_fields``), echoed on the Response when sent, and ``moderation``
refused where nothing can honour it: none of them is accepted and then lost."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from responses_bridge.demo import fake_upstream
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.profiles import PROFILES, options_for
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request

OPENAI = options_for(EngineOptions(), "openai")
GENERIC = options_for(EngineOptions(), "generic")
MODERATION = {"model": "omni-moderation-latest", "policy": {"input": {"mode": "block"}, "output": {"mode": "score"}}}
CACHE_OPTIONS = {"mode": "explicit", "ttl": "12h", "comparison_response_id": "resp_1", "prewarm": False}


def _request(**fields: Any) -> Any:
    return parse_request(orjson.dumps({"model": "m", "input": "hi", **fields}))


def test_only_the_openai_profile_forwards_them() -> None:
    assert PROFILES["openai"].openai_fields is True
    assert not any(switches.openai_fields for name, switches in PROFILES.items() if name != "openai")


def test_an_openai_upstream_gets_all_three_as_chat_completions_names_them() -> None:
    body = build_chat_request(_request(prompt_cache_retention="24h", prompt_cache_options=CACHE_OPTIONS,
                                       moderation=MODERATION), [], OPENAI)
    assert body["prompt_cache_retention"] == "24h"
    assert body["prompt_cache_options"] == CACHE_OPTIONS
    assert body["moderation"] == MODERATION
    fake_upstream.validate_chat_request(body)


def test_unset_fields_stay_out_of_the_body() -> None:
    body = build_chat_request(_request(prompt_cache_options={"ttl": "30m"}), [], OPENAI)
    assert body["prompt_cache_options"] == {"ttl": "30m"}
    assert "prompt_cache_retention" not in body and "moderation" not in body


def test_other_upstreams_get_no_cache_fields() -> None:
    body = build_chat_request(_request(prompt_cache_retention="in_memory", prompt_cache_options=CACHE_OPTIONS),
                              [], GENERIC)
    assert "prompt_cache_retention" not in body and "prompt_cache_options" not in body


def test_moderation_is_refused_where_the_upstream_cannot_moderate() -> None:
    with pytest.raises(APIError) as error:
        build_chat_request(_request(moderation=MODERATION), [], GENERIC)
    assert (error.value.status, error.value.param, error.value.code) == (400, "moderation", "unsupported_parameter")


def test_the_response_echoes_the_cache_fields_with_openai_defaults() -> None:
    response = new_response("resp_x", _request(prompt_cache_retention="24h", prompt_cache_options={"mode": "explicit"}))
    assert response["prompt_cache_retention"] == "24h"
    assert response["prompt_cache_options"] == {"mode": "explicit", "ttl": "30m", "comparison_response_id": None}
    sdk = Response.model_validate(dict(response, output=[], tool_choice="auto", parallel_tool_calls=True))
    assert sdk.prompt_cache_options is not None and sdk.prompt_cache_options.ttl == "30m"
    assert "moderation" not in response  # the Response's moderation holds results, not the request's settings


def test_unsent_cache_fields_are_not_on_the_response() -> None:
    response = new_response("resp_x", _request())
    assert "prompt_cache_retention" not in response and "prompt_cache_options" not in response


@pytest.mark.parametrize(("fields", "param"), [
    ({"prompt_cache_retention": "1h"}, "prompt_cache_retention"),
    ({"prompt_cache_options": {"ttl": "5m"}}, "prompt_cache_options.ttl"),
    ({"prompt_cache_options": {"mode": "both"}}, "prompt_cache_options.mode"),
    ({"prompt_cache_options": {"lifetime": "12h"}}, "prompt_cache_options.lifetime"),
    ({"prompt_cache_options": "12h"}, "prompt_cache_options"),
    ({"moderation": {"policy": {}}}, "moderation.model"),
    ({"moderation": {"model": "omni-moderation-latest", "policy": {"input": {"mode": "warn"}}}},
     "moderation.policy.input.mode"),
])
def test_wrong_shapes_are_400s_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as error:
        _request(**fields)
    assert error.value.status == 400 and error.value.param == param
