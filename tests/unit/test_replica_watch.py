"""The replicas' watch over real sockets (replicas/watch.py): a replica's vLLM ``/metrics`` read into its load, a
replica without metrics left alone, a replica taken out probed back in once its port accepts again, and a DNS name
resolved to all its addresses."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from responses_bridge.demo.procs import free_port
from responses_bridge.replicas.picker import ReplicaSet
from responses_bridge.replicas.watch import Watch
from tests.unit.test_replica_picker import VLLM_METRICS


@pytest.fixture
async def vllm() -> AsyncIterator[str]:
    """A server answering ``/metrics`` as vLLM does; its ``/v1`` base URL."""
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=VLLM_METRICS)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_metrics_are_read_and_a_server_without_them_is_left_alone(vllm: str) -> None:
    silent = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: no metrics, and nothing to trust
    replicas = ReplicaSet("w", [vllm, silent])
    watch = Watch(replicas)
    await watch.once()
    await watch.stop()
    reporting, quiet = replicas.replicas
    assert (reporting.scraped_running, reporting.scraped_waiting, reporting.kv_usage) == (5.0, 7.0, 0.42)
    assert reporting.load() == 12.0  # its own report says more than the bridge's calls in flight
    assert (quiet.scraped_running, quiet.kv_usage) == (None, None) and quiet.load() == 0.0


async def test_a_replica_taken_out_is_probed_back_in(vllm: str) -> None:
    replicas = ReplicaSet("w", [vllm, f"http://127.0.0.1:{free_port()}/v1"])
    watch = Watch(replicas)
    back, dead = replicas.replicas
    now = replicas.clock()
    back.take_out(now - 10, "refused")
    dead.take_out(now - 10, "refused")
    await watch.once()  # both due: the one whose port accepts is back, the other out for longer
    await watch.stop()
    assert not back.down and dead.down and dead.retry_at > now


async def test_a_name_resolves_to_all_its_addresses() -> None:
    replicas = ReplicaSet("w", ["http://localhost:8000/v1"])
    watch = Watch(replicas, dns_url="http://localhost:8000/v1", dns_refresh=60)
    await watch.resolve()
    expected = {info[4][0] for info in socket.getaddrinfo("localhost", 8000, type=socket.SOCK_STREAM)}
    urls = {replica.url for replica in replicas.replicas}
    assert urls == {f"http://[{a}]:8000/v1" if ":" in a else f"http://{a}:8000/v1" for a in expected}
    watch.dns_url = "http://no-such-name.invalid:8000/v1"
    await watch.resolve()  # a failed answer keeps the replicas as they were
    assert {replica.url for replica in replicas.replicas} == urls
