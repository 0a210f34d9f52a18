"""Reading a ``POST /v1/files`` body, or an upload's part (``POST /v1/uploads/{id}/parts``):
``multipart/form-data`` streamed part by part, never read whole.

The ``file`` part (a part's ``data``) goes chunk by chunk into the service's
:class:`~responses_bridge.services.files.files.Upload` (a temporary file on disk, or rows in PostgreSQL); the other
fields are small and read with a shared cap. Fields are checked as soon as they arrive, so a bad ``purpose`` sent before
the file (as the SDK sends it) is refused before any byte of the file is read. The request's own ``client_max_size``
does not apply here: the file's limit is the service's. A form is read to its closing boundary before anything is
stored: a body cut short is a 400 (multipart_form.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from ....protocol.errors import APIError, invalid_request
from ....services.files.files import FileService, Upload, check_expires_after, check_purpose, clean_filename
from ..identity import request_tenant
from ..multipart_form import malformed, part_chunks

READ_CHUNK = 1 << 20
"""Bytes asked of the multipart reader per read: large enough that a thread hop per write costs little, small
enough that a few uploads at once hold a few MiB."""
FIELDS_LIMIT = 64 * 1024
"""All fields other than the file together: a purpose and an expiry need a few dozen bytes."""
FORM_OVERHEAD = FIELDS_LIMIT + 64 * 1024
"""What a form may add to its file (fields, part headers, boundaries): a declared Content-Length past the file
limit plus this cannot hold an acceptable file, and is refused before its body is read."""
FIELD_READ = 64 * 1024  # must exceed the boundary's length (the reader asserts it); boundaries are at most 70
KNOWN_FIELDS = frozenset({"purpose", "expires_after", "expires_after[anchor]", "expires_after[seconds]"})
DISCARD_MIN = 64 * 1024 * 1024
ACCEPTED_PART_ENCODINGS = frozenset({"", "identity", "binary", "8bit", "7bit"})

log = structlog.get_logger("responses_bridge.files")


@dataclass
class UploadForm:
    received: bool = False  # the upload field was read
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    field_bytes: int = 0


@dataclass(frozen=True)
class FormShape:
    """What a form holds: the field whose bytes are the upload, the small fields read beside it, and a check run on
    each of those as it arrives (before the upload's bytes when sent first)."""

    upload_field: str
    fields: frozenset[str]
    described: str
    keeps_filename: bool = False  # the upload field's filename is the file's (checked: clean_filename)
    check: Callable[[str, str], None] = lambda name, value: None


def _check_file_field(name: str, value: str) -> None:
    if name == "purpose":
        check_purpose(value)


FILE_FORM = FormShape("file", KNOWN_FIELDS, "the file in a 'file' field and its 'purpose' in another",
                      keeps_filename=True, check=_check_file_field)
PART_FORM = FormShape("data", frozenset(), "the part's bytes in a 'data' field")
T = TypeVar("T")


async def create_file(request: web.Request, service: FileService) -> dict[str, Any]:
    """Stream the form's file to disk and store it; the File object. Every failure is an OpenAI-shaped 4xx (a
    full disk a 507), and the partial file is removed."""
    return await answered_after_body(request, service.max_bytes, _create_file(request, service))


async def answered_after_body(request: web.Request, limit: int, work: Awaitable[T]) -> T:
    """``work``'s result. A refusal that comes before the body's end (a 413 at the limit, a bad purpose sent before
    the file) is answered only after the rest of the body is read and dropped, up to :func:`discard_budget`: an
    HTTP/1.1 client reads the answer once it has sent its body, and a server (or Envoy in front of it) that closes
    while the client still sends makes it see a reset instead of the error."""
    try:
        return await work
    except APIError:
        budget = discard_budget(limit)
        declared = request.content_length
        if declared is None or declared <= limit + FORM_OVERHEAD + budget:
            await _discard_rest(request, budget)  # else it could not be read whole anyway: answer at once
        raise


def discard_budget(limit: int) -> int:
    """How much of a refused upload's remaining body is read to deliver the refusal: as much again as the limit
    (at least 64 MiB). Past it the connection is closed with the answer, and a client still sending may miss it."""
    return max(limit, DISCARD_MIN)


async def _discard_rest(request: web.Request, budget: int) -> None:
    with contextlib.suppress(Exception):  # a client gone or a broken body: nothing left to answer on
        while budget > 0 and (chunk := await request.content.readany()):
            budget -= len(chunk)


async def _create_file(request: web.Request, service: FileService) -> dict[str, Any]:
    async with service.receive(tenant=request_tenant(request)) as upload:
        form = await read_form(request, upload, FILE_FORM)
        purpose = check_purpose(form.fields.get("purpose"))
        expires_after = _expires_after(form.fields)
        try:
            return await service.create(upload, filename=form.filename or "", purpose=purpose,
                                        expires_after=expires_after)
        except OSError as exc:
            raise disk_error(exc) from None


async def read_form(request: web.Request, upload: Upload, shape: FormShape) -> UploadForm:
    """Read the whole ``multipart/form-data`` body: ``shape``'s upload field into ``upload`` (required, once), its
    small fields into the form. Every malformed body is a 400, a full disk a 507."""
    _check_content_type(request, shape)
    declared = request.content_length
    if declared is not None and declared > upload.max_bytes + FORM_OVERHEAD:
        raise upload.refusal()
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise malformed(exc, request) from None
    form = UploadForm()
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise invalid_request("Nested multipart parts are not supported.", param=None,
                                      code="invalid_multipart")
            await _read_part(part, form, upload, shape)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise malformed(exc, request) from None
    except OSError as exc:
        raise disk_error(exc) from None
    if not form.received:
        raise invalid_request(f"Missing required parameter: '{shape.upload_field}'.", param=shape.upload_field,
                              code="missing_required_parameter")
    return form


async def _read_part(part: BodyPartReader, form: UploadForm, upload: Upload, shape: FormShape) -> None:
    named = shape.fields | {shape.upload_field}
    for header in ("Content-Encoding", "Content-Transfer-Encoding"):
        encoding = part.headers.get(header, "").strip().lower()
        if encoding not in ACCEPTED_PART_ENCODINGS:
            raise invalid_request(f"{header} '{encoding[:40]}' is not supported in a form part: send it as is.",
                                  param=part.name if part.name in named else None,
                                  code="unsupported_content_encoding")
    if part.name == shape.upload_field:
        if form.received:
            raise invalid_request(f"Only one '{shape.upload_field}' may be uploaded per request.",
                                  param=shape.upload_field, code="invalid_value")
        form.received = True
        if shape.keeps_filename:
            form.filename = clean_filename(part.filename, shape.upload_field)
        async for chunk in part_chunks(part, READ_CHUNK):
            await upload.write(chunk)
        return
    raw = await _read_field(part, FIELDS_LIMIT - form.field_bytes, shape)
    form.field_bytes += len(raw)
    if part.name not in shape.fields:
        return  # as OpenAI: unknown fields are ignored
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request(f"Invalid value for '{part.name}': not UTF-8 text.", param=part.name,
                              code="invalid_value") from None
    form.fields[part.name] = value
    shape.check(part.name, value)  # before the upload's bytes, when sent first: none of a refused upload is read


async def _read_field(part: BodyPartReader, budget: int, shape: FormShape) -> bytes:
    data = bytearray()
    async for chunk in part_chunks(part, FIELD_READ):  # a value cut short would end with a piece of the boundary
        data += chunk
        if len(data) > budget:
            raise invalid_request(f"The form's fields other than '{shape.upload_field}' exceed {FIELDS_LIMIT} bytes.",
                                  param=part.name if part.name in shape.fields else None, code="invalid_value")
    return bytes(data)


def _expires_after(fields: dict[str, str]) -> int | None:
    """``expires_after`` as the SDK sends it (``expires_after[anchor]``, ``expires_after[seconds]``), or as one
    JSON object field."""
    anchor: object = fields.get("expires_after[anchor]")
    seconds: object = fields.get("expires_after[seconds]")
    if "expires_after" in fields:
        try:
            value = orjson.loads(fields["expires_after"])
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise invalid_request("Invalid value for 'expires_after': expected an object with 'anchor' and "
                                  "'seconds'.", param="expires_after", code="invalid_type")
        anchor, seconds = value.get("anchor", anchor), value.get("seconds", seconds)
    elif anchor is None and seconds is None:
        return None
    return check_expires_after(anchor, seconds)


def _check_content_type(request: web.Request, shape: FormShape) -> None:
    mimetype = parse_mimetype(request.headers.get("Content-Type", ""))
    if (mimetype.type, mimetype.subtype) != ("multipart", "form-data") or not mimetype.parameters.get("boundary"):
        raise invalid_request(f"Uploads must be sent as multipart/form-data (with a boundary), {shape.described}.",
                              param=None, code="invalid_content_type")


def disk_error(exc: OSError) -> APIError:
    log.error("file_store_failed", error=str(exc))
    return APIError(507, "The server could not store the file (out of disk space or the files directory is not "
                    "writable).", type="server_error", code="storage_error")
