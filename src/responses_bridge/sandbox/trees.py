"""Walking and removing directory trees the code made, whatever their shape: without recursion (a chain of
thousands of directories is one ``mkdir`` loop away, and Python's own ``os.walk`` and ``shutil.rmtree`` recurse
once per level), without following links, with bounded work, and never raising for a tree's shape.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

STALE_PREFIX = "responses-bridge-run-"
"""The prefix of the host directories earlier versions laid ``/mnt/data`` out in: swept at start."""


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


def remove_tree(root: Path) -> bool:
    """Remove ``root`` and everything under it, however deep: each subdirectory is first moved up beside the
    root's top (a rename, no copy), so no path ever grows past a few names and no descriptor is held per level.
    True when it is gone; never raises."""
    try:
        parent = Path(tempfile.mkdtemp(prefix=".remove-", dir=root.parent))
    except OSError as error:
        log.warning("tree_not_removed", path=str(root), error=str(error))
        return False
    moved = 0
    queue: list[Path] = [root]
    visited: list[Path] = []
    try:
        while queue:
            directory = queue.pop()
            visited.append(directory)
            with contextlib.suppress(OSError):
                os.chmod(directory, 0o700)  # the code may have made a directory read-only
            try:
                with os.scandir(directory) as entries:
                    names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
            except OSError:
                continue
            for name, is_directory in names:
                path = Path(directory, name)
                if not is_directory:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    continue
                moved += 1
                target = parent / str(moved)
                try:
                    os.rename(path, target)
                except OSError:
                    target = path  # emptied where it is, and removed before its parent below
                queue.append(target)
        for directory in reversed(visited):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
    except Exception as error:  # noqa: BLE001 - a tree's shape must never reach the caller as an exception
        log.warning("tree_not_removed", path=str(root), error=str(error))
    with contextlib.suppress(OSError):
        os.rmdir(parent)
    gone = not os.path.lexists(root)
    if not gone:
        log.warning("tree_not_removed", path=str(root))
    return gone


def sweep_stale(parent: Path | None) -> int:
    """Remove the directories a crashed bridge (or an earlier version, which laid ``/mnt/data`` out on disk) left
    in ``parent`` (the system's temporary directory when None): how many were removed."""
    where = parent or Path(tempfile.gettempdir())
    removed = 0
    try:
        stale = [entry for entry in where.iterdir() if entry.name.startswith(STALE_PREFIX) and entry.is_dir()]
    except OSError:
        return 0
    for directory in stale:
        if remove_tree(directory):
            removed += 1
    return removed
