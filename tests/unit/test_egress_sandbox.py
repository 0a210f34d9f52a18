"""The relay inside the real sandbox, in each mode this machine can give: the init's port carries the code's
connections to the egress proxy, and the code can neither take that port, nor stop or read the init that relays,
nor reach anything past the proxy; without a policy there is no relay and no socket at all."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from textwrap import dedent

import pytest
from aiohttp import web

from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.egress.policy import EgressRules, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressSettings
from tests.unit.test_sandbox_containment import MODES, needs_sandbox

pytestmark = needs_sandbox


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
async def host_port() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        RECEIVED.append(request.headers.get("X-Token", "-"))
        return web.Response(text=f"hello {request.headers.get('X-Token', '-')}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


RECEIVED: list[str] = []
"""The X-Token values the host was sent."""


def sandbox_for(mode: str, port: int) -> Sandbox:
    sandbox = Sandbox.detect(SandboxLimits(timeout=20.0), use_cgroup=mode == "cgroup",
                             egress=EgressSettings(EgressRules.parse(f"127.0.0.1:{port}"), EgressLimits()))
    assert sandbox.mode == mode and sandbox.unavailable is None
    return sandbox


CODE = dedent("""
    import json, os, signal, socket, urllib.request

    def fetch():
        try:
            with urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:{port}/hello",
                                        headers={{"X-Token": os.environ.get("TOKEN", "")}}), timeout=10) as answer:
                return answer.read().decode()
        except Exception as error:
            return type(error).__name__

    found = {{"first": fetch()}}
    try:
        socket.socket().bind(("127.0.0.1", 3128))
        found["bind"] = "bound"
    except OSError as error:
        found["bind"] = type(error).__name__
    for signum in (signal.SIGKILL, signal.SIGSTOP, signal.SIGINT):  # (SIGTERM: the init ends the code, as asked)
        try:
            os.kill(1, signum)
        except OSError as error:
            found[f"kill{{int(signum)}}"] = type(error).__name__
    try:
        open("/proc/1/environ", "rb").read()
        found["init_environ"] = "read"
    except OSError as error:
        found["init_environ"] = type(error).__name__
    found["many"] = [fetch() for _ in range(5)]
    found["after"] = fetch()
    found["token"] = os.environ.get("TOKEN")
    print(json.dumps(found))
""")


async def test_the_relay_carries_the_codes_connections_and_stays_the_inits(mode: str, host_port: int) -> None:
    sandbox = sandbox_for(mode, host_port)
    policy = parse_policy({"type": "allowlist", "allowed_domains": ["127.0.0.1"],
                           "domain_secrets": [{"domain": "127.0.0.1", "name": "TOKEN", "value": "t0ken"}]}, "p")
    async with sandbox.call(network=policy) as call:
        result = await call.run(CODE.format(port=host_port))
    assert result.outcome == "ok", result.stderr
    found = json.loads(result.stdout)
    assert RECEIVED[-7:] == ["t0ken"] * 7  # the host got the secret each time
    # and its echo came back written over (sandbox/egress/domain_secrets.py): the placeholder's first letters, never the
    # value
    assert found["first"] == "hello egres" and found["after"] == "hello egres"
    assert found["many"] == ["hello egres"] * 5
    assert found["bind"] == "OSError"  # EADDRINUSE: the init holds the port before the code starts
    assert found["init_environ"] == "PermissionError"
    assert found["token"].startswith("egress-secret-") and "t0ken" not in found["token"]


async def test_without_a_policy_there_is_no_relay_and_no_socket(mode: str, host_port: int) -> None:
    sandbox = sandbox_for(mode, host_port)
    async with sandbox.call() as call:
        result = await call.run(dedent(f"""
            import os, socket
            print(os.path.exists("/run/egress.sock"), os.environ.get("HTTP_PROXY"))
            for port in (3128, {host_port}):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=5)
                    print("connected")
                except OSError as error:
                    print(type(error).__name__)
        """))
    assert result.stdout.split() == ["False", "None", "ConnectionRefusedError", "ConnectionRefusedError"]


async def test_a_deployment_without_allowlists_refuses_a_policy(host_port: int) -> None:
    from responses_bridge.sandbox import SandboxUnavailable

    sandbox = Sandbox.detect(SandboxLimits(timeout=20.0), use_cgroup=False)
    policy = parse_policy({"type": "allowlist", "allowed_domains": ["127.0.0.1"]}, "p")
    with pytest.raises(SandboxUnavailable):
        async with sandbox.call(network=policy):
            pass
