"""The files service's side of parts naming a file: another tenant's file is the files route's 404, a file past
the request's bound is refused before a byte is read, what is read is reserved against the memory budget until
released, and text comes out as retrieval extracts it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.fairness.memory_charge import hold, release_hold
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files.files import FileService
from responses_bridge.services.files.inputs import RAW_COST, TEXT_COST, FileInputs, media_type_of
from responses_bridge.services.tenancy.memory_budget import Held, MemoryBudget
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore

PARAM = "input[0].content[1].file_id"
CHARS = 1_000_000


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[FileService]:
    async with SQLiteResponseStore(str(tmp_path / "files.db")) as db:
        service = FileService(SQLiteFileStore(db), tmp_path / "files", 1 << 20, purge_interval=0)
        await service.start()
        yield service
        await service.aclose()


async def upload(files: FileService, data: bytes, filename: str, tenant: str = "a") -> str:
    async with files.receive(tenant=tenant) as received:
        await received.write(data)
        return str((await files.create(received, filename=filename, purpose="user_data",
                                              expires_after=None))["id"])


async def test_a_file_is_read_reserved_and_given_back(files: FileService) -> None:
    budget = MemoryBudget(1 << 30)
    inputs = FileInputs(files, budget)
    data = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    file_id = await upload(files, data, "dot.png")
    loaded = await inputs.load_file(file_id, tenant="a", max_bytes=1000, want_text=False, pdf_as_file=False,
                                    param=PARAM, max_text_chars=CHARS)
    assert (loaded.data, loaded.media_type, loaded.size, loaded.text) == (data, "image/png", len(data), None)
    assert budget.held == len(data) * RAW_COST
    loaded.release()
    assert budget.held == 0


async def test_a_file_is_reserved_for_the_requests_own_holder(files: FileService) -> None:
    """With ``auth: none`` callers are told apart by their key, which the files service cannot see: a file a
    request reads is reserved for the holder of that request (fairness/memory_charge.py), not for the tenant all the
    callers share."""
    budget = MemoryBudget(1 << 30, by_client_key=True)
    inputs = FileInputs(files, budget)
    file_id = await upload(files, b"\x89PNG\r\n\x1a\n" + b"x" * 100, "dot.png")
    caller = budget.holder("a", "Bearer sk-one")
    held = Held(budget, caller)
    await held.cover(1500)
    token = hold(held)
    try:
        loaded = await inputs.load_file(file_id, tenant="a", max_bytes=1000, want_text=False, pdf_as_file=False,
                                        param=PARAM, max_text_chars=CHARS)
    finally:
        release_hold(token)
    assert budget.held_by(caller) == held.bytes + 108 * RAW_COST and budget.held_by("a") == 0
    loaded.release()
    held.release()
    assert budget.held == 0


async def test_text_is_extracted_and_a_pdf_kept_where_the_backend_reads_files(files: FileService) -> None:
    inputs = FileInputs(files, MemoryBudget(1 << 30))
    text_id = await upload(files, b"# Lamps\nnorth depot", "notes.md")
    loaded = await inputs.load_file(text_id, tenant="a", max_bytes=1000, want_text=True, pdf_as_file=False,
                                    param=PARAM, max_text_chars=CHARS)
    assert (loaded.text, loaded.data) == ("# Lamps\nnorth depot", b"")
    pdf_id = await upload(files, b"%PDF-1.4 not really", "r.pdf")
    kept = await inputs.load_file(pdf_id, tenant="a", max_bytes=1000, want_text=True, pdf_as_file=True, param=PARAM,
                                  max_text_chars=CHARS)
    assert (kept.media_type, kept.text) == ("application/pdf", None)
    with pytest.raises(APIError) as caught:  # a PDF that gives no text, where the backend reads none
        await inputs.load_file(pdf_id, tenant="a", max_bytes=1000, want_text=True, pdf_as_file=False, param=PARAM,
                               max_text_chars=CHARS)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, PARAM, "invalid_file")


async def test_a_files_text_is_held_at_its_size_and_bounded_by_what_the_request_has_left(
        files: FileService) -> None:
    """A small file giving a great deal of text holds that text in the budget (not its stored bytes only),
    until released; past the characters the request's files may still give it is refused, holding nothing."""
    budget = MemoryBudget(1 << 30, 1.0)
    inputs = FileInputs(files, budget)
    text_id = await upload(files, b"z" * 20_000, "many.txt")
    loaded = await inputs.load_file(text_id, tenant="a", max_bytes=1 << 20, want_text=True, pdf_as_file=False,
                                    param=PARAM, max_text_chars=CHARS)
    assert budget.held >= 20_000 + 20_000 * TEXT_COST
    loaded.release()
    assert budget.held == 0
    with pytest.raises(APIError) as caught:
        await inputs.load_file(text_id, tenant="a", max_bytes=1 << 20, want_text=True, pdf_as_file=False,
                               param=PARAM, max_text_chars=19_999)
    assert (caught.value.status, caught.value.code) == (400, "invalid_file") and "in all" in caught.value.message
    assert budget.held == 0


async def test_another_tenants_file_and_a_file_past_the_bound(files: FileService) -> None:
    budget = MemoryBudget(1 << 30)
    inputs = FileInputs(files, budget)
    theirs = await upload(files, b"secret", "s.txt", tenant="b")
    with pytest.raises(APIError) as caught:
        await inputs.load_file(theirs, tenant="a", max_bytes=1000, want_text=True, pdf_as_file=False, param=PARAM,
                               max_text_chars=CHARS)
    assert (caught.value.status, caught.value.param, caught.value.code) == (404, PARAM, "not_found")
    assert caught.value.message == (await _files_404(files, theirs)).message
    big = await upload(files, b"y" * 2000, "big.txt")
    with pytest.raises(APIError) as caught:
        await inputs.load_file(big, tenant="a", max_bytes=1999, want_text=True, pdf_as_file=False, param=PARAM,
                               max_text_chars=CHARS)
    assert (caught.value.status, caught.value.code) == (400, "file_too_large")
    assert budget.held == 0


async def _files_404(files: FileService, file_id: str) -> APIError:
    try:
        await files.retrieve(file_id, tenant="a")
    except APIError as error:
        return error
    raise AssertionError("another tenant's file was found")


def test_media_types_from_the_bytes_first() -> None:
    assert media_type_of("x.txt", b"%PDF-1.7") == "application/pdf"
    assert media_type_of("x", b"RIFF\x00\x00\x00\x00WEBPVP8") == "image/webp"
    assert media_type_of("a.csv", b"a,b") == "text/csv"
    assert media_type_of("noext", b"\x00") == "application/octet-stream"
