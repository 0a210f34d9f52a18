"""Static chunking: OpenAI's validation of ``chunking_strategy`` and the token windows it produces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files.retrieval.chunking import (
    DEFAULT_CHUNKING,
    StaticChunking,
    _encoding,
    chunk_text,
    chunking_strategy_object,
    parse_chunking_strategy,
)


def static(size: object, overlap: object) -> dict:
    return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}


def test_absent_and_auto_mean_the_defaults() -> None:
    assert parse_chunking_strategy(None) == parse_chunking_strategy({"type": "auto"}) == StaticChunking(800, 400)
    assert chunking_strategy_object(DEFAULT_CHUNKING) == static(800, 400)


@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (100, 50), (4096, 2048), (800, 400), (1000, 1)])
def test_static_within_the_rules(size: int, overlap: int) -> None:
    parsed = parse_chunking_strategy(static(size, overlap))
    assert parsed == StaticChunking(size, overlap) and chunking_strategy_object(parsed) == static(size, overlap)


@pytest.mark.parametrize(("value", "param"), [
    (static(99, 0), "chunking_strategy.static.max_chunk_size_tokens"),
    (static(4097, 0), "chunking_strategy.static.max_chunk_size_tokens"),
    (static(100, 51), "chunking_strategy.static.chunk_overlap_tokens"),
    (static(800, -1), "chunking_strategy.static.chunk_overlap_tokens"),
    (static(800.0, 400), "chunking_strategy.static.max_chunk_size_tokens"),
    (static(True, 0), "chunking_strategy.static.max_chunk_size_tokens"),
    (static(800, "400"), "chunking_strategy.static.chunk_overlap_tokens"),
    ({"type": "static", "static": {"max_chunk_size_tokens": 800}}, "chunking_strategy.static.chunk_overlap_tokens"),
    ({"type": "static"}, "chunking_strategy.static"),
    ({"type": "static", "static": [800, 400]}, "chunking_strategy.static"),
    ({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 0, "x": 1}},
     "chunking_strategy.static"),
    ({"type": "auto", "static": {}}, "chunking_strategy"),
    ({"type": "other"}, "chunking_strategy.type"),
    ({}, "chunking_strategy.type"),
    ("auto", "chunking_strategy"),
])
def test_invalid_strategies_are_400_naming_the_field(value: object, param: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_chunking_strategy(value)
    assert caught.value.status == 400 and caught.value.param == param


def test_windows_have_the_size_and_overlap_asked() -> None:
    encoding = _encoding()
    words = " ".join(f"word{number}" for number in range(3000))
    chunks = chunk_text(words, StaticChunking(200, 50))
    token_counts = [len(encoding.encode_ordinary(chunk)) for chunk in chunks]
    assert all(count <= 201 for count in token_counts) and token_counts[0] >= 195
    assert chunks[0].split()[0] == "word0" and chunks[-1].split()[-1] == "word2999"
    # the 50 tokens that end one chunk begin the next
    first, second = encoding.encode_ordinary(chunks[0]), encoding.encode_ordinary(chunks[1])
    assert encoding.decode(first[-45:]).strip() in chunks[1]
    assert len(second) >= 195


@settings(max_examples=40, deadline=None)
@given(st.lists(st.from_regex(r"[a-z]{1,12}", fullmatch=True), max_size=600), st.integers(100, 300), st.data())
def test_every_word_lands_whole_in_some_chunk(words: list[str], size: int, data: st.DataObject) -> None:
    # an overlap longer than any word's tokens: a word cut by one window's end is whole in the next window
    overlap = data.draw(st.integers(12, size // 2))
    chunks = chunk_text(" ".join(words), StaticChunking(size, overlap))
    assert len(chunks) == (1 if words else 0) or len(chunks) > 1
    pieces = [set(chunk.split()) for chunk in chunks]
    for word in words:
        assert any(word in piece for piece in pieces)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_chunks_without_error(text: str) -> None:
    chunks = chunk_text(text, StaticChunking(100, 50))
    assert all(chunk.strip() for chunk in chunks) and bool(chunks) == bool(text.strip())


def test_short_text_is_one_chunk_and_blank_text_none() -> None:
    assert chunk_text("  a short note \n", DEFAULT_CHUNKING) == ["a short note"]
    assert chunk_text(" \n\t ", DEFAULT_CHUNKING) == []
