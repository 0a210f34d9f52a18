"""``responses-bridge probe`` against the fake upstream in each of its modes, the CLI run as a user runs it
(a subprocess), and ``probe_upstream`` itself: the mode, the switches, how few requests it makes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from responses_bridge.demo import fake_server
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.profiles import options_for
from responses_bridge.probe import cache as probe_cache
from responses_bridge.probe.checks import CHECKS, ProbeError, ProbeReport, probe_upstream
from tests.support import zygote


async def start_fake(quirks: str | None = None, *, native: bool = False) -> tuple[object, str]:
    runner, port = await fake_server.start(quirks=quirks, native=native)
    return runner, f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def fake() -> AsyncIterator[str]:
    runner, url = await start_fake()
    try:
        yield url
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


@pytest.fixture
async def llamacpp() -> AsyncIterator[str]:
    runner, url = await start_fake("llamacpp")
    try:
        yield url
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


async def cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI in its own process (forked, tests/support/zygote.py), waited for on a thread: this test's loop keeps
    serving the fake meanwhile."""
    base = {key: value for key, value in os.environ.items()
            if not key.startswith("RESPONSES_BRIDGE_") and key not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    done = await asyncio.to_thread(zygote.run, [sys.executable, "-m", "responses_bridge", *args], timeout=120,
                                   env={**base, "XDG_DATA_HOME": str(data_dir), **(env or {})})
    return done.returncode, done.stdout, done.stderr


async def test_an_openai_faithful_upstream_is_translated_with_no_switch_needed(fake: str, tmp_path: Path) -> None:
    code, out, err = await cli("probe", fake, data_dir=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == "mode: translate"
    assert lines[-2] == "switches: none needed"
    assert "model: fake-model" in lines[0]  # the first model GET /models lists
    rows = {line.split("  ")[0].strip(): line for line in lines[2:-2]}
    assert len(rows) == len(CHECKS)
    assert "no" in rows["native /v1/responses"] and "HTTP 404" in rows["native /v1/responses"]
    for check in ("streaming usage", "tool calls with content: null", "tools without tool_choice", "developer role",
                  "logprobs",
                  "json_schema response_format", "reasoning_content in history", "max_completion_tokens"):
        assert "  yes  " in rows[check], rows[check]


async def test_llamacpp_quirks_are_found_and_the_switches_chosen(llamacpp: str, tmp_path: Path) -> None:
    code, out, err = await cli("probe", llamacpp, "--model", "llama-3.1-8b-instruct", data_dir=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == "mode: translate"
    switches = dict(item.split("=") for item in lines[-2].removeprefix("switches: ").split())
    assert switches == {"tool_call_content": "empty", "developer_role": "system", "tool_calling": "prompt",
                        "json_schema_format": "json_object", "max_tokens_field": "max_tokens"}
    assert any("developer role" in line and "HTTP 500" in line for line in lines)
    assert any("tools without tool_choice" in line and "answered in words" in line for line in lines)
    assert any("max_completion_tokens" in line and "ignored" in line for line in lines)


async def test_the_probe_result_is_cached_and_shown_by_config_show(llamacpp: str, tmp_path: Path) -> None:
    code, _, err = await cli("probe", llamacpp, data_dir=tmp_path)
    assert code == 0, err
    code, out, err = await cli("config", "show", data_dir=tmp_path, env={"RESPONSES_BRIDGE_UPSTREAM": llamacpp})
    assert code == 0, err
    _, cached = yaml.safe_load_all(out)
    entry = cached["probes"][llamacpp]
    assert entry["mode"] == "translate" and entry["model"] == "fake-model"
    assert entry["switches"]["tool_call_content"] == "empty" and isinstance(entry["probed_at"], int)
    assert {row["check"] for row in entry["rows"]} >= {"developer role", "native /v1/responses"}


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    yield tmp_path


async def test_probe_upstream_makes_one_short_request_per_check_and_its_switches_fix_the_quirks(
        llamacpp: str, cache_dir: Path) -> None:
    report = await probe_upstream(llamacpp, model="m", api_key="sk-probe", timeout=5)
    async with aiohttp.ClientSession() as session, session.get(f"{llamacpp.removesuffix('/v1')}/_fake/requests") as r:
        received = (await r.json())["data"]
    assert len(received) == len(CHECKS) - 1  # one chat request per check; the native one is not a chat request
    assert all(entry["headers"]["authorization"] == "Bearer sk-probe" for entry in received)
    assert all(len(entry["body"]["messages"]) <= 3 for entry in received)
    assert all((entry["body"].get("max_tokens") or entry["body"].get("max_completion_tokens")) <= 16
               for entry in received)
    options = options_for(EngineOptions(), "generic", report.switches)  # what a start with mode: auto does
    assert options == options_for(EngineOptions(), "llamacpp", {"tool_result_role": "tool"})
    assert ProbeReport.from_dict(report.as_dict()) == report
    cache = probe_cache.cache_path(str(cache_dir / "deployment" / "bridge.db"))
    assert cache == cache_dir / "deployment" / "probes.json"
    probe_cache.save(cache, report)
    assert probe_cache.cached(cache, llamacpp + "/") == report
    assert probe_cache.cache_path(":memory:") is None and probe_cache.save(None, report) is None


@pytest.mark.parametrize("quirks", [None, "llamacpp"])
async def test_an_upstream_serving_responses_itself_is_native(quirks: str | None, tmp_path: Path) -> None:
    runner, url = await start_fake(quirks, native=True)
    try:
        code, out, err = await cli("probe", url, "--model", "fake-model", data_dir=tmp_path)
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == "mode: native"
    assert any(line.startswith("native /v1/responses") and "  yes  " in line for line in lines)
    assert (lines[-2] == "switches: none needed") == (quirks is None)  # the chat dialect is still measured


async def test_servers_without_stream_options_logprobs_or_reasoning_content(tmp_path: Path) -> None:
    runner, url = await start_fake("no-stream-options,no-logprobs,no-reasoning-content")
    try:
        code, out, err = await cli("probe", url, "--no-cache", data_dir=tmp_path)
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == "mode: translate"
    assert lines[-2] == "switches: stream_usage=false reasoning_history=drop logprobs=false"
    assert not (tmp_path / "responses-bridge" / "probes.json").exists()


async def test_nothing_listening_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        code, out, err = await cli("probe", f"http://127.0.0.1:{port}/v1", "--model", "m", data_dir=tmp_path)
    assert code == 1 and out == ""
    assert err.startswith(f"responses-bridge probe: http://127.0.0.1:{port}/v1 is unreachable: ")
    assert err.count("\n") == 1 and "Traceback" not in err


async def test_nothing_listening_without_a_model_is_unreachable_not_a_missing_model(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, out, err = await cli("probe", f"http://127.0.0.1:{port}/v1", data_dir=tmp_path)
    assert code == 1 and out == ""
    assert err.startswith(f"responses-bridge probe: http://127.0.0.1:{port}/v1 is unreachable: ")
    assert "--model" not in err and err.count("\n") == 1


async def test_a_url_without_a_scheme_is_told_it_needs_one(tmp_path: Path) -> None:
    code, out, err = await cli("probe", "127.0.0.1:18091/v1", data_dir=tmp_path)
    assert code == 2 and out == ""  # a mistake in what was given, as every configuration mistake: exit 2
    assert err.startswith("responses-bridge probe: URL '127.0.0.1:18091/v1': must be an http:// or https:// URL")
    assert err.count("\n") == 1


async def test_a_base_url_without_v1_asks_whether_it_ends_in_v1(fake: str, tmp_path: Path) -> None:
    base = fake.removesuffix("/v1")
    code, _, err = await cli("probe", base, data_dir=tmp_path)
    assert code == 1
    assert err.startswith(f"responses-bridge probe: GET {base}/models gave HTTP 404") and "end in /v1?" in err


async def test_the_cache_is_the_deployments_and_config_show_lists_only_its_upstreams(
        fake: str, llamacpp: str, tmp_path: Path) -> None:
    """Two deployments on one machine: each probe goes beside the database named, and a deployment's ``config
    show`` lists the probes of its own upstreams only (not every URL ever probed by this user)."""
    deployment = tmp_path / "deployment"
    code, _, err = await cli("probe", fake, "--db", str(deployment / "bridge.db"), data_dir=tmp_path)
    assert code == 0, err
    code, _, err = await cli("probe", llamacpp, "--db", str(deployment / "bridge.db"), data_dir=tmp_path)
    assert code == 0, err
    assert set(orjson.loads((deployment / "probes.json").read_bytes())) == {fake, llamacpp}
    assert not (tmp_path / "responses-bridge" / "probes.json").exists()  # not the user's data directory
    config = tmp_path / "bridge.yaml"
    config.write_text(f"db: {deployment / 'bridge.db'}\nupstreams:\n  - {{name: q, url: '{llamacpp}'}}\n"
                      "default_upstream: q\n")
    code, out, err = await cli("config", "show", "--config", str(config), data_dir=tmp_path)
    assert code == 0, err
    effective, served = yaml.safe_load_all(out)
    assert "upstream" not in effective  # the unused default of the lone --upstream
    assert served["serving"] == [{"name": "q", "url": llamacpp, "mode": "translate", "profile": "generic",
                                  "configured": f"upstreams[0] in the configuration file {config}"}]
    assert set(served["probes"]) == {llamacpp}


async def test_a_server_that_never_answers_is_given_up_on(cache_dir: Path) -> None:
    """Connections are taken but no byte comes back: every check ends at its timeout, none hangs the probe."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ProbeError, match=r"no answer within 0\.2s"):
            await probe_upstream(f"http://127.0.0.1:{port}/v1", model="m", api_key=None, timeout=0.2)
        assert len(held) == len(CHECKS)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
