"""Presenting search results: the text the model reads, the ``web_search_call`` item, and the ``url_citation``
annotations found in the model's answer.

How the model cites: :func:`results_for_model` numbers the sources and asks for markdown links to their URLs.
:func:`find_citations` then recognises, left to right and never overlapping,

* a markdown link ``[label](URL)`` — the annotation spans the whole link;
* a bare ``URL`` — the annotation spans the URL (trailing punctuation and an unbalanced ``)`` left out);
* a ``[n]`` marker for the n-th source of ``results`` (small models often write these despite being asked for
  links) — the annotation spans the marker.

Only URLs that are among the results become annotations (compared without fragment, trailing ``/`` or case of
scheme and host), so a URL the model made up is not presented as a source. Indices count Python ``str``
characters (code points) of the output text; ``end_index`` is exclusive, so ``text[start_index:end_index]`` is the
cited span, as in OpenAI's answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from .web_search_base import SearchResult

_CITATION = re.compile(
    r"\[(?P<label>[^\[\]\n]{0,500})\]\((?P<link>https?://[^\s()<>]+(?:\([^\s()<>]*\)[^\s()<>]*)*)\)"
    r"|(?P<bare>https?://[^\s<>\"'\[\]{}`]+)"
    r"|\[(?P<number>\d{1,3})\]",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?*_~'\""


def _url_key(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def _trim_bare(url: str) -> str:
    """A URL written in prose ends before trailing punctuation and before a ``)`` it did not open."""
    while url:
        if url[-1] in _TRAILING or (url[-1] == ")" and url.count("(") < url.count(")")):
            url = url[:-1]
        else:
            break
    return url


def _annotation(start: int, end: int, result: SearchResult) -> dict[str, Any]:
    return {"type": "url_citation", "start_index": start, "end_index": end, "url": result.url,
            "title": result.title}


def find_citations(text: str, results: list[SearchResult],
                   numbered: Sequence[object] | None = None) -> list[dict[str, Any]]:
    """``url_citation`` annotations for the sources ``text`` cites, in order of appearance. ``numbered``: when a
    response's numbering also counts other sources (file search results share it), every source in numbering
    order; a ``[n]`` marker then cites ``numbered[n - 1]`` if that is a web result."""
    if not results or not text:
        return []
    by_url: dict[str, SearchResult] = {}
    for result in results:
        by_url.setdefault(_url_key(result.url), result)
    annotations: list[dict[str, Any]] = []
    for match in _CITATION.finditer(text):
        if match.group("link") is not None:
            cited = by_url.get(_url_key(match.group("link")))
            if cited is not None:
                annotations.append(_annotation(match.start(), match.end(), cited))
        elif match.group("bare") is not None:
            url = _trim_bare(match.group("bare"))
            cited = by_url.get(_url_key(url))
            if cited is not None:
                annotations.append(_annotation(match.start(), match.start() + len(url), cited))
        else:
            number = int(match.group("number"))
            order: Sequence[object] = results if numbered is None else numbered
            source = order[number - 1] if 1 <= number <= len(order) else None
            if isinstance(source, SearchResult):
                annotations.append(_annotation(match.start(), match.end(), source))
    return annotations


def results_for_model(results: list[SearchResult], *, first_number: int = 1) -> str:
    """The tool output the model reads: numbered sources (title, URL, snippet) and how to cite them.

    When one response searches several times, number on (``first_number`` = sources shown so far + 1) and pass
    every search's results, in order, to :func:`find_citations`, so that an ``[n]`` marker means one source."""
    if not results:
        return "The web search found no results."
    lines = ["Web search results. Where you use a source, cite it with a markdown link to its URL, "
             "e.g. [title](URL); cite only URLs listed here."]
    for number, result in enumerate(results, first_number):
        lines.append("")
        lines.append(f"[{number}] {result.title}")
        lines.append(f"URL: {result.url}")
        if result.snippet:
            lines.append(result.snippet)
    return "\n".join(lines)


def web_search_action(query: str, results: list[SearchResult], include_sources: bool) -> dict[str, Any]:
    """The ``action`` of a ``web_search_call`` item; its ``sources`` only when the request's ``include`` has
    ``web_search_call.action.sources`` (as OpenAI does)."""
    action: dict[str, Any] = {"type": "search", "query": query}
    if include_sources:
        action["sources"] = [{"type": "url", "url": result.url} for result in results]
    return action


def web_search_call_item(item_id: str, *, status: Literal["in_progress", "searching", "completed", "failed"],
                         action: dict[str, Any]) -> dict[str, Any]:
    """A ``web_search_call`` output item (``status: failed`` when the search raised ``WebSearchError``)."""
    return {"id": item_id, "type": "web_search_call", "status": status, "action": action}
