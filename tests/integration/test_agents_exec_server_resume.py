"""A ``self_hosted`` session's commands waiting on its exec-server outlive the process: after ``kill -9`` and a
restart on the same database, an exec-server that connects again (codex registers again after its URL got a 409)
runs the waiting turn's command that never started, and the turn completes; a command that had started on the
exec-server of the killed process is never sent again — its item ends ``failed`` saying it was interrupted, and
the turn goes on. The exec-server is tests/support/exec_server.py's, running the commands on this machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle
from tests.support.bridge import start_sidecar
from tests.support.exec_server import running_fake_exec_server

TIMEOUT = aiohttp.ClientTimeout(total=90)
ENV = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3"}  # past a loaded host's stalls (test_agents_durable.py)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@asynccontextmanager
async def sidecar(tmp_path: Path, fake_upstream: str,
                  db: str) -> AsyncIterator[tuple[ManagedProcess, str, aiohttp.ClientSession]]:
    """A sidecar on ``db``, its HTTP door's URL and a client session for the Agents API there."""
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, "--api-key", "sk-upstream",
                                          env=ENV, extproc=False)
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base}/health", process=process)
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            yield process, base, http
    finally:
        process.stop()


async def until_requires_action(http: aiohttp.ClientSession, session_id: str) -> None:
    """Read the session's events until it asks for action (its turn waits on an exec-server or the client)."""
    async with http.get(f"/v1/agents/sessions/{session_id}/events") as answer:
        raw = b""
        while b"event: agent.session.requires_action\n" not in raw:
            chunk = await answer.content.readuntil(b"\n\n")
            assert chunk, "the session never waited"
            raw += chunk


def kill(process: ManagedProcess) -> None:
    assert process.pid is not None and process.process is not None
    os.killpg(process.pid, signal.SIGKILL)
    process.process.wait(60)


async def new_session(http: aiohttp.ClientSession, workspace: Path) -> tuple[str, str]:
    async with http.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "instructions": "Use the shell."},
            "environment": {"type": "self_hosted", "workspace_directory": str(workspace)}}) as answer:
        assert answer.status == 200, await answer.text()
        session = await answer.json()
    return session["id"], session["environment"]["id"]


async def say(http: aiohttp.ClientSession, session_id: str, text: str) -> None:
    async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
            {"type": "agent.session.input.message",
             "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}]}) as answer:
        assert answer.status == 202, await answer.text()


@asynccontextmanager
async def exec_server(http: aiohttp.ClientSession, base: str, session_id: str,
                      environment_id: str) -> AsyncIterator[Any]:
    async with http.post(f"/v1/agents/sessions/{session_id}/executor_credentials") as answer:
        assert answer.status == 200, await answer.text()
        creds = await answer.json()
    async with running_fake_exec_server(base + creds["remote_path"], environment_id, creds["aws_access_key_id"],
                                        creds["aws_secret_access_key"]) as server:
        yield server


async def whole_log(http: aiohttp.ClientSession, session_id: str) -> list[dict[str, Any]]:
    async with http.get(f"/v1/agents/sessions/{session_id}/events") as answer:
        return [event for _, event in frames(await read_until_idle(answer))]


def commands_done(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
            and event["item"]["type"] == "command_execution"]


async def test_a_command_waiting_on_the_exec_server_runs_on_the_one_connected_after_a_restart(
        fake_upstream: str, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    db = str(tmp_path / "exec.db")
    async with sidecar(tmp_path, fake_upstream, db) as (process, base, http):
        session_id, environment_id = await new_session(http, workspace)
        await say(http, session_id, "sh: echo ran >> log.txt; cat log.txt")  # no exec-server yet: the turn waits
        await until_requires_action(http, session_id)
        kill(process)
    async with sidecar(tmp_path, fake_upstream, db) as (process, base, http):
        async with exec_server(http, base, session_id, environment_id):
            events = await whole_log(http, session_id)
        async with http.get(f"/v1/agents/sessions/{session_id}/turns") as answer:
            turns = (await answer.json())["data"]
    assert (workspace / "log.txt").read_text() == "ran\n"  # run once, on the exec-server connected after
    [done] = commands_done(events)
    assert done["status"] == "completed" and done["output"] == "ran\n" and done["exit_code"] == 0
    kinds = [event["type"] for event in events]
    assert kinds.count("agent.session.requires_action") == 1, kinds  # told once, before the kill
    assert [turn["status"] for turn in turns] == ["completed"]


async def test_a_command_started_on_the_killed_processes_exec_server_is_not_run_again(
        fake_upstream: str, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    db = str(tmp_path / "exec.db")
    async with sidecar(tmp_path, fake_upstream, db) as (process, base, http):
        session_id, environment_id = await new_session(http, workspace)
        async with exec_server(http, base, session_id, environment_id):
            await say(http, session_id, "sh: echo started >> log.txt; sleep 30; echo ended >> log.txt")
            for _ in range(600):
                if (workspace / "log.txt").exists():
                    break
                await asyncio.sleep(0.05)
            assert (workspace / "log.txt").read_text() == "started\n"
            kill(process)  # the exec-server's websocket closes with it: its command is killed too
    async with sidecar(tmp_path, fake_upstream, db) as (process, base, http):
        async with exec_server(http, base, session_id, environment_id):
            events = await whole_log(http, session_id)
        async with http.get(f"/v1/agents/sessions/{session_id}/turns") as answer:
            turns = (await answer.json())["data"]
    assert (workspace / "log.txt").read_text() == "started\n"  # not sent again
    done = commands_done(events)[-1]
    assert done["status"] == "failed" and "not run again" in done["output"], done
    kinds = [event["type"] for event in events]
    assert "agent.session.turn.failed" not in kinds, kinds
    assert [turn["status"] for turn in turns] == ["completed"]


async def test_a_command_waiting_for_the_client_runs_on_an_exec_server_that_connects_later(
        fake_upstream: str, tmp_path: Path) -> None:
    """No restart: the turn began waiting while no exec-server was connected (the session requires action); one
    that connects then runs the command, and the turn completes without the client's result."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    async with sidecar(tmp_path, fake_upstream, str(tmp_path / "exec.db")) as (_, base, http):
        session_id, environment_id = await new_session(http, workspace)
        await say(http, session_id, "sh: echo later >> log.txt; cat log.txt")
        await until_requires_action(http, session_id)
        async with exec_server(http, base, session_id, environment_id):
            events = await whole_log(http, session_id)
    assert (workspace / "log.txt").read_text() == "later\n"
    [done] = commands_done(events)
    assert done["status"] == "completed" and done["output"] == "later\n"
    assert [event["type"] for event in events].count("agent.session.turn.completed") == 1
