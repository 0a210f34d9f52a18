"""Running a command as PID 1 of a new PID namespace (``unshare`` from util-linux: root, or a kernel that lets an
unprivileged user make one), and reading the state of every process in it from outside, for the tests of the
bridge as a container's first process."""

from __future__ import annotations

import functools
import shutil
import subprocess

from tools.process_memory import descendants

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
"""``--kill-child``: when unshare dies (a test that fails half way), the namespace's first process is killed, and
with it every process of the namespace."""


@functools.cache
def unshare_problem() -> str | None:
    """Why a command cannot be run as PID 1 of a new PID namespace here, or None when it can."""
    if shutil.which("unshare") is None:
        return "no unshare (util-linux) on this machine"
    try:
        done = subprocess.run([*UNSHARE, "sh", "-c", 'test "$$" = 1'], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare could not run: {error}"
    if done.returncode != 0:
        return f"unshare cannot make a PID namespace here: {done.stderr.strip() or done.returncode}"
    return None


def process_states(root: int) -> dict[int, tuple[str, str]]:
    """(command name, state letter) of ``root`` and every process under it, by host pid; a process that ended
    between the listing and the read is left out. Every process of a namespace whose first process is under
    ``root`` is under it too: orphans are handed to that first process."""
    found: dict[int, tuple[str, str]] = {}
    for pid in (root, *descendants(root)):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        found[pid] = (name, text.rsplit(")", 1)[1].split()[0])
    return found


def first_process(root: int) -> int:
    """The host pid of the namespace's PID 1, when ``root`` is the ``unshare`` that made it: its only child."""
    children = []
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == root:
            children.append(pid)
    assert len(children) == 1, children
    return children[0]


def zombies(root: int) -> dict[int, str]:
    """The zombies (state Z) among ``root`` and the processes under it: their names, by host pid."""
    return {pid: name for pid, (name, state) in process_states(root).items() if state == "Z"}
