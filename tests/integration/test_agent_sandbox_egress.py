"""Network policies on the ``agent-sandbox`` backend, end to end through the HTTP door and a real Envoy: a pod's
code reaches the allowed host only through the bridge's egress door, with the credential of its own call (in its
``HTTP(S)_PROXY``); the call's proxy applies the policy and puts a domain secret into the request's headers, over
HTTP and HTTPS, while the pod holds only a placeholder; a request to the door without a live call's credential — no
credential, a guessed one, or one whose call has ended — is a 407 and goes nowhere.

Every pod reaches the door, so a flood of idle connections to it (the sidecar runs with 1,024 descriptors, hard
limit too) is bounded: past the bounds a connection is closed at once, an idle one at the head deadline, ``/health``
answers throughout and a pod's request still goes through.

The stand-in pods share the host's network here (so they reach the door on loopback): what a pod reaches directly
is the cluster's NetworkPolicy's business (the overlay renders it), not tested here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import resource
import socket
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.envoy_config import render_bootstrap
from tests.integration.test_agent_sandbox_e2e import pytestmark as pods_marks
from tests.integration.test_code_interpreter_e2e import logs_of, run_code
from tests.integration.test_egress_e2e import PROBE, SECRET, LoopbackHost, probe
from tests.integration.test_egress_e2e import test_host as egress_test_host
from tests.support.agent_sandbox import FakeCluster, fake_cluster
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, start_envoy
from tests.support.sdk import async_sdk

pytestmark = pods_marks
test_host = egress_test_host
DESCRIPTORS = 1024
HEAD_SECONDS = 5
PER_SOURCE, PENDING = 16, 64  # the defaults of RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_PENDING_{PER_SOURCE,CONNECTIONS}
FULL = b"HTTP/1.1 503"


@dataclass
class Stack:
    cluster: FakeCluster
    sidecar: Sidecar
    envoy: EnvoyProcess
    url: str
    host: LoopbackHost
    door_port: int
    data_dir: Path


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, test_host: LoopbackHost,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    listen_port, door_port = free_port(), free_port()
    data_dir = tmp_path_factory.mktemp("pod-egress")
    async with fake_cluster(network=True) as cluster, running_sidecar(
            str(data_dir), fake_upstream, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1",
            log_file=data_dir / "sidecar.log", wrap=("prlimit", f"--nofile={DESCRIPTORS}:{DESCRIPTORS}", "--"),
            own_sqlite=True, env={**cluster.settings, "RESPONSES_BRIDGE_CODE_TIMEOUT": "15",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_PYTHON": "python3",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_LISTEN": f"127.0.0.1:{door_port}",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_HEAD_SECONDS": str(HEAD_SECONDS),
                 "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS":
                     f"127.0.0.1:{test_host.port}, 127.0.0.1:{test_host.tls_port}",
                 "SSL_CERT_FILE": str(test_host.ca_file)}) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Stack(cluster, sidecar, envoy, f"http://127.0.0.1:{listen_port}", test_host, door_port, data_dir)
        finally:
            envoy.stop()


@pytest.fixture(params=["http", "envoy"])
async def client(request: pytest.FixtureRequest, stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    base = stack.url if request.param == "envoy" else stack.sidecar.http_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=90) as sdk:
        yield sdk


async def run(client: openai.AsyncOpenAI, code: str, container: Any) -> dict[str, Any]:
    response = await client.responses.create(
        model="fake-model", input=run_code(code), include=["code_interpreter_call.outputs"],
        tools=[{"type": "code_interpreter", "container": container}])  # type: ignore[list-item, typeddict-item]
    call = response.output[0]
    assert call.type == "code_interpreter_call" and call.status == "completed", response.output
    logs = logs_of(call)
    return dict(orjson.loads(logs.strip().splitlines()[-1]), _response=response.model_dump_json(), _logs=logs)


def door_request(port: int, token: str | None) -> str:
    """Code that sends one proxy request to the door with ``token`` (None: no credential) and prints the status."""
    auth = "" if token is None else \
        f"Proxy-Authorization: Basic {base64.b64encode(f'sandbox:{token}'.encode()).decode()}\\r\\n"
    return (f"s = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            f"s.sendall(b'GET http://127.0.0.1:1/ HTTP/1.1\\r\\nHost: 127.0.0.1:1\\r\\n{auth}\\r\\n')\n"
            f"answer = s.recv(200).split(b' ')[1].decode()\n")


ALLOW = {"type": "auto", "network_policy": {"type": "allowlist", "allowed_domains": ["127.0.0.1"]}}


async def test_the_allowed_host_is_reached_through_the_door_with_the_call_s_own_credential(
        client: openai.AsyncOpenAI, stack: Stack) -> None:
    host, before = stack.host.port, len(stack.host.seen)
    found = await run(client, probe(f"""
        from urllib.parse import urlsplit
        proxy = urlsplit(os.environ["HTTP_PROXY"])
        {door_request(stack.door_port, None).replace(chr(10), chr(10) + "        ")}
        no_credential = answer
        {door_request(stack.door_port, "guessed-token").replace(chr(10), chr(10) + "        ")}
        guessed = answer
        print(json.dumps({{
            "proxy": [proxy.hostname, proxy.port, proxy.username, proxy.password],
            "allowed": fetch("http://127.0.0.1:{host}/hello"),
            "other_domain": fetch("http://example.com/"),
            "no_credential": no_credential, "guessed": guessed,
        }}))
    """), ALLOW)
    hostname, port, user, token = found["proxy"]
    assert (hostname, port, user) == ("127.0.0.1", stack.door_port, "sandbox") and len(token) >= 32
    assert found["allowed"] == [200, "hello from the test host"] and len(stack.host.seen) == before + 1
    assert "Proxy-Authorization" not in stack.host.seen[-1]  # the credential stops at the door
    assert found["other_domain"] == [403, "denied_domain"]
    assert found["no_credential"] == found["guessed"] == "407"
    # the credential ends with its call: the next call presenting it gets a 407
    later = await run(client, PROBE + door_request(stack.door_port, token) + "print(json.dumps({'old': answer}))\n",
                      ALLOW)
    assert later["old"] == "407"


async def test_a_domain_secret_reaches_the_host_over_http_and_https_and_never_the_pod(
        client: openai.AsyncOpenAI, stack: Stack) -> None:
    policy = {"type": "allowlist", "allowed_domains": ["127.0.0.1"],
              "domain_secrets": [{"domain": "127.0.0.1", "name": "API_KEY", "value": SECRET}]}
    container = await client.containers.create(name="pod secret", network_policy=policy)  # type: ignore[arg-type]
    found = await run(client, probe(f"""
        placeholder = os.environ["API_KEY"]
        seen = files_under("/tmp", "/mnt")
        print(json.dumps({{
            "placeholder": placeholder,
            "answer": fetch("http://127.0.0.1:{stack.host.port}/hello", {{"Authorization": "Bearer " + placeholder}}),
            "tls": fetch("https://127.0.0.1:{stack.host.tls_port}/hello",
                         {{"Authorization": "Bearer " + placeholder}}),
            "found": any(({SECRET[:8]!r} + {SECRET[8:]!r}) in text for text in seen),
            "env": dict(os.environ),
        }}))
    """), container.id)
    assert found["answer"] == [200, "hello from the test host"] and found["tls"] == found["answer"]
    assert [seen["Authorization"] for seen in stack.host.seen[-2:]] == [f"Bearer {SECRET}"] * 2
    assert found["placeholder"] != SECRET and found["found"] is False
    assert SECRET not in orjson.dumps(found["env"]).decode() and SECRET not in found["_response"]
    files = [file.path async for file in client.containers.files.list(container.id)]
    assert files == []  # the call's authority in the pod is not one of the container's files
    assert SECRET not in (stack.data_dir / "sidecar.log").read_text(errors="replace")


async def test_without_a_policy_the_pod_gets_no_proxy(client: openai.AsyncOpenAI) -> None:
    found = await run(client, 'import json, os\nprint(json.dumps({"proxy": os.environ.get("HTTP_PROXY")}))',
                      {"type": "auto"})
    assert found["proxy"] is None


async def health_seconds(url: str, times: int = 20) -> list[float]:
    """How long ``/health`` takes, each time in a connection of its own (a new descriptor for the sidecar)."""
    took = []
    for _ in range(times):
        started = time.monotonic()
        async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as health:
            assert health.status == 200, await health.text()
        took.append(time.monotonic() - started)
    return took


async def _connect(source: str, port: int) -> socket.socket:
    """An idle connection to the door from ``source`` (an address of 127/8), sending nothing."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    with contextlib.suppress(OSError):  # refused or reset while connecting: as good as closed (its state says so)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def _state(sock: socket.socket) -> str:
    """``open`` (nothing came yet), ``full`` (the door's 503: closed at once, past a bound) or ``closed`` (the end
    of the stream with no answer: the head deadline)."""
    try:
        data = sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    return "full" if data.startswith(FULL) else "closed" if not data else "open"


async def test_a_flood_of_idle_connections_to_the_door_is_bounded_and_the_bridge_keeps_answering(
        stack: Stack) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test process holds the flood's 1,100 ends
    sources = [f"127.0.0.{last}" for last in range(2, 13)]
    flood: list[tuple[str, socket.socket]] = []
    alone = await health_seconds(stack.sidecar.http_url)
    try:
        for source in sources:  # 1,100 idle connections, more than the 1,024 descriptors the sidecar has
            flood += [(source, sock) for sock in await asyncio.gather(
                *(_connect(source, stack.door_port) for _ in range(100)))]
        await asyncio.sleep(0.5)  # the door's 503s on their way
        states = Counter(_state(sock) for _, sock in flood)
        held = Counter(source for source, sock in flood if _state(sock) == "open")
        # past the bounds, connections were closed at once, with the door's 503 (the deadline's close has none)
        assert states["open"] <= PENDING and max(held.values(), default=0) <= PER_SOURCE, (states, held)
        assert states["full"] >= len(flood) - PENDING, states
        flooded = await health_seconds(stack.sidecar.http_url)  # answers, each in a fresh connection

        async def keep_flooding() -> None:  # the sources keep the door's pending connections full meanwhile
            while True:
                for source in sources:
                    flood.extend((source, sock) for sock in await asyncio.gather(
                        *(_connect(source, stack.door_port) for _ in range(PER_SOURCE))))
                kept = [(source, sock) for source, sock in flood if _state(sock) == "open"]
                for _, sock in flood:
                    if _state(sock) != "open":
                        sock.close()
                flood[:] = kept
                await asyncio.sleep(0.2)

        flooding = asyncio.create_task(keep_flooding())
        try:  # a pod (another source, holding nothing pending) still gets its request through
            async with async_sdk(base_url=f"{stack.sidecar.http_url}/v1", api_key="sk-client",
                                          max_retries=0, timeout=90) as client:
                found = await run(client, probe(f"""
                    print(json.dumps({{"allowed": fetch("http://127.0.0.1:{stack.host.port}/hello")}}))
                """), ALLOW)
            assert found["allowed"] == [200, "hello from the test host"]
            assert sum(_state(sock) == "open" for _, sock in flood) > 0  # the flood was held while it ran
        finally:
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)
        for _, sock in flood:
            sock.close()
        flood.clear()
        print(f"\n/health under 1,100 idle connections to the door: median {statistics.median(flooded) * 1000:.1f} ms, "
              f"{statistics.median(flooded) / statistics.median(alone):.2f} x alone")

        # an idle connection within the bounds is closed at the head deadline, with no answer
        started = time.monotonic()
        idle = await _connect("127.0.0.13", stack.door_port)
        flood.append(("127.0.0.13", idle))
        while _state(idle) == "open":
            await asyncio.sleep(0.1)
        assert _state(idle) == "closed" and time.monotonic() - started >= HEAD_SECONDS
    finally:
        for _, sock in flood:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
