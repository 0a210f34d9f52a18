"""Envoy in front without ``--upstream-via`` (which envoy/README.md calls required) is said, not silent: the first
request Envoy hands the ext_proc door makes the sidecar warn, once, naming the flag and its variable; with the flag
set it says nothing. The real CLI, with a clean environment; a gRPC client stands in for Envoy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from responses_bridge.adapters.extproc import service as external_processor_pb2_grpc
from responses_bridge.demo.procs import free_port, wait_http
from tests.support import zygote
from tests.support.bridge import PYTHON, log_lines
from tests.support.cli import clean_env
from tests.unit.test_extproc_servicer import request_body

pytestmark = pytest.mark.store_free  # on :memory:, in a clean environment: none reads the store switch


async def envoy_requests(port: int, count: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for _ in range(count):
            call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()
            await call.write(request_body({"model": "fake-model", "input": "Hello"}))
            await call.read()  # the processor's answer to the body: translated, or an error it made
            call.cancel()


@pytest.mark.parametrize("via", [None, "http://127.0.0.1:10000/v1"], ids=["unset", "set"])
async def test_the_first_envoy_request_warns_when_upstream_via_is_unset(tmp_path: Path, via: str | None) -> None:
    http_port, extproc_port = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    argv = [PYTHON, "-m", "responses_bridge", "serve", "--db", ":memory:", "--http-port", str(http_port),
            "--extproc-port", str(extproc_port), "--upstream", f"http://127.0.0.1:{free_port()}/v1",
            *(["--upstream-via", via] if via else [])]
    with open(log_path, "wb") as log:
        process = zygote.popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
                               env=clean_env(tmp_path))
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health", timeout=60)
        assert not [line for line in log_lines(log_path) if line["event"] == "upstream_via_unset"]  # not at start
        await envoy_requests(extproc_port, 2)  # the warning is written before the first stream's answer
    finally:
        process.terminate()
        process.wait(timeout=30)
    warned = [line for line in log_lines(log_path) if line["event"] == "upstream_via_unset"]
    if via is not None:
        assert warned == []
        return
    assert len(warned) == 1 and warned[0]["level"] == "warning", warned
    assert "--upstream-via / RESPONSES_BRIDGE_UPSTREAM_VIA is not set" in warned[0]["hint"]
