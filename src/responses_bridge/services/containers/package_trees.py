"""The tree an environment's package install leaves, kept as one zip and laid out again
(services/agents/environments/packages.py): bounded in bytes and files, each entry checked on what it declares before a
byte is written, files 0644 or 0755, directories 0755, and a symbolic link only where it points inside the tree.

A backend's file transfer may bring the install's files back without their modes or links (a pod's file API
carries neither, and cannot read a link): the install then records both itself (:func:`read_modes`), and the
zip gets them from that record.
"""

from __future__ import annotations

import os
import stat
import time
import zipfile
from pathlib import Path, PurePosixPath

from ...sandbox.trees import remove_tree
from .tree_cache import TreeEntry

MAX_FILES = 50_000
MAX_MODES_BYTES = 16 << 20
CHUNK = 1 << 20


class InstallFailed(Exception):
    """The install did not leave packages; the message names the package where the output does."""


def read_modes(path: Path) -> tuple[set[str], dict[str, str]]:
    """The install's records of its executables and links (environment_packages.install_command); none when it
    left none."""
    try:
        with path.open("rb") as source:
            raw = source.read(MAX_MODES_BYTES + 1)
    except OSError:
        return set(), {}
    if len(raw) > MAX_MODES_BYTES:
        raise InstallFailed("the packages hold too many files")
    fields = raw.decode("utf-8", "replace").split("\0")
    executables: set[str] = set()
    links: dict[str, str] = {}
    at = 0
    while at + 1 < len(fields):
        if fields[at] == "x":
            executables.add(fields[at + 1])
            at += 2
        elif fields[at] == "l" and at + 2 < len(fields):
            links[fields[at + 1]] = fields[at + 2]
            at += 3
        else:
            break
    return executables, links


def zip_tree(tree: Path, archive: Path, max_bytes: int,
              modes: tuple[set[str], dict[str, str]] = (set(), {})) -> tuple[int, int]:
    """Zip ``tree`` (regular files, directories, links that stay inside it; ``modes``: the install's own record
    of its executables and links, for a backend whose transfer kept neither); raises InstallFailed past the
    bounds."""
    size = files = 0
    root = tree.resolve()
    executables, links = modes
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for relative, target in sorted(links.items()):
            path = tree / relative
            if ".." in PurePosixPath(relative).parts or os.path.lexists(path) or os.path.isabs(target) \
                    or not (path.parent / target).resolve().is_relative_to(root):
                continue  # kept already (a backend that keeps links), or pointing out of the tree
            entry = zipfile.ZipInfo(relative)
            entry.external_attr = (stat.S_IFLNK | 0o777) << 16
            out.writestr(entry, target)
            files += 1
        for directory, names, found in os.walk(tree):
            for name in sorted(names + found):
                path = Path(directory) / name
                relative = path.relative_to(tree).as_posix()
                info = os.lstat(path)
                files += 1
                if files > MAX_FILES:
                    raise InstallFailed(f"the packages hold more than {MAX_FILES} files")
                if stat.S_ISLNK(info.st_mode):
                    target = os.readlink(path)
                    inside = (path.parent / target).resolve()
                    if os.path.isabs(target) or not inside.is_relative_to(root):
                        continue
                    entry = zipfile.ZipInfo(relative)
                    entry.external_attr = (stat.S_IFLNK | 0o777) << 16
                    out.writestr(entry, target)
                elif stat.S_ISREG(info.st_mode):
                    size += info.st_size
                    if size > max_bytes:
                        raise InstallFailed(f"the packages take more than {max_bytes} bytes (a container's)")
                    entry = zipfile.ZipInfo.from_file(path, relative)
                    mode = info.st_mode | (0o111 if relative in executables else 0)
                    entry.external_attr = (stat.S_IFREG | (mode & 0o777)) << 16
                    entry.compress_type = zipfile.ZIP_DEFLATED
                    with path.open("rb") as source, out.open(entry, "w") as sink:
                        while chunk := source.read(CHUNK):
                            sink.write(chunk)
    return size, files


def unpack_tree(source: Path, target: Path, max_bytes: int) -> TreeEntry:
    """Unpack a kept tree into ``target`` (files 0644 or 0755, directories 0755, links only inside it), each
    entry checked on what it declares before a byte is written."""
    staging = target.with_name(f".unpacking-{target.name}")
    remove_tree(staging)
    staging.mkdir(mode=0o755)
    written = 0
    try:
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                parts = PurePosixPath(info.filename).parts
                if not parts or info.filename.startswith("/") or any(part in ("..", "") for part in parts):
                    raise OSError(f"a kept package tree names {info.filename[:100]!r}")
                path = staging.joinpath(*parts)
                for parent in reversed(path.relative_to(staging).parents):
                    made = staging / parent
                    if not made.is_dir():
                        made.mkdir(mode=0o755)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    link = archive.read(info).decode()
                    if os.path.isabs(link) or not (path.parent / link).resolve().is_relative_to(staging.resolve()):
                        continue
                    os.symlink(link, path)
                    continue
                if info.is_dir():
                    path.mkdir(mode=0o755, exist_ok=True)
                    continue
                written += info.file_size
                if written > max_bytes:
                    raise OSError("a kept package tree is larger than a container")
                with archive.open(info) as data, open(path, "xb") as out:
                    while chunk := data.read(CHUNK):
                        out.write(chunk)
                os.chmod(path, 0o755 if mode & 0o111 else 0o644)
        for directory, _, _ in os.walk(staging):
            os.chmod(directory, 0o755)
        remove_tree(target)
        os.rename(staging, target)
    except BaseException:
        remove_tree(staging)
        raise
    return TreeEntry(target, written, used_at=time.monotonic())
