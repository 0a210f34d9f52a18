"""Reading stored bytes back in tests: a :class:`~responses_bridge.store.base_files.BlobReader` to its end (a read
may return less than asked, a PostgreSQL blob one row at a time), closed afterwards."""

from __future__ import annotations

from responses_bridge.store.base_files import BlobReader


async def read_all(reader: BlobReader) -> bytes:
    out = bytearray()
    try:
        while chunk := await reader.read(1 << 16):
            out += chunk
    finally:
        await reader.aclose()
    return bytes(out)
