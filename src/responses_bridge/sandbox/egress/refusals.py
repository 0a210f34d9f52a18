"""The answers the egress proxy gives itself (proxy.py): a refused connection's status and reason, and what the
owner of a call's gate is told of a connection cut at one of the proxy's bounds or a tunnel closed for what it
carried (rates.py's ``EgressOwner``)."""

from __future__ import annotations

import asyncio
import contextlib

from .request_head import MAX_HEAD_BYTES, ExpectationFailed, RequestHead, continues

CUT = {"bytes_limit": "the connection passed its bytes (RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_BYTES)",
       "timeout": "the connection passed its time (RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_TIMEOUT)",
       "unscannable_answer": "the answer could not be scanned for the call's secrets",
       "bad_answer": "the server's answer had no whole head within 64 KiB, which the proxy reads to write the call's "
                     "secrets out of it"}
"""The outcomes of a connection the proxy cut at one of its bounds, as its gate's owner is told (rates.py)."""
CLOSED = {"not_tls": "the tunnel carried no TLS: a CONNECT tunnel carries TLS to the host it named, nothing else "
                     "(a ws:// WebSocket or another protocol through it is closed)",
          "no_server_name": "the tunnel's TLS named no server (SNI), where the host its CONNECT named is a name",
          "server_name_mismatch": "the tunnel's TLS asked for another host than the one its CONNECT named"}
"""The outcomes of a tunnel the proxy closed for what it carried (tunnel.py), as its gate's owner is told."""
TOO_LARGE = (f"the request head is over {MAX_HEAD_BYTES // 1024} KiB, the proxy's bound: a URL (or header "
             "fields) that long is refused")
DISCARD_BYTES = 4 << 20
DISCARD_SECONDS = 1.0
"""What the proxy reads and drops of a request head it refused unread (past ``MAX_HEAD_BYTES``), at most, so that
the client reads its answer rather than a reset (Chromium sends URLs of up to 2 MiB)."""


class Refused(Exception):
    """A connection the proxy answers itself: the status, a reason code (the metric's outcome) and a message.
    ``told``: the gate's owner hears of it (False: no request was made — a socket opened ahead and closed, or left,
    without a whole head). ``unread``: the client may still be sending its head: what it sends is read (a bounded
    while) after the answer, so that the client gets the answer, not a reset."""

    def __init__(self, status: int, outcome: str, message: str, *, told: bool = True, unread: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.told = told
        self.unread = unread


def continues_or_refused(head: RequestHead) -> bool:
    """Whether the proxy answers the request's ``Expect: 100-continue`` itself (request_head.continues); a 417 for
    an expectation it does not meet."""
    try:
        return continues(head)
    except ExpectationFailed as failed:
        raise Refused(417, "expectation_failed", str(failed)) from None


def refusal(status: int, outcome: str, message: str) -> bytes:
    """The proxy's own answer to a refused connection; ``X-Egress-Outcome`` names the reason for a program."""
    reason = {400: "Bad Request", 403: "Forbidden", 417: "Expectation Failed", 502: "Bad Gateway"}[status]
    body = f"egress proxy: {message}\n".encode("utf-8", "replace")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nX-Egress-Outcome: {outcome}\r\nConnection: close\r\n\r\n"
            .encode() + body)


async def answer(writer: asyncio.StreamWriter, status: int, message: str, outcome: str) -> None:
    writer.write(refusal(status, message=message, outcome=outcome))
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()


async def discard(reader: asyncio.StreamReader, chunk: int = 64 * 1024) -> None:
    """Read and drop what the client still sends of a head refused unread, at most ``DISCARD_BYTES`` within
    ``DISCARD_SECONDS``: a socket closed with unread bytes is reset, and the client would lose its answer."""
    left = DISCARD_BYTES
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(DISCARD_SECONDS):
            while left > 0 and (read := await reader.read(min(chunk, left))):
                left -= len(read)
