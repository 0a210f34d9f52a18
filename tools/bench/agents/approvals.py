"""``scripts/bench agent-approvals``: what an MCP approval costs an Agents API session's turn.

Through the sidecar's HTTP door over the fake upstream and the MCP test server: the median time of a session's
turn (a new session streamed to its first idle) whose model calls a read-only MCP tool (run at once), against one
whose call is held for approval and approved as soon as the session requires action (the approval posted, the
stream read on to idle), and one whose call is denied (the model told). Requests interleaved, one after another, so
a slow patch of the shared machine weighs on each kind alike; the figures are ratios to the read-only call, which
is what an approval adds to a turn whatever the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import aiohttp
import orjson

from tests.support.bridge import running_fake_upstream, running_sidecar
from tests.support.mcp_server import running_mcp_server

BETA = {"OpenAI-Beta": "agents=v1"}


async def turn(http: aiohttp.ClientSession, mcp_url: str, text: str, decision: str | None) -> None:
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["echo", "lookup"],
            "transport": {"type": "http", "server_url": mcp_url}}
    async with http.post("/v1/agents/sessions", headers=BETA, json={
            "agent": {"model": "fake-model", "tools": [tool]}, "environment": {"type": "none"}, "input": text,
            "stream": True}) as answer:
        raw, answered = b"", False
        async for chunk in answer.content.iter_any():
            raw += chunk
            if not answered and b"event: agent.session.requires_action\n" in raw and raw.endswith(b"\n\n"):
                block = raw.split(b"event: agent.session.requires_action\n", 1)[1]
                session = orjson.loads(block.split(b"data: ", 1)[1].split(b"\n", 1)[0])["session"]
                [action] = session["required_actions"]
                assert decision is not None, "a read-only call was held"
                async with http.post(f"/v1/agents/sessions/{session['id']}/events", headers=BETA, json={"events": [
                        {"type": "agent.session.input.mcp_approval_request_result",
                         "request_id": action["request_id"],
                         "response": {"type": "mcp_tool_call", "decision": decision}}]}) as posted:
                    assert posted.status == 202, await posted.text()
                answered = True
            if b"event: agent.session.idle\n" in raw and raw.endswith(b"\n\n"):
                break
    assert answered == (decision is not None)


async def measure(base: str, mcp_url: str, rounds: int) -> dict[str, list[float]]:
    cases = {"read-only call, no approval": ('call tools__lookup [args={"key": "k"}]', None),
             "call approved": ('call tools__echo [args={"text": "t"}]', "approve"),
             "call denied": ('call tools__echo [args={"text": "t"}]', "deny")}
    times: dict[str, list[float]] = {}
    async with aiohttp.ClientSession(base) as http:
        for round_ in range(rounds + 5):
            for kind, (text, decision) in cases.items():
                started = time.perf_counter()
                await turn(http, mcp_url, text, decision)
                if round_ >= 5:  # the first rounds warm up
                    times.setdefault(kind, []).append(time.perf_counter() - started)
    return times


async def run(rounds: int) -> None:
    async with running_fake_upstream() as upstream_url, running_mcp_server() as mcp:
        with tempfile.TemporaryDirectory() as tmp:
            async with running_sidecar(tmp, upstream_url, extproc=False, own_sqlite=True,
                                       env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}) as sidecar:
                times = await measure(sidecar.http_url, mcp.http_url, rounds)
    direct = statistics.median(times["read-only call, no approval"])
    for kind, spent in times.items():
        print(f"{kind:28s} median {statistics.median(spent) * 1000:7.2f} ms  ratio to a read-only call "
              f"{statistics.median(spent) / direct:5.2f}")
    print(f"({rounds} rounds)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench agent-approvals", description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=50, help="measured rounds of the three kinds "
                        "(after 5 that warm up; default 50)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
