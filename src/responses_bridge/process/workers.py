"""``serve --workers N``: N processes serving both doors, watched over by the process that was started.

One Python process runs on one core. With N workers the machine's cores all serve, each worker a whole sidecar
(both doors, its own event loop and store connections) over the one database:

- **The HTTP door** is one port for every worker: each binds it with ``SO_REUSEPORT`` and the kernel spreads new
  connections over them.
- **The ext_proc door** is one address per worker: worker ``i`` listens on ``extproc_port + i`` (or, with
  ``--extproc-uds PATH``, on ``PATH`` for worker 0 and ``PATH.i`` for the others), and ``envoy-config --workers N``
  lists them all as the endpoints of the processor's cluster. Envoy opens one HTTP/2 connection per endpoint and
  balances each request's gRPC stream over them; one shared port would put every stream of Envoy's single
  connection on whichever worker accepted it.
- **State** is the database's: SQLite in WAL mode is safe across processes, and the parts that assumed one
  process take leases on it as PostgreSQL replicas do (background runs, ingestion claims); ``/metrics`` adds up
  every worker's series (prometheus-client's multiprocess mode, in a directory this process makes).

The supervisor (this module) imports neither aiohttp nor gRPC: it starts the workers as ``python -m
responses_bridge serve`` with the same arguments and a marker in their environment, passes SIGTERM/SIGINT on to
them (each drains as a lone sidecar does, and keeps its HTTP door answering probes until every worker has drained:
drain_barrier.py), starts again a worker that died (a background run it held is resumed by another worker once
its lease runs out, as for a replica), and stops all when one cannot start at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from .drain_barrier import DRAIN_DIR_ENV, clear_mark, mark_draining

log = structlog.get_logger("responses_bridge.workers")

WORKER_ENV = "RESPONSES_BRIDGE_WORKER_SLOT"
"""Set by the supervisor in each worker's environment: ``i/N``. Not a setting: a process started by hand has none."""
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
STARTUP_SECONDS = 10.0
"""A worker that exits with an error code this soon after the start failed to start (a taken port, a bad
setting): every worker would, so the supervisor stops them all instead of starting it again and again. A worker
killed by a signal is started again, however soon."""
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
STOP_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class WorkerSlot:
    """Which worker this process is, of how many."""

    index: int
    count: int


def current_slot() -> WorkerSlot | None:
    """This process's slot, when the supervisor started it as a worker."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    index, _, count = value.partition("/")
    return WorkerSlot(int(index), int(count))


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity, capped by the cgroup's CPU quota (a Kubernetes CPU
    limit of 2 on a 64-core node gives 2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota)) if quota is not None else cpus)


def _cgroup_cpu_quota() -> float | None:
    """cgroup v2 ``cpu.max`` ("max 100000" or "200000 100000"), else v1's cfs quota and period; None: no limit."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def worker_count(value: str | int) -> int:
    """``--workers``: a number of at least 1, or ``auto`` (one per usable core)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return usable_cpus()
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"workers must be a whole number or 'auto', not {value!r}") from None
    if count < 1:
        raise ValueError(f"workers must be at least 1, not {count}")
    return count


def extproc_port(base: int, index: int) -> int:
    """Worker ``index``'s ext_proc port: one per worker, from the configured one up."""
    return base + index


def extproc_uds(path: str, index: int) -> str:
    """Worker ``index``'s ext_proc socket: the configured path for the first worker, ``PATH.i`` for the others."""
    return path if index == 0 else f"{path}.{index}"


def supervise(count: int, argv: list[str]) -> int:
    """Run ``count`` workers of ``responses-bridge <argv>`` until SIGTERM/SIGINT; the exit code of the whole."""
    metrics_dir, made = _metrics_directory()
    drain_dir = tempfile.mkdtemp(prefix="responses-bridge-drain-")
    supervisor = _Supervisor(count, argv, metrics_dir, drain_dir)
    stop = _StopSignal()
    try:
        return supervisor.run(stop)
    finally:
        stop.restore()
        shutil.rmtree(drain_dir, ignore_errors=True)
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_directory() -> tuple[str, bool]:
    """Where the workers keep their metric values (emptied: values of earlier processes would add up). An
    operator's ``PROMETHEUS_MULTIPROC_DIR`` is used as it is; otherwise a private temporary one, removed at the
    end."""
    given = os.environ.get(METRICS_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return given, False
    return tempfile.mkdtemp(prefix="responses-bridge-metrics-"), True


class _StopSignal:
    """SIGTERM/SIGINT received (the supervisor passes them on); the handlers in place before are restored."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._before = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)


class _Supervisor:
    def __init__(self, count: int, argv: list[str], metrics_dir: str, drain_dir: str) -> None:
        self.count = count
        self.argv = argv
        self.metrics_dir = metrics_dir
        self.drain_dir = drain_dir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.restarts: dict[int, int] = {}

    def run(self, stop: _StopSignal) -> int:
        began = time.monotonic()
        for index in range(self.count):
            self._start(index)
        log.info("workers_started", count=self.count, pids=[proc.pid for proc in self.procs.values()])
        while stop.received is None:
            time.sleep(STOP_POLL_SECONDS)
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                self._forget(proc.pid)
                if code > 0 and time.monotonic() - began < STARTUP_SECONDS:  # its own error exit, not a kill
                    log.error("worker_failed_to_start", worker=index, exit_code=code)
                    self._stop_all(signal.SIGTERM)
                    return code if code > 0 else 1
                delay = RESTART_DELAYS[min(self.restarts.get(index, 0), len(RESTART_DELAYS) - 1)]
                if time.monotonic() - self.started_at[index] > 60:  # it ran a while: a fresh run of failures
                    self.restarts[index] = 0
                    delay = RESTART_DELAYS[0]
                log.warning("worker_exited", worker=index, pid=proc.pid, exit_code=code, restart_in=delay)
                time.sleep(delay)
                self.restarts[index] = self.restarts.get(index, 0) + 1
                if stop.received is None:
                    self._start(index)
        log.info("workers_stopping", signal=signal.Signals(stop.received).name)
        return self._stop_all(signal.SIGTERM)

    def _start(self, index: int) -> None:
        env = dict(os.environ, **{WORKER_ENV: f"{index}/{self.count}", METRICS_ENV: self.metrics_dir,
                                  DRAIN_DIR_ENV: self.drain_dir})
        self.procs[index] = subprocess.Popen([sys.executable, "-m", "responses_bridge", *self.argv], env=env,
                                             preexec_fn=_die_with_parent)
        self.started_at[index] = time.monotonic()

    def _forget(self, pid: int) -> None:
        """A worker ended: its live gauges (streams open, queue depth) leave the sums; its counters stay."""
        with contextlib.suppress(Exception):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.metrics_dir)

    def _stop_all(self, sig: int) -> int:
        """Pass ``sig`` on and wait: each worker drains (``drain_timeout``) and ends on its own. Every live worker
        is marked draining before any is signalled, so that none closes the shared HTTP port while another still
        drains (drain_barrier.py); the mark of a worker that ended without clearing it (killed) goes with it."""
        live = {index: proc for index, proc in self.procs.items() if proc.poll() is None}
        for index in live:
            mark_draining(self.drain_dir, index)
        for proc in live.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        worst = 0
        waiting = dict(self.procs)
        while waiting:
            for index, proc in list(waiting.items()):
                code = proc.poll()
                if code is None:
                    continue
                del waiting[index]
                clear_mark(self.drain_dir, index)
                self._forget(proc.pid)
                worst = worst or (code if code > 0 else 0)
            if waiting:
                time.sleep(STOP_POLL_SECONDS)
        return worst


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies (even by SIGKILL), so no worker outlives it
    and keeps the ports."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
