"""Programmatic tool calling as the chat model sees it and as the client sees it (no I/O: the run runs programs).

The model is offered one function, ``program``, whose one string parameter is the JavaScript source; its
description lists the tools a program may call (``tools.<name>(args)``: the request's function tools, and the
functions the loop offers for its server-side tools, whose ``allowed_callers`` include ``"programmatic"``) with
their parameters. A call of it becomes a ``program`` item
(``call_id``, ``code``, an opaque ``fingerprint``), done with its arguments; the run adds the ``program_output``
item, or the ``function_call`` items of the client tools the program is waiting for (``caller: {"type":
"program", "caller_id": <the program's call_id>}``).

Replayed history: a ``program`` item is the model's call of ``program`` and its ``program_output`` the tool's
result; the program's own calls and their outputs are not the model's and are not shown to it.

The fingerprint: the clock and seed the program sees (so that running it again makes the same calls) and an HMAC
binding them to its code, its ``call_id`` and the tenant it was made for, keyed with the bridge's sealing key
(``Sealer.mac``). It is not secret, but only the bridge can make one: a ``program`` item is run again only if the
bridge made it, never with code a client chose (or in another world than the one its recorded calls were made in),
and only for the tenant it was made for: another tenant that got hold of the item (its code and fingerprint) is
refused as a forged item is, rather than running it in the first tenant's world (its pinned clock and seed). Any
deployment holding the same key (a restart, another replica) accepts it. The response a program belongs to is not
bound: a stateless resume (``store: false``) sends the items back in a request of its own, which names no earlier
response; within one tenant, running an item again is what a resume is.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ... import ids
from ...protocol.errors import APIError, invalid_request
from ...sealing import Sealer

PROGRAM_NAME = "program"
PROGRAM_TOOL = "programmatic_tool_calling"
PROGRAM_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "The JavaScript program: its body runs as an async "
                                                             "function (top-level await, return a value)."}},
    "required": ["code"],
    "additionalProperties": False,
}
_DESCRIPTION = (
    "Runs a JavaScript program that calls tools and returns a small result, instead of calling the tools one by "
    "one. Each tool is an async function of the global `tools` object: `await tools.<name>({...arguments})` "
    "resolves to the tool's output (a string; JSON.parse it when it is JSON). Calls may run in parallel "
    "(`await Promise.all([...])`) and in loops. `text(...)` adds to the program's result; the returned value is "
    "added last. There is no network, filesystem, console, timer or module: only the tools below.\n\nTools:\n")
FINGERPRINT_PREFIX = "pf3."
"""``pf1.`` fingerprints were an unkeyed hash anyone could compute, ``pf2.`` ones bound no tenant: both are
refused."""
FINGERPRINT_PURPOSE = "program fingerprint"

ProgramSigner = Callable[[bytes], str]
"""The keyed digest of a fingerprint's material: :func:`program_signer` of the bridge's sealer."""


def program_signer(sealer: Sealer) -> ProgramSigner:
    return functools.partial(sealer.mac, FINGERPRINT_PURPOSE)


def tenant_signer(sign: ProgramSigner, tenant: str) -> ProgramSigner:
    """``sign`` for one tenant's programs: what it makes, no other tenant's signer accepts (the tenant is part of
    the keyed material, length-prefixed so no two tenants' materials can be spelled alike)."""
    scope = f"{len(tenant)}:{tenant}\0".encode()

    def sign_for_tenant(message: bytes) -> str:
        return sign(scope + message)

    return sign_for_tenant


def callable_by_programs(tool: Mapping[str, Any]) -> bool:
    callers = tool.get("allowed_callers")
    return isinstance(callers, list) and "programmatic" in callers


def program_tools(tools: Iterable[Any]) -> list[dict[str, Any]]:
    """The request's function tools a program may call, in order (``allowed_callers`` with ``programmatic``)."""
    return [tool for tool in tools if isinstance(tool, dict) and tool.get("type") == "function"
            and isinstance(tool.get("name"), str) and callable_by_programs(tool)]


SERVER_KIND_OF = {"mcp": "mcp", "file_search": "file_search", "code_interpreter": "code_interpreter",
                  "image_generation": "image_generation", "shell": "hosted_shell", "web_search": "web_search",
                  "web_search_2025_08_26": "web_search", "web_search_preview": "web_search",
                  "web_search_preview_2025_03_11": "web_search"}
"""The request's server-side tool types programs may call, and the kind of call target the loop offers for each."""


def server_functions(tool: Mapping[str, Any], functions: list[dict[str, Any]],
                     targets: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The functions the tool loop offers for one of the request's server-side tools (an MCP server's tools, the
    web search...): ``functions`` and ``targets`` are a ``ToolPlan``'s."""
    names = set(server_target_names(tool, targets))
    return [function for function in functions if function["name"] in names]


def server_target_names(tool: Mapping[str, Any], targets: Mapping[str, Any]) -> list[str]:
    """The names the loop's calls of one of the request's server-side tools go by (``ToolPlan.targets``)."""
    kind = SERVER_KIND_OF.get(str(tool.get("type")))
    if kind is None:
        return []
    label = tool.get("server_label") if kind == "mcp" else None
    return [name for name, target in targets.items()
            if target.kind == kind and (label is None or target.namespace == label)]


def program_call_names(tools: Iterable[Any], targets: Mapping[str, Any]) -> list[str]:
    """The names of what programs may call: the request's function tools, then the loop's names for its
    server-side tools, whose ``allowed_callers`` include ``programmatic``."""
    names = [tool["name"] for tool in program_tools(tools)]
    for tool in tools:
        if isinstance(tool, dict) and callable_by_programs(tool):
            names.extend(server_target_names(tool, targets))
    return names


def program_functions(tools: Iterable[Any], functions: list[dict[str, Any]],
                      targets: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What programs may call, as functions: the request's function tools, then the functions of its server-side
    tools, whose ``allowed_callers`` include ``programmatic``."""
    found = program_tools(tools)
    for tool in tools:
        if isinstance(tool, dict) and callable_by_programs(tool):
            found.extend(server_functions(tool, functions, targets))
    return found


def program_description(tools: list[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        parameters = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else {}
        line = f"- tools.{tool['name']}(args): {tool.get('description') or ''}".rstrip()
        lines.append(f"{line}\n  args: {json.dumps(parameters, separators=(',', ':'))}")
    return _DESCRIPTION + ("\n".join(lines) if lines else "(none)")


@dataclass(frozen=True, slots=True)
class ProgramWorld:
    """What a program sees besides its code and its tools' outputs: its clock (ms since the epoch) and seed."""

    clock_ms: int
    seed: int

    @classmethod
    def new(cls) -> ProgramWorld:
        return cls(int(time.time() * 1000), secrets.randbits(32))


def fingerprint(code: str, world: ProgramWorld, sign: ProgramSigner, call_id: str = "") -> str:
    """The fingerprint of the program ``call_id`` (its item's) of ``code``; ``sign``: :func:`tenant_signer`'s for
    the response's tenant."""
    payload = base64.urlsafe_b64encode(json.dumps([world.clock_ms, world.seed]).encode()).decode().rstrip("=")
    return f"{FINGERPRINT_PREFIX}{payload}.{_digest(code, world, sign, call_id)}"


def open_fingerprint(code: str, value: object, param: str, sign: ProgramSigner, call_id: str = "") -> ProgramWorld:
    """The world a ``program`` item's fingerprint recorded; a 400 naming ``param`` unless this bridge (its sealing
    key) made it for ``code`` and ``call_id`` under ``sign`` (the tenant's: another tenant's item is refused as a
    forged one is, in the same words)."""
    if isinstance(value, str) and value.startswith(FINGERPRINT_PREFIX) and value.count(".") == 2:
        payload, digest = value[len(FINGERPRINT_PREFIX):].split(".")
        world: ProgramWorld | None
        try:
            clock_ms, seed = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            world = ProgramWorld(int(clock_ms), int(seed))
        except (ValueError, TypeError):
            world = None
        if world is not None and hmac.compare_digest(digest.encode(), _digest(code, world, sign, call_id).encode()):
            return world
    raise invalid_request(f"Invalid '{param}': the program's fingerprint was not made by this bridge for its code "
                          "(send the program item back as it was returned).", param=param,
                          code="invalid_program_fingerprint")


def _digest(code: str, world: ProgramWorld, sign: ProgramSigner, call_id: str) -> str:
    return sign(json.dumps([code, world.clock_ms, world.seed, call_id]).encode())


def program_item(call_id: str) -> dict[str, Any]:
    """A ``program`` item as ``output_item.added`` shows it (its code and fingerprint come with ``.done``)."""
    return {"id": ids.new_id("prog"), "type": "program", "call_id": call_id, "code": "", "fingerprint": ""}


def program_output_item(call_id: str, result: str, status: str) -> dict[str, Any]:
    return {"id": ids.new_id("progo"), "type": "program_output", "call_id": call_id, "result": result,
            "status": status}


def program_function_call(caller_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A client tool's call made by a program: the client runs it and sends its ``function_call_output``."""
    return {"id": ids.function_call_id(), "type": "function_call", "status": "completed", "call_id": ids.call_id(),
            "name": name, "arguments": arguments, "caller": {"type": "program", "caller_id": caller_id}}


def made_by_program(item: Mapping[str, Any]) -> bool:
    """Is this a call (or a call's output) a program made, not the model?"""
    caller = item.get("caller")
    return isinstance(caller, dict) and caller.get("type") == "program"


def programs_not_served(tools: Iterable[Any]) -> APIError:
    """The 400 for a ``programmatic_tool_calling`` tool where no program can run (never a silent drop)."""
    index = next((i for i, tool in enumerate(tools)
                  if isinstance(tool, dict) and tool.get("type") == PROGRAM_TOOL), 0)
    return invalid_request(f"The tool 'tools[{index}]' of type '{PROGRAM_TOOL}' cannot run on this deployment: "
                           "programs need the embedded V8 (pip install 'responses-bridge[programs]') and the "
                           "sidecar's tool loop.", param=f"tools[{index}].type", code="unsupported_tool")


def program_call_ids(*item_lists: list[dict[str, Any]]) -> set[str]:
    """The call ids of the calls programs made in these items (their outputs carry the same ids)."""
    return {item["call_id"] for items in item_lists for item in items
            if isinstance(item.get("call_id"), str) and made_by_program(item)}


def program_tool_call(item: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A replayed ``program`` item as the model's tool call of ``program`` (its code as the call's arguments)."""
    return {"id": item["call_id"], "type": "function",
            "function": {"name": name, "arguments": json.dumps({"code": item.get("code") or ""})}}


def check_programs_answered(tools: Iterable[Any], *item_lists: list[dict[str, Any]]) -> None:
    """A program still waiting (a ``program`` item without its ``program_output``) can only go on where the
    request offers ``programmatic_tool_calling``: otherwise the model would read a call left without a result."""
    if any(isinstance(tool, dict) and tool.get("type") == PROGRAM_TOOL for tool in tools):
        return
    finished = {item.get("call_id") for items in item_lists for item in items if item.get("type") == "program_output"}
    for items in item_lists:
        for item in items:
            if item.get("type") == "program" and item.get("call_id") not in finished:
                raise invalid_request(
                    f"The program '{str(item.get('call_id'))[:100]}' waits for its tools' outputs: send the request "
                    f"with its '{PROGRAM_TOOL}' tool to resume it.", param="tools", code="missing_required_parameter")


_RUN_MARK = "prog"
"""Marks the ids of the items of a program's calls of the bridge's own tools (``<prefix>_prog<hex>``; an id the
bridge makes otherwise is ``<prefix>_<hex>``): these items have no ``caller`` field in the SDK's types, and the model
must not read them back as calls of its own."""


RUN_ITEM_TYPES = frozenset({"mcp_call", "web_search_call", "file_search_call", "code_interpreter_call",
                             "image_generation_call", "shell_call", "shell_call_output"})


def program_run_id(item_id: str) -> str:
    prefix, _, rest = item_id.partition("_")
    return f"{prefix}_{_RUN_MARK}{rest}"


def made_by_program_run(item: Mapping[str, Any]) -> bool:
    """Is this an item of a program's call of the bridge's own tools (or that call's output)?"""
    if item.get("type") not in RUN_ITEM_TYPES:
        return False
    for key in ("id", "call_id"):
        value = item.get(key)
        if isinstance(value, str) and value.partition("_")[2].startswith(_RUN_MARK):
            return True
    return False
