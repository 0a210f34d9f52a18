"""A database that cannot be opened stops ``serve`` and ``keys`` with one line naming the path and the setting
(``--db`` / ``RESPONSES_BRIDGE_DB``), never a traceback about ``unable to open database file``; and a database URL
given to ``--db`` is refused, pointing at ``RESPONSES_BRIDGE_DATABASE_URL``, before anything is made on disk and
without its password. The real CLI, with a clean environment."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port
from tests.support.cli import cli, one_line

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

SETTING = "(--db / RESPONSES_BRIDGE_DB)"


def serve(tmp_path: Path, db: str) -> str:
    result = cli(tmp_path, "serve", "--db", db, "--http-port", str(free_port()), "--extproc-port", str(free_port()))
    return one_line(result, "serve", status=1)


def test_a_directory(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    assert serve(tmp_path, "state") == (f"cannot open the SQLite database state: it is a directory; name a file, "
                                        f"e.g. state/responses-bridge.db {SETTING}")


def test_a_file_that_is_not_sqlite_for_serve_and_keys(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("these are my notes, not a database\n" * 10)
    expected = ("cannot open the SQLite database notes.db: the file is not a SQLite database (another program's "
                f"file, or a damaged one) {SETTING}")
    assert serve(tmp_path, "notes.db") == expected
    assert one_line(cli(tmp_path, "keys", "list", "--db", "notes.db"), "keys list", status=1) == expected
    assert one_line(cli(tmp_path, "keys", "create", "--tenant", "t", env={"RESPONSES_BRIDGE_DB": "notes.db"}),
                    "keys create", status=1) == expected


def test_a_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where a directory should be")
    assert serve(tmp_path, "data/state.db") == (f"cannot open the SQLite database data/state.db: {tmp_path / 'data'} "
                                                f"is a file, not a directory {SETTING}")


def test_a_database_of_a_newer_bridge(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "newer.db") as connection:
        connection.execute("PRAGMA user_version = 9999")
    line = serve(tmp_path, "newer.db")
    assert line.startswith("cannot open the SQLite database newer.db: response store schema version 9999 is newer "
                           "than the newest version this bridge knows") and line.endswith(SETTING), line


@pytest.mark.parametrize(("argv", "env", "command", "label"), [
    (["serve", "--db", "postgresql://bridge:pa55word@db.example/state"], {}, "serve", "--db"),
    (["keys", "create", "--tenant", "t"], {"RESPONSES_BRIDGE_DB": "postgresql://bridge:pa55word@db.example/state"},
     "keys create", "RESPONSES_BRIDGE_DB"),
], ids=["serve-flag", "keys-variable"])
def test_a_database_url_in_db_is_refused_without_its_password(tmp_path: Path, argv: list[str], env: dict[str, str],
                                                              command: str, label: str) -> None:
    line = one_line(cli(tmp_path, *argv, env=env), command)
    assert line == (f"{label}='postgresql://bridge:********@db.example/state': is a PostgreSQL URL, not a SQLite "
                    "file: set it as RESPONSES_BRIDGE_DATABASE_URL (or database_url in the configuration file); --db "
                    "names a SQLite file")
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # no ./postgresql:/… tree, no data directory
