"""store/sqlite/response_rows.py's bind_as_is: bytes and None skip sqlite3's adaptation lookup, bound as before."""

from __future__ import annotations

import sqlite3

from responses_bridge.store.sqlite.response_rows import bind_as_is


def test_bytes_and_none_bind_as_they_are() -> None:
    bind_as_is()
    bind_as_is()  # once per process: a second call changes nothing
    assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is bytes
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a, b, c)")
    blob = b'{"id": "resp_1", "text": "\\u00e9"}' + bytes(range(256))
    conn.execute("INSERT INTO t VALUES (?, ?, ?)", (blob, None, b""))
    assert conn.execute("SELECT typeof(a), a, typeof(b), typeof(c), length(c) FROM t").fetchone() == (
        "blob", blob, "null", "blob", 0)
    # str, int and float were never adapted: still bound directly
    conn.execute("INSERT INTO t VALUES (?, ?, ?)", ("text", 3, 1.5))
    assert conn.execute("SELECT typeof(a), typeof(b), typeof(c) FROM t WHERE a = 'text'").fetchone() == (
        "text", "integer", "real")
