"""The input file of a batch read line by line, for its checks and then its lines kept (runner.py): memory holds a
chunk of the file and one line, whatever the file's size."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ...store.base_batches import StoredBatch
from ..files.files import FileService
from .validation import split_lines

READ_BYTES = 1 << 20
"""Of the input file at once."""


async def each_line(files: FileService, batch: StoredBatch, max_line_bytes: int, each: Callable[[bytes], Any]) -> None:
    """Each line of the batch's input file to ``each`` (awaited when it is a coroutine function's). A line past
    ``max_line_bytes`` is given cut there (the check refuses it for its size) and the rest of it is skipped. A file
    gone (deleted, expired, another tenant's) is the Files API's 404, raised."""
    reader, _ = await files.open_content(batch.body["input_file_id"], tenant=batch.tenant)
    tail = bytearray()
    skipping = False
    try:
        while True:
            piece = await reader.read(READ_BYTES)
            if not piece:
                break
            if skipping:
                end = piece.find(b"\n")
                if end < 0:
                    continue
                piece, skipping = piece[end + 1:], False
            for raw in split_lines([piece], tail):
                await _call(each, raw)
            if len(tail) > max_line_bytes:  # a line longer than any request may be
                await _call(each, bytes(tail))
                tail.clear()
                skipping = True
    finally:
        await reader.aclose()
    if tail and not skipping:
        await _call(each, bytes(tail).rstrip(b"\r"))


async def _call(each: Callable[[bytes], Any], raw: bytes) -> None:
    result = each(raw)
    if asyncio.iscoroutine(result):
        await result
