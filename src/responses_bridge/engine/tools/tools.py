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
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from ...protocol.newer_fields import allows_direct
from .builtin import (
    APPLY_PATCH_DESCRIPTION,
    APPLY_PATCH_PARAMETERS,
    CODE_DESCRIPTION,
    CODE_NAME,
    CODE_PARAMETERS,
    FILE_SEARCH_DESCRIPTION,
    FILE_SEARCH_NAME,
    FILE_SEARCH_PARAMETERS,
    HOSTED_SHELL_DESCRIPTION,
    IMAGE_DESCRIPTION,
    IMAGE_NAME,
    LOCAL_SHELL_DESCRIPTION,
    LOCAL_SHELL_PARAMETERS,
    SERVER_KINDS,
    SHELL_DESCRIPTION,
    SHELL_PARAMETERS,
    TOOL_SEARCH_DESCRIPTION,
    TOOL_SEARCH_PARAMETERS,
    WEB_SEARCH_DESCRIPTION,
    WEB_SEARCH_NAME,
    WEB_SEARCH_PARAMETERS,
    image_parameters,
    is_hosted_shell,
)
from .computer import (
    COMPUTER_BATCH_DESCRIPTION,
    COMPUTER_BATCH_PARAMETERS,
    COMPUTER_NAME,
    COMPUTER_PARAMETERS,
    computer_description,
)
from .programs import (
    PROGRAM_NAME,
    PROGRAM_PARAMETERS,
    program_description,
    program_functions,
    programs_not_served,
    server_functions,
)
from .unsupported import unsupported_tools_error

log = structlog.get_logger("responses_bridge.tools")

MAX_NAME = 64
SEPARATOR = "__"
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")

UnsupportedPolicy = Literal["drop", "reject"]

# Tool types the bridge translates itself; every other type is a server-side tool it cannot run.
TRANSLATED = frozenset({"function", "namespace", "custom", "shell", "local_shell", "computer_use_preview",
                        "computer", "apply_patch", "tool_search"})
# client-executed tools without a name of their own
BUILTIN_KINDS = ("shell", "local_shell", "computer_use_preview", "computer", "apply_patch", "tool_search")

CUSTOM_INPUT = "input"


@dataclass(frozen=True, slots=True)
class CallTarget:
    """What a call of one upstream function name becomes: ``kind`` is the output item's tool kind
    (``function``, ``custom``, ``shell``, ``apply_patch``, ``tool_search``, or one of :data:`SERVER_KINDS`);
    ``name`` / ``namespace`` are the client's names for a function or custom tool, or the MCP tool's name and
    its server's label (``namespace``); ``approval``: an MCP call that needs the client's approval first."""

    kind: str
    name: str | None = None
    namespace: str | None = None
    approval: bool = False

    @property
    def server(self) -> bool:
        """Is this a tool the bridge runs itself (the tool loop), rather than one the client runs?"""
        return self.kind in SERVER_KINDS


_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

_warned: set[str] = set()

try:  # metrics are optional: the engine works without prometheus-client
    from prometheus_client import Counter

    DROPPED: Counter | None = Counter("responses_bridge_unsupported_tools_dropped",
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
    targets: dict[str, CallTarget] = field(default_factory=dict)  # upstream name → item kind, when not a function
    names: dict[tuple[str, str | None, str | None], str] = field(default_factory=dict)  # (kind, ns, name) → upstream
    program_calls: set[str] = field(default_factory=set)  # call ids of calls programs made: not the model's
    # how plan_tools made the request's own functions (its tools, policy, loaded tools, served types) and how many
    # of ``functions`` they are: a tool search in the loop re-plans them so (add_loaded_tools)
    made_from: tuple[list[dict[str, Any]], UnsupportedPolicy, list[dict[str, Any]], Collection[str]] | None = None
    own: int = 0

    def upstream_name(self, kind: str, name: str | None = None, namespace: str | None = None) -> str:
        """The name a replayed call of this kind goes upstream under (what this request offers it as)."""
        found = self.names.get((kind, namespace, name))
        if found is not None:
            return found
        if kind in ("function", "mcp") and namespace:
            return flat_name(namespace, name or "")
        return name or kind

    # --- tools the run serves (the tool loop adds them once it knows them) ---------------------------------------

    def _taken(self) -> set[str]:
        return {function["name"] for function in self.functions}

    def add_mcp_tools(self, server_label: str, tools: Iterable[Mapping[str, Any]], *,
                      approval: Collection[str] = (), server_description: str | None = None) -> list[str]:
        """Offer an MCP server's listed tools (``mcp_list_tools.tools`` entries: ``name``, ``description``,
        ``input_schema``) as functions named ``<server_label>__<tool>`` (shortened like namespaced functions,
        and made unique against every name already offered). ``approval``: the tools whose calls need the
        client's approval (``require_approval``); their calls become ``mcp_approval_request`` items.
        ``server_description`` (the request's, of the server) comes before each tool's own description.
        Returns the flat names, in the order of ``tools``."""
        taken = self._taken()
        names: list[str] = []
        for tool in tools:
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                continue
            key = ("mcp", server_label, name)
            if key in self.names:
                names.append(self.names[key])
                continue
            flat = flat_name(server_label, name)
            if flat in taken:
                flat = _unique(flat, taken)
            taken.add(flat)
            self.names[key] = flat
            self.targets[flat] = CallTarget("mcp", name, server_label, approval=name in approval)
            schema = tool.get("input_schema")
            function: dict[str, Any] = {"type": "function", "name": flat,
                                        "parameters": dict(schema) if isinstance(schema, Mapping) else _EMPTY_SCHEMA}
            description = _in_namespace(server_description, tool.get("description"))
            if description is not None:
                function["description"] = description
            self.functions.append(function)
            names.append(flat)
        return names

    def _add_server(self, kind: str, base: str, description: str, parameters: dict[str, Any],
                    namespace: str | None = None) -> str:
        """Offer one of the loop's own tools (one per request) as a function named ``base`` (made unique)."""
        key = (kind, None, None)
        if key in self.names:
            return self.names[key]
        name = _unique(base, self._taken())
        self.names[key] = name
        self.targets[name] = CallTarget(kind, namespace=namespace)
        self.functions.append({"type": "function", "name": name, "description": description,
                               "parameters": parameters})
        return name

    def add_program(self, tools: list[dict[str, Any]]) -> str:
        """Offer ``program`` (programmatic tool calling), its description listing what programs may call; once the
        loop's own tools are offered, those of a server-side tool whose ``allowed_callers`` leave out ``direct``
        are withdrawn from the model (programs still call them)."""
        callable_functions = program_functions(tools, self.functions, self.targets)
        name = self._add_server("program", PROGRAM_NAME, program_description(callable_functions),
                                PROGRAM_PARAMETERS)
        self.withdraw_program_only(tools)
        return name

    def withdraw_program_only(self, tools: list[dict[str, Any]]) -> None:
        """The functions offered for a server-side tool whose ``allowed_callers`` leave out ``direct`` are not the
        model's to call (with or without a program to call them)."""
        hidden = {function["name"] for tool in tools if isinstance(tool, dict) and not allows_direct(tool)
                  for function in server_functions(tool, self.functions, self.targets)}
        if hidden:
            self.functions = [function for function in self.functions if function["name"] not in hidden]

    def add_web_search(self) -> str:
        """Offer the web search as a function (``{"query"}``); its calls become ``web_search_call`` items."""
        return self._add_server("web_search", WEB_SEARCH_NAME, WEB_SEARCH_DESCRIPTION, WEB_SEARCH_PARAMETERS)

    def add_file_search(self) -> str:
        """Offer the file search as a function (``{"query"}``); its calls become ``file_search_call`` items."""
        return self._add_server("file_search", FILE_SEARCH_NAME, FILE_SEARCH_DESCRIPTION, FILE_SEARCH_PARAMETERS)

    def add_code_interpreter(self, container_id: str, note: str = "") -> str:
        """Offer the code interpreter as a function (``{"code"}``) running in ``container_id``; its calls become
        ``code_interpreter_call`` items. ``note``: what the container holds for the model (its skills:
        protocol/containers/skills_note.py), after the description."""
        description = f"{CODE_DESCRIPTION}\n\n{note}" if note else CODE_DESCRIPTION
        return self._add_server("code_interpreter", CODE_NAME, description, CODE_PARAMETERS,
                                namespace=container_id)

    def add_hosted_shell(self, container_id: str, note: str = "") -> str:
        """Offer the hosted shell as a function (OpenAI's shell action: ``commands``, ``timeout_ms``,
        ``max_output_length``) running in ``container_id``; its calls become ``shell_call`` items the run answers
        with ``shell_call_output`` items. Replayed ``shell_call`` items and ``tool_choice: {"type": "shell"}``
        name it too. ``note``: the container's skills for the model (protocol/containers/skills_note.py), after the
        description."""
        description = f"{HOSTED_SHELL_DESCRIPTION}\n\n{note}" if note else HOSTED_SHELL_DESCRIPTION
        name = self._add_server("hosted_shell", "shell", description, SHELL_PARAMETERS, namespace=container_id)
        self.names[("shell", None, None)] = name
        return name

    def add_image_generation(self, *, choose_size: bool) -> str:
        """Offer the image generation as a function (``{"prompt"}``, and ``size`` with ``choose_size``); its calls
        become ``image_generation_call`` items."""
        return self._add_server("image_generation", IMAGE_NAME, IMAGE_DESCRIPTION, image_parameters(choose_size))

    def add_multi_agent(self, actions: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
        """Offer the multi-agent beta's actions (multi_agent.py), each a function named after it
        (made unique); their calls become ``multi_agent_call`` items the run answers."""
        for action, (description, parameters) in actions.items():
            key = ("multi_agent", None, action)  # (kind, namespace, name), as upstream_name looks it up
            if key in self.names:
                continue
            name = _unique(action, self._taken())
            self.names[key] = name
            self.targets[name] = CallTarget("multi_agent", name=action)
            self.functions.append({"type": "function", "name": name, "description": description,
                                   "parameters": parameters})

    def add_server_tool_search(self, function: Mapping[str, Any]) -> str:
        """Offer the server-side tool search (``function``: the Responses-shaped function the run made for it);
        its calls become ``tool_search_call`` items with ``execution: "server"``."""
        key = ("tool_search", None, None)
        if key in self.names:
            return self.names[key]
        name = _unique(str(function.get("name") or "tool_search"), self._taken())
        self.names[key] = name
        self.targets[name] = CallTarget("server_tool_search")
        self.functions.append(dict(function, type="function", name=name))
        return name

    def add_loaded_tools(self, tools: Iterable[Mapping[str, Any]]) -> list[str]:
        """Offer the tools a server-side tool search found (its ``tool_search_output.tools``), from the next turn
        on, as a plan made with them among ``loaded`` would; ``targets`` is changed in place, so an output builder
        reading this plan's targets reads their calls. Returns the names newly offered.

        The request's own functions are planned again with the new tools among ``loaded``, as the next response
        plans them from its history (the run's server functions after them): so its ``tools`` are this turn's, in
        the same order, and a backend's prefix cache holds them."""
        found = [dict(tool) for tool in tools if isinstance(tool, Mapping)]
        if self.made_from is not None:
            return self._replan(found)
        extra = plan_tools(None, loaded=found)
        offered = self._taken()
        added = [function for function in extra.functions if function["name"] not in offered]  # names unique
        self.functions += added
        self._read_as(extra)
        return [function["name"] for function in added]

    def _read_as(self, other: ToolPlan) -> None:
        """Read calls of ``other``'s tools as it does too (names already known keep their reading)."""
        maps: list[tuple[dict[Any, Any], dict[Any, Any]]] = [
            (self.targets, other.targets), (self.namespaced, other.namespaced), (self.names, other.names)]
        for mine, its in maps:
            for key, value in its.items():
                mine.setdefault(key, value)

    def _replan(self, found: list[dict[str, Any]]) -> list[str]:
        assert self.made_from is not None
        request_tools, policy, loaded, served = self.made_from
        offered = self._taken()
        fresh = plan_tools(request_tools, policy, loaded=[*loaded, *found], served=served)
        own = {function["name"] for function in fresh.functions}
        self.functions = [*fresh.functions, *(function for function in self.functions[self.own:]
                                              if function["name"] not in own)]
        self.made_from, self.own = fresh.made_from, fresh.own
        self._read_as(fresh)
        return [function["name"] for function in fresh.functions if function["name"] not in offered]

    def server_names(self, kind: str, namespace: str | None = None) -> list[str]:
        """The flat names offered for server tools of ``kind`` (of one MCP server, when ``namespace`` is given)."""
        return [name for name, target in self.targets.items()
                if target.kind == kind and (namespace is None or target.namespace == namespace)]


def plan_tools(tools: list[dict[str, Any]] | None, policy: UnsupportedPolicy = "drop",
               loaded: list[dict[str, Any]] | None = None, served: Collection[str] = ()) -> ToolPlan:
    """``loaded``: tools returned by ``tool_search_output`` items (offered, deferred or not). ``served``: the
    server-side tool types the caller's tool loop runs (from :data:`SERVED_TOOL_TYPES`); they are neither
    dropped nor refused here, and the loop adds what the model is offered for them (``ToolPlan.add_*``).
    With a served server-side ``tool_search``, functions marked ``defer_loading`` (also inside a namespace)
    are offered only once a ``tool_search_output`` loaded them."""
    plan = ToolPlan()
    unsupported: list[str] = []
    tools = list(tools or ())
    client_search = any(tool.get("type") == "tool_search" and tool.get("execution") == "client" for tool in tools)
    server_search = "tool_search" in served and any(
        tool.get("type") == "tool_search" and tool.get("execution") in (None, "server") for tool in tools)
    loaded_names = {tool.get("name") for tool in loaded or () if isinstance(tool, dict)}
    taken = _plain_names(tools) | _plain_names(loaded or [])
    given = len(tools)
    for position, tool in enumerate([*tools, *(tool for tool in loaded or () if isinstance(tool, dict))]):
        kind = tool.get("type")
        if not allows_direct(tool):
            continue  # ``allowed_callers`` without "direct": for programs only, never offered to the model
        if kind in ("function", "custom", "namespace") and (client_search or server_search) \
                and tool.get("defer_loading") is True and tool.get("name") not in loaded_names:
            continue  # discovered through the tool search first
        if kind == "namespace" and server_search and position < given:
            inner_tools = [inner for inner in tool.get("tools") or ()
                           if not (isinstance(inner, dict) and inner.get("defer_loading") is True)]
            tool = dict(tool, tools=inner_tools)  # its deferred functions come with a tool_search_output
        if kind == "function":
            if ("function", None, tool["name"]) not in plan.names:
                plan.functions.append(tool)
                plan.names[("function", None, tool["name"])] = tool["name"]
        elif kind == "namespace":
            namespace = tool.get("name") or ""
            for inner in tool.get("tools") or ():
                if not isinstance(inner, dict) or inner.get("type", "function") not in ("function", "custom") \
                        or not allows_direct(inner):
                    continue
                if inner.get("type") == "custom":
                    _add_custom(plan, inner, taken, namespace)
                    continue
                name = flat_name(namespace, inner["name"])
                if name in plan.namespaced:
                    continue
                plan.namespaced[name] = (namespace, inner["name"])
                plan.targets[name] = CallTarget("function", inner["name"], namespace)
                plan.functions.append(dict(inner, type="function", name=name,
                                           description=_in_namespace(tool.get("description"),
                                                                     inner.get("description"))))
        elif kind == "custom":
            _add_custom(plan, tool, taken, None)
        elif kind == "shell" and is_hosted_shell(tool):
            if kind not in served and kind not in unsupported:
                unsupported.append(kind)  # a container environment: this deployment has no containers
        elif kind in ("shell", "local_shell", "computer_use_preview", "computer", "apply_patch") or (
                kind == "tool_search" and tool.get("execution") == "client"):
            _add_builtin(plan, tool, taken)
        elif kind in served:
            continue  # the tool loop runs it
        elif isinstance(kind, str) and kind not in unsupported:
            unsupported.append(kind)
    if "programmatic_tool_calling" in unsupported:  # never dropped: the tools meant for its programs would be lost
        raise programs_not_served(tools)
    if unsupported:
        if policy == "reject":
            raise unsupported_tools_error(unsupported, served)  # what runs here, and what would run the rest
        for kind in unsupported:
            if kind not in _warned:
                _warned.add(kind)
                log.warning("unsupported_tool_dropped", tool_type=kind,
                            hint="this deployment cannot run it; the model is not offered it "
                                 "(RESPONSES_BRIDGE_UNSUPPORTED_TOOLS=reject refuses such requests instead)")
            if DROPPED is not None:
                DROPPED.labels(tool_type=kind).inc()
        plan.dropped = unsupported
    if server_search:  # only a server tool search loads tools in the loop (add_loaded_tools)
        plan.made_from, plan.own = (tools, policy, list(loaded or ()), served), len(plan.functions)
    return plan


def _in_namespace(group: Any, own: Any) -> str | None:
    """A namespaced function's description: its namespace's (what the group is, Codex's MCP server description)
    before its own, so the model reads both — the namespace is no function of its own to describe it."""
    parts = [text for text in (group, own) if isinstance(text, str) and text]
    return "\n\n".join(parts) or None


def _plain_names(tools: list[dict[str, Any]]) -> set[str]:
    """Names functions are offered under as they are: the new kinds must not take them."""
    names: set[str] = set()
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "function" and isinstance(tool.get("name"), str):
            names.add(tool["name"])
        elif tool.get("type") == "namespace":
            names.update(flat_name(tool.get("name") or "", inner["name"]) for inner in tool.get("tools") or ()
                         if isinstance(inner, dict) and isinstance(inner.get("name"), str)
                         and inner.get("type", "function") == "function")
    return names


def _unique(base: str, taken: set[str]) -> str:
    base = _INVALID.sub("_", base)[:MAX_NAME - 4] or "tool"
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    taken.add(name)
    return name


def _add_custom(plan: ToolPlan, tool: dict[str, Any], taken: set[str], namespace: str | None) -> None:
    key = ("custom", namespace, tool["name"])
    if key in plan.names:
        return
    base = flat_name(namespace, tool["name"]) if namespace else tool["name"]
    name = _unique(base, taken)
    plan.names[key] = name
    plan.targets[name] = CallTarget("custom", tool["name"], namespace)
    description = tool.get("description") or ""
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        description = (f"{description}\n\n" if description else "") + (
            f"The input must match this {fmt.get('syntax') or ''} grammar:\n{fmt.get('definition') or ''}")
    plan.functions.append({
        "type": "function", "name": name, "description": description or None,
        "parameters": {"type": "object", "properties": {CUSTOM_INPUT: {
            "type": "string", "description": "The tool's input, as free-form text."}},
            "required": [CUSTOM_INPUT], "additionalProperties": False},
    })


def _add_builtin(plan: ToolPlan, tool: dict[str, Any], taken: set[str]) -> None:
    kind = tool["type"]
    parameters: dict[str, Any]
    key = (kind, None, None)
    if key in plan.names:
        return
    name = _unique(COMPUTER_NAME if kind in ("computer_use_preview", "computer") else kind, taken)
    plan.names[key] = name
    plan.targets[name] = CallTarget(kind)
    if kind == "shell":
        parameters, description = SHELL_PARAMETERS, SHELL_DESCRIPTION
    elif kind == "local_shell":
        parameters, description = LOCAL_SHELL_PARAMETERS, LOCAL_SHELL_DESCRIPTION
    elif kind == "computer_use_preview":
        parameters, description = COMPUTER_PARAMETERS, computer_description(tool)
    elif kind == "computer":  # the GA tool: a batch of actions per call
        parameters, description = COMPUTER_BATCH_PARAMETERS, COMPUTER_BATCH_DESCRIPTION
    elif kind == "apply_patch":
        parameters, description = APPLY_PATCH_PARAMETERS, APPLY_PATCH_DESCRIPTION
    else:
        given = tool.get("parameters")
        parameters = given if isinstance(given, dict) else TOOL_SEARCH_PARAMETERS
        description = tool.get("description") or TOOL_SEARCH_DESCRIPTION
    plan.functions.append({"type": "function", "name": name, "description": description, "parameters": parameters})


def loaded_tools(*item_lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools every ``tool_search_output`` item in these items returned, and every ``additional_tools`` item
    added, in order."""
    found: list[dict[str, Any]] = []
    for items in item_lists:
        for item in items:
            if item.get("type") in ("tool_search_output", "additional_tools"):
                found.extend(tool for tool in item.get("tools") or () if isinstance(tool, dict))
    return found


def upstream_name(item: dict[str, Any]) -> str:
    """The name a replayed ``function_call`` item had upstream."""
    name: str = item["name"]
    namespace = item.get("namespace")
    if namespace:
        return flat_name(namespace, name)
    return name
