"""What ``RESPONSES_BRIDGE_DATABASE_URL`` names, read without any database driver: the PostgreSQL store (and its
``postgres`` extra) is loaded only when a URL is set, and its errors are worded here; and the line between it and
``--db``, which names a SQLite file and never a URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MISSING_EXTRA = ("RESPONSES_BRIDGE_DATABASE_URL needs the postgres extra, which is not installed: "
                 "pip install 'responses-bridge[postgres]'")


class DatabaseUnavailable(RuntimeError):
    """The database named by ``RESPONSES_BRIDGE_DATABASE_URL`` could not be reached, or refused us."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a database URL points, without its credentials: what messages and logs may show."""

    host: str
    port: int
    database: str
    user: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.database} as {self.user}"


def describe(url: str) -> Target:
    """The host, port, database and user a ``postgresql://`` URL names (libpq's defaults where it names none)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    database = unquote(parts.path.lstrip("/")) or unquote(parts.username or "") or "postgres"
    return Target(host=host, port=port, database=database, user=unquote(parts.username or "postgres"))


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("postgres", "postgresql")


_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
SQLITE_SETTING = "--db / RESPONSES_BRIDGE_DB"


def sqlite_path(value: str | None) -> str | None:
    """``--db`` as given, when it is a path; ValueError pointing at ``RESPONSES_BRIDGE_DATABASE_URL`` when it is a
    URL, which SQLite would otherwise take for a relative path (``./postgresql:/user:password@host/db`` made on
    disk, the password in its name)."""
    if value is None or not _URL.match(value):
        return value
    if is_postgres_url(value.strip()):
        raise ValueError("is a PostgreSQL URL, not a SQLite file: set it as RESPONSES_BRIDGE_DATABASE_URL (or "
                         "database_url in the configuration file); --db names a SQLite file")
    raise ValueError("is a URL, not a SQLite file: --db names a file path (a PostgreSQL database is set with "
                     "RESPONSES_BRIDGE_DATABASE_URL)")
