"""The answers the egress proxy gives itself (proxy.py): a refused connection's status and reason, and what the
owner of a call's gate is told of a connection cut at one of the proxy's bounds (rates.py's ``EgressOwner``)."""

from __future__ import annotations

import asyncio
import contextlib

from .request_head import ExpectationFailed, RequestHead, continues

CUT = {"bytes_limit": "the connection passed its bytes (RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_BYTES)",
       "timeout": "the connection passed its time (RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_TIMEOUT)",
       "unscannable_answer": "the answer could not be scanned for the call's secrets"}
"""The outcomes of a connection the proxy cut at one of its bounds, as its gate's owner is told (rates.py)."""


class Refused(Exception):
    """A connection the proxy answers itself: the status, a reason code (the metric's outcome) and a message."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


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
