"""The routing benchmark's processes for one configuration: four simulated vLLM replicas (one process,
tools/fakes/vllm_replica.py), optionally an Envoy in front of them balancing by its own policy, and a sidecar
(``serve``, HTTP door) whose upstream is either every replica (the bridge picks) or the one URL in front.

How each configuration is built (``Config``):

- ``cache``: ``serve --upstream R1 --upstream R2 ...`` (the bridge's replicas, its default picking); the bridge's
  other policies (``bridge-round-robin``, ``bridge-least-request``): the replicas as one entry of
  ``RESPONSES_BRIDGE_UPSTREAMS`` with ``urls`` and ``picking``;
- ``round-robin`` and ``least-request``: ``serve --upstream F``, F a plain Envoy with one ``STATIC`` cluster of the
  four replicas, ``lb_policy: ROUND_ROBIN`` or ``LEAST_REQUEST`` (power of two choices over active requests), one
  worker thread so its counts are exact: a Kubernetes Service or a mesh in front of vLLM, the deployment of today;
- ``oracle``: the replicas started ``--oracle`` (one unbounded cache shared by all: every block any of them computed
  is a hit) behind Envoy's round robin (load even to the request).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import aiohttp

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http


@dataclass(frozen=True)
class Config:
    """One configuration measured: its name, who picks (``bridge`` or ``envoy``) and with which policy."""

    name: str
    picker: str
    policy: str
    oracle: bool = False

    def describe(self) -> str:
        if self.oracle:
            return "one shared unbounded cache on every replica, Envoy's round robin in front (load even)"
        if self.picker == "envoy":
            return f"one URL: Envoy {self.policy.upper()} over the replicas, the bridge's single upstream"
        if self.policy == "cache":
            return "the bridge's picking (cache, the default): every replica an --upstream"
        return f"the bridge's picking: {self.policy} (RESPONSES_BRIDGE_UPSTREAMS: urls and picking)"


CONFIGS = {
    "cache": Config("cache", "bridge", "cache"),
    "round-robin": Config("round-robin", "envoy", "round_robin"),
    "least-request": Config("least-request", "envoy", "least_request"),
    "bridge-round-robin": Config("bridge-round-robin", "bridge", "round_robin"),
    "bridge-least-request": Config("bridge-least-request", "bridge", "least_request"),
    "oracle": Config("oracle", "envoy", "round_robin", oracle=True),
}


@dataclass
class Replicas:
    """The simulator's timing and size, as ``tools.fakes.vllm_replica``'s options."""

    count: int = 4
    prefill_ms: float = 0.2
    decode_ms: float = 15.0
    max_batch: int = 32
    capacity_blocks: int = 8000
    stream_tokens: int = 8
    trace_dir: str | None = None

    def argv(self, ports: list[int], oracle: bool, name: str) -> list[str]:
        trace = ["--trace", os.path.join(self.trace_dir, f"{name}.jsonl")] if self.trace_dir else []
        return [sys.executable, "-m", "tools.fakes.vllm_replica", "--ports", *map(str, ports), *trace,
                "--prefill-ms", str(self.prefill_ms), "--decode-ms", str(self.decode_ms),
                "--max-batch", str(self.max_batch), "--capacity-blocks", str(self.capacity_blocks),
                "--stream-tokens", str(self.stream_tokens), *(["--oracle"] if oracle else [])]


def envoy_front(listen: int, admin: int, ports: list[int], policy: str) -> dict[str, Any]:
    """A plain Envoy proxying every request to one cluster of the replicas, balanced by ``policy``; no timeout
    (turns wait in the replicas' queues), circuit breakers out of the way."""
    endpoints = [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                 for port in ports]
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "front",
        "stream_idle_timeout": "0s",
        "route_config": {"virtual_hosts": [{"name": "replicas", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "replicas", "timeout": "0s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    limits = {"max_connections": 100_000, "max_pending_requests": 100_000, "max_requests": 100_000}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "front", "address": {"socket_address": {"address": "127.0.0.1",
                                                                           "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": manager}]}]}],
            "clusters": [{"name": "replicas", "type": "STATIC", "connect_timeout": "2s",
                          "lb_policy": policy.upper(), "circuit_breakers": {"thresholds": [limits]},
                          "load_assignment": {"cluster_name": "replicas", "endpoints": [{"lb_endpoints": endpoints}]}}],
        },
    }


class Fleet:
    """The processes of one configuration, started and stopped together (``async with``)."""

    def __init__(self, config: Config, replicas: Replicas, sidecar_env: dict[str, str],
                 sidecar_args: list[str]) -> None:
        self.config = config
        self.replicas = replicas
        self.sidecar_env = sidecar_env
        self.sidecar_args = sidecar_args
        self.processes: list[ManagedProcess] = []
        self.replica_urls: list[str] = []
        self.responses_url = ""
        self._tmp = tempfile.TemporaryDirectory(prefix="rb-routing-")

    async def __aenter__(self) -> Fleet:
        try:
            await self._start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        ports = [free_port() for _ in range(self.replicas.count)]
        self.replica_urls = [f"http://127.0.0.1:{port}" for port in ports]
        sim = self._spawn(self.replicas.argv(ports, self.config.oracle, self.config.name), "replicas")
        for url in self.replica_urls:
            await wait_http(f"{url}/health", process=sim)
        env = dict(self.sidecar_env)
        if self.config.picker == "envoy":
            listen, admin = free_port(), free_port()
            path = os.path.join(self._tmp.name, "front.json")
            with open(path, "w") as file:
                json.dump(envoy_front(listen, admin, ports, self.config.policy), file)
            front = self._spawn([envoy_binary(), "-c", path, "--concurrency", "1", "--log-level", "error",
                                 "--base-id", str(listen)], "envoy")
            await wait_http(f"http://127.0.0.1:{admin}/ready", process=front)
            upstreams = ["--upstream", f"http://127.0.0.1:{listen}/v1"]
        else:
            urls = [f"{url}/v1" for url in self.replica_urls]
            if self.config.policy == "cache":  # the default: several --upstream, as an operator would start it
                upstreams = [arg for url in urls for arg in ("--upstream", url)]
            else:
                upstreams = []
                env.setdefault("RESPONSES_BRIDGE_UPSTREAMS", json.dumps([{
                    "name": "replicas", "url": urls[0], "urls": urls, "picking": self.config.policy}]))
                env.setdefault("RESPONSES_BRIDGE_DEFAULT_UPSTREAM", "replicas")
        http_port = free_port()
        sidecar = self._spawn([sys.executable, "-m", "responses_bridge", "serve", *upstreams,
                               "--http-port", str(http_port), "--extproc-port", str(free_port()), "--no-extproc",
                               "--db", os.path.join(self._tmp.name, "bench.db"), "--log-level", "error",
                               *self.sidecar_args], "sidecar", env=env)
        await wait_http(f"http://127.0.0.1:{http_port}/health", timeout=60, process=sidecar)
        self.responses_url = f"http://127.0.0.1:{http_port}/v1/responses"

    def _spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> ManagedProcess:
        process = ManagedProcess(argv, name, env=env or None)
        process.start()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self._tmp.cleanup()

    async def replica_stats(self) -> list[dict[str, Any]]:
        """Each replica's counters (``/sim/stats``)."""
        async with aiohttp.ClientSession() as http:
            stats = []
            for url in self.replica_urls:
                async with http.get(f"{url}/sim/stats") as response:
                    stats.append(await response.json())
            return stats
