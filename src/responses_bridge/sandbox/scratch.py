"""The bridge's own scratch directory: where its sandbox-side trees live on the host (a call's egress socket, the
skills cache, read-only trees), never directly in a shared temporary directory.

A shared directory such as ``/tmp`` lets any local user plant entries with the bridge's names, or swap one for a
symbolic link while the bridge walks it; a bridge run as root would then follow them. So every tree of the bridge's
lives under one directory of its own, made with ``mkdir`` (never taken over if it exists under another owner, or as
a link, or writable by others), mode 0700 — or 0711 when the bridge runs as root and the sandbox's processes run
under another, unprivileged uid (sandbox/identity.py), which must traverse it to reach what is bound into a call
(it still cannot list it). Its entries are made by the bridge with names nobody else can guess or pre-empt.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

PREFIX = "responses-bridge-"


class ScratchUnsafe(RuntimeError):
    """The scratch directory's place holds something the bridge must not use (another owner's, a link, writable by
    others)."""


def _mode() -> int:
    return 0o711 if os.geteuid() == 0 else 0o700


def _check(path: Path, mode: int) -> None:
    """Refuse a directory the bridge does not own alone: lstat (no link followed), owner, no group/other write."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ScratchUnsafe(f"{path} is not a directory (a link or file stands there)")
    if info.st_uid != os.geteuid():
        raise ScratchUnsafe(f"{path} belongs to uid {info.st_uid}, not to this process's uid {os.geteuid()}")
    if info.st_mode & 0o022:
        raise ScratchUnsafe(f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o})")
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)  # lstat above: a directory of ours (umask narrowed mkdir's mode, or an older bridge's)


def scratch_root(parent: Path | str | None = None) -> Path:
    """``<parent>/responses-bridge-<euid>`` (``parent``: the ``code_workdir`` setting, else the system's temporary
    directory), made if missing and checked either way. Raises :class:`ScratchUnsafe` naming what stands there when
    it is not the bridge's alone (the caller says so in one line; the bridge never falls back to a shared place)."""
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    root = where / f"{PREFIX}{os.geteuid()}"
    mode = _mode()
    try:
        os.mkdir(root, mode)
    except FileExistsError:
        pass
    _check(root, mode)
    return root


def private_dir(root: Path, name: str) -> Path:
    """A directory ``name`` inside the scratch root, made (0700 unless ``root``'s mode says the sandbox's uid must
    traverse: then 0711) and checked like the root. For the bridge's fixed subdirectories (the skills cache, the
    egress sockets' parent)."""
    path = root / name
    mode = _mode()
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    _check(path, mode)
    return path
