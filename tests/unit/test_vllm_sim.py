"""The simulated vLLM replicas of ``scripts/bench routing`` (tools/fakes/vllm_*.py) behave as vLLM's prefix cache
does, or the benchmark measures nothing: a repeated prefix is a hit (and only its full blocks), a changed early
byte misses everything after it, the cache evicts the least recently used past its capacity, the oracle shares one
cache, the prompt followed by the answer is the next turn's prompt, and a real server on a real socket answers
Chat Completions (JSON and SSE with ``cached_tokens``) and exposes vLLM's metric names. No timing is asserted:
the replicas run with zero prefill and decode time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tools.fakes.vllm_cache import (
    BLOCK_BYTES,
    BLOCK_TOKENS,
    PrefixCache,
    block_keys,
    render_answer,
    render_prompt,
    token_count,
)
from tools.fakes.vllm_model import answer
from tools.fakes.vllm_replica import Replica, Timing, bound_port, fleet, serve

pytestmark = pytest.mark.store_free

TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "shell", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]
SYSTEM = {"role": "system", "content": "You are a coding agent. " * 200}


def _shared(one: bytes, other: bytes) -> int:
    """Bytes the two begin with alike."""
    return next(i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b)


def test_repeated_prefix_hits_its_full_blocks_only() -> None:
    cache = PrefixCache(capacity=1000)
    first = render_prompt([SYSTEM, {"role": "user", "content": "fix the bug in a.py"}], TOOLS)
    second = render_prompt([SYSTEM, {"role": "user", "content": "write the docs of b.py"}], TOOLS)
    cache.insert(block_keys(first))
    assert cache.lookup(block_keys(second)) == _shared(first, second) // BLOCK_BYTES  # wholly before the change
    assert cache.lookup(block_keys(first)) == len(first) // BLOCK_BYTES  # all of its full blocks
    assert token_count(first) == -(-len(first) // 4)


def test_an_early_change_misses_every_later_block() -> None:
    cache = PrefixCache(capacity=1000)
    messages = [SYSTEM, {"role": "user", "content": "fix the bug"}]
    cache.insert(block_keys(render_prompt(messages, TOOLS)))
    changed = render_prompt([{"role": "system", "content": "W" + SYSTEM["content"][1:]}, messages[1]], TOOLS)
    assert _shared(changed, render_prompt(messages, TOOLS)) < 200  # the tools and the system header
    assert cache.lookup(block_keys(changed)) == _shared(changed, render_prompt(messages, TOOLS)) // BLOCK_BYTES
    respaced = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "description": "x"}}]
    assert cache.lookup(block_keys(render_prompt(messages, respaced))) == 0  # the tools come first


def test_lru_evicts_the_least_recently_used_past_capacity() -> None:
    cache = PrefixCache(capacity=8)
    one, two = block_keys(b"a" * BLOCK_BYTES * 4), block_keys(b"b" * BLOCK_BYTES * 4)
    cache.insert(one)
    cache.insert(two)
    assert len(cache) == 8 and cache.evicted == 0
    assert cache.lookup(one) == 4  # one is now the most recently used
    cache.insert(block_keys(b"c" * BLOCK_BYTES * 2))
    assert len(cache) == 8 and cache.evicted == 2
    assert cache.lookup(one) == 4
    assert cache.lookup(two) == 0  # its first block went: the rest cannot be reached as a prefix


def test_the_prompt_and_its_answer_begin_the_next_turns_prompt() -> None:
    messages: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": "look around [tools:1 answer:5]"}]
    call = answer(messages, TOOLS, seed=1)
    assert call.tool_calls and call.finish_reason == "tool_calls"
    turn = render_prompt(messages, TOOLS) + render_answer(call.text, call.tool_calls)
    messages += [{"role": "assistant", "content": None, "tool_calls": call.tool_calls},
                 {"role": "tool", "tool_call_id": call.tool_calls[0]["id"], "content": "a.py b.py"}]
    assert render_prompt(messages, TOOLS).startswith(turn)
    text = answer(messages, TOOLS, seed=2)  # its one call answered: the text, of the tokens asked
    assert not text.tool_calls and text.tokens() == 5


@pytest.fixture(scope="module")
async def replicas() -> AsyncIterator[tuple[list[Replica], list[str]]]:
    timing = Timing(prefill_s=0.0, decode_s=0.0, capacity_blocks=64, stream_tokens=4)
    made = fleet(2, timing) + fleet(2, timing, oracle=True)
    runners = await serve(made, [0, 0, 0, 0])
    try:
        yield made, [f"http://127.0.0.1:{bound_port(runner)}" for runner in runners]
    finally:
        for runner in runners:
            await runner.cleanup()


async def _chat(session: aiohttp.ClientSession, base: str, messages: list[dict[str, Any]],
                stream: bool, tools: list[dict[str, Any]] = TOOLS) -> dict[str, Any]:
    """The completion's usage and message, from the JSON answer or put together from the SSE chunks."""
    body = {"model": "sim", "messages": messages, "tools": tools, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    async with session.post(f"{base}/v1/chat/completions", json=body) as response:
        assert response.status == 200
        if not stream:
            data = await response.json()
            return {"usage": data["usage"], "text": data["choices"][0]["message"]["content"]}
        text, usage, done = "", None, False
        async for line in response.content:
            if line == b"data: [DONE]\n":
                done = True
            elif line.startswith(b"data: "):
                chunk = orjson.loads(line[6:])
                usage = chunk.get("usage") or usage
                for choice in chunk["choices"]:
                    text += choice["delta"].get("content") or ""
        assert done
        return {"usage": usage, "text": text}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_replica_reports_cached_tokens_and_metrics(replicas: tuple[list[Replica], list[str]],
                                                           stream: bool) -> None:
    made, urls = replicas
    messages = [{"role": "system", "content": f"stream={stream} " + "tools and rules " * 40},
                {"role": "user", "content": "hello [tools:0 answer:9]"}]
    tools = [{"type": "function", "function": {**TOOLS[0]["function"], "description": f"stream={stream}"}}]
    async with aiohttp.ClientSession() as session:  # its own tools: nothing of the other case's prompt in common
        first = await _chat(session, urls[0], messages, stream, tools)
        again = await _chat(session, urls[0], messages, stream, tools)
        elsewhere = await _chat(session, urls[1], messages, stream, tools)
        prompt = render_prompt(messages, tools)
        assert first["usage"]["prompt_tokens"] == token_count(prompt)
        assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        full = min(len(prompt) // BLOCK_BYTES * BLOCK_TOKENS, token_count(prompt) - 1)  # vLLM computes the last
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == full
        assert elsewhere["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # another replica, its own cache
        assert first["text"] == again["text"] and len(first["text"].split()) == 9
        async with session.get(f"{urls[0]}/metrics") as response:
            metrics = await response.text()
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("vllm:")}
    assert set(values) >= {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                           "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"}
    assert values["vllm:num_requests_running"] == values["vllm:num_requests_waiting"] == 0
    counters = made[0].counters
    assert values["vllm:prefix_cache_hits_total"] == counters.hits >= again["usage"]["prompt_tokens_details"][
        "cached_tokens"]
    assert values["vllm:prefix_cache_queries_total"] == counters.queries
    assert 'model_name="sim"' in metrics


async def test_oracle_replicas_share_one_cache(replicas: tuple[list[Replica], list[str]]) -> None:
    made, urls = replicas
    messages = [{"role": "system", "content": "oracle " * 300}, {"role": "user", "content": "hi"}]
    async with aiohttp.ClientSession() as session:
        await _chat(session, urls[2], messages, False)
        other = await _chat(session, urls[3], messages, True)
    assert other["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # computed on replica 2, a hit on 3
    assert made[2].cache is made[3].cache


async def test_bad_body_is_an_openai_shaped_400(replicas: tuple[list[Replica], list[str]]) -> None:
    _, urls = replicas
    async with aiohttp.ClientSession() as session, session.post(f"{urls[0]}/v1/chat/completions",
                                                                data=b"{not json") as response:
        assert response.status == 400
        assert set((await response.json())["error"]) == {"message", "type", "param", "code"}


def test_replica_app_routes() -> None:
    app = Replica("r", Timing()).app()
    assert isinstance(app, web.Application)
    paths = {resource.canonical for resource in app.router.resources()}
    assert {"/v1/chat/completions", "/v1/models", "/health", "/metrics"} <= paths


async def test_a_session_landing_elsewhere_is_counted_moved(replicas: tuple[list[Replica], list[str]]) -> None:
    made, urls = replicas
    messages = [{"role": "system", "content": "moves " * 100}, {"role": "user", "content": "session 7 task 0: go"}]
    before = [replica.counters.moved for replica in made[:2]]
    async with aiohttp.ClientSession() as session:
        await _chat(session, urls[0], messages, False)
        await _chat(session, urls[0], messages, False)  # the same replica: not moved
        await _chat(session, urls[1], messages, False)  # its previous turn was on replica 0
    assert [replica.counters.moved for replica in made[:2]] == [before[0], before[1] + 1]
    assert made[1].snapshot()["moved"] == made[1].counters.moved
