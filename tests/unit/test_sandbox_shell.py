"""The launcher's shell mode through the real sandbox: commands run in order with ``/bin/sh -c`` in ``/mnt/data``,
each with its own output, exit code and time; the call keeps every limit of a code interpreter call; and the
single-process mode refuses shell instead of loosening its filter."""

from __future__ import annotations

import os

import pytest

from responses_bridge.sandbox import Sandbox, SandboxLimits, SandboxUnavailable
from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from responses_bridge.sandbox.result import SandboxResult
from responses_bridge.sandbox.shell import CommandOutput, RecordReader, ShellJob, read_records, run_shell

SANDBOX_MISSING = check_bubblewrap()[1]
CGROUP = SANDBOX_MISSING is None and CgroupParent.find() is not None
needs_cgroup_sandbox = pytest.mark.skipif(not CGROUP and not os.environ.get("CI"),
                                          reason=f"no cgroup sandbox here: {SANDBOX_MISSING or 'no cgroup'}")


def _sandbox(**limits: object) -> Sandbox:
    sandbox = Sandbox.detect(SandboxLimits(**{"timeout": 10.0, **limits}))  # type: ignore[arg-type]
    assert sandbox.mode == "cgroup" and sandbox.shell_unavailable is None
    return sandbox


async def _shell(sandbox: Sandbox, job: ShellJob, files: dict[str, bytes] | None = None
                 ) -> tuple[list[CommandOutput], SandboxResult, dict[str, bytes]]:
    async with sandbox.call(job="shell") as call:
        for name, data in (files or {}).items():
            await call.identity.in_thread((call.data / name).write_bytes, data)  # as the bridge lays files out
        outputs, result = await run_shell(call, job)
        after = {path.name: path.read_bytes() for path in call.data.iterdir() if path.is_file()}
    return outputs, result, after


@needs_cgroup_sandbox
async def test_commands_run_in_order_in_mnt_data_each_with_its_own_output_and_exit() -> None:
    job = ShellJob(["pwd; ls", "echo one > made.txt && cat made.txt", "cat made.txt given.txt | wc -l",
                    "echo oops >&2; exit 3", "python3 --version"])
    outputs, result, after = await _shell(_sandbox(), job, {"given.txt": b"a\nb\n"})
    assert outputs[0] == CommandOutput("/mnt/data\ngiven.txt\n", "", 0)
    assert outputs[1].stdout == "one\n" and outputs[1].exit_code == 0
    assert outputs[2].stdout.strip() == "3"  # a pipeline: the file the command before wrote is there
    assert (outputs[3].stdout, outputs[3].stderr, outputs[3].exit_code) == ("", "oops\n", 3)
    assert outputs[4].stdout.startswith("Python 3.") and outputs[4].exit_code == 0
    assert result.outcome == "ok" and after["made.txt"] == b"one\n"


@needs_cgroup_sandbox
async def test_the_jobs_env_is_every_commands_and_workspace_is_mnt_data() -> None:
    job = ShellJob(['printf "%s|%s" "$GREETING" "$LANG"', "echo hi > /workspace/w.txt && readlink /workspace",
                    'sh -c \'echo "$GREETING"\''], env={"GREETING": "it's `x` $HOME"})
    outputs, _, after = await _shell(_sandbox(), job)
    assert outputs[0].stdout == "it's `x` $HOME|C.UTF-8"  # beside the sandbox's own variables, never expanded
    assert outputs[1].stdout == "/mnt/data\n" and after["w.txt"] == b"hi\n"
    assert outputs[2].stdout == "it's `x` $HOME\n"  # and their children's


@needs_cgroup_sandbox
async def test_a_command_past_its_time_is_a_timeout_and_the_next_one_still_runs() -> None:
    job = ShellJob(["echo before; sleep 30 & sleep 30; echo never", "echo after"], timeout_ms=500)
    outputs, result, _ = await _shell(_sandbox(), job)
    assert outputs[0].exit_code is None and outputs[0].outcome == {"type": "timeout"}
    assert outputs[0].stdout == "before\n"
    assert outputs[1] == CommandOutput("after\n", "", 0)
    assert result.outcome == "ok"


@needs_cgroup_sandbox
async def test_the_call_s_time_limit_still_ends_the_job() -> None:
    outputs, _, _ = await _shell(_sandbox(timeout=2.0), ShellJob(["sleep 60", "echo late"]))
    assert outputs[0].outcome == {"type": "timeout"}
    assert outputs[1].ran is False and outputs[1].outcome == {"type": "timeout"}


@needs_cgroup_sandbox
async def test_a_command_that_closes_its_output_and_goes_on_is_waited_for() -> None:
    outputs, _, _ = await _shell(_sandbox(), ShellJob(["exec >/dev/null 2>&1; sleep 0.3; exit 4", "echo next"]))
    assert outputs[0].exit_code == 4 and outputs[1].stdout == "next\n"


@needs_cgroup_sandbox
async def test_a_process_that_left_the_group_holding_the_output_does_not_hold_the_call() -> None:
    job = ShellJob(["setsid sh -c 'while :; do echo x; sleep 0.05; done' & echo started", "echo next"],
                   timeout_ms=3000)
    outputs, _, _ = await _shell(_sandbox(), job)
    # the loop's first "x" may come before "started" (it was started first): the commands' own lines, in order
    mine = [[line for line in output.stdout.splitlines() if line != "x"] for output in outputs]
    assert outputs[0].exit_code == 0 and mine[0] == ["started"], outputs[0]
    assert mine[1][:1] == ["next"], outputs[1]


@needs_cgroup_sandbox
async def test_a_fork_bomb_ends_with_its_command_and_the_next_one_runs() -> None:
    job = ShellJob(["bomb() { bomb | bomb & }; bomb; sleep 5", "echo alive"], timeout_ms=1500)
    outputs, result, _ = await _shell(_sandbox(processes=32), job)
    assert outputs[0].outcome == {"type": "timeout"} or outputs[0].exit_code != 0
    assert outputs[1] == CommandOutput("alive\n", "", 0) and result.outcome == "ok"


@needs_cgroup_sandbox
async def test_a_signal_is_the_shell_s_own_status() -> None:
    outputs, _, _ = await _shell(_sandbox(), ShellJob(["kill -9 $$", "kill -TERM $$", "echo fine"]))
    assert [output.exit_code for output in outputs] == [137, 143, 0]


@needs_cgroup_sandbox
async def test_output_is_bounded_per_command_and_in_all() -> None:
    job = ShellJob(["head -c 100000 /dev/zero | tr '\\0' a", "echo é-and-more"], max_output_length=10)
    outputs, _, _ = await _shell(_sandbox(), job)
    assert outputs[0].stdout == "a" * 10 and outputs[0].stdout_dropped == 100000 - 10
    assert outputs[1].stdout == "é-and-more"
    big = ShellJob([f"head -c {200 << 10} /dev/zero | tr '\\0' b" for _ in range(3)])
    outputs, _, _ = await _shell(_sandbox(output_bytes=64 << 10), big)
    assert sum(len(output.stdout) for output in outputs) <= 64 << 10
    assert all(output.exit_code == 0 for output in outputs)


async def test_the_single_process_mode_refuses_shell_and_keeps_its_filter() -> None:
    sandbox = Sandbox.detect(SandboxLimits(timeout=5.0), use_cgroup=False)
    if SANDBOX_MISSING is not None:
        assert sandbox.shell_unavailable is not None
        return
    assert sandbox.mode == "single-process" and "single-process" in (sandbox.shell_unavailable or "")
    with pytest.raises(SandboxUnavailable, match="single-process"):
        async with sandbox.call(job="shell"):
            pass
    assert (await sandbox.run("import os\ntry:\n    os.fork()\nexcept OSError as e:\n    print(e.errno)")
            ).stdout == "1\n"


def test_damaged_or_missing_records_say_so() -> None:
    job = ShellJob(["a", "b", "c"])
    raw = b"0 exit 0 3 0 0 0\nhi\n" + b"1 timeout 0 0 2 0 5\nno" + b"2 exit 9 99 0 0 0\nshort"
    outputs = read_records(raw, job, SandboxResult("memory", "", "", note="Execution ran out of memory."))
    assert outputs[0] == CommandOutput("hi\n", "", 0)
    assert outputs[1].outcome == {"type": "timeout"} and outputs[1].stderr == "no" and outputs[1].stderr_dropped == 5
    assert outputs[2].ran is False and outputs[2].exit_code == 137 and "memory" in outputs[2].stderr


@pytest.mark.skipif(SANDBOX_MISSING is not None and not os.environ.get("CI"), reason=f"{SANDBOX_MISSING}")
async def test_the_shell_refused_by_the_setting_names_the_setting_not_the_host() -> None:
    sandbox = Sandbox.detect(SandboxLimits(timeout=5.0), use_cgroup=False)
    assert sandbox.shell_unavailable is not None
    assert "RESPONSES_BRIDGE_CODE_CGROUP=false" in sandbox.shell_unavailable
    assert "this host gives" not in sandbox.shell_unavailable
    with pytest.raises(SandboxUnavailable, match="CODE_CGROUP=false"):
        async with sandbox.call(job="shell"):
            pass


def _chunk(index: int, kind: str, out: bytes, err: bytes, code: int = 0) -> bytes:
    return f"{index} {kind} {code} {len(out)} {len(err)} 0 0\n".encode() + out + err


def test_chunk_records_read_as_they_arrive_add_up_to_the_output() -> None:
    """What a command prints, told as its records arrive in any cut (a character split between two records, a
    record split between two reads), adds up to the output its final record gives it — cut to
    ``max_output_length`` characters both ways."""
    euro = "€".encode()
    raw = (_chunk(0, "chunk", b"ab" + euro[:1], b"") + _chunk(0, "chunk", euro[1:] + b"cdef", b"e!")
           + _chunk(0, "exit", b"gh", b"", code=3) + _chunk(1, "skipped", b"", b""))
    for limit in (None, 4):
        job = ShellJob(["first", "second"], max_output_length=limit)
        told: list[tuple[int, str, str, CommandOutput | None]] = []
        reader = RecordReader(job, lambda *said, told=told: told.append(said))  # type: ignore[misc]
        for at in range(0, len(raw), 5):
            reader.feed(raw[at:at + 5])
        outputs = read_records(raw, job, SandboxResult("ok", "", ""))
        assert [reader.found[0], reader.found[1]] == outputs
        first = [entry for entry in told if entry[0] == 0]
        assert "".join(entry[1] for entry in first) == outputs[0].stdout == ("ab€cdefgh" if limit is None else "ab€c")
        assert "".join(entry[2] for entry in first) == outputs[0].stderr == "e!"
        assert first[-1][3] == outputs[0] and all(entry[3] is None for entry in first[:-1])
        assert [entry for entry in told if entry[0] == 1] == [(1, "", "", outputs[1])]
