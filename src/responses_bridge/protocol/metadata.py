"""``metadata`` as every object of the API takes it (responses, conversations, chat completions, vector stores,
agents, vaults, prompts, automations): at most 16 string keys of <= 64 characters, string values of <= 512. One
module beneath every capability, so that checking an object's metadata imports no one route's request parser."""

from __future__ import annotations

from typing import Any

from .errors import invalid_request


def check_metadata(metadata: Any, param: str = "metadata") -> None:
    """``metadata`` of any object: at most 16 string keys of <= 64 characters, string values of <= 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid_request(f"Invalid type for '{param}': expected an object of strings.", param=param,
                              code="invalid_type")
    check_metadata_sizes(metadata)


def metadata_update(body: dict[str, Any]) -> dict[str, str]:
    """The new ``metadata`` of an update (``POST /v1/conversations/{id}``, ``/v1/chat/completions/{id}``):
    required, checked, ``null`` meaning none."""
    if "metadata" not in body:
        raise invalid_request("Missing required parameter: 'metadata'.", param="metadata",
                              code="missing_required_parameter")
    metadata = body["metadata"]
    check_metadata(metadata)
    return metadata or {}


def check_metadata_sizes(metadata: dict[str, str] | None) -> None:
    """Sizes alone, where a type already held the shape (a Responses request's ``metadata``)."""
    if metadata is None:
        return
    if len(metadata) > 16:
        raise invalid_request("'metadata' may have at most 16 keys.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise invalid_request(f"metadata key '{key[:70]}' is longer than 64 characters.", param="metadata")
        if len(value) > 512:
            raise invalid_request(f"metadata value for '{key}' is longer than 512 characters.", param="metadata")
