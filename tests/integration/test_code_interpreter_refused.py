"""Fail closed: a bridge that cannot sandbox (no bubblewrap on its PATH here) refuses every request carrying the
code_interpreter tool or the hosted shell with a 400 naming the cause and the fix, runs no code at all, and still
serves everything else, the Containers API included; a bridge in the sandbox's single-process mode refuses the
hosted shell (its commands need processes) and still runs Python."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from responses_bridge.demo.procs import wait_http
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.support.bridge import Sidecar, start_sidecar

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


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


async def test_the_hosted_shell_is_refused_too_and_the_client_s_shell_is_not(bridge: Sidecar) -> None:
    hosted = {"type": "shell", "environment": {"type": "container_auto"}}
    async with aiohttp.ClientSession(bridge.http_url) as http:
        async with http.post("/v1/responses", json={"model": "fake-model", "input": "sh: ls",
                                                    "tools": [hosted]}) as reply:
            assert reply.status == 400
            error = (await reply.json())["error"]
        assert error["code"] == "sandbox_unavailable" and error["param"] == "tools[0]"
        assert error["message"].startswith("The shell tool cannot run on this server") and "bubblewrap" in error[
            "message"]
        async with http.post("/v1/responses", json={"model": "fake-model", "input": "call shell",
                                                    "tools": [{"type": "shell"}]}) as reply:
            assert reply.status == 200
            assert [item["type"] for item in (await reply.json())["output"]] == ["shell_call"]


@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
async def test_the_single_process_mode_refuses_shell_and_still_runs_python(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    process, http_port, _ = start_sidecar(str(tmp_path_factory.mktemp("single")), fake_upstream,
                                          env={"RESPONSES_BRIDGE_CODE_CGROUP": "false"}, extproc=False)
    try:
        url = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{url}/health", process=process)
        async with aiohttp.ClientSession(url) as http:
            body = {"model": "fake-model", "input": "sh: echo hi",
                    "tools": [{"type": "shell", "environment": {"type": "container_auto"}}]}
            async with http.post("/v1/responses", json=body) as reply:
                assert reply.status == 400
                error = (await reply.json())["error"]
            assert error["code"] == "sandbox_unavailable" and error["param"] == "tools[0]"
            assert "single-process mode" in error["message"]
            async with http.get("/v1/containers") as reply:  # refused before a container was made
                assert (await reply.json())["data"] == []
            body = {"model": "fake-model", "input": "run: print(6 * 7)",
                    "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
                    "include": ["code_interpreter_call.outputs"]}
            async with http.post("/v1/responses", json=body) as reply:
                assert reply.status == 200
                assert (await reply.json())["output"][0]["outputs"][0]["logs"] == "42\n"
    finally:
        process.stop()
