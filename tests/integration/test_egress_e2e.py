"""Network policies end to end: the model's code in the real bubblewrap sandbox, the real ``openai`` SDK as the
client, through the HTTP door and a real Envoy. The deployment allows one loopback test host (``127.0.0.1:<its
port>``, by ``RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS``); a container under an ``allowlist`` policy reaches
it through the egress proxy, and nothing else: not the bridge's own ports (on the same address), not a name that
resolves to them, not a domain off the list, not any address directly. A domain secret reaches the test host in a
header, over HTTP and over HTTPS (the proxy intercepting TLS for that host with the call's own authority, and
verifying the host's certificate against a test authority the bridge trusts), while the code, its files, its
``/proc`` and every answer of the bridge hold only a placeholder. The hosted shell under a policy (its
``container_auto.network_policy``) gets the same: it takes the same container → sandbox path.

Envoy hands these requests (server-side tools) to the HTTP door and passes its answer back: the secrets' tests and
the refusals go through both doors (a secret must not come back by either). What the sandbox can reach under a
policy, and a conversation's container kept under the same one, is the egress proxy's and the sandbox's, the same
whichever door the request came in by: those run on the HTTP door alone (``SANDBOX_ONLY``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_code_interpreter_e2e import logs_of, run_code
from tests.integration.test_shell_e2e import run_action
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import EnvoyProcess, have_envoy
from tests.support.gateway import running_gateway
from tests.support.sdk import async_sdk
from tests.support.tls_ca import make_test_ca

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_postgres_start.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

SECRET = "s3cret-Value-only-the-host-may-see"
OUTPUTS = ["code_interpreter_call.outputs"]


@dataclass
class LoopbackHost:
    port: int
    tls_port: int  # the same host over HTTPS, its certificate from a test authority the bridge trusts
    ca_file: Path
    seen: list[dict[str, str]]


@dataclass
class Stack:
    sidecar: Sidecar
    envoy_url: str
    envoy: EnvoyProcess
    host: LoopbackHost
    log: Path

    @property
    def bridge_port(self) -> int:
        return int(self.sidecar.http_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
async def test_host(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LoopbackHost]:
    seen: list[dict[str, str]] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="hello from the test host")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    ca_file, context = make_test_ca(tmp_path_factory.mktemp("tls"), "127.0.0.1")
    plain, tls = web.TCPSite(runner, "127.0.0.1", 0), web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await plain.start()
    await tls.start()
    yield LoopbackHost(plain._server.sockets[0].getsockname()[1],  # type: ignore[union-attr]
                       tls._server.sockets[0].getsockname()[1], ca_file, seen)  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, test_host: LoopbackHost,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir = tmp_path_factory.mktemp("egress")
    log = data_dir / "sidecar.log"
    async with running_gateway(str(data_dir), fake_upstream, log_file=log,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "15",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS":
                                        f"127.0.0.1:{test_host.port}, 127.0.0.1:{test_host.tls_port}",
                                    "SSL_CERT_FILE": str(test_host.ca_file)},  # the bridge trusts the test host
                               ) as gateway:
        yield Stack(gateway.sidecar, gateway.url, gateway.envoy, test_host, log)


SANDBOX_ONLY = pytest.mark.parametrize("client", ["http"], indirect=True)  # the door is not the point


@pytest.fixture(params=["http", "envoy"])
async def client(request: pytest.FixtureRequest, stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    base = stack.envoy_url if request.param == "envoy" else stack.sidecar.http_url
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=90) as sdk:
        yield sdk


PROBE = dedent("""
    import json, os, socket, urllib.request, urllib.error

    def fetch(url, headers=None):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
                return [answer.status, answer.read().decode()[:100]]
        except urllib.error.HTTPError as error:
            return [error.code, error.headers.get("X-Egress-Outcome")]
        except Exception as error:
            return ["error", type(error).__name__]

    def direct(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return "connected"
        except OSError as error:
            return type(error).__name__

    def files_under(*tops, skip=()):  # every file the code can read under tops: one it cannot read cannot leak to it
        texts = []
        for top in tops:
            for folder, folders, names in os.walk(top):
                folders[:] = [name for name in folders if os.path.join(folder, name) not in skip]
                for name in names:
                    try:
                        texts.append(open(os.path.join(folder, name), "rb").read(1 << 20).decode("latin-1"))
                    except OSError:
                        continue
        return texts
""")


def probe(body: str) -> str:
    return PROBE + dedent(body)


async def run(client: openai.AsyncOpenAI, code: str, container: Any) -> dict[str, Any]:
    response = await client.responses.create(
        model="fake-model", input=run_code(code), include=OUTPUTS,  # type: ignore[list-item]
        tools=[{"type": "code_interpreter", "container": container}])  # type: ignore[list-item, typeddict-item]
    call = response.output[0]
    assert call.type == "code_interpreter_call" and call.status == "completed", response.output
    logs = logs_of(call)
    return dict(orjson.loads(logs.strip().splitlines()[-1]), _response=response.model_dump_json(), _logs=logs)


@SANDBOX_ONLY
async def test_the_allowed_host_is_reached_and_nothing_else(client: openai.AsyncOpenAI, stack: Stack) -> None:
    host, bridge = stack.host.port, stack.bridge_port
    before = len(stack.host.seen)
    found = await run(client, probe(f"""
        print(json.dumps({{
            "proxy": os.environ.get("HTTP_PROXY"),
            "allowed": fetch("http://127.0.0.1:{host}/hello"),
            "bridge": fetch("http://127.0.0.1:{bridge}/health"),
            "bridge_by_name": fetch("http://localhost:{bridge}/health"),
            "other_domain": fetch("http://example.com/"),
            "other_ip": fetch("http://10.0.0.1:{host}/hello"),
            "direct_host": direct({host}),
            "direct_bridge": direct({bridge}),
        }}))
    """), {"type": "auto", "network_policy": {"type": "allowlist", "allowed_domains": ["127.0.0.1", "localhost"]}})
    assert found["proxy"] == "http://127.0.0.1:3128"
    assert found["allowed"] == [200, "hello from the test host"]
    assert found["bridge"] == [403, "denied_address"] and found["bridge_by_name"] == [403, "denied_address"]
    assert found["other_domain"] == [403, "denied_domain"] and found["other_ip"] == [403, "denied_domain"]
    assert found["direct_host"] == "ConnectionRefusedError" and found["direct_bridge"] == "ConnectionRefusedError"
    assert len(stack.host.seen) == before + 1
    async with aiohttp.ClientSession() as session, session.get(f"{stack.sidecar.http_url}/metrics") as answer:
        metrics = await answer.text()
    for outcome in ("ok", "denied_address"):
        assert f'responses_bridge_egress_connections_total{{domain="127.0.0.1",outcome="{outcome}"}}' in metrics
    assert 'responses_bridge_egress_connections_total{domain="(none)",outcome="denied_domain"}' in metrics
    assert 'responses_bridge_egress_bytes_total{direction="received",domain="127.0.0.1"}' in metrics


async def test_a_domain_secret_reaches_the_host_and_never_the_sandbox(client: openai.AsyncOpenAI,
                                                                      stack: Stack) -> None:
    policy = {"type": "allowlist", "allowed_domains": ["127.0.0.1"],
              "domain_secrets": [{"domain": "127.0.0.1", "name": "API_KEY", "value": SECRET}]}
    container = await client.containers.create(name="with a secret", network_policy=policy)  # type: ignore[arg-type]
    shown = await client.containers.retrieve(container.id)
    assert shown.network_policy is not None and shown.network_policy.type == "allowlist"
    assert shown.network_policy.allowed_domains == ["127.0.0.1"]
    assert SECRET not in container.model_dump_json() and SECRET not in shown.model_dump_json()
    host = stack.host.port
    found = await run(client, probe(f"""
        placeholder = os.environ["API_KEY"]
        seen = []
        for root in ("/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"):
            try:
                seen.append(open(root, "rb").read().decode("latin-1"))
            except OSError as error:
                seen.append(type(error).__name__)
        # /opt/venv is the bridge's own interpreter prefix, bound read-only: files written when it was installed,
        # never by a call (reading its ~39,000 files, 1.1 GB here, took a loaded machine past the call's time limit)
        seen += files_under("/tmp", "/mnt/data", "/run", "/opt", skip=("/opt/venv",))
        print(json.dumps({{
            "placeholder": placeholder,
            "answer": fetch("http://127.0.0.1:{host}/hello", {{"Authorization": "Bearer " + placeholder}}),
            "tls": fetch("https://127.0.0.1:{stack.host.tls_port}/hello",
                         {{"Authorization": "Bearer " + placeholder}}),
            "found": any(({SECRET[:8]!r} + {SECRET[8:]!r}) in text for text in seen),
            "env": dict(os.environ),
        }}))
    """), container.id)
    assert found["answer"] == [200, "hello from the test host"] and found["tls"] == found["answer"]
    assert [seen["Authorization"] for seen in stack.host.seen[-2:]] == [f"Bearer {SECRET}"] * 2
    assert found["placeholder"] != SECRET and found["found"] is False
    assert SECRET not in orjson.dumps(found["env"]).decode()
    assert SECRET not in found["_logs"], found["_logs"]
    at = found["_response"].find(SECRET)
    assert at < 0, found["_response"][max(0, at - 300):at + 50]
    assert SECRET not in stack.log.read_text(errors="replace")


async def test_the_echo_of_tools_hides_a_secret_given_on_an_auto_container(client: openai.AsyncOpenAI,
                                                                          stack: Stack) -> None:
    policy = {"type": "allowlist", "allowed_domains": ["127.0.0.1"],
              "domain_secrets": [{"domain": "127.0.0.1", "name": "TOKEN", "value": SECRET}]}
    found = await run(client, 'import json, os\nprint(json.dumps({"set": os.environ["TOKEN"] != ""}))',
                      {"type": "auto", "network_policy": policy})
    assert found["set"] is True and SECRET not in found["_response"]
    stored = await client.responses.retrieve(orjson.loads(found["_response"])["id"])
    assert SECRET not in stored.model_dump_json()


@SANDBOX_ONLY
async def test_the_disabled_policy_has_no_network(client: openai.AsyncOpenAI, stack: Stack) -> None:
    host = stack.host.port
    for container in ({"type": "auto"}, {"type": "auto", "network_policy": {"type": "disabled"}}):
        found = await run(client, probe(f"""
            print(json.dumps({{"proxy": os.environ.get("HTTP_PROXY"), "socket": os.path.exists("/run/egress.sock"),
                               "direct": direct({host}), "fetch": fetch("http://127.0.0.1:{host}/hello")}}))
        """), container)
        assert found["proxy"] is None and found["socket"] is False
        assert found["direct"] == "ConnectionRefusedError" and found["fetch"][0] == "error"


@pytest.mark.parametrize(("policy", "param"), [
    ({"type": "allowlist", "allowed_domains": []}, "tools[0].container.network_policy.allowed_domains"),
    ({"type": "allowlist", "allowed_domains": ["a.com"], "domain_secrets": [{"domain": "b.com", "name": "K",
                                                                           "value": "v"}]},
     "tools[0].container.network_policy.domain_secrets[0].domain"),
])
async def test_a_bad_policy_is_a_400_naming_its_field(client: openai.AsyncOpenAI, policy: dict[str, Any],
                                                      param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="fake-model", input="hi", tools=[  # type: ignore[list-item]
            {"type": "code_interpreter", "container": {"type": "auto", "network_policy": policy}}])
    assert refused.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.containers.create(name="bad", network_policy=policy)  # type: ignore[arg-type]
    assert refused.value.body["param"] == param.removeprefix("tools[0].container.")  # type: ignore[index]


async def test_generated_network_policies_never_fail_the_server(stack: Stack) -> None:
    """Generated ``POST /v1/containers`` bodies with hostile ``network_policy`` values: 400s in OpenAI's shape or
    made containers, never a status of 500 or more. 300 through the HTTP door, which checks them; the first 60 of
    the same (derandomized) run through Envoy, which passes the route's bodies to that door unread: enough to see
    no hostile body turns into an Envoy-side failure (before, 300 through each: two fifths of the module's work)."""
    import asyncio

    from tests.support.fuzz import Tally
    from tests.support.fuzz_containers import run_network_policies

    for base, examples in ((stack.sidecar.http_url, 300), (stack.envoy_url, 60)):
        tally = await asyncio.to_thread(run_network_policies, Tally(base), examples)
        assert tally.sent >= examples and all(status < 500 for status in tally.statuses), tally.statuses
        assert tally.statuses[200] > 0 and tally.statuses[400] > 0, tally.statuses


async def test_a_deployment_without_allowlists_answers_them_with_a_400(fake_upstream: str, tmp_path: Path) -> None:
    """``RESPONSES_BRIDGE_CODE_EGRESS_ALLOWLIST=false``: an ``allowlist`` policy is a 400 naming the field on both
    routes that take one, while ``disabled`` is taken as ever."""
    policy = {"type": "allowlist", "allowed_domains": ["example.com"]}
    async with running_sidecar(str(tmp_path), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_CODE_EGRESS_ALLOWLIST": "false"}) as sidecar, \
            async_sdk(base_url=f"{sidecar.http_url}/v1", api_key="sk", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.containers.create(name="c", network_policy=policy)  # type: ignore[arg-type]
        assert refused.value.body["param"] == "network_policy"  # type: ignore[index]
        assert refused.value.body["code"] == "network_policy_not_allowed"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="fake-model", input="hi", tools=[  # type: ignore[list-item]
                {"type": "code_interpreter", "container": {"type": "auto", "network_policy": policy}}])
        assert refused.value.body["param"] == "tools[0].container.network_policy"  # type: ignore[index]
        made = await client.containers.create(name="c", network_policy={"type": "disabled"})
        assert made.network_policy is not None and made.network_policy.type == "disabled"


# --- the hosted shell under a network policy: the same container → sandbox path, so the same proxy and secrets ---

needs_shell = pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused")


async def shell(client: openai.AsyncOpenAI, script: str, environment: dict[str, Any]) -> dict[str, Any]:
    """Run ``script`` with python3 from a hosted shell command (a heredoc), the JSON it prints last read back."""
    response = await client.responses.create(
        model="fake-model", tools=[{"type": "shell", "environment": environment}],  # type: ignore[list-item]
        input=run_action(commands=[f"python3 - <<'PY'\n{script}\nPY"]))
    call, output = response.output[0], response.output[1]
    assert call.type == "shell_call" and output.type == "shell_call_output", response.output
    [command] = output.output
    assert command.outcome.type == "exit" and command.outcome.exit_code == 0, command
    return dict(orjson.loads(command.stdout.strip().splitlines()[-1]), _response=response.model_dump_json(),
                _stdout=command.stdout, _id=response.id)


@SANDBOX_ONLY
@needs_shell
async def test_the_shell_reaches_the_allowed_host_and_nothing_else(client: openai.AsyncOpenAI, stack: Stack) -> None:
    host, bridge = stack.host.port, stack.bridge_port
    before = len(stack.host.seen)
    found = await shell(client, probe(f"""
        print(json.dumps({{
            "proxy": os.environ.get("HTTPS_PROXY"),
            "allowed": fetch("http://127.0.0.1:{host}/hello"),
            "bridge": fetch("http://127.0.0.1:{bridge}/health"),
            "other_domain": fetch("http://example.com/"),
            "direct_host": direct({host}),
            "direct_bridge": direct({bridge}),
        }}))
    """), {"type": "container_auto",
           "network_policy": {"type": "allowlist", "allowed_domains": ["127.0.0.1", "localhost"]}})
    assert found["proxy"] == "http://127.0.0.1:3128"
    assert found["allowed"] == [200, "hello from the test host"]
    assert found["bridge"] == [403, "denied_address"] and found["other_domain"] == [403, "denied_domain"]
    assert found["direct_host"] == "ConnectionRefusedError" and found["direct_bridge"] == "ConnectionRefusedError"
    assert len(stack.host.seen) == before + 1
    without = await shell(client, probe(f"""
        print(json.dumps({{"proxy": os.environ.get("HTTP_PROXY"), "fetch": fetch("http://127.0.0.1:{host}/hello")}}))
    """), {"type": "container_auto", "network_policy": {"type": "disabled"}})
    assert without["proxy"] is None and without["fetch"][0] == "error"  # disabled: no network at all


@needs_shell
async def test_a_domain_secret_reaches_the_host_from_the_shell_and_never_the_sandbox(client: openai.AsyncOpenAI,
                                                                                    stack: Stack) -> None:
    policy = {"type": "allowlist", "allowed_domains": ["127.0.0.1"],
              "domain_secrets": [{"domain": "127.0.0.1", "name": "API_KEY", "value": SECRET}]}
    host = stack.host.port
    found = await shell(client, probe(f"""
        placeholder = os.environ["API_KEY"]
        seen = [open("/proc/self/environ", "rb").read().decode("latin-1"), *files_under("/tmp", "/mnt/data", "/run")]
        print(json.dumps({{
            "placeholder": placeholder,
            "answer": fetch("http://127.0.0.1:{host}/hello", {{"Authorization": "Bearer " + placeholder}}),
            "found": any(({SECRET[:8]!r} + {SECRET[8:]!r}) in text for text in seen),
        }}))
    """), {"type": "container_auto", "network_policy": policy})
    assert found["answer"] == [200, "hello from the test host"]
    assert stack.host.seen[-1]["Authorization"] == f"Bearer {SECRET}"
    assert found["placeholder"] != SECRET and found["found"] is False
    assert SECRET not in found["_stdout"] and SECRET not in found["_response"]
    stored = await client.responses.retrieve(found["_id"])
    assert SECRET not in stored.model_dump_json()
    environment = stored.tools[0].environment  # type: ignore[union-attr]
    assert environment.network_policy.domain_secrets[0].value == "[redacted]"  # type: ignore[union-attr]
    assert SECRET not in stack.log.read_text(errors="replace")


@SANDBOX_ONLY
@needs_shell
async def test_a_shell_conversation_keeps_its_container_only_under_the_same_policy(
        client: openai.AsyncOpenAI) -> None:
    allow = {"type": "container_auto", "network_policy": {"type": "allowlist", "allowed_domains": ["127.0.0.1"]}}
    first = await client.responses.create(model="fake-model", input="sh: echo kept > note.txt",
                                          tools=[{"type": "shell", "environment": allow}])  # type: ignore[list-item]
    same = await client.responses.create(model="fake-model", input="sh: cat note.txt",
                                         tools=[{"type": "shell", "environment": allow}],  # type: ignore[list-item]
                                         previous_response_id=first.id)
    assert same.output[0].environment == first.output[0].environment  # type: ignore[union-attr]
    assert same.output[1].output[0].stdout == "kept\n"  # type: ignore[union-attr]
    other = await client.responses.create(model="fake-model", input="sh: ls",
                                          tools=[{"type": "shell", "environment": {"type": "container_auto"}}],  # type: ignore[list-item]
                                          previous_response_id=same.id)
    assert other.output[0].environment != first.output[0].environment  # type: ignore[union-attr]


@needs_shell
async def test_a_deployment_without_allowlists_answers_a_shell_s_with_a_400(fake_upstream: str,
                                                                            tmp_path: Path) -> None:
    policy = {"type": "allowlist", "allowed_domains": ["example.com"]}
    async with running_sidecar(str(tmp_path), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_CODE_EGRESS_ALLOWLIST": "false"}) as sidecar, \
            async_sdk(base_url=f"{sidecar.http_url}/v1", api_key="sk", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="fake-model", input="sh: ls", tools=[  # type: ignore[list-item]
                {"type": "shell", "environment": {"type": "container_auto", "network_policy": policy}}])
        assert refused.value.body["param"] == "tools[0].environment.network_policy"  # type: ignore[index]
        assert refused.value.body["code"] == "network_policy_not_allowed"  # type: ignore[index]
        assert (await client.containers.list()).data == []  # nothing made
