"""Environment templates (``client.beta.agents.environments.templates``): a hosted environment's configuration,
kept to be applied to each session (or standalone environment) that names it in ``environment_template_id``.

A template keeps the fields it was given as an ``openai_hosted`` environment would take them (``params``), checked
by the same rules as an environment (environments.py :func:`hosted_plan`), so what a template may
hold is exactly what a session may ask. Its answer is the SDK's ``EnvironmentTemplate``: files and skills as
metadata only, never an inline file's data, a skill's archive, ``env`` or ``setup_commands``.

:func:`apply_template`: the session's own fields replace the template's (a field omitted or null inherits it), and
its ``network`` may narrow the template's policy but never broaden it: a template without network allows none, a
``restricted`` one only a subset of its domains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..errors import APIError, invalid_request, not_found
from .environment_fields import file_metadata
from .environment_packages import PACKAGE_KINDS
from .environment_plugins import shown_plugins
from .environments import hosted_plan

TEMPLATE_FIELDS = ("capability_directories", "desktop", "env", "files", "name", "network", "packages", "plugins",
                   "setup_commands", "skills")
ENVIRONMENT_FIELDS = tuple(field for field in TEMPLATE_FIELDS if field != "name")
MAX_NAME_CHARS = 256
MAX_TEMPLATE_BYTES = 4 << 20  # a template's stored fields (inline files and skill archives included) at most


def template_not_found(template_id: str, param: str = "template_id") -> APIError:
    return not_found(f"No environment template found with id '{template_id[:200]}'.", param=param,
                     code="not_found")


def check_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise invalid_request(f"Invalid value for 'name': expected a string of at most {MAX_NAME_CHARS} "
                              "characters.", param="name", code="invalid_value")
    return value


def check_params(params: dict[str, Any]) -> None:
    """The template's environment fields, as a session's environment would be checked (a 400 naming the field,
    without the ``environment.`` prefix a session's would have), and their stored size bounded."""
    try:
        hosted_plan({"type": "openai_hosted", **params})
    except APIError as error:
        if error.param and error.param.startswith("environment."):
            error.param = error.param[len("environment."):]
            error.message = error.message.replace("'environment.", "'")
        raise
    if len(orjson.dumps(params)) > MAX_TEMPLATE_BYTES:
        raise invalid_request(f"A template's configuration may be at most {MAX_TEMPLATE_BYTES} bytes (inline files "
                              "and skill archives included); upload large files with the Files API.", param=None,
                              code="template_too_large")


def template_object(record: dict[str, Any]) -> dict[str, Any]:
    """The SDK's ``EnvironmentTemplate`` of a stored template (its :func:`shown_fields` kept with it)."""
    return {"id": record["id"], "object": "agent.environment.template", "created_at": record["created_at"],
            "name": record.get("name"), "updated_at": record["updated_at"], **record["shown"]}


def shown_fields(params: dict[str, Any]) -> dict[str, Any]:
    """What a template shows of its (checked) fields: metadata only, computed once when they are set, so reading
    a template neither opens its sealed fields nor decodes its inline files."""
    plan = hosted_plan({"type": "openai_hosted", **params})
    skills = []
    for skill in params.get("skills") or []:
        if skill.get("type") == "skill_reference":
            skills.append({"type": "skill_reference", "skill_id": skill["skill_id"],
                           "version": skill.get("version")})
        else:
            skills.append({"type": "inline", "name": skill.get("name", ""),
                           "description": skill.get("description", "")})
    packages = params.get("packages") or {}
    return {"capability_directories": list(plan.capability_directories),
            "files": [file_metadata(file) for file in plan.files],
            "network": {"access": plan.access, "allowed_domains": list(plan.allowed_domains)},
            "packages": {kind: list(packages.get(kind) or []) for kind in PACKAGE_KINDS},
            "plugins": shown_plugins(plan.plugins),
            "skills": skills, "desktop": {"enabled": bool((params.get("desktop") or {}).get("enabled"))}}


def apply_template(params: dict[str, Any], environment: dict[str, Any], *,
                   within: Callable[[Any, Any], bool]) -> dict[str, Any]:
    """``environment`` (a session's or a standalone environment's, with ``environment_template_id``) over the
    template's ``params``: the environment to check and make. ``within(inner, outer)`` says whether the network
    ``inner`` lets through only hosts ``outer`` does (services/agent_environments.network_within: allowlists and
    block lists alike)."""
    merged: dict[str, Any] = {"type": "openai_hosted", **params}
    for key, value in environment.items():
        if key not in ("type", "environment_template_id") and value is not None:
            merged[key] = value
    asked = environment.get("network")
    if asked is not None and not within(asked, params.get("network")):
        broader = [domain for domain in hosted_plan({"type": "openai_hosted", "network": asked}).allowed_domains
                   if not within({"access": "restricted", "allowed_domains": [domain]}, params.get("network"))]
        what = f"domain '{broader[0][:200]}'" if broader else "network access"
        raise invalid_request(f"Invalid value for 'environment.network': the template's policy does not allow "
                              f"{what}; a session may narrow its template's network, never broaden it.",
                              param="environment.network", code="invalid_value")
    return merged
