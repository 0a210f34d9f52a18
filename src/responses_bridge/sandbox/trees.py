"""Walking and removing directory trees the code made, whatever their shape: without recursion (a chain of
thousands of directories is one ``mkdir`` loop away, and Python's own ``os.walk`` and ``shutil.rmtree`` recurse
once per level), without following links, with bounded work, and never raising for a tree's shape.

Removal works on directory descriptors only (``openat`` with ``O_NOFOLLOW``, ``unlinkat``, ``renameat``,
``fchmod``): a directory swapped for a symbolic link between being listed and being entered is met as the link
it has become and removed as one, never followed, so no file outside the tree is ever changed, even by a bridge
run as root over a tree another user can write to.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

STALE_PREFIX = "responses-bridge-run-"
"""The prefix of the host directories earlier versions laid ``/mnt/data`` out in: swept at start."""

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_DIRECTORY = (errno.ELOOP, errno.ENOTDIR)
"""What ``open(O_DIRECTORY | O_NOFOLLOW)`` says of a link or a file: the name is not a directory to enter."""


@dataclass(slots=True)
class Listing:
    """The regular files under a root (relative path → size, mtime in ns), and what was passed over: entries
    past ``max_entries``, directories whose path is longer than ``max_path`` (their files could not be named)."""

    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    entries: int = 0
    unread: int = 0
    too_deep: int = 0


def list_files(root: Path, *, max_path: int, max_entries: int) -> Listing:
    """Every regular file under ``root``, depth first, links and other kinds passed over."""
    listing = Listing()
    pending: list[str] = [""]
    while pending:
        relative = pending.pop()
        try:
            with os.scandir(os.path.join(root, relative) if relative else root) as entries:
                for entry in entries:
                    listing.entries += 1
                    if listing.entries > max_entries:
                        listing.unread += 1
                        continue
                    path = f"{relative}/{entry.name}" if relative else entry.name
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        if len(path) > max_path:
                            listing.too_deep += 1
                        else:
                            pending.append(path)
                    elif stat.S_ISREG(info.st_mode):
                        listing.files[path] = (info.st_size, info.st_mtime_ns)
        except OSError:
            continue
    return listing


def _names(directory: int) -> list[tuple[str, bool]]:
    """The entries of the directory open at ``directory``: (name, is a directory — the entry itself, never what a
    link points to)."""
    with os.scandir(directory) as entries:
        return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]


class _Emptying:
    """Empties one directory, open at ``top``, with three descriptors at most whatever the depth: each
    subdirectory is first renamed into a holding directory made inside ``top`` (numbered names, so no path ever
    grows past two names), then entered by descriptor, emptied the same way and removed. ``complete``: nothing was
    left behind."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.complete = True
        self._numbers = itertools.count()
        self._pending: list[str] = []  # names in the holding directory, each a directory to empty and remove
        with contextlib.suppress(OSError):
            os.fchmod(top, 0o700)  # the code may have made it read-only; by descriptor: never a link's target
        self._hold_name = self._make_hold()
        self._hold = os.open(self._hold_name, _DIRECTORY, dir_fd=top)

    def _make_hold(self) -> str:
        while True:
            name = f".remove-{secrets.token_hex(8)}"
            try:
                os.mkdir(name, 0o700, dir_fd=self.top)
                return name
            except FileExistsError:
                continue

    def run(self) -> bool:
        try:
            self._clear(self.top, skip=self._hold_name)
            while self._pending:
                name = self._pending.pop()
                try:
                    directory = os.open(name, _DIRECTORY, dir_fd=self._hold)
                except OSError as error:
                    if error.errno in _NOT_A_DIRECTORY:  # swapped for a link or a file after it was listed
                        self._unlink(self._hold, name)
                    else:
                        self.complete = False
                    continue
                try:
                    self._clear(directory)
                finally:
                    os.close(directory)
                self._rmdir(self._hold, name)
        finally:
            os.close(self._hold)
            self._rmdir(self.top, self._hold_name)
        return self.complete

    def _clear(self, directory: int, skip: str | None = None) -> None:
        """Unlink what is not a directory; move each subdirectory into the holding directory for later."""
        with contextlib.suppress(OSError):
            os.fchmod(directory, 0o700)
        try:
            names = _names(directory)
        except OSError:
            self.complete = False
            return
        for name, is_directory in names:
            if name == skip:
                continue
            if not is_directory:
                self._unlink(directory, name)
                continue
            target = str(next(self._numbers))
            if self._move(directory, name, target):
                self._pending.append(target)
            else:
                self.complete = False

    def _move(self, directory: int, name: str, target: str) -> bool:
        try:
            os.rename(name, target, src_dir_fd=directory, dst_dir_fd=self._hold)
            return True
        except OSError:
            pass
        try:  # a read-only directory cannot be moved by a bridge that is not root (its ".." changes): open it
            child = os.open(name, _DIRECTORY, dir_fd=directory)  # without following, make it writable, retry
        except OSError as error:
            if error.errno in _NOT_A_DIRECTORY:
                return self._unlink(directory, name)
            return False
        try:
            os.fchmod(child, 0o700)
            os.rename(name, target, src_dir_fd=directory, dst_dir_fd=self._hold)
            return True
        except OSError:
            return False
        finally:
            os.close(child)

    def _unlink(self, directory: int, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=directory)
            return True
        except FileNotFoundError:
            return True
        except IsADirectoryError:  # made a directory since it was listed: moved and emptied like the others
            target = str(next(self._numbers))
            if self._move(directory, name, target):
                self._pending.append(target)
                return True
        except OSError:
            pass
        self.complete = False
        return False

    def _rmdir(self, directory: int, name: str) -> None:
        try:
            os.rmdir(name, dir_fd=directory)
        except FileNotFoundError:
            pass
        except OSError:
            self.complete = False


def _remove_in(parent: int, name: str, *, owner: int | None) -> bool:
    """Remove the entry ``name`` of the directory open at ``parent`` and, when it is a directory, all under it.
    ``owner``: touch it only when it is a real directory of this uid (checked on the opened descriptor, so a
    swap after the check cannot change what is removed); a link, a file or another uid's directory is then left
    as it is (False)."""
    try:
        top = os.open(name, _DIRECTORY, dir_fd=parent)
    except FileNotFoundError:
        return True
    except OSError as error:
        if error.errno not in _NOT_A_DIRECTORY or owner is not None:
            return False
        with contextlib.suppress(FileNotFoundError):  # the caller's own path, not a directory: the entry goes
            os.unlink(name, dir_fd=parent)  # (a link itself, never its target)
        return True
    try:
        uid = os.fstat(top).st_uid
        if owner is not None and uid != owner:
            log.info("tree_of_another_uid_left", name=name, uid=uid)
            return False
        complete = _Emptying(top).run()
    finally:
        os.close(top)
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return complete


def remove_tree(root: Path) -> bool:
    """Remove ``root`` and everything under it, however deep, with no link followed (a link at ``root`` itself
    is removed as a link). True when it is gone; never raises."""
    try:
        parent = os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        log.warning("tree_not_removed", path=str(root), error=str(error))
        return False
    try:
        gone = _remove_in(parent, root.name, owner=None)
    except Exception as error:  # noqa: BLE001 - a tree's shape must never reach the caller as an exception
        log.warning("tree_not_removed", path=str(root), error=str(error))
        gone = False
    finally:
        os.close(parent)
    if not gone:
        log.warning("tree_not_removed", path=str(root))
    return gone


def sweep(where: Path, prefix: str, *, keep: Callable[[str], bool] = lambda name: False) -> int:
    """Remove the directories named ``prefix…`` directly in ``where`` that belong to this process's uid (and that
    ``keep`` does not claim): how many were removed. Another uid's entry, a link and a file are left alone: in a
    shared directory anyone can plant an entry with the bridge's names, and a bridge run as root must not remove,
    walk or chmod what it did not make."""
    try:
        parent = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0
    removed = 0
    try:
        try:
            names = [name for name, is_directory in _names(parent) if is_directory and name.startswith(prefix)]
        except OSError:
            return 0
        for name in names:
            if keep(name):
                continue
            try:
                if _remove_in(parent, name, owner=os.geteuid()):
                    removed += 1
            except Exception as error:  # noqa: BLE001 - one entry's shape never stops the sweep or the start
                log.warning("tree_not_removed", path=str(where / name), error=str(error))
    finally:
        os.close(parent)
    return removed


def sweep_stale(parent: Path | None) -> int:
    """Remove the directories an earlier version (which laid ``/mnt/data`` out on disk) left in ``parent`` (the
    system's temporary directory when None): how many were removed. Only this uid's own, never through a link."""
    return sweep(parent or Path(tempfile.gettempdir()), STALE_PREFIX)


def process_cache_dir(workdir: Path | str | None, prefix: str) -> Path:
    """This process's own private directory ``<prefix><pid>`` under the scratch root, emptied (a process of this
    pid before us: a restart in a namespace), after sweeping the directories of processes that are gone — the one
    place a per-process cache (unpacked skills, package trees) starts from."""
    from .cgroups.per_call import process_alive
    from .scratch import private_dir, scratch_root

    def alive(name: str) -> bool:
        owner = name[len(prefix):]
        return not owner.isdigit() or int(owner) == os.getpid() or process_alive(int(owner))

    scratch = scratch_root(workdir)
    sweep(scratch, prefix, keep=alive)
    root = private_dir(scratch, f"{prefix}{os.getpid()}")
    for leftover in root.iterdir():
        remove_tree(leftover)
    return root
