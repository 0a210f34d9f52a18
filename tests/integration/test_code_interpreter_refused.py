"""Fail closed: a bridge that cannot sandbox (no bubblewrap on its PATH here) refuses every request carrying the
code_interpreter tool with a 400 naming the cause and the fix, runs no code at all, and still serves everything
else, the Containers API included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from responses_bridge.devtools.procs import wait_http
from tests.support.bridge import Sidecar, start_sidecar


@pytest.fixture(scope="module")
async def bridge(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    empty = tmp_path_factory.mktemp("empty-path")
    process, http_port, _ = start_sidecar(str(tmp_path_factory.mktemp("refused")), fake_upstream,
                                          env={"PATH": str(empty)}, extproc=False)
    try:
        url = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{url}/health", process=process)
        yield Sidecar(fake_upstream, url, 0, process)
    finally:
        process.stop()


async def test_the_tool_is_refused_naming_the_cause(bridge: Sidecar) -> None:
    body = {"model": "fake-model", "input": "call python",
            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}
    async with aiohttp.ClientSession(bridge.http_url) as http:
        async with http.post("/v1/responses", json=body) as reply:
            assert reply.status == 400
            error = (await reply.json())["error"]
        assert error["code"] == "sandbox_unavailable" and error["param"] == "tools[0]"
        assert "bubblewrap" in error["message"] and "apt-get install bubblewrap" in error["message"]
        async with http.post("/v1/responses", json={**body, "stream": True}) as reply:
            assert reply.status == 400  # refused before the stream opens
        async with http.post("/v1/responses", json={"model": "fake-model", "input": "hi"}) as reply:
            assert reply.status == 200
        async with http.post("/v1/containers", json={"name": "still served"}) as reply:
            assert reply.status == 200
        async with http.get("/v1/containers") as reply:  # the refused requests made no container
            assert [c["name"] for c in (await reply.json())["data"]] == ["still served"]
