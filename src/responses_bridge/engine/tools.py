"""Tools as a Chat Completions backend can take them.

Chat Completions knows only flat ``function`` tools. The Responses API also has

* ``namespace`` tools (``{"type": "namespace", "name", "description", "tools": [function, …]}``, sent by Codex
  for MCP servers): each inner function is offered to the model under a flat name, ``<namespace>__<name>``
  (shortened with a hash when it would pass Chat Completions' 64-character ``^[a-zA-Z0-9_-]+$`` limit), and a
  call of that flat name comes back as a ``function_call`` item carrying ``namespace`` and the inner ``name``,
  as OpenAI returns it. A replayed item is mapped back to the flat name (:func:`upstream_name`).
* server-side ("hosted") tools the deployment cannot run (``web_search``, ``file_search``,
  ``code_interpreter``, …). ``RESPONSES_BRIDGE_UNSUPPORTED_TOOLS`` decides: ``drop`` (default) leaves them out
  of what the model is offered, logs a warning once per tool type and counts every drop in
  ``responses_bridge_unsupported_tools_dropped_total``; ``reject`` answers 400 naming the tool.

Everything here is a pure function of the request's ``tools`` list, so translation (request side) and the
output builder (answer side) derive the same mapping independently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from ..protocol.errors import invalid_request

log = structlog.get_logger("responses_bridge.tools")

MAX_NAME = 64
SEPARATOR = "__"
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")

UnsupportedPolicy = Literal["drop", "reject"]

# Tool types the bridge translates itself; every other type is a server-side tool it cannot run.
TRANSLATED = frozenset({"function", "namespace"})

_warned: set[str] = set()

try:  # metrics are optional: the engine works without prometheus-client
    from prometheus_client import Counter

    DROPPED = Counter("responses_bridge_unsupported_tools_dropped",
                      "Server-side tools left out of requests because this deployment cannot run them",
                      ["tool_type"])
except ImportError:  # pragma: no cover
    DROPPED = None


def flat_name(namespace: str, name: str) -> str:
    """The name a namespaced function is offered under: unambiguous, ≤ 64 chars, ``[a-zA-Z0-9_-]`` only."""
    candidate = _INVALID.sub("_", f"{namespace}{SEPARATOR}{name}")
    if len(candidate) <= MAX_NAME:
        return candidate
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:10]
    return f"{candidate[:MAX_NAME - len(digest) - 1]}_{digest}"


@dataclass(slots=True)
class ToolPlan:
    """What the model is offered and how to read its calls back."""

    functions: list[dict[str, Any]] = field(default_factory=list)  # Responses-shaped function tools, flat names
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name → (namespace, inner name)
    dropped: list[str] = field(default_factory=list)  # server-side tool types left out


def plan_tools(tools: list[dict[str, Any]] | None, policy: UnsupportedPolicy = "drop") -> ToolPlan:
    plan = ToolPlan()
    unsupported: list[str] = []
    for tool in tools or ():
        kind = tool.get("type")
        if kind == "function":
            plan.functions.append(tool)
        elif kind == "namespace":
            namespace = tool.get("name") or ""
            for inner in tool.get("tools") or ():
                if not isinstance(inner, dict) or inner.get("type", "function") != "function":
                    continue
                name = flat_name(namespace, inner["name"])
                plan.namespaced[name] = (namespace, inner["name"])
                plan.functions.append(dict(inner, type="function", name=name))
        elif isinstance(kind, str) and kind not in unsupported:
            unsupported.append(kind)
    if unsupported:
        if policy == "reject":
            raise invalid_request(
                f"Tool type(s) {', '.join(sorted(unsupported))} cannot run on this deployment: it runs only "
                "'function' (and 'namespace') tools. Remove them from 'tools', or set "
                "RESPONSES_BRIDGE_UNSUPPORTED_TOOLS=drop to have them left out of what the model is offered.",
                param="tools", code="unsupported_tool_type")
        for kind in unsupported:
            if kind not in _warned:
                _warned.add(kind)
                log.warning("unsupported_tool_dropped", tool_type=kind,
                            hint="this deployment cannot run it; the model is not offered it "
                                 "(RESPONSES_BRIDGE_UNSUPPORTED_TOOLS=reject refuses such requests instead)")
            if DROPPED is not None:
                DROPPED.labels(tool_type=kind).inc()
        plan.dropped = unsupported
    return plan


def namespace_map(tools: list[dict[str, Any]] | None) -> dict[str, tuple[str, str]]:
    """Flat name → (namespace, inner name), for reading the model's calls back."""
    mapping: dict[str, tuple[str, str]] = {}
    for tool in tools or ():
        if tool.get("type") == "namespace":
            namespace = tool.get("name") or ""
            for inner in tool.get("tools") or ():
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    mapping[flat_name(namespace, inner["name"])] = (namespace, inner["name"])
    return mapping


def upstream_name(item: dict[str, Any]) -> str:
    """The name a replayed ``function_call`` item had upstream."""
    namespace = item.get("namespace")
    if namespace:
        return flat_name(namespace, item["name"])
    return item["name"]
