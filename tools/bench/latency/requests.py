"""The requests of ``responses-bridge bench`` and its A/B mode: the bodies asked of the bridge and of the
upstream, one timed request, and the wait for Envoy's processor clusters to be healthy."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess


async def wait_healthy(admin_port: int, clusters: tuple[str, ...], processes: tuple[ManagedProcess, ...],
                        timeout: float = 30.0) -> None:
    """Until Envoy's health checks pass for both processors: a processor that started after Envoy's first check
    is marked down for a check interval, and the first requests would get 503s."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{admin_port}/clusters") as response:
                lines = (await response.text()).splitlines()
            down = [name for name in clusters
                    if not any(line.startswith(f"{name}::") and line.endswith("::health_flags::healthy")
                               for line in lines)]
            if not down:
                return
            for process in processes:
                if not process.alive():
                    raise process.exited_early()
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy's processor clusters {down} were not healthy after {timeout:.0f} s")
            await asyncio.sleep(0.1)


def synthetic_body(responses_api: bool, stream: bool, chunks: int, directives: str = "") -> bytes:
    text = f"[chunks={chunks}]{directives} benchmark" if stream else f"{directives.strip()} benchmark".strip()
    if responses_api:
        return orjson.dumps({"model": "fake-model", "input": text, "stream": stream})
    body: dict = {"model": "fake-model", "messages": [{"role": "user", "content": text}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


async def post(session: aiohttp.ClientSession, url: str, body: bytes, name: str = "") -> float:
    """One request, its answer read whole; milliseconds taken. Anything but a 200 stops the benchmark."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        async for _ in response.content.iter_any():
            pass
        if response.status != 200:
            raise RuntimeError(f"{name or url}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000
