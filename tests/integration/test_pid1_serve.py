"""``responses-bridge serve`` as the first process of its PID namespace, as a container without an init runs it
(``unshare``, here): twenty code interpreter calls leave no zombie behind (each call used to leave one, handed to
PID 1 and never reaped), with one server and with ``--workers 2``, and a SIGTERM to PID 1 still drains the server
and ends every process with status 0."""

from __future__ import annotations

import base64
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.support.pid_namespace import UNSHARE, first_process, process_states, unshare_problem, zombies
from tests.support.postgres import sidecar_env

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

CALLS = 20


@pytest.fixture
def namespace() -> None:
    problem = unshare_problem() or check_bubblewrap()[1]
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture(params=[1, 2], ids=["one server", "two workers"])
async def bridge(request: pytest.FixtureRequest, namespace: None, fake_upstream: str,
                 tmp_path: Path) -> AsyncIterator[tuple[ManagedProcess, str]]:
    port = free_port()
    db = str(tmp_path / "bridge.db")
    argv = [*UNSHARE, sys.executable, "-m", "responses_bridge", "serve", "--upstream", fake_upstream,
            "--http-port", str(port), "--no-extproc", "--db", db, "--workers", str(request.param)]
    process = ManagedProcess(argv, f"pid1-bridge:{port}", env=sidecar_env(db), log_file=tmp_path / "bridge.log")
    process.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", process=process, timeout=60)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.stop()  # after a failure only: unshare's end kills the whole namespace (--kill-child)


def run_code(code: str) -> str:
    return f"call python [args64={base64.b64encode(orjson.dumps({'code': code})).decode()}]"


def settled_zombies(process: ManagedProcess) -> dict[int, str]:
    """The namespace's zombies once none is left, or those still there after 10 s (a process that has just ended
    is a zombie until its parent reaps it: a moment for the init, forever for a PID 1 that never does)."""
    deadline = time.monotonic() + 10
    while (found := zombies(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


async def test_code_interpreter_calls_leave_no_zombie(bridge: tuple[ManagedProcess, str]) -> None:
    process, url = bridge
    body = {"model": "fake-model", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
            "include": ["code_interpreter_call.outputs"]}
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as session:
        for number in range(CALLS):
            async with session.post("/v1/responses", json={**body, "input": run_code(f"print({number} * 2)")}) as reply:
                answer = await reply.json()
            assert reply.status == 200, answer
            call = answer["output"][0]
            assert call["type"] == "code_interpreter_call" and call["status"] == "completed", call
            assert call["outputs"][0]["logs"] == f"{number * 2}\n"
    assert settled_zombies(process) == {}, process_states(process.pid)
    # a SIGTERM to PID 1 reaches the server, which drains and ends; everything ends with status 0
    init = first_process(process.pid)
    os.kill(init, signal.SIGTERM)
    assert process.process is not None and process.process.wait(timeout=60) == 0
