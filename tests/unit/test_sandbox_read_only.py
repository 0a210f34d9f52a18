"""Read-only trees of a sandbox call (sandbox/read_only.py, the ``read_only`` binds of sandbox/command.py): the
code reads them and cannot change them, whatever it tries; the host directory is gone when the call ends, also
when filling it, the call or the caller fails or is cancelled; a starting bridge removes only the trees of
processes that are gone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.command import bwrap_command
from responses_bridge.sandbox.read_only import PREFIX, read_only_tree, sweep_orphans
from tests.unit.test_sandbox import needs_sandbox


def _write(root: Path) -> None:
    (root / "tool").mkdir()
    (root / "tool" / "SKILL.md").write_text("---\nname: tool\n---\n")


async def _fill(root: Path) -> None:
    _write(root)


def _scratch(parent: Path) -> Path:
    """Where the trees are made under ``parent`` (the code_workdir): the bridge's own directory (scratch.py)."""
    return parent / f"responses-bridge-{os.geteuid()}"


def test_a_tree_is_bound_read_only_under_mnt_and_nowhere_else(tmp_path: Path) -> None:
    argv = bwrap_command("bwrap", SandboxLimits(), control_fd=3, info_fd=4, address_space=1 << 30,
                         read_only=[(tmp_path, "/mnt/skills")])
    at = argv.index(str(tmp_path))
    assert argv[at - 1:at + 2] == ["--ro-bind", str(tmp_path), "/mnt/skills"]
    assert argv.index("--ro-bind", at - 1) < argv.index("--remount-ro", at)  # before the root goes read-only
    for target in ("/etc", "/mnt/data", "/mnt/../etc", "/usr/lib", "mnt/skills"):
        with pytest.raises(ValueError):
            bwrap_command("bwrap", SandboxLimits(), control_fd=3, info_fd=4, address_space=1 << 30,
                          read_only=[(tmp_path, target)])


async def test_the_tree_exists_for_the_call_and_is_gone_after_it(tmp_path: Path) -> None:
    async with read_only_tree(tmp_path, _fill) as root:
        assert root.parent == _scratch(tmp_path) and root.name.startswith(f"{PREFIX}{os.getpid()}-")
        assert (root / "tool" / "SKILL.md").is_file()
    assert list(_scratch(tmp_path).iterdir()) == []


async def test_the_tree_is_gone_when_filling_it_or_the_call_fails_or_is_cancelled(tmp_path: Path) -> None:
    async def broken(root: Path) -> None:
        _write(root)
        raise OSError("disk full")

    with pytest.raises(OSError):
        async with read_only_tree(tmp_path, broken):
            pytest.fail("never entered")
    assert list(_scratch(tmp_path).iterdir()) == []
    with pytest.raises(RuntimeError):
        async with read_only_tree(tmp_path, _fill):
            raise RuntimeError("the call failed")
    assert list(_scratch(tmp_path).iterdir()) == []
    entered = asyncio.Event()

    async def call() -> None:
        async with read_only_tree(tmp_path, _fill):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(call())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(_scratch(tmp_path).iterdir()) == []


def test_a_start_sweeps_the_trees_of_processes_that_are_gone(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = tmp_path / f"{PREFIX}{gone.stdout.strip()}-abc"
    mine = tmp_path / f"{PREFIX}{os.getpid()}-abc"
    alive = tmp_path / f"{PREFIX}1-abc"  # pid 1 always lives
    other = tmp_path / "responses-bridge-ro-notapid"
    for directory in (dead, mine, alive, other):
        directory.mkdir()
        _write(directory)
    assert sweep_orphans(tmp_path) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(p.name for p in (mine, alive, other))


@needs_sandbox
async def test_the_code_reads_the_tree_and_cannot_change_it(reachable_tmp: Path) -> None:
    code = """
import os
print(open('/mnt/skills/tool/SKILL.md').read().splitlines()[1])
for attempt in (lambda: open('/mnt/skills/tool/SKILL.md', 'a'), lambda: open('/mnt/skills/new', 'w'),
                lambda: os.chmod('/mnt/skills/tool', 0o777), lambda: os.rename('/mnt/skills/tool', '/mnt/skills/x'),
                lambda: os.unlink('/mnt/skills/tool/SKILL.md'), lambda: os.symlink('/etc', '/mnt/skills/l')):
    try:
        attempt()
        print('changed')
    except OSError as error:
        print(error.errno)
"""
    sandbox = Sandbox.detect(SandboxLimits(timeout=10.0))
    async with read_only_tree(reachable_tmp, _fill) as root:
        async with sandbox.call(read_only=[(root, "/mnt/skills")]) as call:
            result = await call.run(code)
        assert (root / "tool" / "SKILL.md").read_text() == "---\nname: tool\n---\n"
        assert sorted(path.name for path in root.iterdir()) == ["tool"]
    assert result.outcome == "ok", result
    lines = result.stdout.splitlines()
    # refused every time: EROFS (the bind is read-only), or EACCES first where the file is not the code's uid's
    assert lines[0] == "name: tool" and len(lines) == 7 and set(lines[1:]) <= {"30", "13"}, lines
    assert list(_scratch(reachable_tmp).iterdir()) == []
