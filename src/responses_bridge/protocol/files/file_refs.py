"""A stored file as a request's content part refers to it (``input_file`` / ``input_image`` with ``file_id``):
the shape the files service hands the run, which turns it into what the upstream takes (run/file_inputs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def _nothing() -> None:
    return None


@dataclass(slots=True)
class LoadedFile:
    """One of the tenant's files, read: its name, its media type (from its name, else its first bytes), its bytes,
    and its text where the retrieval pipeline extracts text from its kind (else None). ``release`` gives back the
    request memory its load reserved; the run calls it when the response ends."""

    filename: str
    media_type: str
    size: int  # bytes, as stored: what counts against a request's bound
    data: bytes
    text: str | None = None
    release: Callable[[], None] = field(default=_nothing)
