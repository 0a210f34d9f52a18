"""Why a SQLite database could not be opened, in the words of the one line that stops the start.

SQLite reports a directory, a path under a file, a file of another program and a directory it may not write alike:
``unable to open database file`` or ``file is not a database``, deep in a traceback that names neither the path nor
the setting. ``store/open.py`` (the one opener, for ``serve`` and ``keys`` alike) catches every failure of the
opening and raises it again as ``DatabaseUnavailable`` with :func:`open_failure`'s line.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..database_url import SQLITE_SETTING
from .migrations import NewerSchema

OPEN_ERRORS = (OSError, sqlite3.Error, NewerSchema)
"""What opening a SQLite database may raise for a reason of the user's (the path, the file, its permissions)."""


def open_failure(path: str, error: BaseException) -> str:
    """``cannot open the SQLite database PATH: WHY (--db / RESPONSES_BRIDGE_DB)``."""
    return f"cannot open the SQLite database {path}: {_reason(Path(path), error)} ({SQLITE_SETTING})"


def _reason(path: Path, error: BaseException) -> str:
    if path.is_dir():
        return f"it is a directory; name a file, e.g. {path / 'responses-bridge.db'}"
    blocking = _file_on_the_way(path)
    if blocking is not None:
        return f"{blocking} is a file, not a directory"
    if isinstance(error, NewerSchema):
        return str(error)
    text = str(error)
    if isinstance(error, sqlite3.DatabaseError) and "not a database" in text:
        return "the file is not a SQLite database (another program's file, or a damaged one)"
    if isinstance(error, PermissionError) or "readonly" in text or "unable to open" in text:
        where = _unwritable(path)
        if where is not None:
            return f"{where} is not writable by this user (uid {os.getuid()})"
    if "locked" in text:
        return "another process holds the database locked"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}{f' ({error.filename})' if error.filename else ''}"
    return text


def _file_on_the_way(path: Path) -> Path | None:
    """The first of the path's parents that exists as something other than a directory, if one does."""
    for parent in reversed(path.absolute().parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _unwritable(path: Path) -> Path | None:
    """The file, or the nearest existing directory it is (or would be) in, when this process may not write it: the
    directory too, where SQLite keeps the write-ahead log beside the file."""
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return path
    for parent in path.absolute().parents:
        if parent.exists():
            return None if os.access(parent, os.W_OK | os.X_OK) else parent
    return None
