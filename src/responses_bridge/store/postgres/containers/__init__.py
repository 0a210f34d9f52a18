"""Containers, their files' rows and skills on PostgreSQL, and their tables.
"""
