"""Schema-generated requests against every route, through both doors (tests/support/fuzz.py).

A short, deterministic run: the same few hundred requests on every run (hypothesis ``derandomize``, no example
database). ``scripts/fuzz --examples 10000`` runs the same generator for as long as wanted and prints counts.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import SocketTally, Tally, listed_inputs, run, run_websocket

pytestmark = pytest.mark.store_proven(
    "tests/unit/test_store_contract.py",
    "tests/unit/test_chat_completion_store.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

EXAMPLES = 300


async def test_generated_requests_get_openai_shaped_answers(base_url: str) -> None:
    tally = await asyncio.to_thread(run, Tally(base_url), EXAMPLES)  # raises on the first broken promise
    assert tally.sent >= EXAMPLES
    assert sum(count for status, count in tally.statuses.items() if status < 300) > 0  # some went all the way


async def test_listed_hostile_inputs_get_openai_shaped_4xx(base_url: str) -> None:
    tally = Tally(base_url)
    for request in listed_inputs():
        await asyncio.to_thread(tally.send, request)
    assert all(400 <= status < 500 for status in tally.statuses), tally.statuses


async def test_generated_websocket_turns_keep_the_socket_and_the_shape(base_url: str) -> None:
    tally = await asyncio.to_thread(run_websocket, SocketTally(base_url), EXAMPLES // 3)
    assert tally.turns >= EXAMPLES // 3 and tally.kinds["response.completed"] > 0
