"""The sandbox's first process (PID 1 of its PID namespace): it holds the call together while the code runs in a
child, and keeps the sandbox's file systems alive afterwards until the bridge has read back ``/mnt/data``.

Standard library only, and no import of the bridge: it runs inside the sandbox (bind-mounted read-only), under the
interpreter the bridge runs on, with the bridge's packages visible but not the bridge's data.

The exchange with the bridge:

1. it writes ``ready`` on the control descriptor: the sandbox's mounts exist, and the bridge lays the container's
   files out in ``/mnt/data`` (through ``/proc/<pid>/root``);
2. it reads the job from stdin — ``<filter bytes> <code bytes> [shell]\\n``, the seccomp filter, the code — and
   forks the child that runs it: the child lowers its limits (``RLIMIT_AS``, ``RLIMIT_NPROC``,
   ``RLIMIT_FSIZE``), offers itself first to the out-of-memory killer, closes every descriptor but its standard
   ones (the control descriptor is the init's alone: nothing the code runs can speak for it), loads the seccomp
   filter and runs the code as ``__main__`` in ``/mnt/data``; the init writes ``start`` and ``end`` marks (the
   monotonic clock) around it.
   A ``shell`` job (the hosted shell tool) is JSON instead of code — the commands, the time each may take, the
   call's budget and the bytes of output to keep — and the same child, under the same limits and filter, runs
   each command in turn with ``/bin/sh -c`` in a process group of its own (:func:`_run_shell`), writing what it
   prints as it comes and then its outcome, in records on its stdout (``<index> <chunk|exit|timeout|skipped>
   <code> <out bytes> <err bytes> <out dropped> <err dropped>\\n`` then the bytes; a command's output is its
   ``chunk`` records' bytes and then its final record's): a command past its time has its whole group killed,
   and the next one runs. There the commands, not the child, are offered first to the out-of-memory killer (the
   records still get written), with no ``RLIMIT_AS`` (shell runs in the cgroup mode only, whose cgroup bounds what
   they use: Node reserves far more than it touches), and the child is not dumpable while they run;
3. when the child ends, it kills every process left in the namespace (``kill(-1)``) and reaps them all, then writes
   ``exit <status>`` (``exit <status> signalled`` when a SIGTERM ended the code: the bridge's time limit, or the
   code signalling its init, which the bridge then reports as such, not as memory): nothing of the code runs any
   more while the bridge reads ``/mnt/data`` back;
4. it exits when stdin closes (the bridge is done, or gone).

SIGTERM (the bridge's time limit) ends the code the same way. The init itself cannot be signalled, traced or read
by the code: a namespace's init gets no signal from inside it that it has no handler for (and it ignores SIGINT,
which Python would otherwise handle), it is not dumpable (so ``/proc/1/mem``, ``environ`` and ``fd`` are closed to
the code), and the code's seccomp filter refuses ``ptrace``.

Under an ``allowlist`` network policy the init also relays: before the fork it listens on ``127.0.0.1:<port>`` of
the sandbox's own network namespace (so the port is the init's before any code runs, and the child closes the
listening descriptor with all the others), and after it a thread of the init's takes each connection to the egress
proxy's Unix socket bound into the sandbox, copying both ways (sandbox/egress/proxy.py decides what goes through). The
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


def _read_job() -> tuple[bytes, str, str]:
    """(the seccomp filter, the code or the shell job's JSON, the job's kind: ``python`` or ``shell``)."""
    header = bytearray()
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            raise EOFError
        header += byte
    words = header.split()
    filter_length, code_length = int(words[0]), int(words[1])
    kind = words[2].decode("ascii", "replace") if len(words) > 2 else "python"
    seccomp = _read_exactly(filter_length)
    return seccomp, _read_exactly(code_length).decode("utf-8", "replace"), kind


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


def _offer_to_oom_killer() -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as adjust:  # killed first when the call's memory runs out
            adjust.write("1000")
    except OSError:
        pass


def _child(code: str, seccomp: bytes, memory: int, processes: int, file_bytes: int, kind: str = "python") -> int:
    """The code's process: its limits, its filter, then the code (or, for a ``shell`` job, the commands)."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.closerange(3, 1 << 16)
    _prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the code's own /proc entries are its own again
    os.chdir("/mnt/data")
    if kind != "shell":  # a shell job's commands are offered instead (its records still written); no RLIMIT_AS
        _offer_to_oom_killer()  # bounds them but the call's cgroup (step 2 above)
        _lower(resource.RLIMIT_AS, memory)
    _lower(resource.RLIMIT_NPROC, processes)
    _lower(resource.RLIMIT_FSIZE, file_bytes)
    _lower(resource.RLIMIT_CORE, 1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the file limit is an OSError, not a kill
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the code's KeyboardInterrupt, as anywhere
    if seccomp:
        _load_filter(seccomp)  # last: nothing of the set-up above is refused by it
    if kind == "shell":
        return _run_shell(code)
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


SHELL = "/bin/sh"
DRAIN_SECONDS = 0.2
"""After a command's own process ended (its group killed), how long output still held open by a process that left
the group is read before the command's record is written."""


def _run_shell(source: str) -> int:
    """Run a shell job's commands in order, each with ``/bin/sh -c`` in ``/mnt/data``; a record per command on
    stdout. The job (JSON): ``commands``; ``timeout``: seconds per command; ``budget``: seconds for them all (the
    bridge's own limit ends the call a little after it); ``keep``: bytes kept of each command's stdout and of its
    stderr; ``room``: bytes of records in all (the bridge keeps no more of the call's stdout); ``env``: variables
    every command gets (exported before the first is forked)."""
    import json

    job = json.loads(source)
    os.environ.update({str(name): str(value) for name, value in (job.get("env") or {}).items()})
    deadline = time.monotonic() + float(job["budget"])
    room = int(job["room"])
    # the commands' own /proc entries are theirs (exec makes each dumpable again); this process's descriptors,
    # where the records go, are not for them to write into
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    for index, command in enumerate(job["commands"]):
        left = deadline - time.monotonic()
        keep = max(0, min(int(job["keep"]), (room - 96 - min(room // 16, CHUNK_ROOM)) // 2))
        if left <= 0:
            record = _record(index, "skipped", 0, b"", b"", 0, 0)
        else:
            budget = [room]
            record = _run_command(index, str(command), min(float(job["timeout"]), left), keep, budget)
            room = budget[0]
        if len(record) > room:
            break  # the records are bounded by construction; a last one that would not fit is not sent cut
        _write_all(1, record)
        room -= len(record)
    return 0


def _record(index: int, kind: str, code: int, out: bytes, err: bytes, out_dropped: int, err_dropped: int) -> bytes:
    header = f"{index} {kind} {code} {len(out)} {len(err)} {out_dropped} {err_dropped}\n".encode()
    return header + out + err


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


CHUNK_SECONDS = 0.05
"""How often what a command printed is sent on while it runs (a ``chunk`` record), at most."""
CHUNK_ROOM = 64 << 10
"""Of the records' room, what is left for the chunk records' headers (at most a sixteenth of it): past it, what a
command prints waits for its final record."""


def _run_command(index: int, command: str, seconds: float, keep: int, budget: list[int]) -> bytes:
    """One command in a process group of its own, its stdout and stderr read as they come (``keep`` bytes of each
    kept, the rest counted); past ``seconds`` its whole group is killed. What it prints is sent on as it comes, in
    ``chunk`` records (at most every :data:`CHUNK_SECONDS`), while ``budget[0]`` (the bytes of records left) keeps
    room for the final record; the rest goes in that final record, which it returns."""
    import select

    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        pid = os.fork()
    except OSError as error:  # the process limit (or, never here, the single-process filter): this command's output
        for fd in (out_read, out_write, err_read, err_write):
            os.close(fd)
        return _record(index, "exit", 126, b"", f"sh: the command could not start: {error.strerror}\n".encode(), 0, 0)
    if pid == 0:
        try:
            os.setpgid(0, 0)
            _offer_to_oom_killer()
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            os.closerange(3, 1 << 16)
            os.execv(SHELL, ["sh", "-c", command])
        finally:
            os._exit(127)
    try:  # noqa: SIM105 - also here: the group exists before it can be killed, whichever runs first
        os.setpgid(pid, pid)
    except OSError:
        pass
    os.close(out_write)
    os.close(err_write)
    kept = {out_read: bytearray(), err_read: bytearray()}
    dropped = {out_read: 0, err_read: 0}
    sent = {out_read: 0, err_read: 0}  # of the kept bytes, those already sent in chunk records
    last_sent = time.monotonic()
    try:
        ended: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        ended = None  # an older kernel: the process is looked at between reads instead
    status: int | None = None
    end = time.monotonic() + seconds
    drain_until: float | None = None
    open_fds = [out_read, err_read]
    while open_fds or status is None:
        now = time.monotonic()
        if status is None and now >= end:
            break
        if drain_until is not None and now >= drain_until:
            break
        limit = (drain_until if drain_until is not None else end) - now
        if len(kept[out_read]) > sent[out_read] or len(kept[err_read]) > sent[err_read]:
            limit = min(limit, max(last_sent + CHUNK_SECONDS - now, 0.0))  # what was printed goes on soon
        watched = open_fds + ([ended] if ended is not None and status is None else [])
        ready, _, _ = select.select(watched, [], [], limit if ended is not None or status is not None
                                    else min(limit, 0.02))
        for fd in ready:
            if fd == ended:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.remove(fd)
                continue
            room = keep - len(kept[fd])
            if room > 0:
                kept[fd] += chunk[:room]
            dropped[fd] += max(0, len(chunk) - max(room, 0))
        if time.monotonic() - last_sent >= CHUNK_SECONDS:
            last_sent = time.monotonic()
            _send_chunk(index, kept, sent, (out_read, err_read), keep, budget)
        if status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
                _end_group(pid)  # what it left running in its group ends with it
                drain_until = time.monotonic() + DRAIN_SECONDS
    timed_out = status is None
    if status is None:
        _kill_group(pid)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        _end_group(pid)
    for fd in (out_read, err_read, *([ended] if ended is not None else [])):
        os.close(fd)
    code = status if status >= 0 else 128 - status  # ended by a signal: the shell's own convention
    return _record(index, "timeout" if timed_out else "exit", code, bytes(kept[out_read][sent[out_read]:]),
                   bytes(kept[err_read][sent[err_read]:]), dropped[out_read], dropped[err_read])


def _send_chunk(index: int, kept: dict[int, bytearray], sent: dict[int, int], fds: tuple[int, int], keep: int,
                budget: list[int]) -> None:
    """What the command printed since the last chunk record, as one more, when the records' room still holds the
    final record after it (its header and every byte the command may yet keep); else it waits for the final one."""
    out_fd, err_fd = fds
    out, err = kept[out_fd][sent[out_fd]:], kept[err_fd][sent[err_fd]:]
    if not out and not err:
        return
    record = _record(index, "chunk", 0, bytes(out), bytes(err), 0, 0)
    still_kept = 2 * keep - sent[out_fd] - sent[err_fd] - len(out) - len(err)
    if len(record) + 96 + still_kept > budget[0]:
        return
    _write_all(1, record)
    budget[0] -= len(record)
    sent[out_fd] += len(out)
    sent[err_fd] += len(err)


def _kill_group(pid: int) -> None:
    try:  # noqa: SIM105 - contextlib is an import each call's start-up would pay
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


GROUP_END_SECONDS = 1.0
"""How long a command's killed group is waited for before the next command starts."""


def _end_group(pgid: int) -> None:
    """Kill a command's group and wait (bounded) until none of it is left, killing again what forked meanwhile. A
    killed process holds its place in the call's process limit until the namespace's init has reaped it: without the
    wait, the next command of a call whose command was a fork bomb finds the limit still full and cannot start.
    The group is gone (``ESRCH``) once its last member is reaped; its leader, the command's shell, is reaped first."""
    until = time.monotonic() + GROUP_END_SECONDS
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            return
        if time.monotonic() >= until:
            return
        time.sleep(0.005)


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
        seccomp, code, kind = _read_job()
    except (EOFError, ValueError):
        return 0  # the bridge gave up before the job (nothing was laid out, or the call was cancelled)
    sys.stdout.flush()
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # before the fork: the code never sees an init it could read
    listener = _listen(relay[0]) if relay is not None else None  # the port is the init's before the code runs
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Python's own handler would let the code end the init
    signalled: list[bool] = []
    def terminate(*_: object) -> None:  # set before the fork: the code may signal PID 1, which ignores it otherwise
        signalled.append(True)
        _end_everything()
    signal.signal(signal.SIGTERM, terminate)
    _say(control, f"start {time.monotonic()}")
    child = os.fork()
    if child == 0:  # (its SIGTERM is the default again before the code runs: _child)
        try:
            status = _child(code, seccomp, memory, processes, file_bytes, kind)
        except BaseException as error:  # noqa: BLE001 - the set-up failed: say so where the model reads
            sys.stderr.write(f"[sandbox] the code could not start: {error}\n")
            status = 126
        os._exit(status)
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    null = os.open("/dev/null", os.O_WRONLY)
    for fd in (1, 2):  # the output pipes close once the code's processes are gone
        os.dup2(null, fd)
    os.close(null)
    if signalled:  # the time limit came before the code's process existed
        _end_everything()
    if relay is not None:
        _relay(listener, relay[1])
    status = _reap_all(child, control)
    _say(control, f"exit {status}{' signalled' if signalled else ''}")
    while os.read(0, 1 << 16):
        pass  # held open until the bridge has read /mnt/data back
    return 0


if __name__ == "__main__":
    sys.exit(main())
