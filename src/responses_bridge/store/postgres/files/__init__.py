"""The Files, Uploads and Vector Stores APIs on PostgreSQL: files' metadata and bytes, uploads, vector stores and
their chunk index (pgvector), and their tables.
"""
