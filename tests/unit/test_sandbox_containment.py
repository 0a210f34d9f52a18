"""One budget per call, through the real sandbox, in each mode this machine can give: a cgroup per call (where one
can be made) and the single-process mode (always). Each case is one a hostile or confused model's code tried on the
per-process limits: it must now stay within the call's limits and leave nothing behind."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits, SandboxUnavailable
from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from responses_bridge.sandbox.egress.policy import EgressRules, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressSettings
from responses_bridge.sandbox.result import SandboxResult
from responses_bridge.sandbox.runner import Prepare
from responses_bridge.sandbox.shell import CommandOutput, ShellJob, run_shell
from responses_bridge.sandbox.slots import FairSlots
from responses_bridge.sandbox.trees import STALE_PREFIX, sweep_stale
from responses_bridge.services.containers.skill_cache import PREFIX as CACHE_PREFIX
from responses_bridge.services.containers.skill_cache import SkillCache
from responses_bridge.services.containers.skills import keep_blob
from responses_bridge.store.base_skills import ContainerSkill
from responses_bridge.store.sqlite.files.file_bytes import DiskFileBytes

MIB = 1 << 20
SANDBOX_MISSING = check_bubblewrap()[1]
needs_sandbox = pytest.mark.skipif(SANDBOX_MISSING is not None and not os.environ.get("CI"),
                                   reason=f"no sandbox here: {SANDBOX_MISSING}")
MODES = ["single-process"] + (["cgroup"] if SANDBOX_MISSING is None and CgroupParent.find() is not None else [])


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sandbox(mode: str, **limits: object) -> Sandbox:
    sandbox = Sandbox.detect(SandboxLimits(**{"timeout": 15.0, **limits}),  # type: ignore[arg-type]
                             use_cgroup=mode == "cgroup")
    assert sandbox.mode == mode and sandbox.unavailable is None
    return sandbox


def _workspaces() -> set[str]:
    """The per-call directories in the system's temporary directory (where the bridge laid /mnt/data out on disk
    before it was in memory, and left the ones it could not remove)."""
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(STALE_PREFIX)}


def _zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                found.append(int(entry))
    return found


@needs_sandbox
async def test_a_1200_level_tree_with_data_at_its_bottom_leaves_nothing_on_the_host(mode: str) -> None:
    before = _workspaces()
    code = ("import os\nfor _ in range(1200):\n    os.mkdir('d'); os.chdir('d')\n"
            "open('data', 'wb').write(b'x' * (20 << 20))\nprint('built')")
    async with _sandbox(mode).call() as call:
        result = await call.run(code)
        data = call.data
        assert result.stdout == "built\n"
    assert not data.exists()  # the call's file system went with it
    assert _workspaces() - before == set()


@needs_sandbox
async def test_children_together_get_no_more_than_the_call_s_memory(mode: str) -> None:
    """Four children each touching 700 MiB under a 1 GiB bound: no two ever hold theirs at once. Each child that got
    its 700 MiB says so (its number) and holds it until released; the parent waits until every child either holds
    or has ended, and counts those holding then. (Counting the children that ever got theirs, as this did, read 2
    now and then under load: the kernel ended the first holder, after it had said so, to make room for the second —
    one at a time, the bound kept.)"""
    code = dedent("""
        import os, time
        said_r, said_w = os.pipe()
        release_r, release_w = os.pipe()
        kids = []
        for number in range(4):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.close(release_w)
                try:
                    b = bytearray(700 << 20)
                    for i in range(0, len(b), 4096):
                        b[i] = 1
                    os.write(said_w, bytes([number]))
                    os.read(release_r, 1)  # holds its 700 MiB until the parent lets go
                except MemoryError:
                    pass
                os._exit(0)
            kids.append(pid)
        os.close(said_w)
        os.close(release_r)
        os.set_blocking(said_r, False)
        holding, ended = set(), set()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and len(holding | ended) < len(kids):
            try:
                holding.update(os.read(said_r, 64))
            except BlockingIOError:
                pass
            for number, pid in enumerate(kids):
                if number not in ended and os.waitpid(pid, os.WNOHANG)[0]:
                    ended.add(number)
            time.sleep(0.05)
        at_once = len(holding - ended)
        os.close(release_w)
        for pid in kids:
            if kids.index(pid) not in ended:
                os.waitpid(pid, 0)
        print(len(kids), at_once, len(holding | ended) == len(kids))
        """)
    # 60 s, not 15: a full run (both stores' passes beside the emulated VM) once got no output at all, which is what
    # the call's time limit ending the parent looks like (this takes 1.3 s idle, 7 s beside 6 busy processes); the
    # parent's own 45 s deadline now ends first, so a slow run still says what it saw, and a failure shows the result
    result = await _sandbox(mode, memory_bytes=1 << 30, timeout=60.0).run(code)
    if mode == "single-process":
        assert result.stdout == "0 0 True\n"  # no second process at all
    else:  # every child decided, one holding at most, the others ended by the bound
        assert len(result.stdout.split()) == 3, result
        kids, at_once, decided = result.stdout.split()
        assert (kids, decided) == ("4", "True") and at_once in ("0", "1") and result.outcome == "memory", result


@needs_sandbox
async def test_dev_shm_and_dev_take_at_most_64_mib(mode: str) -> None:
    code = ("n = 0\ntry:\n    with open('/dev/shm/x', 'wb') as f:\n        for _ in range(256):\n"
            "            f.write(b'0' * (1 << 20)); f.flush(); n += 1\nexcept OSError:\n    pass\nprint(n)\n"
            "for path in ('/dev/new', '/dev/pts/new', '/dev/mqueue-new'):\n    try:\n        open(path, 'w')\n"
            "        print('wrote', path)\n    except OSError:\n        pass")
    result = await _sandbox(mode).run(code)
    assert int(result.stdout.split()[0]) <= 64 and "wrote" not in result.stdout


@needs_sandbox
async def test_unlinked_and_sparse_bytes_count_against_the_container(mode: str) -> None:
    code = dedent("""
        import os
        s = open('sparse', 'wb')
        s.truncate(90 << 20)
        print('sparse', os.stat('sparse').st_size >> 20)
        held, n = [], 0
        try:
            for i in range(30):
                f = open(f'f{i}', 'wb')
                os.unlink(f'f{i}')
                held.append(f)
                for _ in range(10):
                    f.write(os.urandom(1 << 20))
                    f.flush()
                    n += 1
        except OSError as error:
            print('stopped', n, error.errno)
        """)
    result = await _sandbox(mode, container_bytes=128 * MIB, memory_bytes=1 << 30).run(code)
    sparse, stopped = (line.split() for line in result.stdout.splitlines())
    assert sparse == ["sparse", "90"]  # a hole costs nothing ...
    assert stopped[0] == "stopped" and 100 < int(stopped[1]) <= 128 + 8  # ... written bytes stop at the limit
    assert stopped[2] == "28"  # ENOSPC (and its rounding room)


@needs_sandbox
async def test_the_init_shows_nothing_of_the_host_and_cannot_be_traced(mode: str, tmp_path: Path) -> None:
    code = dedent("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())
        print('cmdline', open('/proc/1/cmdline').read().replace(chr(0), ' '))
        for what in ('environ', 'mem', 'fd'):
            try:
                if what == 'fd':
                    [os.readlink(f'/proc/1/fd/{n}') for n in os.listdir('/proc/1/fd')]
                else:
                    open(f'/proc/1/{what}', 'rb').read(1)
                print('read', what)
            except OSError:
                pass
        print('cwd', os.getcwd())
        """)
    result = await _sandbox(mode).run(code)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["ptrace"] == "-1 1"  # EPERM
    assert os.getcwd() not in lines["cmdline"] and str(tmp_path) not in lines["cmdline"]
    assert "/opt/sandbox/launcher.py" in lines["cmdline"] and "read" not in lines
    assert lines["cwd"] == "/mnt/data"


@needs_sandbox
async def test_nothing_is_left_to_reap(mode: str) -> None:
    sandbox = _sandbox(mode, timeout=2.0)
    code = "import os, time\ntry:\n    os.fork()\nexcept OSError:\n    pass\ntime.sleep(30)"
    for _ in range(3):
        assert (await sandbox.run("print(1)")).stdout == "1\n"
        assert (await sandbox.run(code)).outcome == "timeout"
    await asyncio.sleep(0.1)
    assert _zombies_of(os.getpid()) == []


@needs_sandbox
async def test_one_tenant_s_endless_loops_leave_a_slot_for_another(mode: str) -> None:
    sandbox = Sandbox.detect(SandboxLimits(timeout=20.0, concurrency=2), use_cgroup=mode == "cgroup",
                             share=lambda tenant: 1)
    loops = [asyncio.create_task(sandbox.run("while True: pass", tenant="a")) for _ in range(4)]
    await asyncio.sleep(0.5)
    result = await sandbox.run("print(1)", tenant="b")
    assert result.stdout == "1\n" and not any(loop.done() for loop in loops)  # b did not wait for a's calls
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


async def test_a_freed_slot_goes_to_the_tenant_holding_fewest() -> None:
    slots = FairSlots(2, lambda tenant: 2)
    released = {tenant: asyncio.Event() for tenant in ("a", "b", "a2", "c")}

    async def run(tenant: str, name: str) -> bool:
        got = await slots.acquire(tenant, 5)
        await released[name].wait()
        slots.release(tenant)
        return got

    first_a, first_b = asyncio.create_task(run("a", "a")), asyncio.create_task(run("b", "b"))
    await asyncio.sleep(0)
    second_a = asyncio.create_task(run("a", "a2"))
    await asyncio.sleep(0)
    first_c = asyncio.create_task(run("c", "c"))  # holds none, but no tenant holds more than one: it waits
    await asyncio.sleep(0)
    assert slots.held("c") == 0
    released["b"].set()
    await first_b
    assert slots.held("c") == 1 and slots.held("a") == 1  # c came later than a's second but holds none
    released["a"].set()
    await first_a
    assert slots.held("a") == 1
    for name in ("a2", "c"):
        released[name].set()
    assert await second_a and await first_c and slots.busy == 0


async def test_a_waiter_that_times_out_holds_nothing() -> None:
    slots = FairSlots(1, lambda tenant: 1)
    assert await slots.acquire("a", 1)
    assert not await slots.acquire("b", 0.05)
    slots.release("a")
    assert slots.busy == 0 and await slots.acquire("b", 0.05)


def test_a_crashed_bridge_s_workspaces_are_swept(tmp_path: Path) -> None:
    stale = tmp_path / f"{STALE_PREFIX}old"
    stale.mkdir()
    subprocess.run(["sh", "-c", "cd \"$0\" && for i in $(seq 1500); do mkdir d && cd d; done && echo x > f",
                    str(stale)], check=True)
    (tmp_path / "unrelated").mkdir()
    assert sweep_stale(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == ["unrelated"]


@needs_sandbox
@pytest.mark.skipif("cgroup" not in MODES, reason="no cgroup can be made here")
async def test_a_call_whose_cgroup_cannot_be_made_is_refused_not_run_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = _sandbox("cgroup")

    def refuse(*_: object, **__: object) -> list[Path]:
        raise PermissionError(13, "Permission denied")

    assert sandbox.cgroups is not None
    monkeypatch.setattr(type(sandbox.cgroups), "create", refuse)
    with pytest.raises(SandboxUnavailable, match="cgroup could not be made"):
        await sandbox.run("open('/mnt/data/ran', 'w')")


@needs_sandbox
async def test_the_time_limit_is_the_code_s_not_the_lay_out_s(mode: str) -> None:
    async with _sandbox(mode, timeout=2.0).call() as call:
        await asyncio.sleep(2.5)  # the bridge laying out a large container
        result = await call.run("print('ran')")
    assert result.outcome == "ok" and result.stdout == "ran\n"


# --- the hosted shell's calls: the same checks hold (cgroup mode only: the single-process mode refuses shell) ---

needs_cgroup = pytest.mark.skipif("cgroup" not in MODES and not os.environ.get("CI"), reason="no cgroup per call here")


async def _shell(commands: list[str], **limits: object) -> tuple[list[CommandOutput], SandboxResult]:
    async with _sandbox("cgroup", **limits).call(job="shell") as call:
        return await run_shell(call, ShellJob(commands))


@needs_cgroup
async def test_shell_processes_together_get_no_more_than_the_call_s_memory() -> None:
    hog = "python3 -c 'b = bytearray(300 << 20); import time; time.sleep(3)'"
    outputs, result = await _shell([f"{hog} & a=$!; {hog} & b=$!; {hog} & c=$!; wait $a; x=$?; wait $b; y=$?; "
                                    "wait $c; echo $x $? $y", "echo after"], memory_bytes=512 * MIB)
    assert "137" in outputs[0].stdout.split()  # one of them was killed: three never held 900 MiB at once
    assert outputs[1].stdout == "after\n"  # the commands were offered to the OOM killer, not the one reporting
    assert result.outcome == "memory"


@needs_cgroup
async def test_shell_commands_may_reserve_address_space_the_cgroup_never_sees_used() -> None:
    # what Node's V8 does at every start (a 1 GiB RLIMIT_AS failed `npm install` with std::bad_alloc): reserving
    # is not using, and the call's cgroup bounds what is used (the test above); the code interpreter's processes
    # keep their RLIMIT_AS, whose MemoryError is the code's to catch
    reserve = "python3 -c 'import mmap; m = mmap.mmap(-1, 2 << 30); m[0] = 1; print(len(m) >> 30)'"
    outputs, result = await _shell([reserve, "ulimit -v"], memory_bytes=512 * MIB)
    assert [output.stdout for output in outputs] == ["2\n", "unlimited\n"], outputs
    assert result.outcome == "ok"
    async with _sandbox("cgroup", memory_bytes=512 * MIB).call() as call:
        code = await call.run("import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)")
    assert code.stdout == "512\n", code


@needs_cgroup
async def test_shell_commands_get_64_mib_of_dev_shm_and_write_nothing_of_the_host() -> None:
    outputs, _ = await _shell(["head -c 80M /dev/zero > /dev/shm/x; echo $?; du -m /dev/shm/x | cut -f1",
                               "for p in /usr/x /etc/x /bin/x /opt/venv/x /dev/x /proc/x /x; do "
                               "touch $p 2>/dev/null && echo wrote $p; done; echo checked",
                               "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 80), 2)' "
                               "2>/dev/null; echo net $?"])
    status, size = outputs[0].stdout.split()
    assert status != "0" and int(size) <= 64
    assert outputs[1].stdout == "checked\n"
    assert outputs[2].stdout != "net 0\n"


@needs_cgroup
async def test_shell_commands_can_read_neither_the_init_nor_the_records() -> None:
    outputs, _ = await _shell(["readlink /proc/1/fd/* >/dev/null 2>&1; echo init $?; cat /proc/1/environ "
                               ">/dev/null 2>&1; echo environ $?; echo forged > /proc/$PPID/fd/1; echo runner $?",
                               "id -u; pwd"])
    assert outputs[0].stdout.split("\n")[:3] == ["init 1", "environ 1", "runner 2"]
    assert outputs[1].stdout == "1000\n/mnt/data\n"


@needs_cgroup
async def test_nothing_of_a_shell_call_is_left_to_reap() -> None:
    for _ in range(3):
        outputs, _ = await _shell(["sleep 30 & setsid sleep 30 & echo started", "sleep 30"], timeout=2.0)
        assert outputs[0].stdout == "started\n" and outputs[1].outcome == {"type": "timeout"}
    await asyncio.sleep(0.1)
    assert _zombies_of(os.getpid()) == []


# --- a call with a container's skills (a read-only tree bound under /mnt) and an allowlist policy (the egress
# proxy's socket and authority bound under /run): the binds add nothing the code can change or escape through ---

SECRET = "containment-secret-value"
POLICY = {"type": "allowlist", "allowed_domains": ["127.0.0.1"],
          "domain_secrets": [{"domain": "127.0.0.1", "name": "API_KEY", "value": SECRET}]}


async def _skill(blobs_in: Path) -> Prepare:
    """A container's skill ``tool`` through the bridge's own cache (services/containers/skill_cache.py), as a call's
    ``prepare``: unpacked in the scratch directory of the temporary directory, bound at /mnt/skills/tool."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("SKILL.md", "---\nname: tool\ndescription: d\n---\n")
        archive.writestr("scripts/run.sh", "echo the skill ran\n")
    blobs = DiskFileBytes(blobs_in)
    await blobs.start()
    skill = ContainerSkill("cntr_1", 0, "tool", "d", len(out.getvalue()), await keep_blob(blobs, out.getvalue()))
    cache = SkillCache(blobs, budget=1 << 30)
    return lambda: cache.bound([skill])


@pytest.fixture
def host_temp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The system's temporary directory, for this test alone (where the bridge's scratch directory is made, with
    the egress proxy's socket and the read-only trees), short enough for a Unix socket's path, and traversable as
    /tmp is (the sandbox's uid, not root's, reaches what a call binds)."""
    folder = Path(tempfile.mkdtemp(prefix="rb-"))
    folder.chmod(0o711)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _nothing_left(temp: Path) -> None:
    """The socket's directory does not outlive the call: the bridge's scratch directory (scratch.py) is all that is
    left in the temporary directory, holding at most this process's cache of unpacked skills."""
    scratch = temp / f"responses-bridge-{os.geteuid()}"
    assert [path.name for path in temp.iterdir()] in ([], [scratch.name])
    assert not scratch.exists() or [path.name for path in scratch.iterdir()] in ([], [f"{CACHE_PREFIX}{os.getpid()}"])


def _with_egress(mode: str, **limits: object) -> Sandbox:
    sandbox = Sandbox.detect(SandboxLimits(**{"timeout": 15.0, **limits}),  # type: ignore[arg-type]
                             use_cgroup=mode == "cgroup", egress=EgressSettings(EgressRules.parse(""), EgressLimits()))
    assert sandbox.mode == mode and sandbox.unavailable is None
    return sandbox


@needs_sandbox
async def test_skills_and_a_policy_leave_every_containment_in_place(mode: str, tmp_path: Path,
                                                                    host_temp: Path) -> None:
    code = dedent("""
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())
        for path in ('/proc/1/environ', '/proc/1/mem'):
            try:
                open(path, 'rb').read(1)
                print('read', path)
            except OSError:
                pass
        attempts = {
            'skill': lambda: open('/mnt/skills/tool/SKILL.md', 'a'),
            'skill_new': lambda: open('/mnt/skills/tool/new', 'w'),
            'skill_dir': lambda: os.mkdir('/mnt/skills/other'),
            'mnt': lambda: open('/mnt/new', 'w'),
            'socket_rm': lambda: os.remove('/run/egress.sock'),
            'socket_chmod': lambda: os.chmod('/run/egress.sock', 0o777),
            'ca': lambda: open('/run/egress-ca.pem', 'a'),
            'run_new': lambda: open('/run/new', 'w'),
            'mount': lambda: os.rename('/mnt/skills', '/mnt/data/skills'),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                print('changed', name)
            except OSError as error:
                print('refused', name, error.errno)
        try:
            socket.create_connection(('1.1.1.1', 80), timeout=2).close()
            print('network direct')
        except OSError:
            pass
        print('secret', 'containment-secret' + '-value' in open('/proc/self/environ', 'rb').read().decode())
        print('uid', os.getuid(), os.path.exists('/run/egress.sock'), open('/mnt/skills/tool/SKILL.md').read()[:4])
        """)
    policy = parse_policy(POLICY, "network_policy")
    async with _with_egress(mode).call(prepare=await _skill(tmp_path / "blobs"), network=policy) as call:
        result = await call.run(code)
    lines = result.stdout.splitlines()
    assert "ptrace -1 1" in lines and not any(line.startswith(("read ", "changed ", "network ")) for line in lines)
    refused = [line for line in lines if line.startswith("refused ")]
    assert len(refused) == 9 and all(line.split()[2] in ("30", "1", "13", "16", "18") for line in refused), lines
    # bound read-only: EROFS, or EACCES first for a skill file, which is not the sandbox uid's
    assert ("refused skill 30" in lines or "refused skill 13" in lines) and "refused socket_rm 30" in lines
    assert "secret False" in lines and "uid 1000 True ---" in lines
    _nothing_left(host_temp)
    assert _zombies_of(os.getpid()) == []


@needs_cgroup
async def test_shell_commands_with_skills_and_a_policy_change_and_read_nothing_they_should_not(
        tmp_path: Path, host_temp: Path) -> None:
    commands = ["sh /mnt/skills/tool/scripts/run.sh",
                "for p in /mnt/skills/tool/SKILL.md /mnt/skills/tool/x /run/egress.sock /run/egress-ca.pem /run/x "
                "/mnt/x; do (echo x >> $p) 2>/dev/null && echo wrote $p; done; rm -f /run/egress.sock 2>/dev/null "
                "|| echo kept; echo checked",
                "cat /proc/1/environ >/dev/null 2>&1; echo environ $?; kill -9 1 2>/dev/null; echo after the kill",
                "env | grep -c containment-secret-value; echo $API_KEY | grep -c '^egress-secret-'"]
    policy = parse_policy(POLICY, "network_policy")
    async with _with_egress("cgroup").call(job="shell", prepare=await _skill(tmp_path / "blobs"),
                                           network=policy) as call:
        outputs, _ = await run_shell(call, ShellJob(commands))
    assert outputs[0].stdout == "the skill ran\n"
    assert outputs[1].stdout == "kept\nchecked\n", outputs[1]
    assert outputs[2].stdout == "environ 1\nafter the kill\n"
    assert outputs[3].stdout == "0\n1\n"  # the init lived on (a PID namespace's init ignores the SIGKILL), and
    # only the placeholder is in the commands' environment
    _nothing_left(host_temp)
