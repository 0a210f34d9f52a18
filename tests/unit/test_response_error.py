"""A failed Response's ``error`` carries a code of the SDK's ``ResponseError.code`` list, the bridge's own reason
leading its message (engine/response_error.py), in every place a Response fails: the translator's builder, the
native relay, a background run no process runs any more."""

from __future__ import annotations

from typing import get_args

import openai.types.responses as sdk
import pytest

from responses_bridge.engine.response_error import RESPONSE_ERROR_CODES, response_error
from responses_bridge.services.responses.background_frames import interrupted
from tests.support.sdk_strict import strict_response


def test_the_list_is_the_sdks() -> None:
    assert frozenset(get_args(sdk.ResponseError.model_fields["code"].annotation)) == RESPONSE_ERROR_CODES


@pytest.mark.parametrize(("code", "status", "listed"), [
    ("upstream_timeout", 504, "server_error"),
    ("upstream_connection_error", 502, "server_error"),
    ("upstream_too_large", 502, "server_error"),
    ("upstream_protocol_error", 502, "server_error"),
    ("client_disconnected", 500, "server_error"),
    ("server_shutdown", 503, "server_error"),
    ("too_many_requests", 429, "rate_limit_exceeded"),
    ("context_length_exceeded", 400, "invalid_prompt"),
    (None, 502, "server_error"),
    (None, 400, "invalid_prompt"),
])
def test_a_bridge_code_becomes_the_listed_one_and_leads_the_message(code: str | None, status: int,
                                                                    listed: str) -> None:
    error = response_error(code, "Why.", status=status)
    assert error == {"code": listed, "message": f"{code}: Why." if code else "Why."}
    sdk.ResponseError.model_validate(error, strict=True)


@pytest.mark.parametrize("code", ["server_error", "rate_limit_exceeded", "invalid_image"])
def test_a_listed_code_is_kept_as_it_is(code: str) -> None:
    assert response_error(code, "Why.", status=400) == {"code": code, "message": "Why."}


def test_full_keeps_param_and_type() -> None:
    error = response_error("upstream_timeout", "Slow.", status=504, param=None, error_type="server_error", full=True)
    assert error == {"code": "server_error", "message": "upstream_timeout: Slow.", "param": None,
                     "type": "server_error"}
    sdk.ResponseError.model_validate(error, strict=True)


def test_an_interrupted_background_response_validates() -> None:
    response = {"id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress", "model": "m",
                "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
                "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": None,
                "top_p": None}
    closed, _ = interrupted()(response)
    assert closed["error"]["code"] == "server_error"
    assert closed["error"]["message"].startswith("server_restarted: The server restarted")
    strict_response(closed)
