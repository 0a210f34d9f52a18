"""What one file's extraction may cost: bytes decompressed, characters of text, seconds.

An upload is small on the wire and can be huge inside: a 566 KB DOCX expanded to 200 MB of XML once grew the
sidecar by 2 GB and kept a worker busy for minutes. Every extractor reads through these bounds, so a file past one
fails with a reason (``last_error``) instead of exhausting the process. The extraction runs in a worker thread,
which cannot be stopped from outside: the extractors call :meth:`Budget.check` in their loops instead.

The limits sit well above what OpenAI itself indexes from one file (5 million tokens, about 20 MB of text), so a
real document never meets them.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import IO

MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
"""Bytes read from one file, or decompressed from all the parts of an archive (DOCX) together."""
MAX_TEXT_CHARS = 24_000_000
"""Characters of text one file may give: the chunks, token windows and embeddings are made from it."""
MAX_SECONDS = 120.0
"""Time for one file's extraction, checked between pages, parts and parsed elements."""


class BoundExceeded(Exception):
    """A limit was passed: ``message`` says which, for the file's ``last_error``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


TEXT_STEP = 1 << 20
"""Characters of text :attr:`Budget.on_text` is told of at a time, ahead of their coming."""


class Budget:
    """One file's allowance, spent as its extractor reads and produces. ``max_text_chars``: less than
    :data:`MAX_TEXT_CHARS` where the file is one of several a request names, whose text is bounded in all (what
    the request's earlier files left: run/file_inputs.py). ``on_text``: told of the text's characters a step
    (:data:`TEXT_STEP`) ahead as they come, so a caller holds their memory before it is taken (a request's memory
    budget: services/files/inputs.py); what it raises stops the extraction."""

    __slots__ = ("_deadline", "_told", "max_text_chars", "on_text", "read_bytes", "text_chars")

    def __init__(self, seconds: float = MAX_SECONDS, max_text_chars: int = MAX_TEXT_CHARS,
                 on_text: Callable[[int], None] | None = None) -> None:
        self._deadline = time.monotonic() + seconds
        self.max_text_chars = min(max_text_chars, MAX_TEXT_CHARS)
        self.on_text = on_text
        self._told = 0
        self.read_bytes = 0
        self.text_chars = 0

    def check(self) -> None:
        if time.monotonic() > self._deadline:
            raise BoundExceeded(f"Extracting the file's text took longer than {MAX_SECONDS:.0f} seconds.")

    def spend_bytes(self, count: int) -> None:
        self.read_bytes += count
        if self.read_bytes > MAX_DECOMPRESSED_BYTES:
            raise BoundExceeded(f"The file expands to more than {MAX_DECOMPRESSED_BYTES // (1024 * 1024)} MB; "
                                "it is too large to index.")

    def spend_text(self, count: int) -> None:
        self.text_chars += count
        if self.text_chars > self.max_text_chars:
            if self.max_text_chars < MAX_TEXT_CHARS:
                raise BoundExceeded(f"The files this request names hold more than {MAX_TEXT_CHARS:,} characters "
                                    f"of text in all (this one more than the {max(0, self.max_text_chars):,} left).")
            raise BoundExceeded(f"The file holds more than {MAX_TEXT_CHARS:,} characters of text; it is too large "
                                "to index.")
        if self.on_text is not None and self.text_chars > self._told:
            step = -(-(self.text_chars - self._told) // TEXT_STEP) * TEXT_STEP
            self.on_text(step)
            self._told += step


class BoundedReader(io.RawIOBase):
    """A binary stream that charges every byte read to ``budget`` (and checks its clock), so a parser fed from it
    stops at the limit instead of decompressing a bomb whole."""

    def __init__(self, source: IO[bytes], budget: Budget) -> None:
        super().__init__()
        self._source = source
        self._budget = budget

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1024 * 1024  # never all at once: the bound is checked per read
        data = self._source.read(size)
        self._budget.spend_bytes(len(data))
        self._budget.check()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
