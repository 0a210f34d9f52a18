"""The event loop a server process runs on: uvloop where it is installed, the standard library's on request.

Both doors spend much of a request in the loop itself (socket readiness, callbacks, the transports aiohttp and the
HTTP/2 of grpc.aio write through), and uvloop (libuv under a Cython loop) does that work for less CPU than the
standard library's selector loop. It is a dependency on every platform it supports, so ``auto`` (the default)
means uvloop; ``RESPONSES_BRIDGE_EVENT_LOOP=asyncio`` (``--event-loop asyncio``) keeps the standard library's, to
rule the loop out when chasing a problem. Asking for ``uvloop`` where it is not installed is a configuration
mistake, said in one line, never a silent fall back.

The loop is made through ``asyncio.Runner(loop_factory=…)`` rather than an event loop policy (deprecated from
Python 3.12 on), so nothing global changes: every process that serves (``serve``, each ``--workers`` worker, the
server behind the PID-1 init) runs its coroutine through :func:`run`. The development servers (the fake upstream,
the benchmark's floors) read the same variable through :func:`choice_from_environment`, so a benchmark compares
processes on the same loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from ..settings_error import SettingsError

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
EVENT_LOOP_ENV = "RESPONSES_BRIDGE_EVENT_LOOP"
T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def keep_grpc_out_of_forks() -> None:
    """Turn gRPC's fork handlers off for this process and the ones it starts, unless the user set them.

    uvloop starts a subprocess (the code sandbox's bubblewrap) with libuv's ``fork()``, which, unlike the standard
    library's ``vfork()``, runs the ``pthread_atfork`` handlers gRPC's core registers: with the ext_proc door's
    threads inside gRPC they pause or reset its machinery around each spawn, and sandboxes started then failed at
    random (``bubblewrap could not make the sandbox``, a third of the code interpreter's Envoy tests on a busy
    machine). The bridge never uses gRPC in a forked child (every child it starts executes another program, and
    ``--workers`` starts its workers afresh), so it needs none of them. Read by gRPC when it starts: called before
    the server imports it."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def loop_factory(choice: str) -> tuple[str, LoopFactory | None]:
    """(the loop's name, its factory for ``asyncio.Runner``; None for the standard library's) for ``choice``."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SettingsError("event_loop=uvloop, but uvloop is not installed here: pip install uvloop, or "
                                f"choose the standard library's loop ({EVENT_LOOP_ENV}=asyncio)") from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def choice_from_environment() -> str:
    """What ``RESPONSES_BRIDGE_EVENT_LOOP`` asks for (``auto`` when unset), for the development servers, which
    read no settings."""
    return os.environ.get(EVENT_LOOP_ENV, "auto").strip().lower() or "auto"


def new_loop_from_environment() -> asyncio.AbstractEventLoop | None:
    """A new loop of the kind ``RESPONSES_BRIDGE_EVENT_LOOP`` asks for, for aiohttp's ``run_app(loop=…)``; None
    for the standard library's, which ``run_app`` makes itself."""
    factory = loop_factory(choice_from_environment())[1]
    return factory() if factory is not None else None


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    _, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop the caller runs on, as the ``serving`` log line reports it."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
