"""The crash probe's ``waiting`` kind (probe.py): an Agents session whose turn waits on the client.

Its agent has a function tool (``lookup``) and its input asks the model to call it, so the turn's first response
ends with a call for the client and the session goes ``requires_action``: the kill lands while the turn waits (or,
for a session opened just before the kill, while it is being asked for). The call is answered only after the kill,
once the killed process is started again: the probe finds the session's pending ``required_actions`` (on any
process of the deployment) and sends each a ``tool_result``; a ``409 session_busy`` (the session's lease not
lapsed yet, or held by another live replica) is sent again to the next replica, as a load balancer spreads
retries. The turn must then complete once, its answer ``Tool result: <the output sent>`` — nothing asked twice,
nothing lost: the wait lived in the store, not in the stopped process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

BETA = {"OpenAI-Beta": "agents=v1"}
LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}
LABEL = "lookup"  # the run's one input: answered by the turn the tool result completes


def answer_text(marker: str) -> str:
    """What the client's tool result says, and so how the turn's answer begins (``Tool result: …``)."""
    return f"{marker} looked up"


async def open_waiting(http: aiohttp.ClientSession, base: str, marker: str) -> str | None:
    """A session whose turn calls the client's function: its id, if the sidecar accepted it."""
    async with http.post(f"{base}/v1/agents/sessions", headers=BETA, json={
            "agent": {"model": "fake-model", "tools": [LOOKUP]}, "environment": {"type": "none"},
            "input": f"call lookup {marker}"}) as answer:
        if answer.status != 200:
            return None
        return str((await answer.json())["id"])


async def answer_waiting(http: aiohttp.ClientSession, bases: list[str], session_id: str, marker: str,
                         deadline: float) -> str:
    """Sends the tool result of each call the session requires action for, once it does; what happened (``""``:
    answered)."""
    base = bases[0]
    while True:
        try:
            async with http.get(f"{base}/v1/agents/sessions/{session_id}", headers=BETA) as answer:
                session: dict[str, Any] = await answer.json() if answer.status == 200 else {}
        except (TimeoutError, aiohttp.ClientError):
            session = {}
        actions = session.get("required_actions") or []
        if session.get("status") == "requires_action" and actions:
            break
        if session.get("status") == "idle" or time.monotonic() > deadline:
            return f"never required action (status {session.get('status')})"
        await asyncio.sleep(0.2)
    tries = 0
    for action in actions:
        event = {"type": "agent.session.input.tool_result", "call_id": action["call_id"],
                 "turn_id": action["turn_id"], "success": True, "output": answer_text(marker)}
        while True:
            try:
                async with http.post(f"{base}/v1/agents/sessions/{session_id}/events", headers=BETA,
                                     json={"events": [event]}) as answer:
                    if answer.status == 202:
                        break
                    if answer.status != 409:  # 409: another process still holds the session's lease
                        return f"tool_result answered {answer.status}: {await answer.text()}"
            except (TimeoutError, aiohttp.ClientError):
                pass
            tries += 1
            base = bases[tries % len(bases)]
            if time.monotonic() > deadline:
                return "tool_result never accepted"
            await asyncio.sleep(0.2)
    return ""
