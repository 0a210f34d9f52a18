"""The Codex CLI (npm ``@openai/codex``, unmodified) against both doors, headless: ``codex exec --json``.

Codex speaks only the Responses API. It is pointed at the bridge by a provider in ``$CODEX_HOME/config.toml``
(``base_url``, ``env_key``, ``wire_api = "responses"``: no login), and runs its shell tool without approvals or a
sandbox inside a temporary work directory. The fake upstream scripts the model: ``call exec_command
[args={...}]`` makes it call Codex's shell tool with those arguments.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.support.bridge import Sidecar, UpstreamLog
from tests.support.schema import check_sequence, check_stream, parse_sse, validate_event

RECORDING = Path(__file__).parent / "recordings" / "codex_request.json"

CONFIG = """\
model = "fake-model"
model_provider = "bridge"

[model_providers.bridge]
name = "responses-bridge"
base_url = "{base_url}/v1"
env_key = "BRIDGE_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""

CATALOG_VERSION = "0.169.0"  # the pinned @openai/codex (tests/clients/node/package.json): the client_version it sends

COMMAND_AUTH_CONFIG = CONFIG.replace('env_key = "BRIDGE_API_KEY"\n', "") + """\
[model_providers.bridge.auth]
command = "echo"
args = ["sk-client"]
"""
"""A token from a command: Codex then refreshes its model catalog from the provider, ``GET /v1/models
?client_version=...`` (an ``env_key`` provider never asks), and decodes it as its ``ModelsResponse``."""


class Codex:
    def __init__(self, binary: Path, home: Path, workdir: Path) -> None:
        self.binary, self.home, self.workdir = binary, home, workdir
        self.stderr = ""
        self.env: dict[str, str] = {}

    async def exec(self, *args: str, succeed: bool = True) -> list[dict[str, Any]]:
        env = {**os.environ, "CODEX_HOME": str(self.home), "BRIDGE_API_KEY": "sk-client", **self.env}
        argv = [str(self.binary), "exec", "--skip-git-repo-check", "--json",
                "--dangerously-bypass-approvals-and-sandbox", *args]
        result = await asyncio.to_thread(subprocess.run, argv, cwd=self.workdir, env=env, capture_output=True,
                                         text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
        self.stderr = result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if not succeed:
            assert result.returncode != 0 and events[-1]["type"] == "turn.failed", (result.returncode, events)
            return events
        assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
        failures = [e for e in events if e["type"] in ("turn.failed", "error")]
        assert not failures, failures
        assert events and events[-1]["type"] == "turn.completed", events
        return events


def completed(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == kind]


def _codex(node_modules: Path, config: str, tmp_path: Path) -> Codex:
    binary = node_modules / ".bin" / "codex"
    home, workdir = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (home / "config.toml").write_text(config)
    return Codex(binary, home, workdir)


@pytest.fixture
def codex(node_modules: Path, base_url: str, tmp_path: Path) -> Codex:
    return _codex(node_modules, CONFIG.format(base_url=base_url), tmp_path)


async def test_plain_prompt(codex: Codex, upstream_log: UpstreamLog, sidecar: Sidecar) -> None:
    events = await codex.exec("Say hello")
    assert [m["text"] for m in completed(events, "agent_message")] == ["Echo: Say hello"]
    body = await upstream_log.last_body()
    # Codex's system prompt arrives as developer messages; its web_search tool is dropped, its namespace
    # tool is offered as flat functions
    assert body["messages"][0]["role"] == "system"
    names = [tool["function"]["name"] for tool in body["tools"]]
    assert "exec_command" in names and any(name.startswith("multi_agent_v1__") for name in names)
    assert all(len(name) <= 64 for name in names)
    for field in ("client_metadata", "include", "store", "reasoning", "input"):  # Responses-only: not forwarded
        assert field not in body, field
    async with aiohttp.ClientSession() as session, session.get(f"{sidecar.http_url}/metrics") as response:
        metrics = await response.text()
    assert 'responses_bridge_unsupported_tools_dropped_total{tool_type="web_search"}' in metrics


async def test_model_catalog_refresh_decodes(node_modules: Path, base_url: str, tmp_path: Path) -> None:
    codex = _codex(node_modules, COMMAND_AUTH_CONFIG.format(base_url=base_url), tmp_path)
    codex.env["RUST_LOG"] = "codex_models_manager=info"  # its catalog errors, on stderr
    events = await codex.exec("Say hello")
    assert [m["text"] for m in completed(events, "agent_message")] == ["Echo: Say hello"]
    # Codex's catalog request decoded: no error, and the catalog it cached is the bridge's (empty: Codex's
    # bundled metadata and prompt stand), under the ETag the bridge sent
    assert "failed to decode models response" not in codex.stderr, codex.stderr[-3000:]
    assert "failed to refresh available models" not in codex.stderr, codex.stderr[-3000:]
    cache = json.loads((codex.home / "models_cache.json").read_text())
    async with aiohttp.ClientSession() as session, session.get(
            f"{base_url}/v1/models", params={"client_version": CATALOG_VERSION}) as response:
        etag = response.headers["ETag"]
    assert cache["client_version"] == CATALOG_VERSION and cache["models"] == [] and cache["etag"] == etag


async def test_resume_last_resends_history(codex: Codex, upstream_log: UpstreamLog) -> None:
    await codex.exec("First turn")
    events = await codex.exec("resume", "--last", "Second turn")
    assert [m["text"] for m in completed(events, "agent_message")] == ["Echo: Second turn"]
    messages = (await upstream_log.last_body())["messages"]
    texts = [m.get("content") for m in messages]
    assert "First turn" in texts and "Echo: First turn" in texts and texts[-1] == "Second turn"


async def test_tool_call_runs_and_its_output_goes_back(codex: Codex, upstream_log: UpstreamLog) -> None:
    events = await codex.exec('Please call exec_command [args={"cmd": "echo bridge-ok > out.txt"}] [think]')
    assert (codex.workdir / "out.txt").read_text().strip() == "bridge-ok"
    commands = completed(events, "command_execution")
    assert len(commands) == 1 and commands[0]["exit_code"] == 0 and "bridge-ok" in commands[0]["command"]
    assert completed(events, "reasoning"), "the reasoning summary reached Codex"
    answers = completed(events, "agent_message")
    assert len(answers) == 1 and answers[0]["text"].startswith("Tool result:")
    last = (await upstream_log.last_body())["messages"]
    call_message, tool_message = last[-2], last[-1]
    assert call_message["tool_calls"][0]["function"]["name"] == "exec_command"
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == call_message["tool_calls"][0]["id"]


async def test_upstream_failure_mid_stream_fails_the_turn(codex: Codex, door: str) -> None:
    # the upstream drops the connection after two chunks: the bridge ends the stream with response.failed, and
    # Codex reports the failed turn (never a silent empty answer, never a hang)
    events = await codex.exec("Fail please [cut=2]", succeed=False)
    assert not completed(events, "agent_message")
    if door == "http":
        assert "upstream" in events[-1]["error"]["message"]
    # through Envoy, an upstream reset reaches the client as response.failed, a 502, or (when Envoy resets the
    # downstream stream first) a cut body: Codex fails the turn in every case


# --- the recorded Codex request, replayed raw: every event checked against the spec ----------------------------


def recorded(text: str) -> dict[str, Any]:
    body = orjson.loads(RECORDING.read_bytes())
    body = copy.deepcopy(body)
    body["input"][-1]["content"][0]["text"] = text
    return body


async def post_stream(http: aiohttp.ClientSession, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with http.post("/v1/responses", json=body) as response:
        raw = await response.read()
        assert response.status == 200, raw[:2000]
    return check_stream(raw)


async def test_recorded_request_streams_valid_events(http: aiohttp.ClientSession) -> None:
    events = await post_stream(http, recorded("Hello [think]"))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    reasoning = final["output"][0]
    assert reasoning["summary"][0]["text"].startswith("Thinking about")
    assert reasoning["encrypted_content"].startswith("rb1.")
    assert {"response.reasoning_summary_text.delta", "response.output_item.done"} <= {e["type"] for e in events}
    # the namespace and web_search tools are echoed as sent
    sent_types = [tool["type"] for tool in recorded("x")["tools"]]
    assert [tool["type"] for tool in final["tools"]] == sent_types


def check_namespaced_stream(raw: bytes) -> list[dict[str, Any]]:
    """``namespace`` on a function call is OpenAI's (the openai SDK's type has it), not yet the Open Responses
    spec's: those items are checked against the SDK type, everything else against the spec."""
    events = parse_sse(raw)
    for event in events:
        item = event.get("item")
        if isinstance(item, dict) and "namespace" in item:
            ResponseFunctionToolCall.model_validate(item)
            event = {**event, "item": {k: v for k, v in item.items() if k != "namespace"}}
        if "response" in event:
            output = [{k: v for k, v in i.items() if k != "namespace"} for i in event["response"]["output"]]
            event = {**event, "response": {**event["response"], "output": output}}
        validate_event(event)
    check_sequence(events)
    return events


async def test_namespace_call_round_trip(http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    body = recorded("Please call multi_agent_v1__close_agent now")
    async with http.post("/v1/responses", json=body) as response:
        assert response.status == 200
        events = check_namespaced_stream(await response.read())
    calls = [item for item in events[-1]["response"]["output"] if item["type"] == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call["namespace"] == "multi_agent_v1" and call["name"] == "close_agent"
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"
             and e["item"]["type"] == "function_call"]
    assert added[0]["namespace"] == "multi_agent_v1" and added[0]["name"] == "close_agent"
    # Codex sends the call back with its output: upstream it is the flat name again
    follow = recorded("Please call multi_agent_v1__close_agent now")
    follow["input"] += [call, {"type": "function_call_output", "call_id": call["call_id"], "output": "closed"}]
    events = await post_stream(http, follow)
    assert events[-1]["type"] == "response.completed"
    messages = (await upstream_log.last_body())["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__close_agent"


async def test_encrypted_reasoning_round_trip(http: aiohttp.ClientSession) -> None:
    events = await post_stream(http, recorded("Think first [think]"))
    reasoning = events[-1]["response"]["output"][0]
    follow = recorded("Think first [think]")
    # what a client keeps: the blob, no plain content
    follow["input"] += [{"type": "reasoning", "id": reasoning["id"], "summary": reasoning["summary"],
                         "encrypted_content": reasoning["encrypted_content"]},
                        {"role": "user", "content": "and then?"}]
    events = await post_stream(http, follow)
    assert events[-1]["type"] == "response.completed"
    tampered = recorded("x")
    blob = reasoning["encrypted_content"]
    tampered["input"].append({"type": "reasoning", "summary": [],
                              "encrypted_content": blob[:-6] + ("A" if blob[-6] != "A" else "B") + blob[-5:]})
    async with http.post("/v1/responses", json=tampered) as response:
        error = await response.json()
        assert response.status == 400, error
    assert error["error"]["code"] == "invalid_encrypted_content"
    assert error["error"]["param"] == f"input[{len(tampered['input']) - 1}].encrypted_content"


async def test_stored_namespace_call_and_replay_by_previous_response_id(http: aiohttp.ClientSession,
                                                                      upstream_log: UpstreamLog) -> None:
    body = recorded("Please call multi_agent_v1__spawn_agent now")
    body.update(store=True, stream=False)
    async with http.post("/v1/responses", json=body) as response:
        created = await response.json()
        assert response.status == 200, created
    call = created["output"][-1]
    assert (call["namespace"], call["name"]) == ("multi_agent_v1", "spawn_agent")
    async with http.get(f"/v1/responses/{created['id']}") as response:
        stored = await response.json()
    assert stored["output"][-1]["namespace"] == "multi_agent_v1" and stored["output"][-1]["name"] == "spawn_agent"
    follow = {"model": "fake-model", "previous_response_id": created["id"], "tools": body["tools"],
              "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "spawned"}]}
    async with http.post("/v1/responses", json=follow) as response:
        answer = await response.json()
        assert response.status == 200, answer
    assert answer["output"][-1]["content"][0]["text"] == "Tool result: spawned"
    messages = (await upstream_log.last_body())["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__spawn_agent"


async def test_reject_policy_is_a_400_never_a_broken_stream(fake_upstream: str, tmp_path: Path) -> None:
    from responses_bridge.demo.procs import wait_http
    from tests.support.bridge import start_sidecar

    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, env={
        "RESPONSES_BRIDGE_UNSUPPORTED_TOOLS": "reject"}, extproc=False)
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{http_port}/v1/responses", json=recorded("hi")) as response:
                error = await response.json()
                assert response.status == 400
        assert error["error"]["code"] == "unsupported_tool_type" and error["error"]["param"] == "tools"
        assert "web_search" in error["error"]["message"]
    finally:
        process.stop()
