"""An ``openai_hosted`` environment's ``plugins`` in shape (the SDK's ``HostedPluginParam``: an inline Codex plugin
zip); what each offers is read where the environment is made (services/agents/environments/plugins.py)."""

from __future__ import annotations

from typing import Any

from ..errors import invalid_request

MAX_PLUGINS = 16
MAX_PLUGIN_ZIP_BYTES = 68 * 1024 * 1024  # a skill's zip bound (services/skill_bundle.MAX_ZIP_BYTES)


def checked_plugins(value: Any, param: str) -> list[dict[str, Any]]:
    """``plugins`` in shape (the zips are read by :func:`plugin_skills`): ``[{"type": "inline", "name",
    "description", "source": {"type": "base64", "media_type": "application/zip", "data"}}]``."""
    if value is None or value == []:
        return []
    if not isinstance(value, list) or len(value) > MAX_PLUGINS:
        raise invalid_request(f"Invalid value for '{param}': expected an array of at most {MAX_PLUGINS} plugins.",
                              param=param, code="invalid_value")
    for position, entry in enumerate(value):
        where = f"{param}[{position}]"
        if not isinstance(entry, dict) or entry.get("type") != "inline":
            raise invalid_request(f"Invalid value for '{where}': expected an inline plugin ('type': 'inline').",
                                  param=where, code="invalid_value")
        for key in entry:
            if key not in ("type", "name", "description", "source"):
                raise invalid_request(f"Unknown parameter: '{where}.{key}'.", param=f"{where}.{key}",
                                      code="unknown_parameter")
        for key in ("name", "description"):
            if not isinstance(entry.get(key), str) or not entry[key].strip() or len(entry[key]) > 1024:
                raise invalid_request(f"Missing required parameter: '{where}.{key}'.", param=f"{where}.{key}",
                                      code="missing_required_parameter")
        source = entry.get("source")
        if not isinstance(source, dict) or source.get("type") != "base64" \
                or source.get("media_type") != "application/zip" or not isinstance(source.get("data"), str):
            raise invalid_request(f"Invalid value for '{where}.source': expected {{'type': 'base64', 'media_type': "
                                  "'application/zip', 'data': …}.", param=f"{where}.source", code="invalid_value")
        if len(source["data"]) > MAX_PLUGIN_ZIP_BYTES * 4 // 3 + 4:
            raise invalid_request(f"Invalid value for '{where}.source.data': expected a base64 zip of at most "
                                  f"{MAX_PLUGIN_ZIP_BYTES} bytes.", param=f"{where}.source.data", code="invalid_value")
    return value


def shown_plugins(plugins: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The SDK's ``HostedPlugin`` of each."""
    return [{"type": "inline", "name": entry["name"], "description": entry["description"]}
            for entry in plugins or []]
