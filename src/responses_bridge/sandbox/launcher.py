"""The sandbox's first process (PID 1 of its PID namespace): it holds the call together while the code runs in a
child, and keeps the sandbox's file systems alive afterwards until the bridge has read back ``/mnt/data``.

Standard library only, and no import of the bridge: it runs inside the sandbox (bind-mounted read-only), under the
interpreter the bridge runs on, with the bridge's packages visible but not the bridge's data.

The exchange with the bridge:

1. it writes ``ready`` on the control descriptor: the sandbox's mounts exist, and the bridge lays the container's
   files out in ``/mnt/data`` (through ``/proc/<pid>/root``);
2. it reads the job from stdin — ``<filter bytes> <code bytes>\\n``, the seccomp filter, the code — and forks the
   child that runs it: the child lowers its limits (``RLIMIT_AS``, ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``), offers
   itself first to the out-of-memory killer, closes every descriptor but its standard ones (the control descriptor
   is the init's alone: nothing the code runs can speak for it), loads the seccomp filter and runs the code as
   ``__main__`` in ``/mnt/data``; the init writes ``start`` and ``end`` marks (the monotonic clock) around it;
3. when the child ends, it kills every process left in the namespace (``kill(-1)``) and reaps them all, then writes
   ``exit <status>``: nothing of the code runs any more while the bridge reads ``/mnt/data`` back;
4. it exits when stdin closes (the bridge is done, or gone).

SIGTERM (the bridge's time limit) ends the code the same way. The init itself cannot be signalled, traced or read
by the code: a namespace's init gets no signal from inside it that it has no handler for (and it ignores SIGINT,
which Python would otherwise handle), it is not dumpable (so ``/proc/1/mem``, ``environ`` and ``fd`` are closed to
the code), and the code's seccomp filter refuses ``ptrace``.

Under an ``allowlist`` network policy the init also relays: before the fork it listens on ``127.0.0.1:<port>`` of
the sandbox's own network namespace (so the port is the init's before any code runs, and the child closes the
listening descriptor with all the others), and after it a thread of the init's takes each connection to the egress
proxy's Unix socket bound into the sandbox, copying both ways (sandbox/egress.py decides what goes through). The
relay lives in the init, not in a process the code could signal or trace, and ends with it.

Arguments: the address-space limit in bytes (0: none), the process limit, bytes per file (0: none), the control
descriptor; then, under an allowlist policy, the relay's port and the proxy's socket path.
"""

import os
import resource
import signal
import sys
import time

# Nothing else at start: every import here is paid by each call's start-up (ctypes once the bridge has been told
# the sandbox is ready, while it lays the files out; traceback and linecache only when the code raised).

PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def _lower(kind: int, value: int) -> None:
    if value <= 0:
        return
    _soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        sys.stderr.write(f"[sandbox] could not set limit {kind} to {value}\n")


def _say(fd: int, line: str) -> None:
    try:  # noqa: SIM105 - contextlib is an import each call's start-up would pay
        os.write(fd, f"{line}\n".encode())
    except OSError:
        pass


def _read_exactly(count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = os.read(0, count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _read_job() -> tuple[bytes, str]:
    header = bytearray()
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            raise EOFError
        header += byte
    filter_length, code_length = (int(value) for value in header.split())
    seccomp = _read_exactly(filter_length)
    return seccomp, _read_exactly(code_length).decode("utf-8", "replace")


def _prctl(*arguments: object) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.prctl(*arguments)
    if result != 0:
        raise OSError(ctypes.get_errno(), "prctl failed")
    return result


def _load_filter(program: bytes) -> None:
    """Load the seccomp filter (``struct sock_filter`` entries of 8 bytes) on this process and its future
    children."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_char_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0)


def _child(code: str, seccomp: bytes, memory: int, processes: int, file_bytes: int) -> int:
    """The code's process: its limits, its filter, then the code."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.closerange(3, 1 << 16)
    _prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the code's own /proc entries are its own again
    try:
        with open("/proc/self/oom_score_adj", "w") as adjust:  # killed first when the call's memory runs out
            adjust.write("1000")
    except OSError:
        pass
    os.chdir("/mnt/data")
    _lower(resource.RLIMIT_AS, memory)
    _lower(resource.RLIMIT_NPROC, processes)
    _lower(resource.RLIMIT_FSIZE, file_bytes)
    _lower(resource.RLIMIT_CORE, 1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the file limit is an OSError, not a kill
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the code's KeyboardInterrupt, as anywhere
    if seccomp:
        _load_filter(seccomp)  # last: nothing of the set-up above is refused by it
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.argv = ["<code>"]
    failed = False
    try:
        compiled = compile(code, "<code>", "exec")
        exec(compiled, namespace)  # the sandbox: running the code is its purpose
    except SystemExit as stop:
        code_value = stop.code
        if code_value not in (None, 0):
            sys.stderr.write(f"SystemExit: {code_value}\n")
            failed = True
    except BaseException as error:  # noqa: BLE001 - every exception is output the model reads
        import linecache
        import traceback

        linecache.cache["<code>"] = (len(code), None, code.splitlines(True), "<code>")  # source lines shown
        tail = error.__traceback__.tb_next if error.__traceback__ is not None else None
        traceback.print_exception(type(error), error, tail)
        failed = True
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - nothing to tell anyone once the pipes are gone
            pass
    return 1 if failed else 0


def _end_everything() -> None:
    try:  # noqa: SIM105 - contextlib is an import each call's start-up would pay
        os.kill(-1, signal.SIGKILL)  # from the namespace's init: every other process in it
    except OSError:
        pass


def _reap_all(child: int, control: int) -> int:
    """Wait for the code's process, then end and reap every other process of the namespace: its status (the exit
    code, or minus the signal that ended it)."""
    status: int | None = None
    while True:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            _say(control, f"end {time.monotonic()}")
            status = os.waitstatus_to_exitcode(raw)
            _end_everything()
        elif status is not None:
            _end_everything()  # whatever was started between the kill and now
    return status if status is not None else -signal.SIGKILL


RELAY_CONNECTIONS = 16
"""Connections relayed at once (a thread each, counted in the call's processes); more wait in the backlog."""


def _listen(port: int) -> object:
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    return listener


def _relay(listener: object, target: str) -> None:
    """Start the relay thread: each connection to ``listener`` is copied both ways to the Unix socket ``target``."""
    import select
    import socket
    import threading

    slots = threading.BoundedSemaphore(RELAY_CONNECTIONS)

    def copy(inside: socket.socket) -> None:
        outside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            outside.connect(target)
            open_ends = {inside: outside, outside: inside}
            while open_ends:
                readable, _, _ = select.select(list(open_ends), [], [])
                for end in readable:
                    data = end.recv(65536)
                    if data:
                        open_ends[end].sendall(data)
                        continue
                    other = open_ends.pop(end)
                    try:  # noqa: SIM105 - contextlib is an import each call's start-up would pay
                        other.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
        except OSError:
            pass
        finally:
            inside.close()
            outside.close()
            slots.release()

    def accept() -> None:
        while True:
            connection, _ = listener.accept()  # type: ignore[attr-defined]
            slots.acquire()
            threading.Thread(target=copy, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def main() -> int:
    memory, processes, file_bytes, control = (int(value) for value in sys.argv[1:5])
    relay = (int(sys.argv[5]), sys.argv[6]) if len(sys.argv) > 6 else None
    os.chdir("/")
    _say(control, "ready")
    import ctypes  # noqa: F401 - loaded while the bridge lays the files out, not on the code's path
    try:
        seccomp, code = _read_job()
    except (EOFError, ValueError):
        return 0  # the bridge gave up before the job (nothing was laid out, or the call was cancelled)
    sys.stdout.flush()
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # before the fork: the code never sees an init it could read
    listener = _listen(relay[0]) if relay is not None else None  # the port is the init's before the code runs
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Python's own handler would let the code end the init
    _say(control, f"start {time.monotonic()}")
    child = os.fork()
    if child == 0:
        try:
            status = _child(code, seccomp, memory, processes, file_bytes)
        except BaseException as error:  # noqa: BLE001 - the set-up failed: say so where the model reads
            sys.stderr.write(f"[sandbox] the code could not start: {error}\n")
            status = 126
        os._exit(status)
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    null = os.open("/dev/null", os.O_WRONLY)
    for fd in (1, 2):  # the output pipes close once the code's processes are gone
        os.dup2(null, fd)
    os.close(null)
    signal.signal(signal.SIGTERM, lambda *_: _end_everything())
    if relay is not None:
        _relay(listener, relay[1])
    _say(control, f"exit {_reap_all(child, control)}")
    while os.read(0, 1 << 16):
        pass  # held open until the bridge has read /mnt/data back
    return 0


if __name__ == "__main__":
    sys.exit(main())
