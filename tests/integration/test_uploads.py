"""The Uploads API through both doors, with the openai SDK unmodified: ``client.uploads.upload_file_chunked`` of a 20
MiB file in parts (and in one part) yields a normal ``file-…`` whose content is the bytes sent; every answer
validates strictly against the SDK's types (here and in test_strict_routes.py); what a client gets wrong (sizes, MD5,
part ids, an ended upload, misspelled fields) is an OpenAI-shaped 4xx and leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import aiohttp
import openai
import pytest
from openai.types import Upload
from openai.types.uploads import UploadPart

from tests.support.bridge import Sidecar
from tests.support.fuzz import Tally
from tests.support.fuzz_uploads import run_uploads
from tests.support.sidecar_state import database_of, stored_files

# Envoy hands these requests to the HTTP door unread (the Uploads API: envoy_config/routes.py
# ``_files_routes``, the processor off): on PostgreSQL its HTTP-door tests run the same store code
pytestmark = pytest.mark.store_via_http_door

MiB = 1 << 20
ERROR_KEYS = {"message", "type", "param", "code"}


def payload(size: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(size)


async def stored(sidecar: Sidecar) -> dict[str, bytes]:
    return await stored_files(database_of(sidecar.process.argv))


async def raw_json(http: aiohttp.ClientSession, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with http.post(path, json=body) as response:
        return response.status, await response.json()


async def add_part(http: aiohttp.ClientSession, upload_id: str, data: bytes) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("data", data, filename="upload", content_type="application/octet-stream")
    async with http.post(f"/v1/uploads/{upload_id}/parts", data=form) as response:
        return response.status, await response.json()


def error_of(status: int, body: Any, expected_status: int) -> dict[str, Any]:
    assert status == expected_status, body
    assert set(body["error"]) == ERROR_KEYS
    return dict(body["error"])


async def test_a_20_mib_file_sent_in_parts_is_a_normal_file(client: openai.AsyncOpenAI, sidecar: Sidecar) -> None:
    data = payload(20 * MiB)
    upload = await client.uploads.upload_file_chunked(file=data, filename="train.jsonl", bytes=len(data),
                                                      mime_type="application/jsonl", purpose="fine-tune",
                                                      part_size=6 * MiB, md5=hashlib.md5(data).hexdigest())
    assert upload.status == "completed" and upload.object == "upload" and upload.bytes == len(data)
    assert upload.filename == "train.jsonl" and upload.purpose == "fine-tune"
    assert upload.expires_at == upload.created_at + 3600
    assert upload.file is not None and upload.file.id.startswith("file-") and upload.file.bytes == len(data)
    assert await client.files.retrieve(upload.file.id) == upload.file
    assert (await client.files.content(upload.file.id)).content == data
    assert (await stored(sidecar))[upload.file.id] == data
    # the four parts' bytes are gone: only the file's are kept
    assert sum(1 for value in (await stored(sidecar)).values() if data.startswith(value[:MiB])) == 1
    await client.files.delete(upload.file.id)


async def test_one_part_becomes_the_file_as_it_is(client: openai.AsyncOpenAI, sidecar: Sidecar) -> None:
    """The SDK's default part size (64 MiB) sends a 20 MiB file as one part: no copy is made, and the file is it."""
    data = payload(20 * MiB, seed=4)
    before = set(await stored(sidecar))
    upload = await client.uploads.upload_file_chunked(file=data, filename="one.bin", bytes=len(data),
                                                      mime_type="application/octet-stream", purpose="user_data")
    assert upload.file is not None and (await client.files.content(upload.file.id)).content == data
    assert set(await stored(sidecar)) - before == {upload.file.id}
    await client.files.delete(upload.file.id)


async def test_every_answer_validates_strictly(http: aiohttp.ClientSession) -> None:
    status, created = await raw_json(http, "/v1/uploads", {"bytes": 5, "filename": "a.txt", "mime_type": "text/plain",
                                                           "purpose": "assistants",
                                                           "expires_after": {"anchor": "created_at", "seconds": 7200}})
    assert status == 200 and Upload.model_validate(created, strict=True).status == "pending" and created["file"] is None
    status, part = await add_part(http, created["id"], b"hello")
    assert status == 200 and UploadPart.model_validate(part, strict=True).upload_id == created["id"]
    assert part["id"].startswith("part_") and part["object"] == "upload.part"
    status, done = await raw_json(http, f"/v1/uploads/{created['id']}/complete", {"part_ids": [part["id"]]})
    assert status == 200, done
    completed = Upload.model_validate(done, strict=True)
    assert completed.status == "completed" and completed.file is not None
    assert completed.file.expires_at == completed.file.created_at + 7200  # the upload's expires_after is the file's
    status, again = await raw_json(http, f"/v1/uploads/{created['id']}/complete", {"part_ids": [part["id"]]})
    assert error_of(status, again, 400)["code"] == "upload_completed"
    status, cancelled = await raw_json(http, f"/v1/uploads/{created['id']}/cancel")
    assert error_of(status, cancelled, 400)["code"] == "upload_completed"


async def test_a_wrong_size_md5_or_part_leaves_the_upload_pending(http: aiohttp.ClientSession,
                                                                  client: openai.AsyncOpenAI) -> None:
    upload = await client.uploads.create(bytes=10, filename="b.txt", mime_type="text/plain", purpose="user_data")
    first = await client.uploads.parts.create(upload.id, data=b"01234")
    second = await client.uploads.parts.create(upload.id, data=b"56789")
    status, body = await raw_json(http, f"/v1/uploads/{upload.id}/complete", {"part_ids": [first.id]})
    assert error_of(status, body, 400)["param"] == "part_ids"  # 5 bytes of the 10 declared
    status, body = await raw_json(http, f"/v1/uploads/{upload.id}/complete", {"part_ids": [first.id, first.id]})
    assert error_of(status, body, 400)["param"] == "part_ids[1]"
    status, body = await raw_json(http, f"/v1/uploads/{upload.id}/complete", {"part_ids": [first.id, "part_x"]})
    assert error_of(status, body, 400)["param"] == "part_ids[1]"
    status, body = await raw_json(http, f"/v1/uploads/{upload.id}/complete",
                                  {"part_ids": [first.id, second.id], "md5": "0" * 32})
    assert error_of(status, body, 400)["code"] == "md5_mismatch"
    status, body = await raw_json(http, f"/v1/uploads/{upload.id}/complete", {"part_ids": [first.id, second.id],
                                                                              "md5s": "x"})
    assert error_of(status, body, 400)["code"] == "unknown_parameter"
    done = await client.uploads.complete(upload.id, part_ids=[second.id, first.id],
                                         md5=hashlib.md5(b"5678901234").hexdigest().upper())
    assert done.file is not None and (await client.files.content(done.file.id)).content == b"5678901234"
    await client.files.delete(done.file.id)


async def test_a_cancelled_upload_takes_nothing_more(http: aiohttp.ClientSession, client: openai.AsyncOpenAI,
                                                     sidecar: Sidecar) -> None:
    upload = await client.uploads.create(bytes=MiB, filename="c.bin", mime_type="application/octet-stream",
                                         purpose="user_data")
    before = set(await stored(sidecar))
    await client.uploads.parts.create(upload.id, data=payload(MiB // 2))
    assert len(set(await stored(sidecar)) - before) == 1
    cancelled = await client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled" and cancelled.file is None
    assert set(await stored(sidecar)) - before == set()  # the part's bytes are gone
    assert (await client.uploads.cancel(upload.id)).status == "cancelled"  # again: as it is
    status, body = await add_part(http, upload.id, b"more")
    assert error_of(status, body, 400)["code"] == "upload_cancelled"


async def test_bad_requests_are_openai_shaped(http: aiohttp.ClientSession, client: openai.AsyncOpenAI) -> None:
    good = {"bytes": 4, "filename": "d.txt", "mime_type": "text/plain", "purpose": "assistants"}
    for change, param, code in [({"bytes": -1}, "bytes", "invalid_value"), ({"bytes": True}, "bytes", "invalid_value"),
                                ({"bytes": 1 << 50}, "bytes", "file_too_large"),
                                ({"filename": "../"}, "filename", "invalid_filename"),
                                ({"mime_type": ""}, "mime_type", "invalid_value"),
                                ({"purpose": "nope"}, "purpose", "invalid_value"),
                                ({"expires_after": {"anchor": "created_at", "seconds": 5}}, "expires_after.seconds",
                                 "invalid_value"),
                                ({"mime_typ": "text/plain"}, "mime_typ", "unknown_parameter")]:
        status, body = await raw_json(http, "/v1/uploads", {**good, **change})
        error = error_of(status, body, 400)
        assert (error["param"], error["code"]) == (param, code), change
    status, body = await raw_json(http, "/v1/uploads", {key: value for key, value in good.items() if key != "bytes"})
    assert error_of(status, body, 400)["code"] == "missing_required_parameter"

    upload = await client.uploads.create(**good)  # type: ignore[arg-type]
    status, body = await add_part(http, upload.id, b"12345")  # more than the upload declared
    assert error_of(status, body, 413)["code"] == "part_too_large"
    status, body = await add_part(http, upload.id, b"")
    assert error_of(status, body, 400)["param"] == "data"
    async with http.post(f"/v1/uploads/{upload.id}/parts", data=aiohttp.FormData({"other": "x"},
                                                                           default_to_multipart=True)) as response:
        assert error_of(response.status, await response.json(), 400)["param"] == "data"
    for path in (f"/v1/uploads/upload_{'0' * 32}/cancel", "/v1/uploads/nope/complete",
                 f"/v1/uploads/upload_{'0' * 32}/parts"):
        status, body = await (raw_json(http, path, {"part_ids": []}) if not path.endswith("parts")
                              else add_part(http, path.split("/")[3], b"x"))
        assert error_of(status, body, 404)["param"] == "upload_id", path


async def test_an_empty_file_needs_no_part(client: openai.AsyncOpenAI) -> None:
    upload = await client.uploads.upload_file_chunked(file=b"", filename="empty.txt", bytes=0,
                                                      mime_type="text/plain", purpose="assistants")
    assert upload.file is not None and upload.file.bytes == 0
    assert (await client.files.content(upload.file.id)).content == b""
    await client.files.delete(upload.file.id)


@pytest.mark.parametrize("prefix", ["/uploads"])
async def test_served_without_v1_too(http: aiohttp.ClientSession, prefix: str) -> None:
    status, body = await raw_json(http, prefix, {"bytes": 1, "filename": "e.txt", "mime_type": "text/plain",
                                                 "purpose": "assistants"})
    assert status == 200 and body["object"] == "upload"


async def test_generated_uploads_requests_get_openai_shaped_answers(base_url: str,
                                                                    client: openai.AsyncOpenAI) -> None:
    """Hostile creates, parts, completes and cancels (tests/support/fuzz_uploads.py), some aimed at a real pending
    upload with real parts: never a 5xx, 4xx in the OpenAI shape, always an answer."""
    upload = await client.uploads.create(bytes=1 << 20, filename="fuzz.bin", mime_type="application/octet-stream",
                                         purpose="user_data")
    parts = [(await client.uploads.parts.create(upload.id, data=payload(1000, seed))).id for seed in range(3)]
    tally = await asyncio.to_thread(run_uploads, Tally(base_url), 250, upload.id, parts)
    assert tally.sent >= 250
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0, tally.statuses
