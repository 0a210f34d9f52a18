"""The Agents API's session inputs checked: a session's environment, input messages and their content parts, the
events a client posts (message, tool result, MCP approval, the desktop's approval, cancel), and what sessions do
not serve yet, each refused with a 400 that names it."""

from __future__ import annotations

from typing import Any

from ..errors import APIError, invalid_request, objects_in
from .approvals import approval_result, approval_rule
from .automations_tool import FUNCTION_NAME, automation_function
from .computer_approvals import EVENT as COMPUTER_EVENT
from .computer_approvals import approval_result as computer_approval_result

MAX_EVENTS_PER_CALL = 16
MAX_MESSAGES = 16
MAX_PARTS = 64
MAX_TEXT_CHARS = 1_000_000


SERVED_TOOLS = ("function", "mcp", "web_search", "tool_search", "programmatic_tool_calling", "automations",
                "computer_use")
"""The agent tool types a session's turn runs."""


def not_served(what: str, param: str) -> APIError:
    return invalid_request(f"{what} is not served yet by this bridge: sessions run with environment 'none', "
                           "'openai_hosted' or 'self_hosted' and agents whose tools are the client's own functions, "
                           "MCP servers over HTTP, web_search, tool_search and programmatic_tool_calling.",
                           param=param, code="unsupported_value")


def known(body: dict[str, Any], fields: tuple[str, ...], prefix: str) -> None:
    for key in body:
        if key not in fields:
            raise invalid_request(f"Unknown parameter: '{prefix}{key}'.", param=f"{prefix}{key}",
                                  code="unknown_parameter")


def check_environment(environment: Any) -> str:
    """The environment's ``type``: ``none``, ``openai_hosted`` or ``self_hosted`` (protocol/containers/environments.py
    checks the rest of the last two)."""
    if environment is None:
        raise invalid_request("Missing required parameter: 'environment'.", param="environment",
                              code="missing_required_parameter")
    if not isinstance(environment, dict):
        raise invalid_request("Invalid type for 'environment': expected an object.", param="environment",
                              code="invalid_type")
    kind = environment.get("type")
    if kind == "self_hosted":
        return "self_hosted"
    if kind == "openai_hosted":
        return "openai_hosted"
    if kind != "none":
        raise invalid_request("Invalid value for 'environment.type': expected 'none', 'openai_hosted' or "
                              "'self_hosted'.", param="environment.type", code="invalid_value")
    known(environment, ("type",), "environment.")
    return "none"


def check_servable(config: dict[str, Any]) -> None:
    """What a session's turn cannot run is refused by name, never dropped: a vault credential for an MCP server
    over ``stdio``; ``computer_use`` without a desktop (:func:`check_environment_computer`). (A function with
    ``async: true`` is served: services/agents/async_calls.py. An MCP server's vault ``credential_id`` is checked
    against the session's vaults: services/agents/sessions.py; a server in the environment needs one the bridge
    runs: :func:`check_environment_mcp`.)"""
    for index, tool in enumerate(config["tools"]):
        where = f"agent.tools[{index}]"
        if tool["type"] == "mcp":
            _check_mcp(tool, where)
        elif tool["type"] == "automations" and any(
                other["type"] == "function" and other["name"] == FUNCTION_NAME for other in config["tools"]):
            raise invalid_request(f"The 'automations' tool offers the model a function named '{FUNCTION_NAME}': "
                                  "the agent's own function of that name would be hidden by it.",
                                  param=f"{where}.type", code="invalid_value")
        elif tool["type"] not in SERVED_TOOLS:
            raise not_served(f"Tool type '{tool['type']}' in a session", f"{where}.type")


def _check_mcp(tool: dict[str, Any], where: str) -> None:
    if tool["transport"]["type"] == "stdio" and tool.get("credential_id"):
        raise invalid_request(f"'{where}.credential_id' names a vault credential for an MCP server's URL; a server "
                              "over 'stdio' has none (its 'env_vars' take the environment's variables, a vault's "
                              "'environment_variable' credentials among them).", param=f"{where}.credential_id",
                              code="invalid_value")


ENVIRONMENT_SERVER = "http://environment.invalid/mcp/"
"""The ``server_url`` a turn's response gives an MCP server over ``stdio`` (with its label after it): a name that
never resolves (RFC 2606), as the bridge's HTTP client never reaches it — the server runs in the session's
environment (services/agents/environments/mcp.py)."""


def in_environment(tool: dict[str, Any]) -> bool:
    """An MCP tool whose server runs in, or is reached from, the session's environment."""
    return bool(tool["type"] == "mcp" and (tool["transport"]["type"] == "stdio"
                                           or tool["connection_origin"] == "environment"))


def check_environment_computer(tools: list[dict[str, Any]], desktop: bool, prefix: str = "agent.") -> None:
    """The agent tool ``computer_use`` drives the session's desktop (services/agents/computer/calls.py): a 400 naming
    the tool when the environment has none (``desktop``: an ``openai_hosted`` environment with
    ``desktop.enabled``)."""
    if desktop:
        return
    for index, tool in enumerate(tools):
        if tool["type"] == "computer_use":
            raise invalid_request("The agent tool 'computer_use' needs a desktop in the session's environment: an "
                                  "'openai_hosted' environment with 'desktop': {'enabled': true}.",
                                  param=f"{prefix}tools[{index}].type", code="invalid_value")


def has_desktop(environment: dict[str, Any]) -> bool:
    """A session's environment (as the session shows it) has a desktop."""
    return environment.get("type") == "openai_hosted" and bool((environment.get("desktop") or {}).get("enabled"))


def check_environment_mcp(tools: list[dict[str, Any]], environment: str) -> None:
    """An MCP server over ``stdio`` runs in the session's environment, and one reached from the environment
    (``connection_origin: "environment"``) through its network: both need an environment the bridge runs
    (``openai_hosted``); with ``none`` or ``self_hosted`` (the client's machine) the 400 names the field."""
    if environment == "openai_hosted":
        return
    for index, tool in enumerate(tools):
        if not in_environment(tool):
            continue
        where = f"agent.tools[{index}]"
        param = f"{where}.transport.type" if tool["transport"]["type"] == "stdio" else f"{where}.connection_origin"
        raise invalid_request(f"'{param}': the MCP server '{tool['server_label']}' runs in, or is reached from, the "
                              f"session's environment, and environment '{environment}' is not one the bridge runs: "
                              "use an 'openai_hosted' environment.", param=param, code="invalid_value")


def session_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent's tools as its session holds and shows them (the SDK's ``AgentTool``, which has no ``tool_search``
    variant): without ``tool_search``, whose effect is the session's deferred functions — each turn offers the
    server's tool search whenever a function is deferred (:func:`response_tools`)."""
    return [tool for tool in tools if tool["type"] != "tool_search"]


def response_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An agent's tools (those :func:`check_servable` lets through) as a response's, run by the bridge's tool loop
    as for ``POST /v1/responses``: the client's functions (deferred ones found by the server's ``tool_search``);
    MCP servers, asking the client's approval for every tool that does not say it only reads
    (approvals.py); the bridge's ``web_search`` (``mode: "cached"`` its cache-only search,
    ``"disabled"`` no search offered); with ``programmatic_tool_calling`` enabled, the bridge's programs, which
    may call every one of these tools; and ``automations``, a function the session runs itself
    (automations_tool.py)."""
    programs = any(tool["type"] == "programmatic_tool_calling" and tool["enabled"] for tool in tools)
    callers = {"allowed_callers": ["direct", "programmatic"]} if programs else {}
    found: list[dict[str, Any]] = []
    for tool in tools:
        if tool["type"] == "function":
            function: dict[str, Any] = {"type": "function", "name": tool["name"], "description": tool["description"],
                                        "parameters": tool["parameters"], "strict": False, **callers}
            if tool.get("defer_loading"):
                function["defer_loading"] = True
            found.append(function)
        elif tool["type"] == "mcp":
            found.append({**_mcp_tool(tool), **callers})
        elif tool["type"] == "web_search" and tool["mode"] != "disabled":
            found.append({**_web_search_tool(tool), **callers})
        elif tool["type"] == "automations":
            found.append(automation_function())
        elif tool["type"] == "computer_use":  # the GA computer tool: the model's batches, run on the desktop
            found.append({"type": "computer"})
    if any(tool["type"] == "function" and tool.get("defer_loading") for tool in tools):
        found.append({"type": "tool_search"})  # the server's search, which finds the deferred functions
    if programs:
        found.append({"type": "programmatic_tool_calling"})
    return found


def _mcp_tool(tool: dict[str, Any]) -> dict[str, Any]:
    transport = tool["transport"]
    mcp: dict[str, Any] = {"type": "mcp", "server_label": tool["server_label"], "require_approval": approval_rule()}
    # a plugin's app: the operator's registry serves it (services/agents/environments/plugin_apps.py)
    if transport["type"] == "connector":
        mcp["connector_id"] = transport["connector_id"]
    else:
        mcp["server_url"] = transport["server_url"] if transport["type"] == "http" else \
            ENVIRONMENT_SERVER + tool["server_label"]
    if transport.get("headers"):
        mcp["headers"] = transport["headers"]
    if tool.get("allowed_tools") is not None:
        mcp["allowed_tools"] = tool["allowed_tools"]
    return mcp


def _web_search_tool(tool: dict[str, Any]) -> dict[str, Any]:
    search: dict[str, Any] = {"type": "web_search", "search_context_size": tool["context_size"],
                              "external_web_access": tool["mode"] == "live"}
    location = {key: value for key, value in (tool.get("location") or {}).items() if value is not None}
    if location:
        search["user_location"] = {"type": "approximate", **location}
    if tool.get("allowed_domains"):
        search["filters"] = {"allowed_domains": tool["allowed_domains"]}
    return search


def cache_options(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"ttl"}:
        raise invalid_request("Invalid value for 'prompt_cache_options': expected {\"ttl\": \"30m\" | \"12h\"}.",
                              param="prompt_cache_options", code="invalid_value")
    ttl = value.get("ttl", "30m")
    if ttl not in ("30m", "12h"):
        raise invalid_request("Invalid value for 'prompt_cache_options.ttl': expected '30m' or '12h'.",
                              param="prompt_cache_options.ttl", code="invalid_value")
    return {"ttl": ttl}


def review_mode(value: Any) -> str | None:
    if value is None or value == "none":
        return None
    if value != "auto_review":
        raise invalid_request("Invalid value for 'review': expected 'none' or 'auto_review'.", param="review",
                              code="invalid_value")
    return "auto_review"


def messages(value: Any, param: str) -> list[list[dict[str, Any]]]:
    """A session's input (a string, or user messages) as one turn's messages, each its content parts."""
    if isinstance(value, str):
        return [content_parts([{"type": "input_text", "text": value}], param)]
    if not isinstance(value, list) or not value:
        raise invalid_request(f"Invalid value for '{param}': expected a string or a non-empty array of messages.",
                              param=param, code="invalid_value")
    if len(value) > MAX_MESSAGES:
        raise invalid_request(f"'{param}' may have at most {MAX_MESSAGES} messages.", param=param,
                              code="array_above_max_length")
    messages: list[list[dict[str, Any]]] = []
    for index, message in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(message, dict):
            raise invalid_request(f"Invalid type for '{where}': expected a message.", param=where,
                                  code="invalid_type")
        known(message, ("type", "role", "content"), f"{where}.")
        if message.get("role") != "user" or message.get("type", "message") != "message":
            raise invalid_request(f"Invalid value for '{where}.role': expected 'user'.", param=f"{where}.role",
                                  code="invalid_value")
        messages.append(content_parts(message.get("content"), f"{where}.content"))
    return messages


def content_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content or len(content) > MAX_PARTS:
        raise invalid_request(f"Invalid value for '{param}': expected 1 to {MAX_PARTS} content parts.",
                              param=param, code="invalid_value")
    parts = []
    for where, part in objects_in(content, param):
        key = {"input_text": "text", "input_image": "image_url"}.get(str(part.get("type")))
        if key is None:
            raise invalid_request(f"Invalid value for '{where}.type': expected 'input_text' or 'input_image'.",
                                  param=f"{where}.type", code="invalid_value")
        known(part, ("type", key), f"{where}.")
        if not isinstance(part.get(key), str) or len(part[key]) > MAX_TEXT_CHARS:
            raise invalid_request(f"Invalid value for '{where}.{key}': expected a string of at most "
                                  f"{MAX_TEXT_CHARS} characters.", param=f"{where}.{key}", code="invalid_value")
        parts.append({"type": part["type"], key: part[key]})
    return parts


def tool_result(event: dict[str, Any], param: str) -> dict[str, Any]:
    known(event, ("type", "call_id", "turn_id", "success", "output", "error"), f"{param}.")
    for key in ("call_id", "turn_id"):
        if not isinstance(event.get(key), str):
            raise invalid_request(f"Missing or invalid '{param}.{key}'.", param=f"{param}.{key}",
                                  code="missing_required_parameter")
    if not isinstance(event.get("success"), bool):
        raise invalid_request(f"Missing or invalid '{param}.success': expected a boolean.",
                              param=f"{param}.success", code="missing_required_parameter")
    output = event.get("output")
    if output is not None and not isinstance(output, str):
        output = content_parts(output, f"{param}.output")
    elif isinstance(output, str) and len(output) > MAX_TEXT_CHARS:
        raise invalid_request(f"'{param}.output' is longer than {MAX_TEXT_CHARS} characters.",
                              param=f"{param}.output", code="string_above_max_length")
    error = event.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > 10_000):
        raise invalid_request(f"Invalid value for '{param}.error': expected a string.", param=f"{param}.error",
                              code="invalid_value")
    return {"call_id": event["call_id"], "turn_id": event["turn_id"], "success": event["success"],
            "output": output, "error": error}


def input_event(event: Any, param: str) -> tuple[str, Any]:
    if not isinstance(event, dict):
        raise invalid_request(f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type")
    kind = event.get("type")
    if kind == "agent.session.input.cancel":
        known(event, ("type",), f"{param}.")
        return "cancel", []
    if kind == "agent.session.input.message":
        known(event, ("type", "input"), f"{param}.")
        return "message", messages(event.get("input"), f"{param}.input")
    if kind == "agent.session.input.tool_result":
        return "tool_result", tool_result(event, param)
    if kind == "agent.session.input.mcp_approval_request_result":
        return "approval", approval_result(event, param)
    if kind == COMPUTER_EVENT:  # its sign-in values live in memory only (computer_approvals.py)
        return "computer_approval", computer_approval_result(event, param)
    raise invalid_request(f"Invalid value for '{param}.type'.", param=f"{param}.type", code="invalid_value")


def first_input(body: dict[str, Any], kind: str) -> list[list[dict[str, Any]]] | None:
    """A session's first input (each message's parts), or None: a session made without input is idle with no
    turn until its first input event. As the SDK says, ``input`` is required for the ``none`` environment, and for
    a streamed create of any environment but ``self_hosted`` (whose stream waits for the client's input)."""
    if body.get("input") is not None:
        return messages(body["input"], "input")
    if kind == "none" or (body.get("stream") is True and kind != "self_hosted"):
        why = "the 'none' environment" if kind == "none" else "a streamed session that is not 'self_hosted'"
        raise invalid_request(f"Missing required parameter: 'input' (required for {why}).", param="input",
                              code="missing_required_parameter")
    return None
