"""A new user's first minutes, with real processes: a dead upstream is reported at start, a bootstrap pointed at
the wrong HTTP door or the wrong processor says so (and fails a smoke test of the model list), and the SDK example
the demo prints runs as printed."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess

import aiohttp
import orjson
import pytest

from responses_bridge.demo.command import sdk_example
from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import render_bootstrap
from tests.support import zygote
from tests.support.bridge import PYTHON, Sidecar
from tests.support.envoy import start_envoy

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


async def test_an_unreachable_upstream_is_reported_at_start(tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = zygote.popen([PYTHON, "-m", "responses_bridge", "serve", "--upstream", dead, "--no-extproc",
                                "--http-port", str(free_port()), "--db", ":memory:"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while "upstream_unreachable" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert asyncio.get_running_loop().time() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    warning = next(line for line in log_path.read_text().splitlines() if "upstream_unreachable" in line)
    assert f"{dead}/models" in warning and '"level": "warning"' in warning


async def test_configured_upstreams_are_the_ones_named_at_start(tmp_path) -> None:
    """With an ``upstreams:`` list, the ``serving`` line lists those upstreams (not the unused ``--upstream``
    default), and a dead one's warning names the configuration file it came from."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = tmp_path / "bridge.yaml"
    config.write_text(f"upstreams:\n  - {{name: local-vllm, url: '{dead}', profile: vllm}}\n"
                      "default_upstream: local-vllm\n")
    log_path = tmp_path / "serve.log"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("RESPONSES_BRIDGE_") and key != "OPENAI_BASE_URL"}
    with open(log_path, "wb") as log:
        process = zygote.popen([PYTHON, "-m", "responses_bridge", "serve", "--config", str(config),
                                "--no-extproc", "--http-port", str(free_port()), "--db", ":memory:"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while "upstream_unreachable" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert asyncio.get_running_loop().time() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = [orjson.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    serving = next(line for line in lines if line["event"] == "serving")
    assert serving["upstreams"] == [{"name": "local-vllm", "url": dead, "mode": "translate", "profile": "vllm"}]
    # not the default --upstream's address anywhere (a bare "8090" was, once: in a timestamp's microseconds)
    assert "127.0.0.1:8090" not in log_path.read_text()
    warning = next(line for line in lines if line["event"] == "upstream_unreachable")
    assert warning["upstream"] == "local-vllm" and f"upstreams[0] in the configuration file {config}" in warning["hint"]
    assert "RESPONSES_BRIDGE_UPSTREAM " not in warning["hint"]


@pytest.mark.envoy
async def test_envoy_pointed_at_the_wrong_http_door_says_so(sidecar: Sidecar) -> None:
    listen_port, wrong_port = free_port(), free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=sidecar.extproc_port,
                                               http_port=wrong_port, upstream=sidecar.upstream_url, admin_port=0))
    try:
        async with (aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{listen_port}/v1/responses/resp_123") as answer):
            status, body = answer.status, await answer.json()
    finally:
        envoy.stop()
    assert status == 503
    assert body["error"]["code"] == "sidecar_unavailable"
    assert f"--http-port {wrong_port}" in body["error"]["message"]


@pytest.mark.envoy
async def test_envoy_pointed_at_the_wrong_processor_says_so_and_fails_the_smoke_test(sidecar: Sidecar) -> None:
    """A bootstrap rendered for another ext_proc port: a Responses request gets a 503 that names where Envoy looked
    and the flag that would put the processor there, and ``GET /v1/models`` (what a smoke test asks) fails the
    same way instead of answering 200 from the upstream."""
    listen_port, wrong_port = free_port(), free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=wrong_port,
                                               http_port=int(sidecar.http_url.rsplit(":", 1)[1]),
                                               upstream=sidecar.upstream_url, admin_port=0))
    base = f"http://127.0.0.1:{listen_port}/v1"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/responses", json={"model": "fake-model", "input": "hi"}) as answer:
                created = answer.status, await answer.json()
            async with session.get(f"{base}/models") as answer:
                listed = answer.status, await answer.json()
    finally:
        envoy.stop()
    for status, body in (created, listed):
        assert status == 503, body
        assert body["error"]["code"] == "processor_unavailable"
        assert f"127.0.0.1:{wrong_port}" in body["error"]["message"]
        assert f"--extproc-port {wrong_port}" in body["error"]["message"]


async def test_the_printed_sdk_example_runs(sidecar: Sidecar) -> None:
    port = int(sidecar.http_url.rsplit(":", 1)[1])
    command = sdk_example(port, "fake-model", '"x"')[-1]
    result = await asyncio.to_thread(subprocess.run, shlex.split(command), capture_output=True, text=True,
                                     timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Echo: Hi!"
