"""The sandbox's trust boundary with the host, through bubblewrap for real: a bridge run as root (as CI runs it) never
hands the code the host's root, the kernel's switches under /proc stay read-only, the code's files are its own, a
runtime its uid cannot reach is refused naming the directory, and the code signalling its init is reported as what
it was. Under the /proc masks of Docker and containerd (made here in a private mount namespace) the sandbox runs
without a /proc of its own, and doctor says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from responses_bridge.sandbox.identity import NOBODY, SandboxIdentity

SANDBOX_MISSING = check_bubblewrap()[1]
needs_sandbox = pytest.mark.skipif(SANDBOX_MISSING is not None and not os.environ.get("CI"),
                                   reason=f"no sandbox here: {SANDBOX_MISSING}")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the host-root findings need a bridge run as root")
MODES = ["single-process"] + (["cgroup"] if SANDBOX_MISSING is None and CgroupParent.find() is not None else [])
MASKS = """set -e
mount --make-rprivate /
for p in /proc/kcore /proc/keys /proc/timer_list; do [ -e $p ] && mount --bind /dev/null $p; done
for p in /proc/sys /proc/bus /proc/fs /proc/irq /proc/sysrq-trigger; do
  [ -e $p ] && mount --bind $p $p && mount -o remount,bind,ro $p
done
exec "$@"
"""
"""Docker's and containerd's default masks over /proc, made in a private mount namespace, then the command."""

PROBE = """
import errno, os
print("euid", os.geteuid())
for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/printk_ratelimit", "/proc/sysrq-trigger"):
    try:
        open(path, "w").close()
        print("WRITABLE", path)
    except OSError as error:
        print("refused", path, errno.errorcode.get(error.errno))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER
    print("NEW USER NAMESPACE")
else:
    print("no user namespace", errno.errorcode.get(ctypes.get_errno()))
with open("given.txt", "a") as handle:
    handle.write(" and the code's")
open("made.txt", "w").write("by the code")
"""


def _sandbox(mode: str) -> Sandbox:
    sandbox = Sandbox.detect(SandboxLimits(timeout=15.0), use_cgroup=mode == "cgroup")
    assert sandbox.unavailable is None and sandbox.mode == mode, sandbox.unavailable
    return sandbox


@needs_sandbox
@as_root
@pytest.mark.parametrize("mode", MODES)
async def test_a_root_bridge_never_hands_the_code_host_root(mode: str) -> None:
    sandbox = _sandbox(mode)
    assert sandbox.identity.uid == NOBODY
    async with sandbox.call() as call:
        await call.identity.in_thread((call.data / "given.txt").write_text, "laid out by the bridge")
        result = await call.run(PROBE)
        made = os.stat(call.data / "made.txt")
        given = (call.data / "given.txt").read_text()
    assert result.outcome == "ok", result
    assert "WRITABLE" not in result.stdout and "NEW USER NAMESPACE" not in result.stdout, result.stdout
    assert result.stdout.count("refused") == 3 and "no user namespace" in result.stdout
    assert made.st_uid == NOBODY and made.st_uid != 0  # the code's files belong to the unprivileged uid on the host
    assert given == "laid out by the bridge and the code's"  # what the bridge laid out is the code's to change


@needs_sandbox
@as_root
def test_a_runtime_the_sandbox_uid_cannot_traverse_is_refused_by_name(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    closed = tmp_path / "closed"
    runtime = closed / "python"
    runtime.mkdir(parents=True)
    closed.chmod(0o700)
    identity = SandboxIdentity.for_process()
    assert identity.unreachable(runtime) is not None
    from responses_bridge.sandbox import command

    monkeypatch.setattr(command, "python_binds", lambda: [(str(runtime), str(runtime))])
    sandbox = Sandbox.detect(SandboxLimits(timeout=15.0), prove=False)
    assert sandbox.unavailable is not None
    assert f"cannot traverse {tmp_path.parent.parent}" in sandbox.unavailable or str(closed) in sandbox.unavailable
    assert "chmod o+x" in sandbox.unavailable and "RESPONSES_BRIDGE_CODE_SANDBOX_UID" in sandbox.unavailable


def test_the_sandbox_never_runs_as_uid_0() -> None:
    with pytest.raises(ValueError, match="not 0"):
        SandboxIdentity.for_process(0)
    done = subprocess.run([sys.executable, "-m", "responses_bridge", "doctor"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "RESPONSES_BRIDGE_CODE_SANDBOX_UID": "0"}, check=False)
    assert done.returncode == 2 and "code_sandbox_uid" in (done.stdout + done.stderr).lower()


@needs_sandbox
@pytest.mark.parametrize("mode", MODES)
async def test_the_code_signalling_its_init_is_not_reported_as_memory(mode: str) -> None:
    result = await _sandbox(mode).run("import os, signal, time\nos.kill(1, signal.SIGTERM)\ntime.sleep(5)")
    assert result.outcome == "error", result
    assert "SIGTERM to the sandbox's init" in result.stderr and "memory" not in result.note


def _masked(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "-m", "sh", "-c", MASKS, "masked", *command], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "RESPONSES_BRIDGE_LOG_FORMAT": "json"})


needs_masks = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                 reason="the /proc masks are made in a mount namespace, as root")

MASKED_CALL = """
import asyncio
from responses_bridge.sandbox import Sandbox, SandboxLimits
sandbox = Sandbox.detect(SandboxLimits(timeout=15.0))
print("refused:", sandbox.unavailable, "| proc:", sandbox.proc_refused)
code = (
    "import os\\n"
    "print('proc', os.path.exists('/proc/self'), os.path.exists('/proc/1/environ'))\\n"
    "import ctypes\\n"
    "no = ctypes.CDLL(None, use_errno=True).unshare(0x10000000)\\n"
    "print('NEW USER NAMESPACE' if no == 0 else 'no user namespace')\\n"
    "print(sum(1 for _ in range(10**5)))\\n")
result = asyncio.run(sandbox.run(code))
print(result.outcome, result.stdout.replace("\\n", " | "))
"""


@needs_sandbox
@needs_masks
def test_under_the_container_proc_masks_code_runs_without_a_proc_and_doctor_says_so() -> None:
    doctor = _masked(sys.executable, "-m", "responses_bridge", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "Traceback" not in doctor.stderr
    proc_line = next(line for line in doctor.stdout.splitlines() if " proc " in line)
    assert "none in the sandbox" in proc_line and "systempaths=unconfined" in proc_line
    assert "procMount: Unmasked" in proc_line
    assert "code interpreter: code runs in the sandbox here" in doctor.stdout
    call = _masked(sys.executable, "-c", MASKED_CALL)
    assert call.returncode == 0, call.stdout + call.stderr
    assert "refused: None" in call.stdout and "Can't mount proc" in call.stdout
    assert "ok proc False False" in call.stdout and "no user namespace" in call.stdout, call.stdout
    assert "NEW USER NAMESPACE" not in call.stdout
