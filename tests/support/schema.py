"""Oracles for what the bridge emits: Response objects, streaming events, SSE framing and event order.

Two independent sets of types judge every object:

* ``openresponses-types`` (generated from the Open Responses OpenAPI spec) is the primary oracle. Its models
  ignore unknown keys and coerce values, so on top of ``model_validate(obj, strict=False)`` every object must
  survive a round trip: dumping the validated model (``exclude_unset``) must give back exactly the input, with
  the same JSON types. Anything the spec does not name, or any value that only validated through coercion,
  fails.
* The ``openai`` SDK types (``Response`` and the ``ResponseStreamEvent`` union) check what the spec types leave
  out: they model ``text.format.schema`` (typed ``null`` in openresponses-types) and non-function tools (the
  spec types model only function tools), in pydantic's strict mode (no coercion). Where the two disagree on a
  shape the spec wins: event types the SDK does not know (``response.reasoning.*`` are Open Responses names) or
  shapes differently (``error``) are checked by the spec types alone; a failed Response's ``error.code`` is judged
  by the SDK's list (the bridge's reasons lead the message, engine/response_error.py). Where the SDK requires a
  field the spec lacks (``usage.input_tokens_details.cache_write_tokens``) the SDK wins: the spec's view drops it.

Usage (the integration suites use the same helpers against the HTTP and Envoy doors)::

    events = parse_sse(raw_body)          # framing: `event:` + one-line `data:` per event, then [DONE]
    for event in events:
        validate_event(event)
    check_sequence(events)                # order, indices, deltas vs. done texts, final output
    validate_response(json_body)

``check_stream(raw)`` does all of that at once and returns the events.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, get_args

import openai.types.responses as sdk
import openresponses_types as spec
import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = [
    "EVENT_MODELS",
    "LIFECYCLE_EVENTS",
    "RESPONSE_FIELDS",
    "SPEC_NAMES",
    "TERMINAL_EVENTS",
    "check_sequence",
    "check_stream",
    "normalize",
    "parse_sse",
    "validate_event",
    "validate_response",
]

# All 31 fields of a Response; the spec requires every one, nullable ones present as null.
RESPONSE_FIELDS: tuple[str, ...] = (
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model", "previous_response_id",
    "instructions", "output", "error", "tools", "tool_choice", "truncation", "parallel_tool_calls", "text", "top_p",
    "presence_penalty", "frequency_penalty", "top_logprobs", "temperature", "reasoning", "usage",
    "max_output_tokens", "max_tool_calls", "store", "background", "service_tier", "metadata", "safety_identifier",
    "prompt_cache_key",
)
assert len(RESPONSE_FIELDS) == 31 and set(RESPONSE_FIELDS) == set(spec.ResponseResource.model_fields)
# OpenAI fields the spec does not have, present only when the request used them (checked by the SDK types).
OPTIONAL_RESPONSE_FIELDS: tuple[str, ...] = ("conversation", "prompt", "prompt_cache_retention", "prompt_cache_options",
                                             "user", "access_programs", "image")

# Every event type the bridge may emit, mapped to its spec model. A type missing here fails validation.
EVENT_MODELS: dict[str, type[BaseModel]] = {
    "response.created": spec.ResponseCreatedStreamingEvent,
    "response.queued": spec.ResponseQueuedStreamingEvent,
    "response.in_progress": spec.ResponseInProgressStreamingEvent,
    "response.completed": spec.ResponseCompletedStreamingEvent,
    "response.failed": spec.ResponseFailedStreamingEvent,
    "response.incomplete": spec.ResponseIncompleteStreamingEvent,
    "response.output_item.added": spec.ResponseOutputItemAddedStreamingEvent,
    "response.output_item.done": spec.ResponseOutputItemDoneStreamingEvent,
    "response.content_part.added": spec.ResponseContentPartAddedStreamingEvent,
    "response.content_part.done": spec.ResponseContentPartDoneStreamingEvent,
    "response.output_text.delta": spec.ResponseOutputTextDeltaStreamingEvent,
    "response.output_text.done": spec.ResponseOutputTextDoneStreamingEvent,
    "response.output_text.annotation.added": spec.ResponseOutputTextAnnotationAddedStreamingEvent,
    "response.refusal.delta": spec.ResponseRefusalDeltaStreamingEvent,
    "response.refusal.done": spec.ResponseRefusalDoneStreamingEvent,
    "response.reasoning.delta": spec.ResponseReasoningDeltaStreamingEvent,
    "response.reasoning.done": spec.ResponseReasoningDoneStreamingEvent,
    "response.reasoning_summary_part.added": spec.ResponseReasoningSummaryPartAddedStreamingEvent,
    "response.reasoning_summary_part.done": spec.ResponseReasoningSummaryPartDoneStreamingEvent,
    "response.reasoning_summary_text.delta": spec.ResponseReasoningSummaryDeltaStreamingEvent,
    "response.reasoning_summary_text.done": spec.ResponseReasoningSummaryDoneStreamingEvent,
    "response.function_call_arguments.delta": spec.ResponseFunctionCallArgumentsDeltaStreamingEvent,
    "response.function_call_arguments.done": spec.ResponseFunctionCallArgumentsDoneStreamingEvent,
    "error": spec.ErrorStreamingEvent,
}
assert len(EVENT_MODELS) == 24
# The SDK's names for events the spec names differently (what a client that names no Open Responses version gets):
# checked against the SDK's model of that name and the spec's model of the same event under the spec's name.
SPEC_NAMES = {"response.reasoning_text.delta": "response.reasoning.delta",
              "response.reasoning_text.done": "response.reasoning.done"}
# Events of client-executed tools the spec does not model (custom, shell): judged by the openai SDK's types alone.
SDK_ONLY_EVENTS = frozenset({"response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
                             "response.shell_call_command.added", "response.shell_call_command.delta",
                             "response.shell_call_command.done", "response.shell_call_output_content.delta",
                             "response.shell_call_output_content.done"})
# Output item types the spec types know; the others (custom_tool_call, shell_call, apply_patch_call,
# tool_search_call) are judged by the openai SDK's types alone.
SPEC_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning", "compaction"})

# Annotation types the spec types do not model (they know only url_citation): judged by the openai SDK's types.
SDK_ONLY_ANNOTATIONS = frozenset({"file_citation"})

LIFECYCLE_EVENTS = frozenset({"response.created", "response.queued", "response.in_progress", "response.completed",
                              "response.failed", "response.incomplete"})
TERMINAL_EVENTS = {"response.completed": "completed", "response.incomplete": "incomplete",
                   "response.failed": "failed"}

# Event field sets (besides type and sequence_number): the round trip catches extras inside nested objects,
# this catches them at the top of an event.
_LIFECYCLE_KEYS = frozenset({"type", "sequence_number", "response"})

# Event types whose shape the openai SDK does not share with the spec.
_SPEC_ONLY_SHAPES = frozenset({"error"})

# Content delta event → (part type, key of its text in the part, matching done event, key of the text there)
_PART_DELTAS = {
    "response.output_text.delta": ("output_text", "text", "response.output_text.done", "text"),
    "response.refusal.delta": ("refusal", "refusal", "response.refusal.done", "refusal"),
    "response.reasoning.delta": ("reasoning_text", "text", "response.reasoning.done", "text"),
    "response.reasoning_text.delta": ("reasoning_text", "text", "response.reasoning_text.done", "text"),
}
_PART_DONES = {done: (part_type, part_key, done_key) for part_type, part_key, done, done_key in _PART_DELTAS.values()}


class SchemaError(AssertionError):
    """Something the bridge emitted does not match the spec; the message says where."""


# --- SDK types ---------------------------------------------------------------------------------------------------


@cache
def _sdk_event_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(sdk.ResponseStreamEvent)


@cache
def _sdk_event_models() -> dict[str, type[BaseModel]]:
    union = get_args(sdk.ResponseStreamEvent)[0]
    models: dict[str, type[BaseModel]] = {}
    for model in get_args(union):
        (literal,) = get_args(model.model_fields["type"].annotation)
        models[literal] = model
    return models


def _sdk_validate_response(response: dict[str, Any], where: str) -> None:
    try:
        sdk.Response.model_validate(response, strict=True)
    except ValidationError as exc:
        raise SchemaError(f"{where}: not a valid openai.types.responses.Response:\n{exc}") from None


# --- spec types --------------------------------------------------------------------------------------------------


SDK_ONLY_FUNCTION_KEYS = frozenset({"allowed_callers", "defer_loading", "output_schema", "async"})
"""A function tool's OpenAI fields the spec lacks (the SDK types judge them)."""


def _spec_response_view(response: dict[str, Any]) -> dict[str, Any]:
    """The response as the spec types can judge it: they type ``json_schema.schema`` as null and model only
    function tools, function tool choices and the core output items (all checked against the SDK types
    instead)."""
    view = {key: value for key, value in response.items() if key not in OPTIONAL_RESPONSE_FIELDS}
    usage = view.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("input_tokens_details"), dict):  # OpenAI's, not the spec's
        details = {key: value for key, value in usage["input_tokens_details"].items()
                   if key not in ("cache_write_tokens", "cache_write_tokens_details")}
        view["usage"] = dict(usage, input_tokens_details=details)
    text = view.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and text["format"].get("type") == "json_schema":
        view["text"] = dict(text, format=dict(text["format"], schema=None))
    reasoning = view.get("reasoning")
    if isinstance(reasoning, dict):  # OpenAI's context and mode: the SDK types judge them
        view["reasoning"] = {key: value for key, value in reasoning.items() if key not in ("context", "mode")}
    tools = view.get("tools")
    if isinstance(tools, list):
        view["tools"] = [{key: value for key, value in tool.items() if key not in SDK_ONLY_FUNCTION_KEYS}
                         if isinstance(tool, dict) else tool
                         for tool in tools if not isinstance(tool, dict) or tool.get("type") == "function"]
    choice = view.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
        view["tool_choice"] = "auto"  # a custom / shell / apply_patch / hosted tool's choice: the SDK judges it
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools" and isinstance(choice.get("tools"), list):
        view["tool_choice"] = dict(choice, tools=[tool for tool in choice["tools"]
                                                  if not isinstance(tool, dict) or tool.get("type") == "function"])
    output = view.get("output")
    if isinstance(output, list):
        view["output"] = [_spec_item_view(item) for item in output
                          if not isinstance(item, dict) or item.get("type") in SPEC_ITEM_TYPES]
    return view


def _spec_part_view(part: Any) -> Any:
    """An output_text part without the annotations the spec does not model (``file_citation``: the SDK types
    judge those)."""
    if not isinstance(part, dict) or not isinstance(part.get("annotations"), list):
        return part
    kept = [entry for entry in part["annotations"] if not (isinstance(entry, dict)
                                                           and entry.get("type") in SDK_ONLY_ANNOTATIONS)]
    return part if len(kept) == len(part["annotations"]) else dict(part, annotations=kept)


def _spec_item_view(item: Any) -> Any:
    if isinstance(item, dict) and "caller" in item:  # a program's call (programmatic tool calling): the SDK's field
        item = {key: value for key, value in item.items() if key != "caller"}
    if not isinstance(item, dict) or item.get("type") != "message" or not isinstance(item.get("content"), list):
        return item
    return dict(item, content=[_spec_part_view(part) for part in item["content"]])


def _spec_event_view(event: dict[str, Any]) -> dict[str, Any]:
    if "item" in event:
        return dict(event, item=_spec_item_view(event["item"]))
    if "part" in event:
        return dict(event, part=_spec_part_view(event["part"]))
    return event


def _round_trip(model: type[BaseModel], obj: dict[str, Any], where: str) -> None:
    """Validate leniently, then demand that the model gives back exactly what it was given."""
    try:
        validated = model.model_validate(obj, strict=False)
    except ValidationError as exc:
        raise SchemaError(f"{where}: not a valid {model.__name__}:\n{exc}") from None
    dumped = validated.model_dump(mode="json", by_alias=True, exclude_unset=True)
    _same_json(obj, dumped, where)


def _same_json(sent: Any, dumped: Any, path: str) -> None:
    if isinstance(sent, dict):
        if not isinstance(dumped, dict):
            raise SchemaError(f"{path}: {type(sent).__name__} where the spec has {type(dumped).__name__}")
        unexpected = sorted(set(sent) - set(dumped))
        if unexpected:
            raise SchemaError(f"{path}: keys the spec does not define: {unexpected}")
        for key, value in sent.items():
            _same_json(value, dumped[key], f"{path}.{key}")
        return
    if isinstance(sent, list):
        if not isinstance(dumped, list) or len(sent) != len(dumped):
            raise SchemaError(f"{path}: list changed when validated")
        for index, (a, b) in enumerate(zip(sent, dumped, strict=True)):
            _same_json(a, b, f"{path}[{index}]")
        return
    # JSON types must match exactly; only an integer where the spec has a number is fine (JSON has no int/float).
    if type(sent) is not type(dumped) and not (type(sent) is int and type(dumped) is float):
        raise SchemaError(f"{path}: {sent!r} ({type(sent).__name__}) only validates as {dumped!r} "
                          f"({type(dumped).__name__})")
    if sent != dumped:
        raise SchemaError(f"{path}: {sent!r} became {dumped!r} when validated")


# --- public: objects ---------------------------------------------------------------------------------------------


def validate_response(obj: dict[str, Any], *, where: str = "response") -> None:
    """A Response object: exactly the 31 fields, valid for the spec types and for the SDK types."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [name for name in RESPONSE_FIELDS if name not in obj]
    unexpected = sorted(set(obj) - set(RESPONSE_FIELDS) - set(OPTIONAL_RESPONSE_FIELDS))
    _check_optional_fields(obj, where)
    if missing or unexpected:
        raise SchemaError(f"{where}: missing fields {missing}, unexpected fields {unexpected}")
    if obj["object"] != "response":
        raise SchemaError(f"{where}.object is {obj['object']!r}")
    _round_trip(spec.ResponseResource, _spec_response_view(obj), where)
    _sdk_validate_response(obj, where)
    _check_response_consistency(obj, where)


def _check_optional_fields(obj: dict[str, Any], where: str) -> None:
    """``conversation`` / ``prompt`` (OpenAI fields the spec types lack; the SDK types check their values):
    present only when the request used them, with exactly the keys OpenAI gives them."""
    if "conversation" in obj:
        conversation = obj["conversation"]
        if not isinstance(conversation, dict) or set(conversation) != {"id"} or not isinstance(conversation["id"], str):
            raise SchemaError(f"{where}.conversation: expected {{'id': str}}, got {conversation!r}")
    if "prompt" in obj:
        prompt = obj["prompt"]
        if not isinstance(prompt, dict) or set(prompt) != {"id", "version", "variables"}:
            raise SchemaError(f"{where}.prompt: expected the keys id, version, variables, got {prompt!r}")


def _check_response_consistency(obj: dict[str, Any], where: str) -> None:
    status = obj["status"]
    if status not in {"completed", "failed", "in_progress", "cancelled", "queued", "incomplete"}:
        raise SchemaError(f"{where}.status: unknown status {status!r}")
    if (obj["completed_at"] is not None) != (status == "completed"):
        raise SchemaError(f"{where}: completed_at is {obj['completed_at']!r} with status {status!r}")
    if (obj["incomplete_details"] is not None) != (status == "incomplete"):
        raise SchemaError(f"{where}: incomplete_details is {obj['incomplete_details']!r} with status {status!r}")
    if (obj["error"] is not None) != (status == "failed"):
        raise SchemaError(f"{where}: error is {obj['error']!r} with status {status!r}")
    ids = [item.get("id") for item in obj["output"]]
    if len(set(ids)) != len(ids):
        raise SchemaError(f"{where}.output: duplicate item ids {ids}")
    usage = obj["usage"]
    if usage is not None and usage["total_tokens"] != usage["input_tokens"] + usage["output_tokens"]:
        raise SchemaError(f"{where}.usage: total_tokens is not input_tokens + output_tokens: {usage}")


def validate_event(event: dict[str, Any]) -> None:
    """One streaming event: a known type, valid for the spec model of that type (and the SDK's when it has one)."""
    if not isinstance(event, dict):
        raise SchemaError(f"event: expected a JSON object, got {type(event).__name__}")
    kind = event.get("type")
    where = f"event {kind!r} #{event.get('sequence_number')}"
    if type(event.get("sequence_number")) is not int:
        raise SchemaError(f"{where}: sequence_number must be an integer")
    if kind in SDK_ONLY_EVENTS or _sdk_only_item_event(event):
        _validate_sdk_only(event, where)
        return
    spec_kind = SPEC_NAMES.get(kind, kind) if isinstance(kind, str) else None
    model = EVENT_MODELS.get(spec_kind) if spec_kind is not None else None
    if model is None:
        raise SchemaError(f"{where}: unknown event type {kind!r}")
    if kind in LIFECYCLE_EVENTS:
        if set(event) != _LIFECYCLE_KEYS:
            raise SchemaError(f"{where}: keys {sorted(event)}, expected {sorted(_LIFECYCLE_KEYS)}")
        validate_response(event["response"], where=f"{where}.response")
        _round_trip(model, dict(event, response=_spec_response_view(event["response"])), where)
        expected_status = {"response.created": ("in_progress", "queued"), "response.queued": ("queued",),
                           "response.in_progress": ("in_progress",), "response.completed": ("completed",),
                           "response.failed": ("failed", "cancelled"),  # cancelled: the stream of a cancelled one
                           "response.incomplete": ("incomplete",)}[kind]
        if event["response"]["status"] not in expected_status:
            raise SchemaError(f"{where}: response.status is {event['response']['status']!r}")
        sdk_event = event
    else:
        view = _spec_event_view(event)
        if spec_kind != kind:  # the same event under the spec's name, given back under the SDK's
            _round_trip(model, dict(view, type=spec_kind), where)
        else:
            _round_trip(model, view, where)
        sdk_event = event
    # response.reasoning.* are Open Responses names the SDK does not have; the SDK's ``error`` event is flat
    # (``code``/``message`` at the top) where the spec nests them under ``error``: the spec wins.
    sdk_model = _sdk_event_models().get(kind) if kind not in _SPEC_ONLY_SHAPES else None
    if sdk_model is not None:
        try:
            parsed = _sdk_event_adapter().validate_python(sdk_event, strict=True)
        except ValidationError:
            try:  # the union's error lists every branch; the model of this type says what is wrong
                sdk_model.model_validate(sdk_event, strict=True)
            except ValidationError as exc:
                raise SchemaError(f"{where}: not a valid {sdk_model.__name__} (openai SDK):\n{exc}") from None
            raise
        if parsed.type != kind:
            raise SchemaError(f"{where}: the SDK reads it as {parsed.type!r}")


def _sdk_only_item_event(event: dict[str, Any]) -> bool:
    item = event.get("item")
    annotation = event.get("annotation")
    return (event.get("type") in ("response.output_item.added", "response.output_item.done")
            and isinstance(item, dict) and item.get("type") not in SPEC_ITEM_TYPES) or (
        event.get("type") == "response.output_text.annotation.added" and isinstance(annotation, dict)
        and annotation.get("type") in SDK_ONLY_ANNOTATIONS)


def _validate_sdk_only(event: dict[str, Any], where: str) -> None:
    """An event the spec types cannot judge: valid for its SDK model, with no key that model lacks (at the top
    and in its item)."""
    sdk_model = _sdk_event_models().get(event["type"])
    if sdk_model is None:
        raise SchemaError(f"{where}: unknown event type {event['type']!r}")
    try:
        parsed = _sdk_event_adapter().validate_python(event, strict=True)
    except ValidationError as exc:
        raise SchemaError(f"{where}: not a valid {sdk_model.__name__} (openai SDK):\n{exc}") from None
    if parsed.type != event["type"]:
        raise SchemaError(f"{where}: the SDK reads it as {parsed.type!r}")
    extra = sorted(set(event) - set(sdk_model.model_fields))
    item = getattr(parsed, "item", None)
    if item is not None:
        extra += [f"item.{key}" for key in sorted(set(event["item"]) - {
            field.alias or name for name, field in type(item).model_fields.items()})]
    if extra:
        raise SchemaError(f"{where}: keys the SDK does not define: {extra}")


# --- public: wire ------------------------------------------------------------------------------------------------

_DONE_FRAME = b"data: [DONE]\n\n"


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """The events of a complete client stream, after checking its framing byte for byte: each event is exactly
    ``event: <type>\\ndata: <one-line JSON>\\n\\n`` with the ``event:`` line naming the JSON ``type``, and the
    stream ends with ``data: [DONE]\\n\\n``."""
    if not isinstance(raw, (bytes, bytearray)):
        raise SchemaError(f"parse_sse wants bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw.endswith(_DONE_FRAME):
        raise SchemaError(f"the stream does not end with 'data: [DONE]\\n\\n': ...{raw[-80:]!r}")
    if b"\r" in raw:
        raise SchemaError("the stream contains CR characters; events are framed with LF only")
    body = raw[: -len(_DONE_FRAME)]
    if not body:
        return []
    if not body.endswith(b"\n\n"):
        raise SchemaError(f"the last event is not terminated by a blank line: ...{body[-80:]!r}")
    events: list[dict[str, Any]] = []
    for index, block in enumerate(body[:-2].split(b"\n\n")):
        lines = block.split(b"\n")
        if len(lines) != 2 or not lines[0].startswith(b"event: ") or not lines[1].startswith(b"data: "):
            raise SchemaError(f"event #{index} is not 'event: <type>\\ndata: <json>': {block[:200]!r}")
        name = lines[0][len(b"event: "):].decode()
        payload = lines[1][len(b"data: "):]
        if payload == b"[DONE]":
            raise SchemaError(f"[DONE] before the end of the stream (event #{index})")
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise SchemaError(f"event #{index} data is not JSON ({exc}): {payload[:200]!r}") from None
        if not isinstance(event, dict):
            raise SchemaError(f"event #{index} data is not a JSON object")
        if event.get("type") != name:
            raise SchemaError(f"event #{index}: 'event: {name}' but the JSON type is {event.get('type')!r}")
        events.append(event)
    return events


def check_sequence(events: list[dict[str, Any]]) -> None:
    """The order and bookkeeping of one response's events.

    * ``response.created`` first, one terminal event (completed / incomplete / failed) last, nothing after it;
      lifecycle events before the terminal one show the response in progress with an empty output.
    * ``sequence_number`` starts at 0 and increases strictly; all lifecycle events carry the same response id.
    * Every item: ``output_item.added`` (at the next free ``output_index``) before any of its events,
      ``output_item.done`` after all of them. Content parts: ``content_part.added`` at the next
      ``content_index``, deltas, the part's ``*.done`` carrying the concatenated deltas, ``content_part.done``
      carrying the final part; the item's ``output_item.done`` carries exactly those parts. Function calls: the
      ``arguments.done`` text is the concatenated deltas and the done item carries it.
    * The terminal response's output: for completed / incomplete exactly the ``output_item.done`` items, in
      ``output_index`` order; for failed, every announced item (finished ones as they were finished).
    * An ``error`` event must be followed by ``response.failed``.
    """
    if not events:
        raise SchemaError("no events")
    first = events[0]
    if first.get("type") != "response.created":
        raise SchemaError(f"the first event is {first.get('type')!r}, not response.created")
    previous = -1
    for index, event in enumerate(events):
        number = event.get("sequence_number")
        if type(number) is not int or number <= previous or (index == 0 and number != 0):
            raise SchemaError(f"event #{index} ({event.get('type')}): sequence_number {number!r} after {previous}")
        previous = number
    response_id = first["response"]["id"]
    items: list[_ItemState] = []
    saw_error = False
    terminal: dict[str, Any] | None = None
    for index, event in enumerate(events):
        kind = event["type"]
        where = f"event #{index} ({kind})"
        if terminal is not None:
            raise SchemaError(f"{where} after the terminal {terminal['type']}")
        if kind in LIFECYCLE_EVENTS:
            response = event["response"]
            if response["id"] != response_id:
                raise SchemaError(f"{where}: response id {response['id']!r}, expected {response_id!r}")
            if kind in TERMINAL_EVENTS:
                terminal = event
            else:
                if index > 0 and kind == "response.created":
                    raise SchemaError(f"{where}: a second response.created")
                if response["output"] or response["completed_at"] is not None:
                    raise SchemaError(f"{where}: an in-progress response must have no output and no completed_at")
            continue
        if kind == "error":
            saw_error = True
            continue
        if kind == "response.output_item.added":
            if event["output_index"] != len(items):
                raise SchemaError(f"{where}: output_index {event['output_index']}, expected {len(items)}")
            item = event["item"]
            if not isinstance(item.get("id"), str) or not item["id"]:
                raise SchemaError(f"{where}: the item has no id")
            if any(state.item_id == item["id"] for state in items):
                raise SchemaError(f"{where}: item id {item['id']!r} announced twice")
            # a program_output's status is terminal by its type (the SDK has no in_progress for it)
            if item.get("status") not in (None, "in_progress") and item.get("type") != "program_output":
                raise SchemaError(f"{where}: a new item has status {item.get('status')!r}")
            if item["type"] == "message" and item.get("content"):
                raise SchemaError(f"{where}: a new message must start with no content")
            if item["type"] == "function_call" and item.get("arguments"):
                raise SchemaError(f"{where}: a new function call must start with empty arguments")
            items.append(_ItemState(item))
            continue
        state = _item(items, event, where)
        state.handle(event, where)
    if terminal is None:
        raise SchemaError(f"no terminal event: the last one is {events[-1]['type']!r}")
    if saw_error and terminal["type"] != "response.failed":
        raise SchemaError(f"an error event was followed by {terminal['type']}, not response.failed")
    output = terminal["response"]["output"]
    if terminal["type"] == "response.failed":
        if len(output) != len(items):
            raise SchemaError(f"response.failed: {len(output)} output items, {len(items)} announced")
        for position, (state, final) in enumerate(zip(items, output, strict=True)):
            if state.done is not None:
                if final != state.done:
                    raise SchemaError(f"response.failed output[{position}] differs from its output_item.done")
            elif final.get("id") != state.item_id or final.get("type") != state.added["type"]:
                raise SchemaError(f"response.failed output[{position}] is not the announced item {state.item_id}")
        return
    unfinished = [state.item_id for state in items if state.done is None]
    if unfinished:
        raise SchemaError(f"{terminal['type']}: items without output_item.done: {unfinished}")
    done_items = [state.done for state in items]
    if output != done_items:
        raise SchemaError(f"{terminal['type']}: the response output is not the output_item.done items:\n"
                          f"output: {output}\ndone:   {done_items}")


def _item(items: list[_ItemState], event: dict[str, Any], where: str) -> _ItemState:
    output_index = event.get("output_index")
    if not isinstance(output_index, int) or not 0 <= output_index < len(items):
        raise SchemaError(f"{where}: output_index {output_index!r} names no announced item")
    state = items[output_index]
    if "item_id" in event and event["item_id"] != state.item_id:
        raise SchemaError(f"{where}: item_id {event['item_id']!r} but output_index {output_index} is "
                          f"{state.item_id!r}")
    if state.done is not None:
        raise SchemaError(f"{where}: item {state.item_id} already had output_item.done")
    return state


class _Part:
    __slots__ = ("added", "pieces", "text_done", "annotations", "done")

    def __init__(self, added: dict[str, Any]) -> None:
        self.added = added
        self.pieces: list[str] = []
        self.text_done: str | None = None
        self.annotations: list[dict[str, Any]] = []
        self.done: dict[str, Any] | None = None


class _ItemState:
    def __init__(self, item: dict[str, Any]) -> None:
        self.added = item
        self.item_id: str = item["id"]
        self.kind: str = item["type"]
        self.parts: list[_Part] = []
        self.summary: list[_Part] = []
        self.arguments: list[str] = []
        self.arguments_done: str | None = None
        self.commands: list[tuple[list[str], str | None]] = []  # shell_call: (pieces, done command)
        self.outputs: list[dict[str, Any] | None] = []  # shell_call_output: each command's done output
        self.output_deltas: dict[int, dict[str, str]] = {}  # ... and what its deltas said
        self.done: dict[str, Any] | None = None

    def _open_part(self, parts: list[_Part], index: Any, where: str, name: str) -> _Part:
        if not isinstance(index, int) or not 0 <= index < len(parts):
            raise SchemaError(f"{where}: {name} {index!r} names no added part of {self.item_id}")
        part = parts[index]
        if part.done is not None:
            raise SchemaError(f"{where}: part {index} of {self.item_id} is already done")
        return part

    def handle(self, event: dict[str, Any], where: str) -> None:
        kind = event["type"]
        if kind in ("response.content_part.added", "response.reasoning_summary_part.added"):
            parts, key = ((self.parts, "content_index") if kind == "response.content_part.added"
                          else (self.summary, "summary_index"))
            if event[key] != len(parts):
                raise SchemaError(f"{where}: {key} {event[key]}, expected {len(parts)}")
            if parts and parts[-1].done is None:
                raise SchemaError(f"{where}: part {len(parts) - 1} of {self.item_id} is still open")
            parts.append(_Part(event["part"]))
        elif kind in _PART_DELTAS:
            part = self._open_part(self.parts, event["content_index"], where, "content_index")
            part_type = _PART_DELTAS[kind][0]
            if part.added["type"] != part_type or part.text_done is not None:
                raise SchemaError(f"{where}: a {kind} for a {part.added['type']} part (done: {part.text_done!r})")
            part.pieces.append(event["delta"])
        elif kind in _PART_DONES:
            part = self._open_part(self.parts, event["content_index"], where, "content_index")
            part_type, _, done_key = _PART_DONES[kind]
            if part.added["type"] != part_type or part.text_done is not None:
                raise SchemaError(f"{where}: {kind} for a {part.added['type']} part (done: {part.text_done!r})")
            text = "".join(part.pieces)
            if event[done_key] != text:
                raise SchemaError(f"{where}: {done_key} {event[done_key]!r} but the deltas make {text!r}")
            part.text_done = text
        elif kind == "response.output_text.annotation.added":
            part = self._open_part(self.parts, event["content_index"], where, "content_index")
            if part.added["type"] != "output_text":
                raise SchemaError(f"{where}: an annotation for a {part.added['type']} part")
            if event["annotation_index"] != len(part.annotations):
                raise SchemaError(f"{where}: annotation_index {event['annotation_index']}, "
                                  f"expected {len(part.annotations)}")
            part.annotations.append(event["annotation"])
        elif kind == "response.content_part.done":
            part = self._open_part(self.parts, event["content_index"], where, "content_index")
            self._finish_part(part, event["part"], where)
        elif kind == "response.reasoning_summary_text.delta":
            part = self._open_part(self.summary, event["summary_index"], where, "summary_index")
            part.pieces.append(event["delta"])
        elif kind == "response.reasoning_summary_text.done":
            part = self._open_part(self.summary, event["summary_index"], where, "summary_index")
            text = "".join(part.pieces)
            if event["text"] != text:
                raise SchemaError(f"{where}: text {event['text']!r} but the deltas make {text!r}")
            part.text_done = text
        elif kind == "response.reasoning_summary_part.done":
            part = self._open_part(self.summary, event["summary_index"], where, "summary_index")
            self._finish_part(part, event["part"], where)
        elif kind == "response.function_call_arguments.delta":
            if self.kind != "function_call" or self.arguments_done is not None:
                raise SchemaError(f"{where}: arguments delta for a {self.kind} (done: {self.arguments_done!r})")
            self.arguments.append(event["delta"])
        elif kind == "response.function_call_arguments.done":
            if self.kind != "function_call" or self.arguments_done is not None:
                raise SchemaError(f"{where}: arguments done for a {self.kind} (done: {self.arguments_done!r})")
            text = "".join(self.arguments)
            if event["arguments"] != text:
                raise SchemaError(f"{where}: arguments {event['arguments']!r} but the deltas make {text!r}")
            self.arguments_done = text
        elif kind == "response.custom_tool_call_input.delta":
            if self.kind != "custom_tool_call" or self.arguments_done is not None:
                raise SchemaError(f"{where}: input delta for a {self.kind} (done: {self.arguments_done!r})")
            self.arguments.append(event["delta"])
        elif kind == "response.custom_tool_call_input.done":
            if self.kind != "custom_tool_call" or self.arguments_done is not None:
                raise SchemaError(f"{where}: input done for a {self.kind} (done: {self.arguments_done!r})")
            text = "".join(self.arguments)
            if event["input"] != text:
                raise SchemaError(f"{where}: input {event['input']!r} but the deltas make {text!r}")
            self.arguments_done = text
        elif kind.startswith("response.shell_call_command."):
            self._shell_command(event, kind.rsplit(".", 1)[1], where)
        elif kind.startswith("response.shell_call_output_content."):
            self._shell_output(event, kind.rsplit(".", 1)[1], where)
        elif kind == "response.output_item.done":
            self._finish_item(event["item"], where)
        else:
            raise SchemaError(f"{where}: check_sequence does not know this event type")

    def _shell_command(self, event: dict[str, Any], step: str, where: str) -> None:
        """``added`` at the next command_index, deltas, ``done`` with the concatenated deltas."""
        if self.kind != "shell_call":
            raise SchemaError(f"{where}: a shell command event for a {self.kind}")
        index = event["command_index"]
        if step == "added":
            if index != len(self.commands) or (self.commands and self.commands[-1][1] is None):
                raise SchemaError(f"{where}: command_index {index} while {len(self.commands)} were added")
            self.commands.append(([event["command"]], None))
            return
        if not 0 <= index < len(self.commands) or self.commands[index][1] is not None:
            raise SchemaError(f"{where}: command {index} is not open")
        pieces, _ = self.commands[index]
        if step == "delta":
            pieces.append(event["delta"])
        else:
            if event["command"] != "".join(pieces):
                raise SchemaError(f"{where}: command {event['command']!r} but the deltas make {''.join(pieces)!r}")
            self.commands[index] = (pieces, event["command"])

    def _shell_output(self, event: dict[str, Any], step: str, where: str) -> None:
        """Per command, in command order: deltas, then ``done`` whose output holds what the deltas said."""
        if self.kind != "shell_call_output" or event["item_id"] != self.item_id:
            raise SchemaError(f"{where}: a shell output event for a {self.kind} {event['item_id']!r}")
        index = event["command_index"]
        if step == "delta":
            if index == len(self.outputs):
                self.outputs.append(None)
            if index != len(self.outputs) - 1 or self.outputs[index] is not None:
                raise SchemaError(f"{where}: output delta for command {index} while {len(self.outputs)} were started")
            said = self.output_deltas.setdefault(index, {"stdout": "", "stderr": ""})
            for key in ("stdout", "stderr"):
                said[key] += event["delta"].get(key) or ""
            return
        if index != len(self.outputs) - 1 or self.outputs[index] is not None:
            raise SchemaError(f"{where}: output done for command {index}, which has no open output")
        said = self.output_deltas.get(index, {"stdout": "", "stderr": ""})
        [output] = event["output"]
        if (output["stdout"], output["stderr"]) != (said["stdout"], said["stderr"]):
            raise SchemaError(f"{where}: done output {output!r} but the deltas said {said!r}")
        self.outputs[index] = output

    def _finish_part(self, part: _Part, final: dict[str, Any], where: str) -> None:
        if final.get("type") != part.added.get("type"):
            raise SchemaError(f"{where}: part type changed from {part.added.get('type')!r} to {final.get('type')!r}")
        key = "refusal" if final["type"] == "refusal" else "text"
        if part.text_done is None and (part.pieces or final.get(key)):
            raise SchemaError(f"{where}: the part's text was never finished with a *.done event")
        if part.text_done is not None and final.get(key) != part.text_done:
            raise SchemaError(f"{where}: part {key} {final.get(key)!r} but its done text is {part.text_done!r}")
        if final["type"] == "output_text" and final.get("annotations", []) != part.annotations:
            raise SchemaError(f"{where}: part annotations {final.get('annotations')!r} but the events added "
                              f"{part.annotations!r}")
        part.done = final

    def _finish_item(self, item: dict[str, Any], where: str) -> None:
        if item.get("id") != self.item_id or item.get("type") != self.kind:
            raise SchemaError(f"{where}: done item {item.get('type')} {item.get('id')!r} was announced as "
                              f"{self.kind} {self.item_id!r}")
        if item.get("status", "completed") == "in_progress":
            raise SchemaError(f"{where}: a done item is still in_progress")
        for parts, key in ((self.parts, "content"), (self.summary, "summary")):
            open_parts = [i for i, part in enumerate(parts) if part.done is None]
            if open_parts:
                raise SchemaError(f"{where}: {key} parts {open_parts} of {self.item_id} were never done")
            finals = [part.done for part in parts]
            if (parts or item.get(key)) and item.get(key) != finals:
                raise SchemaError(f"{where}: item {key} {item.get(key)!r} but its parts were done as {finals!r}")
        if self.kind == "function_call":
            if self.arguments_done is None:
                raise SchemaError(f"{where}: function call {self.item_id} without arguments.done")
            if item["arguments"] != self.arguments_done:
                raise SchemaError(f"{where}: item arguments {item['arguments']!r}, done as {self.arguments_done!r}")
            for key in ("call_id", "name"):
                if item[key] != self.added[key]:
                    raise SchemaError(f"{where}: {key} changed from {self.added[key]!r} to {item[key]!r}")
        if self.kind == "custom_tool_call" and (self.arguments_done is None or item["input"] != self.arguments_done):
            raise SchemaError(f"{where}: custom tool call input {item['input']!r}, done as {self.arguments_done!r}")
        if self.kind == "shell_call":
            done = [command for _, command in self.commands]
            if done != item["action"]["commands"]:
                raise SchemaError(f"{where}: shell commands {item['action']['commands']!r}, done as {done!r}")
        if self.kind == "shell_call_output" and item["output"] != self.outputs:
            raise SchemaError(f"{where}: shell output {item['output']!r}, done per command as {self.outputs!r}")
        if self.kind != "message" and self.kind not in SPEC_ITEM_TYPES and item.get("call_id") != self.added.get(
                "call_id"):
            raise SchemaError(f"{where}: call_id changed")
        self.done = item


def check_stream(raw: bytes) -> list[dict[str, Any]]:
    """``parse_sse`` + ``validate_event`` for every event + ``check_sequence``; returns the events."""
    events = parse_sse(raw)
    for event in events:
        validate_event(event)
    check_sequence(events)
    return events


# --- comparison --------------------------------------------------------------------------------------------------

_ID_RE = re.compile(rb"\b(resp|msg|fc|fco|rs|call)_[0-9a-f]{32}\b")
_TIME_RE = re.compile(rb'"(created_at|completed_at)":\d+')


def normalize(value: Any) -> Any:
    """``value`` (bytes, or any JSON value) with generated ids and timestamps replaced by stable placeholders,
    numbered in order of first appearance, so two runs of the same exchange compare equal."""
    raw = value if isinstance(value, (bytes, bytearray)) else orjson.dumps(value)
    seen: dict[bytes, bytes] = {}

    def placeholder(match: re.Match[bytes]) -> bytes:
        found = match.group(0)
        if found not in seen:
            seen[found] = match.group(1) + b"_" + str(len(seen)).encode()
        return seen[found]

    raw = _TIME_RE.sub(lambda m: b'"' + m.group(1) + b'":0', _ID_RE.sub(placeholder, bytes(raw)))
    return raw if isinstance(value, (bytes, bytearray)) else orjson.loads(raw)
