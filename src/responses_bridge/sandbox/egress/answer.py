"""The answer to a request that carried domain secrets, relayed back to the code with every secret written over.

Every head the server sends is read and judged, not only the first: a server may send interim heads (``1xx``)
before the final one, and a ``100 Continue`` in front of a chunked echo once carried a secret past the proxy, split
across the chunks where no mask could find it whole. So each head must be a status line; an interim one
(``100``, ``102``, ``103``) is dropped — the request went as HTTP/1.0, to which a server sends none, and the proxy
meets a client's ``Expect: 100-continue`` itself (request_head.continues) — at most ``INTERIM_HEADS`` of them; a
``101`` (another protocol from there on) and a final head whose body is chunked or encoded are refused
(:class:`Unscannable`, a 502 to the code) before a byte of the body moves.

The body is written over by one automaton over all the connection's secrets (net/stream_replace.py), its work the same
per byte whatever the secrets; a read of ``OFFLOAD_BYTES`` or more is masked on a thread of the proxy's own (the
automaton releases the GIL), so the event loop that answers ``/health`` and every other tenant's requests only
hands the bytes over.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ...observability import metrics
from .domain_secrets import UNSCANNABLE, Unsecret, status_of, unscannable

INTERIM_HEADS = 8
OFFLOAD_BYTES = 16 * 1024
"""Reads this large or larger are masked off the event loop; smaller ones (an event of a stream) cost less there
than the hand-over."""


class Unscannable(Exception):
    """An answer the proxy cannot take a secret out of: the message says why (it goes to the code in a 502)."""


@functools.cache
def masking_pool() -> ThreadPoolExecutor:
    """The threads masking runs on, the proxy's own: masking never waits behind (nor holds up) the default
    executor's file and DNS work."""
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="egress-masking")


async def final_head(source: asyncio.StreamReader, count: Callable[[int], None]) -> bytes:
    """The answer's final head, each head before it read, judged and dropped (``count`` counts every one's bytes
    and raises past the budget). Raises :class:`Unscannable`."""
    for _ in range(INTERIM_HEADS + 1):
        head = await source.readuntil(b"\r\n\r\n")
        count(len(head))
        status = status_of(head)
        if status is None:
            raise Unscannable("the answer does not begin with an HTTP/1.x status line")
        if status == 101:
            raise Unscannable("the server switched protocols, where the proxy cannot take a secret back out")
        if status >= 200:
            if unscannable(head):
                raise Unscannable(UNSCANNABLE)
            return head
    raise Unscannable(f"the server sent more than {INTERIM_HEADS} interim (1xx) heads")


def _timed_feed(unsecret: Unsecret, piece: bytes) -> tuple[bytes, float]:
    started = time.perf_counter()
    written = unsecret.feed(piece)
    return written, time.perf_counter() - started


async def relay_masked(source: asyncio.StreamReader, target: asyncio.StreamWriter, unsecret: Unsecret,
                       count: Callable[[int], None], chunk: int) -> None:
    """Copy the answer from ``source`` to ``target``, its final head and body with every secret written over."""
    loop = asyncio.get_running_loop()
    target.write(unsecret.feed(await final_head(source, count)))
    masked, seconds = 0, 0.0
    try:
        while piece := await source.read(chunk):
            count(len(piece))
            if len(piece) >= OFFLOAD_BYTES:
                written, took = await loop.run_in_executor(masking_pool(), _timed_feed, unsecret, piece)
            else:
                written, took = _timed_feed(unsecret, piece)
            seconds += took
            masked += len(piece)
            target.write(written)
            await target.drain()
        target.write(unsecret.end())
    finally:
        metrics.EGRESS_MASKED_BYTES.inc(masked)
        metrics.EGRESS_MASKING_SECONDS.inc(seconds)
