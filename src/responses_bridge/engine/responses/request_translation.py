"""Responses request (+ replayed history) → Chat Completions request body.

Pure functions over dicts: no I/O, no settings lookups, so the mapping table can be unit-tested row by row.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ...protocol.errors import invalid_request
from ...protocol.responses.input_items import messages_only
from ...protocol.responses.request import ResponsesRequest
from ..configuration_updates import UNSET, configured
from ..content_parts import chat_part, user_content
from ..options import EngineOptions
from ..served_fields import check_served_fields, reasoning_in_context
from ..tools.client import shell_output_text
from ..tools.computer import (
    COMPUTER_KINDS,
    computer_call_arguments,
    keep_newest_screenshots,
    refuse_blind,
    screenshot_message,
)
from ..tools.multi_agent import ROOT_AGENT
from ..tools.programs import (
    RUN_ITEM_TYPES,
    check_programs_answered,
    made_by_program_run,
    program_call_ids,
    program_tool_call,
)
from ..tools.server import ITEM_ID_CALLS, image_replay_note, sent_back_arguments
from ..tools.tools import ToolPlan, loaded_tools, plan_tools
from ..tools.turn_result import continues_turn
from ..tools.turn_tools import set_turn_tools
from .replayed_calls import CALL_KINDS, call_arguments


def plan_request_tools(request: ResponsesRequest, history: list[dict[str, Any]], options: EngineOptions,
                       served: Collection[str] = ()) -> ToolPlan:
    """The tools this request offers: its own, plus those earlier ``tool_search_output`` items loaded.
    ``served``: the server-side tool types the caller's tool loop runs (``builtin_tools.SERVED_TOOL_TYPES``)."""
    plan = plan_tools(request.params.tools, options.unsupported_tools,
                      loaded=loaded_tools(history, request.input_items) or None, served=served)
    if not messages_only(history, request.input_items):  # programs' calls and outputs are other items
        plan.program_calls = program_call_ids(history, request.input_items)
        check_programs_answered(request.params.tools or (), history, request.input_items)
    return plan


def build_chat_request(
    request: ResponsesRequest, history: list[dict[str, Any]], options: EngineOptions, plan: ToolPlan | None = None
) -> dict[str, Any]:
    p = request.params
    if plan is None:
        plan = plan_request_tools(request, history, options)
    messages: list[dict[str, Any]] = []
    if p.instructions:
        messages.append({"role": "system", "content": p.instructions})
    earlier, items = reasoning_in_context(history, request.input_items, p.reasoning)  # reasoning.context
    items_to_messages(earlier, messages, options, plan)
    items_to_messages(items, messages, options, plan)
    if any(target.kind in COMPUTER_KINDS for target in plan.targets.values()):  # screenshots are shown
        if not options.images:
            refuse_blind()
        keep_newest_screenshots(messages, options.screenshots_kept)
    if not messages:
        raise invalid_request("The request has no input: send 'input', 'instructions' or a "
                              "'previous_response_id'.", param="input", code="missing_required_parameter")

    body: dict[str, Any] = {"model": options.upstream_model or p.model, "messages": messages}
    if p.stream:
        body["stream"] = True
        if options.stream_usage:
            body["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop", "user",
                 "safety_identifier", "prompt_cache_key"):
        value = getattr(p, name)
        if value is not None:
            body[name] = value
    _add_openai_fields(body, request, options)
    check_served_fields(request, options)  # reasoning.context / mode, access_programs, image: served or a 400
    if p.service_tier is not None and p.service_tier != "auto":
        body["service_tier"] = p.service_tier
    if p.max_output_tokens is not None:
        body[options.max_tokens_field] = p.max_output_tokens
    if not options.logprobs:
        pass  # the profile says this upstream refuses them: the answer comes without logprobs
    elif p.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = p.top_logprobs
    elif p.include and "message.output_text.logprobs" in p.include:
        body["logprobs"] = True
    if p.reasoning is not None and p.reasoning.effort:
        body["reasoning_effort"] = p.reasoning.effort
    if p.text is not None and p.text.format:
        response_format = _response_format(p.text.format, options)
        if response_format is not None:
            body["response_format"] = response_format
    if not messages_only(history, request.input_items):
        _apply_configuration_updates(body, history, request.input_items, options)
    if p.text is not None and p.text.verbosity is not None:
        body["verbosity"] = p.text.verbosity  # OpenAI's Chat Completions has it; other servers ignore it
    set_turn_tools(body, request.params.tool_choice, request.params.parallel_tool_calls, plan, first=True)
    return body


def _apply_configuration_updates(body: dict[str, Any], history: list[dict[str, Any]],
                                 items: list[dict[str, Any]], options: EngineOptions) -> None:
    """The settings ``configuration_update`` items left in effect replace the request's own."""
    effort, fmt = configured(history, items)
    if effort is not UNSET:
        body.pop("reasoning_effort", None)
        if effort is not None:
            body["reasoning_effort"] = effort
    if fmt is not UNSET:
        body.pop("response_format", None)
        response_format = _response_format(fmt, options)
        if response_format is not None:
            body["response_format"] = response_format


def _add_openai_fields(body: dict[str, Any], request: ResponsesRequest, options: EngineOptions) -> None:
    """``prompt_cache_retention``, ``prompt_cache_options`` and ``moderation`` go to an upstream that knows them
    (OpenAI's Chat Completions has all three, same names and shapes; the ``openai_fields`` switch). Elsewhere the
    cache fields are hints a backend without them loses nothing by (they are echoed, docs/api.md), but
    ``moderation`` asks for a guarantee: it is refused rather than quietly not kept."""
    p = request.params
    if not options.openai_fields:
        if p.moderation is not None:
            raise invalid_request(
                "'moderation' is not supported by this deployment's upstream: it cannot moderate input or "
                "output. Remove 'moderation', or route the model to an OpenAI upstream (profile 'openai').",
                param="moderation", code="unsupported_parameter")
        return
    if p.prompt_cache_retention is not None:
        body["prompt_cache_retention"] = p.prompt_cache_retention
    if p.prompt_cache_options is not None:
        body["prompt_cache_options"] = p.prompt_cache_options.model_dump(exclude_none=True)
    if p.moderation is not None:
        body["moderation"] = p.moderation.model_dump(exclude_none=True)


# --- messages ----------------------------------------------------------------------------------------------------


def items_to_messages(items: list[dict[str, Any]], messages: list[dict[str, Any]], options: EngineOptions,
                      plan: ToolPlan | None = None) -> None:
    """Append the chat messages for ``items``; consecutive assistant output folds into one assistant message,
    because Chat Completions carries text and tool calls of one turn on a single message. Calls of every
    client-executed kind become tool calls of the function they were offered as (``plan``), their outputs
    tool messages. Items of the tool loop replay the same way: an ``mcp_call``, ``web_search_call``,
    ``file_search_call`` or ``code_interpreter_call`` is a tool call followed by its result (the MCP output or
    error, the search's sources or results, the code's logs), held while the calls after it were made in the same
    model turn (their ids carry turn_result.TURN_MARK): the turn goes back as one assistant message with all its
    calls, then their results, as the model made it and the tool loop sent it (an item without the mark, stored
    before it existed, is answered at once); ``mcp_list_tools`` and ``mcp_approval_request`` /
    ``mcp_approval_response`` items are not for the model."""
    plan = plan or _NO_TOOLS
    pending_reasoning: str | None = None
    held: list[tuple[str, str, str]] = []  # the turn's server calls' results, until its calls are all shown
    server_search_id: str | None = None
    screenshots: list[dict[str, Any]] = []  # shown once this turn's tool results are all in (engine/tools/computer.py)
    for item in items:
        kind = item["type"]
        if (plan.program_calls and item.get("call_id") in plan.program_calls and kind != "program") \
                or (kind in RUN_ITEM_TYPES and made_by_program_run(item)):
            continue  # a program's own tool call or its output: the model sees the program and its output only
        if "agent" in item and item["agent"]["agent_name"] != ROOT_AGENT:
            continue  # a subagent's own turns (multi-agent): the root read its result through wait_agent
        if held and not (kind in _TURN_CALL_KINDS and continues_turn(item)):
            for held_id, held_name, output in held:
                append_tool_result(messages, held_id, held_name, output, options)
            held.clear()
        if screenshots and kind not in _OUTPUT_KINDS:
            messages.extend(screenshots)
            screenshots.clear()
        if kind == "message":
            role = item["role"]
            if role == "assistant":
                message = _assistant_message(messages, options, fresh=True)
                _fill_assistant(message, item["content"])
            else:
                if role == "developer":
                    role = options.developer_role
                messages.append({"role": role, "content": user_content(item["content"], options)})
        elif kind == "program":  # the model's call of ``program`` (engine/tools/programs.py)
            message = _assistant_message(messages, options, fresh=False)
            message.setdefault("tool_calls", []).append(program_tool_call(item, plan.upstream_name("program")))
        elif kind == "program_output":
            append_tool_result(messages, item["call_id"], None, item["result"], options)
        elif kind in _CALL_KINDS:
            name, arguments = _call_of(item, plan)
            call_id = item.get("call_id") or item["id"]
            if kind == "tool_search_call":
                server_search_id = call_id
            message = _assistant_message(messages, options, fresh=False)
            message.setdefault("tool_calls", []).append({
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            })
        elif kind in _OUTPUT_KINDS:
            # a server tool search's output may have no call id; a local shell call's output names it in ``id``
            call_id = item.get("call_id") or (item["id"] if kind == "local_shell_call_output" else server_search_id)
            append_tool_result(messages, call_id, None, _output_of(item, options), options)
            if kind == "computer_call_output":
                screenshots.append(screenshot_message(item))
        elif kind in _SERVER_CALL_KINDS:
            item_id, name, arguments, output = _server_call_of(item, plan)
            message = _assistant_message(messages, options, fresh=False)
            message.setdefault("tool_calls", []).append({
                "id": item_id, "type": "function", "function": {"name": name, "arguments": arguments}})
            if pending_reasoning:  # the turn's reasoning goes on its message, before the result follows it
                message["reasoning_content"] = pending_reasoning
                pending_reasoning = None
            held.append((item_id, name, output))  # after the turn's last call
        elif kind == "image_generation_call":  # a note, never the image's base64 (engine/tools/server.py)
            messages.append({"role": "assistant", "content": image_replay_note(item)})
        elif kind == "reasoning":
            if options.reasoning_history == "reasoning_content":
                text = "".join(part["text"] for part in item.get("content") or item.get("summary") or [])
                pending_reasoning = (pending_reasoning or "") + text
            continue
        else:  # mcp_list_tools (its tools are offered as tools), approval requests and responses (the run acts on
            continue  # them), and anything else stored history may hold: not for the model
        if pending_reasoning and messages and messages[-1]["role"] == "assistant":
            messages[-1]["reasoning_content"] = pending_reasoning
            pending_reasoning = None
    for held_id, held_name, output in held:
        append_tool_result(messages, held_id, held_name, output, options)
    messages.extend(screenshots)


_NO_TOOLS = ToolPlan()
_CALL_KINDS = CALL_KINDS
_OUTPUT_KINDS = frozenset({"function_call_output", "custom_tool_call_output", "shell_call_output",
                           "local_shell_call_output", "computer_call_output", "apply_patch_call_output",
                           "tool_search_output", "multi_agent_call_output"})
_SERVER_CALL_KINDS = ITEM_ID_CALLS
_TURN_CALL_KINDS = _CALL_KINDS | _SERVER_CALL_KINDS | {"program"}  # what may continue a turn (TURN_MARK)


def _server_call_of(item: dict[str, Any], plan: ToolPlan) -> tuple[str, str, str, str]:
    """A replayed ``mcp_call`` / ``web_search_call`` / ``file_search_call`` as (call id, upstream name,
    arguments, tool message text). None of these items has a call id of its own: the item id stands in for it, or
    an approved MCP call's ``approval_request_id``, under which the response that approved it showed it made."""
    if item["type"] == "mcp_call":
        name = plan.upstream_name("mcp", item["name"], item["server_label"])
        return (item.get("approval_request_id") or item["id"], name, sent_back_arguments(item),
                mcp_result_text(item.get("output"), item.get("error")))
    if item["type"] == "file_search_call":
        return file_search_replay(item, plan)
    if item["type"] == "code_interpreter_call":
        return code_replay(item, plan)
    action = item.get("action") or {}
    if item.get("status") == "failed":
        text = "The web search failed."
    else:
        sources = [source.get("url") for source in action.get("sources") or () if isinstance(source, dict)]
        text = ("Web search results (sources): " + ", ".join(str(url) for url in sources) if sources
                else "The web search was made; its results are not kept.")
    return item["id"], plan.upstream_name("web_search"), sent_back_arguments(item), text


def file_search_replay(item: dict[str, Any], plan: ToolPlan) -> tuple[str, str, str, str]:
    """A stored ``file_search_call`` as a tool call and its result. The call carries its queries (one as
    ``query``, the shape the bridge offers; several as ``queries``). The result shows the stored ``results`` with
    their sources, numbered as the search showed them (they are stored only when the request included
    ``file_search_call.results``); without them the model reads that the search was made."""
    results = item.get("results")
    if item.get("status") == "failed":
        text = "The file search failed."
    elif isinstance(results, list) and results:
        lines = ["File search results:"]
        for number, result in enumerate(results, 1):
            if isinstance(result, dict):
                lines += ["", f"[{number}] {result.get('filename')} (file id {result.get('file_id')})",
                          str(result.get("text") or "")]
        text = "\n".join(lines)
    elif isinstance(results, list):
        text = "The file search found no results."
    else:
        text = "The file search was made; its results are not kept."
    return item["id"], plan.upstream_name("file_search"), sent_back_arguments(item), text


def code_replay(item: dict[str, Any], plan: ToolPlan) -> tuple[str, str, str, str]:
    """A stored ``code_interpreter_call`` as a tool call (its code) and its result: the logs, when the request
    that made it included ``code_interpreter_call.outputs``; else that it ran."""
    logs = [str(output.get("logs") or "") for output in item.get("outputs") or ()
            if isinstance(output, dict) and output.get("type") == "logs"]
    if item.get("status") == "failed":
        text = "The code did not complete." + (f"\n{logs[0]}" if logs else "")
    elif logs:
        text = "\n".join(logs)
    else:
        text = "The code ran; its output is not kept."
    return item["id"], plan.upstream_name("code_interpreter"), sent_back_arguments(item), text


def mcp_result_text(output: str | None, error: Any) -> str:
    """What the model reads of an MCP call: its output, or its error's text."""
    if error:
        if isinstance(error, dict):
            texts = [part.get("text") for part in error.get("content") or () if isinstance(part, dict)]
            message = error.get("message") or "".join(text for text in texts if isinstance(text, str))
        else:
            message = str(error)
        return f"Error: {message or 'the tool call failed.'}"
    return output if output is not None else "The tool call did not complete."


def tool_search_result_text(tools: list[dict[str, Any]]) -> str:
    """What the model reads of a tool search: the names of the tools it loaded (offered from the next turn)."""
    names = [tool.get("name") or tool.get("type") for tool in tools]
    return "Tools loaded: " + (", ".join(str(name) for name in names) if names else "none")


def _call_of(item: dict[str, Any], plan: ToolPlan) -> tuple[str, str]:
    """A replayed call item as (upstream function name, JSON arguments)."""
    kind = item["type"]
    if kind == "function_call":
        return plan.upstream_name("function", item["name"], item.get("namespace")), item["arguments"]
    if kind == "custom_tool_call":
        return plan.upstream_name("custom", item["name"], item.get("namespace")), call_arguments(item)
    if kind == "computer_call":  # one action (the preview tool's) or a batch (the GA tool's)
        return plan.upstream_name(computer_call_arguments(item)[0]), call_arguments(item)
    if kind == "multi_agent_call":  # the action's function (engine/tools/multi_agent.py)
        return plan.upstream_name("multi_agent", item["action"]), item["arguments"]
    tool_kind = {"shell_call": "shell", "local_shell_call": "local_shell", "apply_patch_call": "apply_patch"}.get(
        kind, "tool_search")
    return plan.upstream_name(tool_kind), call_arguments(item)


def _output_of(item: dict[str, Any], options: EngineOptions) -> str | list[dict[str, Any]]:
    """A replayed output item as a tool message's content."""
    kind = item["type"]
    if kind in ("function_call_output", "custom_tool_call_output"):
        return _tool_output(item["output"], options)
    if kind == "shell_call_output":
        return shell_output_text(item["output"])
    if kind == "local_shell_call_output":
        return str(item["output"])
    if kind == "computer_call_output":
        return "Done; the screenshot follows."
    if kind == "apply_patch_call_output":
        text = item.get("output") or ""
        return f"{item['status']}: {text}" if text else item["status"]
    if kind == "multi_agent_call_output":
        return "".join(part["text"] for part in item["output"])
    return tool_search_result_text(item.get("tools") or [])


def _assistant_message(messages: list[dict[str, Any]], options: EngineOptions, *, fresh: bool) -> dict[str, Any]:
    """The assistant message to add to: a new one for a new text item, the last one for its tool calls. Its
    content starts as ``null``, or ``""`` for backends that refuse ``null`` beside tool calls (profiles.py)."""
    if messages:
        last = messages[-1]
        if last["role"] == "assistant" and (not fresh or "tool_calls" not in last):
            return last
    message: dict[str, Any] = {"role": "assistant", "content": "" if options.tool_call_content == "empty" else None}
    messages.append(message)
    return message


def append_tool_result(messages: list[dict[str, Any]], call_id: str | None, name: str | None,
                       content: str | list[dict[str, Any]], options: EngineOptions) -> None:
    """Append one tool result: a ``tool`` message, or (``tool_result_role="user"``, for backends whose template
    drops ``tool`` turns) a ``user`` turn naming the tool and the call; results that follow one another share that
    turn, as they answer one assistant message."""
    if options.tool_result_role == "tool":
        messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        return
    head = f"Tool {name or _called_name(messages, call_id) or 'result'} returned (id {call_id}):"
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"{head}\n{content}" if isinstance(content, str) else head}]
    if not isinstance(content, str):
        parts += content
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "user" and _answers_calls(messages):
        earlier = last["content"]
        last["content"] = _joined([{"type": "text", "text": earlier}] if isinstance(earlier, str) else earlier, parts)
    else:
        messages.append({"role": "user", "content": _joined([], parts)})


def _called_name(messages: list[dict[str, Any]], call_id: str | None) -> str | None:
    """The function the assistant called under ``call_id``: the nearest call before its result."""
    for message in reversed(messages):
        for call in message.get("tool_calls") or ():
            if call.get("id") == call_id:
                name: str = call["function"]["name"]
                return name
    return None


def _answers_calls(messages: list[dict[str, Any]]) -> bool:
    """Is the last message a user turn of tool results, i.e. does it follow an assistant message's tool calls?"""
    return len(messages) >= 2 and messages[-2]["role"] == "assistant" and bool(messages[-2].get("tool_calls"))


def _joined(earlier: list[dict[str, Any]], parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text parts only: one string (what every template reads); else the parts, text and media."""
    merged = [*earlier, *parts]
    if all(part["type"] == "text" for part in merged):
        return "\n\n".join(part["text"] for part in merged)
    return merged


def _fill_assistant(message: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    texts = [part["text"] for part in parts if part["type"] in ("output_text", "input_text")]
    refusals = [part["refusal"] for part in parts if part["type"] == "refusal"]
    if texts:
        earlier = message.get("content")
        text = "".join(texts)
        message["content"] = f"{earlier}\n\n{text}" if earlier else text
    if refusals:
        message["refusal"] = "".join(refusals)
        if message.get("content") is None:
            message["content"] = ""


def _tool_output(output: str | list[dict[str, Any]], options: EngineOptions) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    if all(part["type"] in ("input_text", "output_text") for part in output):
        return "".join(part["text"] for part in output)
    return [chat_part(part, options) for part in output]


# --- formats -----------------------------------------------------------------------------------------------------


def _response_format(fmt: dict[str, Any], options: EngineOptions) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise invalid_request("Missing required parameter: 'text.format.schema'.", param="text.format.schema",
                                  code="missing_required_parameter")
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        if fmt.get("description") is not None:
            schema["description"] = fmt["description"]
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        if options.json_schema_format == "json_object":  # llama.cpp's form: the schema constrains a JSON object
            return {"type": "json_object", "schema": fmt["schema"]}
        return {"type": "json_schema", "json_schema": schema}
    raise invalid_request(f"Invalid value for 'text.format.type': '{kind}'.", param="text.format.type")
