"""The code interpreter on the ``agent-sandbox`` backend, end to end through both doors (the HTTP door, and a real Envoy
routing to it): a sidecar configured with ``RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND=agent-sandbox`` claims a pod per
call from the fake Kubernetes API (tools/fakes/kube.py), reaches the stand-in pod
(tools/fakes/standin_pod.py) through the runtime's file and process APIs, and deletes the claim when the call
ends. The same requests as the bubblewrap acceptance tests (test_code_interpreter_e2e.py), with the real ``openai``
SDK: files in and out of the container, the time limit, the output limit, a pool missing or never ready, and what
this backend refuses.

Envoy hands these requests (server-side tools) to the HTTP door and passes its answer back: a call, its stream, the
files through the Files API and the refusals go through both doors. What the backend does with the pod (its time
and output limits, a pool that never readies, a file API that stops answering, calls at once, the memory bound) is
the same whichever door the request came in by, so those run on the HTTP door alone (``SANDBOX_ONLY``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import openai
import pytest

from responses_bridge.envoy_config import render_bootstrap
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_code_interpreter_e2e import AUTO, OUTPUTS, ask, logs_of
from tests.support.agent_sandbox import FakeCluster, fake_cluster
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.schema import parse_sse
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="the stand-in pod needs bubblewrap"),
              pytest.mark.store_free]  # the backend's calls: the sidecars keep their own SQLite files
CLAIMS = ("extensions.agents.x-k8s.io", "sandboxclaims")


@dataclass
class Stack:
    cluster: FakeCluster
    sidecar: Sidecar
    envoy: EnvoyProcess
    url: str


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    listen_port = free_port()
    async with fake_cluster() as cluster, running_sidecar(
            str(tmp_path_factory.mktemp("pods")), fake_upstream, "--upstream-via",
            f"http://127.0.0.1:{listen_port}/v1",
            own_sqlite=True, env={**cluster.settings, "RESPONSES_BRIDGE_CODE_TIMEOUT": "3",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_READY_TIMEOUT": "2",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_PYTHON": "python3"}) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Stack(cluster, sidecar, envoy, f"http://127.0.0.1:{listen_port}")
        finally:
            envoy.stop()


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    return stack.url if request.param == "envoy" else stack.sidecar.http_url


SANDBOX_ONLY = pytest.mark.parametrize("base_url", ["http"], indirect=True)  # the door is not the point


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def no_claims_left(cluster: FakeCluster) -> list[str]:
    """The claims still live once the bridge has had a moment to delete its last one (an empty list: none)."""
    for _ in range(50):
        if not cluster.kube.live(CLAIMS):
            break
        await asyncio.sleep(0.1)
    return cluster.kube.live(CLAIMS)


async def test_code_runs_in_a_claimed_pod_whose_claim_ends_with_the_call(client: openai.AsyncOpenAI,
                                                                          stack: Stack) -> None:
    claimed = sum(1 for method, path in stack.cluster.kube.requests if method == "POST" and "sandboxclaims" in path)
    response = await ask(client, "import os\nprint(6 * 7, os.getcwd(), os.getuid() != 0)")
    call = response.output[0]
    assert call.type == "code_interpreter_call" and call.status == "completed"
    assert logs_of(call) == "42 /mnt/data True\n"
    assert response.output[-1].content[0].text.startswith("Tool result: 42")
    assert sum(1 for method, path in stack.cluster.kube.requests
               if method == "POST" and "sandboxclaims" in path) == claimed + 1
    assert await no_claims_left(stack.cluster) == []


async def test_output_streams_through_the_events_as_on_bubblewrap(base_url: str) -> None:
    body = {"model": "fake-model", "stream": True, "tools": [AUTO], "include": OUTPUTS,
            "input": ask_text("import math\nprint(round(math.pi, 4))")}
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}/v1/responses", json=body) as reply:
        assert reply.status == 200
        events = parse_sse(await reply.read())
    kinds = [event["type"] for event in events]
    assert "response.code_interpreter_call_code.delta" in kinds and kinds[-1] == "response.completed"
    done = next(event for event in events if event["type"] == "response.output_item.done"
                and event["item"]["type"] == "code_interpreter_call")
    assert done["item"]["outputs"][0]["logs"] == "3.1416\n"


def ask_text(code: str) -> str:
    from tests.integration.test_code_interpreter_e2e import run_code
    return run_code(code)


async def test_files_go_in_and_come_back_through_the_file_api(client: openai.AsyncOpenAI) -> None:
    container = await client.containers.create(name="pod files")
    await client.containers.files.create(container.id, file=("numbers.csv", b"a,b\n1,2\n3,4\n"))
    tools = [{"type": "code_interpreter", "container": container.id}]
    code = ("import os\nrows = open('numbers.csv').read().split()[1:]\n"
            "total = sum(int(x) for row in rows for x in row.split(','))\n"
            "os.makedirs('out/deep', exist_ok=True)\nopen('out/deep/total.txt', 'w').write(str(total))\n"
            "print(total)")
    response = await ask(client, code, tools=tools)
    assert logs_of(response.output[0]) == "10\n"
    listed = {file.path: file async for file in client.containers.files.list(container.id)}
    assert set(listed) == {"/mnt/data/numbers.csv", "/mnt/data/out/deep/total.txt"}
    written = listed["/mnt/data/out/deep/total.txt"]
    assert written.source == "assistant"
    content = await client.containers.files.content.retrieve(written.id, container_id=container.id)
    assert content.read() == b"10"
    # the next call (another pod) sees the container's files; a file it deletes is deleted, one it leaves is kept
    second = await ask(client, "import os\nprint(open('out/deep/total.txt').read())\nos.remove('numbers.csv')",
                       tools=tools)
    assert logs_of(second.output[0]) == "10\n"
    after = {file.path: file async for file in client.containers.files.list(container.id)}
    assert set(after) == {"/mnt/data/out/deep/total.txt"} and after[written.path].id == written.id


@SANDBOX_ONLY
async def test_an_endless_loop_is_stopped_and_its_claim_deleted(client: openai.AsyncOpenAI, stack: Stack) -> None:
    response = await ask(client, "print('before', flush=True)\nopen('kept.txt', 'w').write('x')\nwhile True:\n"
                                 "    pass")
    call = response.output[0]
    assert call.status == "failed" and response.status == "completed"
    assert "time limit" in logs_of(call) and "before" in logs_of(call)
    assert await no_claims_left(stack.cluster) == []
    assert logs_of((await ask(client, "print('still here')")).output[0]) == "still here\n"


@SANDBOX_ONLY
async def test_output_past_the_limit_is_capped(client: openai.AsyncOpenAI) -> None:
    response = await ask(client, "import sys\nfor _ in range(30):\n    sys.stdout.write('x' * 1_000_000)")
    logs = logs_of(response.output[0])
    assert len(logs) < 70 * 1024 and "more bytes of stdout were cut" in logs
    assert response.output[0].status == "completed"


async def test_a_tier_without_a_pool_and_a_network_policy_are_clear_400s(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await ask(client, "print(1)", tools=[{"type": "code_interpreter",
                                              "container": {"type": "auto", "memory_limit": "16g"}}])
    assert refused.value.code == "sandbox_unavailable" and "memory_limit 16g" in refused.value.message
    assert refused.value.param == "tools[0]"
    with pytest.raises(openai.BadRequestError) as refused:
        await ask(client, "print(1)", tools=[{"type": "code_interpreter", "container": {
            "type": "auto", "network_policy": {"type": "allowlist", "allowed_domains": ["example.com"]}}}])
    assert refused.value.code == "sandbox_unavailable" and "network" in refused.value.message
    big = await client.containers.create(name="16g", memory_limit="16g")  # a named container keeps its tier
    with pytest.raises(openai.BadRequestError) as refused:
        await ask(client, "print(1)", tools=[{"type": "code_interpreter", "container": big.id}])
    assert "memory_limit 16g" in refused.value.message
    # a tier that has a pool runs there
    response = await ask(client, "print('4g')", tools=[{"type": "code_interpreter",
                                                        "container": {"type": "auto", "memory_limit": "4g"}}])
    assert logs_of(response.output[0]) == "4g\n"


@SANDBOX_ONLY
async def test_a_pool_with_no_ready_pod_is_a_clear_error_and_a_metric(client: openai.AsyncOpenAI,
                                                                      stack: Stack) -> None:
    stack.cluster.kube.stalled.add("bridge-1g")
    try:
        response = await ask(client, "print(1)")
    finally:
        stack.cluster.kube.stalled.discard("bridge-1g")
    call = response.output[0]
    assert call.status == "failed" and response.status == "completed"
    assert "bridge-1g became ready within 2 s" in logs_of(call) + response.output[-1].content[0].text
    assert await no_claims_left(stack.cluster) == []  # the claim that never readied was deleted
    async with aiohttp.ClientSession() as session, session.get(f"{stack.sidecar.http_url}/metrics") as reply:
        text = await reply.text()
    assert 'responses_bridge_sandbox_claims_total{outcome="not_ready",pool="bridge-1g"}' in text




@SANDBOX_ONLY
async def test_a_pod_whose_file_api_stops_answering_fails_the_call_in_time(client: openai.AsyncOpenAI,
                                                                         stack: Stack) -> None:
    stack.cluster.pods.hold_files(True)
    try:
        response = await ask(client, "print(1)")
    finally:
        stack.cluster.pods.hold_files(False)
    call = response.output[0]
    assert call.status == "failed" and response.status == "completed"
    said = logs_of(call) + response.output[-1].content[0].text
    assert "did not take the container's files within 3 s" in said
    assert await no_claims_left(stack.cluster) == []


@SANDBOX_ONLY
async def test_calls_at_once_each_get_a_pod_of_their_own(client: openai.AsyncOpenAI, stack: Stack) -> None:
    before = len(stack.cluster.pods.started)
    answers = await asyncio.gather(*(ask(client, f"import os\nopen('mine', 'w').write('{n}')\n"
                                                 f"print(sorted(os.listdir('.')), open('mine').read())")
                                     for n in range(3)))
    assert sorted(logs_of(answer.output[0]) for answer in answers) == [
        f"['mine'] {n}\n" for n in range(3)]  # no call saw another's files
    assert len(stack.cluster.pods.started) - before == 3
    assert await no_claims_left(stack.cluster) == []


@SANDBOX_ONLY
async def test_an_allocation_past_the_pod_s_memory_fails_as_on_bubblewrap(client: openai.AsyncOpenAI) -> None:
    response = await ask(client, "block = bytearray(16 * 1024 ** 3)")
    assert "MemoryError" in logs_of(response.output[0]) and response.status == "completed"
    assert "out of memory" in logs_of(response.output[0]) + response.output[-1].content[0].text
