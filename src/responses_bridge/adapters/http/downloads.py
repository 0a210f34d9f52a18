"""A stored file's bytes as a download: one answer shape for every content route (files, container files).

The bytes go out a chunk at a time (each write waits while the client is slower than the store), with the size
known up front. The caller opens the blob before calling, so a file deleted meanwhile is still its JSON 404; the
reader is closed here whatever happens.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from ...store.base import BlobReader

CONTENT_CHUNK = 1 << 20


async def send_blob(request: web.Request, reader: BlobReader, filename: str,
                    content_type: str = "application/octet-stream") -> web.StreamResponse:
    """``content_type``: what the API says the route answers (a skill's content is ``application/zip``)."""
    try:
        response = web.StreamResponse(headers={
            "Content-Type": content_type,
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
        })
        response.content_length = reader.size
        await response.prepare(request)
        while chunk := await reader.read(CONTENT_CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await reader.aclose()
