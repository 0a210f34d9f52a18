"""Skills (``/v1/skills``): versioned bundles of files around a ``SKILL.md``, tenant-owned, in OpenAI's shapes
(``openai.types.Skill``, ``SkillVersion``, ``DeletedSkill``, ``skills.DeletedSkillVersion``), and the skills a
container is made with (``skills`` on ``POST /v1/containers`` and a shell tool's ``container_auto``: references to
a stored skill, with an optional version, or inline base64 zips).

Each version is kept as one zip the bridge wrote itself (services/skill_bundle.py checks what the client sent and
rebuilds it), stored as a blob in the files' bytes storage, so any replica on the database serves and lays out
the same bytes; its size counts against the tenant's ``max_stored_bytes`` with files and container files (checked
by the store in the inserting transaction). A container keeps its own copy of each skill it was made with, so
deleting the skill or a version later leaves the container as it was made.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from .. import ids
from ..protocol.errors import APIError, invalid_request, not_found
from ..store.base import BlobReader, FileBytes
from ..store.base_skills import (
    ContainerSkill,
    DefaultVersionDeletion,
    SkillStore,
    StoredSkill,
    StoredSkillVersion,
    UnknownVersion,
)
from ..store.records import StorageLimitExceeded, UnknownCursor
from .file_quota import storage_limit_error
from .files import new_file_id
from .pagination import check_page
from .skill_bundle import MAX_DESCRIPTION, MAX_ZIP_BYTES, NAME_PATTERN, SkillBundle, canonical_zip, read_zip

log = structlog.get_logger(__name__)

MAX_LIST_LIMIT = 100
MAX_CONTAINER_SKILLS = 20
READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ResolvedSkill:
    """A skill for a container: checked, with the zip to keep."""

    name: str
    description: str
    data: bytes


def skill_object(skill: StoredSkill) -> dict[str, Any]:
    return {"id": skill.id, "object": "skill", "created_at": skill.created_at, "name": skill.name,
            "description": skill.description, "default_version": str(skill.default_version),
            "latest_version": str(skill.latest_version)}


def version_object(version: StoredSkillVersion) -> dict[str, Any]:
    return {"id": version.id, "object": "skill.version", "created_at": version.created_at,
            "skill_id": version.skill_id, "version": str(version.version), "name": version.name,
            "description": version.description}


def skill_not_found(skill_id: str, param: str | None = "skill_id") -> APIError:
    return not_found(f"No such Skill: {str(skill_id)[:200]}", param=param, code="not_found")


def version_not_found(version: object, param: str | None = "version") -> APIError:
    return not_found(f"No such Skill version: {str(version)[:200]}", param=param, code="not_found")


def version_number(value: object, param: str = "version") -> int:
    """A version as a client names it: a positive integer (or its text)."""
    if isinstance(value, bool):
        raise invalid_request(f"Invalid value for '{param}': expected a positive integer.", param=param)
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and 0 < len(value) <= 18 and int(value) > 0:
        return int(value)
    raise invalid_request(f"Invalid value for '{param}': expected a positive integer.", param=param)


async def read_blob(reader: BlobReader, limit: int) -> bytes:
    """A blob's bytes whole, up to ``limit`` (more is a broken store: an ``OSError``)."""
    out = bytearray()
    try:
        while chunk := await reader.read(READ_CHUNK):
            out += chunk
            if len(out) > limit:
                raise OSError("a stored skill is larger than any skill may be")
    finally:
        await reader.aclose()
    return bytes(out)


class SkillService:
    """The Skills API over a :class:`SkillStore` and the files' bytes storage (``blobs``)."""

    def __init__(self, store: SkillStore, blobs: FileBytes, *,
                 max_stored_bytes: Callable[[str], int | None] = lambda tenant: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.blobs = blobs
        self._max_stored_bytes = max_stored_bytes
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    async def _keep(self, data: bytes) -> str:
        """Store a zip as a new blob; its id."""
        blob_id = new_file_id()
        writer = await self.blobs.writer(blob_id)
        try:
            await writer.write(data)
            await writer.publish()
        except BaseException:
            await writer.discard()
            raise
        return blob_id

    async def _remove(self, blobs: Sequence[str]) -> None:
        for blob in blobs:
            try:
                await self.blobs.remove(blob)
            except OSError as error:
                log.warning("skill_blob_remove_failed", error=str(error))

    def _over_limit(self, error: StorageLimitExceeded) -> APIError:
        refusal = storage_limit_error(error.limit, error.used)
        refusal.param = "files"
        return refusal

    # -- skills ---------------------------------------------------------------------------------------------------

    async def create(self, bundle: SkillBundle, *, tenant: str) -> dict[str, Any]:
        """``POST /v1/skills``: the skill and its version 1 (the default) from a checked bundle."""
        data = await asyncio.to_thread(canonical_zip, bundle)
        now = self.now()
        skill = StoredSkill(id=ids.new_id("skill"), name=bundle.name, description=bundle.description,
                            created_at=now, default_version=1, latest_version=1)
        blob_id = await self._keep(data)
        version = StoredSkillVersion(id=ids.new_id("skillver"), skill_id=skill.id, version=1, name=bundle.name,
                                     description=bundle.description, created_at=now, bytes=len(data),
                                     blob_id=blob_id)
        try:
            await self.store.create_skill(skill, version, tenant=tenant,
                                          max_stored_bytes=self._max_stored_bytes(tenant))
        except BaseException as error:
            await self._remove([blob_id])
            if isinstance(error, StorageLimitExceeded):
                raise self._over_limit(error) from None
            raise
        return skill_object(skill)

    async def _require(self, skill_id: str, tenant: str) -> StoredSkill:
        found = await self.store.get_skill(skill_id, tenant=tenant)
        if found is None:
            raise skill_not_found(skill_id)
        return found

    async def retrieve(self, skill_id: str, *, tenant: str) -> dict[str, Any]:
        return skill_object(await self._require(skill_id, tenant))

    async def list(self, *, tenant: str, after: str | None, limit: int, order: str) -> dict[str, Any]:
        check_page(limit, order, MAX_LIST_LIMIT)
        try:
            found, has_more = await self.store.list_skills(tenant=tenant, after=after, limit=limit, order=order)
        except UnknownCursor:
            raise invalid_request(f"Invalid value for 'after': no skill with id '{(after or '')[:200]}'.",
                                  param="after", code="invalid_value") from None
        return _page([skill_object(skill) for skill in found], has_more)

    async def update(self, skill_id: str, body: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        """``POST /v1/skills/{id}``: ``default_version`` (required)."""
        if "default_version" not in body:
            raise invalid_request("Missing required parameter: 'default_version'.", param="default_version",
                                  code="missing_required_parameter")
        unknown = sorted(set(body) - {"default_version"})
        if unknown:
            raise invalid_request(f"Unknown parameter: '{str(unknown[0])[:100]}'.", param=str(unknown[0])[:100],
                                  code="unknown_parameter")
        number = version_number(body["default_version"], "default_version")
        try:
            found = await self.store.set_default(skill_id, number, tenant=tenant)
        except UnknownVersion:
            raise version_not_found(number, "default_version") from None
        if found is None:
            raise skill_not_found(skill_id)
        return skill_object(found)

    async def delete(self, skill_id: str, *, tenant: str) -> dict[str, Any]:
        blobs = await self.store.delete_skill(skill_id, tenant=tenant)
        if blobs is None:
            raise skill_not_found(skill_id)
        await self._remove(blobs)
        return {"id": skill_id, "object": "skill.deleted", "deleted": True}

    # -- versions -------------------------------------------------------------------------------------------------

    async def create_version(self, skill_id: str, bundle: SkillBundle, *, make_default: bool,
                             tenant: str) -> dict[str, Any]:
        await self._require(skill_id, tenant)
        data = await asyncio.to_thread(canonical_zip, bundle)
        blob_id = await self._keep(data)
        version = StoredSkillVersion(id=ids.new_id("skillver"), skill_id=skill_id, version=0, name=bundle.name,
                                     description=bundle.description, created_at=self.now(), bytes=len(data),
                                     blob_id=blob_id)
        try:
            stored = await self.store.add_version(version, tenant=tenant, make_default=make_default,
                                                  max_stored_bytes=self._max_stored_bytes(tenant))
        except BaseException as error:
            await self._remove([blob_id])
            if isinstance(error, StorageLimitExceeded):
                raise self._over_limit(error) from None
            raise
        if stored is None:
            await self._remove([blob_id])
            raise skill_not_found(skill_id)
        return version_object(stored)

    async def _version(self, skill_id: str, version: object, tenant: str) -> StoredSkillVersion:
        await self._require(skill_id, tenant)
        number = version_number(version)
        found = await self.store.get_version(skill_id, number, tenant=tenant)
        if found is None:
            raise version_not_found(version)
        return found

    async def retrieve_version(self, skill_id: str, version: str, *, tenant: str) -> dict[str, Any]:
        return version_object(await self._version(skill_id, version, tenant))

    async def list_versions(self, skill_id: str, *, tenant: str, after: str | None, limit: int,
                            order: str) -> dict[str, Any]:
        """By version number (ascending unless ``order`` is ``desc``); ``after``: a version's id or number."""
        await self._require(skill_id, tenant)
        check_page(limit, order, MAX_LIST_LIMIT)
        cursor: int | None = None
        if after is not None:
            cursor = await self._cursor(skill_id, after, tenant)
        found, has_more = await self.store.list_versions(skill_id, tenant=tenant, after=cursor, limit=limit,
                                                         order=order)
        return _page([version_object(version) for version in found], has_more)

    async def _cursor(self, skill_id: str, after: str, tenant: str) -> int:
        if after.isascii() and after.isdigit() and len(after) <= 18:
            return int(after)
        position: int | None = None
        while True:  # a version id: find its number (a skill has few versions)
            page, more = await self.store.list_versions(skill_id, tenant=tenant, after=position, limit=100,
                                                        order="asc")
            for version in page:
                if version.id == after:
                    return version.version
            if not more or not page:
                break
            position = page[-1].version
        raise invalid_request(f"Invalid value for 'after': no version with id '{after[:200]}'.", param="after",
                              code="invalid_value")

    async def delete_version(self, skill_id: str, version: str, *, tenant: str) -> dict[str, Any]:
        found = await self._version(skill_id, version, tenant)
        try:
            blob = await self.store.delete_version(skill_id, found.version, tenant=tenant)
        except DefaultVersionDeletion:
            raise invalid_request(f"Version {found.version} is the skill's default version; make another version "
                                  "the default (POST /v1/skills/{skill_id} with 'default_version') before deleting "
                                  "it.", param="version", code="default_version") from None
        if blob is None:
            raise version_not_found(version)
        await self._remove([blob])
        return {"id": found.id, "object": "skill.version.deleted", "deleted": True, "version": str(found.version)}

    # -- content --------------------------------------------------------------------------------------------------

    async def open_content(self, skill_id: str, version: str | None, *,
                           tenant: str) -> tuple[BlobReader, str]:
        """The zip of ``version`` (the default one when None), opened, and a file name for it."""
        if version is None:
            skill = await self._require(skill_id, tenant)
            found = await self.store.get_version(skill_id, skill.default_version, tenant=tenant)
            if found is None:
                raise version_not_found(skill.default_version)
        else:
            found = await self._version(skill_id, version, tenant)
        reader = await self.blobs.open(found.blob_id)
        if reader is None:  # deleted between the lookup and the open
            raise version_not_found(found.version)
        return reader, f"{found.name}-{found.version}.zip"

    # -- skills for containers ------------------------------------------------------------------------------------

    async def resolve(self, value: object, *, tenant: str, param: str) -> builtins.list[ResolvedSkill]:
        """``skills`` of a container (``[{"type": "skill_reference", "skill_id", "version"?}`` or ``{"type":
        "inline", "name", "description", "source": {"type": "base64", "media_type": "application/zip",
        "data"}}]``), each checked and read: 400s and 404s naming ``param[i]`` and the field. Two skills of one
        name cannot be laid out side by side, so they are refused too."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise invalid_request(f"Invalid value for '{param}': expected an array of skills.", param=param,
                                  code="invalid_type")
        if len(value) > MAX_CONTAINER_SKILLS:
            raise invalid_request(f"Invalid value for '{param}': at most {MAX_CONTAINER_SKILLS} skills.",
                                  param=param)
        resolved: list[ResolvedSkill] = []
        for position, entry in enumerate(value):
            where = f"{param}[{position}]"
            if not isinstance(entry, dict):
                raise invalid_request(f"Invalid value for '{where}': expected an object.", param=where,
                                      code="invalid_type")
            kind = entry.get("type")
            if kind == "skill_reference":
                skill = await self._reference(entry, tenant, where)
            elif kind == "inline":
                skill = await asyncio.to_thread(_inline, entry, where)
            else:
                raise invalid_request(f"Invalid value for '{where}.type': expected 'skill_reference' or 'inline'.",
                                      param=f"{where}.type")
            if any(other.name == skill.name for other in resolved):
                raise invalid_request(f"Two skills are named '{skill.name}'; the skills of one container need "
                                      "names of their own.", param=where, code="duplicate_skill")
            resolved.append(skill)
        return resolved

    async def _reference(self, entry: Mapping[str, Any], tenant: str, where: str) -> ResolvedSkill:
        skill_id = entry.get("skill_id")
        if not isinstance(skill_id, str) or not skill_id:
            raise invalid_request(f"Missing required parameter: '{where}.skill_id'.", param=f"{where}.skill_id",
                                  code="missing_required_parameter")
        skill = await self.store.get_skill(skill_id, tenant=tenant)
        if skill is None:
            raise skill_not_found(skill_id, f"{where}.skill_id")
        wanted = entry.get("version")
        if wanted is None:
            number = skill.default_version
        elif wanted == "latest":
            number = skill.latest_version
        else:
            number = version_number(wanted, f"{where}.version")
        found = await self.store.get_version(skill_id, number, tenant=tenant)
        reader = await self.blobs.open(found.blob_id) if found is not None else None
        if found is None or reader is None:
            raise version_not_found(wanted if wanted is not None else number, f"{where}.version")
        data = await read_blob(reader, MAX_ZIP_BYTES)
        return ResolvedSkill(found.name, found.description, data)

    async def attach(self, container_id: str, skills: Sequence[ResolvedSkill], *, tenant: str) -> None:
        """Keep ``skills`` as the container's own (blobs, then their rows in one transaction)."""
        kept: list[ContainerSkill] = []
        try:
            for position, skill in enumerate(skills):
                blob_id = await self._keep(skill.data)
                kept.append(ContainerSkill(container_id, position, skill.name, skill.description, len(skill.data),
                                           blob_id))
            await self.store.add_container_skills(kept, tenant=tenant,
                                                  max_stored_bytes=self._max_stored_bytes(tenant))
        except BaseException as error:
            await self._remove([skill.blob_id for skill in kept])
            if isinstance(error, StorageLimitExceeded):
                refusal = storage_limit_error(error.limit, error.used)
                refusal.param = "skills"
                raise refusal from None
            raise

    async def container_skills(self, container_id: str, *, tenant: str) -> builtins.list[ContainerSkill]:
        return await self.store.container_skills(container_id, tenant=tenant)

    async def container_bundles(self, container_id: str, *,
                                tenant: str) -> builtins.list[tuple[ContainerSkill, SkillBundle]]:
        """The container's skills, read back and checked again (what is laid out in its sandbox calls)."""
        found: list[tuple[ContainerSkill, SkillBundle]] = []
        for skill in await self.store.container_skills(container_id, tenant=tenant):
            reader = await self.blobs.open(skill.blob_id)
            if reader is None:
                continue  # the container was deleted meanwhile
            data = await read_blob(reader, MAX_ZIP_BYTES)
            found.append((skill, await asyncio.to_thread(read_zip, data)))
        return found


def _inline(entry: Mapping[str, Any], where: str) -> ResolvedSkill:
    """An inline skill: its base64 zip, checked like an upload (its ``SKILL.md`` included); ``name`` (the
    directory it is laid out in) and ``description`` as given."""
    for field_name in ("name", "description"):
        if not isinstance(entry.get(field_name), str) or not entry[field_name].strip():
            raise invalid_request(f"Missing required parameter: '{where}.{field_name}'.",
                                  param=f"{where}.{field_name}", code="missing_required_parameter")
    source = entry.get("source")
    if not isinstance(source, dict):
        raise invalid_request(f"Missing required parameter: '{where}.source'.", param=f"{where}.source",
                              code="missing_required_parameter")
    if source.get("type") != "base64":
        raise invalid_request(f"Invalid value for '{where}.source.type': expected 'base64'.",
                              param=f"{where}.source.type")
    if source.get("media_type") != "application/zip":
        raise invalid_request(f"Invalid value for '{where}.source.media_type': expected 'application/zip'.",
                              param=f"{where}.source.media_type")
    data = source.get("data")
    if not isinstance(data, str) or len(data) > MAX_ZIP_BYTES * 4 // 3 + 4:
        raise invalid_request(f"Invalid value for '{where}.source.data': expected a base64 zip of at most "
                              f"{MAX_ZIP_BYTES} bytes.", param=f"{where}.source.data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_request(f"Invalid value for '{where}.source.data': not base64.",
                              param=f"{where}.source.data") from None
    name = entry["name"]
    if not NAME_PATTERN.fullmatch(name):
        raise invalid_request(f"Invalid value for '{where}.name': expected 1 to 64 letters, digits, '.', '_' or "
                              "'-', starting with a letter or digit (it names the skill's directory).",
                              param=f"{where}.name")
    if len(entry["description"]) > MAX_DESCRIPTION:
        raise invalid_request(f"Invalid value for '{where}.description': at most {MAX_DESCRIPTION} characters.",
                              param=f"{where}.description")
    bundle = read_zip(raw, f"{where}.source.data")
    return ResolvedSkill(name, entry["description"].strip(), canonical_zip(bundle))


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}
