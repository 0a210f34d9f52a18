"""A misspelled field is a 400, as OpenAI answers it, never silently ignored: ``temprature``, a shell tool's
``enviroment`` (the hosted shell would become the client's own), ``network_polciy`` (egress silently off).

The request is walked against the fields OpenAI defines (known_fields_table.py, generated from the openai SDK's
request types by tools/docs/known_fields.py): the top level, every tool and its nested objects, ``text``,
``reasoning``, ``tool_choice`` and the rest. A key the table does not know where it knows the object's keys is
``400 unknown_parameter`` with ``param`` the full path (``tools[0].environment.network_polciy``) and, for a near
miss, the field meant. Objects of a ``type`` the table does not know, free JSON (``metadata``, a function's
``parameters``, a schema) and the input items are not walked: other checks judge those. The walk is one pass over
the request's keys, never its input items, so it costs microseconds however long the input.

The same walk checks the enumerations: a string OpenAI's types close to a set of values (``reasoning.effort``,
``service_tier``, a web search's ``search_context_size``) is ``400 invalid_value`` naming its path and the
supported values when it is another, as OpenAI answers ``reasoning.effort: "bogus"`` — never forwarded upstream nor
echoed. The values come from the SDK's types with the fields, so a new SDK release is a table update.

The other JSON bodies of create and update routes (a container, a vector store, a conversation...) are walked the
same way against their own tables (``route``).

A deployment whose clients send fields newer than the table may set ``unknown_fields: warn``: the field (or the
value of an enumeration) is then accepted and logged once per path and process (never its value).
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

import structlog

from .errors import APIError, invalid_request
from .known_fields_table import REQUEST
from .known_routes_table import ROUTES

log = structlog.get_logger(__name__)

UnknownFields = Literal["reject", "warn"]
_WARNED: set[str] = set()
_MAX_WARNED = 1000


def check_known_fields(raw: dict[str, Any], mode: UnknownFields = "reject", route: str | None = None) -> None:
    """Raise the 400 for the first field OpenAI does not define on its object (``mode: warn``: log it instead).
    ``route``: the body of another method than ``responses.create`` (a key of ``ROUTES``: ``containers.create``)."""
    found = _first_unknown(raw, REQUEST if route is None else ROUTES[route], "")
    if found is None:
        return
    path, known, value = found
    if mode == "reject":
        raise unknown_parameter(path, known) if value is _KEY else invalid_enum_value(path, known, value)
    if path not in _WARNED and len(_WARNED) < _MAX_WARNED:  # once per path; the set never grows unbounded
        _WARNED.add(path)
        log.warning("unknown_request_field_accepted", param=path[:200])


def unknown_parameter(path: str, known: list[str]) -> APIError:
    name = path.rsplit(".", 1)[-1]
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return invalid_request(f"Unknown parameter: '{path[:300]}'.{hint}", param=path[:300], code="unknown_parameter")


def invalid_enum_value(path: str, supported: list[str], value: Any) -> APIError:
    """OpenAI's answer to a value outside an enumeration: ``invalid_value`` naming the field's full path."""
    listed = ", ".join(f"'{item}'" for item in supported)
    if not isinstance(value, str):
        return invalid_request(f"Invalid type for '{path[:300]}': expected one of {listed}.", param=path[:300],
                               code="invalid_type")
    return invalid_request(f"Invalid value for '{path[:300]}': '{value[:100]}'. Supported values are: {listed}.",
                           param=path[:300], code="invalid_value")


_KEY = object()
"""The third member of a finding for a key the table does not know (else: the value outside an enumeration)."""


def _first_unknown(value: Any, node: Any, path: str) -> tuple[str, list[str], Any] | None:
    if node is None:
        return None
    if isinstance(node, tuple):
        kind, inner = node
        if kind == "enum":
            return None if value is None or value in inner else (path, list(inner), value)
        if kind == "list":
            if isinstance(value, list):
                for index, item in enumerate(value):
                    found = _first_unknown(item, inner, f"{path}[{index}]")
                    if found is not None:
                        return found
            return None
        if isinstance(value, dict):  # kind == "type": the object's own type picks its keys
            kind_of = value.get("type")
            chosen = inner.get(kind_of) if isinstance(kind_of, str) else None
            return _first_unknown(value, chosen, path) if chosen is not None else None
        return None
    if not isinstance(value, dict):
        return None
    for key, item in value.items():  # a key's path is spelled only for a finding or a table below it: a plain
        if key not in node:  # request's keys are leaves, checked without a string or a call each
            return (f"{path}.{key}" if path else str(key)), list(node), _KEY
        inner = node[key]
        if inner is not None:
            found = _first_unknown(item, inner, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    return None
