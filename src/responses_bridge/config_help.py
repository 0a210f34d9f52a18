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
    "workers": "a number, or `auto`",
}

# What a JSON setting looks like, for the line that says the environment's JSON is broken
JSON_EXAMPLES: dict[str, str] = {
    "upstreams": '[{"name": "local", "url": "http://127.0.0.1:8000/v1"}]',
    "models": '[{"match": "qwen*", "upstream": "local"}]',
    "tenants": '{"acme": {"max_concurrent_requests": 10}}',
}

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


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
                      "in SHOWN_TYPES (src/responses_bridge/config_help.py)")


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


def environment_help(fields: dict[str, FieldInfo], names: typing.Callable[[str], list[str]], skip: set[str]) -> str:
    """Every setting not in ``skip`` (those have flags) as ``NAME (default D; TYPE)`` lines, with its description
    when it has one: ``serve --help``'s list of the settings without a flag."""
    lines = []
    for field, info in fields.items():
        if field in skip:
            continue
        line = f"  {' / '.join(names(field))} (default {user_default(info) or 'none'}; {shown_type(field, info)[0]})"
        lines.append(f"{line}: {info.description}" if info.description else line)
    return "\n".join(lines)
