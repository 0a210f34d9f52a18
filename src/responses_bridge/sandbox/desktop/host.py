"""Where a desktop's process runs, as :class:`~.desktop.Desktop` needs it: a host opens a *link* (one long-lived
call), runs the desktop's own process in it (agent.py, sent as code), and gives the byte stream the desktop is
driven over once that process said it is ready.

Two hosts, one desktop: the bridge's bubblewrap sandbox (:class:`BubblewrapHost`: a call of its own, the process
answering on a Unix socket in the call's ``/mnt/data``, which the bridge reaches on its own file system), and an
agent-sandbox pod (sandbox/agent_sandbox/desktop_host.py: one pod claimed for the desktop's life, the process
answering on its stdin and stdout through the runtime's process API, the pod being on another machine). What the
desktop does — actions, settling, origins, sign-in — is the same on both; only the link differs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol, runtime_checkable

from ..call import SandboxCall
from ..cgroups.per_call import MemoryUse
from ..egress.origins import OriginGate
from ..egress.policy import NetworkPolicy
from ..limits import SandboxLimits
from ..result import SandboxResult
from ..runner import OwnLimits, Sandbox
from .requirements import desktop_unavailable

SOCKET_NAME = "desktop.sock"
HEAD_LIMIT = 1 << 12
"""The longest answer head the bridge reads from a desktop (a JSON line: sizes, marks, a sign-in form's shape)."""
Channel = Literal["socket", "stdio"]


class Sender(Protocol):
    """The bridge's end of what the desktop's process reads its requests from (an ``asyncio.StreamWriter`` is
    one): ``write`` queues and never blocks (a cut is written from a callback), ``drain`` waits until sent."""

    def write(self, data: bytes) -> None: ...

    def drain(self) -> Awaitable[None]: ...

    def close(self) -> None: ...


class DesktopLink(Protocol):
    """One started call a desktop's process runs in. ``channel``: where that process answers (told in its
    config); ``init_pid``: the call's init on this machine (None in a pod: its processes are not on this
    machine's ``/proc``)."""

    channel: Channel
    init_pid: int | None

    def run(self, code: str, on_stdout: Callable[[bytes], None]) -> Awaitable[SandboxResult]:
        """Run the desktop's process; ``on_stdout`` hears its stdout up to its first line (ready, or why not).
        Returns when the process ended."""
        ...

    async def connect(self) -> tuple[asyncio.StreamReader, Sender]:
        """The stream the process is driven over, once it said it is ready."""
        ...

    def memory(self) -> MemoryUse | None:
        """What the call's memory cgroup holds, where the bridge can read it (None: it cannot)."""
        ...


class DesktopHost(Protocol):
    """What runs desktops: says why it cannot (naming what to install or set), opens one call per desktop."""

    @property
    def uid(self) -> int | None:
        """The host uid the desktop's processes run as (None: not on this machine)."""
        ...

    def unavailable(self, browser: str) -> str | None: ...

    def open(self, *, tenant: str, network: NetworkPolicy | None, limits: SandboxLimits, user_namespaces: bool,
             origins: OriginGate | None) -> AbstractAsyncContextManager[DesktopLink]:
        """A call for one desktop: ``limits`` its own (a browser's), ``user_namespaces``: Chromium's sandbox may
        make them where the host allows it, ``origins``: the call's egress proxy asks it for each origin."""
        ...


class BubblewrapHost:
    """Desktops in the bridge's bubblewrap sandbox, one call each (runner.py's ``own`` limits: the call's own
    cgroup bounds the browser's memory and processes), taking none of the code slots: how many run is the desktops'
    own pool's to bound (services/agents/computer/desktops.py), so a code call never waits behind a desktop."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    @property
    def uid(self) -> int | None:
        return self.sandbox.identity.host_uid

    def unavailable(self, browser: str) -> str | None:
        return desktop_unavailable(self.sandbox, browser=browser)

    @contextlib.asynccontextmanager
    async def open(self, *, tenant: str, network: NetworkPolicy | None, limits: SandboxLimits, user_namespaces: bool,
                   origins: OriginGate | None) -> AsyncIterator[DesktopLink]:
        async with self.sandbox.call(tenant=tenant, network=network, slot=False,  # the desktops' pool bounds it
                                     own=OwnLimits(limits, user_namespaces=user_namespaces), origins=origins) as call:
            yield _BubblewrapLink(call)


class _BubblewrapLink:
    channel: Channel = "socket"

    def __init__(self, call: SandboxCall) -> None:
        self._call = call
        self.init_pid = call.init_pid

    def run(self, code: str, on_stdout: Callable[[bytes], None]) -> Awaitable[SandboxResult]:
        return self._call.run(code, on_stdout=on_stdout)

    async def connect(self) -> tuple[asyncio.StreamReader, Sender]:
        return await asyncio.open_unix_connection(str(self._call.data / SOCKET_NAME), limit=HEAD_LIMIT)

    def memory(self) -> MemoryUse | None:
        return self._call.memory()


@runtime_checkable
class HostsDesktops(Protocol):
    """A sandbox backend that runs desktops somewhere of its own."""

    def desktop_host(self) -> DesktopHost: ...


def host_for(sandbox: object) -> DesktopHost | None:
    """The desktop host of a sandbox backend: bubblewrap's, or what a backend that runs desktops gives
    (``desktop_host()``: the agent-sandbox backend's pods); None for one that runs none."""
    if isinstance(sandbox, Sandbox):
        return BubblewrapHost(sandbox)
    if isinstance(sandbox, HostsDesktops):
        return sandbox.desktop_host()
    return None
