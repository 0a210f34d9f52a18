"""Hybrid search over the SQLite chunk index: options parsing, fusion properties, filters, thresholds, result
shape, and on a labelled set from Python's own docs, that fusion ranks at least as well as either ranker."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.files.filters import Comparison
from responses_bridge.protocol.files.search_options import SearchOptions, parse_search_options
from responses_bridge.services.files.retrieval.embedders import LocalStaticEmbedder, normalise
from responses_bridge.services.files.retrieval.search import (
    fuse,
    query_terms,
    rewrite_query,
    search,
    search_queries,
)
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tools.bench.retrieval import (
    RANKINGS,
    index_sections,
    labelled_sections,
    new_store,
    quality,
)


class WordEmbedder:
    """A bag-of-words embedder: each word hashed to one of 32 axes. Texts sharing words are close, which makes
    the dense ranking of these tests predictable."""

    name = "local:words"
    dimensions = 32

    async def embed(self, texts: list[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                rows[row, hashlib.blake2b(word.encode(), digest_size=2).digest()[0] % self.dimensions] += 1
        return normalise(rows)

    async def aclose(self) -> None:
        return None


T = DEFAULT_TENANT  # the stores new_store makes


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "search.db")) as opened:
        for store_id in ("vs_1", "vs_2"):
            await new_store(SQLiteVectorStoreStore(opened), store_id)
        yield opened


@pytest.fixture
def index(db: SQLiteResponseStore) -> SQLiteChunkIndex:
    return SQLiteChunkIndex(db)


async def add(index: SQLiteChunkIndex, store: str, file_id: str, texts: list[str],
              attributes: dict[str, Any] | None = None) -> None:
    await index.replace_file_chunks(store, file_id, f"{file_id}.txt", texts, await WordEmbedder().embed(texts),
                                    attributes or {})


async def test_results_have_openai_shape_scores_in_range_best_first(index: SQLiteChunkIndex) -> None:
    await add(index, "vs_1", "file_cats", ["cats purr and sleep all day", "a cat chases mice"], {"kind": "pet"})
    await add(index, "vs_1", "file_cars", ["cars need fuel and tyres", "engine oil for cars"])
    results = await search(index, WordEmbedder(), ["vs_1"], "why do cats purr", SearchOptions(), tenant=T)
    assert results[0] == {"file_id": "file_cats", "filename": "file_cats.txt", "score": results[0]["score"],
                          "attributes": {"kind": "pet"},
                          "content": [{"type": "text", "text": "cats purr and sleep all day"}]}
    scores = [result["score"] for result in results]
    assert scores == sorted(scores, reverse=True) and all(0 < score <= 1 for score in scores)


async def test_max_results_threshold_and_filters(index: SQLiteChunkIndex) -> None:
    for number in range(8):
        # the longer the chunk, the weaker its match by both rankers: eight distinct scores
        await add(index, "vs_1", f"file_{number}", ["river bank" + " filler" * number, f"unrelated words {number}"],
                  {"n": number, "even": number % 2 == 0})
    options = SearchOptions(max_num_results=3)
    assert len(await search(index, WordEmbedder(), ["vs_1"], "river bank", options, tenant=T)) == 3
    every = await search(index, WordEmbedder(), ["vs_1"], "river bank", SearchOptions(max_num_results=50), tenant=T)
    cut = every[len(every) // 2]["score"]
    kept = await search(index, WordEmbedder(), ["vs_1"], "river bank",
                        SearchOptions(max_num_results=50, score_threshold=cut), tenant=T)
    assert kept and all(result["score"] >= cut for result in kept) and len(kept) < len(every)
    evens = await search(index, WordEmbedder(), ["vs_1"], "river bank",
                         SearchOptions(max_num_results=50, filters=Comparison("eq", "even", True)), tenant=T)
    assert evens and {result["attributes"]["even"] for result in evens} == {True}
    none = await search(index, WordEmbedder(), ["vs_1"], "river bank",
                        SearchOptions(filters=Comparison("gt", "n", 100)), tenant=T)
    assert none == []


async def test_attribute_changes_reach_filters_at_once(index: SQLiteChunkIndex) -> None:
    await add(index, "vs_1", "file_a", ["quarterly report figures"], {"year": 2023})
    options = SearchOptions(filters=Comparison("eq", "year", 2024))
    assert await search(index, WordEmbedder(), ["vs_1"], "report", options, tenant=T) == []
    await index.set_file_attributes("vs_1", "file_a", {"year": 2024})
    assert [r["attributes"] for r in await search(index, WordEmbedder(), ["vs_1"], "report", options, tenant=T)] == [
        {"year": 2024}]


async def test_several_stores_and_queries(index: SQLiteChunkIndex) -> None:
    await add(index, "vs_1", "file_a", ["apples grow on trees"])
    await add(index, "vs_2", "file_b", ["bananas are yellow"])
    found = await search(index, WordEmbedder(), ["vs_1", "vs_2"], ["apples", "bananas"], SearchOptions(), tenant=T)
    assert {result["file_id"] for result in found} == {"file_a", "file_b"}
    assert await search(index, WordEmbedder(), ["vs_1"], "bananas yellow", SearchOptions(), tenant=T) == []
    assert await search(index, WordEmbedder(), ["vs_missing"], "apples", SearchOptions(), tenant=T) == []
    assert await search(index, WordEmbedder(), ["vs_1"], ["", "  "], SearchOptions(), tenant=T) == []


async def test_ranker_none_is_vectors_alone_and_weights_choose(index: SQLiteChunkIndex) -> None:
    # "zebra" is rare in the store (strong BM25) but shares no hash axis with the query's other words
    await add(index, "vs_1", "file_kw", ["zebra"])
    await add(index, "vs_1", "file_vec", ["striped horse savanna animal", "striped horse savanna"])
    query = "zebra striped horse savanna"
    dense = await search(index, WordEmbedder(), ["vs_1"], query, SearchOptions(ranker="none"), tenant=T)
    text = await search(index, WordEmbedder(), ["vs_1"], query,
                        SearchOptions(embedding_weight=0.0, text_weight=1.0), tenant=T)
    assert dense[0]["file_id"] == "file_vec"
    assert text[0]["file_id"] in {"file_kw", "file_vec"} and all(r["score"] <= 1 for r in text)
    assert any(result["file_id"] == "file_kw" for result in text)


async def test_a_store_of_other_dimensions_is_a_400(index: SQLiteChunkIndex) -> None:
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["text"], normalise(np.ones((1, 5))), {})
    with pytest.raises(APIError) as caught:
        await search(index, WordEmbedder(), ["vs_1"], "text", SearchOptions(), tenant=T)
    assert caught.value.status == 400 and caught.value.param == "vector_store_ids"


def test_rewrite_keeps_the_content_words() -> None:
    assert rewrite_query("What is the height of the main office building?") == "height main office building"
    assert rewrite_query("what is it") == "what is it"  # nothing but stop words: kept as asked
    assert query_terms("The cat, the CAT and the dog") == ["cat", "dog"]
    assert search_queries("Where is the office?", SearchOptions(rewrite_query=True)) == ["office"]
    assert search_queries(["a b", "c"], SearchOptions()) == ["a b", "c"]


def test_options_from_a_request_body() -> None:
    body = {"query": "q", "max_num_results": 7, "rewrite_query": True,
            "filters": {"type": "eq", "key": "a", "value": 1},
            "ranking_options": {"ranker": "default-2024-11-15", "score_threshold": 0.25,
                                "hybrid_search": {"embedding_weight": 3, "text_weight": 1}}}
    assert parse_search_options(body) == SearchOptions(
        max_num_results=7, filters=Comparison("eq", "a", 1), ranker="default-2024-11-15", score_threshold=0.25,
        rewrite_query=True, embedding_weight=0.75, text_weight=0.25)
    assert parse_search_options({"type": "file_search", "vector_store_ids": ["vs_1"]}) == SearchOptions()


@pytest.mark.parametrize(("body", "param"), [
    ({"max_num_results": 0}, "max_num_results"),
    ({"max_num_results": 51}, "max_num_results"),
    ({"max_num_results": "5"}, "max_num_results"),
    ({"max_num_results": True}, "max_num_results"),
    ({"rewrite_query": "yes"}, "rewrite_query"),
    ({"ranking_options": []}, "ranking_options"),
    ({"ranking_options": {"ranker": "best"}}, "ranking_options.ranker"),
    ({"ranking_options": {"score_threshold": 1.5}}, "ranking_options.score_threshold"),
    ({"ranking_options": {"score_threshold": -0.1}}, "ranking_options.score_threshold"),
    ({"ranking_options": {"score_threshold": "0.5"}}, "ranking_options.score_threshold"),
    ({"ranking_options": {"extra": 1}}, "ranking_options"),
    ({"ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 0}}},
     "ranking_options.hybrid_search"),
    ({"ranking_options": {"hybrid_search": {"embedding_weight": -1}}},
     "ranking_options.hybrid_search.embedding_weight"),
    ({"filters": {"type": "eq"}}, "filters.key"),
])
def test_bad_options_are_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_search_options(body)
    assert caught.value.status == 400 and caught.value.param == param


candidates = st.dictionaries(st.integers(0, 30), st.floats(-1, 1, allow_nan=False), max_size=20)
bm25 = st.dictionaries(st.integers(0, 30), st.floats(0.001, 50, allow_nan=False), max_size=20)


@settings(max_examples=300, deadline=None)
@given(candidates, bm25, st.floats(0, 1))
def test_fusion_scores_lie_in_0_1_and_respect_both_rankers(dense: dict[int, float], keyword: dict[int, float],
                                                           weight: float) -> None:
    fused = fuse(list(dense.items()), list(keyword.items()), weight, 1 - weight)
    assert set(fused) == set(dense) | set(keyword)
    assert all(0.0 <= score <= 1.0 for score in fused.values())
    for a in fused:
        for b in fused:
            # a chunk at least as good as another by both rankers never scores lower
            if max(dense.get(a, 0), 0) >= max(dense.get(b, 0), 0) and keyword.get(a, 0) >= keyword.get(b, 0):
                assert fused[a] >= fused[b] - 1e-9
    if keyword and weight == 0:
        assert max(fused.values()) == pytest.approx(1.0)  # the best keyword match takes the whole text share


async def test_on_a_labelled_set_hybrid_ranks_at_least_as_well_as_either(db: SQLiteResponseStore,
                                                                          index: SQLiteChunkIndex) -> None:
    sections = labelled_sections(limit=60)
    embedder = LocalStaticEmbedder()
    await index_sections(SQLiteVectorStoreStore(db), index, embedder, "vs_labelled", sections)
    measured = {name: await quality(index, embedder, "vs_labelled", sections, options)
                for name, options in RANKINGS.items()}
    best_single = max(measured["dense-only"].recall_at_5, measured["keyword-only"].recall_at_5)
    assert measured["hybrid"].recall_at_5 >= best_single, measured
    assert measured["hybrid"].mrr >= max(measured["dense-only"].mrr, measured["keyword-only"].mrr) - 0.02, measured


def test_a_model_made_query_is_cut_to_the_query_limit() -> None:
    """The file_search tool's queries come from the model, unbounded: each is searched as its first
    MAX_QUERY_CHARS characters (a client's own longer query is a 400 in the vector store search instead)."""
    from responses_bridge.protocol.files.search_options import SearchOptions
    from responses_bridge.services.files.retrieval.search import MAX_QUERY_CHARS, search_queries

    huge = "lighthouse keeper " * (MAX_QUERY_CHARS // 4)
    [searched] = search_queries(huge, SearchOptions())
    assert searched == huge[:MAX_QUERY_CHARS]
    assert [len(text) for text in search_queries([huge, "short"], SearchOptions())] == [MAX_QUERY_CHARS, 5]
