"""A small file whose text is large, named by ``file_id`` in many requests at once, through a real sidecar with
``auth: keys`` and two tenants on a 128 MiB budget: the text each request extracts is held in the budget at its size
(before, only 30 times the file's stored bytes was: a 10 KB DOCX holding 10 million characters, 16 requests, grew the
sidecar to 510 MB while the budget held 4.7 MiB), so past the tenants' room a request is the budget's 503 in the
OpenAI shape, the sidecar grows by less than the budget, and nothing stays held once the requests end.

The sidecar is on a SQLite file of its own (its budget and keys are the process's), so the PostgreSQL pass of
scripts/test leaves the module out."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.integration.test_program_containment import make_keys
from tests.support.bridge import Sidecar, budget_held_bytes, running_sidecar
from tests.support.memory import reset_peak, status_kb
from tests.support.schema import validate_response

pytestmark = pytest.mark.store_free

MODEL = "fake-model"
BUDGET = 128 << 20
CHARS = 8_000_000
REQUESTS = 12
WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def dense_docx(chars: int) -> bytes:
    """A DOCX of a few kilobytes whose one paragraph holds ``chars`` characters."""
    document = (f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{WORD}"><w:body><w:p><w:r><w:t>'
                + "a" * chars + "</w:t></w:r></w:p></w:body></w:document>")
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.'
                                                'org/package/2006/content-types"/>')
        archive.writestr("word/document.xml", document)
    return packed.getvalue()


@dataclass
class Stack:
    sidecar: Sidecar
    keys: dict[str, str]

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("file-input-memory")
    db = tmp / "bridge.db"
    keys = await make_keys(db, "acme", "beta")
    async with running_sidecar(str(tmp), fake_upstream, "--db", str(db), extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "keys",
                                    "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET)},
                               own_sqlite=True) as sidecar:
        yield Stack(sidecar, keys)


async def upload(stack: Stack, tenant: str, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("purpose", "user_data")
    form.add_field("file", data, filename="dense.docx")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.sidecar.http_url}/v1/files", data=form,
                                headers=stack.headers(tenant)) as response:
            body = await response.json()
            assert response.status == 200, body
            return str(body["id"])


async def ask(stack: Stack, tenant: str, file_id: str) -> tuple[int, dict[str, Any]]:
    """A request naming the file, whose answer the fake model holds back 1.5 s (the text is held meanwhile); the
    last message is short, so the answer does not echo the file."""
    body = {"model": MODEL, "store": False, "input": [
        {"role": "user", "content": [{"type": "input_file", "file_id": file_id}]},
        {"role": "user", "content": "What does it say? [stall=1500]"}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async with session.post(f"{stack.sidecar.http_url}/v1/responses", json=body,
                                headers=stack.headers(tenant)) as response:
            answer = await response.json(content_type=None)
            if response.status == 200:
                validate_response(answer)
            return response.status, answer


async def budget_held(stack: Stack) -> int:
    return await budget_held_bytes(stack.sidecar.http_url)


async def test_a_small_files_large_text_is_held_in_the_budget(stack: Stack) -> None:
    data = dense_docx(CHARS)
    assert len(data) < 64 << 10
    files = {tenant: await upload(stack, tenant, data) for tenant in ("acme", "beta")}
    pid = stack.sidecar.process.pid
    before = reset_peak(pid)
    tenants = [("acme", "beta")[index % 2] for index in range(REQUESTS)]
    answers = await asyncio.gather(*(ask(stack, tenant, files[tenant]) for tenant in tenants))
    grown_mib = (status_kb(pid, "VmHWM") - before) / 1024
    served = 0
    for status, body in answers:
        if status == 200:
            assert body["status"] == "completed"
            served += 1
            continue
        assert status == 503, body
        assert body["error"]["type"] == "server_error", body
        assert body["error"]["code"] in ("server_overloaded", "memory_share_exceeded"), body
    print(f"{served} of {REQUESTS} served, the rest 503; the sidecar grew {grown_mib:.0f} MiB on a "
          f"{BUDGET >> 20} MiB budget ({REQUESTS} x {CHARS:,} characters of text asked for)")
    assert served >= 1  # requests extracting at once hold parts of their text: some wait past 2 s and are 503
    assert grown_mib < (BUDGET >> 20) + 64, grown_mib
    assert await budget_held(stack) == 0
