"""A session's queued input waits in the store, not in the sidecar's memory, through a real sidecar with ``auth: keys``
on a SQLite file of its own: input sent while a turn runs is stored with its queued turn's record (read here from the
database file), read back when the turn starts, and gone from that record once it has (the turn's items hold it);
the turns run with it. Before, every queued input stayed in memory until its turn ran: 32 queued inputs of 8 MB
held 245 MiB per session, which no budget counted."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.test_program_containment import make_keys
from tests.support.bridge import Sidecar, running_sidecar

pytestmark = pytest.mark.store_free

MODEL = "fake-model"
BETA = {"OpenAI-Beta": "agents=v1"}
PART = 256 << 10


@dataclass
class Stack:
    sidecar: Sidecar
    db: Path
    key: str

    def headers(self) -> dict[str, str]:
        return {**BETA, "Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("agents-queued")
    db = tmp / "bridge.db"
    keys = await make_keys(db, "acme")
    async with running_sidecar(str(tmp), fake_upstream, "--db", str(db), extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "keys"}, own_sqlite=True) as sidecar:
        yield Stack(sidecar, db, keys["acme"])


def stored_turns(db: Path, session_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT body FROM agent_records WHERE kind = 'turn' AND parent = ? ORDER BY seq",
                            (session_id,)).fetchall()
    return [orjson.loads(body) for (body,) in rows]


def message(mark: str) -> dict[str, Any]:
    parts = [{"type": "input_text", "text": f"{mark}{index} " + "q" * PART} for index in range(2)]
    return {"type": "agent.session.input.message", "input": [{"role": "user", "content": parts}]}


async def test_queued_input_waits_in_the_store_and_the_turns_run_with_it(stack: Stack) -> None:
    async with aiohttp.ClientSession(base_url=stack.sidecar.http_url, headers=stack.headers(),
                                     timeout=aiohttp.ClientTimeout(total=120)) as http:
        async with http.post("/v1/agents/sessions", json={
                "agent": {"model": MODEL}, "environment": {"type": "none"},
                "input": "slow [chunks=40] [delay=100]"}) as answer:
            session = await answer.json()
            assert answer.status == 200, session
        async with http.post(f"/v1/agents/sessions/{session['id']}/events",
                             json={"events": [message(mark) for mark in ("first", "second", "third")]}) as answer:
            assert answer.status == 202, await answer.text()
        queued = [turn for turn in stored_turns(stack.db, session["id"]) if turn["status"] == "queued"]
        assert len(queued) == 3, [turn["status"] for turn in stored_turns(stack.db, session["id"])]
        for turn, mark in zip(queued, ("first", "second", "third"), strict=True):
            [kept] = turn["_private"]["input"]
            assert [part["text"][:len(mark) + 1] for part in kept["content"]] == [f"{mark}0", f"{mark}1"]
        async with http.get(f"/v1/agents/sessions/{session['id']}/events", params={"until_idle": "true"}) as answer:
            raw = await answer.read()
        assert raw.count(b"event: agent.session.turn.completed\n") == 4, raw[-2000:]
        turns = stored_turns(stack.db, session["id"])
        assert [turn["status"] for turn in turns] == ["completed"] * 4
        assert all("input" not in (turn.get("_private") or {}) for turn in turns)  # read back, then let go
        async with http.get(f"/v1/agents/sessions/{session['id']}/items", params={"order": "asc", "limit": 100}
                            ) as answer:
            items = (await answer.json())["data"]
        texts = [part["text"][:7] for item in items if item.get("role") == "user" for part in item["content"]]
        assert texts[1:] == ["first0 ", "first1 ", "second0", "second1", "third0 ", "third1 "], texts
