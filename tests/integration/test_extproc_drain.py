"""SIGTERM through Envoy: the sidecar ends every live stream properly before it exits.

The sidecar runs as users run it (``responses-bridge serve``, its own process) behind a real Envoy, with a short
``RESPONSES_BRIDGE_DRAIN_TIMEOUT``. Twenty clients hold streams from a slow fake upstream (``[delay=MS]`` between
chunks, far longer in total than the drain timeout) when the sidecar gets SIGTERM. Each client must read a
``response.failed`` event (code ``server_shutdown``) and ``[DONE]``, never raw chunks; every stored response must
be failed; the process must exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import aiohttp
import orjson
import pytest

from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.bridge import running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.sdk_strict import failure_reason
from tests.support.sidecar_state import database_of, sidecar_stores

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary")]

STREAMS = 20
SLOW = "[chunks=400] [delay=100]"  # 40 s of answer; the drain gives 1 s


async def _read_stream(session: aiohttp.ClientSession, url: str, index: int, started: asyncio.Queue[str]
                       ) -> bytes:
    body = orjson.dumps({"model": "fake-model", "input": f"stream {index} {SLOW}", "stream": True})
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
        assert response.status == 200
        first = await response.content.readuntil(b"\n\n")
        created = orjson.loads(first.split(b"data: ", 1)[1])
        await started.put(created["response"]["id"])
        return first + await response.content.read()


def _events(data: bytes) -> list[dict]:
    return [orjson.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]


async def test_sigterm_ends_every_stream_with_response_failed(fake_upstream: str, tmp_path: object) -> None:
    env = {"RESPONSES_BRIDGE_DRAIN_TIMEOUT": "1"}
    async with running_sidecar(str(tmp_path), fake_upstream, env=env) as sidecar:
        port = free_port()
        envoy = await start_envoy(render_bootstrap(listen_port=port, extproc_port=sidecar.extproc_port,
                                                   http_port=int(sidecar.http_url.rsplit(":", 1)[1]),
                                                   upstream=fake_upstream, admin_port=0))
        url = f"http://127.0.0.1:{port}/v1/responses"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                started: asyncio.Queue[str] = asyncio.Queue()
                readers = [asyncio.create_task(_read_stream(session, url, i, started)) for i in range(STREAMS)]
                ids = [await asyncio.wait_for(started.get(), 60) for _ in range(STREAMS)]  # all 20 are live
                process = sidecar.process.process
                assert process is not None
                os.kill(process.pid, signal.SIGTERM)
                results = await asyncio.gather(*readers)
                await asyncio.to_thread(process.wait, 60)  # it exits, drain timeout or not
        except subprocess.TimeoutExpired:
            pytest.fail("the sidecar did not exit after SIGTERM")
        finally:
            envoy.stop()
    for data in results:
        assert b"chat.completion.chunk" not in data
        assert data.endswith(b"data: [DONE]\n\n")
        last = _events(data)[-1]
        assert last["type"] == "response.failed"
        assert failure_reason(last["response"]["error"]) == "server_shutdown"
    async with sidecar_stores(database_of(sidecar.process.argv)) as stores:
        for response_id in ids:
            stored = await stores.responses.get_response(response_id, tenant=DEFAULT_TENANT)
            assert stored is not None and stored["status"] == "failed", response_id
