"""What ``RESPONSES_BRIDGE_DATABASE_URL`` names, read without any database driver: the PostgreSQL store (and its
``postgres`` extra) is loaded only when a URL is set, and its errors are worded here."""

from __future__ import annotations

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
