"""The ``file_search`` tool: search the request's vector stores for the model, show it what was found, and turn
the sources its answer cites into ``file_citation`` annotations.

The loop's path through it::

    options = FileSearchToolOptions.from_tool(tool, position)   # at set-up: a 400 for a bad tool, nothing sent yet
    sources = await run_file_search(searcher, queries, options)  # raises FileSearchError
    sources_for_model(sources, first_number=n)                   # the tool output the model reads
    file_search_results(sources)                                  # the item's ``results`` (include only)
    find_file_citations(answer_text, numbered)                    # file_citation annotations

**The searcher** (:class:`FileSearcher`) is the vector store service; the tool knows nothing of chunks or
embeddings. A search of each query runs over every vector store of the tool; the results of all queries are
merged (one entry per file and text, the best score kept), best first, at most ``max_num_results``.

**How the model cites a file.** :func:`sources_for_model` numbers every retrieved chunk ``[1]``, ``[2]``, … with
its file's name and id and asks the model to cite with those markers, the convention web search results use
(one numbering across all the searches of a response, web and file alike, so a marker means one source). In the
answer, a marker ``[n]`` for a file source, or the file's name in brackets (``[guide.md]``), becomes a
``file_citation`` annotation whose ``index`` is where the marker starts in the output text (Python ``str``
characters). The marker stays in the text: a streamed answer has already gone out when the annotations are made.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ...protocol.errors import APIError, invalid_request
from ...protocol.files.search_options import SearchOptions, parse_search_options

__all__ = [
    "FileSearchError", "FileSearchToolOptions", "FileSearcher", "FileSource", "file_search_call_item",
    "file_search_results", "find_file_citations", "run_file_search", "sources_for_model",
]

MAX_QUERIES = 5  # queries of one call searched; a model listing more gets the first five
MAX_TEXT_CHARS = 8_000  # of one retrieved chunk shown to the model (chunks are ≤ 4096 tokens by construction)


class FileSearcher(Protocol):
    """Searches the tenant's vector stores (the vector store service implements it). Raises ``protocol.errors``
    ``not_found`` (404, param ``vector_store_ids``) for an unknown vector store, another tenant's among them. Each
    result is in the vector store search result shape:
    ``{"file_id", "filename", "score", "attributes", "content": [{"type": "text", "text"}]}``."""

    async def search(self, vector_store_ids: Sequence[str], query: str, options: SearchOptions, *,
                     tenant: str) -> list[dict[str, Any]]: ...


class FileSearchError(Exception):
    """A search that could not be made; the message is for people and for the model."""


@dataclass(frozen=True, slots=True)
class FileSource:
    """One retrieved chunk, with the file it came from."""

    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FileSearchToolOptions:
    """A request's ``file_search`` tool, checked."""

    vector_store_ids: tuple[str, ...]
    options: SearchOptions = field(default_factory=SearchOptions)

    @classmethod
    def from_tool(cls, tool: Mapping[str, Any], position: int) -> FileSearchToolOptions:
        """Raises ``APIError`` 400 naming ``tools[position].<field>`` for a malformed tool."""
        where = f"tools[{position}]"
        ids = tool.get("vector_store_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(one, str) and one for one in ids):
            raise invalid_request(f"Invalid '{where}.vector_store_ids': expected a non-empty array of vector store "
                                  "ids.", param=f"{where}.vector_store_ids",
                                  code="missing_required_parameter" if ids is None else "invalid_value")
        try:
            options = parse_search_options({key: value for key, value in tool.items() if value is not None})
        except APIError as error:
            if error.param is not None:
                error.message = error.message.replace(f"'{error.param}", f"'{where}.{error.param}", 1)
                error.param = f"{where}.{error.param}"
            raise
        return cls(tuple(dict.fromkeys(ids)), options)


def _source(result: Mapping[str, Any]) -> FileSource | None:
    file_id = result.get("file_id")
    if not isinstance(file_id, str):
        return None
    content = result.get("content")
    if isinstance(content, list):
        text = "\n".join(part.get("text") or "" for part in content if isinstance(part, Mapping))
    else:
        text = str(result.get("text") or "")
    score = result.get("score")
    attributes = result.get("attributes")
    return FileSource(file_id=file_id, filename=str(result.get("filename") or file_id),
                      score=float(score) if isinstance(score, (int, float)) else 0.0, text=text,
                      attributes=dict(attributes) if isinstance(attributes, Mapping) else None)


async def run_file_search(searcher: FileSearcher, queries: Sequence[str], options: FileSearchToolOptions, *,
                          tenant: str) -> list[FileSource]:
    """Search every query (concurrently) over the tool's vector stores, as the run's tenant; merged, best first.
    Raises :class:`FileSearchError` for an empty query list or an unknown vector store (another tenant's is
    one)."""
    texts = [" ".join(query.split()) for query in queries if isinstance(query, str)]
    texts = [text for text in dict.fromkeys(texts) if text][:MAX_QUERIES]
    if not texts:
        raise FileSearchError("the search query is empty")
    found = await asyncio.gather(*(searcher.search(options.vector_store_ids, text, options.options, tenant=tenant)
                                   for text in texts), return_exceptions=True)
    for outcome in found:  # one query's failure is the call's failure
        if isinstance(outcome, APIError):
            raise FileSearchError(outcome.message)
        if isinstance(outcome, BaseException):
            raise outcome
    best: dict[tuple[str, str], FileSource] = {}
    for results in found:
        for result in results:  # type: ignore[union-attr]
            source = _source(result) if isinstance(result, Mapping) else None
            if source is None:
                continue
            key = (source.file_id, source.text)
            if key not in best or best[key].score < source.score:
                best[key] = source
    ranked = sorted(best.values(), key=lambda source: source.score, reverse=True)
    return ranked[:options.options.max_num_results]


def sources_for_model(sources: Sequence[FileSource], *, first_number: int = 1) -> str:
    """The tool output the model reads: each chunk under its marker, file name and file id, and how to cite.
    ``first_number``: sources shown so far in the response + 1 (one numbering per response)."""
    if not sources:
        return "The file search found no results."
    lines = ["File search results. Where you use a source, cite it with its marker, e.g. [1], right after the "
             "statement it supports; cite only markers listed here."]
    for number, source in enumerate(sources, first_number):
        text = source.text if len(source.text) <= MAX_TEXT_CHARS else source.text[:MAX_TEXT_CHARS] + "…"
        lines += ["", f"[{number}] {source.filename} (file id {source.file_id})", text]
    return "\n".join(lines)


def file_search_results(sources: Sequence[FileSource]) -> list[dict[str, Any]]:
    """The ``results`` of a ``file_search_call`` item, as the ``openai`` SDK types them."""
    return [{"file_id": source.file_id, "filename": source.filename, "score": source.score, "text": source.text,
             "attributes": source.attributes or {}} for source in sources]


def file_search_call_item(item_id: str, queries: list[str], *,
                          status: Literal["in_progress", "searching", "completed", "incomplete", "failed"],
                          results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A ``file_search_call`` output item; ``results`` only when the request's ``include`` asks for them."""
    return {"id": item_id, "type": "file_search_call", "queries": queries, "status": status, "results": results}


_MARKER = re.compile(r"\[(?:(?P<number>\d{1,3})|(?P<label>[^\[\]\n]{1,255}))\](?!\()")


def find_file_citations(text: str, numbered: Sequence[object]) -> list[dict[str, Any]]:
    """``file_citation`` annotations for the file sources ``text`` cites, in order of appearance. ``numbered``:
    every source of the response in the order they were numbered (entries that are not :class:`FileSource`,
    web results, are skipped), so ``[n]`` is ``numbered[n - 1]``."""
    files = [source for source in numbered if isinstance(source, FileSource)]
    if not files or not text:
        return []
    by_name: dict[str, FileSource] = {}
    for source in files:
        by_name.setdefault(source.filename.casefold(), source)
    annotations: list[dict[str, Any]] = []
    for match in _MARKER.finditer(text):
        cited: object = None
        if match.group("number") is not None:
            number = int(match.group("number"))
            cited = numbered[number - 1] if 1 <= number <= len(numbered) else None
        else:
            cited = by_name.get(match.group("label").strip().casefold())
        if isinstance(cited, FileSource):
            annotations.append({"type": "file_citation", "file_id": cited.file_id, "filename": cited.filename,
                                "index": match.start()})
    return annotations
