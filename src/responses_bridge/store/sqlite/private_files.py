"""The SQLite database made private from its first byte: a new directory 0700, a new database file 0600.

The database holds every stored response, conversation and file: under the usual umask 022, SQLite's own open
makes the file 0644 and ``mkdir`` makes its directory 0755, readable by every local user. So the bridge makes
both itself before SQLite opens the file: the file with ``O_CREAT | O_EXCL`` and mode 0600 (an empty file is an
empty database to SQLite), which needs no change of the process-wide umask (other threads may be making files at
the same time). SQLite gives the ``-wal`` and ``-shm`` files it makes beside the database the database file's own
mode, so they are 0600 too. What already exists keeps its mode: an operator's choice is not undone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600


def make_private_directory(directory: Path) -> None:
    """``directory`` and each missing parent, every one made here 0700 (``os.makedirs`` gives its mode to the
    last level only); an existing one is left as it is."""
    missing: list[Path] = []
    for level in (directory, *directory.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process (a worker starting too)
            os.mkdir(level, PRIVATE_DIRECTORY)


def make_private_database(path: str) -> None:
    """The database's directory (:func:`make_private_directory`) and, when there is no file at ``path``, an empty
    one of mode 0600. Raises OSError for a path that cannot be a file (under a file, not writable): the caller
    names it (opening.py)."""
    make_private_directory(Path(path).parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:  # a database already there (or a directory, which SQLite's open then names)
        return
    os.close(fd)
