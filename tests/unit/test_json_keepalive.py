"""The JSON keep-alive (json_keepalive.py) writing to a client that went away: a greedy client cut while the
whitespace goes out made the keeper's write fail with aiohttp's ``ClientConnectionResetError`` ("Cannot write to
closing transport"), which was raised in place of the request's cancellation, reached the error middleware, was
logged ``unhandled_error`` and answered by a 500 tried on the closed socket. A client gone is a disconnect: the
request is cancelled as aiohttp cancels it when the client goes (it drops the connection quietly).

The request is aiohttp's own (``make_mocked_request``) and writes through aiohttp's real ``StreamWriter``; only the
transport under it is the test's, closing as a cut client's is.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request

from responses_bridge.adapters.http.errors import error_middleware
from responses_bridge.adapters.http.json_keepalive import answer_kept_alive
from responses_bridge.adapters.http.observe import STARTED
from responses_bridge.engine.wire import Reply

EVERY = 0.01


class CutTransport(asyncio.Transport):
    """A client's transport: open until :attr:`closing` is set (the client went away), then every write through
    aiohttp's writer fails as on a closing transport."""

    def __init__(self, closing: bool) -> None:
        super().__init__()
        self.closing = closing
        self.sent = b""

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: Any) -> None:
        self.sent += bytes(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class FakeRun:
    response_id = "resp_cut"

    def __init__(self) -> None:
        self.committed = False

    def commit(self) -> None:
        self.committed = True


class FailingTransport(CutTransport):
    def write(self, data: Any) -> None:
        raise RuntimeError("not a disconnect")


def kept_alive_request(transport: CutTransport) -> web.Request:
    """A request that has already waited past the keep-alive's first wait: the keeper starts at once."""
    loop = asyncio.get_running_loop()
    writer = StreamWriter(SimpleNamespace(transport=transport), loop)  # type: ignore[arg-type]
    request = make_mocked_request("POST", "/v1/responses", writer=writer, transport=transport)
    request[STARTED] = time.perf_counter() - 1.0
    return request


async def serve(request: web.Request, run: FakeRun) -> tuple[asyncio.Task[web.StreamResponse], list[Any], bool]:
    """The request through the error middleware, its run's work waiting forever: the handler's task, the log lines,
    and whether the work was cancelled."""
    work_cancelled = False

    async def work() -> Reply:
        nonlocal work_cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            work_cancelled = True
            raise
        raise AssertionError("unreachable")

    async def handler(request: web.Request) -> web.StreamResponse:
        await answer_kept_alive(request, run, work(), EVERY)  # type: ignore[arg-type]
        raise AssertionError("the work never ends")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(error_middleware(request, handler))
        await asyncio.wait((task,), timeout=10)
    return task, logs, work_cancelled


async def test_a_keepalive_write_to_a_client_gone_is_its_disconnect_not_an_unhandled_error() -> None:
    transport = CutTransport(closing=True)  # cut before the first whitespace went out
    run = FakeRun()
    task, logs, work_cancelled = await serve(kept_alive_request(transport), run)
    assert task.done() and task.cancelled(), task  # before: a 500 response, the ConnectionError logged
    assert run.committed and work_cancelled
    assert not [line for line in logs if line["event"] == "unhandled_error"], logs
    assert [line["error"] for line in logs if line["event"] == "json_keepalive_client_gone"] == [
        "ClientConnectionResetError"], logs


async def test_a_client_cut_after_the_whitespace_began_is_its_disconnect_too() -> None:
    transport = CutTransport(closing=False)
    run = FakeRun()
    request = kept_alive_request(transport)
    served = asyncio.create_task(serve(request, run))
    for _ in range(1000):  # bounded: until the status and a newline went out
        if transport.sent.endswith(b"\n") and b"200" in transport.sent:
            break
        await asyncio.sleep(EVERY)
    assert b"200" in transport.sent and transport.sent.endswith(b"\n"), transport.sent
    transport.closing = True
    task, logs, work_cancelled = await served
    assert task.cancelled() and work_cancelled
    assert not [line for line in logs if line["event"] == "unhandled_error"], logs


async def test_a_write_failing_otherwise_is_still_raised_as_the_error_it_is() -> None:
    task, logs, work_cancelled = await serve(kept_alive_request(FailingTransport(closing=False)), FakeRun())
    assert task.done() and not task.cancelled() and work_cancelled
    assert task.result().status == 500
    assert [line for line in logs if line["event"] == "unhandled_error"], logs

