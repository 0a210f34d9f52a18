"""What docs/troubleshooting.md says a client gets when the model server fails, checked on both doors with the
real ``openai`` SDK: the status, ``type`` and ``code`` of an upstream 5xx and of an upstream nothing listens on,
through the HTTP door and through a real Envoy. Each case names the row of the page that claims it, so the page
and the code cannot drift apart unnoticed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import running_sidecar
from tests.support.envoy import have_envoy, start_envoy
from tests.support.sdk import async_sdk

# its sidecars run on their own SQLite files: the statuses and codes of a failing model server are the doors' own,
# whatever the store (a failed response's storage is test_failed_responses.py's, on both stores)
pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.store_free]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


@dataclass
class Doors:
    http: str
    envoy: str


async def doors_over(upstream: str, tmp_dir: str) -> AsyncIterator[Doors]:
    async with running_sidecar(tmp_dir, upstream, own_sqlite=True) as sidecar:
        listen = free_port()
        envoy = await start_envoy(render_bootstrap(listen_port=listen, extproc_port=sidecar.extproc_port,
                                                   http_port=int(sidecar.http_url.rsplit(":", 1)[1]),
                                                   upstream=upstream, admin_port=0))
        try:
            yield Doors(sidecar.http_url, f"http://127.0.0.1:{listen}")
        finally:
            envoy.stop()


# one stack of each for the module: every test sends requests of its own, which leave nothing another reads
@pytest.fixture(scope="module")
async def live(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Doors]:
    async for doors in doors_over(fake_upstream, str(tmp_path_factory.mktemp("live"))):
        yield doors


@pytest.fixture(scope="module")
async def down(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Doors]:
    async for doors in doors_over(f"http://127.0.0.1:{free_port()}/v1", str(tmp_path_factory.mktemp("down"))):
        yield doors


def documented(status: int, code: str) -> str:
    """The page's row for ``code`` with ``status`` (its first cell may also name an event): fails when none."""
    for line in PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and re.search(rf"\b{status}\b", cells[0]) and f"`{code}`" in cells[1]:
            return line
    raise AssertionError(f"docs/troubleshooting.md has no row for {status} {code}")


async def error_of(base: str, text: str) -> openai.APIStatusError:
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-test", max_retries=0, timeout=60) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model="fake-model", input=text)
    return caught.value


def shape(error: openai.APIStatusError) -> tuple[int, str, str]:
    body = error.body
    assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}, body  # the SDK unwraps
    return error.status_code, body["type"], body["code"]


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_an_upstream_5xx_is_a_502_server_error(live: Doors, door: str) -> None:
    error = await error_of(getattr(live, door), "[error=503] down for maintenance")
    assert shape(error) == (502, "server_error", "server_error")
    assert "The upstream model server failed (HTTP 503): fake upstream error 503" in error.message
    assert "5xx" in documented(502, "server_error")


@pytest.mark.parametrize(("door", "expected"), [("http", (502, "server_error", "upstream_unreachable")),
                                                ("envoy", (502, "server_error", "server_error"))])
async def test_an_upstream_nothing_listens_on(down: Doors, door: str, expected: tuple[int, str, str]) -> None:
    """The HTTP door connects itself and says so; through Envoy, Envoy's 503 "upstream connect error" reaches
    the processor as the upstream's answer, which it turns into the 502 of any upstream 5xx."""
    error = await error_of(getattr(down, door), "anyone there?")
    assert shape(error) == expected
    row = documented(expected[0], expected[2])
    assert ("HTTP door" in row) if door == "http" else ("upstream connect error" in row and "Envoy" in row)


async def test_through_envoy_the_untranslated_chat_route_gets_envoys_503(down: Doors) -> None:
    async with async_sdk(base_url=f"{down.envoy}/v1", api_key="sk-test", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    assert shape(caught.value) == (503, "server_error", "gateway_error")
    assert "/v1/chat/completions" in documented(503, "gateway_error")
