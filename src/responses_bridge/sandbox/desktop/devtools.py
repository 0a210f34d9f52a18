"""Chromium's DevTools protocol over ``--remote-debugging-pipe``: the desktop process's one connection to its
browser (page.py reads and fills pages with it, masking.py masks them).

Sent as source with agent.py (first of the desktop process's files: the standard library only, no import of the
bridge), never imported by the bridge. The browser reads DevTools messages from its fd 3 and writes them to its fd
4, each a JSON text ended by a NUL byte; :func:`browser_pipes` makes the two pipes and :func:`piped` the command that
puts their ends there (bash's redirections: Python's ``subprocess`` keeps a file descriptor's number but cannot
choose it). No port is opened: nothing else in the call, the page least of all, can speak to the browser this way.

Strict and bounded: each call waits at most its timeout (a late answer is dropped by its id), a message is at most
:data:`MAX_MESSAGE` bytes, and of the events only paused requests (``Fetch.requestPaused``: a sign-in's submission
watched) are kept, at most :data:`MAX_EVENTS`.
"""

import contextlib
import fcntl
import json
import os
import select
import time

MAX_MESSAGE = 1 << 22
MAX_EVENTS = 512
"""Paused requests kept between two reads while a sign-in is guarded: a bound; one more is failed at once (never
dropped: a paused request left unanswered would go on unchecked when the watch ends)."""


class DevToolsError(Exception):
    """The browser answered with an error, too late, or not at all."""


def browser_pipes() -> tuple[tuple[int, int], tuple[int, int]]:
    """((the browser's read end, the browser's write end), (ours to write, ours to read)); the browser's ends at
    numbers above 9 (they are moved to 3 and 4 by :func:`piped`), every end close-on-exec but as passed."""
    to_read, to_write = os.pipe()
    from_read, from_write = os.pipe()
    theirs = []
    for end in (to_read, from_write):
        theirs.append(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(end)
    return (theirs[0], theirs[1]), (to_write, from_read)


def piped(command: list[str], ends: tuple[int, int]) -> list[str]:
    """``command`` started with ``ends`` as its fds 3 (it reads) and 4 (it writes), and those numbers closed."""
    read, write = ends
    return ["/bin/bash", "-c", f'exec "$@" 3<&{read} 4>&{write} {read}<&- {write}>&-', "browser", *command]


def url_origin(url: object) -> str:
    """``scheme://host[:port]`` of an http(s) or ws(s) URL as the browser writes a ``securityOrigin`` (the default
    port left out), or ``null``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(url))
        port = parts.port
    except ValueError:
        return "null"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return "null"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if scheme in ("https", "wss") else 80
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


class DevTools:
    """One DevTools connection over the pipes, used from one thread: a request, then its answer. Events are
    dropped, but ``Fetch.requestPaused`` ones (a guarded submission's requests), kept for :meth:`events`."""

    def __init__(self, write: int, read: int) -> None:
        self._write = write
        self._read = read
        self._buffer = b""
        self._last = 0
        self._events: list[dict] = []

    def close(self) -> None:
        for end in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(end)

    def call(self, method: str, params: dict, session: str = "", timeout: float = 1.0) -> dict:
        sent = self._send(method, params, session)
        until = time.monotonic() + timeout
        while True:
            answer = self._next(until, method, timeout)
            if answer.get("id") == sent:
                if "error" in answer:
                    raise DevToolsError(f"{method}: {str(answer['error'].get('message', ''))[:200]}")
                return answer.get("result") or {}

    def _send(self, method: str, params: dict, session: str) -> int:
        """Send one request; its id."""
        self._last += 1
        message: dict[str, object] = {"id": self._last, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._write, data):]
        except OSError as error:
            raise DevToolsError(f"the browser's pipe is closed ({error.strerror})") from None
        del message, data  # a sign-in's values, in a fill's expression
        return self._last

    def events(self, wait: float) -> list[dict]:
        """The kept events: every one the browser has sent so far, waiting at most ``wait`` seconds for one when
        none is."""
        until = time.monotonic() + wait
        with contextlib.suppress(DevToolsError):
            self._next(time.monotonic(), "", 0.0, drain=True)  # whatever was sent already, without waiting
            while not self._events and time.monotonic() < until:
                self._next(until, "", wait)
        found, self._events = self._events, []
        return found

    def _next(self, until: float, method: str, timeout: float, drain: bool = False) -> dict:
        """The next answer from the browser (an event kept on the way); :class:`DevToolsError` past ``until``."""
        while True:
            while b"\0" in self._buffer:
                frame, _, self._buffer = self._buffer.partition(b"\0")
                try:
                    answer = json.loads(frame)
                except ValueError:
                    raise DevToolsError("the browser sent something that is not JSON") from None
                if not isinstance(answer, dict):
                    continue
                if answer.get("method") == "Fetch.requestPaused":
                    if len(self._events) < MAX_EVENTS:
                        self._events.append(answer)
                    else:  # past the bound: failed, never left paused
                        self._send("Fetch.failRequest", {"requestId": answer.get("params", {}).get("requestId"),
                                                         "errorReason": "BlockedByClient"},
                                   str(answer.get("sessionId", "")))
                    if not method and not drain:
                        return answer
                elif "id" in answer and not drain:
                    return answer
            left = until - time.monotonic()
            if not select.select([self._read], [], [], max(left, 0.0))[0]:
                if drain:
                    return {}
                raise DevToolsError(f"{method or 'an event'}: no answer within {timeout:g} s")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise DevToolsError("the browser closed its pipe")
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE:
                raise DevToolsError("a message from the browser is too large")
