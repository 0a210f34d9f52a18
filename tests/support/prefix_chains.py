"""What the prefix-cache tests (tests/integration/test_prefix_chains.py, test_prefix_tool_loop.py) share: a client
that chains turns at one door and keeps the Chat Completions bodies the fake upstream received for each, the model's
answer asked again of the same (deterministic) fake, and the checks that turn n+1's prompt begins with exactly turn
n's and continues with what the model said."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson

from tests.support.bridge import Sidecar, UpstreamLog

INSTRUCTIONS = "You are a careful assistant. Answer briefly."
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                          "required": ["city", "unit"]}}
TIME = {"type": "function", "name": "get_time", "description": "Time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
SPACED_ARGS = '{"unit": "C",  "city": "Rome"}'  # key order and spacing no re-encoding would keep
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
       "rkJggg==")


def raw_args(arguments: str) -> str:
    return f"[args_raw64={base64.b64encode(arguments.encode()).decode()}]"

class Chain:
    """A client at one door: each turn posts a request (chained to the last unless told otherwise) and keeps the
    Chat Completions bodies the upstream received for it (several for a tool loop)."""

    def __init__(self, session: aiohttp.ClientSession, upstream: UpstreamLog) -> None:
        self.session = session
        self.upstream = upstream
        self.previous: str | None = None
        self.seen = 0
        self.bodies: list[dict[str, Any]] = []

    async def turn(self, chained: bool = True, status: str = "completed", **body: Any) -> dict[str, Any]:
        body.setdefault("model", "fake-model")
        if chained and self.previous is not None and "conversation" not in body:
            body["previous_response_id"] = self.previous
        async with self.session.post("/v1/responses", json=body) as answer:
            assert answer.status == 200, await answer.text()
            if body.get("stream"):
                final = [orjson.loads(line[6:]) for line in (await answer.read()).decode().splitlines()
                         if line.startswith("data: {")][-1]["response"]
            else:
                final = await answer.json()
        if body.get("background"):
            final = await self._finished(final["id"])
        assert final["status"] == status, final
        self.previous = final["id"]
        await self._collect()
        return final

    async def _finished(self, response_id: str) -> dict[str, Any]:
        for _ in range(600):
            async with self.session.get(f"/v1/responses/{response_id}") as answer:
                found = await answer.json()
            if found["status"] not in ("queued", "in_progress"):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"background response {response_id} did not finish")

    async def _collect(self) -> None:
        entries = [entry for entry in await self.upstream.entries() if entry["path"].endswith("/chat/completions")]
        self.bodies += [entry["body"] for entry in entries[self.seen:]]
        self.seen = len(entries)


async def model_answer(upstream_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the (deterministic) model answers to ``body``, asked again without streaming: its ``message``."""
    plain = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
    async with aiohttp.ClientSession() as session, \
            session.post(f"{upstream_url}/chat/completions", json=plain) as answer:
        assert answer.status == 200, await answer.text()
        message: dict[str, Any] = (await answer.json())["choices"][0]["message"]
        return message


def assert_extends(before: dict[str, Any], after: dict[str, Any]) -> None:
    """``after``'s messages begin with exactly ``before``'s, element by element, and its tools are the same."""
    old, new = before["messages"], after["messages"]
    assert len(new) > len(old), (old, new)
    for index, message in enumerate(old):
        assert new[index] == message, f"message {index} was sent otherwise: {message!r} then {new[index]!r}"
    assert after.get("tools") == before.get("tools")


def assert_answer_follows(before: dict[str, Any], after: dict[str, Any], said: dict[str, Any],
                          *, call_ids: dict[str, str] | None = None) -> None:
    """The assistant message right after ``before``'s messages is what the model ``said``: its text identical,
    all its calls on it, their names and arguments byte for byte (``call_ids``: a server call's id as the bridge
    keeps it, the item's, for the model's), as the model made the turn; no other assistant message follows
    before the next input."""
    answer = after["messages"][len(before["messages"])]
    assert answer["role"] == "assistant"
    assert (answer.get("content") or None) == (said.get("content") or None)
    assert answer.get("refusal") == said.get("refusal")
    rest = after["messages"][len(before["messages"]) + 1:]
    assert not [message for message in rest if message["role"] == "assistant"], rest
    calls = [(call["id"], call["function"]["name"], call["function"]["arguments"])
             for call in answer.get("tool_calls") or ()]
    renamed = call_ids or {}
    expected = [(renamed.get(call["id"], call["id"]), call["function"]["name"], call["function"]["arguments"])
                for call in said.get("tool_calls") or ()]
    assert calls == expected, (calls, expected)


async def assert_chain_extends(chain: Chain, upstream_url: str, *, first: int = 0) -> None:
    """Every recorded turn from ``first`` on extends the one before it, with the model's answer to it next."""
    for before, after in zip(chain.bodies[first:], chain.bodies[first + 1:], strict=False):
        assert_extends(before, after)
        assert_answer_follows(before, after, await model_answer(upstream_url, before))


async def session_at(sidecar: Sidecar) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=sidecar.http_url, timeout=aiohttp.ClientTimeout(total=60))


def at_door(base: str) -> aiohttp.ClientSession:
    """A client of the door at ``base`` (the HTTP door or Envoy in front of it)."""
    return aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=60))
