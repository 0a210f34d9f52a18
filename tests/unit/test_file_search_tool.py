"""The ``file_search`` tool in the tool loop (run/tools/file_search.py, the call runner, the output builder), with an
in-memory vector store search. The model's turns are recorded Chat Completions chunks fed through a real
OutputBuilder; every event and item is validated with the ``openai`` SDK types, as in test_server_tools_executor.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.request_translation import (
    build_chat_request,
    items_to_messages,
    plan_request_tools,
)
from responses_bridge.protocol.errors import APIError, not_found
from responses_bridge.protocol.files.filters import parse_filters
from responses_bridge.protocol.files.search_options import SearchOptions
from responses_bridge.protocol.responses.request import parse_request
from responses_bridge.run.server_tools import ServerToolServices
from responses_bridge.run.tools.file_search import (
    FileSearchToolOptions,
    FileSource,
    find_file_citations,
    run_file_search,
    sources_for_model,
)
from responses_bridge.run.tools.mcp import MCPLimits, MCPTools
from responses_bridge.run.tools.web_search_base import SearchResult
from responses_bridge.store.base import DEFAULT_TENANT
from tests.unit.test_server_tool_turns import end, text, tool
from tests.unit.test_server_tools_executor import Loop, item

OPTIONS = EngineOptions()

DOCS = {
    "vs_manuals": [
        ("file-pump", "pump-manual.md", "The pump must be primed with water before the first start.",
         {"kind": "manual"}),
        ("file-valve", "valve-guide.txt", "Close the relief valve slowly to avoid water hammer.", {"kind": "guide"}),
    ],
    "vs_notes": [("file-notes", "notes.md", "Priming the pump took ten minutes last time.", {})],
}


class MemorySearcher:
    """A FileSearcher over a few documents: the score is the share of the query's words found in a chunk."""

    def __init__(self, stores: Mapping[str, list[tuple[str, str, str, dict[str, Any]]]] = DOCS) -> None:
        self.stores = stores
        self.calls: list[tuple[tuple[str, ...], str, SearchOptions]] = []
        self.tenants: list[str] = []

    async def search(self, vector_store_ids: Sequence[str], query: str, options: SearchOptions, *,
                     tenant: str) -> list[dict[str, Any]]:
        self.calls.append((tuple(vector_store_ids), query, options))
        self.tenants.append(tenant)
        for store in vector_store_ids:
            if store not in self.stores:
                raise not_found(f"No vector store found with id '{store}'.", param="vector_store_ids")
        words = {word.strip(".,?").lower() for word in query.split()}
        found = []
        for store in vector_store_ids:
            for file_id, filename, chunk, attributes in self.stores[store]:
                chunk_words = {word.strip(".,").lower() for word in chunk.split()}
                score = len(words & chunk_words) / len(words)
                if score > options.score_threshold and score > 0:
                    found.append({"file_id": file_id, "filename": filename, "score": score,
                                  "attributes": attributes, "content": [{"type": "text", "text": chunk}]})
        found.sort(key=lambda result: result["score"], reverse=True)
        return found[:options.max_num_results]


def services(searcher: MemorySearcher | None = None) -> ServerToolServices:
    return ServerToolServices(MCPTools(MCPLimits()), file_search=searcher or MemorySearcher())


def file_tool(**fields: Any) -> dict[str, Any]:
    return {"type": "file_search", "vector_store_ids": ["vs_manuals"], **fields}


# --- the loop ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("include", [True, False])
async def test_a_search_then_an_answer_citing_the_files(stream: bool, include: bool) -> None:
    searcher = MemorySearcher()
    loop = Loop(services(searcher), {
        "input": "How do I prime the pump?", "include": ["file_search_call.results"] if include else [],
        "tools": [file_tool(vector_store_ids=["vs_manuals", "vs_notes"], max_num_results=2)]}, stream=stream)
    await loop.prepare()
    assert loop.offered() == {"file_search"}
    (offered,) = loop.bodies[0]["tools"]
    assert offered["function"]["parameters"]["required"] == ["query"]

    turn, outcome = await loop.step([tool(0, id="call_fs", name="file_search", arguments='{"query": "prime pump"}'),
                                     *end("tool_calls", 10, 5)])
    assert not outcome.end
    (_, query, options), = searcher.calls
    assert query == "prime pump" and options.max_num_results == 2
    assert searcher.tenants == [DEFAULT_TENANT]  # the run's tenant: its vector stores only
    searched = item(loop, turn.calls[0].output_index)
    assert (searched["type"], searched["status"], searched["queries"]) == ("file_search_call", "completed",
                                                                           ["prime pump"])
    if include:
        assert [(result["file_id"], result["filename"]) for result in searched["results"]] == [
            ("file-pump", "pump-manual.md"), ("file-notes", "notes.md")]
        assert searched["results"][0]["text"].startswith("The pump must be primed")
        assert searched["results"][0]["attributes"] == {"kind": "manual"}
        assert 0 <= searched["results"][1]["score"] <= searched["results"][0]["score"] <= 1
    else:
        assert searched["results"] is None
    shown = outcome.results[0].content
    assert "[1] pump-manual.md (file id file-pump)" in shown and "[2] notes.md (file id file-notes)" in shown
    assert "The pump must be primed with water" in shown and "valve" not in shown
    # under the item's id (a file_search_call has no call id), as the next response's history sends it back
    assert loop.bodies[1]["messages"][-1] == {"role": "tool", "tool_call_id": searched["id"], "content": shown}

    answer_text = "Prime it with water first [1]; it takes about ten minutes [2]."
    _, outcome = await loop.step([text(answer_text), *end("stop", 30, 9)])
    assert outcome.end and outcome.reason == "answered"
    events = loop.finish()
    part = loop.response["output"][-1]["content"][0]
    assert part["annotations"] == [
        {"type": "file_citation", "file_id": "file-pump", "filename": "pump-manual.md",
         "index": answer_text.index("[1]")},
        {"type": "file_citation", "file_id": "file-notes", "filename": "notes.md", "index": answer_text.index("[2]")}]
    if stream:
        types = [event["type"] for event in events]
        assert types.count("response.output_text.annotation.added") == 2
        per_item = [event["type"] for event in events if event.get("output_index") == turn.calls[0].output_index]
        assert per_item[:2] == ["response.output_item.added", "response.file_search_call.in_progress"]
        assert "response.file_search_call.searching" in per_item
        assert per_item[-2:] == ["response.file_search_call.completed", "response.output_item.done"]


async def test_an_unknown_vector_store_is_a_failed_call_the_model_reads() -> None:
    loop = Loop(services(), {"input": "x", "tools": [file_tool(vector_store_ids=["vs_gone"])]})
    await loop.prepare()
    turn, outcome = await loop.step([tool(0, id="c1", name="file_search", arguments='{"query": "pump"}'),
                                     *end("tool_calls", 3, 3)])
    assert not outcome.end
    assert outcome.results[0].content == "The file search failed: No vector store found with id 'vs_gone'."
    failed = item(loop, turn.calls[0].output_index)
    assert failed["status"] == "failed" and failed["results"] is None
    await loop.step([text("I could not search the files."), *end("stop", 3, 3)])
    events = loop.finish()
    assert "response.file_search_call.completed" not in [event["type"] for event in events]
    assert loop.response["status"] == "completed"


async def test_a_searcher_that_breaks_is_a_failed_call_not_a_failed_response() -> None:
    class Broken(MemorySearcher):
        async def search(self, vector_store_ids: Sequence[str], query: str, options: SearchOptions, *,
                         tenant: str) -> list[dict[str, Any]]:
            raise RuntimeError("disk on fire")

    loop = Loop(services(Broken()), {"input": "x", "tools": [file_tool()]}, stream=False)
    await loop.prepare()
    _, outcome = await loop.step([tool(0, id="c1", name="file_search", arguments='{"query": "pump"}'),
                                  *end("tool_calls", 3, 3)])
    assert outcome.results[0].content == "The file search failed: the search failed (RuntimeError)."
    await loop.step([text("No luck."), *end("stop", 3, 3)])
    loop.finish()
    assert [entry["status"] for entry in loop.response["output"]] == ["failed", "completed"]


async def test_two_parallel_searches_and_a_web_search_share_one_numbering() -> None:
    class Web:
        name = "memory"

        async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                         allowed_domains: list[str] | None) -> list[SearchResult]:
            return [SearchResult(url="https://example.com/pumps", title="Pumps", snippet="About pumps")]

        async def aclose(self) -> None:
            return None

    searcher = MemorySearcher()
    loop = Loop(ServerToolServices(MCPTools(MCPLimits()), Web(), file_search=searcher),
                {"input": "x", "parallel_tool_calls": False, "tools": [file_tool(), {"type": "web_search"}]})
    await loop.prepare()
    _, outcome = await loop.step([
        tool(0, id="c_fs1", name="file_search", arguments='{"query": "pump primed"}'),
        tool(1, id="c_ws", name="web_search", arguments='{"query": "pumps"}'),
        tool(2, id="c_fs2", name="file_search", arguments='{"queries": ["relief valve", "hammer"]}'),
        *end("tool_calls", 5, 5)])
    assert [call[1] for call in searcher.calls] == ["pump primed", "relief valve", "hammer"]
    first, web, second = (result.content for result in outcome.results)
    assert "[1] pump-manual.md" in first and "[2] Pumps" in web and "[3] valve-guide.txt" in second
    assert item(loop, 2)["queries"] == ["relief valve", "hammer"]
    answer_text = "Prime it [1], see [2], close slowly [valve-guide.txt] or [3]; [4] is no source."
    await loop.step([text(answer_text), *end("stop", 5, 5)])
    loop.finish()
    annotations = loop.response["output"][-1]["content"][0]["annotations"]
    assert [(entry["type"], entry.get("filename") or entry.get("url")) for entry in annotations] == [
        ("file_citation", "pump-manual.md"), ("url_citation", "https://example.com/pumps"),
        ("file_citation", "valve-guide.txt"), ("file_citation", "valve-guide.txt")]
    assert annotations[2]["index"] == answer_text.index("[valve-guide.txt]")


async def test_tool_choice_file_search_forces_the_search_in_the_first_turn() -> None:
    loop = Loop(services(), {"input": "x", "tool_choice": {"type": "file_search"},
                             "tools": [file_tool(), {"type": "function", "name": "other"}]})
    await loop.prepare()
    assert loop.bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "file_search"}}


async def test_max_tool_calls_refuses_a_search_past_the_limit() -> None:
    searcher = MemorySearcher()
    loop = Loop(services(searcher), {"input": "x", "max_tool_calls": 1, "tools": [file_tool()]})
    await loop.prepare()
    turn, outcome = await loop.step([tool(0, id="a", name="file_search", arguments='{"query": "pump"}'),
                                     tool(1, id="b", name="file_search", arguments='{"query": "valve"}'),
                                     *end("tool_calls", 3, 3)])
    assert len(searcher.calls) == 1 and "max_tool_calls" in outcome.results[1].content
    assert [item(loop, call.output_index)["status"] for call in turn.calls] == ["completed", "failed"]
    loop.finish()


# --- request-time checks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tool_fields", "param"), [
    ({"vector_store_ids": None}, "tools[0].vector_store_ids"),
    ({"vector_store_ids": []}, "tools[0].vector_store_ids"),
    ({"vector_store_ids": ["vs_manuals", 3]}, "tools[0].vector_store_ids"),
    ({"max_num_results": 0}, "tools[0].max_num_results"),
    ({"max_num_results": 51}, "tools[0].max_num_results"),
    ({"max_num_results": "5"}, "tools[0].max_num_results"),
    ({"ranking_options": {"score_threshold": 1.5}}, "tools[0].ranking_options.score_threshold"),
    ({"filters": {"type": "eq", "value": "x"}}, "tools[0].filters.key"),
    ({"filters": {"type": "like", "key": "k", "value": "x"}}, "tools[0].filters.type"),
    ({"filters": {"type": "and", "filters": []}}, "tools[0].filters.filters"),
    ({"filters": {"type": "in", "key": "k", "value": "x"}}, "tools[0].filters.value"),
])
async def test_a_malformed_file_search_tool_is_a_400_before_any_search(tool_fields: dict[str, Any],
                                                                       param: str) -> None:
    searcher = MemorySearcher()
    loop = Loop(services(searcher), {"input": "x", "tools": [file_tool(**tool_fields)]})
    with pytest.raises(APIError) as raised:
        await loop.prepare()
    assert (raised.value.status, raised.value.param) == (400, param)
    assert f"'{param}" in raised.value.message
    assert searcher.calls == [] and loop.bodies == []


async def test_two_file_search_tools_are_a_400() -> None:
    loop = Loop(services(), {"input": "x", "tools": [file_tool(), file_tool(vector_store_ids=["vs_notes"])]})
    with pytest.raises(APIError) as raised:
        await loop.prepare()
    assert (raised.value.status, raised.value.param) == (400, "tools[1]")


async def test_the_tool_options_reach_the_searcher() -> None:
    filters = {"type": "and", "filters": [{"type": "eq", "key": "kind", "value": "manual"},
                                          {"type": "in", "key": "year", "value": [2024, 2025]}]}
    options = FileSearchToolOptions.from_tool(file_tool(vector_store_ids=["vs_manuals", "vs_manuals"],
                                                        max_num_results=3, filters=filters,
                                                        ranking_options={"ranker": "auto", "score_threshold": 0.4}),
                                              0)
    assert options.vector_store_ids == ("vs_manuals",)
    assert (options.options.max_num_results, options.options.score_threshold) == (3, 0.4)
    assert options.options.filters == parse_filters(filters)
    searcher = MemorySearcher()
    sources = await run_file_search(searcher, ["pump primed water", "pump primed water", " "], options,
                                    tenant="tenant-b")
    assert len(searcher.calls) == 1 and [source.file_id for source in sources] == ["file-pump"]
    assert searcher.tenants == ["tenant-b"]


def test_without_a_file_searcher_file_search_is_not_served() -> None:
    assert "file_search" not in ServerToolServices(MCPTools(MCPLimits())).served
    assert "file_search" in services().served
    request = parse_request(orjson.dumps({"model": "m", "input": "x", "tools": [file_tool()]}))
    plan = plan_request_tools(request, [], OPTIONS, served=ServerToolServices(MCPTools(MCPLimits())).served)
    assert plan.dropped == ["file_search"]


# --- citations, history -----------------------------------------------------------------------------------------


def test_citations_skip_unknown_markers_links_and_web_sources() -> None:
    pump = FileSource("file-pump", "pump.md", 0.9, "text")
    web = SearchResult(url="https://example.com", title="t", snippet="s")
    text_ = "See [1], [2], [3], [0], [pump.md](https://x.example) and [PUMP.MD]."
    assert find_file_citations(text_, [pump, web]) == [
        {"type": "file_citation", "file_id": "file-pump", "filename": "pump.md", "index": 4},
        {"type": "file_citation", "file_id": "file-pump", "filename": "pump.md", "index": text_.index("[PUMP.MD]")}]
    assert find_file_citations(text_, [web]) == []
    assert sources_for_model([]) == "The file search found no results."


def test_a_stored_file_search_call_replays_as_a_call_and_its_results() -> None:
    request = parse_request(orjson.dumps({"model": "m", "input": "and then?", "tools": [file_tool()]}))
    plan = plan_request_tools(request, [], OPTIONS, served=services().served)
    plan.add_file_search()
    history = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "prime?"}]},
        {"type": "file_search_call", "id": "fs_1", "queries": ["prime pump"], "status": "completed",
         "results": [{"file_id": "file-pump", "filename": "pump.md", "score": 0.9, "text": "Prime with water.",
                      "attributes": {}}]},
        {"type": "file_search_call", "id": "fs_2", "queries": ["a", "b"], "status": "completed", "results": None},
        {"type": "file_search_call", "id": "fs_3", "queries": ["c"], "status": "failed", "results": None},
        {"type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "With water [1].", "annotations": []}]},
    ]
    messages: list[dict[str, Any]] = []
    items_to_messages(history, messages, OPTIONS, plan)
    assert [message["role"] for message in messages] == ["user", "assistant", "tool", "assistant", "tool",
                                                         "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0] == {"id": "fs_1", "type": "function", "function": {
        "name": "file_search", "arguments": '{"query":"prime pump"}'}}
    assert messages[2] == {"role": "tool", "tool_call_id": "fs_1",
                           "content": "File search results:\n\n[1] pump.md (file id file-pump)\nPrime with water."}
    assert messages[3]["tool_calls"][0]["function"]["arguments"] == '{"queries":["a","b"]}'
    assert messages[4]["content"] == "The file search was made; its results are not kept."
    assert messages[6]["content"] == "The file search failed."
    body = build_chat_request(request, history, OPTIONS, plan)
    assert body["messages"][-1] == {"role": "user", "content": "and then?"}


def test_a_file_search_call_input_item_is_checked_and_kept() -> None:
    item_ = {"type": "file_search_call", "id": "fs_9", "queries": ["q"], "status": "completed",
             "results": [{"file_id": "f", "filename": "a.md", "score": 0.5, "text": "t"}]}
    request = parse_request(orjson.dumps({"model": "m", "input": [item_]}))
    assert request.input_items == [item_]
    with pytest.raises(APIError) as raised:
        parse_request(orjson.dumps({"model": "m", "input": [dict(item_, queries="q")]}))
    assert raised.value.param == "input[0].queries"
