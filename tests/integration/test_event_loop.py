"""The event loop is chosen (process/event_loop.py): each serving process runs on the loop
``RESPONSES_BRIDGE_EVENT_LOOP`` (or ``--event-loop``) names, uvloop by default where it is installed, and says which in
its ``serving`` line; both doors answer on either loop through a real Envoy, JSON and streamed (every ``--workers``
worker's line: test_workers.py)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.support.bridge import log_lines
from tests.support.gateway import running_gateway

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


def serving_loops(log_path: Path) -> list[str]:
    return [line["loop"] for line in log_lines(log_path) if line["event"] == "serving"]


async def answer(session: aiohttp.ClientSession, url: str, *, stream: bool) -> bytes:
    async with session.post(f"{url}/v1/responses", json={"model": "fake-model", "input": "[chunks=5] on the loop",
                                                          "stream": stream}) as response:
        body = await response.read()
        assert response.status == 200, body
        return body


@pytest.mark.parametrize(("env", "flag", "expected"), [
    ({"RESPONSES_BRIDGE_EVENT_LOOP": "auto"}, (), "uvloop"),  # the default: uvloop is a dependency here
    ({"RESPONSES_BRIDGE_EVENT_LOOP": "asyncio"}, (), "asyncio"),
    ({"RESPONSES_BRIDGE_EVENT_LOOP": "asyncio"}, ("--event-loop", "uvloop"), "uvloop"),  # the flag wins
], ids=["auto", "asyncio", "flag"])
async def test_both_doors_answer_on_the_loop_chosen(tmp_path: Path, fake_upstream: str, env: dict[str, str],
                                                    flag: tuple[str, ...], expected: str) -> None:
    log_path = tmp_path / "sidecar.log"
    async with running_gateway(str(tmp_path), fake_upstream, *flag, env=env, log_file=log_path) as gateway:
        async with aiohttp.ClientSession() as session:
            for url in (gateway.url, gateway.sidecar.http_url):
                assert b'"status":"completed"' in await answer(session, url, stream=False)
                streamed = await answer(session, url, stream=True)
                assert b"event: response.completed" in streamed and b"Echo: on the loop" in streamed
    assert serving_loops(log_path) == [expected]

