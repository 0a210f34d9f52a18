"""tests/support/zygote.py, the fork server the suite starts its sidecars from: a forked command must look to its
test as one ``subprocess.Popen`` started — its environment, working directory, streams, session, exit status."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port, wait_http
from tests.support import zygote
from tests.support.mcp_server import MCPTestServer

PYTHON = sys.executable


def test_a_forked_command_exits_with_its_status_and_writes_to_the_streams_given(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        helped = zygote.popen([PYTHON, "-m", "responses_bridge", "fake-upstream", "--help"], stdout=stdout,
                              stderr=stderr, start_new_session=True)
        refused = zygote.popen([PYTHON, "-m", "responses_bridge", "serve", "--no-such-flag"], stdout=stdout,
                               stderr=stderr, start_new_session=True)
    assert isinstance(helped, zygote.ForkedProcess) and isinstance(refused, zygote.ForkedProcess)
    assert helped.wait(60) == 0 and refused.wait(60) == 2
    assert "--chunk-delay" in out.read_text()
    assert "unrecognized arguments: --no-such-flag" in err.read_text()


def test_a_forked_command_reads_the_environment_given(tmp_path: Path) -> None:
    """Not the fork server's: a setting only the environment passed sets is the one read."""
    err = tmp_path / "err"
    with open(err, "wb") as stderr:
        process = zygote.popen([PYTHON, "-m", "responses_bridge", "serve", "--upstream", "http://127.0.0.1:9/v1"],
                               stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                               env={**os.environ, "RESPONSES_BRIDGE_HTTP_PORT": "not-a-port"})
    assert isinstance(process, zygote.ForkedProcess)
    assert process.wait(60) == 2
    assert "RESPONSES_BRIDGE_HTTP_PORT" in err.read_text()


async def test_a_running_one_has_the_directory_session_and_streams_asked_for(tmp_path: Path) -> None:
    port = free_port()
    process = zygote.popen([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        await wait_http(f"http://127.0.0.1:{port}/v1/models")
        assert process.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(0.1)
        assert os.readlink(f"/proc/{process.pid}/cwd") == os.getcwd()
        assert os.getsid(process.pid) == process.pid  # its own session: os.killpg(pid) stops what it starts
        assert os.readlink(f"/proc/{process.pid}/fd/1") == "/dev/null"
    finally:
        process.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(process.wait, 30) == -signal.SIGKILL
    assert process.returncode == -signal.SIGKILL and process.poll() == -signal.SIGKILL


@pytest.mark.parametrize("argv, env", [
    (["-c", "pass"], {}),  # not a bridge command
    (["-m", "responses_bridge", "bench", "--help"], {}),  # not one of the commands forked
    (["-m", "tests.support.mcp_server", "--help"], {"PYTHONMALLOC": "malloc"}),  # forked, but for the option
    (["-m", "responses_bridge", "serve", "--help"], {"PYTHONMALLOC": "malloc"}),  # an interpreter option
    (["-m", "responses_bridge", "serve", "--help"], {"PROMETHEUS_MULTIPROC_DIR": "/tmp"}),  # read on import
])
def test_what_an_import_could_change_is_started_the_usual_way(argv: list[str], env: dict[str, str]) -> None:
    process = zygote.popen([PYTHON, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True, env={**os.environ, **env})
    assert isinstance(process, subprocess.Popen)
    assert process.wait(60) == 0


def test_run_captures_both_streams_and_the_status_as_subprocess_run_does(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    made = zygote.run([PYTHON, "-m", "responses_bridge", "keys", "create", "--tenant", "acme", "--db", db],
                      timeout=60)
    assert made.returncode == 0 and made.stdout.startswith("rbk_"), made
    listed = zygote.run([PYTHON, "-m", "responses_bridge", "keys", "list", "--db", db], timeout=60)
    assert listed.returncode == 0 and "acme" in listed.stdout, listed
    wrong = zygote.run([PYTHON, "-m", "responses_bridge", "keys", "create", "--db", db], timeout=60)
    assert wrong.returncode == 2 and "--tenant" in wrong.stderr and wrong.stdout == "", wrong


def test_run_past_its_timeout_kills_the_process_and_keeps_what_it_wrote() -> None:
    port = free_port()
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        zygote.run([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)], timeout=5)
    assert f"listening on http://127.0.0.1:{port}/v1" in str(expired.value.stdout)
    assert expired.value.stderr is not None


def test_a_command_runs_in_the_directory_asked_for(tmp_path: Path) -> None:
    """``cwd=``, as ``subprocess.run`` takes it, forked or not: a relative path names a file there."""
    with open(os.devnull, "wb") as null:
        process = zygote.popen([PYTHON, "-m", "responses_bridge", "keys", "create", "--tenant", "acme", "--db",
                                "named.db"], stdout=null, stderr=null, start_new_session=True, cwd=tmp_path)
        assert isinstance(process, zygote.ForkedProcess)
        assert process.wait(60) == 0
    assert (tmp_path / "named.db").exists() and not Path("named.db").exists()
    started = zygote.run([PYTHON, "-c", "import os; print(os.getcwd())"], timeout=60, cwd=tmp_path)  # not forked
    assert started.returncode == 0 and started.stdout.strip() == str(tmp_path), started


async def test_the_mcp_test_server_is_forked_from_a_server_of_its_own() -> None:
    server = MCPTestServer()
    await server.start()
    try:
        process = server.process.process
        assert isinstance(process, zygote.ForkedProcess)
        assert os.getsid(process.pid) == process.pid
        ours = zygote._servers["tests.support.mcp_server"].process.pid
        assert Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(ours)  # its parent
    finally:
        server.stop()


def test_the_bridges_fork_server_imports_nothing_only_the_mcp_test_server_needs() -> None:
    """The MCP test server's fork server imports mcp and uvicorn; the bridge's does not, so a forked sidecar holds
    no module a started one would not (tests/unit/test_idle_imports.py)."""
    bridge = subprocess.run([PYTHON, "-c", "import sys\nfrom tests.support.zygote import FORKED\n"
                             "for name in FORKED['responses_bridge'][1]:\n    __import__(name)\n"
                             "print('mcp' in sys.modules, 'uvicorn' in sys.modules)"],
                            capture_output=True, text=True, timeout=120, check=True, cwd=zygote._ROOT)
    assert bridge.stdout.split() == ["False", "False"]
