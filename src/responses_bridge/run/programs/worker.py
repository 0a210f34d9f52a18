"""A worker process that runs programs (isolate.py) one after another, under an OS bound on all the memory they
can touch.

V8 bounds its own heap (``Limits.max_memory``), but the bytes of ``ArrayBuffer``s and typed arrays live outside it:
in the bridge's process, four programs each keeping 20 filled 64 MiB buffers grew it by 4.8 GiB. So programs run
here, in a process of their own, whose writable private memory the kernel bounds (``RLIMIT_DATA``): once V8 is
started (it reserves its fixed ranges, some 550 MiB of address space it mostly never touches), the limit is set to
what the process holds then plus the program's bound. An allocation past it fails inside V8 (a ``RangeError`` the
program may catch, the memory never given) or ends this process; the pool (pool.py) reports that program
``incomplete``, naming the bound, and starts another worker. ``RLIMIT_AS`` cannot be used: V8 reserves a terabyte
of address space (``PROT_NONE``) for its sandbox and refuses to start under any useful limit.

The protocol, over stdin/stdout, is a frame each way per program: 4 bytes of big-endian length, then JSON. Once
ready the worker writes ``{"ready": true, "data_limit": <bytes>}``; then each job (``code``, ``names``,
``results``, ``seed``, ``clock_ms``, ``limits``) gets one answer (a :class:`ProgramRun`'s fields). Standard input
closing (the bridge gone) ends the worker.
"""

from __future__ import annotations

import os
import re
import resource
import struct
import sys
from typing import Any, BinaryIO

import orjson

from .isolate import Limits, run_program

HEADER = struct.Struct(">I")
MAX_FRAME = 256 << 20
"""The largest frame either side accepts (a job carries the program's recorded tool outputs)."""


def write_frame(stream: BinaryIO, value: Any) -> None:
    data = orjson.dumps(value)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: BinaryIO) -> Any | None:
    """The next frame's value, or None at the end of the stream."""
    head = _read_exactly(stream, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes")
    body = _read_exactly(stream, size)
    if body is None:
        return None
    return orjson.loads(body)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def data_in_use() -> int:
    """The process's writable private memory (``VmData``: what ``RLIMIT_DATA`` counts), in bytes."""
    with open("/proc/self/status") as status:
        found = re.search(r"^VmData:\s+(\d+)\s+kB", status.read(), re.MULTILINE)
    if found is None:
        raise OSError("no VmData in /proc/self/status")
    return int(found.group(1)) << 10


def bound_memory(bound: int) -> int:
    """Start V8 (one program), then limit the process to what it holds now plus ``bound``; the limit set."""
    run_program("return 1", [], [])
    limit = data_in_use() + bound
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return limit


def serve(bound: int, stdin: BinaryIO, stdout: BinaryIO) -> None:
    limit = bound_memory(bound)
    write_frame(stdout, {"ready": True, "data_limit": limit})
    while True:
        job = read_frame(stdin)
        if job is None:
            return
        limits = Limits(**job["limits"])
        run = run_program(job["code"], job["names"], job["results"], seed=job["seed"], clock_ms=job["clock_ms"],
                          limits=limits)
        if run.status == "incomplete" and run.limit is None and "allocation failed" in run.result:
            run.limit = "memory"  # V8 refused an ArrayBuffer past the process's bound: name the bound
            run.result += f"\nProgram stopped: it used more than its memory bound ({bound >> 20} MiB)."
        write_frame(stdout, {"status": run.status, "result": run.result, "recorded": run.recorded, "limit": run.limit,
                             "calls": [[call.name, call.arguments] for call in run.calls]})


def main() -> None:
    bound = int(sys.argv[1])
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything else written to stdout (V8's fatal messages) must not corrupt the frames
    serve(bound, sys.stdin.buffer, stdout)


if __name__ == "__main__":
    main()
