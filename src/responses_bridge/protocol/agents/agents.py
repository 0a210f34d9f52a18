"""The Agents API's agent configuration (``client.beta.agents``): a create or update body checked and resolved into
the stored shape the SDK's ``Agent`` type describes, every default filled in, so what is stored is what is
answered and what a session's turns run.

The same checks serve a reusable agent (``POST /v1/agents``, ``POST /v1/agents/{id}``) and the inline ``agent`` of
a session (with ``agent_id``: overrides of the saved agent). Bounds are OpenAI's: metadata as every object's (16
keys of <= 64 characters, values of <= 512), the tool list <= 3 MiB of compact JSON, instructions and names bounded
so one record never stalls other writers.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import APIError, array_within, invalid_request, invalid_type, missing_parameter
from ..metadata import check_metadata

MAX_TOOLS_BYTES = 3 * 1024 * 1024
MAX_INSTRUCTIONS_CHARS = 256 * 1024
MAX_NAME_CHARS = 256
MAX_MODEL_CHARS = 256
MAX_TOOLS = 128
DEFAULT_MAX_SUBAGENTS = 6

SERVICE_TIERS = ("auto", "default", "flex", "priority", "fast", "ultrafast")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SUMMARIES = ("concise", "detailed", "auto")
VERBOSITIES = ("low", "medium", "high")
CONTEXT_SIZES = ("low", "medium", "high")
SEARCH_MODES = ("disabled", "cached", "live")
TOOL_TYPES = ("function", "tool_search", "programmatic_tool_calling", "mcp", "web_search", "computer_use",
              "automations")

AGENT_FIELDS = ("model", "compaction", "experimental", "instructions", "metadata", "multi_agent", "name",
                "reasoning", "service_tier", "text", "tools")
SESSION_AGENT_FIELDS = ("model", "compaction", "experimental", "instructions", "multi_agent", "reasoning",
                        "service_tier", "text", "tools")


def default_config() -> dict[str, Any]:
    """An agent's settings before anything is said: the SDK's documented defaults."""
    return {"model": "", "instructions": None, "name": None, "metadata": {},
            "multi_agent": {"enabled": False, "max_concurrent_subagents": None},
            "reasoning": {"effort": None, "summary": None}, "service_tier": "auto",
            "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tools": [],
            "compaction": {"async": False}, "experimental": {"time_awareness": False}}


def apply_config(config: dict[str, Any], body: dict[str, Any], fields: tuple[str, ...], *,
                 prefix: str = "") -> dict[str, Any]:
    """``config`` with the fields of ``body`` (a create, an update, a session's overrides) applied, each checked:
    an omitted field keeps its value, ``null`` resets it where the SDK says so. Unknown fields are a 400."""
    for key in body:
        if key not in fields:
            raise invalid_request(f"Unknown parameter: '{prefix}{key}'.", param=f"{prefix}{key}",
                                  code="unknown_parameter")
    resolved = dict(config)
    for key in fields:
        if key in body:
            resolved[key] = _FIELD_CHECKS[key](body[key], config, f"{prefix}{key}")
    return resolved


def _too_long(param: str, limit: int) -> APIError:
    return invalid_request(f"'{param}' is longer than {limit} characters.", param=param,
                           code="string_above_max_length")


def _model(value: Any, config: dict[str, Any], param: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(f"Invalid value for '{param}': expected a model name.", param=param,
                              code="invalid_value")
    if len(value) > MAX_MODEL_CHARS:
        raise _too_long(param, MAX_MODEL_CHARS)
    return value


def _optional_text(limit: int) -> Any:
    def check(value: Any, config: dict[str, Any], param: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid_type(param, "a string")
        if len(value) > limit:
            raise _too_long(param, limit)
        return value

    return check


def _metadata(value: Any, config: dict[str, Any], param: str) -> dict[str, str]:
    check_metadata(value, param)
    return dict(value or {})


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object")
    return value


def _choice(value: Any, choices: tuple[str, ...], param: str, *, nullable: bool = True) -> Any:
    if value is None and nullable:
        return None
    if value not in choices:
        raise invalid_request(f"Invalid value for '{param}': expected one of {', '.join(choices)}.", param=param,
                              code="invalid_value")
    return value


def _known(value: dict[str, Any], keys: tuple[str, ...], param: str) -> None:
    for key in value:
        if key not in keys:
            raise invalid_request(f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}",
                                  code="unknown_parameter")


def _multi_agent(value: Any, config: dict[str, Any], param: str) -> dict[str, Any]:
    if value is None:
        return {"enabled": False, "max_concurrent_subagents": None}
    value = _object(value, param)
    _known(value, ("enabled", "max_concurrent_subagents"), param)
    enabled = value.get("enabled")
    if not isinstance(enabled, bool):
        raise invalid_request(f"Missing or invalid '{param}.enabled': expected a boolean.",
                              param=f"{param}.enabled", code="invalid_value")
    most = value.get("max_concurrent_subagents")
    if most is not None and (not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= 64):
        raise invalid_request(f"Invalid value for '{param}.max_concurrent_subagents': expected an integer "
                              "between 1 and 64.", param=f"{param}.max_concurrent_subagents", code="invalid_value")
    if most is None and enabled:
        most = DEFAULT_MAX_SUBAGENTS
    return {"enabled": enabled, "max_concurrent_subagents": most}


def _reasoning(value: Any, config: dict[str, Any], param: str) -> dict[str, Any]:
    if value is None:
        return {"effort": None, "summary": None}
    value = _object(value, param)
    _known(value, ("effort", "summary"), param)
    current = config.get("reasoning") or {}
    return {"effort": _choice(value["effort"], EFFORTS, f"{param}.effort") if "effort" in value
            else current.get("effort"),
            "summary": _choice(value["summary"], SUMMARIES, f"{param}.summary") if "summary" in value
            else current.get("summary")}


def _service_tier(value: Any, config: dict[str, Any], param: str) -> str:
    return "auto" if value is None else str(_choice(value, SERVICE_TIERS, param, nullable=False))


def _text(value: Any, config: dict[str, Any], param: str) -> dict[str, Any]:
    if value is None:
        return {"format": {"type": "text"}, "verbosity": "medium"}
    value = _object(value, param)
    _known(value, ("format", "verbosity"), param)
    text_format: Any = {"type": "text"}
    given = value.get("format")
    if given is not None:
        given = _object(given, f"{param}.format")
        if given.get("type") == "text":
            _known(given, ("type",), f"{param}.format")
        elif given.get("type") == "json_schema":
            _known(given, ("type", "schema"), f"{param}.format")
            _object(given.get("schema"), f"{param}.format.schema")
            text_format = {"type": "json_schema", "schema": given["schema"]}
        else:
            raise invalid_request(f"Invalid value for '{param}.format.type': expected 'text' or 'json_schema'.",
                                  param=f"{param}.format.type", code="invalid_value")
        if given.get("type") == "text":
            text_format = {"type": "text"}
    verbosity = value.get("verbosity")
    return {"format": text_format,
            "verbosity": "medium" if verbosity is None else _choice(verbosity, VERBOSITIES, f"{param}.verbosity")}


def _compaction(value: Any, config: dict[str, Any], param: str) -> dict[str, Any]:
    if value is None:
        return {"async": False}
    value = _object(value, param)
    _known(value, ("async",), param)
    background = value.get("async")
    if background is not None and not isinstance(background, bool):
        raise invalid_type(f"{param}.async", "a boolean")
    return {"async": bool(background)}


def _experimental(value: Any, config: dict[str, Any], param: str) -> dict[str, Any]:
    value = _object(value, param)
    _known(value, ("time_awareness",), param)
    merged = dict(config.get("experimental") or {"time_awareness": False})
    if "time_awareness" in value:
        if not isinstance(value["time_awareness"], bool):
            raise invalid_type(f"{param}.time_awareness", "a boolean")
        merged["time_awareness"] = value["time_awareness"]
    return merged


def _tools(value: Any, config: dict[str, Any], param: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    array_within(value, param, MAX_TOOLS, items="tools")
    if len(orjson.dumps(value)) > MAX_TOOLS_BYTES:
        raise invalid_request(f"'{param}' must fit within {MAX_TOOLS_BYTES} bytes of compact JSON.", param=param,
                              code="invalid_value")
    tools = [_tool(tool, f"{param}[{index}]") for index, tool in enumerate(value)]
    names = [tool["name"] for tool in tools if tool["type"] == "function"]
    if len(names) != len(set(names)):
        raise invalid_request(f"Function names in '{param}' must be unique.", param=param, code="invalid_value")
    return tools


def _tool(tool: Any, param: str) -> dict[str, Any]:
    tool = _object(tool, param)
    kind = tool.get("type")
    if kind not in TOOL_TYPES:
        raise invalid_request(f"Invalid value for '{param}.type': expected one of {', '.join(TOOL_TYPES)}.",
                              param=f"{param}.type", code="invalid_value")
    checked: dict[str, Any] = _TOOL_CHECKS[kind](tool, param)
    return checked


def _function_tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    _known(tool, ("type", "name", "description", "parameters", "defer_loading", "async"), param)
    name = tool.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise invalid_request(f"Invalid value for '{param}.name': expected a name of 1 to 64 characters.",
                              param=f"{param}.name", code="invalid_value")
    for key, kind in (("description", str), ("parameters", dict)):
        if not isinstance(tool.get(key), kind):
            raise invalid_request(f"Missing or invalid '{param}.{key}'.", param=f"{param}.{key}",
                                  code="missing_required_parameter" if key not in tool else "invalid_type")
    rendered: dict[str, Any] = {"type": "function", "name": name, "description": tool["description"],
                                "parameters": tool["parameters"], "defer_loading": _flag(tool, "defer_loading",
                                                                                         param)}
    if "async" in tool:
        rendered["async"] = _flag(tool, "async", param)
    return rendered


def _flag(tool: dict[str, Any], key: str, param: str, default: bool = False) -> bool:
    value = tool.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_type(f"{param}.{key}", "a boolean")
    return value


def _strings(value: Any, param: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise invalid_type(param, "an array of strings")
    return list(value)


def checked_mcp_tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    _known(tool, ("type", "server_label", "transport", "allowed_tools", "connection_origin", "credential_id",
                  "request_metadata", "required"), param)
    label = tool.get("server_label")
    if not isinstance(label, str) or not label:
        raise invalid_request(f"Missing or invalid '{param}.server_label'.", param=f"{param}.server_label",
                              code="invalid_value")
    transport = _object(tool.get("transport"), f"{param}.transport")
    where = f"{param}.transport"
    if transport.get("type") == "http":
        _known(transport, ("type", "server_url", "headers", "authorization"), where)
        if not isinstance(transport.get("server_url"), str):
            raise invalid_request(f"Missing '{where}.server_url'.", param=f"{where}.server_url",
                                  code="missing_required_parameter")
        headers = transport.get("headers") or {}
        check_metadata(headers, f"{where}.headers")
        for name in headers:
            if _credential_header(name):
                raise invalid_request(f"'{where}.headers' may not hold a credential ('{name[:64]}'): an agent's MCP "
                                      "transport is stored and shown as it is; credentials belong in a vault "
                                      "(a tool's 'credential_id').", param=f"{where}.headers", code="invalid_value")
        stored: dict[str, Any] = {"type": "http", "server_url": transport["server_url"], "headers": headers}
        secret = _authorization(transport.get("authorization"), f"{where}.authorization")
    elif transport.get("type") == "stdio":
        _known(transport, ("type", "command", "args", "cwd", "env_vars", "env"), where)
        if not isinstance(transport.get("command"), str):
            raise invalid_request(f"Missing '{where}.command'.", param=f"{where}.command",
                                  code="missing_required_parameter")
        stored = {"type": "stdio", "command": transport["command"],
                  "args": _strings(transport.get("args"), f"{where}.args") or [],
                  "cwd": transport.get("cwd") if isinstance(transport.get("cwd"), str) else "",
                  "env_vars": _strings(transport.get("env_vars"), f"{where}.env_vars") or []}
        secret = _env(transport.get("env"), f"{where}.env")
    else:
        raise invalid_request(f"Invalid value for '{where}.type': expected 'http' or 'stdio'.",
                              param=f"{where}.type", code="invalid_value")
    metadata = tool.get("request_metadata")
    checked = {"type": "mcp", "server_label": label, "transport": stored,
            "allowed_tools": _strings(tool.get("allowed_tools"), f"{param}.allowed_tools"),
            "connection_origin": _choice(tool.get("connection_origin") or "service", ("service", "environment"),
                                         f"{param}.connection_origin", nullable=False),
            "credential_id": tool.get("credential_id") if isinstance(tool.get("credential_id"), str) else None,
            "request_metadata": _object(metadata, f"{param}.request_metadata") if metadata is not None else {},
            "required": _flag(tool, "required", param)}
    if secret:  # sealed before it is stored, never shown (services/agents/vaults/mcp_secrets.py)
        checked[TRANSPORT_SECRET] = secret
    return checked


TRANSPORT_SECRET = "_transport_secret"
"""Where a checked MCP tool holds its transport's secrets (``authorization``, ``env``) until the service seals them
(services/agents/vaults/mcp_secrets.py): a key of the bridge's own, which no SDK type has and no answer shows."""
MAX_SECRET_CHARS = 16_384
MAX_ENV = 64
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


def _authorization(value: Any, param: str) -> dict[str, Any]:
    """An HTTP server's ``authorization`` (sent as ``Authorization: Bearer``): a non-empty value on one line."""
    if value is None:
        return {}
    if not isinstance(value, str) or not value or len(value) > MAX_SECRET_CHARS \
            or any(char in value for char in "\r\n\0"):
        raise invalid_request(f"Invalid value for '{param}': expected a non-empty token on one line of at most "
                              f"{MAX_SECRET_CHARS} characters.", param=param, code="invalid_value")
    return {"authorization": value}


def _env(value: Any, param: str) -> dict[str, Any]:
    """A ``stdio`` server's ``env``: variable names to string values, set for its process."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(entry, str) for entry in value.values()):
        raise invalid_type(param, "an object of variable names to string values")
    if len(value) > MAX_ENV:
        raise invalid_request(f"'{param}' may have at most {MAX_ENV} variables.", param=param,
                              code="object_above_max_properties")
    for name, text in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise invalid_request(f"Invalid variable name in '{param}': expected letters, digits and '_', not "
                                  "starting with a digit.", param=param, code="invalid_value")
        if len(text) > MAX_SECRET_CHARS or "\0" in text:
            raise invalid_request(f"Invalid value for '{param}.{name}': expected at most {MAX_SECRET_CHARS} "
                                  "characters and no NUL.", param=f"{param}.{name}", code="invalid_value")
    return {"env": dict(value)} if value else {}


_CREDENTIAL_NAMES = ("authorization", "cookie", "key", "token", "secret", "password", "credential", "auth")


def _credential_header(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _CREDENTIAL_NAMES)


def _web_search_tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    _known(tool, ("type", "allowed_domains", "context_size", "location", "mode"), param)
    location = tool.get("location")
    if location is not None:
        location = _object(location, f"{param}.location")
        _known(location, ("city", "country", "region", "timezone"), f"{param}.location")
        location = {key: location.get(key) for key in ("city", "country", "region", "timezone")}
    return {"type": "web_search", "allowed_domains": _strings(tool.get("allowed_domains"),
                                                              f"{param}.allowed_domains"),
            "context_size": _choice(tool.get("context_size") or "medium", CONTEXT_SIZES, f"{param}.context_size",
                                    nullable=False),
            "location": location,
            "mode": _choice(tool.get("mode") or "live", SEARCH_MODES, f"{param}.mode", nullable=False)}


def _plain_tool(*keys: str) -> Any:
    def check(tool: dict[str, Any], param: str) -> dict[str, Any]:
        _known(tool, ("type", *keys), param)
        rendered: dict[str, Any] = {"type": tool["type"]}
        for key in keys:
            rendered[key] = _flag(tool, key, param, default=key == "enabled")
        return rendered

    return check


_TOOL_CHECKS: dict[str, Any] = {
    "function": _function_tool, "mcp": checked_mcp_tool, "web_search": _web_search_tool,
    "tool_search": _plain_tool(), "programmatic_tool_calling": _plain_tool("enabled"),
    "computer_use": _plain_tool("include_screenshots"), "automations": _plain_tool(),
}

_FIELD_CHECKS: dict[str, Any] = {
    "model": _model, "instructions": _optional_text(MAX_INSTRUCTIONS_CHARS), "name": _optional_text(MAX_NAME_CHARS),
    "metadata": _metadata, "multi_agent": _multi_agent, "reasoning": _reasoning, "service_tier": _service_tier,
    "text": _text, "compaction": _compaction, "experimental": _experimental, "tools": _tools,
}


def require_model(config: dict[str, Any], param: str = "model") -> None:
    if not config.get("model"):
        raise missing_parameter(param)


def render_agent(agent_id: str, config: dict[str, Any], created_at: int, updated_at: int) -> dict[str, Any]:
    """The ``agent`` object, as the SDK's ``Agent`` type reads it."""
    return {"id": agent_id, "object": "agent", "created_at": created_at, "updated_at": updated_at,
            **{key: config[key] for key in AGENT_FIELDS}}


def agent_not_found(agent_id: str) -> APIError:
    return APIError(404, f"No agent found with id '{agent_id}'.", param="agent_id", code="not_found")
