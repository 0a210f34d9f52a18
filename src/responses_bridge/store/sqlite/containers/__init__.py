"""Containers, their files' rows and skills on SQLite.
"""
