"""What the processes a test run starts cost: a pytest plugin, off unless loaded (``-p tests.support.spawn_log``),
that writes one JSON line per child reaped — its command, the test module that started it, its wall time and the
CPU it and everything it waited for used (user + system, from ``wait4``'s rusage) — to the file
``SPAWN_LOG`` names (appended, so xdist workers share it). Why: a suite's minutes are mostly the
interpreters, servers and CLIs its tests start, and which of them to make cheaper is a question of count × cost.

``python -m tests.support.spawn_log FILE`` sums such a file by kind of process (docs/development.md's figures).

How: every child Python starts (``subprocess``, asyncio's subprocesses, ``multiprocessing``) is reaped through
``os.waitpid``; this replaces it with ``os.wait4``, which returns the same and the child's resource use, and
remembers each ``subprocess.Popen``'s command by pid. A child reaped by nobody (left to ``init``) is not counted."""

from __future__ import annotations

import collections
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

_ENV = "SPAWN_LOG"  # not RESPONSES_BRIDGE_*: tests/conftest.py clears those, and the sidecars would warn of it
_started: dict[int, tuple[list[str], float, str]] = {}
_lock = threading.Lock()
_current_module = ["(collection)"]
_log_path: list[str] = []
_real_waitpid = os.waitpid


def _argv_of(args: Any) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    return [os.fsdecode(arg) if isinstance(arg, (str, bytes, os.PathLike)) else str(arg) for arg in args]


def _waitpid(pid: int, options: int) -> tuple[int, int]:
    reaped, status, usage = os.wait4(pid, options)
    if reaped > 0 and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
        _record(reaped, usage)
    return reaped, status


def _record(pid: int, usage: Any) -> None:
    with _lock:
        argv, started, module = _started.pop(pid, (["(fork)"], 0.0, _current_module[0]))
    _write(argv, module, started, usage.ru_utime, usage.ru_stime, usage.ru_maxrss)


def record_forked(argv: list[str], started: float, report: dict[str, Any]) -> None:
    """A process tests/support/zygote.py forked, reaped by its fork server (which reported its resource use)."""
    if _log_path:
        _write(argv, _current_module[0], started, report["user"], report["sys"], report["maxrss_kb"], forked=True)


def _write(argv: list[str], module: str, started: float, user: float, system: float, maxrss_kb: int, *,
           forked: bool = False) -> None:
    line = {"argv": argv[:12], "module": module, "wall": round(time.monotonic() - started, 3) if started else None,
            "cpu": round(user + system, 3), "user": round(user, 3), "sys": round(system, 3), "maxrss_kb": maxrss_kb,
            **({"forked": True} if forked else {})}
    with _lock, open(_log_path[0], "a") as log:
        log.write(json.dumps(line) + "\n")


_real_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]


def _execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    _real_execute_child(self, args, *rest, **kwargs)
    with _lock:
        _started[self.pid] = (_argv_of(args), time.monotonic(), _current_module[0])


def pytest_configure(config: Any) -> None:
    if not os.environ.get(_ENV):
        return
    _log_path.append(os.environ[_ENV])
    os.waitpid = _waitpid
    subprocess.Popen._execute_child = _execute_child  # type: ignore[attr-defined]


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    module = nodeid.split("::", 1)[0]
    if _log_path and module != _current_module[0]:
        _record_own(_current_module[0])
    _current_module[0] = module


def pytest_sessionfinish(session: Any) -> None:
    if _log_path:
        _record_own(_current_module[0])


_own_cpu_at_switch = [0.0]


def _record_own(module: str) -> None:
    """The test process's own CPU (user + system) since the last module began, charged to that module: with
    ``--dist loadfile`` a worker runs one module at a time, so this is that module's in-process share."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    now = usage.ru_utime + usage.ru_stime
    spent, _own_cpu_at_switch[0] = now - _own_cpu_at_switch[0], now
    with open(_log_path[0], "a") as log:
        log.write(json.dumps({"argv": [OWN], "module": module, "wall": None, "cpu": round(spent, 3)}) + "\n")


OWN = "(the test process itself)"
"""The kind of the lines :func:`_record_own` writes: a worker's own CPU per module."""

WORKER = "pytest-xdist worker"
"""An xdist worker (execnet's ``python -u -c …``), reaped by the controller: its CPU holds every child it reaped,
so it is shown apart and left out of the total."""
FORK_SERVER = "python -m tests.support.zygote"
"""A test process's fork server (zygote.py): its CPU holds every process it forked, which are counted each on its
own (:func:`record_forked`), so it is shown apart; what is its own (its imports) is that less theirs, counted."""
APART = (WORKER, FORK_SERVER)


def _kind(argv: list[str]) -> str:
    """A process's kind: the CLI command it ran (``serve``, ``fake-upstream``, ``keys`` …) or the program."""
    if not argv:
        return "?"
    program = os.path.basename(argv[0])
    if argv[1:3] == ["-u", "-c"]:
        return WORKER
    if "-m" in argv:
        after = argv[argv.index("-m") + 1:]
        if after and after[0] == "responses_bridge" and len(after) > 1:
            return f"responses-bridge {after[1]}"
        if after:
            return f"python -m {after[0]}"
    if program.startswith("python") and len(argv) > 1:
        return f"python {os.path.basename(argv[1]) if not argv[1].startswith('-') else argv[1]}"
    for wrapper in ("unshare", "bwrap", "setpriv", "nsenter", "env", "timeout"):
        if program == wrapper:
            inner = [arg for arg in argv[1:] if not arg.startswith("-")]
            return f"{wrapper} … {_kind(inner)}" if inner else wrapper
    return program


def summarize(path: str) -> str:
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    with open(path) as log:
        lines = [json.loads(raw) for raw in log]
    for line in lines:
        entry = totals[_kind(line["argv"])]
        entry[0] += 1
        entry[1] += line["cpu"]
        entry[2] += line["wall"] or 0.0
    apart = {kind: totals.pop(kind) for kind in APART if kind in totals}
    if FORK_SERVER in apart:
        servers, servers_cpu = apart[FORK_SERVER][0], apart[FORK_SERVER][1]
        totals[FORK_SERVER + " (itself)"] = [servers, servers_cpu - sum(line["cpu"] for line in lines
                                                                        if line.get("forked")), 0.0]
    rows = sorted(totals.items(), key=lambda item: -item[1][1])
    all_cpu = sum(entry[1] for _, entry in rows)
    out = [f"{'kind':48} {'starts':>7} {'cpu s':>9} {'cpu/start':>9} {'share':>6}"]
    for kind, (count, cpu, _wall) in rows:
        out.append(f"{kind[:48]:48} {int(count):7} {cpu:9.1f} {cpu / count:9.3f} {cpu / all_cpu:6.1%}")
    out.append(f"{'all':48} {int(sum(e[0] for _, e in rows)):7} {all_cpu:9.1f}")
    for kind, (count, cpu, _wall) in apart.items():
        out.append(f"{kind + ', their children included':48} {int(count):7} {cpu:9.1f}")
    by_module: dict[str, float] = collections.defaultdict(float)
    for line in lines:
        if _kind(line["argv"]) not in APART:
            by_module[line["module"]] += line["cpu"]
    out.append("")
    out.append(f"{'module (its processes and the test process itself)':60} {'cpu s':>9}")
    for module, cpu in sorted(by_module.items(), key=lambda item: -item[1])[:_MODULES_SHOWN]:
        out.append(f"{module[:60]:60} {cpu:9.1f}")
    return "\n".join(out)


_MODULES_SHOWN = 60


if __name__ == "__main__":
    print(summarize(sys.argv[1]))
