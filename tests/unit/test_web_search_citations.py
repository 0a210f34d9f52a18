"""What the model reads, the web_search_call item, and url_citation annotations, checked against the SDK's types."""

from __future__ import annotations

import pytest
from openai.types.responses import ResponseFunctionWebSearch, ResponseOutputText

from responses_bridge.run.tools.web_search import (
    SearchResult,
    find_citations,
    results_for_model,
    web_search_action,
    web_search_call_item,
)

RESULTS = [
    SearchResult("https://example.com/eclipse", "Eclipse guide", "When and where to watch."),
    SearchResult("https://docs.example.org/Wiki/Tide_(physics)", "Tide (physics)", "Tides are…"),
    SearchResult("https://news.example.net/ün/", "Nachrichten — ün", "Überblick."),
]


def cited(text: str, annotations: list[dict]) -> list[tuple[str, str]]:
    return [(text[a["start_index"]:a["end_index"]], a["url"]) for a in annotations]


def test_markdown_links_bare_urls_and_markers_in_unicode_text() -> None:
    text = ("🌑 Die Sonnenfinsternis — siehe [Eclipse guide](https://example.com/eclipse). "
            "潮汐について: https://docs.example.org/Wiki/Tide_(physics), und [3]. "
            "Erfunden: https://made.up/x and [9].")
    annotations = find_citations(text, RESULTS)
    assert cited(text, annotations) == [
        ("[Eclipse guide](https://example.com/eclipse)", "https://example.com/eclipse"),
        ("https://docs.example.org/Wiki/Tide_(physics)", "https://docs.example.org/Wiki/Tide_(physics)"),
        ("[3]", "https://news.example.net/ün/"),
    ]
    assert [a["title"] for a in annotations] == ["Eclipse guide", "Tide (physics)", "Nachrichten — ün"]
    part = ResponseOutputText.model_validate({"type": "output_text", "text": text, "annotations": annotations})
    assert [a.type for a in part.annotations] == ["url_citation"] * 3


def test_only_cited_results_are_annotated_and_urls_compare_loosely() -> None:
    text = "See HTTPS://EXAMPLE.COM/eclipse/#when for the times (and https://example.com/eclipse?x=1)."
    annotations = find_citations(text, RESULTS)
    assert cited(text, annotations) == [("HTTPS://EXAMPLE.COM/eclipse/#when", "https://example.com/eclipse")]


def test_a_bare_url_ends_before_punctuation_and_an_unopened_parenthesis() -> None:
    text = "(source: https://example.com/eclipse). Also https://news.example.net/ün/!"
    assert cited(text, find_citations(text, RESULTS)) == [
        ("https://example.com/eclipse", "https://example.com/eclipse"),
        ("https://news.example.net/ün/", "https://news.example.net/ün/"),
    ]


def test_no_results_or_no_text_means_no_annotations() -> None:
    assert find_citations("see [1] https://example.com/eclipse", []) == []
    assert find_citations("", RESULTS) == []
    assert find_citations("nothing cited here, not even [0] or [4]", RESULTS) == []


def test_results_for_model_numbers_sources_and_asks_for_links() -> None:
    text = results_for_model(RESULTS)
    assert "markdown link" in text
    assert "[1] Eclipse guide\nURL: https://example.com/eclipse\nWhen and where to watch." in text
    assert "[3] Nachrichten — ün\nURL: https://news.example.net/ün/" in text
    assert results_for_model([]) == "The web search found no results."


def test_numbering_goes_on_across_searches() -> None:
    second = [SearchResult("https://later.example/x", "Later", "")]
    assert "[4] Later\nURL: https://later.example/x" in results_for_model(second, first_number=4)
    text = "Both [1] and [4]."
    assert cited(text, find_citations(text, RESULTS + second)) == [
        ("[1]", "https://example.com/eclipse"), ("[4]", "https://later.example/x")]


@pytest.mark.parametrize("include_sources", [True, False])
@pytest.mark.parametrize("status", ["in_progress", "searching", "completed", "failed"])
def test_web_search_call_items_validate(include_sources: bool, status: str) -> None:
    action = web_search_action("solar eclipse", RESULTS, include_sources)
    item = web_search_call_item("ws_1", status=status, action=action)  # type: ignore[arg-type]
    parsed = ResponseFunctionWebSearch.model_validate(item)
    assert parsed.status == status and parsed.action.type == "search" and parsed.action.query == "solar eclipse"
    if include_sources:
        assert [s.url for s in parsed.action.sources] == [r.url for r in RESULTS]
    else:
        assert "sources" not in item["action"]
