"""A sign-in form the desktop's browser shows (a visible password field: page.py finds it), as OpenAI's
``computer_use_approval_request`` of type ``browser_authentication`` describes it, and the client's answer checked.

The form's shape comes from the page, which is untrusted: it is checked and bounded here before anyone sees it
(at most six fields, short ids and labels). The values a client submits are checked (every id one of the form's,
a required one not empty, at most 120 KiB of JSON as OpenAI bounds them) with errors that name the field, never a
value; they are then sent to the desktop's process once (desktop.py) and kept nowhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...protocol.errors import APIError

MAX_FIELDS = 6
MAX_SUBMITTED = 120 * 1024
FIELD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REASON = "The page shows a sign-in form: its values are entered by the bridge, never seen by the model."


class SignInError(APIError):
    """A submission that does not fit the form: the OpenAI-shaped 400 naming the field (never its value)."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(400, message, param=param, code=code)


@dataclass(frozen=True, slots=True)
class SignInField:
    id: str
    label: str
    required: bool
    type: str


@dataclass(frozen=True, slots=True)
class SignInForm:
    """A form awaiting its client: ``fields``, ``credential_origin`` (the page's origin, where values go; None for an
    opaque one), ``options`` (empty: a plain form); ``key`` names the page's document, so values are filled into
    that document only."""

    fields: tuple[SignInField, ...]
    credential_origin: str | None
    key: str = field(repr=False)
    reason: str = REASON

    def request(self) -> dict[str, Any]:
        """The SDK's ``browser_authentication`` request (``computer_use_approval_request.request``)."""
        return {"type": "browser_authentication", "credential_origin": self.credential_origin,
                "fields": [{"id": one.id, "label": one.label, "required": one.required, "type": one.type}
                           for one in self.fields],
                "options": [], "reason": self.reason}


def parse_form(raw: object) -> SignInForm | None:
    """The desktop's report (page.py's ``{origin, key, fields}``), checked; None for anything else."""
    if not isinstance(raw, dict) or not isinstance(raw.get("key"), str) or not isinstance(raw.get("fields"), list):
        return None
    fields = []
    for item in raw["fields"][:MAX_FIELDS]:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not FIELD_ID.fullmatch(item["id"]):
            return None
        label, kind = item.get("label"), item.get("type")
        fields.append(SignInField(item["id"], label[:200] if isinstance(label, str) else item["id"],
                                  item.get("required") is True, kind[:20] if isinstance(kind, str) else "text"))
    origin = raw.get("origin")
    if not fields or len({one.id for one in fields}) != len(fields):
        return None
    shown = origin if isinstance(origin, str) and origin.startswith(("http://", "https://")) else None
    return SignInForm(tuple(fields), shown[:300] if shown else None, raw["key"][:100])


def submitted_values(raw: object, param: str = "fields") -> dict[str, str]:
    """The SDK's submitted ``fields`` (``[{"field_id", "value"}]``, as ``agent_browser_authentication_submit_param``
    has them) as field id to value, checked strictly: a list of at most six objects with exactly those two strings,
    no id twice; :class:`SignInError` naming the entry otherwise (never its value)."""
    if not isinstance(raw, list):
        raise SignInError("fields must be a list of {field_id, value} objects", param, "invalid_type")
    if len(raw) > MAX_FIELDS:
        raise SignInError(f"at most {MAX_FIELDS} fields are submitted, got {len(raw)}", param)
    found: dict[str, str] = {}
    for position, item in enumerate(raw):
        at = f"{param}[{position}]"
        if not isinstance(item, dict):
            raise SignInError("a field is an object with field_id and value", at, "invalid_type")
        extra = sorted(set(item) - {"field_id", "value"})
        if extra:
            raise SignInError(f"a field has no parameter {str(extra[0])[:64]!r}", f"{at}.{str(extra[0])[:64]}",
                              "unknown_parameter")
        for name in ("field_id", "value"):
            if name not in item:
                raise SignInError(f"a field needs {name}", f"{at}.{name}", "missing_required_parameter")
            if not isinstance(item[name], str):
                raise SignInError(f"{name} is a string", f"{at}.{name}", "invalid_type")
        if item["field_id"] in found:
            raise SignInError("a field is submitted once", f"{at}.field_id")
        found[item["field_id"]] = item["value"]
    return found


def check_values(form: SignInForm, values: Mapping[str, str], selected_option: str | None = None) -> dict[str, str]:
    """``values`` (field id to value) fitting ``form``, as a plain dict; :class:`SignInError` otherwise."""
    if not isinstance(values, Mapping):
        raise SignInError("fields must map each field's id to its value", "fields", "invalid_type")
    if selected_option is not None:  # a plain form offers no options
        raise SignInError("this sign-in form has no options to select", "selected_option")
    known = {one.id: one for one in form.fields}
    found: dict[str, str] = {}
    for position, (field_id, value) in enumerate(values.items()):
        if field_id not in known:
            raise SignInError(f"the form has no field {str(field_id)[:64]!r}: one of {', '.join(known)}",
                              f"fields[{position}].field_id")
        if not isinstance(value, str):
            raise SignInError("a field's value is a string", f"fields[{position}].value", "invalid_type")
        found[field_id] = value
    for one in form.fields:
        if one.required and not found.get(one.id):
            raise SignInError(f"the field {one.id!r} is required", "fields", "missing_required_parameter")
    if len(json.dumps(found)) > MAX_SUBMITTED:
        raise SignInError(f"the submitted values exceed {MAX_SUBMITTED // 1024} KiB", "fields")
    return found
