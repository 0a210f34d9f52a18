"""The search options of a ``file_search`` tool (``max_num_results``, ``filters``, ``ranking_options``,
``rewrite_query``): the vector store search's own, checked by its own rules, so the tool and
``POST /v1/vector_stores/{id}/search`` accept and refuse the same values.

The one place the tool loop imports them from.
"""

from __future__ import annotations

from ...services.retrieval.search import SearchOptions, parse_search_options

__all__ = ["SearchOptions", "parse_search_options"]
