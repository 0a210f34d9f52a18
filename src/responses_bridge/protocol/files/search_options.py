"""The options of a vector store search (``max_num_results``, ``filters``, ``ranking_options``,
``rewrite_query``): one shape and one parser, so ``POST /v1/vector_stores/{id}/search`` and the ``file_search``
tool accept and refuse the same values. A wire shape, hence here: the tool loop (run/) and the search service
(services/) both read it, and neither imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import invalid_request
from .filters import Filter, parse_filters

RANKERS = frozenset({"auto", "default-2024-11-15", "none"})
MAX_RESULTS = 50


@dataclass(frozen=True, slots=True)
class SearchOptions:
    max_num_results: int = 10  # 1..50
    filters: Filter | None = None
    ranker: str = "auto"  # "auto" | "default-2024-11-15" | "none"
    score_threshold: float = 0.0  # 0..1
    rewrite_query: bool = False
    embedding_weight: float | None = None  # ranking_options.hybrid_search; None: the embedder's default
    text_weight: float | None = None


def _number(value: object, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise invalid_request(f"'{param}' must be a number between {low:g} and {high:g}.", param=param)
    return float(value)


def _hybrid(value: object) -> tuple[float, float]:
    param = "ranking_options.hybrid_search"
    if not isinstance(value, dict):
        raise invalid_request(f"'{param}' must be an object.", param=param)
    unknown = set(value) - {"embedding_weight", "text_weight"}
    if unknown:
        raise invalid_request(f"Unknown field '{sorted(unknown)[0]}' in '{param}'.", param=param)
    dense = _number(value.get("embedding_weight", 0), f"{param}.embedding_weight", 0, 1e6)
    text = _number(value.get("text_weight", 0), f"{param}.text_weight", 0, 1e6)
    if dense + text <= 0:
        raise invalid_request(f"'{param}' needs a positive embedding_weight or text_weight.", param=param)
    return dense / (dense + text), text / (dense + text)


def parse_search_options(body: Mapping[str, Any]) -> SearchOptions:
    """The search options of a search request body or a ``file_search`` tool object (other fields are the
    caller's); a 400 naming the field for anything out of range or of the wrong type."""
    max_num_results = body.get("max_num_results", 10)
    if isinstance(max_num_results, bool) or not isinstance(max_num_results, int) \
            or not 1 <= max_num_results <= MAX_RESULTS:
        raise invalid_request(f"'max_num_results' must be an integer between 1 and {MAX_RESULTS}.",
                              param="max_num_results")
    filters = body.get("filters")
    parsed_filters = parse_filters(filters) if filters is not None else None
    rewrite_query = body.get("rewrite_query", False)
    if rewrite_query is None:
        rewrite_query = False
    if not isinstance(rewrite_query, bool):
        raise invalid_request("'rewrite_query' must be a boolean.", param="rewrite_query")
    ranker, threshold = "auto", 0.0
    weights: tuple[float | None, float | None] = (None, None)
    ranking = body.get("ranking_options")
    if ranking is not None:
        if not isinstance(ranking, dict):
            raise invalid_request("'ranking_options' must be an object.", param="ranking_options")
        unknown = set(ranking) - {"ranker", "score_threshold", "hybrid_search"}
        if unknown:
            raise invalid_request(f"Unknown field '{sorted(unknown)[0]}' in 'ranking_options'.",
                                  param="ranking_options")
        ranker = ranking.get("ranker", "auto")
        if ranker not in RANKERS:
            raise invalid_request(f"'ranking_options.ranker' must be one of {', '.join(sorted(RANKERS))}.",
                                  param="ranking_options.ranker")
        threshold = _number(ranking.get("score_threshold", 0.0), "ranking_options.score_threshold", 0, 1)
        if ranking.get("hybrid_search") is not None:
            weights = _hybrid(ranking["hybrid_search"])
    return SearchOptions(max_num_results=max_num_results, filters=parsed_filters, ranker=str(ranker),
                         score_threshold=threshold, rewrite_query=rewrite_query, embedding_weight=weights[0],
                         text_weight=weights[1])
