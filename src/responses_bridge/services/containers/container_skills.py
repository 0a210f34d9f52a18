"""The skills a container is made with (``skills`` on ``POST /v1/containers``, and on a shell tool's
``container_auto``), and how they reach each sandbox call in that container: checked and resolved before the
container is made (400s and 404s naming ``skills[i]`` and the field), copied into the container (its own blobs,
counted in the tenant's stored bytes, deleted with it), and bound read-only at ``/mnt/skills/<name>/`` of each
call from a cache where each skill version is unpacked once (skill_cache.py), with the note telling the model
what they are (protocol/containers/skills_note.py).

Every tool that runs code in a container goes through :meth:`ContainerSkills.laid_out` and
:meth:`ContainerSkills.note`, keyed off the container, not off one tool.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...protocol.containers.skills_note import skills_note
from ...protocol.errors import invalid_request, not_found
from ...store.base import FileBytes
from ...store.base_skills import ContainerSkill, SkillStore
from ...store.records import StorageLimitExceeded
from ..files.quota import storage_limit_error
from .skill_bundle import (
    MAX_DESCRIPTION,
    MAX_ZIP_BYTES,
    NAME_PATTERN,
    canonical_zip,
    read_zip,
)
from .skill_cache import SkillCache
from .skills import copy_blob, keep_blob, remove_blobs, skill_not_found, version_not_found, version_number

MAX_CONTAINER_SKILLS = 20
DEFAULT_CACHE_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class ResolvedSkill:
    """A skill for a container, checked: the zip to keep, as bytes (an inline skill) or as a stored version's
    blob (a reference: copied a chunk at a time, never read whole)."""

    name: str
    description: str
    data: bytes | None = None
    blob_id: str | None = None
    version: str | None = None  # a reference's concrete version (a session's environment shows it)


class ContainerSkills:
    """Skills on containers, over the skills' store and the files' bytes storage (``blobs``)."""

    def __init__(self, store: SkillStore, blobs: FileBytes, *,
                 max_stored_bytes: Callable[[str], int | None] = lambda tenant: None,
                 workdir: Path | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.store = store
        self.blobs = blobs
        self._max_stored_bytes = max_stored_bytes
        # unpacked skills on the host, shared by the calls (skill_cache.py), in the bridge's scratch directory
        # under ``workdir`` (None: the system's temporary directory)
        self.cache = SkillCache(blobs, budget=cache_bytes, workdir=workdir)

    async def resolve(self, value: object, *, tenant: str, param: str) -> list[ResolvedSkill]:
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
        if found is None:
            raise version_not_found(wanted if wanted is not None else number, f"{where}.version")
        return ResolvedSkill(found.name, found.description, blob_id=found.blob_id, version=str(number))

    async def _copy(self, skill: ResolvedSkill) -> tuple[str, int]:
        """Keep the skill's zip as a new blob: (its id, its size)."""
        if skill.data is not None:
            return await keep_blob(self.blobs, skill.data), len(skill.data)
        reader = await self.blobs.open(skill.blob_id or "")
        if reader is None:  # the version was deleted since it was resolved
            raise not_found(f"The skill '{skill.name}' was deleted while the container was made.", param="skills",
                            code="not_found")
        return await copy_blob(self.blobs, reader)

    async def attach(self, container_id: str, skills: Sequence[ResolvedSkill], *, tenant: str) -> None:
        """Keep ``skills`` as the container's own (blobs, then their rows in one transaction)."""
        kept: list[ContainerSkill] = []
        try:
            for position, skill in enumerate(skills):
                blob_id, size = await self._copy(skill)
                kept.append(ContainerSkill(container_id, position, skill.name, skill.description, size, blob_id))
            await self.store.add_container_skills(kept, tenant=tenant,
                                                  max_stored_bytes=self._max_stored_bytes(tenant))
        except BaseException as error:
            await remove_blobs(self.blobs, [skill.blob_id for skill in kept])
            if isinstance(error, StorageLimitExceeded):
                refusal = storage_limit_error(error.limit, error.used)
                refusal.param = "skills"
                raise refusal from None
            raise

    async def container_skills(self, container_id: str, *, tenant: str) -> list[ContainerSkill]:
        return await self.store.container_skills(container_id, tenant=tenant)

    @contextlib.asynccontextmanager
    async def laid_out(self, container_id: str, *, tenant: str) -> AsyncIterator[list[tuple[Path, str]]]:
        """The container's skills for one admitted call: the (host directory, ``/mnt/skills/<name>``) to bind
        read-only (``Sandbox.call(prepare=...)``), none when it has no skills. Each skill version is unpacked
        once, into the cache (skill_cache.py), and held there while the call runs."""
        skills = await self.store.container_skills(container_id, tenant=tenant)
        if not skills:
            yield []
            return
        async with self.cache.bound(skills) as binds:
            yield binds

    async def note(self, container_id: str, *, tenant: str) -> str:
        """What the tool's description tells the model of the container's skills."""
        found = await self.container_skills(container_id, tenant=tenant)
        return skills_note([(skill.name, skill.description) for skill in found])


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
    kept = canonical_zip(bundle)
    read_zip(kept, f"{where}.source.data")  # what is kept passes every later lay-out's checks (skills.py)
    return ResolvedSkill(name, entry["description"].strip(), data=kept)

