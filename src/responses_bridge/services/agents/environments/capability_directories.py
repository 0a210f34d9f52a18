"""What a session's turn tells the agent of its environment's ``capability_directories``
(protocol/containers/capability_directories.py), read when the turn starts, so a skill a setup command or an earlier
turn wrote is offered from then on.

An ``openai_hosted`` environment's directories are in its container's workspace, whose files are kept in the store
(services/containers/containers.py) whatever the sandbox backend (bubblewrap or agent-sandbox: each call lays them out
from there), so they are read from the store, never from a sandbox: each ``SKILL.md`` at most :data:`MAX_DEPTH` levels
below a directory, its front matter read as an uploaded skill's is (services/containers/skill_bundle.py: ``name`` and
``description``; a manifest that does not parse is skipped), and each ``AGENTS.md``. The paths the agent is told
are the container's (``/mnt/data/…``), which every backend's shell sees. A ``self_hosted`` environment's directories
are the client's: they are named to the model, which reads them with the client's shell.

Bounded work per turn: the container's file rows (as each sandbox call lists them), and at most :data:`MAX_SKILLS`
manifests of at most :data:`MAX_MANIFEST_BYTES` read.
"""

from __future__ import annotations

import asyncio
import posixpath
from typing import Any

import structlog

from ....protocol.containers.capability_directories import (
    AGENTS_FILE,
    SKILL_MANIFEST,
    capabilities_note,
    client_directories_note,
)
from ....protocol.containers.environment_fields import container_path
from ....protocol.errors import APIError
from ....store.base import FileBytes
from ....store.base_files import ContainerStore
from ...containers.skill_bundle import MAX_FRONT_MATTER, manifest

log = structlog.get_logger(__name__)

MAX_DEPTH = 3  # <dir>/SKILL.md, <dir>/<skill>/SKILL.md, <dir>/<group>/<skill>/SKILL.md
MAX_SKILLS = 50
MAX_AGENTS_FILES = 16
MAX_MANIFEST_BYTES = MAX_FRONT_MATTER + 4096  # the front matter and its '---' lines; the rest is not read


async def environment_note(session: dict[str, Any], store: ContainerStore | None, blobs: FileBytes | None, *,
                           tenant: str) -> str:
    """What the turn's instructions say of the session environment's capability directories; empty for none."""
    environment = session.get("environment") or {}
    directories = environment.get("capability_directories") or []
    if not directories:
        return ""
    if environment.get("type") == "self_hosted":
        return client_directories_note(directories)
    if environment.get("type") != "openai_hosted" or store is None or blobs is None:
        return ""
    return await hosted_note(store, blobs, environment["id"], directories, tenant=tenant)


async def hosted_note(store: ContainerStore, blobs: FileBytes, container_id: str, directories: list[str], *,
                      tenant: str) -> str:
    roots = [container_path(directory).rstrip("/") for directory in directories]
    skills: list[tuple[str, str, str]] = []
    agents_files: list[str] = []
    seen: set[str] = set()
    for file in await store.all_files(container_id, tenant=tenant):
        name = posixpath.basename(file.path)
        if name not in (SKILL_MANIFEST, AGENTS_FILE) or file.path in seen or not _within(file.path, roots):
            continue
        seen.add(file.path)
        if name == AGENTS_FILE:
            if len(agents_files) < MAX_AGENTS_FILES:
                agents_files.append(file.path)
        elif len(skills) < MAX_SKILLS:
            described = await _manifest(blobs, file.blob_id)
            if described is not None:
                skills.append((*described, file.path))
    return capabilities_note(skills, agents_files)


def _within(path: str, roots: list[str]) -> bool:
    """Is ``path`` at most :data:`MAX_DEPTH` levels below one of ``roots``?"""
    return any(path.startswith(root + "/") and path[len(root) + 1:].count("/") < MAX_DEPTH for root in roots)


async def _manifest(blobs: FileBytes, blob_id: str) -> tuple[str, str] | None:
    """A ``SKILL.md``'s ``(name, description)``; None when it is gone or does not parse (it is not offered)."""
    reader = await blobs.open(blob_id)
    if reader is None:
        return None
    try:
        data = b""
        while len(data) < MAX_MANIFEST_BYTES:
            chunk = await reader.read(MAX_MANIFEST_BYTES - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        await reader.aclose()
    try:
        return await asyncio.to_thread(manifest, _front_part(data))
    except APIError as error:
        log.info("capability_skill_skipped", reason=error.message[:200])
        return None


def _front_part(data: bytes) -> bytes:
    """The manifest up to its front matter's end: what was read may cut the body (never read whole) mid-character."""
    text = data.decode("utf-8-sig", errors="ignore")
    lines = text.splitlines(keepends=True)
    if lines and lines[0].strip() == "---":
        for index, line in enumerate(lines[1:], 1):
            if line.strip() == "---":
                return "".join(lines[:index + 1]).encode()
    return data
