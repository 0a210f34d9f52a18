"""No silent typos: a field OpenAI does not define where it appears is a 400 ``unknown_parameter`` naming its full
path (protocol/known_fields.py), through both doors — the five misspellings a new user made, each of which used to
answer 200 with the field ignored (the hosted shell silently the client's own, egress silently off) — while a
request using the fields OpenAI defines is served. Nothing of a refused request is stored."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_tenancy_files_store.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}
MISSPELLED: list[tuple[dict[str, Any], str, str]] = [
    ({"temprature": 0.2}, "temprature", "temperature"),
    ({"tools": [{"type": "shell", "enviroment": {"type": "container_auto"}}]}, "tools[0].enviroment", "environment"),
    ({"tools": [{"type": "shell", "environment": {"type": "container_auto", "network_polciy": {"type": "disabled"}}}]},
     "tools[0].environment.network_polciy", "network_policy"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto", "memroy_limit": "1g"}}]},
     "tools[0].container.memroy_limit", "memory_limit"),
    ({"tools": [{"type": "function", "name": "f", "paramters": {"type": "object"}}]}, "tools[0].paramters",
     "parameters"),
]


@pytest.mark.parametrize(("extra", "param", "meant"), MISSPELLED, ids=[case[1] for case in MISSPELLED])
async def test_a_misspelled_field_is_a_400_naming_its_path(http: aiohttp.ClientSession, extra: dict[str, Any],
                                                           param: str, meant: str) -> None:
    body = {"model": MODEL, "input": "hi", "store": True, **extra}
    async with http.post("/v1/responses", json=body) as answer:
        assert answer.status == 400, await answer.text()
        error = (await answer.json())["error"]
    assert error == {"message": f"Unknown parameter: '{param}'. Did you mean '{meant}'?", "type":
                     "invalid_request_error", "param": param, "code": "unknown_parameter"}


async def test_a_stream_with_a_misspelled_field_is_refused_before_it_opens(http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "input": "hi", "stream": True, "text": {"format": {"type": "text"}, "verbosty": "low"}}
    async with http.post("/v1/responses", json=body) as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["param"] == "text.verbosty"


async def test_the_fields_openai_defines_are_accepted(http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "input": [{"role": "user", "content": "hi"}], "instructions": "Be brief.",
            "temperature": 0.5, "top_p": 0.9, "max_output_tokens": 64, "max_tool_calls": 3, "metadata": {"k": "v"},
            "parallel_tool_calls": True, "store": False, "truncation": "auto", "user": "u-1",
            "safety_identifier": "s-1", "prompt_cache_key": "p-1", "service_tier": "auto", "top_logprobs": 0,
            "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "out", "strict": True, "schema": {
                "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                "additionalProperties": False}}, "verbosity": "low"},
            "tool_choice": {"type": "function", "name": "lookup"},
            "tools": [{"type": "function", "name": "lookup", "description": "Look up.", "strict": True,
                       "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}],
            "stream": False, "seed": 7}
    async with http.post("/v1/responses", json=body) as answer:
        assert answer.status == 200, await answer.text()


ROUTE_MISSPELLINGS: list[tuple[str, dict[str, Any], str, str]] = [
    ("/v1/containers", {"name": "c", "memory_limt": "1g"}, "memory_limt", "memory_limit"),
    ("/v1/containers", {"name": "c", "expires_after": {"anchor": "last_active_at", "minuets": 5}},
     "expires_after.minuets", "minutes"),
    ("/v1/vector_stores", {"name": "v", "metdata": {}}, "metdata", "metadata"),
    ("/v1/conversations", {"metadata": {}, "itmes": []}, "itmes", "items"),
]


@pytest.mark.parametrize(("path", "body", "param", "meant"), ROUTE_MISSPELLINGS,
                         ids=[f"{case[0]}:{case[2]}" for case in ROUTE_MISSPELLINGS])
async def test_create_routes_refuse_a_misspelled_field_too(http: aiohttp.ClientSession, path: str,
                                                            body: dict[str, Any], param: str, meant: str) -> None:
    """Every create and update route checks its body against OpenAI's fields for it, not only /v1/responses."""
    async with http.post(path, json=body) as answer:
        assert answer.status == 400, await answer.text()
        error = (await answer.json())["error"]
    assert (error["param"], error["code"]) == (param, "unknown_parameter")
    assert f"Did you mean '{meant}'?" in error["message"]


async def test_update_routes_refuse_a_misspelled_field_and_take_the_defined_ones(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/vector_stores", json={"name": "v", "metadata": {"a": "b"}}) as answer:
        assert answer.status == 200, await answer.text()
        store = await answer.json()
    async with http.post(f"/v1/vector_stores/{store['id']}", json={"nmae": "w"}) as answer:
        assert answer.status == 400 and (await answer.json())["error"]["param"] == "nmae"
    async with http.post(f"/v1/vector_stores/{store['id']}", json={"name": "w", "metadata": {}}) as answer:
        assert answer.status == 200 and (await answer.json())["name"] == "w"
    async with http.post("/v1/conversations", json={"metadata": {"k": "v"}}) as answer:
        assert answer.status == 200
        conversation = await answer.json()
    async with http.post(f"/v1/conversations/{conversation['id']}", json={"metdata": {}}) as answer:
        assert answer.status == 400 and (await answer.json())["error"]["param"] == "metdata"
    async with http.post(f"/v1/conversations/{conversation['id']}/items",
                         json={"items": [{"type": "message", "role": "user", "content": "hi"}]}) as answer:
        assert answer.status == 200, await answer.text()
