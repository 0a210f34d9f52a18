"""Measurement start-up for scripts/pg-coverage, imported by every Python process of the measured run (this folder
is put on PYTHONPATH only there): the pytest processes, and the sidecars, key commands and replicas they start.

Each process measures itself (``coverage.process_startup``) and follows the test module its pytest worker is running:
the worker writes that module's node id to the file ``PG_COVERAGE_CONTEXT_FILE`` names, and a thread here switches
the coverage context to it. A session's shared sidecar serves many modules, so a context fixed at its start would
credit them all to the first.
"""

from __future__ import annotations

import os

if os.environ.get("COVERAGE_PROCESS_START"):
    import threading

    import coverage

    coverage.process_startup()
    _cov = coverage.Coverage.current()
    _context_file = os.environ.get("PG_COVERAGE_CONTEXT_FILE")

    def _follow(cov: coverage.Coverage, path: str) -> None:
        import time

        seen = None
        while True:
            try:
                with open(path) as file:
                    context = file.read().strip()
            except OSError:
                context = ""
            if context and context != seen:
                cov.switch_context(context)
                seen = context
            time.sleep(0.02)

    if _cov is not None and _context_file:
        threading.Thread(target=_follow, args=(_cov, _context_file), name="pg-coverage-context",
                         daemon=True).start()
