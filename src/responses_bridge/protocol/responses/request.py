"""Parsing of ``POST /v1/responses`` bodies.

Real clients send more than the spec: missing item ids, messages without ``type``, ``phase`` on assistant
messages, fields from newer API versions. The parser is lenient about all of that and exact about what it
cannot honour: a wrong type or an unknown item type is a 400 that names the offending ``param``.

Top-level fields go through one pydantic model (strict types, unknown fields ignored); input items are
normalised by hand, because their leniency rules (a ``role`` implies a message, ids are optional) do not fit a
discriminated union, and because the normalised form is what gets stored and listed by ``input_items``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import APIError, invalid_request
from ..known_fields import UnknownFields, check_known_fields
from ..metadata import check_metadata_sizes
from ..newer_fields import check_newer_fields
from ..request_checks import check_depth, check_include, check_model_name, check_tool, check_tool_choice_type
from ..tools import tool_items
from ..tools.multi_agent import NOT_BETA, BetaSurface, MultiAgentConfig, take_multi_agent
from .input_items import normalize_input


class _Reasoning(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None
    context: str | None = None  # served or refused by engine/served_fields.py, as ``mode``
    mode: str | None = None


class _Text(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # forwarded as Chat Completions' ``verbosity``


class _PromptCacheOptions(BaseModel):
    """``prompt_cache_options``: OpenAI's prompt-cache controls. Unknown keys are refused rather than dropped, as
    this object is forwarded or echoed whole (engine/responses/request_translation.py,
    engine/responses/response_object.py)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    comparison_response_id: str | None = None
    mode: Literal["implicit", "explicit"] | None = None
    prewarm: bool | None = None
    ttl: Literal["30m", "12h"] | None = None


class _ModerationMode(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["score", "block"]


class _ModerationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    input: _ModerationMode | None = None
    output: _ModerationMode | None = None


class _Moderation(BaseModel):
    """``moderation``: a moderation model and its policy; only an upstream that moderates can honour it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    policy: _ModerationPolicy | None = None


class _ContextManagement(BaseModel):
    """One ``context_management`` entry. ``compaction`` is the only type OpenAI defines; ``compact_threshold`` is
    the context size in tokens past which a turn's context is compacted (None: the deployment's declared context
    window decides, engine/responses/auto_compaction.py)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["compaction"]
    compact_threshold: int | None = Field(default=None, ge=1)


class CreateParams(BaseModel):
    """Top-level fields of a create request, with the types the API documents."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=0)
    text: _Text | None = None
    reasoning: _Reasoning | None = None
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: _PromptCacheOptions | None = None
    moderation: _Moderation | None = None
    context_management: list[_ContextManagement] | None = None
    user: str | None = None  # forwarded, and echoed as the Response's deprecated ``user``
    access_programs: dict[str, Any] | None = None  # engine/served_fields.py
    image: dict[str, Any] | None = None  # request-level image options: engine/served_fields.py
    seed: int | None = None
    stop: str | list[str] | None = None
    stream_options: dict[str, Any] | None = None

    @field_validator("stream", "store", "background", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        # The spec makes these nullable (clients that serialise every field send null): null means the default.
        return cls.model_fields[info.field_name].default if value is None else value


@dataclass(slots=True)
class ResponsesRequest:
    """A parsed create request: the validated parameters plus the normalised input items."""

    params: CreateParams
    input_items: list[dict[str, Any]] = field(default_factory=list)
    multi_agent: MultiAgentConfig | None = None  # the beta's set-up (protocol/tools/multi_agent.py), when sent

    @property
    def model(self) -> str:
        return self.params.model or ""

    @property
    def approval_responses(self) -> dict[str, dict[str, Any]]:
        """The input's ``mcp_approval_response`` items by ``approval_request_id``: the tool loop runs (``approve``)
        or skips the approved or refused MCP calls before the model's next turn."""
        return tool_items.approval_responses(self.input_items)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; anything else is a 400, never an exception of another kind."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_type")
    check_depth(raw)  # every route's body: what is accepted here can be serialised again
    return raw


DEFAULT_MAX_INPUT_ITEMS = 100_000
"""Input items one request may hold (the ``max_input_items`` setting): far past the longest agent sessions (a
long Codex session's history is thousands of items), and what keeps one request's parsed objects bounded."""


def check_input_count(raw: Mapping[str, Any], limit: int) -> None:
    """A 400 naming ``input`` past ``limit`` items, judged on the decoded JSON's list before any item becomes an
    object of ours (the WebSocket door calls it as a frame arrives, before the turn waits)."""
    items = raw.get("input")
    if isinstance(items, list) and len(items) > limit:
        raise invalid_request(f"Invalid 'input': array too long. Expected an array with maximum length {limit}, but "
                              f"got an array with length {len(items)} instead.", param="input",
                              code="array_above_max_length")


def parse_request(body: bytes, *, max_input_items: int = DEFAULT_MAX_INPUT_ITEMS,
                  unknown_fields: UnknownFields = "reject", beta: BetaSurface = NOT_BETA) -> ResponsesRequest:
    """Parse and validate a request body; every failure is an :class:`APIError` with status 400."""
    return parse_request_object(parse_json_object(body), max_input_items=max_input_items,
                                unknown_fields=unknown_fields, beta=beta)


def parse_request_object(raw: dict[str, Any], *, max_input_items: int = DEFAULT_MAX_INPUT_ITEMS,
                         unknown_fields: UnknownFields = "reject", beta: BetaSurface = NOT_BETA) -> ResponsesRequest:
    """``raw`` judged before any of it becomes an object of ours: its item count, then every key against the
    fields OpenAI defines (known_fields.py: a misspelling is a 400 naming its path, never ignored). ``beta``: the
    request came on the multi-agent beta surface (protocol/tools/multi_agent.py), where ``multi_agent`` is a field."""
    check_input_count(raw, max_input_items)
    multi_agent = take_multi_agent(raw, beta=beta)
    check_known_fields(raw, unknown_fields)
    check_newer_fields(raw)  # allowed_callers, programmatic_tool_calling, background_options...: never dropped
    try:
        params = CreateParams.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    if not params.model:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    check_model_name(params.model)
    check_include(params.include)
    check_metadata_sizes(params.metadata)
    _check_conversation_and_prompt(params)
    _check_context_management(params)
    items = normalize_input(params.input)
    if params.tools is not None:
        for index, tool in enumerate(params.tools):
            check_tool(tool, f"tools[{index}]")
    if params.tool_choice is not None:
        _check_tool_choice(params.tool_choice)
    return ResponsesRequest(params=params, input_items=items, multi_agent=multi_agent)


def _validation_error(exc: ValidationError) -> APIError:
    first = exc.errors(include_url=False)[0]
    param = _loc_to_param(first.get("loc", ()))
    message = first.get("msg", "Invalid value")
    kind = first.get("type", "")
    code = ("invalid_type" if kind.endswith("_type") or kind in {"model_attributes_type", "dict_type"}
            else "invalid_value")
    return invalid_request(f"Invalid value for '{param}': {message}.", param=param, code=code)


def _loc_to_param(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for piece in loc:
        if isinstance(piece, int):
            parts.append(f"[{piece}]")
        elif piece in {"str", "list[any]", "dict[str,any]", "function-after[...]"}:
            continue  # pydantic names union branches in the location; clients know only the field
        else:
            parts.append(("." if parts else "") + str(piece))
    return "".join(parts)


def _check_context_management(params: CreateParams) -> None:
    """At most one compaction entry: two thresholds for one context would contradict each other."""
    entries = params.context_management or ()
    if len(entries) > 1:
        raise invalid_request("'context_management' may hold one compaction entry.", param="context_management[1]",
                              code="invalid_value")


def _check_conversation_and_prompt(params: CreateParams) -> None:
    """Shapes only; the conversation / prompt themselves are looked up by the engine."""
    conversation = params.conversation
    if isinstance(conversation, dict) and (not isinstance(conversation.get("id"), str) or not conversation["id"]):
        raise invalid_request("Missing required parameter: 'conversation.id'.", param="conversation.id",
                              code="missing_required_parameter")
    if isinstance(conversation, str) and not conversation:
        raise invalid_request("Invalid value for 'conversation': empty id.", param="conversation")
    prompt = params.prompt
    if prompt is None:
        return
    if not isinstance(prompt.get("id"), str) or not prompt["id"]:
        raise invalid_request("Missing required parameter: 'prompt.id'.", param="prompt.id",
                              code="missing_required_parameter")
    if prompt.get("version") is not None and not isinstance(prompt["version"], str):
        raise invalid_request("Invalid type for 'prompt.version': expected a string.", param="prompt.version",
                              code="invalid_type")
    variables = prompt.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise invalid_request("Invalid type for 'prompt.variables': expected an object.", param="prompt.variables",
                              code="invalid_type")


_NAMELESS_TOOLS = ("shell", "local_shell", "computer_use_preview", "computer", "apply_patch", "tool_search")


def _check_tool_choice(choice: str | dict[str, Any]) -> None:
    """``tool_choice`` is echoed in the Response even when there are no tools, so it is checked here."""
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise invalid_request(f"Invalid value for 'tool_choice': '{choice[:100]}'. Supported: 'auto', 'none', "
                                  "'required' or an object.", param="tool_choice")
        return
    kind = choice.get("type")
    if kind in ("function", "custom"):
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise invalid_request("Missing required parameter: 'tool_choice.name'.", param="tool_choice.name",
                                  code="missing_required_parameter")
    elif kind == "allowed_tools":
        if choice.get("mode") not in (None, "auto", "required", "none"):
            raise invalid_request("Invalid value for 'tool_choice.mode': expected 'auto', 'required' or 'none'.",
                                  param="tool_choice.mode")
        tools = choice.get("tools")
        if not isinstance(tools, list):
            raise invalid_request("Invalid type for 'tool_choice.tools': expected an array.",
                                  param="tool_choice.tools", code="invalid_type")
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") in _NAMELESS_TOOLS:
                continue  # tools without a name of their own
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise invalid_request(f"Invalid value for 'tool_choice.tools[{index}]': expected "
                                      "{'type': 'function', 'name': …}.", param=f"tool_choice.tools[{index}]")
    elif isinstance(kind, str):
        check_tool_choice_type(kind)  # a hosted tool's choice: dropped or refused with its tool (engine/tools/tools.py)
    else:
        raise invalid_request("Missing required parameter: 'tool_choice.type'.", param="tool_choice.type",
                              code="missing_required_parameter")


# --- input items -------------------------------------------------------------------------------------------------


