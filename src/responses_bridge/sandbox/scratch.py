"""The bridge's own scratch directory: where its sandbox-side trees live on the host (a call's egress socket, the
skills cache, read-only trees), never directly in a shared temporary directory.

A shared directory such as ``/tmp`` lets any local user plant entries with the bridge's names, or swap one for a
symbolic link while the bridge walks it; a bridge run as root would then follow them. So every tree of the bridge's
lives under one directory of its own, made with ``mkdir`` (never taken over if it exists under another owner, or as
a link, or writable by others), mode 0700 — or 0711 when the bridge runs as root and the sandbox's processes run
under another, unprivileged uid (identity.py), which must traverse it to reach what is bound into a call
(it still cannot list it). Its entries are made by the bridge with names nobody else can guess or pre-empt.
"""

from __future__ import annotations

import errno
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
    """Refuse a directory the bridge does not own alone. Checked on a descriptor opened without following a link,
    and its mode set through that descriptor: what is checked is what is changed, even if the name is swapped
    in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ScratchUnsafe(f"{path} is not a directory (a link or file stands there)") from None
        raise ScratchUnsafe(f"{path} cannot be opened: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise ScratchUnsafe(f"{path} belongs to uid {info.st_uid}, not to this process's uid {os.geteuid()}")
        if info.st_mode & 0o022:
            raise ScratchUnsafe(f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o})")
        if stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)  # umask narrowed mkdir's mode, or an older bridge's made it otherwise
    finally:
        os.close(fd)


def _make(path: Path, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except OSError as error:  # the parent missing or not writable: named, never a fallback to a shared place
        raise ScratchUnsafe(f"{path} cannot be made: {error.strerror}") from None
    _check(path, mode)


def scratch_root(parent: Path | str | None = None) -> Path:
    """``<parent>/responses-bridge-<euid>`` (``parent``: the ``code_workdir`` setting, else the system's temporary
    directory), made if missing and checked either way. Raises :class:`ScratchUnsafe` naming what stands there when
    it is not the bridge's alone (the caller says so in one line; the bridge never falls back to a shared place)."""
    root = _root_path(parent)
    _make(root, _mode())
    return root


def existing_scratch_root(parent: Path | str | None = None) -> Path | None:
    """The scratch directory when one is there (checked as :func:`scratch_root` does), else None: for the start's
    sweep, which has nothing to do where no bridge ever made one."""
    root = _root_path(parent)
    if not os.path.lexists(root):
        return None
    _check(root, _mode())
    return root


def _root_path(parent: Path | str | None) -> Path:
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    return where / f"{PREFIX}{os.geteuid()}"


def private_dir(root: Path, name: str) -> Path:
    """A directory ``name`` inside the scratch root, made (0700 unless ``root``'s mode says the sandbox's uid must
    traverse: then 0711) and checked like the root. For the bridge's fixed subdirectories (the skills cache, the
    egress sockets' parent)."""
    path = root / name
    _make(path, _mode())
    return path
