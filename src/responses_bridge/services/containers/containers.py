"""Containers (``/v1/containers``): where the code interpreter's files live between calls, as OpenAI shapes them.

A container is a row (tenant-owned, expiring ``expires_after.minutes`` after its last use) and files, each a row
naming its path under ``/mnt/data`` and a blob in the same storage as uploaded files' bytes (``files/`` next to
the SQLite database, or rows of the shared PostgreSQL database), so every replica on one database runs the next
call on the same files. Files come from uploads (``source: user``), from ``/v1/files`` (copied: deleting either
later leaves the other), or from the code (``source: assistant``, written back after each run).

Bounds: a file at most ``file_bytes`` (100 MiB), a container's files at most ``container_bytes`` (1 GiB), and per
tenant ``max_containers`` live containers and ``max_stored_bytes`` bytes of files and container files together (the
tenant policy; one budget with ``/v1/files`` uploads). The tenant's limits are checked by the store in the
transaction that inserts the container or the file, so requests at once, on any replicas, cannot all pass them.

A path is a file or a directory, never both: a file at ``a`` and one at ``a/b`` cannot be laid out in one run's
directory, so the second is refused (a 400 naming both paths), checked by the store in the write's transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

import structlog

from ... import ids
from ...process.periodic import Periodic
from ...protocol.containers.environments import HostedPlan
from ...protocol.errors import APIError, invalid_request, not_found
from ...sandbox.egress.policy import NetworkPolicy
from ...sandbox.limits import MEMORY_LIMITS
from ...store.base import BlobReader, ContainerStore, FileBytes
from ...store.records import (
    ContainerLimitExceeded,
    PathConflict,
    StorageLimitExceeded,
    StoredContainer,
    StoredContainerFile,
    UnknownCursor,
    parent_paths,
)
from ..files.files import FileService, new_file_id
from ..pagination import check_page
from .container_skills import ContainerSkills, ResolvedSkill
from .network import NetworkPolicies
from .shapes import (
    check_expires_after,
    check_name,
    container_file_object,
    container_object,
    data_path,
)


class ContainerPackages(Protocol):
    """What is asked of an agent environment's packages (services/agents/environments/packages.py) by the containers'
    callers: checked before a container is made, installed at its start, laid out read-only in each call."""

    def check(self, plan: HostedPlan) -> None: ...

    async def install(self, container_id: str, python: tuple[str, ...], npm: tuple[str, ...], *,
                      tenant: str, system: tuple[str, ...] = ()) -> None: ...

    def laid_out(self, container: StoredContainer) -> AbstractAsyncContextManager[list[tuple[Path, str]]]: ...

log = structlog.get_logger(__name__)

MAX_LIST_LIMIT = 100
PURGE_BATCH = 100
READ_CHUNK = 1 << 20


def container_not_found(container_id: str, param: str | None = "container_id") -> APIError:
    return not_found(f"No such Container: {container_id[:200]}", param=param, code="not_found")


def file_not_found(file_id: str) -> APIError:
    return not_found(f"No such Container File: {file_id[:200]}", param="file_id", code="not_found")


def path_conflict(path: str, existing: str, param: str | None) -> APIError:
    return invalid_request(f"Cannot store a file at '{path[:300]}': the container has a file at '{existing[:300]}', "
                           "and a path cannot be both a file and a directory. Delete that file first, or choose "
                           "another name.", param=param, code="path_conflict")


class ContainerService:
    """The Containers API, and the files the code interpreter reads and writes. ``blobs``: the file bytes storage
    (the Files service's); ``files``: to copy ``/v1/files`` into a container; ``network``: the network policies
    this deployment allows, and the key their secrets are sealed with."""

    def __init__(self, store: ContainerStore, blobs: FileBytes, files: FileService, *, file_bytes: int,
                 container_bytes: int, max_containers: Callable[[str], int | None] = lambda tenant: None,
                 max_stored_bytes: Callable[[str], int | None] = lambda tenant: None,
                 clock: Callable[[], float] = time.time, purge_interval: float = 60.0,
                 skills: ContainerSkills | None = None,
                 network: NetworkPolicies | None = None) -> None:
        self.store = store
        self.skills = skills
        # an agent environment's packages (services/agents/environments/packages.py)
        self.packages: ContainerPackages | None = None
        self.network = network or NetworkPolicies()
        self.blobs = blobs
        self.files = files
        self.file_bytes = file_bytes
        self.container_bytes = container_bytes
        self._max_containers = max_containers
        self._max_stored_bytes = max_stored_bytes
        self._clock = clock
        self._purger = Periodic.purge("containers", purge_interval, self.purge_expired)
        self._locks: dict[str, asyncio.Lock] = {}

    def now(self) -> int:
        return int(self._clock())

    def lock(self, container_id: str) -> asyncio.Lock:
        """One run at a time on a container in this process: a run's write-back must not interleave another's."""
        return self._locks.setdefault(container_id, asyncio.Lock())

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.purge_expired()
        self._purger.start()

    async def aclose(self) -> None:
        await self._purger.stop()

    async def purge_expired(self) -> int:
        """Delete every expired container and its files' bytes, whoever owns it; the number deleted."""
        purged = 0
        while True:
            expired = await self.store.expired_containers(self.now(), PURGE_BATCH)
            for container_id, tenant in expired:
                blobs = await self.store.delete_container(container_id, tenant=tenant)
                if blobs is not None:
                    purged += 1
                    await self._remove_blobs(blobs)
                    self._locks.pop(container_id, None)
            if len(expired) < PURGE_BATCH:
                break
        if purged:
            log.info("containers_expired_purged", count=purged)
        return purged

    # -- containers -----------------------------------------------------------------------------------------------

    async def create(self, body: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        """``POST /v1/containers``: ``name`` (required), ``expires_after``, ``file_ids``, ``memory_limit``,
        ``skills`` (skills.py: laid out read-only at ``/mnt/skills/<name>`` in each call),
        ``network_policy`` (network.py)."""
        name = check_name(body.get("name"))
        minutes = check_expires_after(body.get("expires_after"))
        memory = body.get("memory_limit")
        if memory is not None and memory not in MEMORY_LIMITS:
            raise invalid_request(f"Invalid value for 'memory_limit': expected one of {', '.join(MEMORY_LIMITS)}.",
                                  param="memory_limit", code="invalid_value")
        file_ids = body.get("file_ids")
        if file_ids is not None and not (isinstance(file_ids, list) and all(isinstance(f, str) for f in file_ids)):
            raise invalid_request("Invalid value for 'file_ids': expected an array of file ids.", param="file_ids",
                                  code="invalid_type")
        network = self.network.parse(body.get("network_policy"), "network_policy")
        skills = await self.resolve_skills(body.get("skills"), tenant=tenant, param="skills")
        container = await self.new_container(name, tenant=tenant, minutes=minutes, memory_limit=memory,
                                             file_ids=file_ids or (), param="file_ids", skills=skills,
                                             network=network)
        return container_object(container)

    async def resolve_skills(self, value: object, *, tenant: str, param: str) -> list[ResolvedSkill]:
        """A container's ``skills`` checked and resolved (container_skills.py), before anything is
        made."""
        if value is None:
            return []
        if self.skills is None:
            raise invalid_request(f"Skills are not served here: '{param}' cannot be used.", param=param,
                                  code="unsupported_parameter")
        return await self.skills.resolve(value, tenant=tenant, param=param)

    async def new_container(self, name: str, *, tenant: str, minutes: int = 20, memory_limit: str | None = None,
                            file_ids: Any = (), param: str = "file_ids",
                            skills: Sequence[ResolvedSkill] = (),
                            network: NetworkPolicy | None = None) -> StoredContainer:
        """Make a container (also the code interpreter's ``auto`` ones) and copy ``file_ids`` into it; every file
        is checked before anything is made (a 404 naming ``param``), and so is the path each will have: a name
        that makes no path, or two files of which one would be a directory of the other, is a 400 (a container
        half made would be left behind otherwise). The tenant's ``max_containers`` is checked by the store in the
        inserting transaction, not counted here first: creates at once (several requests, or replicas on one
        database) would all pass a count taken before any of them was inserted."""
        paths: dict[str, int] = {}
        for position, file_id in enumerate(file_ids):
            found = await self.files.get(file_id, tenant=tenant)
            if found is None:
                raise not_found(f"No such File object: {file_id[:200]}", param=f"{param}[{position}]",
                                code="not_found")
            path = data_path(found["filename"], f"{param}[{position}]")
            for parent in parent_paths(path):
                if parent in paths:
                    raise path_conflict(path, parent, f"{param}[{position}]")
            clash = next((other for other in paths if other.startswith(path + "/")), None)
            if clash is not None:
                raise path_conflict(path, clash, f"{param}[{position}]")
            paths[path] = position
        now = self.now()
        container = StoredContainer(id=ids.new_id("cntr"), name=name, created_at=now, last_active_at=now,
                                    expires_minutes=minutes, memory_limit=memory_limit,
                                    network_policy=self.network.stored(network))
        try:
            await self.store.create_container(container, tenant=tenant, max_containers=self._max_containers(tenant))
        except ContainerLimitExceeded as exceeded:
            raise invalid_request(f"This tenant may keep at most {exceeded.limit} containers; delete one or let "
                                  "one expire.", param=None, code="container_limit_exceeded") from None
        try:
            if skills and self.skills is not None:
                await self.skills.attach(container.id, skills, tenant=tenant)
            for file_id in file_ids:
                await self.copy_file(container, file_id, tenant=tenant)
        except BaseException:
            blobs = await self.store.delete_container(container.id, tenant=tenant)  # never a container half made
            await self._remove_blobs(blobs or [])
            raise
        return container

    async def live(self, container_id: str, *, tenant: str) -> StoredContainer | None:
        if not isinstance(container_id, str) or not container_id.startswith("cntr_"):
            return None
        return await self.store.get_container(container_id, self.now(), tenant=tenant)

    async def _require(self, container_id: str, tenant: str) -> StoredContainer:
        container = await self.live(container_id, tenant=tenant)
        if container is None:
            raise container_not_found(container_id)
        return container

    async def retrieve(self, container_id: str, *, tenant: str) -> dict[str, Any]:
        return container_object(await self._require(container_id, tenant))

    async def list(self, *, tenant: str, after: str | None, limit: int, order: str,
                   name: str | None = None) -> dict[str, Any]:
        check_page(limit, order, MAX_LIST_LIMIT)
        try:
            found, has_more = await self.store.list_containers(self.now(), tenant=tenant, after=after, limit=limit,
                                                               order=order)
        except UnknownCursor:
            raise invalid_request(f"Invalid value for 'after': no container with id '{(after or '')[:200]}'.",
                                  param="after", code="invalid_value") from None
        data = [container_object(container) for container in found if name is None or container.name == name]
        return _page(data, has_more)

    async def delete(self, container_id: str, *, tenant: str) -> dict[str, Any]:
        await self._require(container_id, tenant)
        blobs = await self.store.delete_container(container_id, tenant=tenant)
        if blobs is None:
            raise container_not_found(container_id)
        await self._remove_blobs(blobs)
        self._locks.pop(container_id, None)
        return {"id": container_id, "object": "container.deleted", "deleted": True}

    async def touch(self, container_id: str, *, tenant: str) -> None:
        await self.store.touch_container(container_id, self.now(), tenant=tenant)

    async def set_network(self, container_id: str, network: NetworkPolicy | None, *, tenant: str) -> bool:
        """Replace a live container's policy (sealed as when it was made); False: gone."""
        return await self.store.set_container_network(container_id, self.network.stored(network), self.now(),
                                                      tenant=tenant)

    # -- files ----------------------------------------------------------------------------------------------------

    async def container_for_files(self, container_id: str, *, tenant: str) -> StoredContainer:
        return await self._require(container_id, tenant)

    async def put_bytes(self, container: StoredContainer, path: str, chunks: AsyncIterator[bytes], *, source: str,
                        tenant: str, param: str = "file") -> StoredContainerFile:
        """Store a file at ``path`` (absolute under /mnt/data) from ``chunks``, replacing one at the same path: the
        new file has a new id, and the one it replaced is gone (its id a 404, never serving the new bytes).
        A 413 past the file limit, a 400 ``storage_limit_exceeded`` past the container's or tenant's bytes, a 400
        ``path_conflict`` when a stored file is at a directory of ``path`` or under it (naming ``param``)."""
        blob_id = new_file_id()
        writer = await self.blobs.writer(blob_id)
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.file_bytes:
                    raise APIError(413, f"A container file may be at most {self.file_bytes} bytes.",
                                   type="invalid_request_error", param="file", code="file_too_large")
                await writer.write(chunk)
            await writer.publish()
        except BaseException:
            await writer.discard()
            raise
        row = StoredContainerFile(id=ids.new_id("cfile"), container_id=container.id, path=path, bytes=size,
                                  created_at=self.now(), source=source, blob_id=blob_id)
        try:
            replaced = await self.store.put_file(row, tenant=tenant, max_container_bytes=self.container_bytes,
                                                 max_stored_bytes=self._max_stored_bytes(tenant))
        except BaseException as error:
            await self._remove_blobs([blob_id])
            if isinstance(error, LookupError):
                raise container_not_found(container.id) from None
            if isinstance(error, PathConflict):
                raise path_conflict(error.path, error.existing, param) from None
            if isinstance(error, StorageLimitExceeded):
                raise invalid_request(f"Storing this file would pass a storage limit of {error.limit} bytes "
                                      f"({error.used} bytes in use).", param="file",
                                      code="storage_limit_exceeded") from None
            raise
        if replaced is not None:
            await self._remove_blobs([replaced])
        stored = await self.store.get_file(container.id, row.id, tenant=tenant)
        return stored or row

    async def copy_file(self, container: StoredContainer, file_id: str, *, tenant: str) -> StoredContainerFile:
        """Copy a ``/v1/files`` file into the container, at ``/mnt/data/<its filename>``."""
        reader, found = await self.files.open_content(file_id, tenant=tenant)
        try:
            path = data_path(found["filename"], "file_id")
            return await self.put_bytes(container, path, _read_all(reader), source="user", tenant=tenant,
                                        param="file_id")
        finally:
            await reader.aclose()

    async def list_files(self, container_id: str, *, tenant: str, after: str | None, limit: int,
                         order: str) -> dict[str, Any]:
        await self._require(container_id, tenant)
        check_page(limit, order, MAX_LIST_LIMIT)
        try:
            found, has_more = await self.store.list_files(container_id, tenant=tenant, after=after, limit=limit,
                                                          order=order)
        except UnknownCursor:
            raise invalid_request(f"Invalid value for 'after': no file with id '{(after or '')[:200]}'.",
                                  param="after", code="invalid_value") from None
        return _page([container_file_object(file) for file in found], has_more)

    async def get_file(self, container_id: str, file_id: str, *, tenant: str) -> StoredContainerFile:
        await self._require(container_id, tenant)
        found = await self.store.get_file(container_id, file_id, tenant=tenant)
        if found is None:
            raise file_not_found(file_id)
        return found

    async def retrieve_file(self, container_id: str, file_id: str, *, tenant: str) -> dict[str, Any]:
        return container_file_object(await self.get_file(container_id, file_id, tenant=tenant))

    async def open_file(self, container_id: str, file_id: str, *,
                        tenant: str) -> tuple[BlobReader, StoredContainerFile]:
        found = await self.get_file(container_id, file_id, tenant=tenant)
        reader = await self.blobs.open(found.blob_id)
        if reader is None:  # deleted between the lookup and the open
            raise file_not_found(file_id)
        return reader, found

    async def delete_file(self, container_id: str, file_id: str, *, tenant: str) -> dict[str, Any]:
        await self._require(container_id, tenant)
        blob = await self.store.delete_file(container_id, file_id, tenant=tenant)
        if blob is None:
            raise file_not_found(file_id)
        await self._remove_blobs([blob])
        return {"id": file_id, "object": "container.file.deleted", "deleted": True}

    async def _remove_blobs(self, blobs: Sequence[str]) -> None:
        for blob in blobs:
            try:
                await self.blobs.remove(blob)
            except OSError as error:
                log.warning("container_blob_remove_failed", error=str(error))


async def _read_all(reader: BlobReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(READ_CHUNK):
        yield chunk


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}
