"""The first Python the sandbox runs: it reads the model's code from stdin, lowers its own limits, and runs the code
as ``__main__`` in ``/mnt/data``.

Standard library only, and no import of the bridge: it runs inside the sandbox (bind-mounted read-only), under the
interpreter the bridge runs on, with the bridge's packages visible but not the bridge's data. The limits are set
here rather than by the bridge's process because they must apply to the code and everything it starts, and an
``rlimit`` set in the parent before ``exec`` would also bind bubblewrap's own set-up.

Arguments: memory bytes, process count, bytes per file (0: not set), and the descriptor to write the timing
marks on (-1: none).
"""

import os
import resource
import signal
import sys
import time

# Nothing else at start: every import here is paid by each call's start-up (traceback and linecache, the slowest,
# only when the code raised).


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


def _mark(fd: int) -> None:
    """The monotonic clock (one clock for every namespace) on ``fd``, when the bridge opened one: how long the
    sandbox took to start, and the code to run."""
    if fd >= 0:
        try:  # noqa: SIM105 - contextlib is an import each call's start-up would pay
            os.write(fd, f"{time.monotonic()}\n".encode())
        except OSError:
            pass


def main() -> int:
    memory, processes, file_bytes, times = (int(value) for value in sys.argv[1:5])
    code = sys.stdin.read()
    sys.stdin.close()
    _lower(resource.RLIMIT_AS, memory)
    _lower(resource.RLIMIT_NPROC, processes)
    _lower(resource.RLIMIT_FSIZE, file_bytes)
    _lower(resource.RLIMIT_CORE, 1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the file limit is an OSError, not a kill
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.argv = ["<code>"]
    failed = False
    _mark(times)
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
        _mark(times)
        if times >= 0:
            try:  # noqa: SIM105 - as in _mark
                os.close(times)
            except OSError:
                pass
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
