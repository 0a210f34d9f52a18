"""The PostgreSQL store: one database shared by every replica, behind the same store interfaces as SQLite."""

from .database import DatabaseUnavailable, PostgresDatabase, is_postgres_url

__all__ = ["DatabaseUnavailable", "PostgresDatabase", "is_postgres_url"]
