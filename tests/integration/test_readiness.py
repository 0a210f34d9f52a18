"""Readiness of a real ``responses-bridge serve`` process, as Kubernetes and Envoy see it: during start (never
ready before the store is open and migrated), and during the SIGTERM drain (unready at once, on the HTTP door and
the gRPC health service, while live streams are still being carried). The stalled-store case is in
tests/unit/test_store_integrity.py, where a write can be held deliberately."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from responses_bridge.adapters.http.app import create_app
from responses_bridge.config.settings import Settings
from responses_bridge.demo.procs import free_port
from responses_bridge.store import SQLiteResponseStore
from tests.support.bridge import running_sidecar, start_sidecar
from tests.support.runtime import runtime_over
from tests.support.sidecar_state import schema_is_latest

BOUND_SECONDS = 60  # a deadline that turns a hang into a failure; nothing here is timed
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def grpc_status(port: int) -> int | None:
    """The processor's health as Envoy's health check asks it; None while the port does not answer."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="envoy.service.ext_proc.v3.ExternalProcessor"), timeout=2)
        except grpc.aio.AioRpcError:
            return None
        return reply.status


async def test_a_starting_process_is_never_ready_before_its_store_is_migrated(tmp_path: Path,
                                                                              fake_upstream: str) -> None:
    """Polled from the moment it is spawned: each answer of /health/ready is either a 503 naming the store, or a
    200 given when the database file is already at the latest schema; gRPC SERVING likewise."""
    process, http_port, extproc_port = start_sidecar(str(tmp_path), fake_upstream, new_database=True)
    db = tmp_path / f"bridge-{http_port}.db"
    answers: list[int] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                asyncio.timeout(BOUND_SECONDS):
            while True:
                assert process.alive(), "the sidecar exited during start"
                try:
                    async with session.get(f"http://127.0.0.1:{http_port}/health/ready") as response:
                        body = await response.json()
                        answers.append(response.status)
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
                    continue
                if response.status == 503:
                    assert "store_open" in body["failed"], body
                    continue
                assert response.status == 200 and body["status"] == "ready", body
                assert schema_is_latest(str(db))  # ready means migrated
                break
            async with session.get(f"http://127.0.0.1:{http_port}/health/live") as response:
                assert response.status == 200 and (await response.json()) == {"status": "live"}
            while (status := await grpc_status(extproc_port)) != SERVING:
                assert status in (None, NOT_SERVING)
                await asyncio.sleep(0.02)
            assert schema_is_latest(str(db))
    finally:
        process.stop()
    assert answers and answers[-1] == 200


async def test_ready_needs_an_open_store(tmp_path: Path) -> None:
    """The check itself, on a door served over a store that is not open yet (and then is)."""
    from aiohttp import web

    store = SQLiteResponseStore(str(tmp_path / "later.db"))
    runner = web.AppRunner(create_app(runtime_over(settings=Settings(), store=store)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/health/ready") as response:
                body = await response.json()
                assert response.status == 503 and body["status"] == "not_ready"
                assert body["failed"] == ["store_open", "store_writes"] and body["checks"]["not_draining"]["ok"]
            async with session.get(f"http://127.0.0.1:{port}/health/live") as response:
                assert response.status == 200
            await store.open()
            async with session.get(f"http://127.0.0.1:{port}/health/ready") as response:
                assert response.status == 200 and (await response.json())["failed"] == []
    finally:
        await store.close()
        await runner.cleanup()


async def test_sigterm_turns_readiness_503_while_streams_still_run(tmp_path: Path, fake_upstream: str) -> None:
    """Kubernetes must stop sending traffic before the drain ends any stream: right after SIGTERM, /health/ready
    is 503 (``not_draining``) and the gRPC health check fails while a stream is still live; /health/live stays 200;
    new work gets 503 ``server_shutting_down``. The stream then ends with ``server_shutdown``."""
    env = {"RESPONSES_BRIDGE_DRAIN_TIMEOUT": "5"}
    async with running_sidecar(str(tmp_path), fake_upstream, env=env) as sidecar:
        base = sidecar.http_url
        async with aiohttp.ClientSession() as session, asyncio.timeout(BOUND_SECONDS):
            async with session.get(f"{base}/health/ready") as response:
                assert response.status == 200
            assert await grpc_status(sidecar.extproc_port) == SERVING
            stream = await session.post(f"{base}/v1/responses", json={
                "model": "fake", "input": "long [chunks=600] [delay=100]", "stream": True})
            assert stream.status == 200
            first = await stream.content.readuntil(b"\n\n")
            assert b"response.created" in first
            os.kill(sidecar.process.pid, signal.SIGTERM)
            while True:
                async with session.get(f"{base}/health/ready") as response:
                    if response.status == 503:
                        body = await response.json()
                        break
                    assert response.status == 200
                await asyncio.sleep(0.02)
            assert body["failed"] == ["not_draining"] and body["checks"]["store_open"]["ok"]
            assert not stream.content.at_eof()  # the stream is still being carried
            async with session.get(f"{base}/health/live") as response:
                assert response.status == 200
            # the processor's health check fails too: NOT_SERVING, or no answer once the gRPC server has stopped
            # taking new calls (its own drain); Envoy counts either as unhealthy
            while await grpc_status(sidecar.extproc_port) == SERVING:
                await asyncio.sleep(0.05)
            async with session.post(f"{base}/v1/responses", json={"model": "fake", "input": "late"}) as response:
                assert response.status == 503
                assert (await response.json())["error"]["code"] == "server_shutting_down"
            rest = await stream.content.read()
            stream.release()
            assert b'"message":"server_shutdown: ' in rest and rest.rstrip().endswith(b"data: [DONE]")
