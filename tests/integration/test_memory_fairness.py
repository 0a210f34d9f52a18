"""The memory budget shared fairly under a hostile caller, end to end (services/tenancy/memory_budget.py, body_pace.py):
a real sidecar (``RESPONSES_BRIDGE_AUTH=none``: callers told apart by their key) with a 64 MiB budget, behind a real
Envoy.

* Idle bodies: the attacker opens connections that declare a 64 MiB body and send one byte — on the HTTP door's
  ``/v1/responses``, and through Envoy on ``/v1/containers`` (a route Envoy streams to the HTTP door). Each holds
  one step of the budget, not 30 × 64 MiB; past its share the attacker's connections get 503
  ``memory_share_exceeded`` with ``Retry-After``; while the others are still held, another caller's request is
  served and ``/health/ready`` answers; each held connection is then answered 408 ``request_timeout`` and closed,
  and the budget is all given back.
* Whole bodies through either door, the ext_proc door's body phase included: the attacker's streams of large
  bodies held open fill its share and its next one is refused naming it, while another caller's equally large
  request is served.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk
from tests.support.streams import held_stream

pytestmark = pytest.mark.store_free  # its subject is the memory budget: the sidecar keeps its own SQLite file

MODEL = "fake-model"
MiB = 1 << 20
BUDGET = 64 * MiB  # a share of 32 MiB
BODY_TIMEOUT = 15  # seconds an idle body is held before its 408: long enough to serve the others meanwhile
STEP_COST = 30 * 64 * 1024  # what one step of a body still arriving holds (memory_budget.STEP_COST)
IDLE = 24  # more idle bodies than a share holds (32 MiB / ~1.9 MiB: 17)
LARGE = "hold this [stall_after=1:120000] " + "x" * (5000 << 10)  # ~14.6 MiB of the budget: two fit in a share


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET),
           "RESPONSES_BRIDGE_REQUEST_BODY_TIMEOUT": str(BODY_TIMEOUT)}
    async with running_gateway(str(tmp_path_factory.mktemp("fairness")), fake_upstream, env=env,
                               own_sqlite=True) as gateway:
        yield gateway


def sdk(base: str, key: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)



async def until(condition: Any, what: str) -> None:
    """Bounded polling of a condition (not a timing check)."""
    for _ in range(600):
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


@dataclass
class Answer:
    status: int | None  # None: the connection closed with no answer
    headers: dict[str, str]
    body: bytes


class IdleBody:
    """A connection that declared a 64 MiB body and sent one byte of it; :attr:`answer` is what came back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.answer: asyncio.Task[Answer] = asyncio.create_task(_read_answer(reader))

    @classmethod
    async def open(cls, base: str, path: str, key: str, content_type: str = "application/json",
                   first: str = "{") -> IdleBody:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
                      f"Content-Type: {content_type}\r\nContent-Length: {64 * MiB}\r\n\r\n{first}").encode())
        await writer.drain()
        return cls(reader, writer)

    def close(self) -> None:
        self.answer.cancel()
        self.writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return Answer(None, {}, b"")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


@pytest.fixture(params=[("http", "/v1/responses"), ("envoy", "/v1/containers")], ids=["http", "envoy-containers"])
def idle_target(request: pytest.FixtureRequest, stack: Gateway) -> tuple[str, str]:
    door, path = request.param
    return stack.door_url(door), path


async def test_idle_bodies_hold_a_step_each_the_others_are_served_and_each_is_closed_with_its_bytes_returned(
        stack: Gateway, idle_target: tuple[str, str]) -> None:
    base, path = idle_target
    sidecar = stack.sidecar
    idle = [await IdleBody.open(base, path, "sk-attacker") for _ in range(IDLE)]
    try:
        async def a_share_is_held() -> bool:
            return await stack.held_bytes() >= (32 * MiB // STEP_COST) * STEP_COST
        await until(a_share_is_held, "the idle bodies hold their share")
        # while they are held: another caller is served, through the same door and the other, and probes answer
        for door in {base, sidecar.http_url}:
            async with sdk(door, "sk-victim") as victim:
                assert (await victim.responses.create(model=MODEL, input="still served")).status == "completed"
        async with aiohttp.ClientSession() as session:
            for probe in ("/health", "/health/ready"):
                async with session.get(f"{sidecar.http_url}{probe}",
                                       timeout=aiohttp.ClientTimeout(total=30)) as response:
                    assert response.status == 200
        still_held = [body for body in idle if not body.answer.done()]
        assert len(still_held) >= 32 * MiB // STEP_COST - 1, "the attack no longer held its connections"
        answers = await asyncio.wait_for(asyncio.gather(*(body.answer for body in idle)), 120)
    finally:
        for body in idle:
            body.close()
    refused = [answer for answer in answers if answer.status == 503]
    assert refused, "the attacker was never refused past its share"
    for answer in refused:
        assert b"memory_share_exceeded" in answer.body and b"MEMORY_BUDGET_SHARE" in answer.body, answer
        assert answer.headers.get("retry-after") == "1"
    timed_out = [answer for answer in answers if answer.status != 503]
    assert len(timed_out) >= 32 * MiB // STEP_COST - 1
    for answer in timed_out:  # the door's 408; Envoy, whose client is still sending, may only close instead
        assert answer.status == 408 or (answer.status is None and base != sidecar.http_url), answer
        if answer.status == 408:
            assert b"request_timeout" in answer.body and b"REQUEST_BODY_TIMEOUT" in answer.body
            assert answer.headers.get("connection") == "close"

    async def all_given_back() -> bool:
        return await stack.held_bytes() == 0
    await until(all_given_back, "the idle bodies' budget came back")


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, stack: Gateway) -> str:
    return stack.door_url(request.param)


async def test_a_caller_at_its_share_is_refused_naming_it_and_another_is_served_on_both_doors(
        stack: Gateway, door_url: str) -> None:
    streams: list[Any] = []
    async with sdk(door_url, "sk-attacker") as attacker, sdk(door_url, "sk-victim") as victim:
        try:
            with pytest.raises(openai.InternalServerError) as caught:
                for _ in range(4):  # four would fit in the whole budget; two fill the share
                    streams.append(await held_stream(attacker, MODEL, LARGE))
            assert len(streams) == 2
            error = caught.value
            assert error.status_code == 503 and error.response.headers["retry-after"] == "1"
            assert isinstance(error.body, dict) and error.body["code"] == "memory_share_exceeded"
            assert "RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE" in error.body["message"]
            streams.append(await held_stream(victim, MODEL, LARGE))  # the other half is the others'
        finally:
            for stream in streams:
                await stream.close()

    async def all_given_back() -> bool:
        return await stack.held_bytes() == 0
    await until(all_given_back, "the held streams' budget came back")


async def test_an_idle_upload_through_envoy_is_closed_and_the_others_keep_uploading(stack: Gateway) -> None:
    """Uploads stream to disk and hold no budget, but an idle one still held its tenant's slot and a connection
    for as long as it liked; through Envoy (which streams these routes to the HTTP door) it is now answered and
    closed like any other body."""
    idle = await IdleBody.open(stack.url, "/v1/files", "sk-attacker",
                               "multipart/form-data; boundary=held", "--held\r\n")
    try:
        async with sdk(stack.url, "sk-victim") as victim:
            uploaded = await victim.files.create(file=("notes.txt", b"still served"), purpose="user_data")
            assert uploaded.bytes == len(b"still served") and not idle.answer.done()
        answer = await asyncio.wait_for(idle.answer, 120)
    finally:
        idle.close()
    assert answer.status in (408, None), answer
    if answer.status == 408:
        assert b"request_timeout" in answer.body
