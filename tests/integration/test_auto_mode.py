"""``mode: auto``: the sidecar probes each such upstream at start and serves it in the mode it found.

Four ``auto`` upstreams from one configuration file: a native fake (``--native``: it answers ``/v1/responses``),
a chat-only fake, a llama.cpp-like one (``--quirks llamacpp``) and one where nothing listens. The native one is
served natively and the chat-only one is translated, through both doors (a real Envoy rendered from the same
upstreams); each fake records the path it got. The llama.cpp-like one gets the switches its probe found (under the
generic profile), so a tool round trip it would refuse completes. The dead one falls back to translate (the
sidecar still starts). ``config show`` prints the cached probes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import yaml

from responses_bridge.config.upstreams import UpstreamSpec
from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.integration.test_profile_upstream import weather_round_trip
from tests.support import zygote
from tests.support.bridge import PYTHON, Sidecar, UpstreamLog, running_sidecar
from tests.support.envoy import have_envoy, start_envoy
from tests.support.sdk import async_sdk

pytestmark = [
    pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
    pytest.mark.store_proven(
        "tests/integration/test_agents_automations_replicas.py",
        "tests/integration/test_replicas.py",
        "tests/integration/test_input_references.py",
        reason="every store/postgres line it covers on PostgreSQL is covered by the modules named "
               "(scripts/pg-coverage)",
    ),
]


@dataclass
class Auto:
    sidecar: Sidecar
    envoy_url: str
    logs: dict[str, UpstreamLog]
    urls: dict[str, str]
    config: Path
    env: dict[str, str]


async def _fake(*extra: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port), *extra],
                             f"fake-upstream:{port}")
    process.start()
    await wait_http(f"http://127.0.0.1:{port}/health", process=process)
    return process, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
async def auto(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Auto]:
    native, native_url = await _fake("--native")
    chat, chat_url = await _fake()
    quirky, quirky_url = await _fake("--quirks", "llamacpp")
    urls = {"native": native_url, "chat": chat_url, "quirky": quirky_url,
            "dead": f"http://127.0.0.1:{free_port()}/v1"}
    upstreams = [{"name": name, "url": url, "mode": "auto"} for name, url in urls.items()]
    directory = Path(tmp_path_factory.mktemp("auto"))
    config = directory / "bridge.yaml"
    config.write_text(yaml.safe_dump({"log_level": "warning", "upstreams": upstreams, "models": [
        {"match": "n-model", "upstream": "native"}, {"match": "c-model", "upstream": "chat"},
        {"match": "q-model", "upstream": "quirky"}, {"match": "d-model", "upstream": "dead"}]}))
    env = {"XDG_DATA_HOME": str(directory / "data")}  # the probe cache, away from the user's own
    logs = {name: UpstreamLog(urls[name].removesuffix("/v1")) for name in ("native", "chat", "quirky")}
    try:
        async with running_sidecar(str(directory), chat_url, "--config", str(config), env=env) as sidecar:
            listen_port = free_port()
            envoy = await start_envoy(render_bootstrap(
                listen_port=listen_port, extproc_port=sidecar.extproc_port,
                http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=chat_url, admin_port=0,
                upstreams=[UpstreamSpec(**spec) for spec in upstreams]))
            try:
                yield Auto(sidecar, f"http://127.0.0.1:{listen_port}", logs, urls, config, env)
            finally:
                envoy.stop()
    finally:
        native.stop()
        chat.stop()
        quirky.stop()


@pytest.fixture(params=["http", "envoy"])
async def client(request: pytest.FixtureRequest, auto: Auto) -> AsyncIterator[openai.AsyncOpenAI]:
    for log in auto.logs.values():
        await log.clear()
    base = auto.envoy_url if request.param == "envoy" else auto.sidecar.http_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60) as sdk:
        yield sdk


async def _paths(log: UpstreamLog) -> list[str]:
    return [entry["path"] for entry in await log.entries()]


async def test_a_native_backend_is_served_natively(client: openai.AsyncOpenAI, auto: Auto) -> None:
    answer = await client.responses.create(model="n-model", input="hello native")
    assert answer.status == "completed" and answer.output_text
    assert await _paths(auto.logs["native"]) == ["/v1/responses"]
    follow = await client.responses.create(model="n-model", input="again", previous_response_id=answer.id)
    assert follow.status == "completed"  # the bridge keeps the chain the stateless backend cannot
    assert await _paths(auto.logs["native"]) == ["/v1/responses", "/v1/responses"]


async def test_a_chat_only_backend_is_translated(client: openai.AsyncOpenAI, auto: Auto) -> None:
    answer = await client.responses.create(model="c-model", input="hello chat")
    assert answer.output_text == "Echo: hello chat"
    assert await _paths(auto.logs["chat"]) == ["/v1/chat/completions"]


async def test_the_probes_switches_apply_to_its_upstream(client: openai.AsyncOpenAI, auto: Auto) -> None:
    second = await weather_round_trip(client, model="q-model")  # refused with content: null (generic alone)
    assert second.status == "completed"
    assistant = (await auto.logs["quirky"].last_body())["messages"][-2]
    assert assistant["content"] == "" and assistant["tool_calls"]  # tool_call_content=empty, as probed


async def test_an_upstream_that_could_not_be_probed_is_translated(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:  # nothing listens: a 502 or 503, not a hang
        await client.responses.create(model="d-model", input="anyone?")
    assert caught.value.status_code in (502, 503)


def test_config_show_prints_the_probes(auto: Auto) -> None:
    db = auto.config.parent / f"bridge-{auto.sidecar.http_url.rsplit(':', 1)[1]}.db"  # its cache is beside it
    done = zygote.run([PYTHON, "-m", "responses_bridge", "config", "show", "--config", str(auto.config)], timeout=120,
                      env={**os.environ, **auto.env, "RESPONSES_BRIDGE_DB": str(db)})
    done.check_returncode()
    shown = done.stdout
    probes = yaml.safe_load(shown.split("\n---\n", 1)[1])["probes"]
    assert probes[auto.urls["native"]]["mode"] == "native"
    assert probes[auto.urls["chat"]]["mode"] == "translate"
    assert probes[auto.urls["quirky"]]["switches"]["tool_call_content"] == "empty"
    assert auto.urls["dead"] not in probes

