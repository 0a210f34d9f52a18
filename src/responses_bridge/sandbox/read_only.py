"""The per-call read-only trees earlier bridges made (a container's skills at ``/mnt/skills``, one host directory
per call named ``responses-bridge-ro-<pid>-…``): a bridge that crashed mid-call left one on the host's disk.
Skills are now unpacked once into a cache shared by the calls (services/containers/skill_cache.py, which sweeps its
own), so nothing makes these trees any more; a starting bridge removes the ones of processes that are gone
(:func:`sweep_orphans`), never what a live one is using.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import structlog

from .cgroups.per_call import process_alive
from .scratch import ScratchUnsafe, existing_scratch_root
from .trees import sweep

log = structlog.get_logger(__name__)

PREFIX = "responses-bridge-ro-"


def sweep_orphans(parent: Path | None) -> int:
    """Remove the trees of bridge processes that are gone (a crash between a call's start and its end): how many
    were removed. Looked for in the scratch directory, and where bridges before it made them (``parent`` itself,
    the system's temporary directory when None); in both only directories of this uid, never through a link
    (trees.py's :func:`~.trees.sweep`)."""

    def in_use(name: str) -> bool:
        owner = name[len(PREFIX):].split("-", 1)[0]
        return not owner.isdigit() or int(owner) == os.getpid() or process_alive(int(owner))

    removed = sweep(parent or Path(tempfile.gettempdir()), PREFIX, keep=in_use)
    try:
        scratch = existing_scratch_root(parent)
        if scratch is not None:
            removed += sweep(scratch, PREFIX, keep=in_use)
    except (ScratchUnsafe, OSError) as error:  # said once at start (runtime.py); nothing of ours to sweep there
        log.debug("scratch_not_swept", error=str(error))
    return removed
