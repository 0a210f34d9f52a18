"""The tenant's files read for a request's content parts (``input_file`` / ``input_image`` with ``file_id``).

The run asks (run/file_inputs.py's ``FileLoader``); this reads the file through the files service (another
tenant's file, or one expired or deleted, is the same 404 as ``GET /v1/files/{id}``), after checking its size
against what one request may inline and reserving the request memory it will hold (the same budget and cost per
byte as a request body that carried it inline: services/tenancy/memory_budget.py), and extracts its text as the
retrieval pipeline does for search (services/files/retrieval/extract.py: the same kinds, the same bounds, but the
characters of text bounded over all the files of the request, not per file).

A file's text can be far larger than the file: a 10 KB DOCX held 10 million characters, and 16 requests naming it
grew the sidecar to 510 MB while the budget held 4.7 MiB for them (30 times the 10 KB). So the text is held in the
budget as well, for the request's holder, at :data:`TEXT_COST` per character as the extraction gives it (a step
ahead: services/files/retrieval/bounds.py; the extraction's thread waits for the budget's answer), then at
:data:`TEXT_COST` times the memory its string takes, until the response lets the file go; past the holder's room
the extraction stops and the request is the budget's 503. Charged only once extracted, twelve requests extracting
at once grew the sidecar by twice a 128 MiB budget before any was refused.

Where the file itself bounds its text (plain text, HTML, a DOCX's stated part sizes: ``text_bound``) that bound is
held at once before the extraction starts, and what the text did not come to take is given back once it is whole.
Charged only step by step, a tenant's requests extracting at once could each hold a part of their text and all wait
for the rest until each was the 503 (a loaded run: 0 of 12 served); held whole or waited for holding none of it,
the first requests are always served. A PDF's text has no such bound: it is charged step by step.
"""

from __future__ import annotations

import asyncio
import mimetypes
import sys
from collections.abc import Callable
from pathlib import Path

from ...fairness.memory_charge import current_holder
from ...protocol.errors import APIError, invalid_request, not_found
from ...protocol.files.file_refs import LoadedFile
from ..tenancy.memory_budget import MemoryBudget, Reservation
from .files import FileService

READ_BYTES = 1024 * 1024
TEXT_COST = 4
"""Bytes held per byte of a file's extracted text while the request keeps it: the text, the part made of it
(headed with the file's name), the upstream body it goes in and that body's encoding; the extraction's own pieces
come and go before."""
_STRING_HEADER = sys.getsizeof("")
"""Bytes a ``str`` takes besides its characters (an ASCII one's: a bound held ahead covers the whole string)."""
RAW_COST = 4
"""Budget bytes per byte of a file sent as it is (an image, a PDF the backend reads): the bytes read, their base64
in the data URL and in the upstream body."""

_MAGIC = ((b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def media_type_of(filename: str, head: bytes) -> str:
    """The file's media type: from its first bytes where they say (a PDF, PNG, JPEG, GIF or WebP), else from its
    name, else ``application/octet-stream``."""
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"


class FileInputs:
    """``FileLoader`` over the files service and the request memory budget."""

    def __init__(self, files: FileService, memory: MemoryBudget) -> None:
        self._files = files
        self._memory = memory

    async def load_file(self, file_id: str, *, tenant: str, max_bytes: int, want_text: bool, pdf_as_file: bool,
                        param: str, max_text_chars: int) -> LoadedFile:
        """The file, read. ``want_text``: a file of a kind the retrieval pipeline extracts comes as its text
        (``data`` empty), at most ``max_text_chars`` characters of it, except a PDF with ``pdf_as_file`` (the
        backend reads PDFs): its bytes."""
        from .retrieval.extract import SUPPORTED_EXTENSIONS

        found = await self._files.get(file_id, tenant=tenant)
        if found is None:  # unknown, expired, deleted or another tenant's: GET /v1/files/{id}'s 404, at the part
            raise not_found(f"No such File object: {file_id[:200]}", param=param, code="not_found")
        size = int(found["bytes"])
        if size > max_bytes:
            raise invalid_request(f"File '{file_id}' ({size} bytes) is more than this request may still inline "
                                  f"({max_bytes} bytes: the files one request names are bounded in all).",
                                  param=param, code="file_too_large")
        filename = str(found["filename"])
        extension = Path(filename).suffix.lower()
        as_text = want_text and extension in SUPPORTED_EXTENSIONS and not (pdf_as_file and extension == ".pdf")
        holder = current_holder() or self._memory.holder(tenant, None)  # the request's: its caller's key too
        # its bytes: read and let go for its text (held besides, as extracted: _TextHold), else in the upstream
        # body as base64 (the bytes, their encoding, the request's JSON: 4 times, measured by scripts/bench charges)
        reservation = await self._memory.reserve(size, holder=holder, cost=1 if as_text else RAW_COST)
        hold = _TextHold(self._memory, holder, asyncio.get_running_loop())
        try:
            if as_text:
                text = await self._text(file_id, filename, param, max_text_chars, hold)
                await hold.top_up(text)  # or the 503: the text is let go

                def release() -> None:
                    reservation.release()
                    hold.release()

                return LoadedFile(filename, media_type_of(filename, b""), size, b"", text, release=release)
            data = await self._read(file_id, tenant, size)
            return LoadedFile(filename, media_type_of(filename, data[:16]), size, data, release=reservation.release)
        except BaseException:
            reservation.release()
            hold.release()
            raise

    async def _read(self, file_id: str, tenant: str, size: int) -> bytes:
        reader, _ = await self._files.open_content(file_id, tenant=tenant)
        try:
            data = bytearray()
            while len(data) <= size and (chunk := await reader.read(READ_BYTES)):  # never past its stated size
                data += chunk
        finally:
            await reader.aclose()
        if len(data) != size:
            raise APIError(500, f"File '{file_id}' could not be read whole.", code="server_error")
        return bytes(data)

    async def _text(self, file_id: str, filename: str, param: str, max_text_chars: int, hold: _TextHold) -> str:
        from .retrieval.extract import ExtractionError

        try:
            async with self._files.local_copy(file_id) as path:
                if self._memory.total:
                    await hold.cover(await asyncio.to_thread(_bound, path, filename), max_text_chars)
                work = asyncio.get_running_loop().run_in_executor(
                    None, _extract, path, filename, max_text_chars, hold.take if self._memory.total else None)
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:  # the thread goes on to its next step: what it took goes after it
                    hold.stopped = True
                    work.add_done_callback(lambda _: hold.release())
                    raise
        except ExtractionError as error:
            raise invalid_request(f"File '{file_id}' cannot be given to the model as text: {error.message}",
                                  param=param, code=error.code) from None


class _Abandoned(Exception):
    """The request went away while its file's text was extracted: the extraction stops."""


class _TextHold:
    """What a file's text holds of the memory budget: the most it can take, where the file bounds it, held before
    the extraction (:meth:`cover`); else taken as the extraction gives it (:meth:`take`, in the extraction's thread,
    which waits for the budget's answer on the event loop; the budget's 503 stops it); made the string's size once
    it is whole (:meth:`top_up`), given back together (:meth:`release`)."""

    def __init__(self, memory: MemoryBudget, holder: str, loop: asyncio.AbstractEventLoop) -> None:
        self._memory = memory
        self._holder = holder
        self._loop = loop
        self._held: list[Reservation] = []
        self._asked = 0  # what the text has taken so far
        self._covered = 0  # what is held for it: the bound held ahead, then what it took past that
        self._most: int | None = None  # what it can take at most, where the file bounds it
        self.stopped = False

    async def cover(self, bound: int | None, max_text_chars: int) -> None:
        """Hold room for the most the text can take, at once (waiting holding none of it), where the file bounds
        it (``bound`` characters; None: the text is charged as it comes)."""
        if bound is not None:
            self._most = TEXT_COST * (min(bound, max_text_chars) + _STRING_HEADER)
            self._keep(await self._memory.charge(self._holder, self._most))  # (at most a share: the steps ask past it)

    def take(self, chars: int) -> None:
        if self.stopped:
            raise _Abandoned
        self._asked += TEXT_COST * chars  # told a step ahead: never past the bound, where there is one
        if self._most is not None:
            self._asked = min(self._asked, self._most)
        if self._asked > self._covered:
            self._keep(asyncio.run_coroutine_threadsafe(
                self._memory.charge(self._holder, self._asked - self._covered), self._loop).result())

    async def top_up(self, text: str) -> None:
        """The hold made what the whole text takes: more where a wide string takes 2 or 4 bytes a character, less
        where the bound held ahead was more than the text came to."""
        need = TEXT_COST * sys.getsizeof(text)
        if need > self._covered:
            self._keep(await self._memory.charge(self._holder, need - self._covered))
        excess = self._covered - need
        for held in reversed(self._held):
            if excess <= 0:
                break
            given = min(excess, held.bytes)
            held.shrink(given)
            excess -= given
            self._covered -= given
        self._asked = need

    def _keep(self, held: Reservation) -> None:
        self._held.append(held)
        self._covered += held.bytes

    def release(self) -> None:
        held, self._held = self._held, []
        for reservation in held:
            reservation.release()


def _bound(path: Path, filename: str) -> int | None:
    from .retrieval.extract import text_bound

    return text_bound(path, filename)


def _extract(path: Path, filename: str, max_text_chars: int, on_text: Callable[[int], None] | None) -> str:
    from .retrieval.extract import extract_text

    return extract_text(path, filename, max_text_chars, on_text)
