"""A response's subagents inside the memory budget and the upstream connection bounds, end to end: a real sidecar
behind a real Envoy, the fake upstream as the root model spawning 64 subagents whose turns stall, a request with
2 MiB of function tools (run/subagents.py, run/upstream_gate.py, services/memory_budget.py).

* While the 64 subagents are held, what the sidecar's memory grew by is covered by what the budget holds: each
  subagent reserves for its tools and context before it is begun (before: the budget held the root request's
  share only, while each subagent's translation and upstream body were its own).
* At no time does the response hold more than ``RESPONSES_BRIDGE_UPSTREAM_RESPONSE_CONNECTIONS`` upstream calls:
  counted as the sidecar's open connections to the upstream (before: one per subagent, 64).
Through the HTTP door and through Envoy (which hands multi-agent requests to the HTTP door).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import openai
import psutil
import pytest

from responses_bridge.devtools.procs import process_rss_mb
from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

MiB = 1 << 20
BETA = ["responses_multi_agent=v1"]
SUBAGENTS = 64
PER_RESPONSE = 8
TOOLS = [{"type": "function", "name": f"lookup_{at}", "description": "d" * (32 << 10),
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}} for at in range(64)]  # 2 MiB
STALL_MS = 2500


@dataclass
class Stack:
    sidecar: Sidecar
    envoy_url: str
    upstream_port: int  # where the sidecar's own upstream calls go: Envoy's listener (upstream_via)

    def url(self, door: str) -> str:
        return self.sidecar.http_url if door == "http" else self.envoy_url


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    listen_port = free_port()
    env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(4 << 30),
           "RESPONSES_BRIDGE_UPSTREAM_RESPONSE_CONNECTIONS": str(PER_RESPONSE)}
    async with running_sidecar(str(tmp_path_factory.mktemp("subagent-budget")), fake_upstream, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1", env=env, own_sqlite=True) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Stack(sidecar, f"http://127.0.0.1:{listen_port}", listen_port)
        finally:
            envoy.stop()


async def held_bytes(sidecar: Sidecar) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{sidecar.http_url}/metrics") as response:
        text = await response.text()
    found = re.search(r"^responses_bridge_memory_budget_held_bytes(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert found, "no memory budget gauge in /metrics"
    return int(float(found.group(1)))


def upstream_connections(pid: int, port: int) -> int:
    """The sidecar's open connections to its upstream (here: Envoy's listener)."""
    return sum(1 for connection in psutil.Process(pid).net_connections(kind="tcp")
               if connection.raddr and connection.raddr.port == port and connection.status == "ESTABLISHED")


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_64_subagents_are_charged_for_what_they_hold_and_open_at_most_the_responses_upstream_calls(
        stack: Stack, door: str) -> None:
    pid = stack.sidecar.process.pid
    assert await held_bytes(stack.sidecar) == 0
    before = process_rss_mb(pid)
    spawns = "\n".join(f"spawn: task {at} {{stall={STALL_MS}}}" for at in range(SUBAGENTS))
    async with openai.AsyncOpenAI(base_url=f"{stack.url(door)}/v1", api_key="sk-client", max_retries=0,
                                  timeout=300) as client:
        request = asyncio.create_task(client.beta.responses.create(
            model="fake-model", input=spawns, tools=TOOLS,  # type: ignore[arg-type]
            multi_agent={"enabled": True, "max_concurrent_subagents": SUBAGENTS}, betas=BETA))
        grown, charged, most_connections = 0.0, 0, 0
        while not request.done():  # sampled while the subagents are held (bounded by the request's own end)
            held = await held_bytes(stack.sidecar)
            growth = process_rss_mb(pid) - before
            if growth > grown:
                grown, charged = growth, held
            most_connections = max(most_connections, upstream_connections(pid, stack.upstream_port))
            await asyncio.sleep(0.2)
        response = await request
    assert response.status == "completed", response
    waited = [item for item in response.output if item.type == "multi_agent_call_output"][-1]
    assert waited.output[0].text.count("(completed)") == SUBAGENTS  # type: ignore[union-attr]
    assert 0 < most_connections <= PER_RESPONSE, most_connections
    print(f"grew {grown:.0f} MB while the budget held {charged / 1e6:.0f} MB; {most_connections} upstream calls")
    assert grown * 1e6 <= charged, f"grew {grown:.0f} MB while the budget held {charged / 1e6:.0f} MB"
    assert await held_bytes(stack.sidecar) == 0  # all given back
