"""``auth: none`` answers loopback names only (adapters/http/hosts.py): a real sidecar without keys, with the
console on, and a real Envoy in front of it.

What it proves: under DNS rebinding a web page's requests reach the loopback door with the page's own name in
``Host`` (``evil.example:PORT``), and those are refused — the API (the openai SDK's own call, a stored response's
read, the model list) and the console's pages and forms alike — with a 403 in OpenAI's shape naming
``allowed_hosts``, while the same requests under every loopback name (``127.0.0.1``, ``localhost``,
``*.localhost``, ``[::1]``) are served; a name the deployment lists in ``allowed_hosts`` is served (and one it does
not list still refused); the probes and ``/favicon.ico`` answer any name; and through Envoy nothing changes: the
API answers a client under any name Envoy's listener faces, and the console stays refused there."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.support.bridge import Sidecar, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk

MODEL = "fake-model"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
async def open_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """``auth: none`` (the default), the console on, nothing named in ``allowed_hosts``."""
    async with running_sidecar(str(tmp_path_factory.mktemp("hosts")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CONSOLE": "on"}) as sidecar:
        yield sidecar


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _stored(sidecar: Sidecar) -> str:
    """A stored response's id (made under a loopback name)."""
    client = async_sdk(base_url=f"{sidecar.http_url}/v1", api_key="unused", max_retries=0, timeout=60)
    return (await client.responses.create(model=MODEL, input="kept for the host checks")).id


async def _get(session: aiohttp.ClientSession, url: str, host: str, **headers: str) -> tuple[int, str]:
    async with session.get(url, headers={"Host": host, **headers}, allow_redirects=False) as answer:
        return answer.status, await answer.text()


def _refused(status: int, text: str) -> bool:
    """The rebinding refusal: a 403 in OpenAI's shape whose message names the setting."""
    import orjson

    if status != 403:
        return False
    error = orjson.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == "host_not_allowed" and error["param"] == "allowed_hosts", error
    assert "allowed_hosts" in error["message"] and "RESPONSES_BRIDGE_ALLOWED_HOSTS" in error["message"], error
    return True


async def test_a_rebinding_host_is_refused_on_the_api_and_the_console_and_loopback_names_are_served(
        open_sidecar: Sidecar) -> None:
    port = _port(open_sidecar.http_url)
    response_id = await _stored(open_sidecar)
    loopback = [f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"console.localhost:{port}",
                f"127.0.0.2:{port}", "localhost", *([f"[::1]:{port}"] if _has_ipv6_loopback() else [])]
    rebinding = [f"evil.example:{port}", "evil.example", f"192.168.1.20:{port}", f"localhost.evil.example:{port}",
                 f"[2001:db8::1]:{port}", f"127.0.0.1.nip.io:{port}"]
    paths = [f"/v1/responses/{response_id}", "/v1/models", "/console/operations", "/console/logs"]
    async with aiohttp.ClientSession() as session:
        for host in loopback:  # the control: every loopback name is served, the API and the console
            for path in paths:
                status, text = await _get(session, open_sidecar.http_url + path, host)
                assert status == 200, (host, path, status, text[:300])
        for host in rebinding:
            for path in paths:
                status, text = await _get(session, open_sidecar.http_url + path, host)
                assert _refused(status, text), (host, path, status, text[:300])
            # a browser cannot send Via; one that is not the rendered Envoy routes' mark admits nothing either
            status, text = await _get(session, open_sidecar.http_url + paths[0], host, Via="1.1 squid")
            assert _refused(status, text), (host, status)
            # the console's forms too (a rebinding page reads the form token off a page it could otherwise load)
            async with session.post(f"{open_sidecar.http_url}/console/operations/keys", data={"tenant": "x"},
                                    headers={"Host": host, "Origin": f"http://{host}"}) as answer:
                assert _refused(answer.status, await answer.text()), host
            # the probes and the favicon answer whatever name a prober or a browser uses
            for open_path, expected in (("/health", 200), ("/health/ready", 200), ("/favicon.ico", 204)):
                status, _ = await _get(session, open_sidecar.http_url + open_path, host)
                assert status == expected, (host, open_path, status)


async def test_the_openai_sdk_under_a_rebinding_host_gets_the_403_and_under_localhost_its_response(
        open_sidecar: Sidecar) -> None:
    port = _port(open_sidecar.http_url)

    def client(host: str) -> openai.AsyncOpenAI:
        return async_sdk(base_url=f"{open_sidecar.http_url}/v1", api_key="unused", max_retries=0, timeout=60,
                         default_headers={"Host": host})

    served = await client(f"localhost:{port}").responses.create(model=MODEL, input="hello from localhost")
    assert served.status == "completed"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client(f"evil.example:{port}").responses.create(model=MODEL, input="hello from a rebinding page")
    assert refused.value.code == "host_not_allowed" and "allowed_hosts" in refused.value.message


async def test_through_envoy_the_api_answers_any_name_and_the_console_stays_refused(open_sidecar: Sidecar) -> None:
    response_id = await _stored(open_sidecar)
    async with envoy_before(open_sidecar) as envoy, aiohttp.ClientSession() as session:
        envoy_port = _port(envoy)
        for host in (f"127.0.0.1:{envoy_port}", f"gateway.example:{envoy_port}", "api.example.com"):
            # routed by Envoy to the sidecar's HTTP door (a stored response; the model list), as before
            for path in (f"/v1/responses/{response_id}", "/v1/models"):
                status, text = await _get(session, envoy + path, host)
                assert status == 200, (host, path, status, text[:300])
            status, text = await _get(session, f"{envoy}/console/operations", host)
            assert status == 403 and "loopback only" in text, (host, status, text[:300])
        client = async_sdk(base_url=f"{envoy}/v1", api_key="unused", max_retries=0, timeout=60,
                           default_headers={"Host": "gateway.example"})
        assert (await client.responses.create(model=MODEL, input="through Envoy")).status == "completed"


async def test_a_host_named_in_allowed_hosts_is_served_and_others_still_refused(fake_upstream: str,
                                                                                tmp_path: Path) -> None:
    async with running_sidecar(str(tmp_path), fake_upstream, "--allowed-hosts", "Bridge.Internal, 10.1.2.3",
                               env={"RESPONSES_BRIDGE_CONSOLE": "on"}) as sidecar, \
            aiohttp.ClientSession() as session:
        port = _port(sidecar.http_url)
        for host in (f"bridge.internal:{port}", "BRIDGE.INTERNAL", f"10.1.2.3:{port}", f"localhost:{port}"):
            for path in ("/v1/models", "/console/logs"):
                status, text = await _get(session, sidecar.http_url + path, host)
                assert status == 200, (host, path, status, text[:300])
        for host in (f"evil.example:{port}", f"other.internal:{port}", f"10.1.2.4:{port}"):
            status, text = await _get(session, f"{sidecar.http_url}/v1/models", host)
            assert _refused(status, text), (host, status)


async def test_with_keys_the_host_is_not_judged(fake_upstream: str, tmp_path: Path) -> None:
    """The control of the setting's scope: a server with keys answers a key's holder under any name (the key, not
    the address, is what it trusts), and refuses one without a key with its 401, not the host's 403."""
    from tests.support.bridge import create_keys

    db = str(tmp_path / "keys.db")
    keys = create_keys(db, ["alpha"])
    async with running_sidecar(str(tmp_path), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_AUTH": "keys"}) as sidecar, aiohttp.ClientSession() as session:
        host = f"evil.example:{_port(sidecar.http_url)}"
        status, _ = await _get(session, f"{sidecar.http_url}/v1/models", host,
                               Authorization=f"Bearer {keys['alpha']}")
        assert status == 200
        status, _ = await _get(session, f"{sidecar.http_url}/v1/models", host)
        assert status == 401
