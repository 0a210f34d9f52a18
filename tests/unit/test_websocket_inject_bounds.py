"""What a connection keeps for response.inject is bounded: the waiting responses' settings by count and bytes
(the oldest waits no more), injections for running responses by bytes; the successor's create is the response's
own settings with the injected input."""

from __future__ import annotations

from typing import Any

import orjson

from responses_bridge.adapters.http.websocket.inject import WAITING_MEMORY, Injections
from responses_bridge.adapters.http.websocket.steering import Steering, Target
from responses_bridge.protocol.errors import APIError


class Socket:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.creates: list[dict[str, Any]] = []
        self.errors: list[APIError] = []

    async def send(self, frames: list[str]) -> None:
        self.events.extend(orjson.loads(frame) for frame in frames)

    async def enqueue(self, frame: bytes, stream_id: str | None) -> None:
        create = orjson.loads(frame)
        assert create.get("stream_id") == stream_id
        self.creates.append(create)

    async def error(self, error: APIError) -> None:
        self.errors.append(error)


def waiting_response(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "status": "completed", "output": [
        {"type": "function_call", "call_id": f"call_{response_id}", "name": "f", "arguments": "{}"}]}


def output(response_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": f"call_{response_id}", "output": "ok"}


def book(budget: int = 1 << 20) -> tuple[Socket, Injections]:
    socket = Socket()
    steering = Steering(socket.send, budget=budget)
    return socket, Injections(steering, socket.enqueue, socket.error, budget=budget)


async def test_the_oldest_waiting_response_waits_no_more_past_the_count() -> None:
    socket, injections = book()
    for index in range(WAITING_MEMORY + 1):
        await injections.ended(Target(f"r{index}", "lane", {}, True), {"model": "m", "instructions": "x"},
                               waiting_response(f"r{index}"))
    await injections.inject({"type": "response.inject", "response_id": "r0", "input": [output("r0")]})
    assert socket.events[-1]["type"] == "response.inject.failed"
    assert socket.events[-1]["error"]["code"] == "response_already_completed"
    await injections.inject({"type": "response.inject", "response_id": "r1", "input": [output("r1")]})
    assert socket.events[-1]["type"] == "response.inject.created" and socket.events[-1]["stream_id"] == "lane"
    assert socket.creates == [{"type": "response.create", "model": "m", "instructions": "x",
                               "previous_response_id": "r1", "input": [output("r1")], "stream_id": "lane"}]


async def test_settings_past_the_byte_budget_keep_only_the_newest() -> None:
    socket, injections = book(budget=100)
    big = {"model": "m", "instructions": "y" * 80}
    await injections.ended(Target("a", None, {}, True), big, waiting_response("a"))
    await injections.ended(Target("b", None, {}, True), big, waiting_response("b"))
    assert injections.settings_bytes < 200 and list(injections._waiting) == ["b"]
    await injections.inject({"type": "response.inject", "response_id": "b", "input": [output("b")]})
    assert socket.events[-1]["type"] == "response.inject.created" and injections.settings_bytes == 0


async def test_a_conversations_successor_continues_the_conversation() -> None:
    socket, injections = book()
    await injections.ended(Target("c", None, {}, True), {"model": "m", "conversation": "conv_1"},
                           waiting_response("c"))
    await injections.inject({"type": "response.inject", "response_id": "c", "input": [output("c")]})
    assert "previous_response_id" not in socket.creates[0] and socket.creates[0]["conversation"] == "conv_1"
