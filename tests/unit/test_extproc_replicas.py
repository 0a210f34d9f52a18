"""The ext_proc door's part in picking a replica (adapters/extproc/replica_pick.py), message by message as Envoy sends
them: one server costs one check and nothing else; with replicas the processor names the picked one (then the
others) in the metadata the cluster reads, beside the upstream's key, and ends the pick from the answer's headers and
the replica Envoy says answered. The same through a real Envoy: tests/integration/test_replicas_envoy.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from responses_bridge.adapters.extproc import replica_pick
from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingRequest
from responses_bridge.config.settings import Settings
from responses_bridge.envoy_config.names import DESTINATION_ENDPOINT_HEADER
from responses_bridge.replicas import register
from responses_bridge.replicas.picker import ReplicaSet
from responses_bridge.replicas.registry import unregister
from responses_bridge.runtime import Runtime
from responses_bridge.store import SQLiteResponseStore
from tests.support.runtime import runtime_over
from tests.unit.test_extproc_servicer import (
    REQUEST,
    kinds,
    new_stream,
    request_body,
    response_body,
    response_headers,
    set_headers,
)

URLS = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]
KEYS = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]


@pytest.fixture
async def runtime(store: SQLiteResponseStore) -> Runtime:
    return runtime_over(settings=Settings(upstream=URLS[0], db=":memory:", api_key="sk-up"), store=store)


@pytest.fixture
def replicas() -> Iterator[ReplicaSet]:
    found = ReplicaSet("default", URLS)
    register(found)
    try:
        yield found
    finally:
        unregister("default")


def _named(reply: Any) -> str:
    return str(reply.dynamic_metadata["responses_bridge.upstream"][DESTINATION_ENDPOINT_HEADER])


ANSWER = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
              "prompt_tokens_details": {"cached_tokens": 8}}})


def _answered(status: int, by: str, *, from_upstream: bool = True) -> ProcessingRequest:
    """Response headers as Envoy sends them on a replicated route: with the ``upstream.address`` attribute, and
    Envoy's ``x-envoy-upstream-service-time`` when the answer came from a replica."""
    message = response_headers(status, "application/json")
    if from_upstream:
        header = message.response_headers.headers.headers.add()
        header.key, header.raw_value = "x-envoy-upstream-service-time", b"3"
    message.attributes["envoy.filters.http.ext_proc"].fields["upstream.address"].string_value = by
    return message


async def test_one_server_costs_one_check(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> None:
        raise AssertionError("pick() called for an upstream with one server")

    monkeypatch.setattr(replica_pick, "pick_recalled", never)
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body(REQUEST))
    assert dict(reply.dynamic_metadata["responses_bridge.upstream"]) == {"authorization": "Bearer sk-up"}
    assert DESTINATION_ENDPOINT_HEADER not in set_headers(reply, "request_body")
    assert stream.picked is None


async def test_the_picked_replica_is_named_beside_the_upstreams_key(runtime: Runtime, replicas: ReplicaSet) -> None:
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body(REQUEST))
    assert stream.picked is not None
    named = _named(reply).split(",")
    assert named[0] == stream.picked.endpoint and sorted(named) == KEYS  # the pick, then the others in
    assert reply.dynamic_metadata["responses_bridge.upstream"]["authorization"] == "Bearer sk-up"  # not clobbered
    assert set_headers(reply, "request_body")[DESTINATION_ENDPOINT_HEADER] == _named(reply)
    # a replica taken out is no retry target
    down = next(replica for replica in replicas.replicas if replica is not stream.picked.replica)
    down.take_out(replicas.clock(), "test")
    stream.settle_pick()
    [reply] = await new_stream(runtime).handle(request_body(REQUEST))
    assert down.key not in _named(reply).split(",")


async def test_an_answer_binds_its_response_to_the_replica(runtime: Runtime, replicas: ReplicaSet) -> None:
    stream = new_stream(runtime)
    await stream.handle(request_body(REQUEST))
    picked = stream.picked
    assert picked is not None and stream.run is not None
    assert kinds(await stream.handle(_answered(200, picked.endpoint))) == []  # a JSON answer: replied at its end
    await stream.handle(response_body(ANSWER, end_of_stream=True))
    assert stream.done
    stream.settle_pick()  # as the servicer does once the terminal bytes are made
    assert picked.replica.in_flight == 0 and not picked.replica.down
    assert (picked.replica.prompt_tokens, picked.replica.cached_tokens) == (10, 8)  # the usage it reported
    following = new_stream(runtime)
    await following.handle(request_body({**REQUEST, "previous_response_id": stream.run.response_id}))
    assert following.picked is not None and following.picked.replica is picked.replica


async def test_a_call_envoy_retried_elsewhere_moves_the_chain(runtime: Runtime, replicas: ReplicaSet) -> None:
    stream = new_stream(runtime)
    await stream.handle(request_body(REQUEST))
    picked = stream.picked
    assert picked is not None and stream.run is not None
    other = next(replica for replica in replicas.replicas if replica is not picked.replica)
    await stream.handle(_answered(200, other.key))  # the picked one refused; Envoy's retry reached ``other``
    await stream.handle(response_body(ANSWER, end_of_stream=True))
    stream.settle_pick()
    assert picked.replica.down  # taken out
    following = new_stream(runtime)
    await following.handle(request_body({**REQUEST, "previous_response_id": stream.run.response_id}))
    assert following.picked is not None and following.picked.replica is other


async def test_envoys_own_503_takes_the_replica_out(runtime: Runtime, replicas: ReplicaSet) -> None:
    stream = new_stream(runtime)
    await stream.handle(request_body(REQUEST))
    picked = stream.picked
    assert picked is not None
    await stream.handle(_answered(503, picked.endpoint, from_upstream=False))
    stream.settle_pick()
    assert picked.replica.down and "refused" in picked.replica.last_failure
    assert stream.picked is None  # ended once


async def test_a_500_is_the_requests_own_and_takes_nothing_out(runtime: Runtime, replicas: ReplicaSet) -> None:
    stream = new_stream(runtime)
    await stream.handle(request_body(REQUEST))
    picked = stream.picked
    assert picked is not None
    await stream.handle(_answered(500, picked.endpoint))
    stream.settle_pick()
    assert not picked.replica.down and picked.replica.in_flight == 0
