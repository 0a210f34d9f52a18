"""A call's files between the bridge and its pod, through the sandbox runtime's file API (``/v1/files/{path}``).

The container path lays a container's files out in a directory of the bridge's (services/containers/workspace.py)
and reads back what the run changed from it, by size and modification time: the pod session keeps that contract
with a staging directory. Before the run every regular file of it is written to the pod (``PUT``, parents made by
the runtime), and the pod's ``/mnt/data`` listed; after the run it is listed again, and only what changed moves back
— a new or changed file is downloaded (bounded by the file limit, whole or not at all), a file gone from the pod is
removed here. Symbolic links are never followed on either side (the runtime lists only files and directories).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DATA_DIR = "/mnt/data"
"""The call's files, as the code sees them in the pod."""
Listing = dict[str, tuple[int, str]]
"""Relative path → (size, modification time as the runtime reports it), regular files only."""
PARALLEL = 8
"""File API requests in flight at once for one call."""
MAX_ENTRIES = 100_000
"""Entries one listing walks (a run making millions of files is not walked to its end: the rest are not collected)."""


def pod_path(absolute: str, runtime_root: str) -> str:
    """``absolute`` (a path the code sees) as the runtime's file API names it: relative to its root directory
    (sandboxd's ``--root-dir``; the sandbox image sets ``/mnt``). Raises ValueError for a path outside it."""
    root = runtime_root.rstrip("/") + "/"
    if runtime_root == "/":
        return absolute.lstrip("/")
    if not absolute.startswith(root):
        raise ValueError(f"{absolute} is outside the sandbox runtime's root {runtime_root}")
    return absolute[len(root):]


def staged_files(root: Path) -> list[str]:
    """Relative paths of the regular files under ``root`` (links not followed), without recursion."""
    found: list[str] = []
    pending = [root]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    found.append(str(Path(entry.path).relative_to(root)))
    return sorted(found)


def executable_files(root: Path) -> list[str]:
    """Of :func:`staged_files`, those executable on the host (an installed package's scripts, a skill's)."""
    return [path for path in staged_files(root) if os.stat(root / path, follow_symlinks=False).st_mode & 0o111]


def inner_links(root: Path) -> list[tuple[str, str]]:
    """The symbolic links under ``root`` that point inside it, relatively: (relative path, target)."""
    found: list[tuple[str, str]] = []
    resolved = root.resolve()
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory) / name
            if path.is_symlink():
                target = os.readlink(path)
                if not os.path.isabs(target) and (path.parent / target).resolve().is_relative_to(resolved):
                    found.append((str(path.relative_to(root)), target))
    return sorted(found)


async def _bounded(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(PARALLEL)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def upload_tree(files: Any, root: Path, target: str) -> int:
    """Write every regular file under ``root`` to ``target/<relative path>`` in the pod, each streamed from its
    file (never whole in memory); the number of files."""
    relative = await asyncio.to_thread(staged_files, root)

    def job(path: str) -> Callable[[], Awaitable[None]]:
        async def put() -> None:
            fd = await asyncio.to_thread(os.open, root / path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                await files.write(f"{target}/{path}", handle, allow_unsafe_paths=True)
        return put

    await _bounded([job(path) for path in relative])
    return len(relative)


class _FileWriter:
    """An open file as the client's asynchronous destination (``read_to``)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def write(self, content: bytes) -> int:
        return int(await asyncio.to_thread(self.handle.write, content))


async def list_tree(files: Any, target: str) -> Listing:
    """The regular files under ``target`` in the pod, by relative path (directories walked, at most MAX_ENTRIES)."""
    found: Listing = {}
    pending = [""]
    seen = 0
    while pending and seen < MAX_ENTRIES:
        relative = pending.pop()
        for entry in await files.list(f"{target}/{relative}" if relative else target):
            seen += 1
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.type == "directory":
                pending.append(path)
            else:
                found[path] = (entry.size, entry.modified.isoformat())
    return found


async def collect(files: Any, target: str, root: Path, before: Listing, *, file_bytes: int,
                  total_bytes: int) -> list[str]:
    """Bring ``root`` to what ``target`` holds after the run: changed and new files downloaded (each at most
    ``file_bytes``, all at most ``total_bytes``), files gone removed. Notes on files not brought back."""
    after = await list_tree(files, target)
    notes: list[str] = []
    for path in before.keys() - after.keys():
        await asyncio.to_thread(_remove, root / path)
    changed = sorted(path for path, seen in after.items() if before.get(path) != seen)
    budget = total_bytes
    wanted: list[str] = []
    for path in changed:
        size = after[path][0]
        if size > file_bytes or size > budget:
            notes.append(f"/mnt/data/{path} was not kept: {size} bytes is past the container's limit")
            await asyncio.to_thread(_remove, root / path)
            continue
        budget -= size
        wanted.append(path)

    def job(path: str) -> Callable[[], Awaitable[None]]:
        async def get() -> None:
            temporary = await asyncio.to_thread(_make_room, root, root / path)
            try:
                handle = await asyncio.to_thread(open, temporary, "wb")
                try:
                    await files.read_to(f"{target}/{path}", _FileWriter(handle), allow_unsafe_paths=True,
                                        max_bytes=file_bytes)
                finally:
                    handle.close()
                await asyncio.to_thread(os.replace, temporary, root / path)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        return get

    await _bounded([job(path) for path in wanted])
    return notes


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _make_room(root: Path, path: Path) -> Path:
    """Make ``path`` writable where a run may have turned a file into a directory or back (a parent that is a file
    now, or a directory where a file goes); a temporary name beside it to download into."""
    for parent in reversed(path.relative_to(root).parents):
        parent = root / parent
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            parent.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    return path.with_name(f".{path.name}.part")
