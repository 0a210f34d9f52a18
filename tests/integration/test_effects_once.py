"""No side effect twice, whatever the client retries: through both doors, with the openai SDK's own retries on.

A request whose run has made a server-side call with effects (here an MCP tool, ``send_payment`` of the test MCP
server, whose calls that server counts) is never answered with a status the SDK retries: a later failure (the
model's next turn failing with a 503, or the request ended by the memory backstop) ends it with its failed
Response, status 200, its output holding the call, and stored. Before any such call the failure stays a retryable
error, since retrying then makes nothing twice. And ``Idempotency-Key`` makes a retried create return the first
one's response (a duplicate while it runs: 409 ``idempotency_key_in_use``; the same key with another body: 400;
another tenant's same key: its own).

One sidecar (its own model calls through Envoy: ``--upstream-via``) and one Envoy in front of it, with
``RESPONSES_BRIDGE_AUTH=keys`` and two tenants' keys, and one upstream place, which the bridge never takes back
from a tenant for another (the shared pools take nothing back for fairness: docs/operations.md); the real MCP test
server on loopback. The only thing that still takes work back is the memory backstop
(services/tenancy/memory_watch.py): its cases run on a fresh sidecar of their own each, whose high watermark a
stalled request's memory passes (set over the real memory of one started the same way and warmed by a tool loop).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.envoy import have_envoy
from tests.support.keyed_stack import Stack, keyed_stack
from tests.support.mcp_server import MCPTestServer
from tests.support.memory import status_kb
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")

MODEL = "fake-model"
MiB = 1 << 20


@asynccontextmanager
async def started(fake_upstream: str, directory: Path, **env: str) -> AsyncIterator[Stack]:
    """A sidecar with the tenants alpha and beta, one upstream place, and its Envoy; ``env``: settings besides."""
    async with keyed_stack(fake_upstream, directory, ["alpha", "beta"], db_name="effects.db", env={
            "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": "1",
            **env}) as stack:
        yield stack


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # a short quantum: were the place still taken back for fairness (it was: after half a second of holding it, for
    # a tenant holding none), a tool loop stalled on it would lose it within the tests' waits
    async with started(fake_upstream, tmp_path_factory.mktemp("effects"),
                       RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM="0.5") as made:
        yield made


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    return stack.url(request.param)


def sdk_for(door_url: str, key: str, **options: Any) -> openai.AsyncOpenAI:
    """The SDK as users make it: its default retries (2) unless ``options`` say otherwise."""
    return async_sdk(base_url=f"{door_url}/v1", api_key=key, timeout=60, **options)


@pytest.fixture
async def sdk(door_url: str, stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_for(door_url, stack.keys["alpha"]) as client:
        yield client


def payment_tool(mcp: MCPTestServer) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "bank", "server_url": mcp.http_url, "require_approval": "never",
            "allowed_tools": ["send_payment"]}


def payee() -> str:
    """A payee of this test's own: the MCP server counts its calls apart from every other test's."""
    return f"payee{uuid.uuid4().hex[:10]}"


# --- a failure after a call with effects ----------------------------------------------------------------------------


async def test_a_failed_turn_after_an_mcp_call_is_answered_once_with_its_response(
        sdk: openai.AsyncOpenAI, mcp: MCPTestServer, door_url: str, stack: Stack) -> None:
    """The first turn calls the tool, the second model turn fails (503): the SDK, retrying as it does, gets one
    answer, the failed Response (200) whose output holds the call; the tool ran once; the response is stored."""
    to = payee()
    response = await sdk.responses.create(model=MODEL, input=f"call bank__send_payment {to} [error_after_tools=503]",
                                          tools=[payment_tool(mcp)])  # type: ignore[list-item]
    assert await mcp.payments(to) == 1
    assert response.status == "failed"
    assert response.error is not None and "would make them again" in response.error.message
    calls = [item for item in response.output if item.type == "mcp_call"]
    assert [(call.name, call.output) for call in calls] == [("send_payment", f"paid {to}")]  # type: ignore[union-attr]
    stored = await sdk.responses.retrieve(response.id)
    assert stored.status == "failed" and [item.type for item in stored.output] == [
        item.type for item in response.output]
    # streamed, the same failure ends the stream with response.failed, carrying the call
    to = payee()
    final = None
    async with await sdk.responses.create(model=MODEL, input=f"call bank__send_payment {to} [error_after_tools=503]",
                                          tools=[payment_tool(mcp)], stream=True) as events:  # type: ignore[list-item]
        async for event in events:
            if event.type in ("response.completed", "response.failed", "response.incomplete"):
                final = event.response
    assert final is not None and final.status == "failed"
    assert [item.type for item in final.output if item.type == "mcp_call"] == ["mcp_call"]
    assert await mcp.payments(to) == 1


async def first_turn_upstream(upstream: UpstreamLog, to: str) -> None:
    """Until the request paying ``to`` has its first model call at the (fake) upstream."""
    for _ in range(400):
        if any(to in orjson.dumps(entry["body"]).decode() for entry in await upstream.entries()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no model call paying {to} came upstream")


async def second_turn_upstream(stack: Stack, to: str) -> None:
    """Until the request paying ``to`` has its second model call, the tool's result in it, at the upstream."""
    upstream = UpstreamLog(stack.sidecar.upstream_url.removesuffix("/v1"))
    for _ in range(400):
        if any(entry["body"]["messages"][-1].get("role") == "tool" and to in orjson.dumps(entry["body"]).decode()
               for entry in await upstream.entries()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no second model call paying {to} came upstream")


async def test_a_tool_loop_holding_the_only_upstream_place_is_not_taken_back_for_another_tenant(
        sdk: openai.AsyncOpenAI, mcp: MCPTestServer, stack: Stack) -> None:
    """The issue's scene under the new rule: alpha's tool loop holds the only upstream place (its second model turn
    stalled, the tool already called) while beta, holding none, asks for one. Nothing is taken back: beta waits for
    the place (or, past its wait, gets the retryable 503 ``upstream_connections_exceeded``), alpha's request
    completes, and its tool ran once."""
    to = payee()
    first = asyncio.ensure_future(sdk.responses.create(
        model=MODEL, input=f"call bank__send_payment {to} [stall_after_tools=2000]",
        tools=[payment_tool(mcp)]))  # type: ignore[list-item]
    await second_turn_upstream(stack, to)
    async with sdk_for(stack.sidecar.http_url, stack.keys["beta"], max_retries=0) as beta:
        try:
            other: str | None = (await beta.responses.create(model=MODEL, input="my turn")).status
        except openai.APIStatusError as refused:
            assert refused.status_code == 503, refused
            other = refused.code
    response = await first
    assert other in ("completed", "upstream_connections_exceeded"), other
    assert response.status == "completed", response.error
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert await mcp.payments(to) == 1


# --- work taken back by the memory backstop -------------------------------------------------------------------------

BUDGET = 4 << 30  # room for the ballast's charge (30 times its body) within one tenant's share (half)
BALLAST = 24_000_000  # characters of the ballast request's input: tens of MiB of real memory while it waits
MARGIN_OVER_WARM = 24 * MiB
"""The backstop's high watermark over a warmed sidecar's real memory (seen: 115 MiB): a tool loop stays under it, the
waiting ballast (seen: 45 to 70 MiB more) passes it."""
PREEMPTED_BY_BACKSTOP = 'responses_bridge_memory_budget_preempted_total{reason="memory_high_watermark"}'
NOTES = 40_000
"""Characters of an earlier message in alpha's request, so that it is charged more than a bystander's size (about
120 KB: the backstop never ends a request charged under 64 KiB, services/tenancy/memory_watch.py's SPARED_BYTES)
and remains the backstop's to end once the ballast is; a few hundred kilobytes of real memory."""


def charged(command: str) -> Any:
    """Alpha's input: ``command`` for the fake upstream (the last user message), after :data:`NOTES`."""
    return [{"role": "user", "content": "notes " + "n" * NOTES}, {"role": "user", "content": command}]


@pytest.fixture(scope="module")
async def warm_rss(fake_upstream: str, mcp: MCPTestServer, tmp_path_factory: pytest.TempPathFactory) -> int:
    """The real memory (RSS, bytes) of a sidecar started as the backstop's are, once it has run a tool loop (the
    MCP client and the rest imported on first use): what the backstop's watermarks are set over."""
    async with started(fake_upstream, tmp_path_factory.mktemp("probe"), **backstop_env(0)) as probe, \
            sdk_for(probe.sidecar.http_url, probe.keys["alpha"]) as client:
        for _ in range(2):
            await client.responses.create(model=MODEL, input=f"call bank__send_payment {payee()}",
                                          tools=[payment_tool(mcp)])  # type: ignore[list-item]
        await asyncio.sleep(0.5)
        return status_kb(probe.sidecar.process.pid, "VmRSS") * 1024


def backstop_env(high: int) -> dict[str, str]:
    """The backstop read every 0.1 s, past ``high`` (0: its default, far off); its low watermark out of reach, so
    once past the high one it ends every request in flight, one a reading, the holder charged most first."""
    env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET), "RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0.1"}
    if high:
        env |= {"RESPONSES_BRIDGE_MEMORY_HIGH_WATERMARK_BYTES": str(high),
                "RESPONSES_BRIDGE_MEMORY_LOW_WATERMARK_BYTES": "1"}
    return env


@pytest.fixture
async def backstop(fake_upstream: str, warm_rss: int, tmp_path: Path) -> AsyncIterator[Stack]:
    """A fresh sidecar a test (what one test's ballast left in its heap never counts in the next one's RSS), its
    high watermark :data:`MARGIN_OVER_WARM` over a warmed one's real memory."""
    async with started(fake_upstream, tmp_path / "backstop", **backstop_env(warm_rss + MARGIN_OVER_WARM)) as made:
        yield made


async def ballast(stack: Stack) -> tuple[int, Any]:
    """Beta's request of :data:`BALLAST` characters, sent while alpha's holds the only upstream place: it waits for
    the place, parsed and charged, its memory past the high watermark, until the backstop ends it (charged most, it
    is ended first). Its status and error code."""
    body = orjson.dumps({"model": MODEL, "input": "ballast " + "b" * BALLAST})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, session.post(
            f"{stack.sidecar.http_url}/v1/responses", data=body, headers={
                "Authorization": f"Bearer {stack.keys['beta']}", "Content-Type": "application/json"}) as answer:
        return answer.status, (orjson.loads(await answer.read()).get("error") or {}).get("code")


async def preempted_by_backstop(stack: Stack) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.sidecar.http_url}/metrics") as answer:
        text = await answer.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(PREEMPTED_BY_BACKSTOP))


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_work_taken_back_after_an_mcp_call_is_answered_once_with_its_response(
        backstop: Stack, mcp: MCPTestServer, door: str) -> None:
    """The issue's case, with the one thing that still takes work back: alpha's tool loop holds the only upstream
    place, its second model turn stalled, the tool already called, when beta's ballast passes the backstop's high
    watermark; the backstop ends the ballast, then alpha's request (charged over a bystander's size: :func:`charged`;
    a bystander's small request is never ended, test_memory_return.py). Alpha's SDK (its retries on) gets one answer,
    its failed Response (200, ``preempted_for_fairness`` leading its error, its output holding the call), not a 503
    it would retry: the tool ran once."""
    to = payee()
    async with sdk_for(backstop.url(door), backstop.keys["alpha"]) as alpha:
        first = asyncio.ensure_future(alpha.responses.create(
            model=MODEL, input=charged(f"call bank__send_payment {to} [stall_after_tools=30000]"),
            tools=[payment_tool(mcp)]))  # type: ignore[list-item]
        await second_turn_upstream(backstop, to)
        assert not await preempted_by_backstop(backstop)  # not past the watermark before the ballast
        status, code = await ballast(backstop)
        response = await first
        stored = await alpha.responses.retrieve(response.id)
    assert (status, code) == (503, "preempted_for_fairness")
    assert response.status == "failed" and response.error is not None
    assert response.error.message.startswith("preempted_for_fairness"), response.error
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call"]
    assert stored.status == "failed"
    assert await mcp.payments(to) == 1
    assert await preempted_by_backstop(backstop) == 2


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_work_taken_back_before_any_call_stays_a_retryable_503(
        backstop: Stack, mcp: MCPTestServer, door: str) -> None:
    """Control: the same take-back while alpha's first model turn holds the place, before the tool was called: the
    retryable 503 ``preempted_for_fairness`` with ``Retry-After``, as before (a retry makes nothing twice)."""
    to = payee()
    async with sdk_for(backstop.url(door), backstop.keys["alpha"], max_retries=0) as alpha:
        first = asyncio.ensure_future(alpha.responses.create(
            model=MODEL, input=charged(f"call bank__send_payment {to} [stall=30000]"),
            tools=[payment_tool(mcp)]))  # type: ignore[list-item]
        await first_turn_upstream(UpstreamLog(backstop.sidecar.upstream_url.removesuffix("/v1")), to)
        assert not await preempted_by_backstop(backstop)
        status, code = await ballast(backstop)
        with pytest.raises(openai.APIStatusError) as raised:
            await first
    assert (status, code) == (503, "preempted_for_fairness")
    assert raised.value.status_code == 503 and raised.value.code == "preempted_for_fairness"
    assert raised.value.response.headers.get("Retry-After") is not None
    assert await mcp.payments(to) == 0
    assert await preempted_by_backstop(backstop) == 2


async def test_the_same_failure_before_any_call_stays_retryable(
        door_url: str, stack: Stack, mcp: MCPTestServer) -> None:
    """Control: the first model turn fails (503) before the tool was called: a status the SDK retries (the
    upstream's failure as the bridge reports it, a 502); nothing ran."""
    to = payee()
    async with sdk_for(door_url, stack.keys["alpha"], max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.responses.create(model=MODEL, input=f"call bank__send_payment {to} [error=503]",
                                          tools=[payment_tool(mcp)])  # type: ignore[list-item]
    assert raised.value.status_code >= 500
    assert await mcp.payments(to) == 0


# --- Idempotency-Key ------------------------------------------------------------------------------------------------


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


async def test_a_retried_create_returns_the_first_ones_response(
        sdk: openai.AsyncOpenAI, mcp: MCPTestServer) -> None:
    """The same key and body again: the first response (same id), not a second run; the MCP tool ran once."""
    key, to = new_key(), payee()
    params: dict[str, Any] = {"model": MODEL, "input": f"call bank__send_payment {to}", "tools": [payment_tool(mcp)]}
    first = await sdk.responses.create(**params, extra_headers={"Idempotency-Key": key})
    again = await sdk.responses.create(**params, extra_headers={"Idempotency-Key": key})
    assert first.status == "completed" and again.id == first.id and again.output_text == first.output_text
    assert await mcp.payments(to) == 1
    # without the key (or with a new one) it runs again, as any request does
    fresh = await sdk.responses.create(**params, extra_headers={"Idempotency-Key": new_key()})
    assert fresh.id != first.id and await mcp.payments(to) == 2
    # streamed: the retry's stream is the stored response's terminal event
    key, ids = new_key(), []
    for _ in range(2):
        async with await sdk.responses.create(**params, stream=True, extra_headers={"Idempotency-Key": key}) as events:
            ids += [event.response.id async for event in events if event.type == "response.completed"]
    assert len(ids) == 2 and ids[0] == ids[1] and await mcp.payments(to) == 3


async def test_a_retry_of_a_failed_response_with_effects_gets_it_again(
        sdk: openai.AsyncOpenAI, mcp: MCPTestServer) -> None:
    """The failed Response of a run whose call was made is an answer like any: sent again with its key, it comes
    back, and nothing runs."""
    key, to = new_key(), payee()
    params: dict[str, Any] = {"model": MODEL, "input": f"call bank__send_payment {to} [error_after_tools=503]",
                              "tools": [payment_tool(mcp)], "extra_headers": {"Idempotency-Key": key}}
    first = await sdk.responses.create(**params)
    again = await sdk.responses.create(**params)
    assert first.status == again.status == "failed" and again.id == first.id
    assert await mcp.payments(to) == 1


async def test_a_retried_background_create_returns_the_same_response(sdk: openai.AsyncOpenAI) -> None:
    key = new_key()
    first = await sdk.responses.create(model=MODEL, input="in the background", background=True,
                                       extra_headers={"Idempotency-Key": key})
    again = await sdk.responses.create(model=MODEL, input="in the background", background=True,
                                       extra_headers={"Idempotency-Key": key})
    assert again.id == first.id
    # streamed: the retry replays the kept events, from response.created to the end
    key, runs = new_key(), []
    for _ in range(2):
        async with await sdk.responses.create(model=MODEL, input="streamed in the background", background=True,
                                              stream=True, extra_headers={"Idempotency-Key": key}) as events:
            runs.append([(event.type, event.sequence_number) async for event in events])
    assert runs[0] == runs[1] and runs[0][0] == ("response.created", 0) and runs[0][-1][0] == "response.completed"


async def test_a_duplicate_while_the_first_runs_gets_409_then_the_result(
        door_url: str, stack: Stack) -> None:
    """A duplicate sent while the first still runs (its model call under way): 409 ``idempotency_key_in_use`` with
    Retry-After; the SDK retries it by itself, and lands on the finished result."""
    key = new_key()
    text = f"Say hello slowly, {key}. [header_delay=3000]"
    body = {"model": MODEL, "input": text}
    headers = {"Authorization": f"Bearer {stack.keys['alpha']}", "Idempotency-Key": key}
    upstream = UpstreamLog(stack.sidecar.upstream_url.removesuffix("/v1"))
    async with aiohttp.ClientSession(base_url=door_url, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def post() -> tuple[int, dict[str, Any], Any]:
            async with session.post("/v1/responses", json=body, headers=headers) as answer:
                return answer.status, orjson.loads(await answer.read()), answer.headers.get("Retry-After")

        first = asyncio.ensure_future(post())
        for _ in range(200):  # until the first one's model call arrived upstream: it holds the key by then
            if any(key in orjson.dumps(entry["body"]).decode() for entry in await upstream.entries()):
                break
            await asyncio.sleep(0.05)
        status, error, retry_after = await post()
        assert status == 409 and error["error"]["code"] == "idempotency_key_in_use", error
        assert error["error"]["param"] == "Idempotency-Key" and retry_after is not None
        # its 409s come with Retry-After: 1, and the first answers ~3 s after its model call began: retries enough
        async with sdk_for(door_url, stack.keys["alpha"], max_retries=10) as client:
            again = await client.responses.create(model=MODEL, input=text, extra_headers={"Idempotency-Key": key})
        status, response, _ = await first
    assert status == 200 and response["status"] == "completed" and again.id == response["id"]


async def test_the_same_key_with_another_body_or_too_long_is_a_400(door_url: str, stack: Stack) -> None:
    key = new_key()
    async with sdk_for(door_url, stack.keys["alpha"], max_retries=0) as client:
        await client.responses.create(model=MODEL, input="one", extra_headers={"Idempotency-Key": key})
        with pytest.raises(openai.BadRequestError) as reused:
            await client.responses.create(model=MODEL, input="two", extra_headers={"Idempotency-Key": key})
        with pytest.raises(openai.BadRequestError) as too_long:
            await client.responses.create(model=MODEL, input="one", extra_headers={"Idempotency-Key": "k" * 256})
    assert reused.value.code == "idempotency_key_reused" and reused.value.param == "Idempotency-Key"
    assert too_long.value.code == "invalid_value" and too_long.value.param == "Idempotency-Key"


async def test_another_tenants_same_key_is_its_own(door_url: str, stack: Stack) -> None:
    key = new_key()
    async with sdk_for(door_url, stack.keys["alpha"]) as alpha, sdk_for(door_url, stack.keys["beta"]) as beta:
        mine = await alpha.responses.create(model=MODEL, input="one", extra_headers={"Idempotency-Key": key})
        theirs = await beta.responses.create(model=MODEL, input="two", extra_headers={"Idempotency-Key": key})
        again = await beta.responses.create(model=MODEL, input="two", extra_headers={"Idempotency-Key": key})
    assert theirs.id != mine.id and theirs.output_text == "Echo: two" and again.id == theirs.id


async def test_an_error_answer_frees_the_key_and_store_false_is_not_run_again(
        door_url: str, stack: Stack, mcp: MCPTestServer) -> None:
    """A first request that answered an error status (nothing was done) leaves the key free: its retry runs. One
    that ran with ``store: false``: its retry is not run again (400 ``idempotency_key_used``)."""
    key = new_key()
    async with sdk_for(door_url, stack.keys["alpha"], max_retries=0) as client:
        with pytest.raises(openai.APIStatusError):
            await client.responses.create(model=MODEL, input="[error=503]", extra_headers={"Idempotency-Key": key})
        with pytest.raises(openai.APIStatusError):  # ran again: the same error, not a replay or a 409
            await client.responses.create(model=MODEL, input="[error=503]", extra_headers={"Idempotency-Key": key})
        to, key = payee(), new_key()
        params: dict[str, Any] = {"model": MODEL, "input": f"call bank__send_payment {to}", "store": False,
                                  "tools": [payment_tool(mcp)], "extra_headers": {"Idempotency-Key": key}}
        first = await client.responses.create(**params)
        with pytest.raises(openai.BadRequestError) as used:
            await client.responses.create(**params)
    assert first.status == "completed" and used.value.code == "idempotency_key_used" and first.id in used.value.message
    assert await mcp.payments(to) == 1
