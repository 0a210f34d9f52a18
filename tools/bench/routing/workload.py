"""The routing benchmark's workload: Codex-like sessions, each a chain of ``POST /v1/responses`` turns through the
bridge, and what each turn's client saw (time to first token, errors).

Every session sends the same long ``instructions`` and ``tools`` (a coding agent's system prompt and its function
tools: the shared prefix) on each turn, as Codex does, and chains its turns with ``previous_response_id``, so the
bridge re-sends the whole growing history to the backend each time. A session is a run of *tasks*: a user message
(``[tools:K answer:N]`` in it tells the simulated model to call the ``shell`` tool K times before a text answer of
N tokens, see tools/fakes/vllm_model.py), then K turns answering the model's function call with a
``function_call_output`` (a file's contents, hundreds of tokens: the tool loop answered by the client, after the
command's run time), each a turn of the chain; then the user thinks and sends the next task. Everything is drawn
from one seed per session, so every configuration measured gets the very same sessions.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

_WORDS = [f"{a}{b}{c}" for a in "bcdfghjklmnprstvwz" for b in "aeiouy" for c in "dklmnrstx"]
"""Three-letter words: with its space one word is four bytes, one token of the simulated replicas."""


@dataclass(frozen=True)
class Shape:
    """The sessions' shape: how many, how long, how big each part, and the client's own pauses."""

    sessions: int = 32
    turns: tuple[int, int] = (8, 20)
    prefix_tokens: int = 6000
    user_tokens: tuple[int, int] = (30, 200)
    answer_tokens: tuple[int, int] = (40, 200)
    output_tokens: tuple[int, int] = (200, 1500)
    tool_seconds: tuple[float, float] = (0.2, 1.0)
    think_seconds: tuple[float, float] = (0.5, 2.0)
    ramp_seconds: float = 10.0
    model: str = "sim"
    seed: int = 99


def words(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(tokens))


def shared_prefix(shape: Shape) -> tuple[str, list[dict[str, Any]]]:
    """The instructions (five sixths of the prefix) and eight function tools (the rest), the same for every
    session."""
    rng = random.Random(shape.seed)
    tool_tokens = shape.prefix_tokens // 6
    tools = [{"type": "function", "name": "shell" if index == 0 else f"tool_{index}",
              "description": words(rng, tool_tokens // 8 - 30),
              "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                             "required": ["command"]}}
             for index in range(8)]
    return words(rng, shape.prefix_tokens - tool_tokens), tools


@dataclass
class Turn:
    """One request of a session: its input items and, after it, the client's pause."""

    input: list[dict[str, Any]]
    pause: float


@dataclass
class Outcome:
    """What the client saw of one turn."""

    session: int
    ttft: float | None
    seconds: float
    error: str | None = None


@dataclass
class Session:
    """One session's turns, drawn from its own seed; function_call_output items get their call id when sent."""

    index: int
    turns: list[Turn] = field(default_factory=list)


def sessions(shape: Shape) -> list[Session]:
    made = []
    for index in range(shape.sessions):
        rng = random.Random(shape.seed * 1_000_003 + index)
        total = rng.randint(*shape.turns)
        session = Session(index)
        task = 0
        while len(session.turns) < total:
            left = total - len(session.turns)
            calls = min(rng.choice((0, 1, 1, 2, 2, 3)), left - 1)
            answer = rng.randint(*shape.answer_tokens)
            text = f"session {index} task {task}: {words(rng, rng.randint(*shape.user_tokens))} " \
                   f"[tools:{calls} answer:{answer}]"
            pause = rng.uniform(*shape.tool_seconds) if calls else rng.uniform(*shape.think_seconds)
            session.turns.append(Turn([{"type": "message", "role": "user", "content": text}], pause))
            for call in range(calls):
                output = words(rng, rng.randint(*shape.output_tokens))
                pause = rng.uniform(*shape.tool_seconds) if call < calls - 1 else rng.uniform(*shape.think_seconds)
                session.turns.append(Turn([{"type": "function_call_output", "call_id": "", "output": output}], pause))
            task += 1
        made.append(session)
    return made


async def run_session(http: aiohttp.ClientSession, url: str, shape: Shape, session: Session,
                      outcomes: list[Outcome]) -> None:
    """The session's turns one after another, each chained to the last; a failed turn ends the session (its chain
    is broken), counted as an error."""
    instructions, tools = shared_prefix(shape)
    await asyncio.sleep(shape.ramp_seconds * session.index / max(1, shape.sessions))
    previous: str | None = None
    call_id = ""
    for turn in session.turns:
        items = [dict(item, call_id=call_id) if item["type"] == "function_call_output" else item
                 for item in turn.input]
        body: dict[str, Any] = {"model": shape.model, "instructions": instructions, "tools": tools,
                                "input": items, "stream": True, "store": True}
        if previous:
            body["previous_response_id"] = previous
        outcome, response = await _one_turn(http, url, body, session.index)
        outcomes.append(outcome)
        if outcome.error is not None or response is None:
            return
        previous = response["id"]
        calls = [item for item in response.get("output", []) if item.get("type") == "function_call"]
        call_id = calls[-1]["call_id"] if calls else ""
        await asyncio.sleep(turn.pause)


async def _one_turn(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
                    index: int) -> tuple[Outcome, dict[str, Any] | None]:
    """Send one streamed turn: time to its first delta (text or call arguments: the model's first token) and the
    completed response."""
    started = time.monotonic()
    ttft: float | None = None
    try:
        async with http.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as reply:
            if reply.status != 200:
                text = (await reply.read())[:200].decode(errors="replace")
                return Outcome(index, None, time.monotonic() - started, f"http {reply.status}: {text}"), None
            async for line in reply.content:
                if not line.startswith(b"data: {"):
                    continue
                if ttft is None and b'.delta"' in line[:80]:
                    ttft = time.monotonic() - started
                if b'"response.completed"' in line[:60] or b'"response.failed"' in line[:60] \
                        or b'"response.incomplete"' in line[:60]:
                    event = orjson.loads(line[6:])
                    seconds = time.monotonic() - started
                    if event["type"] != "response.completed":
                        error = (event["response"].get("error") or {}).get("message") or event["type"]
                        return Outcome(index, ttft, seconds, str(error)), None
                    return Outcome(index, ttft, seconds), event["response"]
        return Outcome(index, ttft, time.monotonic() - started, "stream ended before its terminal event"), None
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Outcome(index, ttft, time.monotonic() - started, type(exc).__name__), None
