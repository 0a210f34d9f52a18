"""A plain request pays nothing for the features it does not use: no keep-alive task for a turn that answers at
once, no beta surface made for a request that names none, a response builder whose attributes stay in CPython's
compact form (a program signer is the program run's, set per tenant: run/programs/calls.py); and the benchmark's
A/B installs each tree by what it holds."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.translator import Translator
from responses_bridge.protocol.responses.request import parse_request
from responses_bridge.protocol.tools.multi_agent import NOT_BETA, beta_surface, query_of
from responses_bridge.run import drive
from responses_bridge.sealing import Sealer
from tools.bench.latency.install import tree_digest

ANSWER = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


def _answered(body: dict[str, object], served: frozenset[str] = frozenset()) -> Translator:
    translator = Translator(parse_request(orjson.dumps(body)), [], None, EngineOptions(), Sealer(os.urandom(32)),
                            served=served)
    translator.build_first_request([])
    translator.on_upstream_headers(200, "application/json")
    translator.on_upstream_chunk(ANSWER)
    assert translator.complete() is None
    return translator


def test_a_plain_answers_builder_keeps_its_attributes_compact() -> None:
    """Past 29 instance attributes CPython gives every builder a full dict of its own (five times the memory,
    slower to make and to read on every chunk): the attributes only some requests use live on the class."""
    builder = _answered({"model": "m", "input": "hi"}).builder
    assert len(vars(builder)) <= 29
    assert builder.cite is None and builder.program_sign is None
    assert "program_sign" not in vars(builder)


def test_a_run_keeps_its_fields_in_slots() -> None:
    """A run is made per request and has more fields than CPython shares an instance dict's keys for (30): in
    slots, no dict of its own is built for each one."""
    from responses_bridge.run.response_run import ResponseRun

    run = ResponseRun(None, EngineOptions(), tenant="t")  # type: ignore[arg-type]
    assert not hasattr(run, "__dict__")
    run.upstream_gate = None  # what the doors set after making one


def test_a_request_naming_no_beta_gets_the_shared_surface() -> None:
    assert beta_surface({}, {}) is NOT_BETA
    assert beta_surface(query_of("/v1/responses"), {"content-type": "application/json"}) is NOT_BETA
    assert beta_surface(query_of("/v1/responses?beta=true"), {}).query
    named = beta_surface({"beta": "true"}, {"openai-beta": "a=1, responses_multi_agent=v1"})
    assert named.on
    assert beta_surface({}, {"openresponses-version": "2025-10"}).open_responses


class _Sink:
    def __init__(self, fail: bool = False) -> None:
        self.keepalives = 0
        self.fail = fail

    async def keepalive(self) -> None:
        self.keepalives += 1
        if self.fail:
            raise ConnectionResetError("the client went away")


async def test_a_turn_that_answers_at_once_runs_in_the_callers_task() -> None:
    sink = _Sink()
    caller = asyncio.current_task()

    async def work() -> asyncio.Task[object] | None:
        return asyncio.current_task()

    assert await drive._kept_alive(work(), sink, 60.0) is caller  # type: ignore[arg-type]
    assert sink.keepalives == 0


async def test_a_long_turn_is_kept_alive_until_it_ends() -> None:
    sink = _Sink()
    ended = asyncio.Event()

    async def work() -> str:
        while sink.keepalives < 3:  # goes on until kept alive three times
            await asyncio.sleep(0.01)
        ended.set()
        return "done"

    assert await drive._kept_alive(work(), sink, 0.02) == "done"  # type: ignore[arg-type]
    count = sink.keepalives
    await asyncio.sleep(0.06)
    assert ended.is_set() and sink.keepalives == count  # nothing more once the work ended


async def test_a_failed_keepalive_cancels_the_turn_and_is_raised() -> None:
    sink = _Sink(fail=True)
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(ConnectionResetError):
        await drive._kept_alive(work(), sink, 0.01)  # type: ignore[arg-type]
    assert cancelled.is_set()


def test_a_tree_is_installed_again_only_when_what_it_installs_changed(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "src" / "pkg" / "a.py").write_text("A = 1\n")
    first = tree_digest(tmp_path)
    (tmp_path / "src" / "pkg" / "__pycache__").mkdir()
    (tmp_path / "src" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("")
    assert tree_digest(tmp_path) == first  # byte code and files outside the install change nothing
    (tmp_path / "src" / "pkg" / "a.py").write_text("A = 2\n")
    assert tree_digest(tmp_path) != first


def test_one_envoy_header_is_read_as_the_whole_map_reads_it() -> None:
    """The upstream's ``:status`` is read without making the dict of every header (messages.header_value)."""
    from responses_bridge.adapters.extproc import messages
    from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import HttpHeaders

    headers = HttpHeaders()
    for key, raw, value in ((":status", b"200", ""), ("content-type", b"", "application/json"),
                            ("x-odd", "é".encode(), "")):
        header = headers.headers.headers.add()
        header.key, header.raw_value, header.value = key, raw, value
    whole = messages.header_map(headers)
    for name in (":status", "content-type", "x-odd"):
        assert messages.header_value(headers, name) == whole[name]
    assert messages.header_value(headers, "absent") is None and "absent" not in whole
