"""``/v1/skills`` routes of the HTTP door (OpenAI's Skills API, also without ``/v1``), each as the caller's tenant.

A skill or a version is sent as ``multipart/form-data``: ``files`` (the SDK names its parts ``files[]``) either
once, holding one zip, or once per file of a directory, each part's filename carrying the file's relative path
(``my-skill/SKILL.md``, ``my-skill/scripts/run.py``); a version's form may also hold ``default`` (``true`` /
``false``). The form is read whole, bounded by the size of the largest skill, before anything is checked or
stored: a form cut short is a 400 and nothing is kept. A part whose type says it is not a regular file
(``inode/symlink``, ``inode/directory``: what a client sending a directory as it lies on disk would say of a link
or a folder) is refused, as a zip's link entry is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from ....protocol.errors import APIError, invalid_request
from ....services.containers.skill_bundle import (
    MAX_FILES,
    MAX_ZIP_BYTES,
    SkillBundle,
    SkillFile,
    bundle,
    check_path,
    read_zip,
)
from ....services.containers.skills import MAX_LIST_LIMIT, SkillService
from ..downloads import send_blob
from ..identity import request_tenant
from ..multipart_form import cut_short, malformed, part_chunks
from ..params import json_reply, page_query
from ..routes import answer, object_routes

SKILL_CONTENT_TYPE = "application/zip"  # a skill's content is the zip bundle it was made from, or made into
READ_CHUNK = 1 << 16
FORM_OVERHEAD = 1 << 20
"""What a form may hold past its files' bytes (part headers, boundaries, the ``default`` field)."""
FILE_FIELDS = ("files", "files[]")
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
ARCHIVES_REFUSED = (".tar", ".tar.gz", ".tgz", ".gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".7z", ".rar")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class SkillRoutes:
    service: SkillService

    def register(self, app: web.Application) -> None:
        update = answer(self.service.update, "skill_id", body="skills.update")
        with object_routes(app, "/skills", "skill_id", create=self.create, listing=self.list,
                           retrieve=self.service.retrieve, update=update,
                           delete=self.service.delete) as (routes, skill):
            routes.get(f"{skill}/content", self.content)
            version = routes.objects(f"{skill}/versions", "skill_id", "version", create=self.create_version,
                                     listing=self.list_versions, retrieve=self.service.retrieve_version,
                                     delete=self.service.delete_version)
            routes.get(f"{version}/content", self.version_content)

    async def create(self, request: web.Request) -> web.Response:
        skill, _ = await read_form(request, default_field=False)
        return json_reply(await self.service.create(skill, tenant=request_tenant(request)))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list(tenant=request_tenant(request),
                                                  **page_query(request, limit=20, before=False)))

    async def content(self, request: web.Request) -> web.StreamResponse:
        reader, name = await self.service.open_content(_skill(request), None, tenant=request_tenant(request))
        return await send_blob(request, reader, name, SKILL_CONTENT_TYPE)

    async def create_version(self, request: web.Request) -> web.Response:
        tenant = request_tenant(request)
        await self.service.retrieve(_skill(request), tenant=tenant)  # a 404 before the form is read
        skill, default = await read_form(request, default_field=True)
        return json_reply(await self.service.create_version(_skill(request), skill, make_default=default,
                                                            tenant=tenant))

    async def list_versions(self, request: web.Request) -> web.Response:
        query = page_query(request, limit=20, before=False)
        query["order"] = request.query.get("order", "asc")
        return json_reply(await self.service.list_versions(_skill(request), tenant=request_tenant(request),
                                                           **query))

    async def version_content(self, request: web.Request) -> web.StreamResponse:
        reader, name = await self.service.open_content(_skill(request), request.match_info["version"],
                                                       tenant=request_tenant(request))
        return await send_blob(request, reader, name, SKILL_CONTENT_TYPE)


def _skill(request: web.Request) -> str:
    return request.match_info["skill_id"]


def _is_file_field(name: str | None) -> bool:
    if name in FILE_FIELDS:
        return True
    return bool(name and name.startswith("files[") and name.endswith("]") and name[6:-1].isdigit())


async def _part_bytes(part: BodyPartReader, budget: int) -> bytes:
    out = bytearray()
    async for chunk in part_chunks(part, READ_CHUNK):
        out += chunk
        if len(out) > budget:
            raise APIError(413, f"A skill's upload may be at most {MAX_ZIP_BYTES} bytes.",
                           type="invalid_request_error", param="files", code="file_too_large")
    return bytes(out)


def _boolean(raw: bytes) -> bool:
    text = raw.decode("utf-8", "replace").strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0", ""):
        return False
    raise invalid_request("Invalid value for 'default': expected true or false.", param="default")


async def read_form(request: web.Request, *, default_field: bool) -> tuple[SkillBundle, bool]:
    """The skill a form holds, checked (services/containers/skill_bundle.py), and its ``default`` field."""
    mimetype = parse_mimetype(request.headers.get("Content-Type", ""))
    if (mimetype.type, mimetype.subtype) != ("multipart", "form-data") or not mimetype.parameters.get("boundary"):
        raise invalid_request("Send the skill's files as multipart/form-data: 'files' holding one zip, or one part "
                              "per file with its relative path as the filename.", param="files",
                              code="invalid_multipart")
    limit = MAX_ZIP_BYTES + FORM_OVERHEAD
    if request.content_length is not None and request.content_length > limit:
        raise APIError(413, f"A skill's upload may be at most {MAX_ZIP_BYTES} bytes.", type="invalid_request_error",
                       param="files", code="file_too_large")
    parts: list[tuple[str | None, str, bytes]] = []
    default = False
    budget = limit
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise invalid_request("Nested multipart parts are not supported.", param=None,
                                      code="invalid_multipart")
            if default_field and part.name == "default":
                default = _boolean(await _part_bytes(part, 64))
                continue
            if not _is_file_field(part.name):
                raise invalid_request(f"Unknown parameter: '{str(part.name)[:100]}' (a skill's form holds 'files'"
                                      f"{' and default' if default_field else ''}).", param=str(part.name)[:100],
                                      code="unknown_parameter")
            if len(parts) >= MAX_FILES:
                raise invalid_request(f"A skill may hold at most {MAX_FILES} files.", param="files",
                                      code="invalid_skill")
            kind = part.headers.get("Content-Type", "application/octet-stream")
            data = await _part_bytes(part, budget)
            budget -= len(data)
            parts.append((part.filename, kind, data))
        if not reader.at_eof():
            raise cut_short()
    except (ValueError, AssertionError, HttpProcessingError) as error:
        raise malformed(error, request) from None
    return await asyncio.to_thread(_bundle, parts), default


def _bundle(parts: list[tuple[str | None, str, bytes]]) -> SkillBundle:
    if not parts:
        raise invalid_request("Missing required parameter: 'files'.", param="files",
                              code="missing_required_parameter")
    if len(parts) == 1:
        filename, kind, data = parts[0]
        mime = parse_mimetype(kind)
        if data[:2] == b"\x1f\x8b" or (filename or "").lower().endswith(ARCHIVES_REFUSED) or \
                f"{mime.type}/{mime.subtype}" in ("application/gzip", "application/x-tar", "application/x-gzip"):
            raise invalid_request(f"'{(filename or 'files')[:200]}' is not a zip: a skill is sent as one zip "
                                  "(application/zip) or as one part per file with its relative path as the "
                                  "filename; tar and gzip archives are not taken.", param="files",
                                  code="invalid_skill")
        if (f"{mime.type}/{mime.subtype}" in ZIP_TYPES or (filename or "").lower().endswith(".zip")
                or data[:4] in ZIP_MAGIC):
            return read_zip(data)
    files: list[SkillFile] = []
    for filename, kind, data in parts:
        if filename is None:
            raise invalid_request("Each of a directory upload's 'files' parts needs a filename: the file's path in "
                                  "the skill.", param="files", code="invalid_skill")
        if parse_mimetype(kind).type == "inode":
            raise invalid_request(f"'{filename[:200]}' is sent as {kind[:60]!r}, not a regular file: links and "
                                  "other special files are refused.", param="files", code="invalid_skill")
        files.append(SkillFile(check_path(filename), data))
    return bundle(files)


__all__ = ["MAX_LIST_LIMIT", "SkillRoutes"]
