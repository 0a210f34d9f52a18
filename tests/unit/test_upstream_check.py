"""The start check of the upstreams and how they are described: a base URL without ``/v1`` (or ending in
``/chat/completions``) is an error naming the upstream and the fix, a dead upstream names where it was configured,
and an ``upstreams:`` list is described without the unused ``--upstream`` default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from responses_bridge.commands.upstream_check import (
    UpstreamEntry,
    check_upstream,
    check_upstreams,
    configured_upstreams,
)
from responses_bridge.config.settings import load_settings
from responses_bridge.demo import fake_server
from responses_bridge.demo.procs import free_port


@pytest.fixture
async def fake_base() -> AsyncIterator[str]:
    """The fake upstream's address without ``/v1``."""
    runner, port = await fake_server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RESPONSES_BRIDGE_UPSTREAM", "OPENAI_BASE_URL", "RESPONSES_BRIDGE_UPSTREAMS",
                 "RESPONSES_BRIDGE_CONFIG", "RESPONSES_BRIDGE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def entry(url: str, configured: str = "--upstream") -> UpstreamEntry:
    return UpstreamEntry("default", url, "translate", "generic", configured)


async def test_a_base_url_without_v1_is_an_error_naming_the_upstream_and_the_fix(fake_base: str) -> None:
    with capture_logs() as logs:
        assert await check_upstream(entry(fake_base)) == "not_found"
    [line] = logs
    assert line["event"] == "upstream_not_found" and line["log_level"] == "error"
    assert line["upstream"] == "default" and line["url"] == f"{fake_base}/models" and line["status"] == 404
    assert "does the URL end in /v1?" in line["hint"] and f"{fake_base}/v1" in line["hint"]
    assert "--upstream" in line["hint"]


async def test_an_endpoint_url_is_told_to_drop_its_path(fake_base: str) -> None:
    with capture_logs() as logs:
        assert await check_upstream(entry(f"{fake_base}/v1/chat/completions")) == "not_found"
    assert f"drop /chat/completions ({fake_base}/v1)" in logs[0]["hint"]


async def test_the_right_url_is_reachable_at_info(fake_base: str) -> None:
    with capture_logs() as logs:
        assert await check_upstreams([entry(f"{fake_base}/v1")]) == {"default": "reachable"}
    assert [(line["event"], line["log_level"], line["status"]) for line in logs] == [
        ("upstream_reachable", "info", 200)]


def config_with_upstreams(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(f"upstreams:\n  - {{name: local, url: '{url}', mode: native, profile: vllm}}\n"
                    "default_upstream: local\n")
    return path


async def test_a_dead_config_file_upstream_names_the_file_not_the_flag(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    path = config_with_upstreams(tmp_path, dead)
    entries = configured_upstreams(load_settings(config=str(path)), config_path=str(path))
    with capture_logs() as logs:
        assert await check_upstreams(entries) == {"local": "unreachable"}
    [line] = logs
    assert line["event"] == "upstream_unreachable" and line["upstream"] == "local"
    assert f"upstreams[0] in the configuration file {path}" in line["hint"]
    assert "RESPONSES_BRIDGE_UPSTREAM" not in line["hint"] and "--upstream" not in line["hint"]


def test_configured_upstreams_are_the_list_not_the_unused_default(tmp_path: Path) -> None:
    path = config_with_upstreams(tmp_path, "http://10.0.0.5:8000/v1")
    entries = configured_upstreams(load_settings(config=str(path)), config_path=str(path))
    assert [e.described() for e in entries] == [
        {"name": "local", "url": "http://10.0.0.5:8000/v1", "mode": "native", "profile": "vllm"}]


def test_the_lone_upstream_says_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured_upstreams(load_settings(), flag_given=True)[0].configured == "--upstream"
    default = configured_upstreams(load_settings())[0]
    assert default.described()["url"] == "http://127.0.0.1:8090/v1"
    assert default.configured.startswith("the default (set it with --upstream / RESPONSES_BRIDGE_UPSTREAM")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert configured_upstreams(load_settings())[0].configured == "OPENAI_BASE_URL"
