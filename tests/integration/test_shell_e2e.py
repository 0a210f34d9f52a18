"""The hosted shell end to end, with the real ``openai`` SDK and raw SSE through both doors: the model's commands
run with ``/bin/sh -c`` in a real bubblewrap sandbox on the bridge, over the container's files, and each command's
output reaches the model and the ``shell_call_output`` item.

One sidecar whose model calls go through Envoy's listener (``--upstream-via``) and one real Envoy in front of it;
a request carrying a ``shell`` tool with a container environment is routed by Envoy to the sidecar's HTTP door (a
``local`` shell stays the client's, on the ext_proc path). The fake upstream calls the bridge's ``shell`` function
when the user writes ``sh: <command>`` (as a person would) or ``call shell [args64=…]`` (the whole action), then
answers ``Tool result: <what the tool returned>``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.responses import ResponseFunctionShellToolCall, ResponseFunctionShellToolCallOutput

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.schema import check_stream
from tests.support.sdk import async_sdk
from tests.unit.test_server_tool_turns import check_event, check_item_order

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas_retrieval.py",
    "tests/integration/test_postgres_start.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

AUTO = {"type": "shell", "environment": {"type": "container_auto"}}


def run_action(**action: Any) -> str:
    """The user message that makes the fake model call the hosted shell with ``action``."""
    return f"call shell [args64={base64.b64encode(orjson.dumps(action)).decode()}]"


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("shell")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "5"}) as gateway:
        yield gateway


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


def _call_and_output(response: Any) -> tuple[ResponseFunctionShellToolCall, ResponseFunctionShellToolCallOutput]:
    call, output = response.output[0], response.output[1]
    assert isinstance(call, ResponseFunctionShellToolCall) and isinstance(output, ResponseFunctionShellToolCallOutput)
    assert output.call_id == call.call_id
    return call, output


async def test_ls_and_python_version_run_and_the_answer_uses_their_output(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fake-model", input="sh: ls -la /mnt/data && python3 --version",
                                             tools=[AUTO])  # type: ignore[list-item]
    call, output = _call_and_output(response)
    assert call.action.commands == ["ls -la /mnt/data && python3 --version"] and call.status == "completed"
    assert call.environment is not None and call.environment.type == "container_reference"
    assert call.environment.container_id.startswith("cntr_")
    [command] = output.output
    assert command.outcome.type == "exit" and command.outcome.exit_code == 0
    assert command.stdout.startswith("total ") and "Python 3." in command.stdout
    answer = response.output[-1]
    assert response.status == "completed" and answer.type == "message"
    text = answer.content[0].text  # type: ignore[union-attr]
    assert text.startswith("Tool result: $ ls -la /mnt/data") and "Python 3." in text
    container = await client.containers.retrieve(call.environment.container_id)
    assert container.name == "shell container_auto"


async def test_the_stream_has_the_shell_events_in_order(base_url: str) -> None:
    body = {"model": "fake-model", "stream": True, "tools": [AUTO],
            "input": run_action(commands=["echo one", "echo two >&2; exit 2"])}
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}/v1/responses", json=body) as reply:
        assert reply.status == 200
        events = check_stream(await reply.read())  # each event valid, deltas adding up to what is done
    for event in events:  # each as the SDK types it
        check_event(event)
    per_item = check_item_order(events)
    assert per_item[0] == ["shell_call", *(["response.shell_call_command.added", "response.shell_call_command.delta",
                                            "response.shell_call_command.done"] * 2), "response.output_item.done"]
    assert per_item[1] == ["shell_call_output", *(["response.shell_call_output_content.delta",
                                                   "response.shell_call_output_content.done"] * 2),
                           "response.output_item.done"]
    assert per_item[2][0] == "message" and events[-1]["type"] == "response.completed"
    commands = [event["command"] for event in events if event["type"] == "response.shell_call_command.done"]
    assert commands == ["echo one", "echo two >&2; exit 2"]
    deltas = [event["delta"] for event in events if event["type"] == "response.shell_call_output_content.delta"]
    assert deltas == [{"stdout": "one\n", "stderr": ""}, {"stdout": "", "stderr": "two\n"}]
    done = [event for event in events if event["type"] == "response.shell_call_output_content.done"]
    assert [event["command_index"] for event in done] == [0, 1]
    assert done[1]["output"] == [{"stdout": "", "stderr": "two\n", "outcome": {"type": "exit", "exit_code": 2}}]
    final = events[-1]["response"]["output"][1]
    assert ResponseFunctionShellToolCallOutput.model_validate(final).status == "completed"


async def test_the_output_reaches_the_client_as_the_command_prints(base_url: str) -> None:
    """Live, not after the call: a command prints, waits 2 s, prints again; its first output (and the end of the
    command before it) reach the client on their own, before the rest is printed — and the deltas add up to the
    output the item has."""
    body = {"model": "fake-model", "stream": True, "tools": [AUTO],
            "input": run_action(commands=["echo ready", "printf 'first '; sleep 2; printf 'second'"])}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, \
            session.post(f"{base_url}/v1/responses", json=body) as reply:
        assert reply.status == 200
        seen = b""
        while b'"stdout":"first ' not in seen:
            chunk = await reply.content.readany()
            assert chunk, "the stream ended without the first output"
            seen += chunk
        assert b'"stdout":"second"' not in seen and b'"command_index":1,"output"' not in seen
        assert b'"command_index":0,"output"' in seen  # the first command's .done went out as it ended
        rest = await reply.read()
    events = check_stream(seen + rest)
    for event in events:
        check_event(event)
    check_item_order(events)
    deltas = [event["delta"]["stdout"] for event in events
              if event["type"] == "response.shell_call_output_content.delta" and event["command_index"] == 1]
    assert "".join(deltas) == "first second" and len(deltas) >= 2
    assert events[-1]["response"]["output"][1]["output"][1]["stdout"] == "first second"


async def test_a_non_zero_exit_and_a_timeout_are_outputs(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="fake-model", tools=[AUTO],  # type: ignore[list-item]
        input=run_action(commands=["ls /nowhere", "sleep 30", "echo still here"], timeout_ms=700,
                         max_output_length=7))
    call, output = _call_and_output(response)
    assert call.action.timeout_ms == 700 and output.max_output_length == 7
    missing, slow, after = output.output
    assert missing.outcome.type == "exit" and missing.outcome.exit_code == 2 and len(missing.stderr) == 7
    assert slow.outcome.type == "timeout"
    assert after.stdout == "still h" and after.outcome.type == "exit"
    assert response.status == "completed" and output.status == "completed"
    assert "(timed out)" in response.output[-1].content[0].text  # type: ignore[union-attr]


async def test_a_file_is_there_for_the_next_command_and_the_next_call(client: openai.AsyncOpenAI) -> None:
    container = await client.containers.create(name="shell state")
    tools = [{"type": "shell", "environment": {"type": "container_reference", "container_id": container.id}}]
    first = await client.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                          input=run_action(commands=["echo remembered > state.txt", "cat state.txt"]))
    _, output = _call_and_output(first)
    assert output.output[1].stdout == "remembered\n"
    second = await client.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                           input="sh: cat /mnt/data/state.txt")
    call, output = _call_and_output(second)
    assert output.output[0].stdout == "remembered\n"
    assert call.environment is not None and call.environment.container_id == container.id  # type: ignore[union-attr]
    files = await client.containers.files.list(container.id)
    assert [file.path for file in files.data] == ["/mnt/data/state.txt"]


async def test_an_auto_container_goes_on_with_the_conversation(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="fake-model", input="sh: echo kept > note.txt",
                                          tools=[AUTO])  # type: ignore[list-item]
    second = await client.responses.create(model="fake-model", input="sh: cat note.txt", tools=[AUTO],  # type: ignore[list-item]
                                           previous_response_id=first.id)
    call, output = _call_and_output(second)
    assert output.output[0].stdout == "kept\n"
    assert call.environment == first.output[0].environment  # type: ignore[union-attr]


async def test_tool_choice_shell_forces_the_hosted_shell(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fake-model", input="hello", tools=[AUTO],  # type: ignore[list-item]
                                             tool_choice={"type": "shell"})
    assert response.output[0].type == "shell_call" and response.output[1].type == "shell_call_output"


async def test_a_local_shell_stays_the_client_s(client: openai.AsyncOpenAI) -> None:
    for tool in ({"type": "shell"}, {"type": "shell", "environment": {"type": "local"}}):
        response = await client.responses.create(model="fake-model", tools=[tool],  # type: ignore[list-item]
                                                 input=run_action(commands=["rm -rf /"]))
        assert [item.type for item in response.output] == ["shell_call"]
        assert response.output[0].environment is None  # type: ignore[union-attr]


async def test_bad_environments_are_400s_naming_the_field(base_url: str) -> None:
    cases = [
        ({"type": "container_reference", "container_id": "cntr_nope"}, "tools[0].environment", "invalid_value"),
        ({"type": "container_reference"}, "tools[0].environment.container_id", "invalid_value"),
        ({"type": "somewhere"}, "tools[0].environment.type", "invalid_value"),
        ({"type": "container_auto", "memory_limit": "3g"}, "tools[0].environment.memory_limit", "invalid_value"),
        ({"type": "container_auto", "file_ids": ["file-nope"]}, "tools[0].environment.file_ids[0]",
         "invalid_value"),
        ({"type": "container_auto", "skills": [{"type": "nope"}]}, "tools[0].environment.skills[0].type",
         "invalid_value"),
        ({"type": "container_auto", "network_policy": {"type": "open"}},
         "tools[0].environment.network_policy.type", "invalid_value"),
        ({"type": "container_auto", "network_policy": {"type": "allowlist", "allowed_domains": []}},
         "tools[0].environment.network_policy.allowed_domains", "invalid_value"),
    ]
    async with aiohttp.ClientSession(base_url) as http:
        for environment, param, code in cases:
            for stream in (False, True):
                body = {"model": "fake-model", "input": "sh: ls", "stream": stream,
                        "tools": [{"type": "shell", "environment": environment}]}
                async with http.post("/v1/responses", json=body) as reply:
                    assert reply.status == 400, (environment, await reply.text())
                    error = (await reply.json())["error"]
                assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
        body = {"model": "fake-model", "input": "sh: ls", "tools": [
            {"type": "shell", "environment": {"type": "container_auto", "network_policy": {"type": "disabled"},
                                              "skills": []}}]}
        async with http.post("/v1/responses", json=body) as reply:
            assert reply.status == 200  # the policy that is the default, and no skills, are fine


async def test_envoy_hands_hosted_shell_requests_to_the_http_door(gateway: Gateway) -> None:
    before = await gateway.sidecar_requests()
    async with async_sdk(base_url=f"{gateway.url}/v1", api_key="sk-client", max_retries=0) as sdk:
        response = await sdk.responses.create(model="fake-model", input="sh: echo routed",
                                              tools=[AUTO])  # type: ignore[list-item]
    assert response.output[1].output[0].stdout == "routed\n"  # type: ignore[union-attr]
    assert await gateway.sidecar_requests() > before


async def test_a_background_response_runs_commands(client: openai.AsyncOpenAI) -> None:
    started = await client.responses.create(model="fake-model", input="sh: echo in the background",
                                            tools=[AUTO], background=True)  # type: ignore[list-item]
    for _ in range(300):
        response = await client.responses.retrieve(started.id)
        if response.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    assert response.status == "completed"
    assert response.output[1].output[0].stdout == "in the background\n"  # type: ignore[union-attr]


async def test_websocket_mode_runs_commands(base_url: str) -> None:
    async with aiohttp.ClientSession(base_url) as session, session.ws_connect("/v1/responses") as ws:
        await ws.send_str(orjson.dumps({"type": "response.create", "model": "fake-model", "tools": [AUTO],
                                        "input": "sh: echo over the socket"}).decode())
        events = []
        while True:
            event = orjson.loads((await ws.receive(timeout=30)).data)
            events.append(event)
            if event["type"] in ("response.completed", "response.failed", "error"):
                break
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "response.completed" and "response.shell_call_output_content.done" in kinds
    assert "response.steer.pending" not in kinds  # the bridge answered its own call: nothing is owed
    done = next(event for event in events if event["type"] == "response.output_item.done"
                and event["item"]["type"] == "shell_call_output")
    assert done["item"]["output"][0]["stdout"] == "over the socket\n"


async def test_container_auto_copies_its_files_in_and_echoes_its_memory_limit(client: openai.AsyncOpenAI) -> None:
    file = await client.files.create(file=("notes.txt", b"from the files api"), purpose="user_data")
    tools = [{"type": "shell", "environment": {"type": "container_auto", "file_ids": [file.id], "memory_limit": "4g"}}]
    response = await client.responses.create(model="fake-model", input="sh: cat notes.txt; echo; wc -c < notes.txt",
                                             tools=tools)  # type: ignore[arg-type]
    call, output = _call_and_output(response)
    assert output.output[0].stdout == "from the files api\n18\n"
    container = await client.containers.retrieve(call.environment.container_id)  # type: ignore[union-attr]
    assert container.memory_limit == "4g"


async def test_shell_runs_are_counted_with_the_sandbox_s_metrics(gateway: Gateway) -> None:
    async def counted() -> dict[str, float]:
        async with aiohttp.ClientSession() as session, session.get(f"{gateway.sidecar.http_url}/metrics") as reply:
            text = await reply.text()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(("responses_bridge_sandbox_runs_total{",
                                "responses_bridge_sandbox_duration_seconds_count{")):
                name, value = line.rsplit(" ", 1)
                found[name] = float(value)
        return found

    before = await counted()
    async with async_sdk(base_url=f"{gateway.sidecar.http_url}/v1", api_key="sk-client",
                                  max_retries=0) as sdk:
        await sdk.responses.create(model="fake-model", input="sh: true", tools=[AUTO])  # type: ignore[list-item]
    after = await counted()
    runs = 'responses_bridge_sandbox_runs_total{job="shell",outcome="ok"}'
    seconds = 'responses_bridge_sandbox_duration_seconds_count{job="shell"}'
    assert after[runs] == before.get(runs, 0) + 1 and after[seconds] == before.get(seconds, 0) + 1
    assert not any(name for name in after if "job=" not in name)  # python and shell apart, never unlabelled
