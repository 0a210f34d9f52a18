"""The reason a SQLite database cannot be opened, for a failure the tests cannot cause as root: a directory closed
to this user (the CLI's own failures are in tests/integration/test_database_mistakes.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from responses_bridge.store.sqlite import opening

SETTING = "(--db / RESPONSES_BRIDGE_DB)"


def test_a_directory_this_user_may_not_write_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root no directory is closed to the tests, so the permission is taken away where the check asks."""
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(opening.os, "access", lambda path, mode: Path(path) != locked)
    line = opening.open_failure(str(locked / "state.db"),
                                sqlite3.OperationalError("unable to open database file"))
    assert line.startswith(f"cannot open the SQLite database {locked / 'state.db'}: {locked} is not writable by this "
                           "user (uid "), line
    assert line.endswith(SETTING)
