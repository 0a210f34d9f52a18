"""A run that made a server-side call with effects: the mark reaches the root response from a subagent's calls, and
an error in the bridge after it ends the run with its failed Response rather than the door's retryable 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.wire import UpstreamRequest
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.drive import BufferSink, drive
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT

BODY = b'{"model": "m", "input": "hi"}'


async def test_a_subagents_call_marks_its_root(store: SQLiteResponseStore) -> None:
    root = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await root.begin(BODY)
    child = root._subagent_run()
    await child.begin({"model": "m", "input": "task", "store": False})
    grandchild = child._subagent_run()
    await grandchild.begin({"model": "m", "input": "task", "store": False})
    assert not root.effects_made
    assert grandchild.translator is not None
    grandchild.translator.builder.effect_made()
    assert grandchild.effects_made and root.effects_made and not child.effects_made


class _Broken:
    """An upstream client whose call fails with ``error``, which no layer of the loop expects (a bug below, or a
    refusal raised where none was looked for)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @asynccontextmanager
    async def chat(self, request: UpstreamRequest, authorization: str | None = None) -> AsyncIterator[Any]:
        raise self.error
        yield  # pragma: no cover


@pytest.mark.parametrize(("error", "code"), [(RuntimeError("a bug"), "server_error"),
                                             (APIError(429, "slow down", code="rate_limit_exceeded"),
                                              "rate_limit_exceeded")], ids=["bug", "refusal"])
async def test_an_error_in_the_bridge_after_a_call_with_effects_ends_as_the_failed_response(
        store: SQLiteResponseStore, error: Exception, code: str) -> None:
    run = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    call = await run.begin(BODY)
    assert run.translator is not None
    run.translator.builder.effect_made()  # as the tool loop marks it before an MCP call goes out
    reply = await drive(run, call, _Broken(error), None, BufferSink())  # type: ignore[arg-type]
    body = orjson.loads(reply.body)
    assert reply.status == 200 and body["status"] == "failed" and body["error"]["code"] == code
    stored = await store.get_response(body["id"], tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "failed"
