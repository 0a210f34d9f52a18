"""Whose host uid the sandbox's processes have: never the host's root.

bubblewrap maps the sandbox's uid (1000 inside) to the uid that started it. A bridge run as root (a pip install
and ``serve`` as root, a root container) would so hand the code host uid 0 for every check the kernel makes
against the global uid — ``/proc/sys`` among them (``kernel.core_pattern``: a program run as root on the next
crash). So a root bridge starts bubblewrap under a dedicated unprivileged uid (the ``code_sandbox_uid`` setting,
65534 by default: ``nobody``), after joining the call's cgroup and before bubblewrap runs: the code's host uid is
that one, and whatever it can reach on the host, it reaches as that uid. A bridge run as any other uid keeps its
own, which is already unprivileged.

Everything the sandbox binds from the host must then be reachable by that uid: the Python runtime, the virtual
environment, the launcher, the read-only trees and the egress socket. :func:`unreachable` names the first
directory on a path it cannot traverse, so the refusal says what to fix (never a fallback to uid 0).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

NOBODY = 65534
"""The default host uid (and gid) of a root bridge's sandbox: Linux's overflow id, owning nothing on the host."""


@dataclass(frozen=True, slots=True)
class SandboxIdentity:
    """``uid``/``gid``: the host ids bubblewrap is started under (None: the bridge's own, which is not root)."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_process(cls, uid: int = NOBODY, gid: int | None = None) -> SandboxIdentity:
        """The identity for this process: ``uid`` (and ``gid``, the same number when None) when it runs as root,
        else none of its own. Raises ValueError for uid or gid 0: the sandbox never runs as the host's root."""
        if uid <= 0 or (gid is not None and gid <= 0):
            raise ValueError("the sandbox's uid and gid must be unprivileged (not 0)")
        if os.geteuid() != 0:
            return cls()
        return cls(uid, gid if gid is not None else uid)

    def wrap(self, command: Sequence[str]) -> list[str]:
        """``command`` run under the sandbox's uid and gid, no supplementary groups: util-linux's ``setpriv`` (on
        every Debian-based system, util-linux being essential), exec'd last so that what comes before it (the
        cgroup join) still runs as root. Capabilities go with the uid change. Raises FileNotFoundError without
        setpriv: the sandbox is then refused, never started as root."""
        if self.uid is None:
            return list(command)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise FileNotFoundError("setpriv (util-linux) is not on PATH: a root bridge needs it to start the "
                                    "sandbox under an unprivileged uid (Debian/Ubuntu: apt-get install util-linux)")
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.host_gid}", "--clear-groups", "--", *command]

    def describe(self) -> str:
        """The mapping in words (doctor, serve's start-up line)."""
        if self.uid is None:
            return f"sandbox uid 1000 maps to host uid {os.geteuid()} (this process's own, not root)"
        return (f"sandbox uid 1000 maps to host uid {self.uid} (gid {self.host_gid}): bubblewrap is started under "
                "it, not as root (RESPONSES_BRIDGE_CODE_SANDBOX_UID)")

    @property
    def host_uid(self) -> int:
        """The uid the code has on the host."""
        return self.uid if self.uid is not None else os.geteuid()

    @property
    def host_gid(self) -> int:
        return self.gid if self.gid is not None else os.getegid()

    def give(self, path: str | Path, *, fd: int | None = None) -> None:
        """Make a file or directory the bridge made for the sandbox the sandbox's own (``fd``: by descriptor, no
        path resolved): a no-op when bubblewrap runs under the bridge's own uid."""
        if self.uid is None:
            return
        if fd is not None:
            os.fchown(fd, self.host_uid, self.host_gid)
        else:
            os.chown(path, self.host_uid, self.host_gid, follow_symlinks=False)

    def thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """``function(*arguments)`` in a worker thread with the bridge's own ids (reading files back)."""
        return asyncio.to_thread(function, *arguments)

    async def in_thread(self, function: Callable[..., T], *arguments: Any) -> T:
        """``function(*arguments)`` in a worker thread whose file-system ids are the sandbox's: how a root bridge
        writes into a call's ``/mnt/data``. That file system belongs to the sandbox's user namespace, where host
        uid 0 is not mapped, so the kernel refuses root's new files there (EOVERFLOW); made as the sandbox's uid,
        they are the code's own, as if it had written them. Linux keeps the file-system ids per thread, and the
        thread's are restored before it goes back to the pool."""
        if self.uid is None:
            return await asyncio.to_thread(function, *arguments)
        return await asyncio.to_thread(self._as_owner, function, *arguments)

    def _as_owner(self, function: Callable[..., T], *arguments: Any) -> T:
        libc = _libc()
        libc.setfsgid(self.host_gid)
        libc.setfsuid(self.host_uid)
        try:
            if libc.setfsuid(self.host_uid) != self.host_uid:  # the call returns the ids in force before it
                raise PermissionError("the file-system uid could not be changed")
            return function(*arguments)
        finally:
            libc.setfsuid(os.geteuid())
            libc.setfsgid(os.getegid())

    def unreachable(self, path: str | Path) -> Path | None:
        """The first directory on ``path`` (itself included when it is one) that the sandbox's uid cannot
        traverse, by the modes and owners as they are now (None: all of it can be reached). Root-run bridges only:
        a bridge's own uid reaches what it runs from."""
        if self.uid is None:
            return None
        current = Path("/")
        for part in Path(os.path.abspath(path)).parts[1:]:
            current = current / part
            try:
                info = os.stat(current)
            except OSError:
                return current
            if not stat.S_ISDIR(info.st_mode):
                break
            if not _may_search(info, self.host_uid, self.host_gid):
                return current
        return None


def _may_search(info: os.stat_result, uid: int, gid: int) -> bool:
    mode = info.st_mode
    if info.st_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
