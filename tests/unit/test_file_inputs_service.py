"""The files service's side of parts naming a file: another tenant's file is the files route's 404, a file past
the request's bound is refused before a byte is read, what is read is reserved against the memory budget until
released, and text comes out as retrieval extracts it."""

from __future__ import annotations

import asyncio
import io
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from responses_bridge.fairness.memory_charge import hold, release_hold
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files import inputs as inputs_module
from responses_bridge.services.files.files import FileService
from responses_bridge.services.files.inputs import RAW_COST, TEXT_COST, FileInputs, media_type_of
from responses_bridge.services.files.retrieval.bounds import TEXT_STEP
from responses_bridge.services.files.retrieval.extract import text_bound
from responses_bridge.services.tenancy.memory_budget import Held, MemoryBudget
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore

PARAM = "input[0].content[1].file_id"
CHARS = 1_000_000
WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx(runs: list[str]) -> bytes:
    """A DOCX whose document part holds one run per string (its markup around each)."""
    body = "".join(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>" for text in runs)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", f'<?xml version="1.0"?><w:document xmlns:w="{WORD}"><w:body>{body}'
                                              "</w:body></w:document>")
        archive.writestr("word/styles.xml", "<x>" + "s" * 5000 + "</x>")  # a part the text never comes from
    return packed.getvalue()


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


def test_a_files_text_bound_is_read_off_the_file(tmp_path: Path) -> None:
    """Plain text and HTML give no more characters than their bytes, a DOCX no more than its text parts'
    stated sizes; a PDF, JSON (re-rendered indented) and a file that is no zip have none."""
    cases = {"a.txt": "héllo".encode(), "a.html": b"<p>hi</p>", "a.json": b'{"a":1}', "a.pdf": b"%PDF-1.4",
             "bad.docx": b"not a zip", "a.docx": docx(["one", "two"])}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    bounds = {name: text_bound(tmp_path / name, name) for name in cases}
    with zipfile.ZipFile(tmp_path / "a.docx") as archive:
        document = archive.getinfo("word/document.xml").file_size
    assert bounds == {"a.txt": 6, "a.html": 9, "a.json": None, "a.pdf": None, "bad.docx": None, "a.docx": document}


async def test_a_bounded_files_text_holds_its_bound_ahead_and_then_its_size(
        files: FileService, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound (the document part's bytes, markup and all) is held before the extraction; once the text is
    whole, what it did not come to take is given back: the request holds its file's bytes and its text's size."""
    budget = MemoryBudget(1 << 30, 1.0)
    inputs = FileInputs(files, budget)
    data = docx(["word"] * 2000)  # ~45 bytes of markup per 4 characters of text
    file_id = await upload(files, data, "runs.docx")
    held_during: list[int] = []
    extract = inputs_module._extract

    def watched(path: Path, filename: str, most: int, on_text: Callable[[int], None] | None) -> str:
        held_during.append(budget.held)
        return extract(path, filename, most, on_text)

    monkeypatch.setattr(inputs_module, "_extract", watched)
    loaded = await inputs.load_file(file_id, tenant="a", max_bytes=1 << 20, want_text=True, pdf_as_file=False,
                                    param=PARAM, max_text_chars=CHARS)
    assert loaded.text is not None and loaded.text.count("word") == 2000
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        bound = archive.getinfo("word/document.xml").file_size
    assert held_during == [len(data) + TEXT_COST * (bound + sys.getsizeof(""))]
    assert budget.held == len(data) + TEXT_COST * sys.getsizeof(loaded.text)  # the rest given back
    loaded.release()
    assert budget.held == 0


async def test_requests_extracting_at_once_never_each_hold_a_part_and_wait_for_the_rest(
        files: FileService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three requests of one tenant extracting a 3-step text at once, on room for two texts and a bit: charged
    step by step they each took two steps and all waited for the third until each was the 503 (0 of 3). Holding
    the bound whole first, two are served at once and the third, waiting holding none of it, once one is let go."""
    chars = 3 * TEXT_STEP - 1000
    data = docx(["a" * chars])
    budget = MemoryBudget(2 * TEXT_COST * chars + (TEXT_COST * TEXT_STEP) // 2, 1.0)
    inputs = FileInputs(files, budget)
    file_id = await upload(files, data, "dense.docx")
    extract = inputs_module._extract

    def slow(path: Path, filename: str, most: int, on_text: Callable[[int], None] | None) -> str:
        def told(step: int) -> None:  # each step taken, then the other extractions' turn
            if on_text is not None:
                on_text(step)
            time.sleep(0.05)
        return extract(path, filename, most, told)

    monkeypatch.setattr(inputs_module, "_extract", slow)

    async def ask() -> object:
        loaded = await inputs.load_file(file_id, tenant="a", max_bytes=1 << 20, want_text=True, pdf_as_file=False,
                                        param=PARAM, max_text_chars=4 * TEXT_STEP)
        await asyncio.sleep(0.2)  # the request's model call, its text held
        loaded.release()
        return loaded.text

    answers = await asyncio.gather(*(ask() for _ in range(3)), return_exceptions=True)
    assert [answer == "a" * chars for answer in answers] == [True, True, True], answers
    assert budget.held == 0
