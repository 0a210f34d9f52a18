"""``scripts/bench egress``: what masking domain secrets costs the egress proxy, and what it costs everyone else.

A tenant chooses its own ``domain_secrets``, so the masking of answers (sandbox/egress/domain_secrets.py) must cost the
same whatever they are. Two parts, each against its floor in the same run:

- ``masking``: the real egress proxy in this process, over its real Unix socket, relaying ``--mb`` MB from a
  local server to a client: with 32 secrets of 8 KiB on the host (the most a container may have) and without any
  (the floor). MB/s of each, their ratio, and the event loop's worst lag while the masked copy runs.
- ``liveness``: a real sidecar (HTTP door, ``auth: header``, two tenants) whose tenant A runs code in the real
  sandbox downloading ``--download-mb`` MB through the proxy from a container with those 32 secrets, while
  ``/health/ready`` and tenant B's ``POST /v1/responses`` are sent one after another (0.05 s apart). Their p50,
  p95 and max unloaded (the floor) and while the download's bytes are sent (from its first to its last, which the
  proxy has then read: the socket buffers are small), and the ratio of the two p95s.

Ratios are the figures that carry between machines; the milliseconds do not.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp
import orjson
import structlog

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.sandbox.egress.policy import EgressRules, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressProxy

SECRETS, SECRET_CHARS = 32, 8192
PIECE = 64 * 1024
INTERVAL = 0.05
"""Seconds between one probe's answer and its next request."""


def _secret_list(domain: str) -> list[dict[str, str]]:
    return [{"domain": domain, "name": f"K{index}", "value": secrets.token_urlsafe(SECRET_CHARS)[:SECRET_CHARS]}
            for index in range(SECRETS)]


def _text(size: int) -> bytes:
    """``size`` bytes of the secrets' own alphabet (so beginnings of them turn up), no secret in it."""
    block = base64.urlsafe_b64encode(os.urandom(3 * PIECE // 4))
    return (block * (size // len(block) + 1))[:size]


async def _serve_bytes(body: bytes, sending: asyncio.Event | None = None,
                       sent: asyncio.Event | None = None) -> tuple[asyncio.Server, int]:
    """A plain HTTP server answering any request with ``body`` (HTTP/1.0, Content-Length, then closed); ``sending``
    is set as it starts, ``sent`` once the last byte is written (the proxy read it: the socket buffers are small)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if sending is not None:
            sending.set()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body))
        view = memoryview(body)
        for at in range(0, len(body), PIECE):
            writer.write(view[at:at + PIECE])
            await writer.drain()
        writer.close()
        if sent is not None:
            sent.set()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class LoopLag:
    """The event loop's lag: how late a 10 ms sleep wakes, worst case, while it runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - started - 0.01)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _through_proxy(port: int, size: int, with_secrets: bool) -> tuple[float, float]:
    """(MB/s, worst loop lag in ms) of one download of ``size`` bytes through a proxy with or without secrets."""
    policy = parse_policy({"type": "allowlist", "allowed_domains": ["127.0.0.1"],
                           "domain_secrets": _secret_list("127.0.0.1") if with_secrets else []}, "network_policy")
    assert policy is not None
    limits = EgressLimits(call_bytes=4 * size, connection_bytes=2 * size, connection_seconds=3600)
    proxy = EgressProxy(policy, EgressRules.parse(f"127.0.0.1:{port}"), limits, tenant="bench")
    await proxy.start()
    try:
        token = proxy.environment()["K0"] if with_secrets else "none"
        reader, writer = await asyncio.open_unix_connection(proxy.socket_path, limit=PIECE)
        started = time.perf_counter()
        with LoopLag() as lag:
            writer.write(f"GET http://127.0.0.1:{port}/big HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"
                         .encode())
            received = 0
            while piece := await reader.read(PIECE):
                received += len(piece)
        seconds = time.perf_counter() - started
        writer.close()
    finally:
        await proxy.close()
    if received < size:
        raise SystemExit(f"scripts/bench egress: the proxy relayed {received} of {size} bytes")
    return size / seconds / 1e6, lag.worst * 1000


async def masking(size_mb: float) -> dict[str, Any]:
    size = int(size_mb * 1e6)
    server, port = await _serve_bytes(_text(size))
    try:
        plain_rate, plain_lag = await _through_proxy(port, size, with_secrets=False)
        masked_rate, masked_lag = await _through_proxy(port, size, with_secrets=True)
    finally:
        server.close()
    return {"mb": size_mb, "unmasked_mb_s": round(plain_rate, 1), "masked_mb_s": round(masked_rate, 2),
            "masked_over_unmasked": round(masked_rate / plain_rate, 4),
            "loop_lag_unmasked_ms": round(plain_lag, 1), "loop_lag_masked_ms": round(masked_lag, 1)}


def _code(port: int, size: int) -> str:
    return (
        "import os, urllib.request\n"
        f"request = urllib.request.Request('http://127.0.0.1:{port}/big', "
        "headers={'Authorization': 'Bearer ' + os.environ['K0']})\n"
        "received = 0\n"
        "with urllib.request.urlopen(request, timeout=600) as answer:\n"
        "    while piece := answer.read(1 << 20):\n"
        "        received += len(piece)\n"
        f"print('received', received, 'of', {size})\n")


class Probe:
    """Latencies of one kind of request sent every 0.1 s until stopped."""

    def __init__(self, session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                 body: bytes | None = None) -> None:
        self.session, self.method, self.url, self.headers, self.body = session, method, url, headers, body
        self.samples: list[float] = []
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with self.session.request(self.method, self.url, headers=self.headers, data=self.body,
                                                timeout=aiohttp.ClientTimeout(total=120)) as reply:
                    await reply.read()
                    if reply.status != 200:
                        self.failures += 1
            except (TimeoutError, aiohttp.ClientError):
                self.failures += 1
            self.samples.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):  # paces the probe; ends it at once when stopped
                await asyncio.wait_for(stop.wait(), INTERVAL)

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.samples) or [0.0]
        return {"n": len(self.samples), "failures": self.failures,
                "p50_ms": round(statistics.median(ordered) * 1000, 1),
                "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 1),
                "max_ms": round(ordered[-1] * 1000, 1)}


async def _probed(session: aiohttp.ClientSession, url: str, seconds: float | None,
                  during: asyncio.Event | None) -> dict[str, dict[str, float]]:
    health = Probe(session, "GET", f"{url}/health/ready", {})
    other = Probe(session, "POST", f"{url}/v1/responses", {"x-tenant-id": "tenant-b",
                                                            "Content-Type": "application/json"},
                  orjson.dumps({"model": "fake-model", "input": "say hi"}))
    stop = asyncio.Event()
    probes = [asyncio.create_task(probe.run(stop)) for probe in (health, other)]
    if during is not None:
        await during.wait()
    else:
        await asyncio.sleep(seconds or 0)
    stop.set()
    await asyncio.gather(*probes)
    return {"health_ready": health.figures(), "other_tenant_response": other.figures()}


async def liveness(download_mb: float) -> dict[str, Any]:
    size = int(download_mb * 1e6)
    sending, sent = asyncio.Event(), asyncio.Event()
    server, port = await _serve_bytes(_text(size), sending, sent)
    with tempfile.TemporaryDirectory(prefix="rb-bench.egress-") as tmp:
        upstream_port, http_port = free_port(), free_port()
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                   str(upstream_port)], "fake-upstream")
        big = str(4 * size)
        sidecar = ManagedProcess(
            [sys.executable, "-m", "responses_bridge", "serve", "--upstream", f"http://127.0.0.1:{upstream_port}/v1",
             "--http-port", str(http_port), "--no-extproc", "--db", os.path.join(tmp, "bench.db"),
             "--log-level", "warning"], "sidecar",
            env={"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CODE_TIMEOUT": "900",
                 "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{port}",
                 "RESPONSES_BRIDGE_CODE_EGRESS_MAX_BYTES": big, "RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_BYTES": big,
                 "RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_TIMEOUT": "900"})
        url = f"http://127.0.0.1:{http_port}"
        try:
            upstream.start()
            sidecar.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            await wait_http(f"{url}/health", process=sidecar, headers={"x-tenant-id": "tenant-a"})
            async with aiohttp.ClientSession() as session:
                policy = {"type": "allowlist", "allowed_domains": ["127.0.0.1"],
                          "domain_secrets": _secret_list("127.0.0.1")}
                async with session.post(f"{url}/v1/containers", headers={"x-tenant-id": "tenant-a"},
                                        json={"name": "bench", "network_policy": policy}) as made:
                    container = await made.json()
                    if made.status != 200:
                        raise SystemExit(f"scripts/bench egress: the container was refused: {container}")
                unloaded = await _probed(session, url, 3.0, None)
                encoded = base64.b64encode(orjson.dumps({"code": _code(port, size)})).decode()
                request = {"model": "fake-model", "input": f"call python [args64={encoded}]",
                           "include": ["code_interpreter_call.outputs"],
                           "tools": [{"type": "code_interpreter", "container": container["id"]}]}
                download = asyncio.create_task(_post_json(session, f"{url}/v1/responses", request, "tenant-a"))
                download.add_done_callback(lambda _: sent.set())  # a call that fails ends the probes too
                await asyncio.wait([download, asyncio.create_task(sending.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
                started = time.perf_counter()  # the download is under way: its first byte is sent
                loaded = await _probed(session, url, None, sent)
                seconds = time.perf_counter() - started
                answer = await download
        finally:
            sidecar.stop()
            upstream.stop()
            server.close()
    logs = "".join(output.get("logs", "") for item in answer.get("output", [])
                   for output in item.get("outputs") or [] if output.get("type") == "logs")
    if f"received {size} of {size}" not in logs:
        raise SystemExit(f"scripts/bench egress: the download did not complete: {logs[-500:] or answer}")
    ratio = {name: round(loaded[name]["p95_ms"] / max(unloaded[name]["p95_ms"], 0.1), 2) for name in loaded}
    return {"download_mb": download_mb, "download_s": round(seconds, 1), "unloaded": unloaded, "loaded": loaded,
            "p95_loaded_over_unloaded": ratio}


async def _post_json(session: aiohttp.ClientSession, url: str, body: dict[str, Any], tenant: str) -> dict[str, Any]:
    async with session.post(url, json=body, headers={"x-tenant-id": tenant},
                            timeout=aiohttp.ClientTimeout(total=1200)) as reply:
        found: dict[str, Any] = await reply.json()
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench egress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=8.0, help="MB relayed in the masking part")
    parser.add_argument("--download-mb", type=float, default=62.0, help="MB the sandboxed code downloads")
    parser.add_argument("--skip-liveness", action="store_true", help="the masking part only (no sandbox needed)")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # the proxy's lines
    results: dict[str, Any] = {"masking": asyncio.run(masking(args.mb))}
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode(), flush=True)
    if not args.skip_liveness:
        results["liveness"] = asyncio.run(liveness(args.download_mb))
        print(orjson.dumps(results["liveness"], option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
