"""The SQLite database is private from its first byte (store/sqlite/private_files.py): under the usual umask 022
a new database file, its -wal and -shm files are 0600 and each directory made for it 0700 (before: 0644 and
0755, every stored response and file readable by any local user); what already exists keeps its mode."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from responses_bridge.services.files.files import files_directory
from responses_bridge.store.open import open_stores
from responses_bridge.store.sqlite.files.file_bytes import DiskFileBytes

pytestmark = pytest.mark.store_free  # opens its own SQLite files, whatever store the run is on


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_a_new_database_and_its_directories_are_private(tmp_path: Path) -> None:
    db = tmp_path / "made" / "for-it" / "bridge.db"
    stores = await open_stores(str(db), None)
    try:
        with sqlite3.connect(db) as other:  # a write, as a second worker makes one: the -wal and -shm files
            other.execute("CREATE TABLE probe (x)")  # exist (SQLite gives them the database file's mode)
        files = DiskFileBytes(files_directory(str(db)))
        await files.start()
        modes = {path.name: _mode(path) for path in db.parent.iterdir()}
        assert modes == {"bridge.db": 0o600, "bridge.db-wal": 0o600, "bridge.db-shm": 0o600, "files": 0o700}
    finally:
        await stores.close()
    assert _mode(db.parent) == 0o700 and _mode(db.parent.parent) == 0o700
    assert _mode(tmp_path) == 0o700  # pytest's own, left as it was


async def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    db = tmp_path / "bridge.db"
    stores = await open_stores(str(db), None)
    await stores.close()
    assert _mode(tmp_path) == 0o755 and _mode(db) == 0o600
