"""Usage as the Responses API requires it: ``input_tokens_details.cache_write_tokens`` (openai 3.57's
``ResponseUsage``) is always there — from the backend's ``prompt_tokens_details`` when it says, 0 otherwise —
summed over a tool loop's turns, and filled into a native backend's usage that predates it."""

from __future__ import annotations

from openai.types.responses import ResponseUsage

from responses_bridge.engine.responses.response_object import convert_usage, fill_usage_details
from responses_bridge.engine.tools.turn_result import add_usage


def test_a_backend_that_says_nothing_of_caches_gives_zeros_the_sdk_accepts() -> None:
    usage = convert_usage({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
    assert usage is not None
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    ResponseUsage.model_validate(usage, strict=True)


def test_cache_writes_a_backend_reports_are_carried_and_summed_over_turns() -> None:
    first = {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101,
             "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 90}}
    second = {"prompt_tokens": 120, "completion_tokens": 3, "total_tokens": 123,
              "prompt_tokens_details": {"cached_tokens": 90, "cache_write_tokens": 20}}
    usage = convert_usage(add_usage(first, second))
    assert usage is not None
    assert usage["input_tokens_details"] == {"cached_tokens": 90, "cache_write_tokens": 110}
    ResponseUsage.model_validate(usage, strict=True)


def test_a_native_backends_usage_without_the_newer_details_is_completed_not_rewritten() -> None:
    usage = {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 1,
             "total_tokens": 4}
    fill_usage_details(usage)
    assert usage["input_tokens_details"] == {"cached_tokens": 2, "cache_write_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    ResponseUsage.model_validate(usage, strict=True)
    fill_usage_details(None)  # a backend's answer without usage stays without
