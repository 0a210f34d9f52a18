"""A fork server for the bridge processes a test run starts: ``python -m responses_bridge serve …`` (and
``fake-upstream``) forked from a process that has already imported the bridge, instead of a fresh interpreter
importing its ~900 modules again for each of the suite's ~400 sidecars (~0.5 CPU-s a start, a fifth of the suite).
The MCP test server (``python -m tests.support.mcp_server``, ~0.4 CPU-s of imports a start) is forked the same way
from a fork server of its own (:data:`FORKED`).

What the forked process runs is what ``python -m responses_bridge ARGS`` runs (``runpy``, ``__main__``, the
CLI's own ``main``), with the environment, working directory, standard streams and session a ``subprocess.Popen``
with ``start_new_session=True`` gives it; what differs is only that the imports happened before the fork. So
a process whose start an import could change is started the usual way, not forked: an interpreter option in its
environment (``PYTHON*``, the loader's ``LD_*``), a variable an imported module reads once (prometheus-client's
multiprocess directory, gRPC's), or coverage measuring the subprocesses. The fork server imports only what every
plain ``serve`` imports anyway, so a forked sidecar holds no module a started one would not.

One fork server per test process and module, started at its first use, ending when that process does (its stdin
closes).
:func:`popen` is a drop-in for ``subprocess.Popen`` as :class:`ManagedProcess` calls it; its processes answer
``pid``, ``poll``, ``wait``, ``returncode``, ``send_signal``, ``terminate`` and ``kill``, their exit status and
resource use reported by the fork server, which is their parent.

``RESPONSES_BRIDGE_TEST_FORK=0`` (or ``COVERAGE_PROCESS_START`` set) starts every process the usual way."""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

COMMANDS = ("serve", "fake-upstream", "keys", "config", "envoy-config", "probe", "doctor", "demo")
"""The CLI commands forked: the ones a run starts hundreds of (``serve``, ``fake-upstream``), and those the CLI's
own tests (a mistake's one line, ``--help``, a probe's table) run some hundred times between them, each ~0.4 CPU-s of
imports when started the usual way (``bench``, which starts installed trees, is not)."""
PRELOAD = (
    "responses_bridge.cli",
    "responses_bridge.serve",
    "responses_bridge.runtime",
    "responses_bridge.adapters.upstream_client",
    "responses_bridge.adapters.http.server",
    "responses_bridge.process.listen_check",
    "responses_bridge.process.drain_barrier",
    "responses_bridge.demo.fake_server",
)
"""Imported before any fork: what a plain ``serve`` has imported once it answers (tests/unit/test_idle_imports.py
holds this to it), and the fake upstream; but not the ext_proc door, which imports gRPC (see :data:`NOT_FORKED`)."""
FORKED: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...]]] = {
    "responses_bridge": (COMMANDS, PRELOAD),
    "tests.support.mcp_server": (None, ("uvicorn", "mcp.server.mcpserver", "mcp_types", "starlette.responses")),
}
"""What is forked, by the module ``-m`` runs: the commands forked (None: any arguments) and what its fork server
imports first (what the module imports, not the module: ``runpy`` runs it as ``__main__``, and warns of a copy
imported already). One fork server per module, so that a forked sidecar holds no module only the MCP test server
needs."""
NOT_FORKED = ("grpc",)
"""Never imported before the fork. gRPC's core registers ``pthread_atfork`` handlers as it initializes, and a
process forked from one where it had (even with no thread started) carries their state: its own later forks (the
sandbox's ``bwrap``, each call) then met "Other threads are currently calling into gRPC, skipping fork() handlers"
and the child sometimes died before its exec (a sandbox call failed, "bubblewrap could not make the sandbox (no
reason)"): 4 of 83 of the sandbox suites' cases, none when the forked process imports gRPC itself."""
IMPORT_TIME_PREFIXES = ("PYTHON", "LD_", "MALLOC", "GRPC_", "PROMETHEUS_", "COVERAGE", "OTEL_")
"""Variables an interpreter or an imported module may read as it starts: a process whose environment sets one
other than the fork server's is started the usual way."""
SWITCH = "RESPONSES_BRIDGE_TEST_FORK"
_MAX_HEADER = 4 << 20


# -- the fork server --------------------------------------------------------------------------------------------------

def _serve(listener: socket.socket) -> dict[str, Any] | None:
    """Accept requests and fork; returns, in a forked child only, what it is to run."""
    reap_r, reap_w = os.pipe()
    os.set_blocking(reap_r, False)
    os.set_blocking(reap_w, False)
    signal.set_wakeup_fd(reap_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(reap_r, selectors.EVENT_READ, "reap")
    selector.register(0, selectors.EVENT_READ, "parent")
    while True:
        for key, _ in selector.select():
            if key.data == "parent":  # the test process has ended (or closed our stdin): so do we
                if not os.read(0, 4096):
                    return None
            elif key.data == "reap":
                while True:
                    with contextlib.suppress(BlockingIOError):
                        os.read(reap_r, 4096)
                    try:
                        pid, status, usage = os.wait4(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    conn = children.pop(pid, None)
                    if conn is not None:
                        report = {"status": status, "user": usage.ru_utime, "sys": usage.ru_stime,
                                  "maxrss_kb": usage.ru_maxrss}
                        with contextlib.suppress(OSError):
                            conn.sendall(json.dumps(report).encode() + b"\n")
                        conn.close()
            else:
                conn, _ = listener.accept()
                request = _receive(conn)
                if request is None:
                    conn.close()
                    continue
                header, fds = request
                pid = os.fork()
                if pid == 0:  # the child: nothing of the server's kept open
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    selector.close()
                    for fd in (reap_r, reap_w):
                        os.close(fd)
                    for other in children.values():
                        other.close()
                    conn.close()
                    listener.close()
                    return {**header, "fds": fds}
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    data, fds, _, _ = socket.recv_fds(conn, _MAX_HEADER, 3)
    while data and not data.endswith(b"\n"):
        more = conn.recv(_MAX_HEADER)
        if not more:
            break
        data += more
    if len(fds) != 3 or not data.endswith(b"\n"):
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(data), list(fds)


def _become(job: dict[str, Any]) -> None:
    """In the forked child: what ``subprocess.Popen(argv, env=…, cwd=…, start_new_session=True)`` would have
    set up, then ``python -m MODULE ARGS``."""
    import runpy

    os.setsid()
    for target, fd in enumerate(job["fds"]):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    sys.path[0] = job["cwd"]  # as -m puts the directory it was started in first
    gc.unfreeze()
    sys.argv = ["-m", *job["args"]]  # runpy sets [0] to the module's file, as -m does
    runpy.run_module(job["module"], run_name="__main__", alter_sys=True)


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    for module in FORKED[sys.argv[2]][1]:
        __import__(module)
    carried = [name for name in NOT_FORKED if name in sys.modules]
    if carried:
        raise SystemExit(f"tests.support.zygote: {', '.join(carried)} imported before the fork (NOT_FORKED says why)")
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a thread would not survive the fork, and what it held (a lock) would stay held
        raise SystemExit(f"tests.support.zygote: the imports started {threads - 1} threads; cannot fork safely")
    gc.collect()
    gc.freeze()  # the imports' objects stay out of every child's collections, and their pages shared
    job = _serve(listener)
    if job is not None:
        _become(job)


# -- the test process's side ------------------------------------------------------------------------------------------

class ForkedProcess:
    """A process the fork server started: the part of ``subprocess.Popen`` the tests use."""

    def __init__(self, args: list[str], conn: socket.socket, pid: int, report: bytes = b"") -> None:
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self._conn = conn
        self._lock = threading.Lock()
        self._report = bytearray(report)
        self._started = time.monotonic()

    def poll(self) -> int | None:
        return self._collect(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _collect(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            self._conn.settimeout(timeout)
            try:
                ended = _read_line(self._conn, self._report)
            except (TimeoutError, BlockingIOError):
                return None
            self._conn.close()
            # the fork server gone before reporting (killed with the test process's group): as a killed child
            report = json.loads(self._report) if ended else {"status": signal.SIGKILL}
            status = int(report["status"])
            self.returncode = os.waitstatus_to_exitcode(status)
            if "user" in report:
                from tests.support import spawn_log

                spawn_log.record_forked(self.args, self._started, report)
            return self.returncode


def _read_line(conn: socket.socket, into: bytearray) -> bool:
    """Read into ``into`` until it holds a whole line (True) or the other end closes first (False); what a timeout
    interrupts stays in ``into`` for the next call."""
    while b"\n" not in into:
        piece = conn.recv(65536)
        if not piece:
            return False
        into += piece
    return True


class _Server:
    def __init__(self, module: str) -> None:
        self.module = module
        self.name = f"\0responses-bridge-test-fork-{os.getpid()}-{os.urandom(6).hex()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.name)
        listener.listen(64)
        self.env = dict(os.environ)
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.zygote", str(listener.fileno()), module],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        pass_fds=[listener.fileno()], cwd=_ROOT)
        listener.close()
        atexit.register(self.close)

    def close(self) -> None:
        """Its stdin closed, it ends; waited for, so its CPU (and that of every process it reaped) is counted in
        this process's children's, as a process started the usual way is."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def start(self, args: list[str], env: Mapping[str, str], fds: Sequence[int],
              cwd: str) -> tuple[socket.socket, int, bytes]:
        """The connection the exit report will come on, the pid, and what of that report has come already
        (a quick process's may arrive with its pid)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.name)
        header = {"module": self.module, "args": args, "env": dict(env), "cwd": cwd}
        socket.send_fds(conn, [json.dumps(header).encode() + b"\n"], list(fds))
        conn.settimeout(120)
        reply = bytearray()
        if not _read_line(conn, reply):
            conn.close()
            raise RuntimeError("the test fork server ended without starting the process")
        first, _, rest = bytes(reply).partition(b"\n")
        return conn, int(json.loads(first)["pid"]), rest


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_servers: dict[str, _Server] = {}
_server_lock = threading.Lock()


def _forked_module(argv: Sequence[str]) -> str | None:
    """The module of :data:`FORKED` that ``argv`` (``python -m MODULE ARGS``) runs, when forked: not when forking
    is switched off, or for a command of the bridge's not in :data:`COMMANDS`."""
    if len(argv) < 3 or list(argv[:2]) != [sys.executable, "-m"] or argv[2] not in FORKED:
        return None
    commands = FORKED[argv[2]][0]
    if commands is not None and (len(argv) < 4 or argv[3] not in commands):
        return None
    if os.environ.get(SWITCH) == "0" or os.environ.get("COVERAGE_PROCESS_START"):
        return None
    return argv[2]


def _same_start(env: Mapping[str, str], server_env: Mapping[str, str]) -> bool:
    """No variable read as an interpreter or a module starts differs from the fork server's."""
    keys = set(env) | set(server_env)
    return not any(key.startswith(IMPORT_TIME_PREFIXES) and env.get(key) != server_env.get(key) for key in keys)


def _fd(stream: int | IO[Any] | None, default: int, opened: list[int]) -> int:
    if stream is None:
        return default
    if stream == subprocess.DEVNULL:
        opened.append(os.open(os.devnull, os.O_RDWR))
        return opened[-1]
    if isinstance(stream, int):
        return stream
    return stream.fileno()


def _running_server(module: str) -> _Server:
    with _server_lock:
        if module not in _servers:
            _servers[module] = _Server(module)
        return _servers[module]


def popen(argv: Sequence[str], *, stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
          start_new_session: bool = False, env: Mapping[str, str] | None = None,
          cwd: str | os.PathLike[str] | None = None) -> Any:
    """``subprocess.Popen(argv, stdout=…, stderr=…, start_new_session=…, env=…, cwd=…)`` (the streams a file, a
    descriptor, ``DEVNULL`` or None; ``stderr`` also ``STDOUT``), forked from the fork server when ``argv`` is
    ``python -m MODULE …`` of :data:`FORKED` (``responses_bridge`` and a command of :data:`COMMANDS`, the MCP test
    server) and its environment allows it."""
    full_env = dict(os.environ if env is None else env)
    module = _forked_module(argv) if start_new_session else None
    server = _running_server(module) if module is not None else None
    if server is None or not _same_start(full_env, server.env):
        return subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, start_new_session=start_new_session,
                                env=None if env is None else dict(env), cwd=cwd)
    opened: list[int] = []
    try:
        out = _fd(stdout, 1, opened)
        fds = [0, out, out if stderr == subprocess.STDOUT else _fd(stderr, 2, opened)]
        conn, pid, report = server.start(list(argv[3:]), full_env, fds, os.fspath(cwd or os.getcwd()))
    finally:
        for fd in opened:
            os.close(fd)
    return ForkedProcess(list(argv), conn, pid, report)


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
        timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True, timeout=…, check=False, env=…, cwd=…)``, forked as
    :func:`popen` forks (its own session: a process killed at the timeout takes what it started with it). As with
    ``subprocess.run``, a ``TimeoutExpired`` carries what the process had written (``.stdout``, ``.stderr``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = popen(argv, stdout=out, stderr=err, start_new_session=True, env=env, cwd=cwd)

        def written() -> tuple[str, str]:
            out.seek(0)
            err.seek(0)
            return out.read().decode(errors="replace"), err.read().decode(errors="replace")

        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            stdout, stderr = written()
            raise subprocess.TimeoutExpired(list(argv), timeout, output=stdout, stderr=stderr) from None
        return subprocess.CompletedProcess(list(argv), code, *written())


if __name__ == "__main__":
    main()
