"""The worker processes programs run in (worker.py), reused from one program to the next.

:meth:`WorkerPool.run` is blocking (the host calls it from its own threads, one per slot): it takes an idle worker
or starts one, sends the job and waits for the answer at most the program's time bound plus a grace. A worker that
ends instead of answering reached its memory bound (or was killed): the program is ``incomplete`` naming the bound,
and the worker is gone — the next program starts another. A worker that does not answer in time is killed. Idle
workers are kept (at most ``keep``) so a program pays for a process start only when none is idle, and retired
after ``max_runs`` programs or ``idle_seconds`` unused, so what V8 leaves behind never builds up.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

import orjson
import structlog

from .isolate import Limits, ProgramRun, ProgramsUnavailable, ToolCall
from .worker import HEADER, MAX_FRAME

log = structlog.get_logger(__name__)

START_SECONDS = 30.0
"""How long a new worker may take to start V8 and report ready (a loaded machine starts slowly)."""
GRACE_SECONDS = 2.0
"""Beyond a program's own time bound (which V8 enforces in the worker), before the worker is killed."""
MAX_RUNS = 200
IDLE_SECONDS = 60.0
_PASSED_ON = ("PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ")
"""The environment a worker gets: enough to start Python and read the time zone — none of the bridge's settings,
whose secrets (keys, database URLs) a worker never needs."""


class WorkerGone(Exception):
    """The worker ended, or sent something that is not an answer."""


class AnswerTooLarge(Exception):
    """The worker's answer (the program's calls' arguments and its result) is larger than a program may return."""


class _Worker:
    __slots__ = ("last_used", "process", "runs")

    def __init__(self, bound: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "responses_bridge.run.programs.worker", str(bound)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
            env={name: os.environ[name] for name in _PASSED_ON if name in os.environ})
        self.runs = 0
        self.last_used = time.monotonic()

    def ready(self) -> None:
        answer = self.read(time.monotonic() + START_SECONDS)
        if not answer.get("ready"):
            raise WorkerGone("no ready frame")

    def send(self, job: dict[str, Any]) -> None:
        data = orjson.dumps(job)
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(HEADER.pack(len(data)) + data)
        except OSError as error:  # it ended while idle
            raise WorkerGone(str(error)) from None

    def read(self, deadline: float, limit: int = MAX_FRAME) -> dict[str, Any]:
        """The next frame, refused from its header when it is larger than ``limit`` (never read then)."""
        head = self._read_exactly(HEADER.size, deadline)
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise WorkerGone(f"a frame of {size} bytes")
        if size > limit:
            raise AnswerTooLarge(size)
        value = orjson.loads(self._read_exactly(size, deadline))
        if not isinstance(value, dict):
            raise WorkerGone("an answer that is not an object")
        value["answer_bytes"] = size
        return value

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        left = size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise WorkerGone("end of its output")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class RunHandle:
    """The worker one program runs in, for the host to end when the program's answer is no longer wanted (its
    request was cancelled, or taken back for another tenant: fair_share.py): the worker is killed, so its slot and
    memory come back at once rather than at the program's time bound."""

    __slots__ = ("_lock", "_worker", "stopped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self.stopped = False

    def attach(self, worker: _Worker) -> bool:
        with self._lock:
            self._worker = None if self.stopped else worker
            return not self.stopped

    def detach(self) -> bool:
        """The program answered: the worker is the pool's again, unless it was stopped meanwhile (False)."""
        with self._lock:
            self._worker = None
            return not self.stopped

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            worker, self._worker = self._worker, None
        if worker is not None and worker.process.poll() is None:
            worker.process.kill()


class WorkerPool:
    """Workers bounded at ``bound`` bytes each (beyond V8's own); at most ``keep`` kept idle. ``answer_bytes``: the
    largest answer a program may send back (its calls' arguments and its result, as JSON): the bridge parses and
    keeps it, in its own memory, so it is bounded per program (host.py holds it in the memory budget)."""

    def __init__(self, bound: int, *, keep: int, max_runs: int = MAX_RUNS, idle_seconds: float = IDLE_SECONDS,
                 setting: str = "", answer_bytes: int = MAX_FRAME) -> None:
        self.bound = bound
        self.answer_bytes = min(answer_bytes, MAX_FRAME)
        self.keep = keep
        self.max_runs = max_runs
        self.idle_seconds = idle_seconds
        self.setting = setting  # the setting that moves the bound, named where a program meets it
        self.started = 0  # workers started, in all (a test reads it: a dead worker is replaced)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None

    def run(self, code: str, names: list[str], results: list[str], *, seed: int, clock_ms: int,
            limits: Limits, handle: RunHandle | None = None) -> ProgramRun:
        """Run one program in a worker: what it came to, never an exception for anything the program does.
        ``handle``: how the host ends it early (:class:`RunHandle`)."""
        try:
            worker = self._take()
        except ProgramsUnavailable as error:
            log.error("program worker did not start", why=str(error))
            return ProgramRun("incomplete", result=f"Program stopped: {error}.", limit="worker")
        if handle is not None and not handle.attach(worker):
            self._give_back(worker)
            return _ended("stopped", "its answer was no longer wanted")
        job = {"code": code, "names": names, "results": results, "seed": seed, "clock_ms": clock_ms,
               "limits": asdict(limits)}
        try:
            worker.send(job)
            answer = worker.read(time.monotonic() + limits.timeout + GRACE_SECONDS, self.answer_bytes)
        except TimeoutError:
            worker.stop()
            return _ended("time", f"the program ran past its time limit ({limits.timeout:g} s)")
        except AnswerTooLarge as error:
            worker.stop()  # the answer is never read: the worker goes with it
            return _ended("answer", f"its tool calls' arguments and its result came to {_mib(error.args[0])} of "
                                    f"JSON, more than a program may return ({_mib(self.answer_bytes)}: a part of "
                                    f"its memory bound{self._named()})")
        except (WorkerGone, ValueError) as error:
            worker.stop()
            if handle is not None and handle.stopped:
                return _ended("stopped", "its answer was no longer wanted")
            log.warning("program worker ended", returncode=worker.process.returncode, why=str(error))
            return _ended("memory", f"it used more than its memory bound ({self.bound >> 20} MiB{self._named()}); "
                                    "its worker process was ended")
        worker.runs += 1
        if handle is not None and not handle.detach():
            worker.stop()
        else:
            self._give_back(worker)
        return ProgramRun(status=answer["status"], result=str(answer["result"]),
                          calls=[ToolCall(str(name), str(arguments)) for name, arguments in answer["calls"]],
                          recorded=int(answer["recorded"]), limit=answer["limit"],
                          answer_bytes=int(answer["answer_bytes"]))

    def close(self) -> None:
        """Stop the idle workers (a worker running a program stops when its answer is not wanted)."""
        with self._lock:
            self._closed.set()
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def _reap(self) -> None:
        """Every half idle time, stop the workers idle longer than it: an idle bridge keeps no worker's memory."""
        while not self._closed.wait(self.idle_seconds / 2):
            now = time.monotonic()
            with self._lock:
                stale = [worker for worker in self._idle if now - worker.last_used >= self.idle_seconds]
                self._idle = [worker for worker in self._idle if worker not in stale]
            for worker in stale:
                worker.stop()

    def _named(self) -> str:
        return f": {self.setting}" if self.setting else ""

    def _take(self) -> _Worker:
        now = time.monotonic()
        stale: list[_Worker] = []
        worker: _Worker | None = None
        with self._lock:
            while self._idle:
                candidate = self._idle.pop()
                if candidate.process.poll() is None and now - candidate.last_used < self.idle_seconds:
                    worker = candidate
                    break
                stale.append(candidate)
            stale += [old for old in self._idle if now - old.last_used >= self.idle_seconds]
            self._idle = [old for old in self._idle if now - old.last_used < self.idle_seconds]
        for old in stale:
            old.stop()
        if worker is not None:
            return worker
        return self._start()

    def _start(self) -> _Worker:
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="program-workers", daemon=True)
                self._reaper.start()
        try:
            worker = _Worker(self.bound)
        except OSError as error:
            raise ProgramsUnavailable(f"a program's worker process could not start: {error}") from None
        self.started += 1
        try:
            worker.ready()
        except (TimeoutError, WorkerGone, ValueError) as error:
            worker.stop()
            raise ProgramsUnavailable("a program's worker process did not start (programs need the embedded V8 and "
                                      f"a Linux kernel's RLIMIT_DATA): {error or type(error).__name__}") from None
        return worker

    def _give_back(self, worker: _Worker) -> None:
        worker.last_used = time.monotonic()
        with self._lock:
            if not self._closed.is_set() and worker.runs < self.max_runs and len(self._idle) < self.keep:
                self._idle.append(worker)
                return
        worker.stop()


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _ended(limit: str, message: str) -> ProgramRun:
    return ProgramRun("incomplete", result=f"Program stopped: {message}.", limit=limit)
