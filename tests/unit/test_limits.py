"""Per-tenant limits (services/tenancy/limits.py): the slot count, and the ext_proc door's 429 and 413 without Envoy.

The HTTP door and the path through a real Envoy are in tests/integration/test_tenant_limits.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.config.tenants import TenantPolicy
from responses_bridge.protocol.errors import APIError
from responses_bridge.runtime import Runtime
from responses_bridge.services.tenancy.limits import RETRY_AFTER_SECONDS, TenantLimits
from responses_bridge.store import SQLiteResponseStore
from tests.support.runtime import runtime_over
from tests.unit.test_extproc_servicer import (
    REQUEST,
    Call,
    _open_stream,
    error_of,
    immediate,
    new_stream,
    request_body,
)

BIG = {"max_concurrent_requests": 5, "max_request_bytes": 10_000}


def limited(**settings: Any) -> Settings:
    return Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None, **settings)


# --- the count ---------------------------------------------------------------------------------------------------


def test_a_tenant_at_its_limit_gets_a_429_until_a_slot_is_given_back() -> None:
    limits = TenantLimits(limited(tenant_max_concurrent_requests=2))
    first, second = limits.acquire("a"), limits.acquire("a")
    with pytest.raises(APIError) as refused:
        limits.acquire("a")
    error = refused.value
    assert error.status == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert "2 requests in flight" in error.message
    other = limits.acquire("b")  # another tenant has its own budget
    first.release()
    first.release()  # idempotent: every exit path may release
    assert limits.in_flight("a") == 1
    third = limits.acquire("a")
    for slot in (second, third, other):
        slot.release()
    assert limits.in_flight("a") == limits.in_flight("b") == 0
    assert not limits._in_flight  # no entry left behind per tenant ever seen


def test_a_named_tenant_gets_its_own_values_over_the_defaults() -> None:
    settings = limited(tenant_max_concurrent_requests=1, tenant_max_request_bytes=100, max_request_bytes=1000,
                       tenants={"big": TenantPolicy(**BIG), "small": TenantPolicy(max_request_bytes=50)})
    limits = TenantLimits(settings)
    assert limits.max_request_bytes("anyone") == 100
    assert limits.max_request_bytes("small") == 50
    assert limits.max_request_bytes("big") == 1000  # never above the deployment's ceiling
    slots = [limits.acquire("big") for _ in range(5)]
    with pytest.raises(APIError):
        limits.acquire("big")
    limits.acquire("small")  # its concurrency is the default: 1
    with pytest.raises(APIError):
        limits.acquire("small")
    for slot in slots:
        slot.release()


def test_without_a_limit_nothing_is_counted() -> None:
    limits = TenantLimits(limited())
    slots = [limits.acquire("a") for _ in range(100)]
    assert limits.in_flight("a") == 0
    for slot in slots:
        slot.release()
    assert limits.max_request_bytes("a") == limited().max_request_bytes


async def test_a_background_run_keeps_its_slot_until_it_ends() -> None:
    limits = TenantLimits(limited(tenant_max_concurrent_requests=1))
    slot = limits.acquire("a")
    run: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    slot.hold_until(run)
    slot.release()  # the request that started it has ended
    with pytest.raises(APIError):
        limits.acquire("a")
    run.set_result(None)
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert limits.in_flight("a") == 0
    limits.acquire("a").release()


def test_websocket_connections_are_limited_by_default_and_counted_apart_from_requests() -> None:
    """Finite with no setting at all (each open socket holds memory of its own), per tenant, overridable per
    tenant, and apart from the requests in flight (which an open socket also holds one of)."""
    settings = limited(tenant_max_concurrent_requests=1, tenants={"wide": TenantPolicy(max_websocket_connections=3)})
    assert limited().tenant_policy("anyone").max_websocket_connections == 16
    limits = TenantLimits(settings)
    held = [limits.connect("a") for _ in range(16)]
    with pytest.raises(APIError) as refused:
        limits.connect("a")
    error = refused.value
    assert (error.status, error.type, error.code) == (429, "connections", "rate_limit_exceeded")
    assert "16 open at once" in error.message
    request = limits.acquire("a")  # a request slot is another count
    assert limits.connections("a") == 16 and limits.in_flight("a") == 1
    wide = [limits.connect("wide") for _ in range(3)]
    with pytest.raises(APIError):
        limits.connect("wide")
    held[0].release()
    held[0].release()  # idempotent
    held[0] = limits.connect("a")
    for slot in (*held, *wide, request):
        slot.release()
    assert limits.connections("a") == limits.connections("wide") == 0
    assert not limits._connections and not limits._in_flight  # no entry left behind per tenant ever seen


# --- the ext_proc door, message by message -----------------------------------------------------------------------


@pytest.fixture
async def runtime(store: SQLiteResponseStore) -> Runtime:
    return runtime_over(settings=limited(tenant_max_concurrent_requests=1, max_request_bytes=10_000,
                                    tenants={"big": TenantPolicy(**BIG), "tiny": TenantPolicy(max_request_bytes=60)}),
                   store=store)


async def test_extproc_refuses_a_request_over_the_tenant_limit_with_429_and_retry_after(runtime: Runtime) -> None:
    first = new_stream(runtime)
    [reply] = await first.handle(request_body(REQUEST))
    assert reply.WhichOneof("response") == "request_body"
    assert runtime.limits.in_flight("") == 1
    second = new_stream(runtime)
    [reply] = await second.handle(request_body(REQUEST))
    status, headers, body = immediate(reply)
    assert status == 429 and headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert error_of(body) == {**error_of(body), "type": "requests", "code": "rate_limit_exceeded"}
    assert second.done and runtime.limits.in_flight("") == 1
    other = new_stream(runtime)
    other.tenant = "big"  # as the identity of the stream resolves it from Envoy's metadata
    [reply] = await other.handle(request_body(REQUEST))
    assert reply.WhichOneof("response") == "request_body"
    first.slot.release()
    other.slot.release()
    third = new_stream(runtime)
    [reply] = await third.handle(request_body(REQUEST))
    assert reply.WhichOneof("response") == "request_body"


async def test_extproc_takes_no_slot_for_a_request_it_hands_to_the_http_door(runtime: Runtime) -> None:
    """The HTTP door runs it and counts it: counting it here too would make one request two."""
    tools = [{"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp"}]
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body({**REQUEST, "tools": tools}, sidecar_route=True))
    assert reply.request_body.response.clear_route_cache
    assert runtime.limits.in_flight("") == 0


async def test_extproc_applies_the_tenant_body_limit(runtime: Runtime) -> None:
    body = {**REQUEST, "input": "x" * 100}  # over "tiny"'s 60 bytes, under everyone else's
    tiny = new_stream(runtime)
    tiny.tenant = "tiny"
    [reply] = await tiny.handle(request_body(body))
    status, _, raw = immediate(reply)
    assert status == 413 and error_of(raw)["code"] == "request_too_large" and "(60 bytes)" in error_of(raw)["message"]
    big = new_stream(runtime)
    big.tenant = "big"
    [reply] = await big.handle(request_body(body))
    assert reply.WhichOneof("response") == "request_body"


async def test_extproc_refuses_a_chunked_body_at_the_chunk_that_crosses_the_tenant_limit(runtime: Runtime) -> None:
    tiny = new_stream(runtime)
    tiny.tenant = "tiny"
    [reply] = await tiny.handle(request_body(b"x" * 50, False))
    assert reply.request_body.response.body_mutation.body == b""
    [reply] = await tiny.handle(request_body(b"x" * 20, False, mode=None))
    assert immediate(reply)[0] == 413


# --- the ext_proc door over a real gRPC channel: the slot comes back however the stream ends ---------------------


async def _slot_comes_back(runtime: Runtime) -> bool:
    for _ in range(500):  # a condition with a generous bound, not a timing assertion
        if runtime.limits.in_flight("") == 0:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("end", ["client_reset", "closed_early"])
async def test_a_stream_gives_its_slot_back_when_it_ends_however(runtime: Runtime, served: Any, end: str) -> None:
    _, channel = served
    call, _ = await _open_stream(channel)
    assert runtime.limits.in_flight("") == 1  # held while the stream is open
    if end == "client_reset":
        call.call.cancel()  # what Envoy does when the client goes away
    else:
        await call.call.done_writing()
        assert await call.call.read() == grpc.aio.EOF
    assert await _slot_comes_back(runtime)
    again = Call(channel)
    [reply] = await again.send(request_body(REQUEST), 1)
    assert reply.WhichOneof("response") == "request_body"
    again.call.cancel()

