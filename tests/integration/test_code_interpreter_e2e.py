"""The code interpreter end to end, with the real ``openai`` SDK and raw SSE through both doors: the model's code
runs in a real bubblewrap sandbox on the bridge, its output reaches the model, and the Containers API holds the
files it reads and writes.

One sidecar whose model calls go through Envoy's listener (``--upstream-via``) and one real Envoy in front of it;
a request carrying ``code_interpreter`` is routed by Envoy to the sidecar's HTTP door. The fake upstream calls the
bridge's ``python`` function when the user writes ``call python [args64=…]`` (the code, base64-encoded JSON) and
then answers ``Tool result: <what the code printed>``. The sidecar's code timeout is 3 s here, so the endless
loop test is quick.

What the door changes is Envoy's routing of such a request to the HTTP door and the answer's way back: the
round trips through both doors (a call, its stream, a container's files, the background and WebSocket modes, the
containers fuzz) prove it. What the sandbox does with the code (its bounds, its walls, its files) is the same
whichever door the request came in by, so those tests run on the HTTP door alone (``SANDBOX_ONLY``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.demo.banner import code_example
from responses_bridge.envoy_config import HTTP_CLUSTER, render_bootstrap
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.schema import parse_sse
from tests.support.sdk import async_sdk
from tests.unit.test_server_tool_turns import check_event, check_item_order

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_containers_service.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

AUTO = {"type": "code_interpreter", "container": {"type": "auto"}}
OUTPUTS = ["code_interpreter_call.outputs"]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000105fe02fea70000000049454e44ae426082")


def run_code(code: str, text: str = "") -> str:
    """The user message that makes the fake model call the code interpreter with ``code``."""
    encoded = base64.b64encode(orjson.dumps({"code": code})).decode()
    return f"{text} call python [args64={encoded}]".strip()


@dataclass
class Gateway:
    sidecar: Sidecar
    url: str
    envoy: EnvoyProcess
    data_dir: str

    async def sidecar_requests(self) -> int:
        stats = await self.envoy.stats("cluster.")
        return int(stats.get(f"cluster.{HTTP_CLUSTER}.upstream_rq_total", 0))


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    listen_port = free_port()
    data_dir = str(tmp_path_factory.mktemp("code"))
    async with running_sidecar(data_dir, fake_upstream, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1",
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "3",
                                    "RESPONSES_BRIDGE_API_KEY_SECRET_CANARY": "canary-secret"}) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Gateway(sidecar, f"http://127.0.0.1:{listen_port}", envoy, data_dir)
        finally:
            envoy.stop()


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


SANDBOX_ONLY = pytest.mark.parametrize("base_url", ["http"], indirect=True)  # the door is not the point


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def ask(client: openai.AsyncOpenAI, code: str, *, tools: list[dict[str, Any]] | None = None,
              text: str = "") -> Any:
    return await client.responses.create(model="fake-model", input=run_code(code, text), tools=tools or [AUTO],
                                         include=OUTPUTS)  # type: ignore[arg-type]


def logs_of(call: Any) -> str:
    return "".join(output.logs for output in call.outputs or () if output.type == "logs")


async def test_code_runs_and_its_output_reaches_the_model(client: openai.AsyncOpenAI) -> None:
    response = await ask(client, "print(6 * 7)")
    call, answer = response.output[0], response.output[-1]
    assert call.type == "code_interpreter_call" and call.status == "completed"
    assert call.code == "print(6 * 7)" and call.container_id.startswith("cntr_")
    assert logs_of(call) == "42\n"
    assert response.status == "completed" and answer.content[0].text.startswith("Tool result: 42")


@SANDBOX_ONLY
@pytest.mark.parametrize("text", ["run: print(2 + 2)", "Compute this, please:\n```python\nprint(2 + 2)\n```"])
async def test_code_asked_for_as_a_person_asks_runs(client: openai.AsyncOpenAI, text: str) -> None:
    """What the demo banner and docs/code-interpreter.md tell a newcomer to try: no directive, the code itself."""
    response = await client.responses.create(model="fake-model", input=text, tools=[AUTO],
                                             include=OUTPUTS)  # type: ignore[arg-type]
    call, answer = response.output[0], response.output[-1]
    assert call.type == "code_interpreter_call" and call.status == "completed"
    assert call.code == "print(2 + 2)" and logs_of(call) == "4\n"
    assert answer.content[0].text.startswith("Tool result: 4")


async def test_the_demo_banners_code_example_runs_as_printed(gateway: Gateway) -> None:
    """The command ``responses-bridge demo`` prints, pasted into a shell: curl through Envoy shows a completed
    ``code_interpreter_call`` with the code's logs."""
    command = code_example(f"{gateway.url}/v1/responses", "fake-model", "", None)[-1]
    words = shlex.split(command)
    assert words[0] == "curl"
    if shutil.which("curl") is None:
        pytest.skip("no curl here")
    result = await asyncio.to_thread(subprocess.run, words, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    response = orjson.loads(result.stdout)
    call = response["output"][0]
    assert call["type"] == "code_interpreter_call" and call["status"] == "completed"
    assert call["outputs"] == [{"type": "logs", "logs": "4\n"}]
    assert response["output"][-1]["content"][0]["text"].startswith("Tool result: 4")


async def test_the_stream_has_the_code_interpreter_events_in_order(base_url: str) -> None:
    body = {"model": "fake-model", "stream": True, "tools": [AUTO], "include": OUTPUTS,
            "input": run_code("import math\nprint(round(math.pi, 4))")}
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}/v1/responses", json=body) as reply:
        assert reply.status == 200
        events = parse_sse(await reply.read())
    kinds = [event["type"] for event in events]
    call_events = [kind for kind in kinds if "code_interpreter" in kind]
    assert call_events[0] == "response.code_interpreter_call.in_progress"
    assert "response.code_interpreter_call_code.delta" in call_events
    assert call_events[-3:] == ["response.code_interpreter_call_code.done",
                                "response.code_interpreter_call.interpreting",
                                "response.code_interpreter_call.completed"]
    deltas = "".join(event["delta"] for event in events if event["type"].endswith("_code.delta"))
    assert deltas == "import math\nprint(round(math.pi, 4))"
    added = kinds.index("response.output_item.added")
    assert events[added]["item"]["type"] == "code_interpreter_call" and kinds[0] == "response.created"
    done = next(event for event in events if event["type"] == "response.output_item.done"
                and event["item"]["type"] == "code_interpreter_call")
    assert done["output_index"] == 0 and done["item"]["outputs"][0]["logs"] == "3.1416\n"
    assert kinds[-1] == "response.completed"
    for event in events:  # each as the SDK types it, and the Open Responses schema where it knows it
        check_event(event)
    per_item = check_item_order(events)
    assert per_item[0][0] == "code_interpreter_call"


@SANDBOX_ONLY
async def test_files_persist_across_calls_in_one_container(client: openai.AsyncOpenAI) -> None:
    container = await client.containers.create(name="state")
    tools = [{"type": "code_interpreter", "container": container.id}]
    await ask(client, "open('/mnt/data/state.txt', 'w').write('remembered')", tools=tools)
    second = await ask(client, "print(open('state.txt').read())", tools=tools)
    assert logs_of(second.output[0]) == "remembered\n"
    assert second.output[0].container_id == container.id


@SANDBOX_ONLY
async def test_an_exception_is_output_not_a_failure(client: openai.AsyncOpenAI) -> None:
    response = await ask(client, "def f():\n    return 1 / 0\nf()")
    call = response.output[0]
    assert call.status == "completed" and response.status == "completed"
    assert "ZeroDivisionError: division by zero" in logs_of(call)
    assert "return 1 / 0" in logs_of(call)  # the traceback shows the model's own line
    assert "ZeroDivisionError" in response.output[-1].content[0].text  # the model read it


@SANDBOX_ONLY
async def test_the_sandbox_reaches_neither_the_bridge_nor_the_host(client: openai.AsyncOpenAI,
                                                                   gateway: Gateway) -> None:
    port = int(gateway.sidecar.http_url.rsplit(":", 1)[1])
    marker = os.path.join(gateway.data_dir, "escaped.txt")
    code = (f"import os, socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\n"
            f"except OSError as e:\n    print('no connection', type(e).__name__)\n"
            f"for path in ({marker!r}, '/etc/escaped', '/usr/escaped'):\n"
            f"    try:\n        open(path, 'w').write('x'); print('wrote', path)\n"
            f"    except OSError as e:\n        print('cannot write', path)\n"
            f"print('data dir visible', os.path.exists({gateway.data_dir!r}))\n"
            f"print('secret', [k for k in os.environ if 'RESPONSES_BRIDGE' in k or 'CANARY' in k])\n"
            f"print('uid', os.getuid())")
    logs = logs_of((await ask(client, code)).output[0])
    assert "no connection" in logs and "connected\n" not in logs
    assert "wrote" not in logs and not os.path.exists(marker)
    assert "data dir visible False" in logs and "secret []" in logs and "uid 0" not in logs


@SANDBOX_ONLY
async def test_an_endless_loop_is_stopped_and_the_bridge_answers_on(client: openai.AsyncOpenAI) -> None:
    response = await ask(client, "while True:\n    pass")
    call = response.output[0]
    assert call.status == "failed" and response.status == "completed"
    assert "time limit" in logs_of(call)
    after = await ask(client, "print('still here')")
    assert logs_of(after.output[0]) == "still here\n"


@SANDBOX_ONLY
async def test_a_16_gib_allocation_fails(client: openai.AsyncOpenAI) -> None:
    response = await ask(client, "block = bytearray(16 * 1024 ** 3)")
    assert "MemoryError" in logs_of(response.output[0]) and response.status == "completed"


@SANDBOX_ONLY
async def test_300_mb_printed_is_capped(client: openai.AsyncOpenAI) -> None:
    response = await ask(client, "import sys\nfor _ in range(300):\n    sys.stdout.write('x' * 1_000_000)")
    logs = logs_of(response.output[0])
    assert len(logs) < 70 * 1024 and "more bytes of stdout were cut" in logs
    assert response.output[0].status == "completed"


async def test_the_containers_api_round_trip(client: openai.AsyncOpenAI, base_url: str) -> None:
    container = await client.containers.create(name="round trip", expires_after={"anchor": "last_active_at",
                                                                                  "minutes": 5})
    assert container.expires_after.minutes == 5 and container.status == "running"
    uploaded = await client.containers.files.create(container.id, file=("numbers.csv", b"a,b\n1,2\n3,4\n"))
    assert uploaded.path == "/mnt/data/numbers.csv" and uploaded.source == "user" and uploaded.bytes == 12
    code = ("rows = open('numbers.csv').read().split()[1:]\n"
            "total = sum(int(x) for row in rows for x in row.split(','))\n"
            "open('/mnt/data/total.txt', 'w').write(str(total))\nprint(total)")
    response = await ask(client, code, tools=[{"type": "code_interpreter", "container": container.id}])
    assert logs_of(response.output[0]) == "10\n"
    listed = [file async for file in client.containers.files.list(container.id)]
    written = next(file for file in listed if file.path == "/mnt/data/total.txt")
    assert written.source == "assistant" and {file.path for file in listed} == {"/mnt/data/numbers.csv",
                                                                                "/mnt/data/total.txt"}
    content = await client.containers.files.content.retrieve(written.id, container_id=container.id)
    assert content.read() == b"10"
    # a re-upload at the same path replaces the file: its new id serves the new bytes, the old id is gone
    again = await client.containers.files.create(container.id, file=("numbers.csv", b"a,b\n5,6\n"))
    assert again.id != uploaded.id and again.path == uploaded.path and again.bytes == 8
    assert (await client.containers.files.retrieve(again.id, container_id=container.id)).bytes == 8
    assert (await client.containers.files.content.retrieve(again.id, container_id=container.id)).read() == \
        b"a,b\n5,6\n"
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.retrieve(uploaded.id, container_id=container.id)
    assert (await client.containers.retrieve(container.id)).id == container.id
    assert container.id in [c.id async for c in client.containers.list()]
    await client.containers.files.delete(again.id, container_id=container.id)
    await client.containers.delete(container.id)
    with pytest.raises(openai.NotFoundError):
        await client.containers.retrieve(container.id)
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.retrieve(written.id, container_id=container.id)


@SANDBOX_ONLY
async def test_a_file_from_the_files_api_is_copied_in(client: openai.AsyncOpenAI) -> None:
    file = await client.files.create(file=("notes.txt", b"from the files api"), purpose="user_data")
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [file.id]}}]
    response = await ask(client, "print(open('/mnt/data/notes.txt').read())", tools=tools)
    assert logs_of(response.output[0]) == "from the files api\n"


async def test_an_image_is_an_output_and_its_path_a_citation(client: openai.AsyncOpenAI, base_url: str) -> None:
    code = f"open('/mnt/data/plot.png', 'wb').write(bytes.fromhex({PNG.hex()!r}))\nprint('saved')"
    response = await ask(client, code)
    call, answer = response.output[0], response.output[-1]
    image = next(output for output in call.outputs if output.type == "image")
    async with aiohttp.ClientSession() as session, session.get(base_url + image.url) as reply:
        assert reply.status == 200 and await reply.read() == PNG
    text = answer.content[0].text
    assert "/mnt/data/plot.png" in text  # the fake model repeats the tool result, which names the file
    citation = next(a for a in answer.content[0].annotations if a.type == "container_file_citation")
    assert citation.container_id == call.container_id and citation.filename == "plot.png"
    assert text[citation.start_index:citation.end_index] == "/mnt/data/plot.png"


async def test_bad_containers_are_clear_errors(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        await ask(client, "print(1)", tools=[{"type": "code_interpreter", "container": "cntr_nope"}])
    assert unknown.value.body["param"] == "tools[0].container"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as missing:
        await client.responses.create(model="fake-model", input="hi",
                                      tools=[{"type": "code_interpreter"}])  # type: ignore[list-item]
    assert missing.value.body["param"] == "tools[0].container"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.containers.retrieve("cntr_0000")
    with pytest.raises(openai.BadRequestError) as nameless:
        await client.post("/containers", body={}, cast_to=object)
    assert nameless.value.body["param"] == "name"  # type: ignore[index]
    container = await client.containers.create(name="bad paths")
    with pytest.raises(openai.BadRequestError):
        await client.containers.files.create(container.id, file=("../../etc/passwd", b"x"))
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.create(container.id, file_id="file-" + "0" * 32)


async def test_envoy_hands_code_interpreter_requests_to_the_http_door(gateway: Gateway) -> None:
    before = await gateway.sidecar_requests()
    async with async_sdk(base_url=f"{gateway.url}/v1", api_key="sk-client", max_retries=0) as through_envoy:
        response = await ask(through_envoy, "print(1)")
    assert logs_of(response.output[0]) == "1\n"
    assert await gateway.sidecar_requests() > before


async def test_generated_containers_requests_get_openai_shaped_answers(client: openai.AsyncOpenAI,
                                                                       base_url: str, gateway: Gateway) -> None:
    """300 through the HTTP door, which checks them; through Envoy, which streams the Containers API to that door
    unread (envoy_config/routes.py ``_files_routes``), the first 60 of the same (derandomized) draws (before: 300)."""
    import asyncio

    from tests.support.fuzz import Tally
    from tests.support.fuzz_containers import run_containers

    examples = 60 if base_url == gateway.url else 300
    container = await client.containers.create(name="fuzzed")
    tally = await asyncio.to_thread(run_containers, Tally(base_url), container.id, examples)
    assert tally.sent >= examples * 5 // 6 and all(status < 500 for status in tally.statuses), tally.statuses
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0 and tally.statuses[404] > 0, tally.statuses


async def test_a_background_response_runs_code(client: openai.AsyncOpenAI) -> None:
    import asyncio

    started = await client.responses.create(model="fake-model", input=run_code("print('in the background')"),
                                            tools=[AUTO], include=OUTPUTS, background=True)  # type: ignore[list-item]
    for _ in range(300):
        response = await client.responses.retrieve(started.id)
        if response.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    assert response.status == "completed"
    assert response.output[0].type == "code_interpreter_call" and response.output[0].status == "completed"


async def test_websocket_mode_runs_code(base_url: str) -> None:
    import json

    async with aiohttp.ClientSession(base_url) as session, session.ws_connect("/v1/responses") as ws:
        await ws.send_str(json.dumps({"type": "response.create", "model": "fake-model", "tools": [AUTO],
                                      "include": OUTPUTS, "input": run_code("print(2 + 2)")}))
        events = []
        while True:
            event = json.loads((await ws.receive(timeout=30)).data)
            events.append(event)
            if event["type"] in ("response.completed", "response.failed", "error"):
                break
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "response.completed" and "response.code_interpreter_call.interpreting" in kinds
    done = next(event for event in events if event["type"] == "response.output_item.done"
                and event["item"]["type"] == "code_interpreter_call")
    assert done["item"]["outputs"][0]["logs"] == "4\n"
