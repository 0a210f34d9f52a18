"""Vector store search: dense vectors and BM25 keywords, fused into one ranking with scores in [0, 1].

For each query and store, the index gives two candidate lists: the chunks nearest the query's vector (cosine
similarity) and the chunks best matching its words (FTS5 BM25). A chunk's score is the weighted sum

    embedding_weight * max(cosine, 0) + text_weight * bm25 / best_bm25_of_this_query

with the weights summing to 1, so scores lie in [0, 1] and the best keyword match of a query gets the full text
share. BM25 has no fixed scale, hence the per-query normalisation; cosine has one, so it is kept as is (a store
with no chunk close to the query scores low, and ``score_threshold`` can drop it).

The default weights were chosen on ``scripts/bench retrieval``'s labelled set: with the local static model's
vectors, 0.3 dense / 0.7 keyword gave the best recall@5 and MRR (the static vectors rank less well alone than
BM25; fused they add what BM25 misses); with an upstream model, whose vectors are usually the better ranker,
0.5 / 0.5 (an embedder states its share as ``embedding_weight``). A request can set them
(``ranking_options.hybrid_search``). ``ranker: "none"`` ranks by vectors alone.

Several queries (``query`` as a list) each run; a chunk keeps its best score. Filters are evaluated on the files'
attributes first and both candidate lists are drawn from the files that pass.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from ....protocol.errors import invalid_request
from ....protocol.files.filters import matches
from ....protocol.files.search_options import SearchOptions
from ....store.base import ChunkIndex
from ....store.records import DimensionMismatch
from .embedders import Embedder

CANDIDATES = 100  # per list, per query and store: enough that fusion sees what either ranker puts in the top 50
DEFAULT_EMBEDDING_WEIGHT = 0.5  # an embedder may prefer another share: its ``embedding_weight`` attribute

# Words that carry no topic: dropped from keyword queries (they match nearly every chunk, and scoring every
# chunk of a large store costs more than the rest of a search) and from rewritten queries.
_STOP_WORDS = """
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just let me more most my myself no nor not now of off
on once only or other our ours ourselves out over own please same she should so some such tell than that the
their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves know like want
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
_WORD = re.compile(r"\w+")
MAX_QUERY_CHARS = 16_384
"""Characters of one search query (about 4,000 tokens: a page of text). A query is tokenized, embedded and
matched word by word, all on the request's time; one of 30 MB once held the event loop for 12-19 seconds. A
client's longer query is a 400 (``string_above_max_length``); a model's (the file_search tool) is cut here."""
MAX_QUERY_TERMS = 32  # words of one query the keyword search looks for (the first ones)


def query_terms(query: str) -> list[str]:
    """The words of ``query`` a keyword search looks for: lower-cased, stop words out (all of them kept when
    the query is nothing but stop words), each once."""
    words = [word.lower() for word in _WORD.findall(query)]
    kept = [word for word in words if word not in STOP_WORDS] or words
    return list(dict.fromkeys(kept))


def rewrite_query(query: str) -> str:
    """The query as a search engine wants it: its content words, in order, without the question around them
    ("What is the height of the main office?" -> "height main office"). Deterministic and local, so a rewritten
    search costs no model call and always gives the same ``search_query`` back."""
    return " ".join(query_terms(query)) or query.strip()


def search_queries(query: str | Sequence[str], options: SearchOptions) -> list[str]:
    """The queries actually searched (what a search answer reports as ``search_query``)."""
    queries = [text[:MAX_QUERY_CHARS] for text in ([query] if isinstance(query, str) else query)]
    if options.rewrite_query:
        queries = [rewrite_query(text) for text in queries]
    return [text for text in queries if text.strip()]


def _weights(options: SearchOptions, embedder: Embedder) -> tuple[float, float]:
    if options.ranker == "none":
        return 1.0, 0.0
    if options.embedding_weight is not None and options.text_weight is not None:
        return options.embedding_weight, options.text_weight
    dense = float(getattr(embedder, "embedding_weight", DEFAULT_EMBEDDING_WEIGHT))
    return dense, 1.0 - dense


def fuse(dense: Sequence[tuple[int, float]], keyword: Sequence[tuple[int, float]], dense_weight: float,
         text_weight: float) -> dict[int, float]:
    """Chunk id -> fused score in [0, 1], over the union of both candidate lists (a chunk missing from one list
    gets nothing from that ranker: it ranked below its top ``CANDIDATES``)."""
    cosine = dict(dense)
    best = max((score for _, score in keyword), default=0.0)
    text = {chunk: score / best for chunk, score in keyword} if best > 0 else {}
    fused: dict[int, float] = {}
    for chunk in cosine.keys() | text.keys():
        score = dense_weight * min(max(cosine.get(chunk, 0.0), 0.0), 1.0) + text_weight * text.get(chunk, 0.0)
        fused[chunk] = min(max(score, 0.0), 1.0)
    return fused


async def search(index: ChunkIndex, embedder: Embedder, vector_store_ids: Sequence[str], query: str | Sequence[str],
                 options: SearchOptions, *, tenant: str) -> list[dict[str, Any]]:
    """The best chunks of the stores for the query, in OpenAI's vector store search result shape, best first.
    Only the tenant's stores are read: another tenant's finds nothing (the index checks the owner)."""
    queries = search_queries(query, options)
    if not queries or not vector_store_ids:
        return []
    dense_weight, text_weight = _weights(options, embedder)
    vectors = await embedder.embed(queries) if dense_weight > 0 else None
    limit = max(CANDIDATES, options.max_num_results)
    best: dict[int, tuple[float, str]] = {}  # chunk id -> (score, vector store id)
    files: dict[str, dict[str, Any]] = {}  # "store\x00file" -> file facts
    for store_id in dict.fromkeys(vector_store_ids):
        indexed = await index.indexed_files(store_id, tenant=tenant)
        if options.filters is not None:
            allowed: list[str] | None = [file_id for file_id, facts in indexed.items()
                                         if matches(options.filters, facts.attributes)]
            if not allowed:
                continue
        else:
            allowed = None
        for file_id, facts in indexed.items():
            files[f"{store_id}\x00{file_id}"] = {"filename": facts.filename, "attributes": facts.attributes}
        for position, text in enumerate(queries):
            dense_task = (index.dense_candidates(store_id, vectors[position], allowed, limit, tenant=tenant)
                          if vectors is not None else _nothing())
            keyword_task = (index.keyword_candidates(store_id, query_terms(text)[:MAX_QUERY_TERMS], allowed, limit,
                                                     tenant=tenant)
                            if text_weight > 0 else _nothing())
            try:
                dense, keyword = await asyncio.gather(dense_task, keyword_task)
            except DimensionMismatch as exc:
                raise invalid_request(f"Vector store {store_id} was built by another embedder: {exc}.",
                                      param="vector_store_ids") from exc
            for chunk, score in fuse(dense, keyword, dense_weight, text_weight).items():
                if chunk not in best or score > best[chunk][0]:
                    best[chunk] = (score, store_id)
    ranked = sorted(((score, chunk, store) for chunk, (score, store) in best.items()
                     if score >= options.score_threshold and score > 0), key=lambda entry: (-entry[0], entry[1]))
    ranked = ranked[:options.max_num_results]
    rows = await index.chunk_rows([chunk for _, chunk, _ in ranked], tenant=tenant)
    results: list[dict[str, Any]] = []
    for score, chunk, store in ranked:
        row = rows.get(chunk)
        if row is None:  # deleted between ranking and reading
            continue
        source = files.get(f"{store}\x00{row.file_id}", {"filename": "", "attributes": {}})
        results.append({"file_id": row.file_id, "filename": source["filename"], "score": round(score, 6),
                        # a copy: the index's cached attributes stay untouched whatever the caller does
                        "attributes": dict(source["attributes"]),
                        "content": [{"type": "text", "text": row.text}]})
    return results


async def _nothing() -> list[tuple[int, float]]:
    return []
