"""Reading a whole HTTP answer from another server with a ceiling, the one way every outbound read does it.

Whatever the bridge reads whole (an upstream's JSON answer, a web search provider's results, an embeddings
endpoint's vectors) is held in memory at once, so the server at the other end must not decide how much: the
declared length is refused before reading, and an undeclared (chunked) body is counted as it arrives and dropped
at the ceiling, the connection with it.
"""

from __future__ import annotations

import aiohttp


class BodyTooLarge(Exception):
    """The answer is over ``limit`` bytes; ``declared`` is its Content-Length when it gave one."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"an answer over {limit} bytes")
        self.limit = limit
        self.declared = declared


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, at most ``limit`` bytes; raises :class:`BodyTooLarge` past it (having read no more than the
    ceiling and one network chunk)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit, declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()  # the rest is not read: the connection goes
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
