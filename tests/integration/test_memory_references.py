"""A reference costs what it becomes (protocol/responses/item_references.py, fairness/memory_charge.py), end to end:
a real sidecar with real tenants (``RESPONSES_BRIDGE_AUTH=keys``, each a key made with the CLI) on a real SQLite
file, its memory budget and backstop on, through the HTTP door and a real Envoy.

* **The fan-out is refused before it is held.** The issue's two forms: one stored 1 MiB item named by 250
  ``item_reference`` items in each of 4 concurrent requests (3 rounds), and one inline 1 MiB message named by 250
  references in the same request's input; and a third, the item in the ``previous_response_id`` history the
  requests continue. Each would become 250 MiB of items (an upstream body of 250 MiB, 250 MiB
  stored again): charged every occurrence, each is a 400 ``history_too_large`` naming its expanded size before
  anything is expanded; serve's RSS stays within its start + the budget + 256 MiB (it went 119 → 2,131 MiB), the
  database does not grow by the expansions (0.8–1.0 GB before), and a bystander tenant's small requests are all
  answered meanwhile. The control: the same item named by 20 references is served, expanded (the upstream counts
  20 items' words).
* **References that fit, but not now, wait and are refused naming their size.** Four requests of 30 references to
  the stored item each (~90 MiB charged: one fits the attacker's share of 128 MiB), held by a slow model: one is
  held, the others wait for room and get the 503 (those refused at their references' reservation naming its
  expanded size); the bystander is answered every time and RSS stays within the same bound.
* **A conversation's added items too.** References added to a conversation are charged the same before they are
  stored: past the tenant's room refused naming their expanded size, nothing stored; within it, added.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support.keyed_stack import Stack, keyed_stack
from tests.support.memory import status_kb
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/unit/test_memory_charge.py",
    reason="its store path is the items an item_reference names measured, every occurrence counted, and reserved "
           "before they are read: test_memory_charge asserts it on SQLite and on PostgreSQL")
MODEL = "fake-model"
MiB = 1 << 20
BUDGET = 256 * MiB  # a share of 128 MiB: the attacker's room
WORDS = MiB // 5  # "word " repeated: a 1 MiB item the fake model counts word by word
BIG = "word " * WORDS
HOLD = "[stall_after=1:120000]"
FAN_OUT = 250
ROUNDS = 3
ATTACKS = 4
CONTROL_REFERENCES = 20


@asynccontextmanager
async def started(fake_upstream: str, tmp_path: Path, budget: int = BUDGET) -> AsyncIterator[Stack]:
    async with keyed_stack(fake_upstream, tmp_path, ("attacker", "bystander"), env={
            "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(budget),
            "RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0.2"}) as stack:
        yield stack


def rss(stack: Stack) -> int:
    return status_kb(stack.sidecar.process.pid, "VmRSS") * 1024


def stored_bytes(tmp_path: Path) -> int:
    """The SQLite database's bytes on disk, its write-ahead log included."""
    return sum(path.stat().st_size for path in tmp_path.glob("bridge.db*"))


async def post(session: aiohttp.ClientSession, stack: Stack, door: str, body: dict[str, Any]) -> tuple[int, Any]:
    """The attacker's request (sent as bytes: no SDK walk of its list): its status and JSON answer."""
    async with session.post(f"{stack.url(door)}/v1/responses", data=orjson.dumps(body), headers={
            "Authorization": f"Bearer {stack.keys['attacker']}", "Content-Type": "application/json"}) as answer:
        return answer.status, orjson.loads(await answer.read())


async def stored_item(session: aiohttp.ClientSession, stack: Stack, door: str) -> tuple[str, str]:
    """The ids of the attacker's stored response of one 1 MiB input item, and of that item."""
    status, response = await post(session, stack, door, {"model": MODEL, "input": BIG})
    assert status == 200 and response["status"] == "completed", response
    async with session.get(f"{stack.url(door)}/v1/responses/{response['id']}/input_items", headers={
            "Authorization": f"Bearer {stack.keys['attacker']}"}) as answer:
        [item] = (await answer.json())["data"]
    return str(response["id"]), str(item["id"])


def references(form: str, item_id: str, count: int, last: str = "go") -> list[dict[str, Any]]:
    """An input of ``count`` references to the 1 MiB item: stored already (or in the history the request
    continues), or inline before them."""
    inline = [{"type": "message", "id": item_id, "role": "user", "content": BIG}] if form == "inline" else []
    return [*inline, *[{"type": "item_reference", "id": item_id}] * count, {"role": "user", "content": last}]


def request(form: str, ids: tuple[str, str], count: int, last: str = "go") -> dict[str, Any]:
    """A request of ``count`` references to the 1 MiB item in ``form``: ``stored`` (found among the tenant's
    stored items), ``history`` (in the ``previous_response_id`` chain it continues) or ``inline``."""
    extra = {"previous_response_id": ids[0]} if form == "history" else {}
    return {"model": MODEL, "input": references(form, ids[1], count, last), **extra}


async def bystander_until(client: openai.AsyncOpenAI, done: asyncio.Event, least: int) -> list[str]:
    """The bystander's small requests one after another until ``done`` (at least ``least``): each one's status,
    or its refusal's code."""
    outcomes: list[str] = []
    while not done.is_set() or len(outcomes) < least:
        try:
            outcomes.append((await client.responses.create(model=MODEL, input=f"small {len(outcomes)}")).status
                            or "")
        except openai.APIStatusError as error:
            outcomes.append(str(error.body.get("code") if isinstance(error.body, dict) else error.status_code))
    return outcomes


class Peak:
    """The highest RSS sampled while it runs (every 20 ms)."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.value, self._running = stack, rss(stack), True
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while self._running:
            self.value = max(self.value, rss(self.stack))
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        self._running = False
        await self._task
        return self.value


async def fan_out(session: aiohttp.ClientSession, stack: Stack, door: str, bystander: openai.AsyncOpenAI,
                  tmp_path: Path, form: str, ids: tuple[str, str]) -> None:
    """One form of the fan-out beside its control, its bystander, its RSS and its database measured."""
    # the control: 20 references are served, expanded (the model counts 20 items' words)
    status, control = await post(session, stack, door, request(form, ids, CONTROL_REFERENCES))
    assert status == 200 and control["status"] == "completed", control
    assert control["usage"]["input_tokens"] >= CONTROL_REFERENCES * WORDS, control["usage"]
    await asyncio.sleep(1)
    start, on_disk = rss(stack), stored_bytes(tmp_path)
    peak = Peak(stack)
    done = asyncio.Event()
    served = asyncio.create_task(bystander_until(bystander, done, least=10))
    try:
        refusals = []
        for _ in range(ROUNDS):
            refusals += await asyncio.gather(*(post(session, stack, door, request(
                form, ids, FAN_OUT, f"attack {HOLD}")) for _ in range(ATTACKS)))
    finally:
        done.set()
        outcomes = await served
        highest = await peak.stop()
    grown = stored_bytes(tmp_path) - on_disk
    for status, answer in refusals:  # each refused before anything was expanded, naming its expanded size
        assert status == 400 and answer["error"]["code"] == "history_too_large", (form, answer)
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        assert f"{FAN_OUT} items, " in answer["error"]["message"], (form, answer)
        assert "bytes expanded" in answer["error"]["message"], (form, answer)
    assert outcomes == ["completed"] * len(outcomes), (form, outcomes)
    assert highest <= start + BUDGET + 256 * MiB, (form, (highest - start) / MiB)
    assert grown < 16 * MiB, (form, grown / MiB)  # nothing expanded was stored (1 GB before)


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_reference_fan_out_is_refused_before_it_is_held_and_the_bystander_is_served(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    """Each form in turn on one sidecar: the item stored, the item in the history continued, the item inline."""
    async with started(fake_upstream, tmp_path) as stack, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session, \
            async_sdk(base_url=f"{stack.url(door)}/v1", api_key=stack.keys["bystander"], max_retries=0,
                      timeout=120) as bystander:
        ids = await stored_item(session, stack, door)
        for form in ("stored", "history", "inline"):
            await fan_out(session, stack, door, bystander, tmp_path, form, ids if form != "inline" else
                          ("", "msg_inline"))


async def held(session: aiohttp.ClientSession, stack: Stack, door: str, body: dict[str, Any]) -> Any:
    """One of the attacker's streamed requests: its answer once the model's first text is in (it is held: the
    model stalls), or its refusal's status and JSON."""
    answer = await session.post(f"{stack.url(door)}/v1/responses", data=orjson.dumps({**body, "stream": True}),
                                headers={"Authorization": f"Bearer {stack.keys['attacker']}",
                                         "Content-Type": "application/json"})
    if answer.status != 200:
        refused = (answer.status, orjson.loads(await answer.read()))
        answer.close()
        return refused
    async for line in answer.content:
        if b"response.output_text.delta" in line:
            return answer
        assert b"response.failed" not in line, line[:500]
    raise AssertionError("the held stream ended early")


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_references_that_fit_but_not_now_wait_and_are_refused_naming_their_expanded_size(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    count = 30  # ~90 MiB charged: the attacker's share of 128 MiB holds one such request
    answers: list[Any] = []
    async with started(fake_upstream, tmp_path) as stack, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session, \
            async_sdk(base_url=f"{stack.url(door)}/v1", api_key=stack.keys["bystander"], max_retries=0,
                      timeout=120) as bystander:
        ids = await stored_item(session, stack, door)
        await asyncio.sleep(1)
        start = rss(stack)
        peak = Peak(stack)
        done = asyncio.Event()
        served = asyncio.create_task(bystander_until(bystander, done, least=10))
        try:
            answers = list(await asyncio.gather(*(held(session, stack, door, request(
                "stored", ids, count, f"attack {HOLD}")) for _ in range(ATTACKS))))
        finally:
            done.set()
            outcomes = await served
            highest = await peak.stop()
            for answer in answers:
                if isinstance(answer, aiohttp.ClientResponse):
                    answer.close()
    streams = [answer for answer in answers if isinstance(answer, aiohttp.ClientResponse)]
    refusals = [answer for answer in answers if not isinstance(answer, aiohttp.ClientResponse)]
    assert len(streams) == 1, answers  # the share holds one
    for status, answer in refusals:  # the rest waited for room and were refused, retryable
        assert status == 503 and answer["error"]["code"] in {"memory_share_exceeded", "server_overloaded"}, answer
    # those refused waiting for their references' room name what they would hold (on a loaded machine a later one
    # may wait behind them in the fair queue for its body's room, and be refused before its references are reached)
    named = [answer["error"]["message"] for _, answer in refusals if "bytes expanded" in answer["error"]["message"]]
    assert named and all(f"{count} items, " in message for message in named), refusals
    assert outcomes == ["completed"] * len(outcomes), outcomes
    assert highest <= start + BUDGET + 256 * MiB, (highest - start) / MiB


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_references_added_to_a_conversation_are_charged_the_same(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    """``POST /v1/conversations/{id}/items`` resolves references among the conversation's items (or the tenant's
    stored ones) before storing them, at most 20 items an add: on a 64 MiB budget (a share of 32 MiB), 20 to its
    1 MiB item (~60 MiB charged) are refused naming their expanded size, nothing stored; 5 are added, each the
    item itself."""
    headers = {"Authorization": "", "Content-Type": "application/json"}
    async with started(fake_upstream, tmp_path, 64 * MiB) as stack, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        headers["Authorization"] = f"Bearer {stack.keys['attacker']}"
        async with session.post(f"{stack.url(door)}/v1/conversations", headers=headers, data=orjson.dumps(
                {"items": [{"type": "message", "role": "user", "content": BIG}]})) as answer:
            conversation = (await answer.json())["id"]
        items = f"{stack.url(door)}/v1/conversations/{conversation}/items"
        async with session.get(items, headers=headers) as answer:
            [item] = (await answer.json())["data"]
        on_disk = stored_bytes(tmp_path)
        async with session.post(items, headers=headers, data=orjson.dumps(
                {"items": [{"type": "item_reference", "id": item["id"]}] * 20})) as answer:
            refused = (answer.status, await answer.json())
        grown = stored_bytes(tmp_path) - on_disk
        async with session.post(items, headers=headers, data=orjson.dumps(
                {"items": [{"type": "item_reference", "id": item["id"]}] * 5})) as answer:
            added = (answer.status, await answer.json())
    status, error = refused
    assert status == 400 and error["error"]["code"] == "history_too_large", error
    assert "20 items, " in error["error"]["message"] and "bytes expanded" in error["error"]["message"]
    assert grown < 4 * MiB, grown / MiB
    assert added[0] == 200 and len(added[1]["data"]) == 5, str(added)[:500]
    assert all(entry["id"] == item["id"] and entry["content"] == item["content"] for entry in added[1]["data"])
