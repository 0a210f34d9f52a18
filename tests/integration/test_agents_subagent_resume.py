"""A session's subagents across its turns, every event and answer validated strictly with the SDK's types: the
first turn's subagent is closed with its response and kept with its context; a later turn's ``followup_task``
resumes it (``resume_subagent_call``, ``agent.session.subagent.active``) — the same subagent, no new one — and
``interrupt_agent`` with ``close`` closes it mid-turn (``close_subagent_call``, ``agent.session.subagent.closed``).
The kept context is the subagent record's, counted in its stored bytes (read from the SQLite file), and never
shown. The subagent tree is behind the door: on the HTTP door alone (agent_doors ``doors``; a session's subagents
through Envoy too: tests/integration/test_agents_subagents.py)."""

from __future__ import annotations

import glob
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.beta import Subagent
from openai.types.beta.agents.sessions import Turn

from tests.integration.test_agents_api import MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.postgres import store_from_env
from tests.support.sdk_strict import strict_session_event


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-subagent-resume")


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, bridge_dir: Path) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(bridge_dir), fake_upstream) as started:
        yield started


async def events_of(answer: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    assert answer.status == 200, await answer.text()
    events = [event for _, event in frames(await read_until_idle(answer))]
    for event in events:
        strict_session_event(event)
    return events


async def next_turn(door: aiohttp.ClientSession, session_id: str, after: str, text: str) -> list[dict[str, Any]]:
    async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
            {"type": "agent.session.input.message",
             "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}]}) as posted:
        assert posted.status == 202, await posted.text()
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        params={"until_idle": "true", "after": after}) as answer:
        return await events_of(answer)


def items(events: list[dict[str, Any]], turn_id: str) -> list[tuple[str, str, str | None]]:
    """The root turn's calls of the tree as told: (added or done, type, status)."""
    return [(event["type"].rsplit(".", 1)[1], event["item"]["type"], event["item"].get("status"))
            for event in events if event.get("turn_id") == turn_id and event["type"].startswith(
                "agent.session.turn.item.") and event["item"]["type"].endswith("_call")]


def lifecycle(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["type"], event["subagent"]["status"]) for event in events
            if event["type"].startswith("agent.session.subagent.")]


def root_turn(events: list[dict[str, Any]]) -> str:
    return next(event["turn"]["id"] for event in events
                if event["type"] == "agent.session.turn.created" and not event["turn"]["subagent_id"])


def followup(task: str, then: str, close: bool = False) -> str:
    args = {"agent_name": "agent_1", "task": task, **({"close": True} if close else {})}
    return f"call followup_task [args={orjson.dumps(args).decode()}] [then={then}]"


@doors("http")
async def test_a_later_turn_resumes_and_closes_the_first_turns_subagent(door: aiohttp.ClientSession,
                                                                       sdk: openai.AsyncOpenAI,
                                                                       bridge_dir: Path) -> None:
    agent = await sdk.beta.agents.create(model=MODEL, multi_agent={"enabled": True})
    async with door.post("/v1/agents/sessions", json={"agent_id": agent.id, "environment": {"type": "none"},
                                                      "stream": True, "input": "spawn: remember kiwi"}) as answer:
        first = await events_of(answer)
    session_id = first[0]["session"]["id"]
    assert lifecycle(first) == [("agent.session.subagent.created", "active"), ("agent.session.subagent.closed",
                                                                                "closed")]
    subagent_id = next(event["subagent"]["id"] for event in first if "subagent" in event)

    # the second turn: a follow-up resumes it, the same subagent, in its context
    second = await next_turn(door, session_id, first[-1]["event_id"], followup("which fruit", "wait_agent"))
    assert lifecycle(second) == [("agent.session.subagent.active", "active"),
                                 ("agent.session.subagent.closed", "closed")]
    turn_id = root_turn(second)
    assert items(second, turn_id)[:4] == [
        ("added", "resume_subagent_call", "in_progress"), ("added", "send_subagent_input_call", "in_progress"),
        ("done", "resume_subagent_call", "completed"), ("done", "send_subagent_input_call", "completed")]
    resume = next(event["item"] for event in second if event["type"] == "agent.session.turn.item.done"
                  and event["item"]["type"] == "resume_subagent_call")
    assert (resume["sender_agent_id"], resume["recipient_agent_id"], resume["turn_id"]) == (
        agent.id, subagent_id, turn_id)
    active = next(event["subagent"] for event in second if event["type"] == "agent.session.subagent.active")
    assert (active["id"], active["closed_at"]) == (subagent_id, None)
    answered = [event["item"] for event in second if event["type"] == "agent.session.turn.item.done"
                and event["turn_id"] != turn_id and event["item"]["type"] == "message"]
    assert answered and answered[-1]["content"][0]["text"] == "Echo: which fruit", answered

    # the third: resumed again, then closed by the model before the turn ends
    third = await next_turn(door, session_id, second[-1]["event_id"],
                            followup("slow down", "interrupt_agent", close=True))
    assert lifecycle(third) == [("agent.session.subagent.active", "active"),
                                ("agent.session.subagent.closed", "closed")]
    closing = [entry for entry in items(third, root_turn(third)) if entry[1] == "close_subagent_call"]
    assert closing == [("added", "close_subagent_call", "in_progress"), ("done", "close_subagent_call", "completed")]

    # one subagent in all, closed, shown as the SDK's Subagent (its kept context is not), with a turn per piece
    async with door.get(f"/v1/agents/sessions/{session_id}/subagents") as answer:
        listed = (await answer.json())["data"]
    assert [strict(Subagent, entry).status for entry in listed] == ["closed"] and listed[0]["id"] == subagent_id
    async with door.get(f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}") as answer:
        assert "_private" not in await answer.json()
    async with door.get(f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}/turns",
                        params={"order": "asc"}) as answer:
        turns = [strict(Turn, entry) for entry in (await answer.json())["data"]]
    assert [turn.status for turn in turns] == ["completed", "completed", "cancelled"]

    if store_from_env() == "sqlite":  # the kept context, in the record's stored bytes
        [database] = glob.glob(os.path.join(bridge_dir, "bridge-*.db"))
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            body, size = db.execute("SELECT body, bytes FROM agent_records WHERE kind = 'subagent' AND id = ?",
                                    (subagent_id,)).fetchone()
        context = orjson.loads(body)["_private"]["context"]
        # the pieces the root collected (the third was closed before it was): each task and the subagent's answer
        assert [(entry["type"], entry.get("role")) for entry in context] == [
            ("message", "user"), ("message", "assistant")] * 2
        assert [entry["content"] for entry in context if entry.get("role") == "user"] == ["remember kiwi",
                                                                                          "which fruit"]
        assert size >= len(orjson.dumps(context))
