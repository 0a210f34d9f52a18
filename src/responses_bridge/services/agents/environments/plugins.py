"""An ``openai_hosted`` environment's ``plugins`` (the SDK's ``HostedPluginParam``: a Codex plugin, "supplied as a
ZIP directly", its ``name`` and ``description`` those its ``.codex-plugin/plugin.json`` declares): their skills
offered as the container's skills are, their MCP servers served in the environment.

A Codex plugin bundles skills (the manifest's ``skills`` directory, ``./skills`` when it names none: each of its
directories with a ``SKILL.md`` is one skill), MCP servers (``mcpServers``, a ``.mcp.json``) and apps (``apps``).
Each skill becomes one of the container's skills, laid out and told to the model as an inline skill is
(services/containers/container_skills.py), checked the same way (the zip bounded as a skill's, each skill's files and
``SKILL.md``). Its MCP servers are the session's turns' (plugin_mcp.py), and so are its
apps — ChatGPT connector ids, each served by the MCP server the operator's connector registry maps it to
(plugin_apps.py); an app the registry does not map is a 400 naming it: dropping it silently
would leave the model a plugin that does less than it says."""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Collection
from typing import Any

import orjson

from ....protocol.errors import APIError, invalid_request
from ...containers.container_skills import ResolvedSkill
from ...containers.skill_bundle import SkillFile, bundle, canonical_zip, zip_files
from .plugin_apps import plugin_apps
from .plugin_mcp import PluginServers, plugin_servers

PLUGIN_MANIFEST = ".codex-plugin/plugin.json"
MAX_MANIFEST_BYTES = 64 * 1024


def plugin_contents(plugins: list[dict[str, Any]], param: str,
                    connectors: Collection[str] = ()) -> tuple[list[ResolvedSkill], PluginServers]:
    """Every plugin's skills and MCP servers (its apps among them, each an id of ``connectors``, the operator's
    registry), read and checked (400s naming ``param[i]``); CPU work: run it off the loop."""
    found: list[ResolvedSkill] = []
    servers = PluginServers()
    for position, entry in enumerate(plugins):
        skills, brought = _one(entry, f"{param}[{position}]", connectors)
        found += skills
        servers.add(brought, f"{param}[{position}]")
    return found, servers


def plugin_skills(plugins: list[dict[str, Any]], param: str) -> list[ResolvedSkill]:
    """Every plugin's skills alone (:func:`plugin_contents`)."""
    return plugin_contents(plugins, param)[0]


def _one(entry: dict[str, Any], where: str, connectors: Collection[str]) -> tuple[list[ResolvedSkill], PluginServers]:
    try:
        raw = base64.b64decode(entry["source"]["data"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_request(f"Invalid value for '{where}.source.data': not base64.",
                              param=f"{where}.source.data") from None
    files = zip_files(raw, f"{where}.source.data")
    tops = {file.path.split("/", 1)[0] for file in files}
    if len(tops) == 1 and all("/" in file.path for file in files) and \
            not any(file.path == PLUGIN_MANIFEST for file in files):  # zipped with its folder
        top = next(iter(tops))
        files = [SkillFile(file.path[len(top) + 1:], file.data, file.executable) for file in files]
    manifest = _manifest(files, entry, where)
    servers = plugin_servers(files, manifest, entry["name"], where)
    servers.add(plugin_apps(files, manifest, entry["name"], where, connectors), where)
    root = str(manifest.get("skills") or "./skills")
    if not root.startswith("./") or ".." in root.split("/"):
        raise invalid_request(f"Invalid 'skills' in the plugin's {PLUGIN_MANIFEST}: expected a path starting with "
                              "'./' inside the plugin.", param=where, code="invalid_value")
    root = posixpath.normpath(root[2:])
    by_skill: dict[str, list[SkillFile]] = {}
    for file in files:
        if file.path.startswith(root + "/") and "/" in file.path[len(root) + 1:]:
            name, rest = file.path[len(root) + 1:].split("/", 1)
            by_skill.setdefault(name, []).append(SkillFile(rest, file.data, file.executable))
    skills = []
    for _directory, skill_files in sorted(by_skill.items()):
        if not any(file.path == "SKILL.md" for file in skill_files):
            continue  # a directory of the skills' that is no skill
        skill = bundle(skill_files, f"{where}.source.data")
        skills.append(ResolvedSkill(skill.name, skill.description, data=canonical_zip(skill)))
    if not skills and not servers.tools:
        raise invalid_request(f"The plugin '{entry['name']}' has no skill (a directory with a SKILL.md under "
                              f"'{root}/'), no MCP server and no app: nothing of it could be offered.", param=where,
                              code="invalid_value")
    return skills, servers


def _manifest(files: list[SkillFile], entry: dict[str, Any], where: str) -> dict[str, Any]:
    found = next((file for file in files if file.path == PLUGIN_MANIFEST), None)
    if found is None or len(found.data) > MAX_MANIFEST_BYTES:
        raise invalid_request(f"The plugin has no {PLUGIN_MANIFEST} (of at most {MAX_MANIFEST_BYTES} bytes) at its "
                              "top.", param=f"{where}.source.data", code="invalid_value")
    try:
        manifest = orjson.loads(found.data)
    except orjson.JSONDecodeError:
        manifest = None
    if not isinstance(manifest, dict):
        raise invalid_request(f"The plugin's {PLUGIN_MANIFEST} is not a JSON object.", param=f"{where}.source.data",
                              code="invalid_value")
    for key in ("name", "description"):
        declared = manifest.get(key)
        if declared is not None and str(declared).strip() != entry[key].strip():
            raise invalid_request(f"'{where}.{key}' is not the {key} the plugin's {PLUGIN_MANIFEST} declares.",
                                  param=f"{where}.{key}", code="invalid_value")
    return manifest


def refused_duplicate(name: str, where: str) -> APIError:
    return invalid_request(f"Two skills are named '{name}'; the skills of one container (its own and its plugins') "
                           "need names of their own.", param=where, code="duplicate_skill")
