"""The probe results kept with the deployment, one per upstream URL, for ``config show`` and for a start that
would rather not probe again.

A small JSON file in the deployment's data directory, beside its database (``probes.json`` next to the SQLite
file, which is under the user data directory only when ``--db`` is not set): two deployments on one machine keep
their own, and ``config show`` shows the one of the deployment it describes. A deployment on ``:memory:`` keeps
nothing, so it keeps no probe either. A result replaces the earlier one for the same URL. Written to a temporary
file then renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from .checks import ProbeReport

FILE_NAME = "probes.json"


def cache_path(db_path: str) -> Path | None:
    """``probes.json`` in the folder of the database at ``db_path`` (``Settings.db_path()``); None for an
    in-memory database."""
    if db_path == ":memory:":
        return None
    return Path(db_path).resolve().parent / FILE_NAME


def load(path: Path | None, urls: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The cached results by upstream URL (each with ``probed_at``, Unix seconds), only those of ``urls`` when
    given; empty when there are none or the file cannot be read (a cache, not a source of truth)."""
    if path is None:
        return {}
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    if urls is None:
        return data
    wanted = {url.rstrip("/") for url in urls}
    return {url: entry for url, entry in data.items() if url in wanted}


def cached(path: Path | None, url: str) -> ProbeReport | None:
    entry = load(path).get(url.rstrip("/"))
    try:
        return ProbeReport.from_dict(entry) if entry else None
    except (KeyError, TypeError):
        return None


def save(path: Path | None, report: ProbeReport) -> Path | None:
    """Keep ``report`` in the cache at ``path`` (nothing when None: an in-memory deployment)."""
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = load(path)
    entries[report.url] = {**report.as_dict(), "probed_at": int(time.time())}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
    temporary.replace(path)
    return path
