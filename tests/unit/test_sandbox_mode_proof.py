"""The start-up proof chooses the mode by a real call per mode, best first, and leaves nothing behind: a host whose
fresh /proc mounts but whose /proc/sys is read-only (a cgroup v2 kernel under a runtime's masks: ``--disable-userns``
fails) falls back to calls without /proc instead of refusing the tool; a bubblewrap that cannot run in a cgroup
falls back to the single-process mode and the shell's refusal says why; a ``serve`` run as a child subreaper keeps
no zombie of the probes; the probe's cgroups, ``doctor``'s, and a crashed bridge's are removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap

SANDBOX_MISSING = check_bubblewrap()[1]
needs_sandbox = pytest.mark.skipif(SANDBOX_MISSING is not None and not os.environ.get("CI"),
                                   reason=f"no sandbox here: {SANDBOX_MISSING}")
PARENT = CgroupParent.find() if SANDBOX_MISSING is None else None
needs_cgroup = pytest.mark.skipif(PARENT is None and not os.environ.get("CI"),
                                  reason="no cgroup per call here (the runc and VM tests cover the grants)")
pytestmark = needs_sandbox


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory the sandbox's host uid (65534 under a root bridge) can traverse, unlike pytest's tmp_path."""
    made = Path(tempfile.mkdtemp(prefix="mode-proof-"))
    made.chmod(0o755)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def _bwrap_refusing(tmp_path: Path, word: str, said: str) -> str:
    """A bubblewrap that fails, as the kernel would, whenever its arguments hold ``word``; the real one otherwise."""
    real = subprocess.run(["sh", "-c", "command -v bwrap"], capture_output=True, text=True, check=True).stdout.strip()
    fake = tmp_path / "bwrap"
    fake.write_text(f"""#!/bin/sh
for argument in "$@"; do
  case "$argument" in {word}) echo "bwrap: {said}" >&2; exit 1;; esac
done
exec {real} "$@"
""")
    fake.chmod(0o755)
    return str(fake)


def test_a_read_only_proc_sys_falls_back_to_calls_without_proc(reachable: Path) -> None:
    bwrap = _bwrap_refusing(reachable, "--disable-userns",
                            "cannot open /proc/sys/user/max_user_namespaces: Read-only file system")
    sandbox = Sandbox.detect(SandboxLimits(timeout=15.0), bwrap=bwrap)
    assert sandbox.unavailable is None
    assert sandbox.proc_refused is not None and "max_user_namespaces" in sandbox.proc_refused
    assert sandbox.mode == ("cgroup" if PARENT is not None else "single-process")
    assert "There is no /proc" in sandbox.model_note


@needs_cgroup
def test_calls_failing_in_a_cgroup_fall_back_to_the_single_process_mode_and_say_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> list[Path]:
        raise PermissionError(13, "Permission denied", "cgroup.procs")

    monkeypatch.setattr(CgroupParent, "create", refuse)
    sandbox = Sandbox.detect(SandboxLimits(timeout=15.0))
    assert sandbox.unavailable is None and sandbox.mode == "single-process"
    assert sandbox.cgroup_failed is not None and "cgroup could not be made" in sandbox.cgroup_failed
    assert sandbox.shell_unavailable is not None and "calls in a cgroup failed here" in sandbox.shell_unavailable


def test_the_single_process_mode_tells_the_model_and_a_refused_fork_says_why() -> None:
    import asyncio

    sandbox = Sandbox.detect(SandboxLimits(timeout=15.0), use_cgroup=False)
    assert sandbox.mode == "single-process" and "one process" in sandbox.model_note
    result = asyncio.run(sandbox.run("import subprocess\nsubprocess.run(['true'])"))
    assert "PermissionError" in result.stderr and "this sandbox runs one process" in result.stderr


SUBREAPER = """
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as serve under some supervisors
from responses_bridge.sandbox import Sandbox, SandboxLimits
sandbox = Sandbox.detect(SandboxLimits(timeout=15.0))
assert sandbox.unavailable is None, sandbox.unavailable
time.sleep(0.5)
zombies = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(entry)
print("zombies", len(zombies))
"""


def test_a_subreaper_keeps_no_zombie_of_the_start_up_probes() -> None:
    done = subprocess.run([sys.executable, "-c", SUBREAPER], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "zombies 0" in done.stdout, done.stdout


@needs_cgroup
def test_a_crashed_bridges_cgroups_are_swept_and_doctor_leaves_none() -> None:
    assert PARENT is not None
    crashed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    made = PARENT.create(f"run-{crashed.pid}-1", processes=8, memory_bytes=64 << 20)
    crashed.kill()
    crashed.wait()
    before = {entry.name for entry in PARENT.memory.parent.iterdir() if entry.is_dir()}
    assert made[0].name in before
    doctor = subprocess.Popen([sys.executable, "-m", "responses_bridge", "doctor"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={"PATH": os.environ["PATH"]})
    said, _ = doctor.communicate(timeout=300)
    assert doctor.returncode == 0, said
    after = {entry.name for entry in PARENT.memory.parent.iterdir() if entry.is_dir()}
    assert made[0].name not in after  # swept at doctor's start, as serve's
    assert not [name for name in after if name.split("-")[1:2] == [str(doctor.pid)]]  # none of doctor's own left


async def test_the_code_interpreters_description_tells_the_model_what_this_sandbox_cannot_do() -> None:
    from responses_bridge.services.tools.code_interpreter import CodeInterpreter

    class Runs:
        async def skills_note(self, container_id: str, *, tenant: str) -> str:
            return "Skills are available."

    limits = SandboxLimits()
    one = Sandbox(limits, "bwrap", proc_refused="Can't mount proc")
    note = await CodeInterpreter(None, one, Runs()).skills_note("cntr_1", tenant="t")  # type: ignore[arg-type]
    assert "runs your code as one process" in note and "There is no /proc" in note
    assert note.endswith("Skills are available.")
    full = Sandbox(limits, "bwrap", cgroups=PARENT if PARENT is not None else _parent_for_the_note())
    assert await CodeInterpreter(None, full, Runs()).skills_note(  # type: ignore[arg-type]
        "cntr_1", tenant="t") == "Skills are available."  # a full sandbox: nothing to warn the model of


def _parent_for_the_note() -> CgroupParent:
    """A parent that is never used to make a cgroup: only the mode it gives matters here."""
    from responses_bridge.sandbox.cgroups.per_call import Hierarchy

    return CgroupParent(Hierarchy("v2", Path("/nonexistent"), "memory"), None)


@needs_cgroup
def test_the_sweep_leaves_the_cgroups_another_pid_namespace_named() -> None:
    """Bridges in PID namespaces of their own share a cgroup parent, and their pids repeat (each is often PID 1 or
    2): a start's sweep removed another bridge's call cgroup carrying its own pid, between its making and its
    joining ("cannot create …/cgroup.procs: Directory nonexistent")."""
    from responses_bridge.sandbox.cgroups import per_call as cgroups

    assert PARENT is not None
    theirs = PARENT.create(f"run-{os.getpid()}-1-ns1", processes=8, memory_bytes=64 << 20)  # this pid, elsewhere
    mine = PARENT.create(cgroups.call_name("run", "swept"), processes=8, memory_bytes=64 << 20)
    try:
        PARENT.sweep()
        assert all(path.is_dir() for path in theirs)
        assert not any(path.is_dir() for path in mine)  # this process's own name: swept as before
    finally:
        cgroups.remove(list(theirs))


def _cpu_quota(paths: list[Path]) -> tuple[int, int] | None:
    """(quota, period) in microseconds of the first of a call's cgroup directories that holds one."""
    for path in paths:
        if (path / "cpu.max").exists():
            quota, period = (path / "cpu.max").read_text().split()
            return (-1 if quota == "max" else int(quota)), int(period)
        if (path / "cpu.cfs_quota_us").exists():
            return int((path / "cpu.cfs_quota_us").read_text()), int((path / "cpu.cfs_period_us").read_text())
    return None


@needs_cgroup
def test_a_call_asking_for_a_cpu_bound_gets_the_quota_and_others_none() -> None:
    """A long-lived call (the desktop) bounds its cores by its cgroup's CPU quota; a code call keeps its slot as its
    only CPU bound, with no cpu cgroup made for it; both are removed whole, the sweep taking the cpu one too."""
    from responses_bridge.sandbox.cgroups import per_call as cgroups

    assert PARENT is not None
    if PARENT.cpu is None and not os.environ.get("CI"):
        pytest.skip("no writable cpu controller here")
    assert PARENT.cpu is not None
    bounded = PARENT.create(cgroups.call_name("run", "cpu"), processes=8, memory_bytes=64 << 20, cpus=0.5)
    plain = PARENT.create(cgroups.call_name("run", "nocpu"), processes=8, memory_bytes=64 << 20)
    try:
        assert _cpu_quota(bounded) == (50_000, 100_000)
        assert _cpu_quota(plain) in (None, (-1, 100_000))  # v2: the shared directory's default, "max"
    finally:
        cgroups.remove(bounded)
        cgroups.remove(plain)
    assert not any(path.exists() for path in (*bounded, *plain))
