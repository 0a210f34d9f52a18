"""The Files, Uploads and Vector Stores APIs on SQLite: files' metadata and bytes, uploads, vector stores and
their chunk index, their tables, and a tenant's stored bytes (the quota).
"""
