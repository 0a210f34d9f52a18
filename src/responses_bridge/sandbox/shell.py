"""A shell job in a sandbox call: the hosted shell tool's commands run in order, each with ``/bin/sh -c`` in
``/mnt/data``, by the launcher's shell mode (launcher.py), and read back per command.

    outputs, result = await run_shell(call, ShellJob(commands, timeout_ms=…, max_output_length=…))

One sandbox call runs every command of a shell call, so a file one command writes is there for the next; the call
keeps every limit of a code interpreter call (memory across all its processes, processes, disk, output, the time
limit). Each command gets its own time (``timeout_ms``, at most what is left of the call's), past which its whole
process group is killed and the next command runs; a command's non-zero exit or its timeout is its outcome, not a
failure of the call. Shell needs processes: only in the sandbox's cgroup mode (runner.py says why).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .backend import SandboxSession
from .result import SandboxResult

REPORT_SECONDS = 0.5
"""Of the call's time, what the launcher keeps back to write its records before the bridge's own limit ends it."""
RECORD_SLACK = 96
"""Bytes of a record's header line, at most."""
SIGKILL_STATUS = 137
"""The shell's status for a process ended by SIGKILL (128 + 9): a command the call's end cut off."""


@dataclass(frozen=True, slots=True)
class ShellJob:
    """The commands of one shell call and its limits: ``timeout_ms`` per command (None: the call's own);
    ``max_output_length``: characters kept of each command's stdout and of its stderr (None: the sandbox's
    output limit); ``env``: variables every command gets besides the sandbox's own (an Agents API environment's
    ``env``)."""

    commands: Sequence[str]
    timeout_ms: int | None = None
    max_output_length: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandOutput:
    """One command's outcome, in the SDK's ``shell_call_output`` terms: ``exit_code`` None means it timed out
    (or the call's time ran out before it could start: ``ran`` is then False). ``*_dropped``: bytes not kept."""

    stdout: str
    stderr: str
    exit_code: int | None
    ran: bool = True
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def outcome(self) -> dict[str, object]:
        if self.exit_code is None:
            return {"type": "timeout"}
        return {"type": "exit", "exit_code": self.exit_code}

    def as_output(self) -> dict[str, object]:
        """The SDK's ``ResponseFunctionShellCallOutputContent``."""
        return {"stdout": self.stdout, "stderr": self.stderr, "outcome": self.outcome}


def job_source(job: ShellJob, call: SandboxSession) -> str:
    """The launcher's JSON for ``job`` in ``call``: each command's seconds, the seconds of them all and the bytes
    the records may take (so the last record is not cut by the call's output limit)."""
    budget = max(call.seconds_for_code - REPORT_SECONDS, 0.05)
    per_command = budget if job.timeout_ms is None else min(max(job.timeout_ms, 1) / 1000, budget)
    room = call.limits.output_bytes
    keep = room // 2
    if job.max_output_length is not None:
        keep = min(keep, max(job.max_output_length, 0) * 4)  # a character is at most four bytes of UTF-8
    return orjson.dumps({"commands": list(job.commands), "timeout": per_command, "budget": budget, "keep": keep,
                         "room": room, "env": dict(job.env)}).decode()


def read_records(raw: bytes, job: ShellJob, result: SandboxResult) -> list[CommandOutput]:
    """Each command's output from the launcher's records; a command with no record (the call ended by a limit
    first, or the records were damaged) gets one saying so, with the call's outcome."""
    reader = RecordReader(job)
    reader.feed(raw)
    return [reader.found.get(index) or _missing(result) for index in range(len(job.commands))]


Printed = Callable[[int, str, str, "CommandOutput | None"], None]
"""Told of what a command printed as it comes: its index, the new text of its stdout and of its stderr, and with
its last record its output (then no more is said of it)."""


class RecordReader:
    """The launcher's records as their bytes arrive: each command's output (:attr:`found`) once its final record
    is read, and with ``printed`` what it printed, as text, as each record comes — at most ``max_output_length``
    characters of each stream, so what was said adds up to the output's own text."""

    def __init__(self, job: ShellJob, printed: Printed | None = None) -> None:
        self.job = job
        self.printed = printed
        self.found: dict[int, CommandOutput] = {}
        self._pending = bytearray()  # a record not whole yet
        self._pieces: dict[int, tuple[bytearray, bytearray]] = {}  # a running command's chunk bytes
        self._said: dict[int, list[Any]] = {}  # per command: two incremental decoders and the characters said

    def feed(self, data: bytes) -> None:
        self._pending += data
        position = 0
        raw = self._pending
        while position < len(raw):
            line_end = raw.find(b"\n", position)
            if line_end < 0:
                break
            try:
                index, kind, code, out_length, err_length, out_dropped, err_dropped = raw[position:line_end].split()
                numbers = [int(value) for value in (index, code, out_length, err_length, out_dropped, err_dropped)]
            except ValueError:
                self._pending = bytearray()  # damaged: nothing after it can be read
                return
            start = line_end + 1
            out_end = start + numbers[2]
            err_end = out_end + numbers[3]
            if err_end > len(raw):
                break
            self._record(numbers[0], bytes(kind), numbers[1], bytes(raw[start:out_end]), bytes(raw[out_end:err_end]),
                         numbers[4], numbers[5])
            position = err_end
        del self._pending[:position]

    def _record(self, index: int, kind: bytes, code: int, out: bytes, err: bytes, out_dropped: int,
                err_dropped: int) -> None:
        out_all, err_all = self._pieces.setdefault(index, (bytearray(), bytearray()))
        out_all += out
        err_all += err
        final = kind != b"chunk"
        output = None
        if final:
            del self._pieces[index]
            output = self.found[index] = _output(kind, code, bytes(out_all), bytes(err_all), out_dropped,
                                                 err_dropped, self.job.max_output_length)
        if self.printed is not None:
            self._say(index, b"" if kind == b"skipped" else out, b"" if kind == b"skipped" else err, output)

    def _say(self, index: int, out: bytes, err: bytes, output: CommandOutput | None) -> None:
        said = self._said.setdefault(index, [codecs.getincrementaldecoder("utf-8")("replace"),
                                             codecs.getincrementaldecoder("utf-8")("replace"), 0, 0])
        texts = []
        for slot, data in ((0, out), (1, err)):
            text = said[slot].decode(data, output is not None)
            limit = self.job.max_output_length
            if limit is not None:
                text = text[:max(limit - said[slot + 2], 0)]
            said[slot + 2] += len(text)
            texts.append(text)
        if texts[0] or texts[1] or output is not None:
            self.printed(index, texts[0], texts[1], output)  # type: ignore[misc]


def _output(kind: bytes, code: int, out: bytes, err: bytes, out_dropped: int, err_dropped: int,
            limit: int | None) -> CommandOutput:
    if kind == b"skipped":
        return CommandOutput("", "Not run: the call's time limit was reached before this command.", None, ran=False)
    stdout, more_out = _text(out, limit)
    stderr, more_err = _text(err, limit)
    return CommandOutput(stdout, stderr, None if kind == b"timeout" else code, True, out_dropped + more_out,
                         err_dropped + more_err)


def _text(data: bytes, limit: int | None) -> tuple[str, int]:
    """The bytes as text (invalid UTF-8 replaced), at most ``limit`` characters; and the bytes cut for it."""
    text = data.decode("utf-8", "replace")
    if limit is None or len(text) <= limit:
        return text, 0
    kept = text[:max(limit, 0)]
    return kept, len(data) - len(kept.encode("utf-8", "replace"))


def _missing(result: SandboxResult) -> CommandOutput:
    note = result.note or "The command's output was lost: the sandbox ended before it was reported."
    if result.outcome == "timeout":
        return CommandOutput("", note, None, ran=False)
    return CommandOutput("", note, SIGKILL_STATUS, ran=False)


async def run_shell(call: SandboxSession, job: ShellJob,
                    printed: Printed | None = None) -> tuple[list[CommandOutput], SandboxResult]:
    """Run ``job`` in a started ``call`` (whose files the caller laid out): every command's output, and the
    call's own result (a limit that ended it: ``memory``, ``disk``, ``timeout``). ``printed``: told of what the
    commands print as the sandbox sends it on (a backend that sends it only at the end tells it then)."""
    reader = RecordReader(job, printed) if printed is not None else None
    result = await call.run(job_source(job, call), job="shell",
                            on_stdout=reader.feed if reader is not None else None)
    return read_records(call.stdout_bytes, job, result), result
