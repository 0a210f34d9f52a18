"""Renders protocol/known_fields_table.py: the fields OpenAI defines for ``POST /v1/responses``, read from the
installed openai SDK's request types (``ResponseCreateParamsBase`` and every TypedDict it reaches), and likewise
for every other JSON body a create or update route takes (:data:`ROUTE_PARAMS`), so the bridge
refuses a misspelled field exactly where OpenAI would and accepts every field OpenAI defines.

The table is a tree of nodes (protocol/known_fields.py walks it): ``None`` where anything goes (a scalar, a free
JSON object such as ``metadata`` or a function's ``parameters``, the input items, whose tolerance is kept), a dict
of the known keys of an object, ``("list", node)`` for an array's items, ``("type", {value: dict})`` for a union of
objects told apart by their ``type``, and ``("enum", (value, ...))`` for a string the SDK types as a closed
``Literal`` (``reasoning.effort``, ``service_tier``): another string there is OpenAI's 400 ``invalid_value``. A
``Literal`` beside a plain ``str`` (``reasoning.mode``, a model name) is open, so unchecked. Unions of objects
without a ``type`` are merged (every member's keys known); a type that refers back to itself is left unchecked below
that point. Run by scripts/render-docs; the docs test fails when the committed table is not what the installed SDK
makes.
"""

from __future__ import annotations

import collections.abc
import pprint
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import typing_extensions

Node = Any
EXTENSIONS = ("client_metadata", "frequency_penalty", "presence_penalty", "seed", "stop", "stream")
"""Top-level fields the bridge takes besides the SDK's base params: Chat Completions' sampling fields it passes
on, ``stream`` (the SDK adds it per overload), and ``client_metadata``, which Codex CLI sends with every turn
(OpenAI's service takes it; its SDK types do not list it)."""
UNCHECKED = ("input",)
"""Top-level fields whose contents keep today's tolerance (input items: OpenAI accepts many shapes there)."""
OPENED = (("mcp", "connector_id"),)
"""Tool fields the SDK closes that the deployment opens: an ``mcp`` tool's ``connector_id`` is any id the
operator's connector registry maps (``RESPONSES_BRIDGE_MCP_CONNECTORS``), refused by the tool's own check with the
ids served (run/tools/mcp_connectors.py), not by the SDK's eight."""
_LISTS = {list, collections.abc.Iterable, collections.abc.Sequence, typing.Iterable, typing.Sequence}
ROUTE_PARAMS = {
    "chat.completions.update": ("openai.types.chat.completion_update_params", "CompletionUpdateParams"),
    "containers.create": ("openai.types.container_create_params", "ContainerCreateParams"),
    "containers.files.create": ("openai.types.containers.file_create_params", "FileCreateParams"),
    "conversations.create": ("openai.types.conversations.conversation_create_params", "ConversationCreateParams"),
    "conversations.items.create": ("openai.types.conversations.item_create_params", "ItemCreateParams"),
    "conversations.update": ("openai.types.conversations.conversation_update_params", "ConversationUpdateParams"),
    "skills.update": ("openai.types.skill_update_params", "SkillUpdateParams"),
    "uploads.complete": ("openai.types.upload_complete_params", "UploadCompleteParams"),
    "uploads.create": ("openai.types.upload_create_params", "UploadCreateParams"),
    "vector_stores.create": ("openai.types.vector_store_create_params", "VectorStoreCreateParams"),
    "vector_stores.file_batches.create": ("openai.types.vector_stores.file_batch_create_params",
                                          "FileBatchCreateParams"),
    "vector_stores.files.create": ("openai.types.vector_stores.file_create_params", "FileCreateParams"),
    "vector_stores.files.update": ("openai.types.vector_stores.file_update_params", "FileUpdateParams"),
    "vector_stores.search": ("openai.types.vector_store_search_params", "VectorStoreSearchParams"),
    "vector_stores.update": ("openai.types.vector_store_update_params", "VectorStoreUpdateParams"),
}
"""The other JSON bodies the bridge takes, by the SDK's name for their method: module and request type."""
ROUTE_UNCHECKED = ("items",)
"""Fields of those bodies whose contents keep today's tolerance (conversation items, as the request's input)."""


def known_fields_table() -> dict[str, Node]:
    """The table for the request's top level."""
    from openai.types.responses import response_create_params

    top = _typed_dict(response_create_params.ResponseCreateParamsBase, set())
    assert isinstance(top, dict)
    for name in UNCHECKED:
        top[name] = None
    for name in EXTENSIONS:
        top.setdefault(name, None)
    for tool, name in OPENED:
        top["tools"][1][1][tool][name] = None
    return dict(sorted(top.items()))


def route_tables() -> dict[str, Node]:
    """The table of each of :data:`ROUTE_PARAMS`' bodies, by its method's name."""
    import importlib

    tables = {}
    for name, (module, cls) in sorted(ROUTE_PARAMS.items()):
        table = _typed_dict(getattr(importlib.import_module(module), cls), set())
        assert isinstance(table, dict)
        tables[name] = {key: None if key in ROUTE_UNCHECKED else node for key, node in sorted(table.items())}
    return tables


def known_fields_source() -> str:
    """The module protocol/known_fields_table.py, as the installed SDK makes it."""
    import openai

    return (f'"""Generated by scripts/render-docs from the openai SDK {openai.__version__} request types\n'
            "(tools/docs/known_fields.py): the fields OpenAI defines for POST /v1/responses, and the values\n"
            'of those it closes, walked by protocol/known_fields.py. Do not edit."""\n\n'
            "from typing import Any\n\n"
            f"REQUEST: dict[str, Any] = {_table(known_fields_table())}\n")


def known_routes_source() -> str:
    """The module protocol/known_routes_table.py, as the installed SDK makes it: the other routes' bodies, apart
    from the request's table so each generated module stays within the house's size bar."""
    import openai

    return (f'"""Generated by scripts/render-docs from the openai SDK {openai.__version__} request types\n'
            "(tools/docs/known_fields.py): the fields OpenAI defines for the other JSON bodies the bridge\n"
            'takes, by the SDK method, walked by protocol/known_fields.py. Do not edit."""\n\n'
            "from typing import Any\n\n"
            f"ROUTES: dict[str, Any] = {_table(route_tables())}\n")


def _table(table: dict[str, Any]) -> str:
    return pprint.pformat(table, width=116, sort_dicts=True, compact=True)


def _node(annotation: Any, seen: set[Any]) -> Node:
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return _union([member for member in get_args(annotation) if member is not type(None)], seen)
    if origin in _LISTS:
        args = get_args(annotation)
        return ("list", _node(args[0], seen)) if args else None
    if typing_extensions.is_typeddict(annotation):
        return _typed_dict(annotation, seen)
    return _enum([annotation])


def _enum(members: list[Any]) -> Node:
    """``("enum", values)`` when every member is a ``Literal`` of strings (None aside), else None (open)."""
    values: set[str] = set()
    for member in members:
        if get_origin(member) is not Literal:
            return None
        args = get_args(member)
        if not all(isinstance(arg, str) for arg in args):
            return None
        values.update(args)
    return ("enum", tuple(sorted(values))) if values else None


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) in (typing.Annotated, typing.Required, typing.NotRequired,
                                     typing_extensions.Required, typing_extensions.NotRequired):
        annotation = get_args(annotation)[0]
    return annotation


def _typed_dict(cls: Any, seen: set[Any]) -> Node:
    if cls in seen:
        return None  # recursive (a compound filter of filters): unchecked below here
    seen = seen | {cls}
    hints = typing.get_type_hints(cls, include_extras=True)
    return {name: _node(hint, seen) for name, hint in hints.items()}


def _type_values(cls: Any) -> tuple[str, ...]:
    hint = _strip(typing.get_type_hints(cls, include_extras=True).get("type"))
    if get_origin(hint) is Literal:
        return tuple(value for value in get_args(hint) if isinstance(value, str))
    return ()


def _union(members: list[Any], seen: set[Any]) -> Node:
    members = [_strip(member) for member in members]
    objects = [member for member in members if typing_extensions.is_typeddict(member)]
    lists = [member for member in members if get_origin(member) in _LISTS]
    unions = [member for member in members if get_origin(member) in (Union, types.UnionType)]
    for inner in unions:  # a union of unions: flattened
        objects += [m for m in map(_strip, get_args(inner)) if typing_extensions.is_typeddict(m)]
        lists += [m for m in map(_strip, get_args(inner)) if get_origin(m) in _LISTS]
    if not objects and not lists:
        flat = [m for member in members for m in (map(_strip, get_args(member)) if member in unions else [member])]
        return _enum([m for m in flat if m is not type(None)])
    if objects and lists:
        return None  # an object or a list: left unchecked rather than guessed
    if lists:
        items = [get_args(member)[0] if get_args(member) else Any for member in lists]
        return ("list", _merge_all([_node(item, seen) for item in items]))
    if not objects:
        return None
    if all(_type_values(member) for member in objects):
        by_type: dict[str, Node] = {}
        for member in objects:
            for value in _type_values(member):
                by_type[value] = _merge(by_type[value], _typed_dict(member, seen)) if value in by_type \
                    else _typed_dict(member, seen)
        return ("type", by_type)
    return _merge_all([_typed_dict(member, seen) for member in objects])


def _merge_all(nodes: list[Node]) -> Node:
    merged = nodes[0]
    for node in nodes[1:]:
        merged = _merge(merged, node)
    return merged


def _merge(a: Node, b: Node) -> Node:
    """Both shapes accepted: known keys are the union; where the two disagree on a shape, unchecked."""
    if a is None or b is None:
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        return {key: _merge(a[key], b[key]) if key in a and key in b else a.get(key, b.get(key))
                for key in sorted(a.keys() | b.keys())}
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "enum":
        return ("enum", tuple(sorted(set(a[1]) | set(b[1]))))
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "list":
        return ("list", _merge(a[1], b[1]))
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "type":
        return ("type", {key: _merge(a[1][key], b[1][key]) if key in a[1] and key in b[1]
                         else a[1].get(key, b[1].get(key)) for key in sorted(a[1].keys() | b[1].keys())})
    return None
