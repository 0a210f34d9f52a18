"""One process in a sandbox pod through the runtime's gRPC ``ProcessService``: started with ``Start`` (its output
streamed back as it is written, taken into bounded captures), its input written with ``WriteStdin``, and past its
time ended with ``SendSignal(SIGKILL)``. What :class:`PodSession` runs the model's code and each shell command with.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import empty_pb2
from k8s_agent_sandbox.commands._process_stubs import process_pb2

from ..result import Capture

STDIN_CHUNK = 1 << 16
KILL_GRACE_SECONDS = 2.0
"""How long the pod has to report a killed process's end before the bridge stops waiting for it."""


@dataclass(slots=True)
class Ran:
    """A process's end: ``exit_code`` (None: never reported), whether its time ran out, what it wrote (bounded),
    and the monotonic marks of its start, its first output and its end."""

    out: Capture
    err: Capture
    exit_code: int | None = None
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)
    first_output: float | None = None
    finished: float = 0.0


async def run_process(stub: Any, argv: list[str], *, cwd: str, env: Mapping[str, str], seconds: float,
                      keep: int, stdin: bytes | None = None) -> Ran:
    """Run ``argv`` in the pod for at most ``seconds``; keep ``keep`` bytes of its stdout and of its stderr."""
    ran = Ran(Capture(keep), Capture(keep))
    stream = stub.Start(process_pb2.StartRequest(config=process_pb2.ProcessConfig(command=argv, env_vars=dict(env),
                                                                                  cwd=cwd)))
    feeder: asyncio.Task[None] | None = None
    process_id: int | None = None
    try:
        async with asyncio.timeout(max(seconds, 0.01)):
            async for event in stream:
                which = event.WhichOneof("event")
                if which == "init":
                    process_id = event.init.process_id
                    if stdin is not None:
                        feeder = asyncio.ensure_future(_feed(stub, process_id, stdin))
                elif which in ("stdout", "stderr"):
                    if ran.first_output is None:
                        ran.first_output = time.monotonic()
                    (ran.out if which == "stdout" else ran.err).data_received(getattr(event, which))
                elif which == "exit":
                    ran.exit_code = event.exit.exit_code
    except TimeoutError:
        ran.timed_out = True
        if process_id is not None:
            with contextlib.suppress(Exception):
                await stub.SendSignal(process_pb2.SendSignalRequest(process_id=process_id,
                                                                    signal=process_pb2.SIGNAL_SIGKILL),
                                      timeout=KILL_GRACE_SECONDS)
    finally:
        stream.cancel()
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder
    ran.finished = time.monotonic()
    return ran


async def _feed(stub: Any, process_id: int, data: bytes) -> None:
    """Write ``data`` to the process's stdin in chunks, then its end."""
    for start in range(0, len(data), STDIN_CHUNK):
        await stub.WriteStdin(process_pb2.WriteStdinRequest(process_id=process_id,
                                                            input=data[start:start + STDIN_CHUNK]))
    await stub.WriteStdin(process_pb2.WriteStdinRequest(process_id=process_id, eof=empty_pb2.Empty()))
