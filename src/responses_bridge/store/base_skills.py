"""The storage contract of Skills (``/v1/skills``) and of the skills a container carries: rows here, each skill
version's zip a blob in the files' bytes storage (:class:`~responses_bridge.store.base_files.FileBytes`) under
``blob_id``, so every replica on one database lays out the same bytes.

Ownership as everywhere (base.py): every method taking ``tenant`` reads or changes only that tenant's rows,
and another tenant's skill is exactly a missing one. A version's number is given by the store in the inserting
transaction (one more than any the skill ever had, so a deleted number is never reused), and the tenant's
``max_stored_bytes`` is checked there too, over the same sum as files' and container files' bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StoredSkill:
    id: str
    name: str  # the default version's
    description: str
    created_at: int
    default_version: int
    latest_version: int  # the highest version still stored


@dataclass(frozen=True, slots=True)
class StoredSkillVersion:
    id: str
    skill_id: str
    version: int  # 0 until the store numbers it
    name: str
    description: str
    created_at: int
    bytes: int
    blob_id: str


@dataclass(frozen=True, slots=True)
class ContainerSkill:
    """A skill a container was made with: its own copy of the zip (a reference's version is copied when the
    container is made, so deleting the skill later leaves the container as it was)."""

    container_id: str
    position: int
    name: str
    description: str
    bytes: int
    blob_id: str


class DefaultVersionDeletion(Exception):
    """The version is the skill's default: another must be made the default before it can go."""


class UnknownVersion(LookupError):
    """No such version of the skill."""


@runtime_checkable
class SkillStore(Protocol):
    async def create_skill(self, skill: StoredSkill, version: StoredSkillVersion, *, tenant: str,
                           max_stored_bytes: int | None) -> None:
        """Insert the skill with its first version (number 1, the default). ``StorageLimitExceeded`` when the
        version's bytes would pass ``max_stored_bytes`` (nothing written)."""

    async def get_skill(self, skill_id: str, *, tenant: str) -> StoredSkill | None: ...

    async def list_skills(self, *, tenant: str, after: str | None, limit: int,
                          order: str) -> tuple[list[StoredSkill], bool]:
        """Newest first unless ``order`` is ``asc``; ``has_more``. ``UnknownCursor`` for an unknown ``after``."""
        ...

    async def set_default(self, skill_id: str, version: int, *, tenant: str) -> StoredSkill | None:
        """Make ``version`` the default (the skill's name and description become its); None for an unknown
        skill, :class:`UnknownVersion` for an unknown version."""
        ...

    async def delete_skill(self, skill_id: str, *, tenant: str) -> list[str] | None:
        """Delete the skill and its versions; their blob ids (to remove), None when there was no such skill."""
        ...

    async def add_version(self, version: StoredSkillVersion, *, tenant: str, make_default: bool,
                          max_stored_bytes: int | None) -> StoredSkillVersion | None:
        """Insert a version of ``version.skill_id`` numbered by the store; the stored row, None for an unknown
        skill. ``StorageLimitExceeded`` as for :meth:`create_skill`."""
        ...

    async def get_version(self, skill_id: str, version: int, *, tenant: str) -> StoredSkillVersion | None: ...

    async def list_versions(self, skill_id: str, *, tenant: str, after: int | None, limit: int,
                            order: str) -> tuple[list[StoredSkillVersion], bool]:
        """By version number, ascending unless ``order`` is ``desc``, after version ``after``. The caller
        checked the skill."""
        ...

    async def delete_version(self, skill_id: str, version: int, *, tenant: str) -> str | None:
        """Delete one version; its blob id, None when there was none. :class:`DefaultVersionDeletion` for the
        default version."""
        ...

    async def add_container_skills(self, skills: Sequence[ContainerSkill], *, tenant: str,
                                   max_stored_bytes: int | None) -> None:
        """Attach skills to a container of ``tenant`` (``LookupError`` when it is not one, ``StorageLimitExceeded``
        as for :meth:`create_skill`); they go with the container (its delete returns their blob ids)."""

    async def container_skills(self, container_id: str, *, tenant: str) -> list[ContainerSkill]:
        """A container's skills in their order."""
        ...
