"""Tool search run by the server: deferred tools are searched with BM25, and the ones found are loaded.

A request with ``{"type": "tool_search"}`` (``execution: "server"`` or unset) marks some of its functions
``defer_loading: true`` — top-level ``function`` tools, or functions inside a ``namespace`` (Codex sends one per
MCP server). Those are not offered up front (:func:`split_deferred`); the model is offered one search function
instead (:func:`search_tool_function`), whose description names what can be found. When the model calls it, the
loop searches a :class:`ToolIndex`, records a ``tool_search_call`` and a ``tool_search_output`` item
(:func:`tool_search_call_item`, :func:`tool_search_output_item`) and offers the found tools from the next turn
on (:func:`loaded_tools` reads them back from the conversation, so a ``previous_response_id`` continuation keeps
them).

The index is SQLite's FTS5 in an in-memory database — part of Python's standard library, so no dependency — with
its built-in ``bm25()`` ranking over four columns weighted by how much a match there says: the function's name
(split at ``_``, ``-``, ``.`` and camelCase humps) ×5, its namespace's name and description ×2, its description
×1, and its parameters' names and descriptions ×0.5. Words are stemmed (``porter``) and matched case- and
accent-insensitively (``unicode61 remove_diacritics 2``). The query is free text: any of its words may match (OR),
BM25 ranks documents matching more and rarer words first.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson

SEARCH_TOOL_NAME = "tool_search"
DEFAULT_LIMIT = 5
MAX_QUERY_WORDS = 32
_DESCRIPTION_BUDGET = 2000  # characters of "what can be found" in the search function's description

# bm25() weights, in column order: name, namespace, description, parameters.
_WEIGHTS = (5.0, 2.0, 1.0, 0.5)

_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[_\-./:]+")
_WORD = re.compile(r"\w+")


def is_server_tool_search(tool: Mapping[str, Any]) -> bool:
    """The ``tool_search`` tool the bridge runs itself (``execution: "client"`` is the client's own)."""
    return tool.get("type") == "tool_search" and tool.get("execution") in (None, "server")


def _deferred(tool: Any) -> bool:
    return (isinstance(tool, Mapping) and tool.get("type", "function") == "function"
            and tool.get("defer_loading") is True)


def split_deferred(tools: Iterable[Mapping[str, Any]] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tools offered up front, deferred tools). A namespace keeps its non-deferred functions up front (it is
    left out when none remain) and appears among the deferred with only its deferred functions."""
    offered: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    for tool in tools or ():
        kind = tool.get("type")
        if kind == "function" and _deferred(tool):
            deferred.append(dict(tool))
        elif kind == "namespace":
            inner = [t for t in tool.get("tools") or () if isinstance(t, Mapping)]
            later = [dict(t) for t in inner if _deferred(t)]
            now = [dict(t) for t in inner if not _deferred(t)]
            if later:
                deferred.append(dict(tool, tools=later))
            if now or not later:
                offered.append(dict(tool, tools=now))
        else:
            offered.append(dict(tool))
    return offered, deferred


def _words(text: Any) -> str:
    """``getWeatherForecast`` / ``get_weather.forecast`` → ``get Weather Forecast`` (FTS5 lower-cases)."""
    if not isinstance(text, str):
        return ""
    return _SEPARATORS.sub(" ", _HUMP.sub(" ", text))


def _parameter_text(schema: Any, depth: int = 0) -> list[str]:
    """Names and descriptions of a JSON schema's properties (two levels deep: enough for tool arguments)."""
    if not isinstance(schema, Mapping) or depth > 1:
        return []
    parts: list[str] = []
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            parts.append(_words(name))
            if isinstance(sub, Mapping):
                if isinstance(sub.get("description"), str):
                    parts.append(sub["description"])
                parts.extend(_parameter_text(sub, depth + 1))
                parts.extend(_parameter_text(sub.get("items"), depth + 1))
    return parts


def _match_expression(query: str) -> str | None:
    """Free text → an FTS5 expression matching any of its words; None when it has no word. Each word is quoted,
    so nothing in the query can be read as FTS5 syntax."""
    # only the first words count: the rest of a (model-made, unbounded) query is never scanned
    words = [word.lower() for word in _WORD.findall(_words(query[:MAX_QUERY_WORDS * 64]))][:MAX_QUERY_WORDS]
    return " OR ".join(f'"{word}"' for word in dict.fromkeys(words)) or None


class ToolIndex:
    """BM25 over the deferred functions of a request's ``tools`` (:func:`split_deferred` decides which)."""

    def __init__(self, tools: Iterable[Mapping[str, Any]] | None) -> None:
        _, deferred = split_deferred(tools)
        # rowid - 1 → (namespace tool without its functions, or None; the function as the client sent it)
        self._entries: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        rows: list[tuple[int, str, str, str, str]] = []
        for tool in deferred:
            if tool.get("type") == "namespace":
                namespace = {key: value for key, value in tool.items() if key != "tools"}
                namespace_text = f"{_words(tool.get('name'))} {tool.get('description') or ''}"
                functions = tool["tools"]
            else:
                namespace, namespace_text, functions = None, "", [tool]
            for function in functions:
                self._entries.append((namespace, function))
                rows.append((len(self._entries), _words(function.get("name")), namespace_text,
                             function.get("description") if isinstance(function.get("description"), str) else "",
                             " ".join(_parameter_text(function.get("parameters")))))
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute("CREATE VIRTUAL TABLE tools USING fts5(name, namespace, description, parameters, "
                         "tokenize = 'porter unicode61 remove_diacritics 2')")
        self._db.executemany("INSERT INTO tools(rowid, name, namespace, description, parameters) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
        self._namespaces = [tool for tool in deferred if tool.get("type") == "namespace"]
        self._top_level = [tool for tool in deferred if tool.get("type") != "namespace"]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._db.close()

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """The best ``limit`` functions for ``query``, best first, as tool definitions: a top-level function as
        the client sent it; namespaced functions grouped under their namespace (``{"type": "namespace", "name",
        "description", "tools": [the functions found]}``), placed where its best function ranks."""
        expression = _match_expression(query)
        if expression is None or limit <= 0 or not self._entries:
            return []
        weights = ", ".join(str(weight) for weight in _WEIGHTS)
        rowids = [row[0] for row in self._db.execute(
            f"SELECT rowid FROM tools WHERE tools MATCH ? ORDER BY bm25(tools, {weights}), rowid LIMIT ?",
            (expression, limit))]
        found: list[dict[str, Any]] = []
        groups: dict[str, dict[str, Any]] = {}
        for rowid in rowids:
            namespace, function = self._entries[rowid - 1]
            if namespace is None:
                found.append(function)
                continue
            group = groups.get(namespace.get("name") or "")
            if group is None:
                group = groups[namespace.get("name") or ""] = dict(namespace, tools=[])
                found.append(group)
            group["tools"].append(function)
        return found

    def searchable_summary(self) -> str:
        """What can be found, for the search function's description: each namespace's name and description,
        then the top-level functions' names, within a fixed budget of characters."""
        lines: list[str] = []
        for tool in self._namespaces:
            description = " ".join(str(tool.get("description") or "").split())
            lines.append(f"- {tool.get('name')}: {description[:200]}" if description else f"- {tool.get('name')}")
        if self._top_level:
            lines.append("- functions: " + ", ".join(str(tool.get("name")) for tool in self._top_level))
        text = "\n".join(lines)
        return text if len(text) <= _DESCRIPTION_BUDGET else text[:_DESCRIPTION_BUDGET - 1].rstrip() + "…"


def search_tool_function(index: ToolIndex | None = None, *, name: str = SEARCH_TOOL_NAME) -> dict[str, Any]:
    """The function the model is offered for searching (Responses-shaped, like the request's own functions)."""
    description = ("Search for more tools by what you need them to do. The tools found become callable in your "
                   "next step; call this again with other words if they do not fit.")
    if index is not None and len(index):
        description += " What can be found:\n" + index.searchable_summary()
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string",
                                     "description": "Words describing the task or the tool you are looking for"}},
            "required": ["query"],
            "additionalProperties": False,
        },
        "strict": False,
    }


def search_query(arguments: str | Mapping[str, Any] | None) -> str:
    """The query from the model's call of the search function; lenient about arguments that are not the JSON
    asked for (a bare string is taken as the query)."""
    if isinstance(arguments, Mapping):
        value = arguments.get("query")
        return value if isinstance(value, str) else ""
    if not isinstance(arguments, str):
        return ""
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments.strip()
    if isinstance(parsed, Mapping):
        value = parsed.get("query")
        return value if isinstance(value, str) else ""
    return parsed if isinstance(parsed, str) else ""


Status = Literal["in_progress", "completed", "incomplete"]


def tool_search_call_item(item_id: str, *, call_id: str | None, query: str,
                          status: Status = "completed") -> dict[str, Any]:
    """A ``tool_search_call`` output item for a search the server ran."""
    return {"id": item_id, "type": "tool_search_call", "call_id": call_id, "arguments": {"query": query},
            "execution": "server", "status": status}


def tool_search_output_item(item_id: str, *, call_id: str | None, tools: list[dict[str, Any]],
                            status: Status = "completed") -> dict[str, Any]:
    """A ``tool_search_output`` output item: the tool definitions the search loaded."""
    return {"id": item_id, "type": "tool_search_output", "call_id": call_id, "execution": "server",
            "status": status, "tools": tools}


def loaded_tools(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools earlier ``tool_search_output`` items loaded, each once (later namespaces merge their functions
    into the first), to be offered to the model again in later turns."""
    loaded: list[dict[str, Any]] = []
    functions: set[str] = set()
    namespaces: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.get("type") != "tool_search_output":
            continue
        for tool in item.get("tools") or ():
            if not isinstance(tool, Mapping):
                continue
            if tool.get("type") == "namespace":
                name = str(tool.get("name") or "")
                target = namespaces.get(name)
                if target is None:
                    target = namespaces[name] = dict(tool, tools=[])
                    loaded.append(target)
                known = {inner.get("name") for inner in target["tools"]}
                target["tools"].extend(dict(inner) for inner in tool.get("tools") or ()
                                       if isinstance(inner, Mapping) and inner.get("name") not in known)
            elif tool.get("name") not in functions:
                functions.add(str(tool.get("name")))
                loaded.append(dict(tool))
    return loaded
