"""Tool search run by the server: which tools are deferred, BM25 ranking on a realistic catalogue, and the items
as the openai SDK types them."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import FunctionTool, ResponseToolSearchCall, ResponseToolSearchOutputItem

from responses_bridge.run.tools.tool_search import (
    SEARCH_TOOL_NAME,
    ToolIndex,
    is_server_tool_search,
    loaded_tools,
    search_query,
    search_tool_function,
    split_deferred,
    tool_search_call_item,
    tool_search_output_item,
)
from tests.support.tool_catalog import catalog


@pytest.fixture(scope="module")
def index() -> ToolIndex:
    built = ToolIndex([*catalog(200), {"type": "function", "name": "always_there", "parameters": None,
                                       "strict": None, "description": "weather forecast everywhere"}])
    yield built
    built.close()


def first(found: list[dict[str, Any]]) -> tuple[str | None, str]:
    """(namespace, function name) of the best hit."""
    top = found[0]
    if top["type"] == "namespace":
        return top["name"], top["tools"][0]["name"]
    return None, top["name"]


@pytest.mark.parametrize(("query", "expected"), [
    ("weather forecast for Paris tomorrow", ("weather", "get_forecast")),
    ("post a message in a slack channel", ("slack", "send_message")),
    ("open a pull request to merge my branch", ("github", "create_pull_request")),
    ("show the logs of a crashing pod", ("k8s", "get_pod_logs")),
    ("refund a payment", ("billing", "issue_refund")),
    ("convert 100 euros to dollars at the exchange rate", (None, "convert_currency")),
    ("translate text", (None, "translateText")),  # camelCase name split into words
    ("create a jira ticket", ("jira", "create_ticket")),
    ("list github releases", ("github", "list_release")),
    ("get a postgres backup", ("postgres", "get_backup")),
    ("tail_lines", ("k8s", "get_pod_logs")),  # parameter names are indexed too
])
def test_the_relevant_tool_ranks_first(index: ToolIndex, query: str, expected: tuple[str | None, str]) -> None:
    assert first(index.search(query, 5)) == expected


def test_only_deferred_tools_are_indexed(index: ToolIndex) -> None:
    assert len(index) == 200
    names = [t["name"] for hit in index.search("weather forecast everywhere", 50)
             for t in (hit["tools"] if hit["type"] == "namespace" else [hit])]
    assert "always_there" not in names


def test_results_group_by_namespace_in_rank_order_and_respect_the_limit(index: ToolIndex) -> None:
    found = index.search("github issue", 4)
    assert sum(len(hit["tools"]) if hit["type"] == "namespace" else 1 for hit in found) == 4
    assert found[0]["name"] == "github" and found[0]["description"].startswith("GitHub")
    assert len({hit["name"] for hit in found}) == len(found)  # each namespace once
    assert all(tool["defer_loading"] is True for hit in found for tool in hit.get("tools", [hit]))


@pytest.mark.parametrize("query", ["", "   ", "!!! ???", 'NEAR("a" AND) * -x OR "', "github"])
def test_any_query_text_is_safe(index: ToolIndex, query: str) -> None:
    found = index.search(query, 3)
    assert isinstance(found, list)
    assert (found != []) == (query == "github" or query == 'NEAR("a" AND) * -x OR "')


def test_nothing_deferred_means_an_empty_index() -> None:
    empty = ToolIndex([{"type": "function", "name": "f", "parameters": None, "strict": None}])
    assert len(empty) == 0 and empty.search("f", 5) == []
    empty.close()


def test_split_deferred_keeps_namespaces_partially() -> None:
    tools = [
        {"type": "function", "name": "now", "parameters": None, "strict": None},
        {"type": "function", "name": "later", "parameters": None, "strict": None, "defer_loading": True},
        {"type": "namespace", "name": "mixed", "description": "d", "tools": [
            {"type": "function", "name": "a"}, {"type": "function", "name": "b", "defer_loading": True}]},
        {"type": "namespace", "name": "all_later", "description": "d", "tools": [
            {"type": "function", "name": "c", "defer_loading": True}]},
        {"type": "tool_search"},
        {"type": "web_search"},
    ]
    offered, deferred = split_deferred(tools)
    assert [(t.get("name") or t["type"], [i["name"] for i in t.get("tools", [])]) for t in offered] == [
        ("now", []), ("mixed", ["a"]), ("tool_search", []), ("web_search", [])]
    assert [(t["name"], [i["name"] for i in t.get("tools", [])]) for t in deferred] == [
        ("later", []), ("mixed", ["b"]), ("all_later", ["c"])]
    assert tools[2]["tools"][1]["name"] == "b"  # the request's own dicts are left as they were


def test_server_or_client_tool_search() -> None:
    assert is_server_tool_search({"type": "tool_search"})
    assert is_server_tool_search({"type": "tool_search", "execution": "server"})
    assert not is_server_tool_search({"type": "tool_search", "execution": "client"})
    assert not is_server_tool_search({"type": "function", "name": "tool_search"})


def test_the_search_function_names_what_can_be_found(index: ToolIndex) -> None:
    offered = search_tool_function(index)
    assert offered["name"] == SEARCH_TOOL_NAME
    assert "- github: GitHub: repositories" in offered["description"]
    assert "- functions: convert_currency, translateText" in offered["description"]
    assert len(offered["description"]) < 2400
    FunctionTool.model_validate(offered)
    assert search_tool_function()["parameters"]["required"] == ["query"]


@pytest.mark.parametrize(("arguments", "query"), [
    ('{"query": "slack message"}', "slack message"),
    ({"query": "x"}, "x"),
    ("slack message", "slack message"),
    ('"quoted"', "quoted"),
    ('{"q": 1}', ""),
    (None, ""),
])
def test_search_query_reads_the_model_arguments_leniently(arguments: Any, query: str) -> None:
    assert search_query(arguments) == query


def test_items_validate_against_the_sdk(index: ToolIndex) -> None:
    found = index.search("post a message in a slack channel", 3) + index.search("convert currency", 1)
    call = tool_search_call_item("tsc_1", call_id="call_1", query="slack message")
    output = tool_search_output_item("tso_1", call_id="call_1", tools=found)
    parsed_call = ResponseToolSearchCall.model_validate(call)
    parsed_output = ResponseToolSearchOutputItem.model_validate(output)
    assert (parsed_call.execution, parsed_call.status, parsed_call.arguments) == (
        "server", "completed", {"query": "slack message"})
    assert parsed_output.tools[0].type == "namespace" and parsed_output.tools[0].name == "slack"
    assert parsed_output.tools[-1].type == "function" and parsed_output.tools[-1].name == "convert_currency"
    ResponseToolSearchCall.model_validate(tool_search_call_item("tsc_2", call_id=None, query="", status="in_progress"))


def test_loaded_tools_merge_across_searches() -> None:
    slack = {"type": "namespace", "name": "slack", "description": "S", "tools": [{"type": "function", "name": "a"}]}
    slack_more = dict(slack, tools=[{"type": "function", "name": "a"}, {"type": "function", "name": "b"}])
    top = {"type": "function", "name": "convert_currency"}
    items = [tool_search_output_item("1", call_id="c1", tools=[slack, top]),
             {"type": "message", "role": "user", "content": "hi"},
             tool_search_output_item("2", call_id="c2", tools=[slack_more, top])]
    assert loaded_tools(items) == [
        {"type": "namespace", "name": "slack", "description": "S",
         "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]},
        top]
    assert slack["tools"] == [{"type": "function", "name": "a"}]  # inputs untouched


def test_a_huge_query_reads_only_the_words_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's query of megabytes is not scanned whole: the words past the first MAX_QUERY_WORDS are never used,
    so only their share of the text is read."""
    from responses_bridge.run.tools import tool_search

    scanned: list[int] = []
    pattern = tool_search._WORD

    class Recording:
        def findall(self, text: str) -> list[str]:
            scanned.append(len(text))
            return pattern.findall(text)

    monkeypatch.setattr(tool_search, "_WORD", Recording())
    huge = "weather " * 10 + "zzz " * 2_000_000
    assert tool_search._match_expression(huge) == '"weather" OR "zzz"'
    assert scanned and max(scanned) <= tool_search.MAX_QUERY_WORDS * 64
