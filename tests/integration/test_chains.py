"""``previous_response_id`` chains through both doors, the cost of loading them, and a restart on the same database
(responses, chains, conversations and prompts all survive)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import wait_http
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.bridge import Sidecar, start_sidecar
from tests.support.postgres import store_from_env
from tests.support.sdk import async_sdk

WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TURNS = 50
TOOL_TURN = 10  # this turn calls a tool; the next one sends its output


async def build_chain(client: openai.AsyncOpenAI, turns: int) -> tuple[list[str], list[dict]]:
    """``turns`` responses chained by previous_response_id (one of them a tool call answered by the next), and
    the chat messages the upstream must have received before the last turn's input."""
    ids: list[str] = []
    expected: list[dict] = []
    previous = None
    pending_call = None
    for turn in range(1, turns + 1):
        if pending_call is not None:
            request_input: object = [{"type": "function_call_output", "call_id": pending_call, "output": "sunny"}]
            expected_input = {"role": "tool", "tool_call_id": pending_call, "content": "sunny"}
            answer = "Tool result: sunny"
        elif turn == TOOL_TURN:
            request_input = "call get_weather Rome"
            expected_input = {"role": "user", "content": "call get_weather Rome"}
            answer = None
        else:
            request_input = f"turn {turn}"
            expected_input = {"role": "user", "content": f"turn {turn}"}
            answer = f"Echo: turn {turn}"
        response = await client.responses.create(model="fake-model", input=request_input, tools=[WEATHER_TOOL],
                                                 previous_response_id=previous,
                                                 instructions=f"rules of turn {turn}")
        assert response.previous_response_id == previous
        if turn == turns:
            return [*ids, response.id], expected
        expected.append(expected_input)
        pending_call = None
        if answer is None:
            call = response.output[-1]
            assert call.type == "function_call"
            pending_call = call.call_id
            expected.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": call.arguments}}]})
        else:
            assert response.output_text == answer
            expected.append({"role": "assistant", "content": answer})
        ids.append(response.id)
        previous = response.id
    raise AssertionError("unreachable")


async def test_fifty_turn_chain_replays_everything_in_order(client: openai.AsyncOpenAI, upstream_log) -> None:
    ids, expected_history = await build_chain(client, TURNS)
    sent = await upstream_log.last_body()
    messages = sent["messages"]
    # only this turn's instructions; then all 49 earlier turns (a tool call and its output among them); then turn 50
    assert messages[0] == {"role": "system", "content": f"rules of turn {TURNS}"}
    assert messages[1:-1] == expected_history
    assert messages[-1] == {"role": "user", "content": f"turn {TURNS}"}
    assert sum(1 for m in messages if m["role"] == "user") == TURNS - 1  # one turn's input was a tool output
    assert len(ids) == TURNS


async def test_chain_through_a_deleted_or_unknown_response(client: openai.AsyncOpenAI,
                                                           http: aiohttp.ClientSession, upstream_log) -> None:
    first = await client.responses.create(model="fake-model", input="one")
    second = await client.responses.create(model="fake-model", input="two", previous_response_id=first.id)
    await client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="fake-model", input="three", previous_response_id=second.id)
    assert caught.value.body["code"] == "previous_response_not_found"
    assert caught.value.body["param"] == "previous_response_id"
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True,
                                                "previous_response_id": "resp_unknown"}) as raw:
        assert raw.status == 404 and (await raw.json())["error"]["code"] == "previous_response_not_found"
    # a deleted ancestor cuts the chain: history starts after it
    third = await client.responses.create(model="fake-model", input="three", previous_response_id=first.id)
    await client.responses.delete(first.id)
    await client.responses.create(model="fake-model", input="four", previous_response_id=third.id)
    sent = await upstream_log.last_body()
    assert [m["content"] for m in sent["messages"]] == ["three", "Echo: three", "four"]


async def test_store_false_is_never_written_but_can_branch(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="fake-model", input="one")
    unstored = await client.responses.create(model="fake-model", input="two", previous_response_id=first.id,
                                             store=False)
    assert unstored.store is False and unstored.output_text == "Echo: two"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="fake-model", input="three", previous_response_id=unstored.id)


async def test_logprobs_only_when_included(http: aiohttp.ClientSession) -> None:
    async def first_part(body: dict) -> dict:
        async with http.post("/v1/responses", json={"model": "fake-model", "input": "two words", **body}) as raw:
            return (await raw.json())["output"][0]["content"][0]

    assert (await first_part({}))["logprobs"] == []
    included = await first_part({"include": ["message.output_text.logprobs"]})
    assert included["logprobs"] and {"token", "logprob", "bytes", "top_logprobs"} <= set(included["logprobs"][0])


async def test_a_long_chain_costs_the_store_what_a_short_one_does(sidecar: Sidecar) -> None:
    """A request on turn 50 of a chain makes exactly the store operations one on turn 1 makes: one history read,
    whatever the length (each store loads a chain in one statement, tested below and in the store's own tests).
    Counted from the sidecar's ``/metrics`` instead of timed, so a busy machine cannot fail it; three windows
    each, so that a timer of the sidecar's is not taken for the request's (:func:`fewest`)."""
    async with async_sdk(base_url=f"{sidecar.http_url}/v1", api_key="k", max_retries=0) as client, \
            aiohttp.ClientSession(base_url=sidecar.http_url) as http:
        ids, _ = await build_chain(client, TURNS)

        async def operations_of_one_request(previous: str) -> dict[str, float]:
            before = await store_operations(http)
            await client.responses.create(model="fake-model", input="measure", previous_response_id=previous,
                                          store=False)
            after = await store_operations(http)
            return {name: after[name] - before.get(name, 0.0) for name in after if after[name] != before.get(name)}

        rounds = [(await operations_of_one_request(ids[0]), await operations_of_one_request(ids[-2]))
                  for _ in range(3)]
    at_1, at_50 = (fewest([round_[turn] for round_ in rounds]) for turn in (0, 1))
    assert at_1 == at_50, (at_1, at_50)
    assert at_1.get("load_history") == 1, at_1


def fewest(counts: list[dict[str, float]]) -> dict[str, float]:
    """Per operation, the fewest times it ran in any of the windows: the request's own operations run in each,
    while a timer of the sidecar's (retention, sweeps, the ingestion poll), which may fall in one window of a few
    milliseconds, does not fall in all of them."""
    names = set().union(*counts)
    least = {name: min(window.get(name, 0.0) for window in counts) for name in names}
    return {name: value for name, value in least.items() if value}


async def store_operations(http: aiohttp.ClientSession) -> dict[str, float]:
    """How many times each store operation has run, from ``responses_bridge_store_operation_seconds_count``."""
    async with http.get("/metrics") as answer:
        text = await answer.text()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("responses_bridge_store_operation_seconds_count{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('operation="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


async def test_loading_a_long_chain_is_one_query(tmp_path: Path) -> None:
    async with SQLiteResponseStore(str(tmp_path / "chain.db")) as store:
        previous = None
        for n in range(120):
            response = {"id": f"resp_{n}", "object": "response", "created_at": n, "status": "completed",
                        "model": "m", "previous_response_id": previous,
                        "output": [{"type": "message", "id": f"out_{n}", "role": "assistant", "status": "completed",
                                    "content": [{"type": "output_text", "text": str(n), "annotations": []}]}]}
            await store.save_response(response, [{"type": "message", "id": f"in_{n}", "role": "user",
                                                  "content": [{"type": "input_text", "text": str(n)}]}],
                                                      tenant=DEFAULT_TENANT)
            previous = response["id"]
        statements: list[str] = []
        async with store.reading() as conn:
            await conn.set_trace_callback(statements.append)
        history = await store.load_history("resp_119", tenant=DEFAULT_TENANT)
        async with store.reading() as conn:
            await conn.set_trace_callback(None)
    assert [item["id"] for item in history[:4]] == ["in_0", "out_0", "in_1", "out_1"]
    assert len(history) == 240 and history[-1]["id"] == "out_119"
    assert len(statements) == 1, statements


async def test_everything_survives_a_restart(fake_upstream: str, tmp_path: Path, upstream_log) -> None:
    db = str(tmp_path / "restart.db")

    async def start() -> tuple[object, str]:
        process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, extproc=False)
        await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
        return process, f"http://127.0.0.1:{http_port}"

    process, url = await start()
    try:
        async with async_sdk(base_url=f"{url}/v1", api_key="k", max_retries=0) as client, \
                aiohttp.ClientSession(base_url=url) as http:
            first = await client.responses.create(model="fake-model", input="alpha")
            second = await client.responses.create(model="fake-model", input="beta", previous_response_id=first.id)
            conversation = await client.conversations.create(items=[{"role": "user", "content": "hello"}],
                                                             metadata={"k": "v"})
            await client.responses.create(model="fake-model", input="gamma", conversation=conversation.id)
            async with http.post("/v1/prompts", json={"instructions": "v1 {{x}}"}) as raw:
                prompt = await raw.json()
            async with http.post(f"/v1/prompts/{prompt['id']}", json={"instructions": "v2 {{x}}"}) as raw:
                assert raw.status == 200
            async with http.post(f"/v1/prompts/{prompt['id']}/default_version", json={"version": "1"}) as raw:
                assert raw.status == 200
    finally:
        process.stop()
    assert os.path.exists(db) == (store_from_env() == "sqlite")  # on PostgreSQL, no SQLite file instead

    process, url = await start()
    try:
        async with async_sdk(base_url=f"{url}/v1", api_key="k", max_retries=0) as client, \
                aiohttp.ClientSession(base_url=url) as http:
            assert (await client.responses.retrieve(second.id)).output_text == "Echo: beta"
            await client.responses.create(model="fake-model", input="delta", previous_response_id=second.id)
            sent = await upstream_log.last_body()
            assert [m["content"] for m in sent["messages"]] == ["alpha", "Echo: alpha", "beta", "Echo: beta",
                                                                "delta"]
            assert (await client.conversations.retrieve(conversation.id)).metadata == {"k": "v"}
            items = [i async for i in client.conversations.items.list(conversation.id, order="asc")]
            assert [i.content[0].text for i in items] == ["hello", "gamma", "Echo: gamma"]
            response = await client.responses.create(model="fake-model", input="x",
                                                     prompt={"id": prompt["id"], "variables": {"x": "y"}})
            assert response.instructions == "v1 y"
            async with http.get(f"/v1/prompts/{prompt['id']}/versions") as raw:
                assert [v["version"] for v in (await raw.json())["data"]] == ["1", "2"]
    finally:
        process.stop()
