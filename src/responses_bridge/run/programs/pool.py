"""The worker processes programs run in (worker.py), reused from one program to the next.

:meth:`WorkerPool.run` is blocking (the host calls it from its own threads, one per slot): it takes an idle worker
or starts one, sends the job and waits for the answer at most the program's time bound plus a grace. A worker that
ends instead of answering reached its memory bound (or was killed): the program is ``incomplete`` naming the bound,
and the worker is gone — the next program starts another. A worker that does not answer in time is killed. Idle
workers are kept (at most ``keep``) so a program pays for a process start only when none is idle, and retired
after ``max_runs`` programs or ``idle_seconds`` unused, so what V8 leaves behind never builds up. Past a burst only
one stays warm that long: every other idle worker (a *spare*) is retired once ``spare_seconds`` unused. Each worker
is a Python process with V8 started (~70 MiB resident), so sixteen programs on four slots left three spares, some
240 MiB, for a minute after the last answer — in the sidecar's cgroup, which the memory backstop reads
(services/tenancy/memory_watch.py), memory no request holds. A spare costs ~0.09 CPU-s to start again.

A program that has used ``lower_after`` seconds of CPU has its worker's threads lowered to :data:`LOWERED_NICE`:
programs are CPU-bound, a slot bounds how many run but not how the cores are shared, and four endless loops beside
a tenant's ten-millisecond program took it 0.3–0.6 s at equal priority on two cores (the kernel shares by weight:
at nice 10 against 0, 110 to 1024). Short programs — a light tenant's, whoever else holds slots — keep the cores
first, as a scheduler favouring the least served would give them (measured beside 16 greedy tenants' endless
programs on 4 slots: a victim's calls 0.90–1.01 of the #63 limit at p95, 0.58–0.83 lowered past 0.1 s; past 0.5 s
greedy programs taken back and begun again every quantum / C spent too long at equal priority: 0.70–1.05).
Raising a worker back needs ``CAP_SYS_NICE``: a worker this process may not raise is retired when its program ends,
never reused lowered, and a fresh one (~0.09 CPU-s) started in its place off the answer's path.

The same holds for every worker that ends with its program — killed at its time bound, past its memory or answer
bound, or its request gone (the worker of a program no longer wanted is killed): a fresh one is started in its
place off the answer's path. Otherwise the program the slot goes to next pays the start itself: beside greedy
tenants' endless programs on a loaded machine, a light tenant's one-line program took 0.8–1.2 s to start its
worker.
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
SPARE_SECONDS = 4.0
"""Unused seconds after which an idle worker other than the most recently used one is retired (module text)."""
LOWER_AFTER_SECONDS = 0.1
"""CPU seconds of one program before its worker runs at :data:`LOWERED_NICE` (``program_lower_priority_after``)."""
LOWERED_NICE = 10
WATCH_SECONDS = 0.1
"""How often a running program's CPU is looked at (a read of ``/proc/<pid>/stat``) until its worker is lowered."""
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PASSED_ON = ("PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ")
"""The environment a worker gets: enough to start Python and read the time zone — none of the bridge's settings,
whose secrets (keys, database URLs) a worker never needs."""


class WorkerGone(Exception):
    """The worker ended, or sent something that is not an answer."""


class AnswerTooLarge(Exception):
    """The worker's answer (the program's calls' arguments and its result) is larger than a program may return."""


class _Worker:
    __slots__ = ("last_used", "lowered", "process", "runs")

    def __init__(self, bound: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "responses_bridge.run.programs.worker", str(bound)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
            env={name: os.environ[name] for name in _PASSED_ON if name in os.environ})
        self.runs = 0
        self.last_used = time.monotonic()
        self.lowered = False

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

    def read(self, deadline: float, limit: int = MAX_FRAME, lower_after: float = 0.0) -> dict[str, Any]:
        """The next frame, refused from its header when it is larger than ``limit`` (never read then); while it
        is awaited, the worker lowered once its CPU reaches ``lower_after`` seconds (0: never)."""
        head = self._read_exactly(HEADER.size, deadline, lower_after)
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

    def _read_exactly(self, size: int, deadline: float, lower_after: float = 0.0) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        left = size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            if lower_after > 0 and not self.lowered:  # its CPU looked at every WATCH_SECONDS until lowered
                if not select.select([fd], [], [], min(wait, WATCH_SECONDS))[0]:
                    self._lower_past(lower_after)
                    continue
            elif not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise WorkerGone("end of its output")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _lower_past(self, cpu_seconds: float) -> None:
        if _cpu_seconds(self.process.pid) >= cpu_seconds:
            self.lowered = True  # tried once: a worker that could not be lowered runs on as it is
            _renice(self.process.pid, LOWERED_NICE)

    def restore(self) -> bool:
        """Back at normal priority for its next program; False if this process may not raise it."""
        if not self.lowered:
            return True
        if not _renice(self.process.pid, 0):
            return False
        self.lowered = False
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class RunHandle:
    """The worker one program runs in, for the host to end when the program's answer is no longer wanted (its
    request was cancelled: its client gone, or ended by the memory backstop): the worker is killed, so its slot and
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
                 spare_seconds: float = SPARE_SECONDS, setting: str = "", answer_bytes: int = MAX_FRAME,
                 lower_after: float = LOWER_AFTER_SECONDS) -> None:
        self.bound = bound
        self.lower_after = lower_after  # CPU seconds of a program before its worker is lowered (0: never)
        self.answer_bytes = min(answer_bytes, MAX_FRAME)
        self.keep = keep
        self.max_runs = max_runs
        self.idle_seconds = idle_seconds
        self.spare_seconds = min(spare_seconds, idle_seconds)
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
            answer = worker.read(time.monotonic() + limits.timeout + GRACE_SECONDS, self.answer_bytes,
                                 self.lower_after)
        except TimeoutError:
            self._retire(worker)
            return _ended("time", f"the program ran past its time limit ({limits.timeout:g} s)")
        except AnswerTooLarge as error:
            self._retire(worker)  # the answer is never read: the worker goes with it
            return _ended("answer", f"its tool calls' arguments and its result came to {_mib(error.args[0])} of "
                                    f"JSON, more than a program may return ({_mib(self.answer_bytes)}: a part of "
                                    f"its memory bound{self._named()})")
        except (WorkerGone, ValueError) as error:
            self._retire(worker)
            if handle is not None and handle.stopped:
                return _ended("stopped", "its answer was no longer wanted")
            log.warning("program worker ended", returncode=worker.process.returncode, why=str(error))
            return _ended("memory", f"it used more than its memory bound ({self.bound >> 20} MiB{self._named()}); "
                                    "its worker process was ended")
        worker.runs += 1
        if handle is not None and not handle.detach():
            self._retire(worker)
        elif not worker.restore():
            self._retire(worker)  # lowered for good
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
        """Every half spare time, stop the workers idle longer than the idle time, and the spares idle longer than
        the spare time: an idle bridge keeps no worker's memory, a burst's spares go soon after it."""
        while not self._closed.wait(self.spare_seconds / 2):
            now = time.monotonic()
            with self._lock:
                stale = self.unwanted(now)
                self._idle = [worker for worker in self._idle if worker not in stale]
            for worker in stale:
                worker.stop()

    def unwanted(self, now: float) -> list[_Worker]:
        """The idle workers to stop at ``now`` (under the lock): those unused for the idle time, and the spares —
        all but the most recently used — unused for the spare time."""
        warm = max(self._idle, key=lambda worker: worker.last_used, default=None)
        return [worker for worker in self._idle
                if now - worker.last_used >= (self.idle_seconds if worker is warm else self.spare_seconds)]

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

    def _retire(self, worker: _Worker) -> None:
        """Stop ``worker``, which ended with its program, and start a fresh one in its place off this answer's path
        (module text)."""
        worker.stop()
        if not self._closed.is_set():
            threading.Thread(target=self._replace, name="program-worker-start", daemon=True).start()

    def _replace(self) -> None:
        """A fresh idle worker in place of one retired, so the next program does not wait for its start."""
        with self._lock:
            if self._closed.is_set() or len(self._idle) >= self.keep:
                return
        try:
            self._give_back(self._start())
        except ProgramsUnavailable as error:
            log.warning("program worker did not start", why=str(error))  # the next program starts one, or says why

    def _give_back(self, worker: _Worker) -> None:
        worker.last_used = time.monotonic()
        with self._lock:
            if not self._closed.is_set() and worker.runs < self.max_runs and len(self._idle) < self.keep:
                self._idle.append(worker)
                return
        worker.stop()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` and its threads so far (``/proc/<pid>/stat``); 0.0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _renice(pid: int, nice: int) -> bool:
    """Every thread of process ``pid`` at ``nice`` (Linux keeps a nice value per thread, and V8 runs a program on
    a thread of its own); False if any could not be set (raising one back needs ``CAP_SYS_NICE``)."""
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return False
    done = True
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            continue  # that thread ended meanwhile
        except OSError:
            done = False
    return done


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _ended(limit: str, message: str) -> ProgramRun:
    return ProgramRun("incomplete", result=f"Program stopped: {message}.", limit=limit)
