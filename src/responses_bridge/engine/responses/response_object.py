"""The Response object: all 31 fields, nullable ones present as ``null`` (and OpenAI's cache fields when sent).

The skeleton is built once per response from the request; the stream translator fills ``output``, ``status`` and
``usage`` in place, so every lifecycle event serialises the same dict rather than a copy.
"""

from __future__ import annotations

import time
from typing import Any

from ...protocol.responses.request import ResponsesRequest
from ..served_fields import served_reasoning_echo


def new_response(response_id: str, request: ResponsesRequest, *, created_at: int | None = None) -> dict[str, Any]:
    p = request.params
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": p.model,
        "previous_response_id": p.previous_response_id,
        "instructions": p.instructions,
        "output": [],
        "error": None,
        "tools": [echo_tool(tool) for tool in p.tools or []],
        "tool_choice": echo_tool_choice(p.tool_choice),
        "truncation": p.truncation or "disabled",
        "parallel_tool_calls": True if p.parallel_tool_calls is None else p.parallel_tool_calls,
        "text": echo_text(request),
        "top_p": 1.0 if p.top_p is None else p.top_p,
        "presence_penalty": p.presence_penalty or 0.0,
        "frequency_penalty": p.frequency_penalty or 0.0,
        "top_logprobs": p.top_logprobs or 0,
        "temperature": 1.0 if p.temperature is None else p.temperature,
        "reasoning": ({"effort": p.reasoning.effort, "summary": p.reasoning.summary or p.reasoning.generate_summary,
                       **served_reasoning_echo(p.reasoning)} if p.reasoning is not None else None),
        "usage": None,
        "max_output_tokens": p.max_output_tokens,
        "max_tool_calls": p.max_tool_calls,
        "store": p.store,
        "background": p.background,
        # as served, not as asked: what the upstream reports (output_builder.py), else "default"
        "service_tier": "default",
        "metadata": p.metadata or {},
        "safety_identifier": p.safety_identifier,
        "prompt_cache_key": p.prompt_cache_key,
    }
    echo_cache_fields(response, request)
    echo_served_fields(response, request)
    return response


def echo_served_fields(response: dict[str, Any], request: ResponsesRequest) -> None:
    """OpenAI's Response fields the Open Responses spec lacks, present when the request sent them, as served
    (engine/served_fields.py refused what is not): the deprecated ``user``, ``access_programs`` (the Standard
    program) and ``image`` (``context_compression`` in effect: ``disabled``, the backend has none)."""
    p = request.params
    if p.user is not None:
        response["user"] = p.user
    if p.access_programs is not None:
        response["access_programs"] = {"cyber": "standard"} if p.access_programs.get("cyber") else None
    if p.image is not None:
        response["image"] = {"context_compression": "disabled"}


def echo_cache_fields(response: dict[str, Any], request: ResponsesRequest) -> None:
    """``prompt_cache_retention``, ``prompt_cache_options`` and ``context_management`` are OpenAI fields the Open
    Responses spec lacks: present only when the request sent them (like ``conversation`` and ``prompt``). The
    options are echoed with OpenAI's defaults filled in (``mode: implicit``, ``ttl: 30m``), as its Response reports
    them. ``moderation`` is not echoed: the Response's field of that name holds moderation results, not the
    request's settings."""
    p = request.params
    if p.prompt_cache_retention is not None:
        response["prompt_cache_retention"] = p.prompt_cache_retention
    if p.context_management is not None:  # echoed as sent (auto_compaction.py acts on it)
        response["context_management"] = [entry.model_dump() for entry in p.context_management]
    if p.prompt_cache_options is not None:
        given = p.prompt_cache_options
        response["prompt_cache_options"] = {"mode": given.mode or "implicit", "ttl": given.ttl or "30m",
                                            "comparison_response_id": given.comparison_response_id}


_FUNCTION_EXTRAS = ("allowed_callers", "defer_loading", "output_schema", "async")
"""A function tool's OpenAI fields beyond the spec's five, echoed when sent: ``allowed_callers`` and
``defer_loading`` decide what the model was offered (engine/tools/tools.py, run/tools/tool_search.py); ``output_schema``
and ``async`` are the client's own description of its function, kept for it as OpenAI keeps them."""


def echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """Function tools are echoed with every key present, as the spec requires; others as sent."""
    if tool.get("type") != "function":
        return tool
    echoed = {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }
    for key in _FUNCTION_EXTRAS:
        if tool.get(key) is not None:
            echoed[key] = tool[key]
    return echoed


def echo_text(request: ResponsesRequest) -> dict[str, Any]:
    text = request.params.text
    sent = text.format if text is not None and text.format else {"type": "text"}
    if sent.get("type") == "json_schema":
        # every key the spec lists, and only those: the name the upstream was sent (see request_translation) and
        # the upstream's default for strict
        fmt = {"type": "json_schema", "name": sent.get("name") or "response", "description": sent.get("description"),
               "schema": sent.get("schema"), "strict": bool(sent.get("strict"))}
    else:
        fmt = {"type": sent.get("type")}
    echoed: dict[str, Any] = {"format": fmt}
    if text is not None and text.verbosity is not None:
        echoed["verbosity"] = text.verbosity
    return echoed


def echo_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any]:
    """The parsed request already checked the shape; the echo keeps only the keys the spec defines."""
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "allowed_tools":
        return {"type": "allowed_tools", "mode": choice.get("mode") or "auto",
                "tools": [_echo_allowed(tool) for tool in choice.get("tools") or []]}
    if choice.get("type") in ("function", "custom"):
        return {"type": choice.get("type"), "name": choice.get("name")}
    # shell, apply_patch and hosted tools: the SDK's shapes have no name (mcp has server_label and maybe one)
    return {key: value for key, value in choice.items() if key in ("type", "server_label", "name")}


def _echo_allowed(tool: dict[str, Any]) -> dict[str, Any]:
    kind = tool.get("type") or "function"
    if kind in ("function", "custom"):
        return {"type": kind, "name": tool.get("name")}
    return {"type": kind}


def fill_usage_details(usage: Any) -> None:
    """A backend speaking the Responses API itself may predate a required detail of its usage (``cache_write_tokens``
    came late): 0 where it says nothing, so a strict client's ``ResponseUsage`` still validates."""
    if not isinstance(usage, dict):
        return
    for key, details in (("input_tokens_details", ("cached_tokens", "cache_write_tokens")),
                         ("output_tokens_details", ("reasoning_tokens",))):
        held = usage.get(key)
        if held is None:
            held = usage[key] = {}
        if isinstance(held, dict):
            for detail in details:
                held.setdefault(detail, 0)


def convert_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": prompt,
        # both required by the Responses API's usage; 0 where the backend does not say (most do not write caches)
        "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0,
                                 "cache_write_tokens": prompt_details.get("cache_write_tokens") or 0},
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        },
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


class ResponseReads:
    """What the run and the doors read of the response one request makes, the same whether the translator
    (translator_state.py) or the native relay (native_relay.py) makes it."""

    __slots__ = ()

    request: ResponsesRequest
    response: dict[str, Any]

    @property
    def response_id(self) -> str:
        return str(self.response["id"])

    @property
    def input_items(self) -> list[dict[str, Any]]:
        """The request's input items as they are stored (with the response, and in its conversation)."""
        return self.request.input_items

    @property
    def finished_turn(self) -> bool:
        """Did the response end completed or incomplete (the turns that join a conversation)?"""
        return self.response["status"] in ("completed", "incomplete")
