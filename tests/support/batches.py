"""The Batch API's tests' parts (tests/integration/test_batches*.py): a fake upstream that counts what it receives per
batch line, the lines of an input file, and the SDK calls every test makes (upload, wait for a status, read a file).
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import orjson
from aiohttp import web
from openai.types import Batch

from responses_bridge.demo.fake_server import create_app
from responses_bridge.demo.procs import free_port

LINE_MARK = re.compile(rb"L(\d+)-([0-9a-f]{12})")
FINAL = ("completed", "failed", "cancelled", "expired")


class CountingUpstream:
    """The fake upstream (demo/fake_server.py) on a free port of this process, counting what it receives per batch
    line: ``counts[marker][n]``."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[int]] = {}
        self.authorizations: dict[str, set[str | None]] = {}  # the Authorization each marker's lines came with
        self.url = ""

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST":
            body = await request.read()
            for number, marker in set(LINE_MARK.findall(body)):
                self.counts.setdefault(marker.decode(), Counter())[int(number)] += 1
                self.authorizations.setdefault(marker.decode(), set()).add(request.headers.get("Authorization"))
        return await handler(request)

    def of(self, marker: str) -> Counter[int]:
        return self.counts.get(marker, Counter())


@asynccontextmanager
async def counting_upstream() -> AsyncIterator[CountingUpstream]:
    """The counting fake, serving until the block ends."""
    counting = CountingUpstream()
    app = create_app()
    app.middlewares.append(counting.count)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    counting.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield counting
    finally:
        await runner.cleanup()


def marker() -> str:
    return uuid.uuid4().hex[:12]


def line(number: int, mark: str, endpoint: str = "/v1/responses", **changes: Any) -> dict[str, Any]:
    text = f"L{number}-{mark}"
    body: dict[str, Any]
    if endpoint == "/v1/responses":
        body = {"model": "fake", "input": text}
    elif endpoint == "/v1/chat/completions":
        body = {"model": "fake", "messages": [{"role": "user", "content": text}]}
    else:
        body = {"model": "fake-embedding", "input": [text, "second"], "encoding_format": "float"}
    return {"custom_id": f"c{number}", "method": "POST", "url": endpoint, "body": body, **changes}


async def upload(client: openai.AsyncOpenAI, lines: list[Any], purpose: str = "batch") -> str:
    raw = b"\n".join(entry if isinstance(entry, bytes) else orjson.dumps(entry) for entry in lines) + b"\n"
    created = await client.files.create(file=("input.jsonl", io.BytesIO(raw)), purpose=purpose)  # type: ignore[arg-type]
    return created.id


async def strict_batch(client: openai.AsyncOpenAI, batch_id: str) -> Batch:
    """The batch as answered, validated by the SDK's ``Batch`` in pydantic's strict mode (every field its type, no
    private field of the store's among them)."""
    raw = await client.batches.with_raw_response.retrieve(batch_id)
    body = orjson.loads(raw.content)
    assert not [key for key in body if key.startswith("_")]
    return Batch.model_validate(body, strict=True)


async def settled(client: openai.AsyncOpenAI, batch_id: str, statuses: tuple[str, ...] = FINAL,
                  timeout: float = 120.0) -> Batch:
    """The batch once its status is one of ``statuses`` (polled), strictly validated."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return await strict_batch(client, batch_id)
        assert asyncio.get_running_loop().time() < deadline, f"batch still {batch.status}"
        await asyncio.sleep(0.05)


async def file_lines(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [orjson.loads(raw) for raw in content.content.splitlines() if raw]
