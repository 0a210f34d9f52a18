"""A connection that failed, in words: the one wording of aiohttp's connection errors for every message and log line.

aiohttp words them for its own debugging: ``Cannot connect to host 127.0.0.1:8090 ssl:default [Connect call failed
('127.0.0.1', 8090)]``, where ``ssl:default`` shows for a plain ``http://`` URL too (it names the default of a TLS
option, not a TLS connection) and the cause is in brackets. The upstream check at start, the upstream client's
502, the probe, the demo, the embedder and the web search all say it the same way through here instead:
``cannot connect to 127.0.0.1:8090: Connection refused``.
"""

from __future__ import annotations

import os
import socket


def connection_reason(exc: BaseException) -> str:
    """Why the connection failed, without where (for a message that names the URL itself)."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"its TLS certificate was not accepted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"the TLS handshake failed ({_os_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return f"the host name {exc.host} does not resolve ({_os_reason(exc.os_error)})"
        return _os_reason(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before it answered"
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return str(exc) or type(exc).__name__


def connection_error(exc: BaseException) -> str:
    """``cannot connect to HOST:PORT: WHY`` for a failed connection; for any other failure, why it failed."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {connection_reason(exc)}"
    return connection_reason(exc)


def _os_reason(error: OSError) -> str:
    """The system's words for the error number (``Connection refused``), not Python's ``Connect call failed``."""
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    if error.errno and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__
