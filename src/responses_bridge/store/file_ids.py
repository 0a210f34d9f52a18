"""File ids and the timings of uploads, the same for the bytes on disk (SQLite) and in PostgreSQL.
"""

from __future__ import annotations

import re

FILE_ID = re.compile(r"file-[0-9a-f]{32}")


UPLOAD_PREFIX = ".upload-"


ORPHAN_GRACE_SECONDS = 3600.0
"""Bytes without a metadata row are removed only once this old: another process may be between publishing the
bytes and inserting the row."""


STALE_UPLOAD_SECONDS = 24 * 3600.0
"""An upload this old that never completed belongs to a process that died."""


def check_file_id(file_id: str) -> str:
    if not FILE_ID.fullmatch(file_id):
        raise ValueError(f"not a file id: {file_id[:80]!r}")
    return file_id


BLOB_OWNERS = (("files", "id"), ("container_files", "blob_id"), ("skill_versions", "blob_id"),
               ("container_skills", "blob_id"), ("upload_parts", "blob_id"), ("containers", "packages_blob"))
"""Every table whose rows name stored bytes, and the column that does (the same on both databases): bytes none of them
names are orphans for the sweep. With :data:`SQLITE_RECORD_BLOBS` or :data:`POSTGRES_RECORD_BLOBS`, each database's
whole list."""

SQLITE_RECORD_BLOBS = ("agent_records", "json_extract(body, '$._private.blob_id')")
POSTGRES_RECORD_BLOBS = ("agent_records", "(body #>> '{_private,blob_id}')")
"""The bytes an Agents API record keeps (a session's artifact: ``_private.blob_id`` of its JSON body), as each
database reads them; the expression is indexed as written (both stores' migrations), so the sweep's look-ups stay
index reads."""
