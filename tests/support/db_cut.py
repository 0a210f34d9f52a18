"""A loopback TCP proxy between one replica and its database that the test can cut and restore: the database
outage an SRE sees at peak (a network blip, a failover), for one replica while the others keep theirs.

Usage (async)::

    async with cut_proxy(database_url) as proxy:
        replica_env = {"RESPONSES_BRIDGE_DATABASE_URL": proxy.url}
        ...
        proxy.cut()      # every open connection reset, new ones reset at once
        await asyncio.sleep(7)
        proxy.restore()  # new connections reach the database again

A cut resets (RST, ``SO_LINGER`` 0) rather than closes: the driver on the far side sees a connection error at once,
as it does when a failover drops its sockets, not a clean end of stream. Connections made while cut are accepted and
reset, so the client's connect fails fast instead of hanging (a hanging connect would test the driver's timeout, not
the store's handling of an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit


class CutProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; :meth:`cut` and :meth:`restore` switch the path off and on."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.is_cut = False
        self.accepted = 0
        self.reset = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this proxy's."""
        parts = urlsplit(database_url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> None:
        """Reset every open connection; reset new ones as they come, until :meth:`restore`."""
        self.is_cut = True
        for writer in list(self._open):
            self._reset(writer)

    def restore(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            self._reset(writer)
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.reset += 1
        writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.is_cut:
            self._reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(writer)
            return
        if self.is_cut:  # cut while connecting
            self._reset(writer)
            self._reset(up_writer)
            return
        self._open.update((writer, up_writer))
        pumps = [asyncio.create_task(self._pump(reader, up_writer, writer)),
                 asyncio.create_task(self._pump(up_reader, writer, up_writer))]
        self._pumps.update(pumps)
        for pump in pumps:
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    source_writer: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:  # one side ended or was reset: so is the other
            for writer in (sink, source_writer):
                if writer in self._open:
                    self._reset(writer)


@contextlib.asynccontextmanager
async def cut_proxy(database_url: str) -> AsyncIterator[CutProxy]:
    """A :class:`CutProxy` to the server of ``database_url``, started; its :attr:`CutProxy.url_for` gives the URL a
    replica should use to go through it."""
    parts = urlsplit(database_url)
    proxy = CutProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
