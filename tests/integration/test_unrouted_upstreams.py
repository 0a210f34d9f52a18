"""Upstreams configured with no route to them are said at start, not by every request: with no model routed to any
of them ``serve`` stops with one line naming the upstreams and both fixes; with some left out it starts and warns
about each; and a model no rule routes is a 404 that says which rule failed. The real CLI, with a clean
environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from responses_bridge.demo.procs import free_port, wait_http
from tests.support import zygote
from tests.support.bridge import PYTHON, log_lines
from tests.support.cli import clean_env, one_line

pytestmark = pytest.mark.store_free  # a clean environment (tests/support/cli.py): none reads the store switch


def test_no_route_to_any_upstream_stops_the_start(tmp_path: Path) -> None:
    env = clean_env(tmp_path, RESPONSES_BRIDGE_UPSTREAMS='[{"name": "local", "url": "http://127.0.0.1:9/v1"}]')
    try:
        result = zygote.run([PYTHON, "-m", "responses_bridge", "serve", "--db", ":memory:", "--http-port",
                             str(free_port()), "--extproc-port", str(free_port())], timeout=60, cwd=tmp_path, env=env)
    except subprocess.TimeoutExpired as exc:  # it started, as it did before this was checked
        raise AssertionError(f"serve started with no route to its upstream: {exc.stderr!r}") from None
    assert one_line(result, "serve") == (
        "RESPONSES_BRIDGE_UPSTREAMS: no model is routed to the upstream 'local', so every request would be a 404 "
        "model_not_found: set default_upstream (RESPONSES_BRIDGE_DEFAULT_UPSTREAM=local), or add models entries "
        """(RESPONSES_BRIDGE_MODELS='[{"match": "*", "upstream": "local"}]')""")


def test_the_file_is_named_with_its_own_keys(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("upstreams:\n  - {name: a, url: 'http://127.0.0.1:9/v1'}\n  - {name: b, url: 'http://h/v1'}\n")
    result = zygote.run([PYTHON, "-m", "responses_bridge", "serve", "--db", ":memory:", "--config", str(config)],
                        timeout=60, cwd=tmp_path, env=clean_env(tmp_path))
    assert one_line(result, "serve") == (
        f"{config}: no model is routed to the upstreams 'a', 'b', so every request would be a 404 model_not_found: "
        "set default_upstream: a, or add models entries ({match: '*', upstream: a})")


async def test_an_upstream_left_out_is_warned_and_a_model_no_rule_routes_says_which_rule(tmp_path: Path) -> None:
    upstreams = [{"name": "used", "url": "http://127.0.0.1:9/v1"}, {"name": "forgotten", "url": "http://h:9/v1"}]
    models = [{"match": "m-one", "upstream": "used"}, {"match": "qwen*", "upstream": "used"}]
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = zygote.popen([PYTHON, "-m", "responses_bridge", "serve", "--no-extproc", "--db", ":memory:",
                                "--http-port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=tmp_path,
                               env=clean_env(tmp_path, RESPONSES_BRIDGE_UPSTREAMS=json.dumps(upstreams),
                                             RESPONSES_BRIDGE_MODELS=json.dumps(models)))
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/v1/responses", json={"model": "gpt-5", "input": "hi"}) as response:
            status, body = response.status, await response.json()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert status == 404 and body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    assert body["error"]["message"] == (
        "The model 'gpt-5' does not exist or you do not have access to it: no entry of this bridge's `models` "
        "matches it (m-one, qwen*) and it has no `default_upstream`.")
    unrouted = [line for line in log_lines(log_path) if line["event"] == "upstream_unrouted"]
    assert [(line["level"], line["upstream"]) for line in unrouted] == [("warning", "forgotten")]
