"""The PostgreSQL store: one database shared by every replica, behind the same store interfaces as SQLite."""

from ..database_url import DatabaseUnavailable, is_postgres_url
from .database import PostgresDatabase

__all__ = ["DatabaseUnavailable", "PostgresDatabase", "is_postgres_url"]
