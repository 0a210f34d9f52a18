"""The fields an automatic container is asked for with, read the same way for every tool that makes one: the code
interpreter's ``container: {"type": "auto", …}`` and the hosted shell's ``environment: {"type": "container_auto",
…}`` (their ``skills`` and ``network_policy`` are read by their own parsers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...protocol.errors import invalid_request
from ...sandbox.limits import MEMORY_LIMITS


def auto_container_fields(value: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], str | None]:
    """``file_ids`` (copied into the new container) and ``memory_limit`` (one of :data:`MEMORY_LIMITS`, or None:
    the deployment's), or a 400 naming the field under ``where``."""
    file_ids = value.get("file_ids") or []
    if not isinstance(file_ids, list) or not all(isinstance(file_id, str) for file_id in file_ids):
        raise invalid_request(f"Invalid value for '{where}.file_ids': expected an array of file ids.",
                              param=f"{where}.file_ids", code="invalid_value")
    memory = value.get("memory_limit")
    if memory is not None and memory not in MEMORY_LIMITS:
        raise invalid_request(f"Invalid value for '{where}.memory_limit': expected one of "
                              f"{', '.join(MEMORY_LIMITS)}.", param=f"{where}.memory_limit", code="invalid_value")
    return tuple(file_ids), memory
