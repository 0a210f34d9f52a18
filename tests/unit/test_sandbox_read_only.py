"""Read-only trees of a sandbox call (the ``read_only`` binds of sandbox/command.py): the code reads them and
cannot change them, whatever it tries; a starting bridge removes only the per-call trees earlier bridges left
(sandbox/read_only.py) of processes that are gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.command import bwrap_command
from responses_bridge.sandbox.read_only import PREFIX, sweep_orphans
from tests.unit.test_sandbox import needs_sandbox


def _write(root: Path) -> None:
    (root / "tool").mkdir()
    (root / "tool" / "SKILL.md").write_text("---\nname: tool\n---\n")


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
    root = reachable_tmp / "tree"
    root.mkdir()
    _write(root)
    root.chmod(0o755)
    async with sandbox.call(read_only=[(root, "/mnt/skills")]) as call:
        result = await call.run(code)
    assert (root / "tool" / "SKILL.md").read_text() == "---\nname: tool\n---\n"
    assert sorted(path.name for path in root.iterdir()) == ["tool"]
    assert result.outcome == "ok", result
    lines = result.stdout.splitlines()
    # refused every time: EROFS (the bind is read-only), or EACCES first where the file is not the code's uid's
    assert lines[0] == "name: tool" and len(lines) == 7 and set(lines[1:]) <= {"30", "13"}, lines
