"""The SQLite store: one embedded database file (WAL) for a single process, behind the same store interfaces as
PostgreSQL (store/base.py), module for module."""
