"""The ext_proc door's part of the memory budget (services/tenancy/memory_budget.py) for a body Envoy streams to the
processor in chunks (a route whose ``request_body_mode`` is ``STREAMED``): it holds a step per chunk as they come,
not the whole at the end, at most its caller's share; the same caller's next body is then refused with a 503 naming
the share, while another caller's request is translated. A body Envoy buffers comes in one message: one step
(tests/integration/test_memory_fairness.py, through a real Envoy)."""

from __future__ import annotations

import orjson
import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.fairness.memory_charge import BODY_BYTE_COST
from responses_bridge.runtime import Runtime
from responses_bridge.services.tenancy.memory_budget import STEP_COST
from responses_bridge.store import SQLiteResponseStore
from tests.support.runtime import runtime_over
from tests.unit.test_extproc_servicer import REQUEST, error_of, immediate, new_stream, request_body

MiB = 1 << 20
STEP_BYTES = STEP_COST // BODY_BYTE_COST  # body bytes of one step's cost (a plain string's: no JSON objects)


@pytest.fixture
async def runtime(store: SQLiteResponseStore) -> Runtime:
    return runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None,
                                          memory_budget_bytes=64 * MiB), store=store)


async def test_a_streamed_body_holds_a_step_per_chunk_and_its_caller_past_its_share_gets_a_503(
        runtime: Runtime) -> None:
    budget = runtime.memory
    stream = new_stream(runtime)
    chunk = b"x" * STEP_BYTES
    [reply] = await stream.handle(request_body(chunk, False, authorization="Bearer sk-attacker"))
    assert reply.WhichOneof("response") == "request_body" and budget.held == STEP_COST
    [reply] = await stream.handle(request_body(chunk, False, mode=None))
    assert budget.held == 2 * STEP_COST  # as the chunks come, not at the end
    for _ in range(32):  # a body larger than a share holds the share, no more: it runs alone rather than never
        [reply] = await stream.handle(request_body(chunk, False, mode=None))
        assert reply.WhichOneof("response") == "request_body"
    assert budget.held == budget.share_bytes
    second = new_stream(runtime)  # the same caller's next body: past its share
    [reply] = await second.handle(request_body(chunk, False, authorization="Bearer sk-attacker"))
    status, headers, body = immediate(reply)
    assert status == 503 and headers.get("retry-after") == "1"
    assert error_of(body)["code"] == "memory_share_exceeded" and second.done and second.admission is None
    assert budget.held == budget.share_bytes
    other = new_stream(runtime)  # another caller: the other half is its
    [reply] = await other.handle(request_body(orjson.dumps(REQUEST), authorization="Bearer sk-victim"))
    assert reply.WhichOneof("response") == "request_body"
    assert orjson.loads(reply.request_body.response.body_mutation.body)["messages"][-1]["content"] == REQUEST["input"]
    stream.held.release()  # the servicer gives both back when their gRPC streams end
    other.held.release()
    assert budget.held == 0
