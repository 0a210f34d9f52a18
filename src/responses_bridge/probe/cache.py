"""The probe results kept in the data directory, one per upstream URL, for ``config show`` and for a start that
would rather not probe again.

A small JSON file beside the default database (``probes.json`` under the user data directory); a result replaces
the earlier one for the same URL. Written to a temporary file then renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import platformdirs

from .checks import ProbeReport

FILE_NAME = "probes.json"


def cache_path() -> Path:
    return Path(platformdirs.user_data_dir("responses-bridge")) / FILE_NAME


def load() -> dict[str, dict[str, Any]]:
    """Every cached result by upstream URL (each with ``probed_at``, Unix seconds); empty when there are none or
    the file cannot be read (a cache, not a source of truth)."""
    try:
        data = orjson.loads(cache_path().read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(url: str) -> ProbeReport | None:
    entry = load().get(url.rstrip("/"))
    try:
        return ProbeReport.from_dict(entry) if entry else None
    except (KeyError, TypeError):
        return None


def save(report: ProbeReport) -> Path:
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = load()
    entries[report.url] = {**report.as_dict(), "probed_at": int(time.time())}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
    temporary.replace(path)
    return path
