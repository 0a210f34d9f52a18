"""The search options of a ``file_search`` tool (``max_num_results``, ``filters``, ``ranking_options``,
``rewrite_query``), checked like OpenAI checks them.

The one place the tool loop gets ``SearchOptions`` and ``parse_search_options`` from, so that the search service's
own definitions replace these by changing this module alone. Until then the rules are the search route's:
``max_num_results`` 1–50, ``ranking_options.ranker`` ``auto`` / ``default-2024-11-15`` / ``none``,
``ranking_options.score_threshold`` 0–1, ``filters`` a comparison (``eq ne gt gte lt lte in nin`` over a ``key``)
or a compound (``and`` / ``or`` over non-empty ``filters``). Bad input is an ``APIError`` 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...protocol.errors import invalid_request

COMPARISONS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
COMPOUNDS = frozenset({"and", "or"})
RANKERS = frozenset({"auto", "default-2024-11-15", "none"})
MAX_RESULTS = 50
MAX_FILTER_DEPTH = 10

Filter = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SearchOptions:
    max_num_results: int = 10
    filters: Filter | None = None
    ranker: str = "auto"
    score_threshold: float = 0.0
    rewrite_query: bool = False


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_filters(value: object, *, param: str = "filters", depth: int = 0) -> Filter:
    """A filter object checked for shape; its evaluation belongs to the search."""
    if not isinstance(value, Mapping):
        raise invalid_request(f"Invalid '{param}': expected an object.", param=param)
    kind = value.get("type")
    if kind in COMPOUNDS:
        inner = value.get("filters")
        if not isinstance(inner, list) or not inner:
            raise invalid_request(f"Invalid '{param}.filters': expected a non-empty array of filters.",
                                  param=f"{param}.filters")
        if depth >= MAX_FILTER_DEPTH:
            raise invalid_request(f"Invalid '{param}': filters nest more than {MAX_FILTER_DEPTH} levels deep.",
                                  param=param)
        for index, entry in enumerate(inner):
            parse_filters(entry, param=f"{param}.filters[{index}]", depth=depth + 1)
        return value
    if kind not in COMPARISONS:
        raise invalid_request(f"Invalid '{param}.type': expected one of {', '.join(sorted(COMPARISONS | COMPOUNDS))}.",
                              param=f"{param}.type")
    if not isinstance(value.get("key"), str) or not value["key"]:
        raise invalid_request(f"Invalid '{param}.key': expected a non-empty string.", param=f"{param}.key")
    operand = value.get("value")
    scalar = isinstance(operand, (str, bool)) or _number(operand)
    if kind in ("in", "nin"):
        if not isinstance(operand, list) or not all(isinstance(v, str) or _number(v) for v in operand):
            raise invalid_request(f"Invalid '{param}.value': '{kind}' compares with an array of strings or numbers.",
                                  param=f"{param}.value")
    elif not scalar:
        raise invalid_request(f"Invalid '{param}.value': expected a string, number or boolean.",
                              param=f"{param}.value")
    return value


def parse_search_options(body: Mapping[str, Any]) -> SearchOptions:
    """The options of a search request body or of a ``file_search`` tool object; unset fields take defaults."""
    count = body.get("max_num_results")
    if count is None:
        count = 10
    elif not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_RESULTS:
        raise invalid_request(f"Invalid 'max_num_results': expected an integer between 1 and {MAX_RESULTS}.",
                              param="max_num_results")
    filters = body.get("filters")
    parsed_filters = parse_filters(filters) if filters is not None else None
    ranker, threshold = "auto", 0.0
    ranking = body.get("ranking_options")
    if ranking is not None:
        if not isinstance(ranking, Mapping):
            raise invalid_request("Invalid 'ranking_options': expected an object.", param="ranking_options")
        if ranking.get("ranker") is not None:
            if ranking["ranker"] not in RANKERS:
                raise invalid_request(f"Invalid 'ranking_options.ranker': expected one of "
                                      f"{', '.join(sorted(RANKERS))}.", param="ranking_options.ranker")
            ranker = ranking["ranker"]
        if ranking.get("score_threshold") is not None:
            value = ranking["score_threshold"]
            if not _number(value) or not 0.0 <= value <= 1.0:
                raise invalid_request("Invalid 'ranking_options.score_threshold': expected a number between 0 "
                                      "and 1.", param="ranking_options.score_threshold")
            threshold = float(value)
    rewrite = body.get("rewrite_query", False)
    if rewrite is None:
        rewrite = False
    if not isinstance(rewrite, bool):
        raise invalid_request("Invalid 'rewrite_query': expected a boolean.", param="rewrite_query")
    return SearchOptions(max_num_results=count, filters=parsed_filters, ranker=ranker, score_threshold=threshold,
                         rewrite_query=rewrite)
