"""WebSocket steering's queued input: held as the bytes the client sent and counted against the connection's
budget until it leaves its queue (a successor takes it, the response ends, the connection goes); a parked
response keeps its queue but not the settings only an automatic successor would inherit."""

from __future__ import annotations

from typing import Any

import orjson

from responses_bridge.adapters.http.websocket.steering import Steering


class Sent:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, frames: list[str]) -> None:
        self.events.extend(orjson.loads(frame) for frame in frames)

    def last(self) -> dict[str, Any]:
        return self.events[-1]


def steer(response_id: str, text: str) -> dict[str, Any]:
    return {"type": "response.steer", "previous_response_id": response_id, "input": text}


def size(text: str) -> int:
    return len(orjson.dumps(text))


async def test_queued_input_counts_its_bytes_and_past_the_budget_is_refused() -> None:
    sent = Sent()
    steering = Steering(sent, budget=100)
    target = steering.begin("resp_1", {"model": "m", "input": "hi"}, None)
    await steering.steer(steer("resp_1", "a" * 60))
    assert sent.last()["type"] == "response.steer.accepted" and steering.held == size("a" * 60)
    await steering.steer(steer("resp_1", "b" * 60))  # 124 bytes would be queued: over the budget
    refused = sent.last()
    assert refused["type"] == "response.steer.failed" and refused["error"]["code"] == "too_many_pending_steers"
    assert "100 bytes" in refused["error"]["message"] and refused["steer"]["input"] == "b" * 60
    assert len(target.queue) == 1 and steering.held == size("a" * 60)
    successor, steers = await steering.ended(target, {"status": "completed", "output": []})
    assert successor["input"] == [{"type": "message", "role": "user", "content": "a" * 60}]
    assert successor["previous_response_id"] == "resp_1" and successor["model"] == "m"
    assert [s.input for s in steers] == ["a" * 60] and steering.held == 0  # taken by the successor


async def test_one_submission_larger_than_the_budget_is_let_in_when_nothing_waits() -> None:
    sent = Sent()
    steering = Steering(sent, budget=10)
    steering.begin("resp_1", {"input": "hi"}, "lane")
    await steering.steer(steer("resp_1", "x" * 50))
    assert sent.last()["type"] == "response.steer.accepted" and sent.last()["stream_id"] == "lane"
    await steering.steer(steer("resp_1", "y"))
    assert sent.last()["error"]["code"] == "too_many_pending_steers"


async def test_a_failed_response_gives_back_its_input_and_its_bytes() -> None:
    sent = Sent()
    steering = Steering(sent, budget=1000)
    target = steering.begin("resp_1", {"input": "hi"}, None)
    await steering.steer(steer("resp_1", "later"))
    assert await steering.ended(target, {"status": "failed"}) == ({}, [])
    failed = sent.last()
    assert failed["error"]["code"] == "response_not_active" and failed["steer"]["input"] == "later"
    assert steering.held == 0


async def test_a_parked_response_keeps_its_input_but_not_its_settings() -> None:
    sent = Sent()
    steering = Steering(sent, budget=1000)
    create = {"model": "m", "instructions": "long " * 100, "input": "call it"}
    target = steering.begin("resp_1", create, None)
    await steering.steer(steer("resp_1", "and also"))
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    assert await steering.ended(target, {"status": "completed", "output": [call]}) == ({}, [])
    assert sent.last()["type"] == "response.steer.pending"
    assert target.parked and target.settings == {} and steering.held == size("and also")
    explicit = {"previous_response_id": "resp_1",
                "input": [{"type": "function_call_output", "call_id": "c1", "output": "ok"}]}
    steers = steering.take_parked(explicit, None)
    assert explicit["input"][1] == {"type": "message", "role": "user", "content": "and also"}
    steering.committed("resp_1", steers)
    assert steering.held == 0


async def test_the_connection_ending_drops_every_queue() -> None:
    steering = Steering(Sent(), budget=1000)
    steering.begin("resp_1", {"input": "hi"}, None)
    steering.begin("resp_2", {"input": "hi"}, "b")
    await steering.steer(steer("resp_1", "one"))
    await steering.steer(steer("resp_2", "two"))
    assert steering.held == size("one") + size("two")
    steering.drop()
    assert steering.held == 0
