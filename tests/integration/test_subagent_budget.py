"""A response's subagents inside the memory budget and the upstream connection bounds, end to end: a real sidecar
making its model calls through a real Envoy, the fake upstream as the root model spawning 64 subagents whose turns
stall, a request with 2 MiB of function tools (run/subagents.py, run/upstream_gate.py,
services/tenancy/memory_budget.py).

* While the 64 subagents are held, what the sidecar's memory grew by is covered by what the budget holds: each
  subagent reserves for its tools and context before it is begun (before: the budget held the root request's
  share only, while each subagent's translation and upstream body were its own).
* At no time does the response hold more than ``RESPONSES_BRIDGE_UPSTREAM_RESPONSE_CONNECTIONS`` upstream calls:
  counted as the sidecar's open connections to the upstream (before: one per subagent, 64).
Through the HTTP door, which runs the tree whichever door the request came in by: Envoy's hand-off of a multi-agent
request to it is tests/integration/test_multi_agent.py's (through a real Envoy), and the processor giving back its
hold on the body as it hands off is tests/unit/test_extproc_multi_agent.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psutil
import pytest

from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk
from tools.process_memory import process_rss_mb

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

MiB = 1 << 20
BETA = ["responses_multi_agent=v1"]
SUBAGENTS = 64
PER_RESPONSE = 8
TOOLS = [{"type": "function", "name": f"lookup_{at}", "description": "d" * (32 << 10),
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}} for at in range(64)]  # 2 MiB
STALL_MS = 2500  # each of the 8 waves held across many of the 0.2 s samples below: RSS given back lags the charges


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(4 << 30),
           "RESPONSES_BRIDGE_UPSTREAM_RESPONSE_CONNECTIONS": str(PER_RESPONSE)}
    async with running_gateway(str(tmp_path_factory.mktemp("subagent-budget")), fake_upstream, env=env,
                               own_sqlite=True) as gateway:
        yield gateway



def upstream_connections(pid: int, port: int) -> int:
    """The sidecar's open connections to its upstream (here: Envoy's listener)."""
    return sum(1 for connection in psutil.Process(pid).net_connections(kind="tcp")
               if connection.raddr and connection.raddr.port == port and connection.status == "ESTABLISHED")


async def test_64_subagents_are_charged_for_what_they_hold_and_open_at_most_the_responses_upstream_calls(
        stack: Gateway) -> None:
    pid = stack.sidecar.process.pid
    assert await stack.held_bytes() == 0
    before = process_rss_mb(pid)
    spawns = "\n".join(f"spawn: task {at} {{stall={STALL_MS}}}" for at in range(SUBAGENTS))
    async with async_sdk(base_url=f"{stack.door_url('http')}/v1", api_key="sk-client", max_retries=0,
                                  timeout=300) as client:
        request = asyncio.create_task(client.beta.responses.create(
            model="fake-model", input=spawns, tools=TOOLS,  # type: ignore[arg-type]
            multi_agent={"enabled": True, "max_concurrent_subagents": SUBAGENTS}, betas=BETA))
        grown, charged, most_connections = 0.0, 0, 0
        while not request.done():  # sampled while the subagents are held (bounded by the request's own end)
            held = await stack.held_bytes()
            growth = process_rss_mb(pid) - before
            if growth > grown:
                grown, charged = growth, held
            most_connections = max(most_connections, upstream_connections(pid, stack.listen_port))
            await asyncio.sleep(0.2)
        response = await request
    assert response.status == "completed", response
    waited = [item for item in response.output if item.type == "multi_agent_call_output"][-1]
    assert waited.output[0].text.count("(completed)") == SUBAGENTS  # type: ignore[union-attr]
    assert 0 < most_connections <= PER_RESPONSE, most_connections
    print(f"grew {grown:.0f} MB while the budget held {charged / 1e6:.0f} MB; {most_connections} upstream calls")
    assert grown * 1e6 <= charged, f"grew {grown:.0f} MB while the budget held {charged / 1e6:.0f} MB"
    assert await stack.held_bytes() == 0  # all given back
