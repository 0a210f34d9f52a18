"""One tenant's 600 concurrent streams all complete on the HTTP door with the default pool sizes.

The upstream pool was a fixed 256 places: the 257th stream waited ``upstream_connect_timeout`` and ended
``response.failed``, though an open stream costs ``serve`` about 20 KiB. Its default is now derived from the
descriptor limit and the memory budget (config/pools.py). The streams here are short (a few chunks) but all open
at once; the connect timeout is lowered only so that a stream refused a place fails before the first streams end
(5 s, not 10), keeping the test short.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.bridge import Sidecar, running_sidecar

pytestmark = pytest.mark.store_free  # the sidecar keeps its own SQLite file; the subject is its pools

STREAMS = 600
INPUT = "one two three four [chunks=4] [delay=2000]"
"""Four chunks 2 s apart: every stream is still open when the last of them has waited the connect timeout, so a
pool of 256 places refuses 344 of them."""


@pytest.fixture(scope="module")
async def sidecar_with_defaults(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory
                                ) -> AsyncIterator[Sidecar]:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4 * STREAMS + 1024:
        pytest.skip("the descriptor limit leaves the sidecar fewer places than the test's streams")
    async with running_sidecar(str(tmp_path_factory.mktemp("streams")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "5"}, own_sqlite=True) as sidecar:
        yield sidecar


async def last_event(session: aiohttp.ClientSession, url: str) -> str:
    """The type of the stream's last event (a failure's with its error message's first words)."""
    body = {"model": "fake-model", "input": INPUT, "stream": True}
    async with session.post(f"{url}/v1/responses", json=body) as response:
        assert response.status == 200, await response.text()
        last = ""
        async for line in response.content:
            if line.startswith(b"data: {"):  # not the closing data: [DONE]
                event = json.loads(line[6:])
                last = event["type"]
                if last == "response.failed":
                    last += ": " + str((event["response"].get("error") or {}).get("message"))[:60]
        return last


async def test_600_concurrent_streams_of_one_tenant_all_complete(sidecar_with_defaults: Sidecar) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        ends = await asyncio.gather(*(last_event(session, sidecar_with_defaults.http_url) for _ in range(STREAMS)))
    assert ends.count("response.completed") == STREAMS, {end: ends.count(end) for end in set(ends)}
