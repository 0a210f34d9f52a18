"""Skills (``/v1/skills``): versioned bundles of files around a ``SKILL.md``, tenant-owned, in OpenAI's shapes
(``openai.types.Skill``, ``SkillVersion``, ``DeletedSkill``, ``skills.DeletedSkillVersion``). The skills a
container is made with, and how they reach its sandbox calls: container_skills.py.

Each version is kept as one zip the bridge wrote itself (skill_bundle.py checks what the client sent
and rebuilds it), stored as a blob in the files' bytes storage, so any replica on the database serves and lays out
the same bytes; its size counts against the tenant's ``max_stored_bytes`` with files and container files (checked
by the store in the inserting transaction).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog

from ... import ids
from ...protocol.errors import APIError, invalid_request, not_found
from ...store.base import BlobReader, FileBytes
from ...store.base_skills import (
    DefaultVersionDeletion,
    SkillStore,
    StoredSkill,
    StoredSkillVersion,
    UnknownVersion,
)
from ...store.records import StorageLimitExceeded, UnknownCursor
from ..files.files import new_file_id
from ..files.quota import storage_limit_error
from ..pagination import check_page
from .skill_bundle import SkillBundle, canonical_zip, read_zip

T = TypeVar("T")
log = structlog.get_logger(__name__)

MAX_LIST_LIMIT = 100
READ_CHUNK = 1 << 20


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


async def keep_blob(blobs: FileBytes, data: bytes) -> str:
    """Store a zip as a new blob; its id."""
    blob_id = new_file_id()
    writer = await blobs.writer(blob_id)
    try:
        await writer.write(data)
        await writer.publish()
    except BaseException:
        await writer.discard()
        raise
    return blob_id


async def copy_blob(blobs: FileBytes, reader: BlobReader) -> tuple[str, int]:
    """A new blob holding what ``reader`` reads (closed after), published whole or not at all; its id and size.
    Copies are what keep a container's skill or a session's artifact apart from the bytes it came from."""
    blob_id = new_file_id()
    writer = await blobs.writer(blob_id)
    size = 0
    try:
        while chunk := await reader.read(READ_CHUNK):
            size += len(chunk)
            await writer.write(chunk)
        await writer.publish()
    except BaseException:
        await writer.discard()
        raise
    finally:
        await reader.aclose()
    return blob_id, size


async def remove_blobs(blobs: FileBytes, blob_ids: Sequence[str]) -> None:
    for blob in blob_ids:
        try:
            await blobs.remove(blob)
        except OSError as error:
            log.warning("skill_blob_remove_failed", error=str(error))


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
        return await keep_blob(self.blobs, data)

    async def _remove(self, blobs: Sequence[str]) -> None:
        await remove_blobs(self.blobs, blobs)

    def _over_limit(self, error: StorageLimitExceeded) -> APIError:
        refusal = storage_limit_error(error.limit, error.used)
        refusal.param = "files"
        return refusal

    # -- skills ---------------------------------------------------------------------------------------------------

    async def create(self, bundle: SkillBundle, *, tenant: str) -> dict[str, Any]:
        """``POST /v1/skills``: the skill and its version 1 (the default) from a checked bundle."""
        now = self.now()
        skill = StoredSkill(id=ids.new_id("skill"), name=bundle.name, description=bundle.description,
                            created_at=now, default_version=1, latest_version=1)
        version = await self._kept_version(skill.id, bundle, 1, now)
        await self._storing(version, self.store.create_skill(skill, version, tenant=tenant,
                                                             max_stored_bytes=self._max_stored_bytes(tenant)))
        return skill_object(skill)

    async def _kept_version(self, skill_id: str, bundle: SkillBundle, number: int, created_at: int
                            ) -> StoredSkillVersion:
        """The bundle as the bridge's own zip, kept as a blob, and the version that names it (not stored yet:
        the store numbers a new version of an existing skill itself)."""
        data = await asyncio.to_thread(canonical_zip, bundle)
        await asyncio.to_thread(read_zip, data)  # what is kept passes the checks every lay-out makes (a directory
        # upload of a well-compressing file made a zip the lay-out then refused as a bomb): refused now, named
        blob_id = await self._keep(data)
        return StoredSkillVersion(id=ids.new_id("skillver"), skill_id=skill_id, version=number, name=bundle.name,
                                  description=bundle.description, created_at=created_at, bytes=len(data),
                                  blob_id=blob_id)

    async def _storing(self, version: StoredSkillVersion, write: Awaitable[T]) -> T:
        """``write``, the store call that records ``version``: if it fails, the version's blob goes too (nothing
        names it), and a tenant's byte limit becomes the client's 400."""
        try:
            return await write
        except BaseException as error:
            await self._remove([version.blob_id])
            if isinstance(error, StorageLimitExceeded):
                raise self._over_limit(error) from None
            raise

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
        version = await self._kept_version(skill_id, bundle, 0, self.now())
        stored = await self._storing(version, self.store.add_version(
            version, tenant=tenant, make_default=make_default, max_stored_bytes=self._max_stored_bytes(tenant)))
        if stored is None:
            await self._remove([version.blob_id])
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

def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}
