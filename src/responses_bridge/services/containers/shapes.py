"""The wire shapes of containers and their files (``openai.types.containers``), and the checks of what a client
sends to make one. Apart from the service so that the run (which names a container's files in its items) reads
them without the service's I/O."""

from __future__ import annotations

import posixpath
from typing import Any

import orjson

from ...protocol.errors import invalid_request
from ...store.records import StoredContainer, StoredContainerFile

DATA_DIR = "/mnt/data"
DEFAULT_MINUTES = 20
MAX_MINUTES = 7 * 24 * 60
MAX_NAME = 256
MAX_PATH = 1024


def container_object(container: StoredContainer) -> dict[str, Any]:
    return {"id": container.id, "object": "container", "created_at": container.created_at, "status": "running",
            "name": container.name, "expires_after": {"anchor": "last_active_at",
                                                       "minutes": container.expires_minutes},
            "last_active_at": container.last_active_at, "memory_limit": container.memory_limit or "1g",
            "network_policy": network_policy_object(container)}


def network_policy_object(container: StoredContainer) -> dict[str, Any]:
    """The policy as OpenAI shows it: the type and the allowed domains, never a domain secret."""
    if not container.network_policy:
        return {"type": "disabled"}
    stored = orjson.loads(container.network_policy)
    if stored.get("type") == "blocklist":  # an agent session's: no form in this API (the session tells it)
        return {"type": "allowlist"}
    return {"type": "allowlist", "allowed_domains": list(stored.get("allowed_domains") or ())}


def container_file_object(file: StoredContainerFile) -> dict[str, Any]:
    return {"id": file.id, "object": "container.file", "created_at": file.created_at, "bytes": file.bytes,
            "container_id": file.container_id, "path": file.path, "source": file.source}


def check_name(value: object) -> str:
    if value is None:
        raise invalid_request("Missing required parameter: 'name'.", param="name", code="missing_required_parameter")
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise invalid_request(f"Invalid value for 'name': expected a non-empty string of at most {MAX_NAME} "
                              "characters.", param="name", code="invalid_value")
    return value


def check_expires_after(value: object) -> int:
    """Minutes after the last use: ``{"anchor": "last_active_at", "minutes": 1…10080}``, default 20."""
    if value is None:
        return DEFAULT_MINUTES
    if not isinstance(value, dict):
        raise invalid_request("Invalid value for 'expires_after': expected an object with 'anchor' and 'minutes'.",
                              param="expires_after", code="invalid_type")
    if value.get("anchor") != "last_active_at":
        raise invalid_request("Invalid value for 'expires_after.anchor': expected 'last_active_at'.",
                              param="expires_after.anchor", code="invalid_value")
    minutes = value.get("minutes")
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MINUTES:
        raise invalid_request(f"Invalid value for 'expires_after.minutes': expected an integer between 1 and "
                              f"{MAX_MINUTES}.", param="expires_after.minutes", code="invalid_value")
    return minutes


def data_path(name: str | None, param: str = "file") -> str:
    """The absolute path under /mnt/data a client's file name (or path) is stored at: relative names go under
    /mnt/data; nothing may leave it (``..``), and NUL or an empty name is refused."""
    text = (name or "").strip()
    if not text or "\x00" in text or len(text) > MAX_PATH:
        raise invalid_request("Invalid file name: expected a non-empty name without NUL characters.", param=param,
                              code="invalid_value")
    joined = posixpath.normpath(posixpath.join(DATA_DIR, text))
    if not joined.startswith(DATA_DIR + "/"):
        raise invalid_request(f"Invalid file path '{text[:200]}': container files live under {DATA_DIR}.",
                              param=param, code="invalid_value")
    return joined


def relative_path(path: str) -> str:
    """A stored path as seen from /mnt/data (what the sandbox's directory holds)."""
    return posixpath.relpath(path, DATA_DIR)
