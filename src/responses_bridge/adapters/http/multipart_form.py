"""Reading a ``multipart/form-data`` body to its end, for the routes that take uploads (``POST /v1/files``,
``POST /v1/containers/{id}/files``).

aiohttp's reader does not tell a part that ended at its boundary from a body that simply stopped: a part's
``read_chunk`` returns ``b""`` either way, and a route that stops reading once it has its file never learns that
the closing boundary (``--BOUNDARY--``) never came. A body cut short (a client or a proxy that gave up half way) would
then be stored as a whole file, its last bytes possibly a piece of the boundary. Here a part's bytes are read
through :func:`part_chunks`, which refuses a part that did not end at its boundary, and :func:`read_to_end` reads
what follows the file up to the closing boundary, so a file is stored only from a form that was whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ...protocol.errors import APIError, invalid_request

TRAILING_LIMIT = 64 * 1024
"""What a form may hold after its file (fields, part headers): a container upload reads and drops it."""
TRAILING_READ = 64 * 1024  # must exceed the boundary's length (the reader asserts it); boundaries are at most 70


def cut_short() -> APIError:
    return invalid_request("The multipart/form-data body ended before its closing boundary (the line "
                           "'--<boundary>--'): it was cut short, and nothing of it was stored. Send the whole form.",
                           param=None, code="invalid_multipart")


def malformed(error: BaseException, request: web.Request) -> APIError:
    """A 400 for what aiohttp's multipart reader raised: the body ended early when it failed on the boundary
    with all of the body read (``Reading after EOF``, ``Invalid boundary b''``: a ``ValueError``; a bad part
    header is an ``HttpProcessingError``), else its reason."""
    if isinstance(error, ValueError) and request.content.at_eof():
        return cut_short()
    reason = error.message if isinstance(error, HttpProcessingError) else str(error)
    reason = " ".join(str(reason).split())[:200] or type(error).__name__
    return invalid_request(f"The multipart/form-data body could not be read: {reason}.", param=None,
                           code="invalid_multipart")


async def part_chunks(part: BodyPartReader, size: int) -> AsyncIterator[bytes]:
    """A part's bytes, ``size`` at a time; a 400 when the body ends before the part's boundary (aiohttp's reader
    just stops then, as at the part's end)."""
    while chunk := await part.read_chunk(size):
        yield chunk
    if not part.at_eof():
        raise cut_short()


async def read_to_end(reader: MultipartReader, limit: int = TRAILING_LIMIT) -> None:
    """Read and drop every part left, up to the closing boundary: a 400 when the body ends before it, or when
    the parts left hold more than ``limit`` bytes (a form has little after its file)."""
    left = limit
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise invalid_request("Nested multipart parts are not supported.", param=None, code="invalid_multipart")
        async for chunk in part_chunks(part, TRAILING_READ):
            left -= len(chunk)
            if left < 0:
                raise invalid_request(f"The form holds more than {limit} bytes after its 'file'.", param=None,
                                      code="invalid_multipart")
    if not reader.at_eof():
        raise cut_short()
