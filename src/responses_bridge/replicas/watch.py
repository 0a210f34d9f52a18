"""Off the request path: each replica's ``/metrics`` read, the replicas taken out probed back in, and a DNS name
re-resolved to all its addresses — one task per replicated upstream, every :data:`SCRAPE_SECONDS`.

**Metrics.** A replica's own report of its load, where it has one (vLLM's Prometheus names, summed over its
``model_name`` labels): ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
(``vllm:gpu_cache_usage_perc`` on older servers). A replica without ``/metrics`` (a 404, not Prometheus text) is
asked again only every :data:`NO_METRICS_SECONDS`; its load is the bridge's own count of calls in flight. A value
older than :data:`STALE_SECONDS` (the replica stopped answering) is dropped, never trusted.

**Probes.** A replica taken out (a refused connection, a failure) is probed when its retry time comes: a TCP
connection to its address; accepted, it is back in (its first call confirms it; another failure doubles its time
out). Calls themselves probe too (picker.py): the first call after the retry time may go to it.

**DNS** (``discover: dns``): the name of the upstream's URL resolved to every address (A and AAAA, a Kubernetes
headless Service's pods) every ``dns_refresh_seconds``; each address is a replica with the URL's scheme, port and
path. An answer that fails or is empty keeps the replicas as they were (a DNS hiccup takes no server out).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
from prometheus_client.parser import text_string_to_metric_families

from .picker import ReplicaSet
from .replica import Replica

SCRAPE_SECONDS = 2.0
NO_METRICS_SECONDS = 60.0
STALE_SECONDS = 10.0
SCRAPE_TIMEOUT = 1.0
MAX_METRICS_BYTES = 4 * 1024 * 1024
"""A replica's ``/metrics`` read at most (vLLM's is some 100 KiB): past it, not read."""
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")

log = structlog.get_logger("responses_bridge.replicas")


def read_metrics(text: str) -> tuple[float | None, float | None, float | None]:
    """(running, waiting, kv usage) of a Prometheus text page; None for each the page does not have. ValueError:
    not Prometheus text."""
    running: float | None = None
    waiting: float | None = None
    usage: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name not in (RUNNING, WAITING, *KV_USAGE):
            continue
        values = [sample.value for sample in family.samples if sample.name == family.name]
        if not values:
            continue
        if family.name == RUNNING:
            running = sum(values)
        elif family.name == WAITING:
            waiting = sum(values)
        else:
            usage = max(values) if usage is None else max(usage, max(values))
    return running, waiting, usage


def metrics_url(base: str) -> str:
    """A replica's ``/metrics``, at the root of its origin (``http://host:8000/v1`` -> ``http://host:8000/metrics``)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


def with_address(url: str, address: str) -> str:
    """``url`` with its host replaced by ``address`` (an IPv6 address in brackets), port and path kept."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    if "@" in parts.netloc:
        netloc = f"{parts.netloc.rpartition('@')[0]}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Watch:
    """The periodic work of one replica set (see the module's docstring)."""

    def __init__(self, replicas: ReplicaSet, *, dns_url: str | None = None, dns_refresh: float = 10.0,
                 every: float = SCRAPE_SECONDS) -> None:
        self.replicas = replicas
        self.dns_url = dns_url
        self.dns_refresh = dns_refresh
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._no_metrics: dict[str, float] = {}  # replica key -> when to ask again
        self._scraped_at: dict[str, float] = {}
        self._resolved_at = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"replicas-{self.replicas.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watch must outlive any one bad answer
                log.exception("replica_watch_failed", upstream=self.replicas.name)
            await asyncio.sleep(self.every)

    async def once(self) -> None:
        """One round: DNS when due, then every replica's metrics or probe, at once."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))
        now = time.monotonic()
        if self.dns_url is not None and now - self._resolved_at >= self.dns_refresh:
            self._resolved_at = now
            await self.resolve()
        await asyncio.gather(*(self._look(replica) for replica in list(self.replicas.replicas)))

    async def resolve(self) -> None:
        assert self.dns_url is not None
        parts = urlsplit(self.dns_url)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or None,
                                                                 type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("replica_dns_failed", upstream=self.replicas.name, host=parts.hostname, error=str(exc))
            return
        addresses = sorted({str(info[4][0]) for info in found})
        if addresses:
            self.replicas.set_urls(with_address(self.dns_url, address) for address in addresses)

    async def _look(self, replica: Replica) -> None:
        now = self.replicas.clock()
        if replica.down:
            if replica.retry_at <= now and await self._accepts(replica):
                replica.bring_back()
            return
        if self._no_metrics.get(replica.key, 0.0) > time.monotonic():
            self._forget(replica)
            return
        await self._scrape(replica)

    async def _accepts(self, replica: Replica) -> bool:
        parts = urlsplit(replica.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), SCRAPE_TIMEOUT)
        except (OSError, TimeoutError):
            replica.take_out(self.replicas.clock(), "probe_refused")
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _scrape(self, replica: Replica) -> None:
        assert self._session is not None
        try:
            async with self._session.get(metrics_url(replica.url)) as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
                text = (await response.content.read(MAX_METRICS_BYTES)).decode("utf-8", "replace")
            running, waiting, usage = read_metrics(text)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeError):
            self._no_metrics[replica.key] = time.monotonic() + NO_METRICS_SECONDS
            self._forget(replica)
            return
        if running is None and waiting is None and usage is None:
            self._no_metrics[replica.key] = time.monotonic() + NO_METRICS_SECONDS
        replica.scraped_running, replica.scraped_waiting, replica.kv_usage = running, waiting, usage
        self._scraped_at[replica.key] = time.monotonic()

    def _forget(self, replica: Replica) -> None:
        at = self._scraped_at.get(replica.key)
        if at is not None and time.monotonic() - at > STALE_SECONDS:
            replica.scraped_running = replica.scraped_waiting = replica.kv_usage = None
