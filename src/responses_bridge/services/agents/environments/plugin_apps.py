"""A Codex plugin's apps, served through the operator's connector registry as MCP servers of the plugin.

Codex's ``.app.json`` (or the manifest's ``apps``: a ``./`` path to such a file, or the apps inline) is
``{"apps": {"<name>": {"id": "<connector id>"}}}``: a ChatGPT app's id and nothing else — no URL, no tools. Codex
reaches it through ChatGPT's connector service; the bridge reaches it through ``RESPONSES_BRIDGE_MCP_CONNECTORS``
(run/tools/mcp_connectors.py), where the operator maps the id to an MCP server of its own. Each app becomes one of
the plugin's MCP servers (plugin_mcp.py), named as the plugin names it, whose transport is
``{"type": "connector", "connector_id": …}``: the environment's record keeps the id alone, and each turn's response
gets an ``mcp`` tool with that ``connector_id``, resolved when the turn starts as a ``/v1/responses`` request's is —
the bridge's own MCP client, under the MCP egress rules, with the operator's headers (which never reach the
record, the sandbox or an answer). An app whose id the registry does not map is a 400 naming it and the setting,
rather than a plugin served in part.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ....protocol.errors import invalid_request
from ....run.tools.mcp_connectors import SETTING
from ...containers.skill_bundle import SkillFile
from .plugin_mcp import _LABEL, PluginServers, _json_file

CONNECTOR = "connector"
"""The transport type of a plugin's app among the plugin's servers (never an SDK type: the record's own)."""


def plugin_apps(files: list[SkillFile], manifest: dict[str, Any], name: str, where: str,
                connectors: Collection[str]) -> PluginServers:
    """The plugin's apps as its MCP servers, each id one ``connectors`` maps (400s naming ``where``)."""
    path = manifest.get("apps")
    declared: Any = _json_file(files, path, where) if isinstance(path, str) else path
    if declared is None and any(file.path == ".app.json" for file in files):
        declared = _json_file(files, "./.app.json", where)
    if not declared:
        return PluginServers()
    apps = declared.get("apps", declared) if isinstance(declared, dict) else None
    if not isinstance(apps, dict):
        raise invalid_request(f"The plugin '{name}' declares its apps in a shape this bridge does not read: expected "
                              "{\"apps\": {\"<name>\": {\"id\": \"<connector id>\"}}}.", param=where,
                              code="invalid_value")
    found = PluginServers()
    unserved: list[str] = []
    for label, app in apps.items():
        what = f"The plugin's app '{str(label)[:64]}'"
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise invalid_request(f"{what}: expected a name of 1 to 64 letters, digits, '_' or '-'.", param=where,
                                  code="invalid_value")
        if not isinstance(app, dict) or not isinstance(app.get("id"), str) or not app["id"]:
            raise invalid_request(f"{what}: expected {{\"id\": \"<connector id>\"}}.", param=where,
                                  code="invalid_value")
        extra = next((key for key in app if key != "id"), None)
        if extra is not None:
            raise invalid_request(f"{what}: '{str(extra)[:64]}' is not served (an app is its connector id).",
                                  param=where, code="invalid_value")
        if app["id"] not in connectors:
            unserved.append(f"{label} ({app['id'][:128]})")
            continue
        found.add(PluginServers([{"type": "mcp", "server_label": label,
                                  "transport": {"type": CONNECTOR, "connector_id": app["id"]},
                                  "allowed_tools": None, "connection_origin": "service", "credential_id": None,
                                  "request_metadata": {}, "required": False, "plugin": name}]), where)
    if unserved:
        raise invalid_request(f"The plugin '{name}' brings apps this server does not serve ({', '.join(unserved[:8])})"
                              f": a plugin's app is a connector id, served when the operator maps it to an MCP "
                              f"server ({SETTING}); or serve the app's MCP server as one of the plugin's MCP servers "
                              "('.mcp.json').", param=where, code="unsupported_value")
    return found
