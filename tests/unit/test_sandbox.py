"""The bubblewrap sandbox on this machine: what the code can and cannot do, and every limit ending a run cleanly
(no process left behind, the next run fine). Skipped only where bubblewrap cannot make its namespaces and the
suite is not CI's (CI installs bubblewrap: there a missing sandbox fails)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits, SandboxResult, SandboxUnavailable
from responses_bridge.sandbox.doctor import check_bubblewrap, diagnose

SANDBOX_MISSING = check_bubblewrap()[1]
needs_sandbox = pytest.mark.skipif(SANDBOX_MISSING is not None and not os.environ.get("CI"),
                                   reason=f"no sandbox here: {SANDBOX_MISSING}")


def _sandbox(**limits: object) -> Sandbox:
    return Sandbox.detect(SandboxLimits(**{"timeout": 5.0, **limits}))  # type: ignore[arg-type]


async def _run_with_files(sandbox: Sandbox, code: str, files: dict[str, bytes] | None = None
                          ) -> tuple[SandboxResult, dict[str, bytes]]:
    """Run ``code`` over ``files`` laid out in /mnt/data: the result, and /mnt/data's files afterwards."""
    async with sandbox.call() as call:
        for name, data in (files or {}).items():
            await call.identity.in_thread((call.data / name).write_bytes, data)  # as the bridge lays files out
        result = await call.run(code)
        after = {path.name: path.read_bytes() for path in call.data.iterdir() if path.is_file()}
    return result, after


def _processes_with_args(args: str) -> list[str]:
    """The host's processes whose command line is ``args``: a test's own marker, so that sandboxes other workers
    run at the same moment are not taken for what this test left behind."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip() == args]


@needs_sandbox
async def test_output_exit_and_files() -> None:
    result, files = await _run_with_files(_sandbox(), "import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
                                          "open('made.txt', 'w').write(open('given.txt').read() + 'x')",
                                          {"given.txt": b"given "})
    assert (result.outcome, result.stdout, result.stderr, result.exit_code) == ("ok", "out\n", "err\n", 0)
    assert files["made.txt"] == b"given x"
    assert result.started is not None and result.finished is not None and result.started >= result.spawned


@needs_sandbox
async def test_an_exception_is_an_error_with_its_traceback() -> None:
    result = await _sandbox().run("x = 1\nraise ValueError('bad')")
    assert result.outcome == "error" and "ValueError: bad" in result.stderr and 'line 2' in result.stderr
    assert not result.failed


@needs_sandbox
async def test_the_time_limit_kills_everything_the_code_started() -> None:
    marker = f"sleep 60.{secrets.randbelow(10**9):09d}"  # what its children run, and nothing else on the host
    code = (f"import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        os.execv('/bin/sleep', "
            f"{marker.split()!r})\n"
            "open('before.txt', 'w').write('kept')\ntime.sleep(60)")
    running = asyncio.create_task(_run_with_files(_sandbox(timeout=1.5), code))
    seen = 0
    while not running.done() and seen < 3:
        seen = len(await asyncio.to_thread(_processes_with_args, marker))
    result, files = await running
    assert seen == 3, "the children never ran: the test would prove nothing"
    assert result.outcome == "timeout" and result.failed and "time limit" in result.note
    assert files == {"before.txt": b"kept"}  # what it wrote before the limit is still read back
    await asyncio.sleep(0.2)
    assert _processes_with_args(marker) == []
    assert (await _sandbox().run("print(1)")).stdout == "1\n"


@needs_sandbox
async def test_processes_are_bounded() -> None:
    code = ("import os, time\nn = 0\ntry:\n    for _ in range(500):\n        if os.fork() == 0:\n"
            "            time.sleep(2)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)")
    result = await _sandbox(processes=16).run(code)
    assert int(result.stdout) < 20


@needs_sandbox
async def test_memory_is_bounded() -> None:
    result = await _sandbox(memory_bytes=256 << 20).run("b = bytearray(512 << 20)")
    assert result.outcome == "memory" and "MemoryError" in result.stderr


@needs_sandbox
async def test_output_is_kept_up_to_its_limit_and_the_rest_counted() -> None:
    result = await _sandbox(output_bytes=1024).run("print('y' * 100_000)")
    assert result.outcome == "output_capped" and len(result.stdout) == 1024
    assert result.stdout_dropped == 100_001 - 1024


@needs_sandbox
async def test_a_file_past_its_limit_is_an_error_not_a_kill() -> None:
    result = await _sandbox(file_bytes=1 << 20).run("open('big', 'wb').write(b'0' * (2 << 20))")
    assert result.outcome == "error" and "File too large" in result.stderr


@needs_sandbox
async def test_filling_the_container_stops_the_run() -> None:
    code = "import os\nfor i in range(1000):\n    open(f'f{i}', 'wb').write(os.urandom(1 << 20))\n"
    result = await _sandbox(container_bytes=8 << 20).run(code)
    assert result.outcome == "disk" and result.failed and "No space left" in result.stderr


@needs_sandbox
async def test_nothing_of_the_host_is_writable_nor_the_network_reachable(tmp_path: Path) -> None:
    code = ("import os, socket\n"
            f"for path in ('/etc/x', '/usr/x', '/x', {str(Path.home() / 'x')!r}, {str(tmp_path.parent / 'x')!r}):\n"
            "    try:\n        open(path, 'w')\n        print('wrote', path)\n    except OSError:\n        pass\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n    print('online')\n"
            "except OSError:\n    pass\n"
            "print(sorted(os.environ))\nprint(os.getuid())")
    result = await _sandbox().run(code)
    assert "wrote" not in result.stdout and "online" not in result.stdout
    assert "1000" in result.stdout.splitlines()[-1]
    assert not any("SECRET" in line or "RESPONSES_BRIDGE" in line for line in result.stdout.splitlines())


async def test_without_bubblewrap_every_run_is_refused(tmp_path: Path) -> None:
    sandbox = Sandbox.detect(SandboxLimits(), bwrap=str(tmp_path / "no-bwrap"))
    assert sandbox.unavailable is not None and "bubblewrap" in sandbox.unavailable
    with pytest.raises(SandboxUnavailable):
        await sandbox.run("print(1)")
    assert not (tmp_path / "made").exists()


def test_doctor_names_the_fix_when_bubblewrap_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    findings = diagnose()
    assert not findings[0].ok and "apt-get install bubblewrap" in findings[0].detail


@needs_sandbox
async def test_runs_beyond_the_slots_wait_their_turn() -> None:
    sandbox = _sandbox(concurrency=2)
    results = await asyncio.gather(*(sandbox.run("import time; time.sleep(0.3); print('ok')") for _ in range(6)))
    assert [result.stdout for result in results] == ["ok\n"] * 6


@needs_sandbox
async def test_a_cancelled_run_ends_its_code_at_once_not_after_the_inits_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call taken back for another tenant is cancelled while its code runs: its slot comes back when the call
    has closed, which waited out the init's grace (closing stdin does not end a running job) — 2 s a take-back."""
    from responses_bridge.sandbox import call as sandbox_call

    monkeypatch.setattr(sandbox_call, "INIT_GRACE_SECONDS", 600.0)  # waited out, the close would outlast the test
    started = asyncio.Event()

    async def sleeper() -> None:
        async with _sandbox(timeout=600.0).call() as call:
            started.set()
            await call.run("import time\ntime.sleep(600)")

    task = asyncio.create_task(sleeper())
    await started.wait()
    await asyncio.sleep(1.0)  # the code is running
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=60)
    assert done, "the cancelled call waited for its init's grace"
    assert task.cancelled()
