"""A migrated SQLite database, copied to the file of each sidecar the tests start on a new one, instead of each
sidecar migrating its own: ~35 ms of CPU a start, for the ~300 sidecars of a run on SQLite. PostgreSQL's sidecars get
a copy of a migrated template already (postgres.py's ``sidecar_env``); this is the same for SQLite.

What a sidecar finds is what its own first start would have left there: the schema at the latest version, the file in
WAL mode, mode 0600. A start that must make its database itself — the tests of the migrations, of readiness before
the store is migrated — asks for none (``start_sidecar(..., new_database=True)``); the store's own tests
(tests/unit/test_store.py and the others) migrate new files as before."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading

from responses_bridge.store.sqlite.private_files import PRIVATE_FILE

_lock = threading.Lock()
_template: bytes | None = None


def place(path: str) -> None:
    """Put a copy of the migrated database at ``path``, unless something is there already (a sidecar started again on
    its file finds it as it left it)."""
    data = _migrated()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _migrated() -> bytes:
    """The bytes of a database the bridge's own store made and migrated, once per test process (in a thread of its
    own: the caller may be on a running event loop)."""
    global _template
    with _lock:
        if _template is None:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, "template.db")
                worker = threading.Thread(target=asyncio.run, args=(_open_and_close(path),))
                worker.start()
                worker.join()
                if os.path.exists(path + "-wal"):  # closed cleanly, the log is checkpointed into the file and gone
                    raise RuntimeError("the template database was not closed cleanly")
                with open(path, "rb") as file:
                    _template = file.read()
        return _template


async def _open_and_close(path: str) -> None:
    from responses_bridge.store import SQLiteResponseStore

    store = SQLiteResponseStore(path)
    await store.open()  # made and migrated as a sidecar's first start makes it
    await store.close()
