"""Reusable prompt templates with versions, and their rendering into a response's instructions.

A prompt version is ``{name, instructions, variables, metadata}``; ``instructions`` is a template whose
``{{variable}}`` placeholders are filled from the response's ``prompt.variables`` (or the declared defaults):

* text values (a string, or ``{"type": "input_text", "text": …}``) are inlined;
* ``input_image`` / ``input_file`` values cannot live in instructions (a system message): the placeholder becomes
  ``[name]`` and the part is sent in one extra user message placed right before the request's own input, each part
  preceded by an ``input_text`` ``[name]:`` label so the model can tell which is which. That message is part of the
  rendered prompt, like the instructions: it is not stored as an input item and not carried to the next turn.

A missing variable is a 400 naming it; an unknown prompt or version a 404. Versions are immutable; updating a
prompt adds a version (optimistically: a ``version`` in the update body must still be the latest, else 409).
"""

from __future__ import annotations

import re
import time
from typing import Any

from ... import ids
from ...engine.state import RenderedPrompt
from ...protocol.errors import APIError, invalid_request, not_found
from ...protocol.lists import list_of
from ...protocol.metadata import check_metadata
from ...protocol.responses.input_items import normalize_input
from ...store.base import PromptStore
from ...store.records import PromptVersionConflict, StoredPromptVersion

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
MAX_PAGE_LIMIT = 100


def prompt_id() -> str:
    return ids.new_id("pmpt")


def placeholders(template: str) -> list[str]:
    """Variable names in order of first appearance."""
    seen: dict[str, None] = {}
    for match in PLACEHOLDER.finditer(template):
        seen.setdefault(match.group(1), None)
    return list(seen)


def _variable_value(value: Any, param: str) -> str | dict[str, Any]:
    """A variable value (or default): a string, or an input_text / input_image / input_file part (normalised)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or value.get("type") not in ("input_text", "input_image", "input_file"):
        raise invalid_request(f"Invalid value for '{param}': expected a string or an input_text, input_image or "
                              "input_file object.", param=param, code="invalid_type")
    try:
        (message,) = normalize_input([{"type": "message", "role": "user", "content": [value]}])
    except APIError as error:
        raise invalid_request(f"Invalid value for '{param}': {error.message}", param=param,
                              code=error.code) from None
    return message["content"][0]


def _declared_variables(value: Any) -> dict[str, Any]:
    """``variables`` of a create/update: a list of names (all required) or an object name -> default (null:
    required)."""
    if value is None:
        return {}
    if isinstance(value, list):
        for index, name in enumerate(value):  # names become dict keys: a list or an object here is a 400, not a 500
            if not isinstance(name, str):
                raise invalid_request(f"Invalid type for 'variables[{index}]': expected a variable name (a string).",
                                      param=f"variables[{index}]", code="invalid_type")
        value = {name: None for name in value}
    if not isinstance(value, dict):
        raise invalid_request("Invalid type for 'variables': expected an array of names or an object of defaults.",
                              param="variables", code="invalid_type")
    declared: dict[str, Any] = {}
    for name, default in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise invalid_request(f"Invalid variable name {name!r}: letters, digits, '_', '.', '-'.",
                                  param="variables", code="invalid_value")
        declared[name] = None if default is None else _variable_value(default, f"variables.{name}")
    return declared


def _version_number(value: Any, param: str) -> int:
    # ASCII digits only (int() refuses "²"), and within SQLite's 64-bit integers
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**63:
        return value
    raise invalid_request(f"Invalid value for '{param}': expected a version such as \"1\".", param=param,
                          code="invalid_value")


def render_prompt(prompt: StoredPromptVersion) -> dict[str, Any]:
    body = prompt.body
    return {
        "id": prompt.id,
        "object": "prompt",
        "created_at": prompt.created_at,
        "version": str(prompt.version),
        "version_created_at": prompt.version_created_at,
        "default_version": str(prompt.default_version or prompt.latest_version),
        "latest_version": str(prompt.latest_version),
        "name": body.get("name"),
        "instructions": body.get("instructions"),
        "variables": body.get("variables") or {},
        "metadata": body.get("metadata") or {},
    }


def _not_found(prompt_id: str, version: int | None = None) -> APIError:
    if version is None:
        return not_found(f"Prompt with id '{prompt_id}' not found.", param="prompt_id", code="not_found")
    return not_found(f"Prompt '{prompt_id}' has no version '{version}'.", param="version", code="not_found")


class PromptService:
    """CRUD for the HTTP door, and the run's :class:`~responses_bridge.run.history.PromptRenderer`."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store

    # -- API ---------------------------------------------------------------------------------------------------

    def _body(self, raw: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
        base = base or {}
        name = raw.get("name", base.get("name"))
        if name is not None and not isinstance(name, str):
            raise invalid_request("Invalid type for 'name': expected a string.", param="name", code="invalid_type")
        instructions = raw.get("instructions", base.get("instructions"))
        if not isinstance(instructions, str):
            if instructions is None:
                raise invalid_request("Missing required parameter: 'instructions'.", param="instructions",
                                      code="missing_required_parameter")
            raise invalid_request("Invalid type for 'instructions': expected a string.", param="instructions",
                                  code="invalid_type")
        variables = (_declared_variables(raw["variables"]) if "variables" in raw
                     else dict(base.get("variables") or {}))
        for used in placeholders(instructions):
            variables.setdefault(used, None)  # every placeholder is a variable, required unless it has a default
        metadata = raw.get("metadata", base.get("metadata"))
        check_metadata(metadata)
        return {"name": name, "instructions": instructions, "variables": variables, "metadata": metadata or {}}

    async def create(self, raw: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        body = self._body(raw)
        new_id, now = prompt_id(), int(time.time())
        await self.store.create_prompt(new_id, now, body, tenant=tenant)
        return render_prompt(StoredPromptVersion(new_id, now, 1, now, 1, None, body))

    async def get(self, prompt_id: str, version: str | None = None, *, tenant: str) -> dict[str, Any]:
        return render_prompt(await self._get(prompt_id, version, "version", tenant))

    async def _get(self, prompt_id: str, version: Any, param: str, tenant: str) -> StoredPromptVersion:
        number = None if version is None else _version_number(version, param)
        found = await self.store.get_prompt(prompt_id, number, tenant=tenant)
        if found is None:
            if number is not None and await self.store.get_prompt(prompt_id, tenant=tenant) is not None:
                raise _not_found(prompt_id, number)
            raise _not_found(prompt_id)
        return found

    async def update(self, prompt_id: str, raw: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        latest = await self.store.get_prompt(prompt_id, tenant=tenant)
        if latest is None:
            raise _not_found(prompt_id)
        expected = None if raw.get("version") is None else _version_number(raw["version"], "version")
        base = (await self.store.get_prompt(prompt_id, latest.latest_version, tenant=tenant)) or latest
        body = self._body(raw, base.body)
        try:
            created = await self.store.add_version(prompt_id, int(time.time()), body, expected, tenant=tenant)
        except PromptVersionConflict:
            current = await self.store.get_prompt(prompt_id, tenant=tenant)
            newest = current.latest_version if current else "?"
            raise APIError(409, f"Version {expected} of prompt '{prompt_id}' is not the latest version "
                           f"({newest}); fetch the latest version and retry.", param="version",
                           code="version_conflict") from None
        if created is None:
            raise _not_found(prompt_id)
        return render_prompt(created)

    async def list(self, *, after: str | None, limit: int, order: str, tenant: str) -> dict[str, Any]:
        if not 1 <= limit <= MAX_PAGE_LIMIT:
            raise invalid_request(f"limit must be an integer between 1 and {MAX_PAGE_LIMIT}", param="limit")
        if order not in ("asc", "desc"):
            raise invalid_request("order must be 'asc' or 'desc'", param="order")
        if after is not None and await self.store.get_prompt(after, tenant=tenant) is None:
            raise invalid_request(f"No prompt found with id '{after}'", param="after")
        prompts, has_more = await self.store.list_prompts(tenant=tenant, after=after, limit=limit, order=order)
        data = [render_prompt(prompt) for prompt in prompts]
        return list_of(data, has_more=has_more)

    async def versions(self, prompt_id: str, *, tenant: str) -> dict[str, Any]:
        versions = await self.store.list_versions(prompt_id, tenant=tenant)
        if versions is None:
            raise _not_found(prompt_id)
        data = [render_prompt(version) for version in versions]
        return list_of(data, has_more=False, id_of=lambda version: version["version"])

    async def set_default_version(self, prompt_id: str, raw: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        if raw.get("version") is None:
            raise invalid_request("Missing required parameter: 'version'.", param="version",
                                  code="missing_required_parameter")
        number = _version_number(raw["version"], "version")
        updated = await self.store.set_default_version(prompt_id, number, tenant=tenant)
        if updated is None:
            if await self.store.get_prompt(prompt_id, tenant=tenant) is None:
                raise _not_found(prompt_id)
            raise _not_found(prompt_id, number)
        return render_prompt(updated)

    async def delete(self, prompt_id: str, *, tenant: str) -> dict[str, Any]:
        if not await self.store.delete_prompt(prompt_id, tenant=tenant):
            raise _not_found(prompt_id)
        return {"id": prompt_id, "object": "prompt.deleted", "deleted": True}

    # -- engine ------------------------------------------------------------------------------------------------

    async def render(self, prompt: dict[str, Any], *, tenant: str) -> RenderedPrompt:
        stored = await self.store.get_prompt(prompt["id"], None if prompt.get("version") is None
                                             else _version_number(prompt["version"], "prompt.version"), tenant=tenant)
        if stored is None:
            version = prompt.get("version")
            raise not_found(f"Prompt with id '{prompt['id']}'" + (f" and version '{version}'" if version else "")
                            + " not found.", param="prompt.version" if version and await self.store.get_prompt(
                                prompt["id"], tenant=tenant) else "prompt.id", code="prompt_not_found")
        given = {name: _variable_value(value, f"prompt.variables.{name}")
                 for name, value in (prompt.get("variables") or {}).items()}
        return render_template(stored, given, prompt.get("variables"))


def render_template(stored: StoredPromptVersion, given: dict[str, Any],
                    sent: dict[str, Any] | None = None) -> RenderedPrompt:
    template = stored.body.get("instructions") or ""
    defaults = stored.body.get("variables") or {}
    values: dict[str, Any] = {}
    for name in placeholders(template):
        value = given.get(name, defaults.get(name))
        if value is None:
            raise invalid_request(f"Missing prompt variable '{name}': prompt '{stored.id}' version "
                                  f"{stored.version} uses '{{{{{name}}}}}' and it has no default.",
                                  param=f"prompt.variables.{name}", code="missing_required_parameter")
        values[name] = value
    media: list[dict[str, Any]] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values[name]
        if isinstance(value, str):
            return value
        if value["type"] == "input_text":
            return value["text"]
        if not any(part.get("text") == f"[{name}]:" for part in media):
            media.extend([{"type": "input_text", "text": f"[{name}]:"}, value])
        return f"[{name}]"

    instructions = PLACEHOLDER.sub(substitute, template)
    items = [{"type": "message", "id": ids.message_id(), "status": "completed", "role": "user",
              "content": media}] if media else []
    echo = {"id": stored.id, "version": str(stored.version),
            "variables": {name: given[name] for name in sent} if sent else None}
    return RenderedPrompt(instructions=instructions, input_items=items, echo=echo)
