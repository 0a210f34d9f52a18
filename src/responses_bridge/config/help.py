"""Settings as a user writes them: each one's type and default in the words of a flag, a variable or a YAML key.

``serve --help``, the generated ``docs/configuration.md`` and the one-line error for a bad value all describe a
setting; they take the words from here, so none of them shows a Python type (``list[UpstreamSpec]``) or a
pydantic sentinel (``PydanticUndefined``), and a new list or mapping setting with no words here stops the docs
render instead of leaking its annotation.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

# Settings whose annotation says too little, or too much, for someone writing the value
SHOWN_TYPES: dict[str, str] = {
    "upstreams": "JSON list of upstreams",  # in the YAML file, the same list written as YAML
    "models": "JSON list of model routes",
    "tenants": "JSON object of tenant name → limits",
    "mcp_allowed_hosts": "comma-separated hosts, IPs or CIDRs",
    "allowed_hosts": "comma-separated host names",
    "mcp_connectors": "JSON object of connector id → MCP server",
    "workers": "a number, or `auto`",
    "upstream_urls": "JSON list of base URLs",  # `--upstream` given several times
    "console_prices": "JSON object of model → price per million tokens",
}

# What a JSON setting looks like, for the line that says the environment's JSON is broken
JSON_EXAMPLES: dict[str, str] = {
    "upstreams": '[{"name": "local", "url": "http://127.0.0.1:8000/v1"}]',
    "models": '[{"match": "qwen*", "upstream": "local"}]',
    "tenants": '{"acme": {"max_concurrent_requests": 10}}',
    "upstream_urls": '["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]',
    "mcp_connectors": '{"connector_googledrive": {"server_url": "https://drive-mcp.internal/mcp"}}',
    "console_prices": '{"gpt-4o": {"input": 2.5, "cached_input": 1.25, "output": 10}}',
}

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


# What a setting means, for those whose Field has no description: ``serve --help`` (installed) and the generated
# docs/configuration.md both read it through :func:`meaning`, so no setting is described in one and not the other.
MEANINGS: dict[str, str] = {
    "database_url": "the PostgreSQL database every replica shares (`postgresql://user:password@host/db`); set, it "
                    "holds every store instead of the SQLite file, and an unreachable one fails the start",
    "upstream_timeout": "whole-request ceiling for one upstream call, seconds; streams are also bounded by the "
                        "idle timeout",
    "upstream_connect_timeout": "seconds to connect to the upstream",
    "upstream_idle_timeout": "seconds of upstream silence before a 504 / `response.failed` (`upstream_timeout`)",
    "max_request_bytes": "largest accepted request body; larger is a 413 `request_too_large`",
    "max_event_bytes": "largest single upstream SSE event or non-streamed upstream answer held in memory; more fails "
                       "that response (502 `upstream_too_large` / `response.failed`)",
    "max_tokens_field": "the Chat Completions field the output limit is sent in; `max_completion_tokens` for OpenAI "
                        "reasoning models",
    "developer_role": "how `developer` messages are sent upstream; `developer` for OpenAI",
    "reasoning_history": "earlier reasoning in replayed history: dropped, or sent as `reasoning_content`",
    "unsupported_tools": "server-side tools the bridge cannot run: `drop` (not offered to the model; warned once per "
                         "type, counted in `/metrics`) or `reject` (400 naming the tool)",
    "context_window": "the model's context window in tokens; a `truncation: \"auto\"` request estimated not to fit "
                      "drops its oldest items before the first call. Unset: only the upstream's context-length error "
                      "triggers truncation",
    "sealing_key": "urlsafe base64 of 32 bytes sealing the state clients carry (reasoning and compaction "
                   "`encrypted_content`). Unset: a key is created in `sealing.key` beside the database; replicas "
                   "behind one load balancer must share one",
    "web_search": "the search behind the server-run `web_search` tool: `searxng:URL`, `brave` or `tavily`; unset: "
                  "no web search (the tool falls under `unsupported_tools`)",
    "web_search_url": "Brave's or Tavily's API base instead of the public one (a proxy, a compatible service)",
    "brave_api_key": "Brave Search's key, required for `web_search=brave`",
    "tavily_api_key": "Tavily's key, required for `web_search=tavily`",
    "web_search_timeout": "one search's time limit, seconds",
    "web_search_max_bytes": "largest search answer read",
    "mcp_allowed_hosts": "remote MCP servers on private, loopback or link-local addresses that may be reached: "
                         "comma-separated host names, IPs or CIDRs; public addresses are always allowed",
    "mcp_connect_timeout": "seconds to resolve and connect to an MCP server",
    "mcp_call_timeout": "seconds one MCP tool call may take; past it the `mcp_call` fails with that message",
    "mcp_total_timeout": "seconds for one whole MCP operation (connect, handshake, list or call)",
    "mcp_list_ttl": "seconds an MCP server's tool list is reused (per URL and headers); `0` lists every time",
    "mcp_max_output_bytes": "MCP tool output kept for the model; longer output is cut with a marker",
    "max_turns": "model turns one response may take in the server-side tool loop; the last is sent without tools",
    "store_stall_seconds": "a store write waiting longer than this makes `GET /health/ready` answer 503 and the "
                           "gRPC health service NOT_SERVING",
    "log_format": "`json` (one object a line, on stderr) or `console` (for people)",
}


class UndocumentedSetting(ValueError):
    """A Settings field with neither a ``description`` nor a line in MEANINGS."""


class UnshownType(ValueError):
    """A setting whose type has no words a user would write (a list or a model): add it to SHOWN_TYPES."""


def shown_type(field: str, info: FieldInfo) -> tuple[str, bool]:
    """(the type in words, whether it may be left unset)."""
    annotation: Any = info.annotation
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        optional = type(None) in args
        annotation = next(arg for arg in args if arg is not type(None))
    if field in SHOWN_TYPES:
        return SHOWN_TYPES[field], optional
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation)), optional
    if annotation is SecretStr:
        return "secret", optional
    if annotation in _SCALARS:
        return _SCALARS[annotation], optional
    raise UnshownType(f"the setting {field!r} has the type {annotation!r}, which a user does not write: describe it "
                      "in SHOWN_TYPES (src/responses_bridge/config/help.py)")


def expected(field: str, info: FieldInfo) -> str:
    """What a value of ``field`` looks like, for an error line: its type in words, with an example when JSON."""
    words = SHOWN_TYPES.get(field) or shown_type(field, info)[0]
    example = JSON_EXAMPLES.get(field)
    return f"{words}, e.g. {example}" if example else words


def user_default(info: FieldInfo) -> str | None:
    """The default as it would be written (``false``, ``30``, ``0.5``); None when the default is no value at all
    (unset, an empty string, an empty list or mapping)."""
    value = info.get_default(call_default_factory=True)
    if value is None or value in ("", [], {}):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def meaning(field: str, info: FieldInfo, flag_help: str | None = None) -> str:
    """What the setting is for: its Field's description, else its line in MEANINGS, else its flag's help. None of
    them raises UndocumentedSetting naming the field: a new setting cannot reach ``--help`` or the docs unexplained."""
    text = info.description or MEANINGS.get(field) or flag_help or ""
    if not text:
        raise UndocumentedSetting(f"the setting {field!r} has no description: give its Field a description= "
                                  "or add it to MEANINGS in src/responses_bridge/config/help.py")
    return text


def environment_help(fields: dict[str, FieldInfo], names: typing.Callable[[str], list[str]], skip: set[str]) -> str:
    """Every setting not in ``skip`` (those have flags) as ``NAME (default D; TYPE): MEANING`` lines:
    ``serve --help``'s list of the settings without a flag."""
    lines = []
    for field, info in fields.items():
        if field in skip:
            continue
        line = f"  {' / '.join(names(field))} (default {user_default(info) or 'none'}; {shown_type(field, info)[0]})"
        lines.append(f"{line}: {meaning(field, info)}")
    return "\n".join(lines)
