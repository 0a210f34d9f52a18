"""The generated table of docs/api.md: every request field, input item, tool and streamed event of the installed
openai SDK's Responses types, each with what the bridge does with it.

The names come from the SDK (the request's fields as the known-fields table has them, with the keys of its
objects; the ``type`` of every member of ``ResponseInputItemParam``, ``ToolParam`` and ``ResponseStreamEvent``);
what the bridge does with each is the hand-kept :data:`BEHAVIOUR` below, one line a name. A name the SDK has and
the map does not place stops the render (:class:`Unplaced`), as does a name the map keeps that the SDK no longer
has, so a new SDK release cannot add a field, item, tool or event the page says nothing about: tests/deploy/
test_docs.py renders it. Run by scripts/render-docs.

Words of the first column: *forwarded* (sent to the Chat Completions backend, translated where its name differs),
*enforced* (the bridge does what it asks itself), *served* (the bridge runs it, or answers with it), *echoed* (in
the Response as sent or as served), *refused* (a 400 naming it), *not emitted* (an event the bridge never sends).
"""

from __future__ import annotations

import typing
from typing import Any, Literal, Union, get_args, get_origin

import typing_extensions

from responses_bridge.protocol.known_fields_table import REQUEST

Section = Literal["request", "items", "tools", "tool_fields", "events"]
TOOLS_MD = "[tools.md](tools.md)"
_UNSUPPORTED = "follows `RESPONSES_BRIDGE_UNSUPPORTED_TOOLS` (dropped from what the model is offered, or a 400)"
_CALLERS = "without `direct` the tool is for programs only; `programmatic` where programs may call it, else a 400"

BEHAVIOUR: dict[Section, dict[str, tuple[str, str]]] = {
    "request": {
        "access_programs": ("enforced, echoed", "see `access_programs.cyber`; echoed when sent"),
        "access_programs.cyber": ("served / refused", "`standard`: every model here is served under it; a Daybreak "
                                  "program is a 400 `unsupported_value`"),
        "background": ("enforced", "the response runs in the bridge after the answer (background responses, below)"),
        "background_options": ("enforced", "see its two keys"),
        "background_options.completion_window": ("served / refused", "`soonest` (every background response runs at "
                                                 "once); `2h` / `8h` a 400 `unsupported_value`"),
        "background_options.continuation_id": ("refused", "a 400 `unsupported_parameter`: no priority among "
                                               "background requests"),
        "client_metadata": ("accepted", "Codex's per-turn client details: not sent upstream, not echoed (OpenAI "
                            "keeps them to itself too)"),
        "context_management": ("enforced, echoed", "automatic compaction (below)"),
        "conversation": ("enforced, echoed", "history loaded from and appended to the conversation"),
        "conversation.id": ("enforced", "the tenant's own conversation, else 404"),
        "frequency_penalty": ("forwarded, echoed", ""),
        "image": ("echoed", "as served: `{\"context_compression\": \"disabled\"}`"),
        "image.context_compression": ("served / refused", "`auto` and `disabled` (images go to the backend as "
                                      "sent); `enabled` a 400 `unsupported_value`"),
        "include": ("enforced", "`file_search_call.results`, `web_search_call.action.sources`, "
                    "`code_interpreter_call.outputs`, `reasoning.encrypted_content`, `message.output_text.logprobs`; "
                    "input and screenshot image URLs are kept whatever it says; `web_search_call.results` (the "
                    "SDK's older name; the item has no results field) accepted; another value a 400 "
                    "`invalid_value`"),
        "input": ("forwarded", "as Chat Completions messages (input items, below)"),
        "instructions": ("forwarded, echoed", "the first system message"),
        "max_output_tokens": ("forwarded, echoed", "as `max_tokens` (or the profile's `max_completion_tokens`)"),
        "max_tool_calls": ("enforced, echoed", "counts the server-side tool calls the bridge runs"),
        "metadata": ("enforced, echoed", "stored with the response"),
        "model": ("forwarded, echoed", "routes to an upstream; renamed where a route says"),
        "moderation": ("forwarded / refused", "to an upstream whose profile sets `openai_fields`; elsewhere a 400 "
                       "`unsupported_parameter`"),
        "moderation.model": ("forwarded", "with `moderation`"),
        "moderation.policy": ("forwarded", "with `moderation`"),
        "parallel_tool_calls": ("forwarded, echoed", ""),
        "presence_penalty": ("forwarded, echoed", ""),
        "previous_response_id": ("enforced, echoed", "the chain's items are the history (the tenant's own)"),
        "prompt": ("enforced, echoed", "a stored prompt template rendered"),
        "prompt.id": ("enforced", ""),
        "prompt.variables": ("enforced", ""),
        "prompt.version": ("enforced", ""),
        "prompt_cache_key": ("forwarded, echoed", ""),
        "prompt_cache_options": ("forwarded, echoed", "where the profile sets `openai_fields`; echoed with OpenAI's "
                                 "defaults filled in"),
        "prompt_cache_options.comparison_response_id": ("forwarded, echoed", "with `prompt_cache_options`"),
        "prompt_cache_options.mode": ("forwarded, echoed", "with `prompt_cache_options`"),
        "prompt_cache_options.prewarm": ("forwarded / served", "with `prompt_cache_options`; elsewhere the turn "
                                         "goes upstream with `max_tokens: 1` and the answer is `completed` with no "
                                         "output"),
        "prompt_cache_options.ttl": ("forwarded, echoed", "with `prompt_cache_options`"),
        "prompt_cache_retention": ("forwarded, echoed", "where the profile sets `openai_fields`"),
        "reasoning": ("echoed", "with `context` and `mode` where sent"),
        "reasoning.context": ("served / refused", "`auto` (the profile's `reasoning_history` decides); `all_turns` "
                              "and `current_turn` where that switch sends reasoning back; else a 400 "
                              "`unsupported_value`"),
        "reasoning.effort": ("forwarded, echoed", "as `reasoning_effort`; a value outside the SDK's a 400 "
                             "`invalid_value`"),
        "reasoning.generate_summary": ("enforced", "as `summary`"),
        "reasoning.mode": ("served / refused", "`standard`; another mode a 400 `unsupported_value`"),
        "reasoning.summary": ("enforced, echoed", "the backend's reasoning also given as a summary part"),
        "safety_identifier": ("forwarded, echoed", ""),
        "seed": ("forwarded", "Chat Completions' own, taken beside the SDK's fields"),
        "service_tier": ("forwarded, echoed", "forwarded unless `auto`; echoed as served: the tier the upstream "
                         "reports, else `default`"),
        "stop": ("forwarded", "Chat Completions' own, taken beside the SDK's fields"),
        "store": ("enforced, echoed", ""),
        "stream": ("enforced", "Server-Sent Events"),
        "stream_options": ("accepted", "see its key"),
        "stream_options.include_obfuscation": ("accepted", "the bridge's events never carry `obfuscation` padding, "
                                               "whatever it says"),
        "temperature": ("forwarded, echoed", ""),
        "text": ("forwarded, echoed", "see its keys"),
        "text.format": ("forwarded, echoed", "as `response_format` (or the profile's `json_object` form)"),
        "text.verbosity": ("forwarded, echoed", "as `verbosity`"),
        "tool_choice": ("forwarded, echoed", "translated to the function the tool is offered as"),
        "tools": ("forwarded / served, echoed", "tools, below"),
        "top_logprobs": ("forwarded, echoed", "as `logprobs` / `top_logprobs`"),
        "top_p": ("forwarded, echoed", ""),
        "truncation": ("enforced, echoed", "`auto` drops the oldest items and retries once"),
        "user": ("forwarded, echoed", ""),
    },
    "items": {
        "message": ("forwarded", "by role (`developer` as the profile says)"),
        "file_search_call": ("forwarded", "replayed as a tool call and its results"),
        "computer_call": ("forwarded", "as a call of the `computer` function (one `action`, or the GA tool's batch "
                          "of `actions`)"),
        "computer_call_output": ("forwarded", "its screenshot as a `user` image after the turn's tool messages; only "
                                 "the newest `RESPONSES_BRIDGE_DESKTOP_SCREENSHOTS_KEPT` (3) of a request keep their "
                                 "image, each older one sent as a one-line note"),
        "web_search_call": ("forwarded", "replayed as a tool call and its sources"),
        "function_call": ("forwarded", "as an assistant tool call"),
        "function_call_output": ("forwarded", "as a tool message; without `call_id` it answers the first open "
                                 "call of its `name` (or the first open call); `name`, `namespace`, `status` kept"),
        "tool_search_call": ("forwarded", "as a tool call"),
        "tool_search_output": ("enforced", "its tools offered from here on"),
        "additional_tools": ("enforced", "its tools offered from here on"),
        "configuration_update": ("enforced", "its settings in effect for later turns"),
        "reasoning": ("forwarded", "as `reasoning_content` where the profile sends reasoning back, else left out"),
        "compaction": ("enforced", "its sealed summary opened and sent as context"),
        "image_generation_call": ("forwarded", "as a note, never the image's bytes"),
        "code_interpreter_call": ("forwarded", "replayed as a tool call and its outputs"),
        "local_shell_call": ("forwarded", "as a tool call"),
        "local_shell_call_output": ("forwarded", "as a tool message"),
        "shell_call": ("forwarded", "as a tool call"),
        "shell_call_output": ("forwarded", "as a tool message"),
        "apply_patch_call": ("forwarded", "as a tool call"),
        "apply_patch_call_output": ("forwarded", "as a tool message"),
        "mcp_list_tools": ("enforced", "its tools offered; not sent as a message"),
        "mcp_approval_request": ("enforced", "kept in history; not sent as a message"),
        "mcp_approval_response": ("enforced", "the approved call is run (or skipped) before the next turn"),
        "mcp_call": ("forwarded", "replayed as a tool call and its output"),
        "custom_tool_call_output": ("forwarded", "as a tool message"),
        "custom_tool_call": ("forwarded", "as a call of the function the tool is offered as"),
        "compaction_trigger": ("served", "answered with one `compaction` item"),
        "item_reference": ("enforced", "replaced by the item it names: among what the request continues (its "
                           "chain or conversation) and the input before it, else among every item the tenant "
                           "stored; else a 404 `item_not_found`"),
        "program": ("enforced", "programmatic tool calling's program, resumed"),
        "program_output": ("enforced", "programmatic tool calling's program output"),
    },
    "tools": {
        "function": ("forwarded, echoed", "echoed with every key, `defer_loading`, `output_schema` and `async` "
                     "included"),
        "file_search": ("served", f"over the tenant's vector stores ({TOOLS_MD}); without any, {_UNSUPPORTED}"),
        "computer": ("forwarded", "offered as the function `computer` taking a batch of `actions`; the client runs "
                     "them in order. A 400 naming the profile switch `images` where it is off (a model that reads "
                     "no screenshots)"),
        "computer_use_preview": ("forwarded", "offered as the function `computer`; the client runs its actions"),
        "web_search": ("served", "by the configured provider (`external_web_access: false`: from the results the "
                       f"tenant's earlier searches found, never a live search); without one, {_UNSUPPORTED}"),
        "web_search_2025_08_26": ("served", "as `web_search`"),
        "mcp": ("served", "the bridge calls the MCP server (approvals as OpenAI asks)"),
        "code_interpreter": ("served", f"in the sandbox's containers; without containers, {_UNSUPPORTED}"),
        "programmatic_tool_calling": ("served / refused", "with the `programs` extra; else a 400 `unsupported_tool`"),
        "image_generation": ("served", f"where `RESPONSES_BRIDGE_IMAGE_GENERATION=upstream`; else {_UNSUPPORTED}"),
        "local_shell": ("forwarded", "offered as a function; the client runs its commands"),
        "shell": ("forwarded / served", "the client's shell (a `local` environment or none), or run by the bridge "
                  "in a container"),
        "custom": ("forwarded", "a function with one string argument `input`"),
        "namespace": ("forwarded", "its functions offered under the namespace's name"),
        "tool_search": ("forwarded / served", "`execution: client`: the client searches; else the bridge does"),
        "web_search_preview": ("served", "as `web_search`; `search_content_types` asking for `image` is refused"),
        "web_search_preview_2025_03_11": ("served", "as `web_search_preview`"),
        "apply_patch": ("forwarded", "offered as a function; the client applies the patch"),
    },
    "tool_fields": {
        "apply_patch.allowed_callers": ("enforced", _CALLERS),
        "code_interpreter.allowed_callers": ("enforced", _CALLERS),
        "code_interpreter.container": ("served", "a container id of the tenant's, or an `auto` container with its "
                                       "`file_ids`, `memory_limit` and `network_policy`"),
        "computer_use_preview.display_height": ("forwarded", "told to the model in the function's description"),
        "computer_use_preview.display_width": ("forwarded", "told to the model in the function's description"),
        "computer_use_preview.environment": ("forwarded", "told to the model in the function's description"),
        "custom.allowed_callers": ("enforced", "`direct` only (programs call function tools)"),
        "custom.async": ("echoed", "the client's own description of its tool"),
        "custom.defer_loading": ("enforced, echoed", "held back until a tool search loads it"),
        "custom.description": ("forwarded, echoed", ""),
        "custom.format": ("forwarded, echoed", "a grammar is quoted in the function's description"),
        "custom.name": ("forwarded, echoed", ""),
        "file_search.filters": ("served", "attribute filters on the search"),
        "file_search.max_num_results": ("served", ""),
        "file_search.ranking_options": ("served", ""),
        "file_search.vector_store_ids": ("served", "the tenant's own stores"),
        "function.allowed_callers": ("enforced, echoed", _CALLERS),
        "function.async": ("echoed", "the client's own description of its function"),
        "function.defer_loading": ("enforced, echoed", "held back until a tool search loads it"),
        "function.description": ("forwarded, echoed", ""),
        "function.name": ("forwarded, echoed", ""),
        "function.output_schema": ("echoed", "the client's own description of its function"),
        "function.parameters": ("forwarded, echoed", ""),
        "function.strict": ("forwarded, echoed", ""),
        "image_generation.action": ("served / refused", "`generate` and `auto`; `edit` a 400"),
        "image_generation.background": ("forwarded", "to the Images API"),
        "image_generation.complexity": ("refused", "a 400 `unsupported_parameter`"),
        "image_generation.frame_count": ("refused", "a 400 `unsupported_parameter`"),
        "image_generation.frame_duration_ms": ("refused", "a 400 `unsupported_parameter`"),
        "image_generation.input_fidelity": ("accepted", "no effect: it concerns input images, and edits are "
                                            "refused"),
        "image_generation.input_image_mask": ("refused", "a 400 `unsupported_parameter` (an edit)"),
        "image_generation.model": ("forwarded", "to the Images API"),
        "image_generation.moderation": ("forwarded", "to the Images API"),
        "image_generation.output_compression": ("forwarded", "to the Images API"),
        "image_generation.output_format": ("forwarded", "to the Images API"),
        "image_generation.partial_images": ("served", "1-3: the Images API's stream, each partial image sent as "
                                            "it comes"),
        "image_generation.quality": ("forwarded", "to the Images API"),
        "image_generation.size": ("forwarded", "to the Images API; `auto` lets the model choose"),
        "image_generation.svg": ("refused", "a 400 `unsupported_parameter`"),
        "mcp.allowed_callers": ("enforced", _CALLERS),
        "mcp.allowed_tools": ("enforced", "only these tools are offered"),
        "mcp.authorization": ("enforced", "sent to the server as a Bearer token; never echoed or stored, and masked "
                                                 "(`[redacted]`) in a call's output should the server echo it"),
        "mcp.connector_id": ("enforced", "resolved through the operator's connector registry "
                             "(`RESPONSES_BRIDGE_MCP_CONNECTORS`) to its MCP server, served as a `server_url`; an id "
                             "it does not map is a 400 naming the ids served"),
        "mcp.defer_loading": ("accepted", "checked (a boolean) but not acted on: the server's tools are offered "
                              "up front"),
        "mcp.headers": ("enforced", "sent to the server; never echoed or stored"),
        "mcp.require_approval": ("enforced", "calls needing approval become `mcp_approval_request` items"),
        "mcp.server_description": ("forwarded", "before each of its tools' descriptions"),
        "mcp.server_label": ("enforced", "names its tools (`<label>__<tool>`) and items"),
        "mcp.server_url": ("enforced", "reached under the SSRF rules"),
        "mcp.tunnel_id": ("refused", "a 400 `unsupported_parameter`"),
        "namespace.description": ("forwarded", "before each of its functions' descriptions"),
        "namespace.name": ("forwarded", "its functions offered as `<name>__<function>`"),
        "namespace.tools": ("forwarded", "its functions"),
        "shell.allowed_callers": ("enforced", _CALLERS),
        "shell.environment": ("forwarded / served", "`local` or none: the client's shell; a container: run by the "
                              "bridge"),
        "tool_search.description": ("forwarded", "the search function's description"),
        "tool_search.execution": ("forwarded / served", "`client`: the client searches; `server` or none: the "
                                  "bridge does"),
        "tool_search.parameters": ("forwarded", "the search function's parameters"),
        "web_search.external_web_access": ("served", "`false`: the tenant's cached results for the query, or none, "
                                           "never a live search"),
        "web_search.filters": ("served", "`allowed_domains` passed to the provider and enforced on its results"),
        "web_search.search_context_size": ("served", "how many results and how long their snippets"),
        "web_search.user_location": ("served", "its `country` localises the search where the provider can"),
        "web_search_preview.search_content_types": ("served / refused", "`text`; `image` a 400 "
                                                    "`unsupported_value`"),
        "web_search_preview.search_context_size": ("served", "as `web_search`'s"),
        "web_search_preview.user_location": ("served", "as `web_search`'s"),
    },
    "events": {
        "response.audio.delta": ("not emitted", "no audio output"),
        "response.audio.done": ("not emitted", "no audio output"),
        "response.audio.transcript.delta": ("not emitted", "no audio output"),
        "response.audio.transcript.done": ("not emitted", "no audio output"),
        "response.code_interpreter_call_code.delta": ("served", ""),
        "response.code_interpreter_call_code.done": ("served", ""),
        "response.code_interpreter_call.completed": ("served", ""),
        "response.code_interpreter_call.in_progress": ("served", ""),
        "response.code_interpreter_call.interpreting": ("served", ""),
        "response.compaction.compacting": ("served", "while a turn's context is compacted"),
        "response.completed": ("served", ""),
        "response.content_part.added": ("served", ""),
        "response.content_part.done": ("served", ""),
        "response.created": ("served", ""),
        "error": ("served", "a WebSocket's error frame; a stream ends with `response.failed`"),
        "response.file_search_call.completed": ("served", ""),
        "response.file_search_call.in_progress": ("served", ""),
        "response.file_search_call.searching": ("served", ""),
        "response.function_call_arguments.delta": ("served", ""),
        "response.function_call_arguments.done": ("served", ""),
        "response.shell_call_command.added": ("served", ""),
        "response.shell_call_command.delta": ("served", ""),
        "response.shell_call_command.done": ("served", ""),
        "response.shell_call_output_content.delta": ("served", "the hosted shell's output, as it is printed"),
        "response.shell_call_output_content.done": ("served", "the hosted shell's output, as each command ends"),
        "response.in_progress": ("served", ""),
        "response.failed": ("served", ""),
        "response.incomplete": ("served", ""),
        "response.output_item.added": ("served", ""),
        "response.output_item.done": ("served", ""),
        "response.reasoning_summary_part.added": ("served", "with `reasoning.summary`"),
        "response.reasoning_summary_part.done": ("served", "with `reasoning.summary`"),
        "response.reasoning_summary_text.delta": ("served", "with `reasoning.summary`"),
        "response.reasoning_summary_text.done": ("served", "with `reasoning.summary`"),
        "response.reasoning_text.delta": ("served", "a backend's reasoning; to a request sending "
                                          "`OpenResponses-Version` (or with `event_names: open-responses`) the "
                                          "spec's `response.reasoning.delta`"),
        "response.reasoning_text.done": ("served", "as `response.reasoning_text.delta`"),
        "response.refusal.delta": ("served", ""),
        "response.refusal.done": ("served", ""),
        "response.output_text.delta": ("served", ""),
        "response.output_text.done": ("served", ""),
        "response.web_search_call.completed": ("served", ""),
        "response.web_search_call.in_progress": ("served", ""),
        "response.web_search_call.searching": ("served", ""),
        "response.image_generation_call.completed": ("served", ""),
        "response.image_generation_call.generating": ("served", ""),
        "response.image_generation_call.in_progress": ("served", ""),
        "response.image_generation_call.partial_image": ("served", "with `partial_images`"),
        "response.mcp_call_arguments.delta": ("served", ""),
        "response.mcp_call_arguments.done": ("served", ""),
        "response.mcp_call.completed": ("served", ""),
        "response.mcp_call.failed": ("served", ""),
        "response.mcp_call.in_progress": ("served", ""),
        "response.mcp_list_tools.completed": ("served", ""),
        "response.mcp_list_tools.failed": ("served", ""),
        "response.mcp_list_tools.in_progress": ("served", ""),
        "response.output_text.annotation.added": ("served", "a web search's or file search's citations"),
        "response.queued": ("served", "background responses"),
        "response.custom_tool_call_input.delta": ("served", ""),
        "response.custom_tool_call_input.done": ("served", ""),
    },
}
for _dated, _undated in (("web_search_2025_08_26", "web_search"),
                         ("web_search_preview_2025_03_11", "web_search_preview")):
    BEHAVIOUR["tool_fields"].update({f"{_dated}.{key.split('.', 1)[1]}": value for key, value
                                     in list(BEHAVIOUR["tool_fields"].items()) if key.startswith(f"{_undated}.")})
"""What the bridge does with each name, by section: (the words of the table's first column, a note). A dated
tool type's fields are its undated type's."""

TITLES: dict[Section, tuple[str, str]] = {
    "request": ("Request fields", "field"), "items": ("Input items", "item `type`"),
    "tools": ("Tools", "tool `type`"), "tool_fields": ("Tool fields", "tool `type`.field"),
    "events": ("Streamed events", "event `type`"),
}


class Unplaced(Exception):
    """The SDK and :data:`BEHAVIOUR` disagree: a name the table does not place, or one the SDK no longer has."""


def sdk_names() -> dict[Section, list[str]]:
    """Every name of each section, in the SDK's order (the request's fields sorted, each object's keys after it)."""
    from openai.types.responses import response_input_item_param, response_stream_event, tool_param

    request: list[str] = []
    for name, node in sorted(REQUEST.items()):
        request.append(name)
        if isinstance(node, dict):
            request += [f"{name}.{key}" for key in sorted(node)]
    tools = REQUEST["tools"][1][1]  # ("list", ("type", {type: keys}))
    tool_fields = [f"{kind}.{key}" for kind, keys in sorted(tools.items()) for key in sorted(keys) if key != "type"]
    return {"request": request, "items": _type_values(response_input_item_param.ResponseInputItemParam),
            "tools": _type_values(tool_param.ToolParam), "tool_fields": tool_fields,
            "events": _type_values(response_stream_event.ResponseStreamEvent)}


def check_placed(names: dict[Section, list[str]]) -> None:
    """:class:`Unplaced` naming each name the map lacks or keeps beyond the SDK."""
    problems = []
    for section, listed in names.items():
        missing = [name for name in listed if name not in BEHAVIOUR[section]]
        stale = sorted(set(BEHAVIOUR[section]) - set(listed))
        if missing:
            problems.append(f"{section}: the SDK has {', '.join(missing)}, which the table does not place")
        if stale:
            problems.append(f"{section}: the table places {', '.join(stale)}, which the SDK no longer has")
    if problems:
        raise Unplaced("; ".join(problems) + " (tools/docs/api_surface.py's BEHAVIOUR)")


def surface_table() -> str:
    """The generated block of docs/api.md."""
    import openai

    names = sdk_names()
    check_placed(names)
    lines = [f"Generated by scripts/render-docs from the openai SDK {openai.__version__} types and the bridge's own "
             "map of what it does (tools/docs/api_surface.py); a name a newer SDK adds fails the docs test "
             "until it is placed here."]
    for section, listed in names.items():
        title, column = TITLES[section]
        lines += ["", f"#### {title}", "", f"| {column} | the bridge | how |", "|---|---|---|"]
        for name in listed:
            verb, note = BEHAVIOUR[section][name]
            lines.append(f"| `{name}` | {verb} | {note} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- BEGIN generated:sdk_surface -->\n"
END = "<!-- END generated:sdk_surface -->"


def fill_surface(text: str) -> str:
    """docs/api.md with its generated block refilled."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + surface_table() + text[end:]


def _type_values(union: Any) -> list[str]:
    values: list[str] = []
    for member in _members(union):
        values += [value for value in _type_of(member) if value not in values]
    return values


def _members(annotation: Any) -> list[Any]:
    annotation = _strip(annotation)
    if get_origin(annotation) is Union:
        return [inner for member in get_args(annotation) for inner in _members(member)]
    return [annotation]


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) in (typing.Annotated, typing.Required, typing.NotRequired,
                                     typing_extensions.Required, typing_extensions.NotRequired):
        annotation = get_args(annotation)[0]
    return annotation


def _type_of(cls: Any) -> list[str]:
    """The ``type`` values of a TypedDict or a pydantic model (an item reference's is optional: ``item_reference``)."""
    fields = getattr(cls, "model_fields", None)
    hint = fields["type"].annotation if fields and "type" in fields else \
        typing.get_type_hints(cls, include_extras=True).get("type")
    hint = _strip(hint)
    if get_origin(hint) is Union:
        hint = next((arg for arg in get_args(hint) if get_origin(arg) is Literal), None)
    return [value for value in get_args(hint) if isinstance(value, str)] if get_origin(hint) is Literal else []
