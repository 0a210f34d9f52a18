"""Completing an upload fairly, through both doors (the HTTP door and a real Envoy in front), on the run's store:

* 30 completes of one upload at once: one joins the parts, the 29 others are a 409 before any copy, and the store's
  bytes on disk never pass 2 × the upload's size (the parts, and the others' bytes appended into the first) — each
  used to join a full copy;
* the join makes no second copy: an upload as large as the tenant's free ``max_stored_bytes`` completes in parts
  (it used to be a 400 ``storage_limit_exceeded`` past half of them), and once completed only the file counts;
* a part counts the blocks it occupies, so tiny parts cannot hide files from the quota;
* an upload holds at most ``max_upload_parts`` parts: one more is a 400 naming the setting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from tests.support.disk_peak import disk_peak, store_disk_bytes
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sidecar_state import database_of

# Envoy hands these requests to the HTTP door unread (the Uploads API: envoy_config/routes.py
# ``_files_routes``, the processor off): on PostgreSQL its HTTP-door tests run the same store code
pytestmark = pytest.mark.store_via_http_door

MiB = 1 << 20
BLOCK = 4096  # what a part is counted in (store/base_uploads.py PART_BLOCK)
SIZE = 32 * MiB  # the upload the 30 completes race for, sent in 4 parts
QUOTA = 96 * MiB  # the tenant's max_stored_bytes
MAX_PARTS = 8
COMPLETES = 30


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    env = {"RESPONSES_BRIDGE_TENANT_MAX_STORED_BYTES": str(QUOTA),
           "RESPONSES_BRIDGE_MAX_UPLOAD_PARTS": str(MAX_PARTS)}
    async with running_gateway(str(tmp_path_factory.mktemp("upload-completes")), fake_upstream, env=env) as started:
        yield started


def db_path(gateway: Gateway) -> str:
    return database_of(gateway.sidecar.process.argv)


async def upload_in_parts(sdk: openai.AsyncOpenAI, data: bytes, parts: int) -> tuple[str, list[str]]:
    upload = await sdk.uploads.create(bytes=len(data), filename="big.bin", mime_type="application/octet-stream",
                                      purpose="user_data")
    step = -(-len(data) // parts)
    ids = [(await sdk.uploads.parts.create(upload.id, data=data[at:at + step])).id
           for at in range(0, len(data), step)]
    return upload.id, ids


async def test_thirty_completes_at_once_join_once(sdk: openai.AsyncOpenAI, door_url: str, gateway: Gateway) -> None:
    data = random.Random(7).randbytes(SIZE)
    before = await store_disk_bytes(db_path(gateway))
    upload_id, parts = await upload_in_parts(sdk, data, 4)

    async def complete(http: aiohttp.ClientSession) -> tuple[int, dict]:
        async with http.post(f"{door_url}/v1/uploads/{upload_id}/complete", json={"part_ids": parts}) as response:
            return response.status, await response.json()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=300)) as http:
        async with disk_peak(db_path(gateway), baseline=before) as watch:
            answers = await asyncio.gather(*(complete(http) for _ in range(COMPLETES)))
    ratio = watch.growth / SIZE
    print(f"\n{COMPLETES} completes of one {SIZE // MiB} MiB upload: disk peak {ratio:.2f} x its size")
    done = [body for status, body in answers if status == 200]
    # the others are refused before any copy: a 409 while the winner joins, or (a request that a loaded machine
    # reaches only after the winner committed) the 400 of an upload already completed
    refused = [(status, body["error"]["code"]) for status, body in answers if status != 200]
    assert len(done) == 1 and len(refused) == COMPLETES - 1, answers
    # which of the two each gets is the machine's timing (a fast disk joins before any other request reaches its
    # claim: all 400s); the claim's 409 itself is tested without timing in tests/unit/test_upload_claims.py
    assert set(refused) <= {(409, "upload_completing"), (400, "upload_completed")}, refused
    assert ratio < 2.0, ratio
    file_id = done[0]["file"]["id"]
    assert (await sdk.files.content(file_id)).content == data
    await sdk.files.delete(file_id)


async def test_an_upload_as_large_as_the_free_quota_completes(sdk: openai.AsyncOpenAI) -> None:
    """With 32 MiB of files (64 of 96 MiB free), a 64 MiB upload in two parts completes (it was a 400
    ``storage_limit_exceeded``: the join's copy counted beside the parts); the quota is then full — the file and
    the filler, the parts no more: one byte more is refused, and after the file is deleted 64 MiB fit again."""
    filler = await sdk.files.create(file=("filler.bin", bytes(32 * MiB)), purpose="user_data")
    data = random.Random(8).randbytes(64 * MiB)
    upload_id, parts = await upload_in_parts(sdk, data, 2)
    done = await sdk.uploads.complete(upload_id, part_ids=parts)
    assert done.status == "completed" and done.file is not None and done.file.bytes == len(data)
    assert (await sdk.files.content(done.file.id)).content == data
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.files.create(file=("one.bin", b"x"), purpose="user_data")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "storage_limit_exceeded", error
    assert f"storage limit of {QUOTA} bytes" in error["message"] and f"({QUOTA} bytes in use)" in error["message"]
    await sdk.files.delete(done.file.id)
    more = await sdk.files.create(file=("more.bin", bytes(64 * MiB)), purpose="user_data")
    for file_id in (filler.id, more.id):
        await sdk.files.delete(file_id)


async def test_tiny_parts_count_by_the_block(sdk: openai.AsyncOpenAI) -> None:
    """A one-byte part occupies a block (4 KiB): with seven blocks free, seven one-byte parts are taken and the
    eighth is a 400 ``storage_limit_exceeded`` (before, parts counted their bytes: a thousand one-byte parts were a
    thousand files for a thousand bytes); the completed file then counts its seven bytes."""
    filler = await sdk.files.create(file=("filler.bin", bytes(QUOTA - 7 * BLOCK)), purpose="user_data")
    upload = await sdk.uploads.create(bytes=7, filename="tiny.bin", mime_type="application/octet-stream",
                                      purpose="user_data")
    parts = [(await sdk.uploads.parts.create(upload.id, data=bytes([65 + n]))).id for n in range(7)]
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.uploads.parts.create(upload.id, data=b"x")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "storage_limit_exceeded", error
    done = await sdk.uploads.complete(upload.id, part_ids=parts)
    assert done.file is not None and (await sdk.files.content(done.file.id)).content == b"ABCDEFG"
    more = await sdk.files.create(file=("more.bin", bytes(7 * BLOCK - 7)), purpose="user_data")  # exactly the rest
    for file_id in (filler.id, done.file.id, more.id):
        await sdk.files.delete(file_id)


async def test_an_upload_holds_at_most_max_upload_parts_parts(sdk: openai.AsyncOpenAI, door_url: str) -> None:
    upload = await sdk.uploads.create(bytes=2 * MAX_PARTS, filename="many.bin", mime_type="application/octet-stream",
                                      purpose="user_data")
    parts = [(await sdk.uploads.parts.create(upload.id, data=b"x")).id for _ in range(MAX_PARTS)]
    form = aiohttp.FormData()
    form.add_field("data", b"x", filename="upload", content_type="application/octet-stream")
    async with aiohttp.ClientSession() as http, \
            http.post(f"{door_url}/v1/uploads/{upload.id}/parts", data=form) as response:
        status, body = response.status, await response.json()
    assert status == 400, body
    assert (body["error"]["code"], body["error"]["param"]) == ("too_many_parts", "data")
    assert "RESPONSES_BRIDGE_MAX_UPLOAD_PARTS" in body["error"]["message"]
    assert f"holds {MAX_PARTS} parts" in body["error"]["message"]
    assert (await sdk.uploads.cancel(upload.id)).status == "cancelled"
    assert len(parts) == MAX_PARTS
