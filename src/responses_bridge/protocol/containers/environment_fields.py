"""An ``openai_hosted`` environment's ``files``, ``setup_commands`` and ``env`` checked (the SDK's
``HostedEnvironmentFileParam``, ``SetupCommandParam`` and a string map), with the bounds that keep them small
enough to live in a template's record and in a session's.

The Agents API names a hosted environment's workspace ``/workspace``; the bridge's container
(services/containers/containers.py) keeps its files under ``/mnt/data``, the hosted shell's working directory. A file
given at ``/workspace/a/b`` is the container file ``/mnt/data/a/b``: :func:`container_path` and :func:`workspace_path`
translate, and a setup command's ``cwd`` is translated the same way. Paths follow the SDK's own rules
(``openai/lib/beta/agents/_files.py``): absolute POSIX paths under ``/workspace/``, no empty, ``.`` or ``..`` component,
not in the reserved ``/workspace/.codex``, ``/workspace/.managed-agents*`` or ``/workspace/outputs``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from ..errors import invalid_request

WORKSPACE = "/workspace"
DATA_DIR = "/mnt/data"
MAX_FILES = 100
MAX_INLINE_BYTES = 1 << 20  # decoded bytes of every inline file together (a record's worth)
MAX_PATH = 1024
MAX_SETUP_COMMANDS = 32
MAX_COMMAND_CHARS = 16_384
MAX_ENV_VARIABLES = 64
MAX_ENV_VALUE_CHARS = 8_192
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _bad(message: str, param: str, code: str = "invalid_value") -> Exception:
    return invalid_request(message, param=param, code=code)


def check_workspace_path(value: Any, param: str, *, directory: bool = False) -> str:
    """A file's (or with ``directory``, a directory's, ``/workspace`` itself included) path in the workspace."""
    if not isinstance(value, str):
        raise _bad(f"Invalid type for '{param}': expected a string.", param, "invalid_type")
    if directory and value.rstrip("/") == WORKSPACE:
        return WORKSPACE
    components = value.split("/")[1:]
    if (not value.startswith(WORKSPACE + "/") or "\x00" in value or "\\" in value or len(value) > MAX_PATH
            or any(component in ("", ".", "..") for component in components)):
        raise _bad(f"Invalid value for '{param}': expected an absolute path under {WORKSPACE}/ without empty, '.' "
                   "or '..' components.", param)
    if not directory and (components[1] in (".codex", ".managed-agents")
                          or components[1].startswith(".managed-agents-") or value == WORKSPACE + "/outputs"):
        raise _bad(f"Invalid value for '{param}': '{value[:200]}' is a reserved environment path.", param)
    return value


def container_path(path: str) -> str:
    """``/workspace/…`` as the container's ``/mnt/data/…``."""
    return DATA_DIR + path[len(WORKSPACE):]


def workspace_path(path: str) -> str:
    """A container file's ``/mnt/data/…`` as the environment shows it, ``/workspace/…``."""
    return WORKSPACE + path[len(DATA_DIR):] if path.startswith(DATA_DIR + "/") else path


def _object(value: Any, param: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    for key in value:
        if key not in fields:
            raise _bad(f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}", "unknown_parameter")
    return value


def _bounded_array(value: Any, param: str, most: int, noun: str) -> list[Any]:
    """An optional array (none given: empty) of ``most`` entries at most: a 400 naming ``param`` otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"Invalid type for '{param}': expected an array.", param, "invalid_type")
    if len(value) > most:
        raise _bad(f"'{param}' may list at most {most} {noun}.", param, "array_above_max_length")
    return value


def check_files(value: Any, param: str) -> list[dict[str, Any]]:
    """The files as given (``inline`` data checked to be standard base64), each path once, none a directory of
    another, :data:`MAX_FILES` at most and :data:`MAX_INLINE_BYTES` of inline data together."""
    value = _bounded_array(value, param, MAX_FILES, "files")
    files: list[dict[str, Any]] = []
    paths: set[str] = set()
    inline = 0
    for index, entry in enumerate(value):
        where = f"{param}[{index}]"
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind == "inline":
            _object(entry, where, ("type", "path", "data"))
            data = entry.get("data")
            if not isinstance(data, str):
                raise _bad(f"Missing required parameter: '{where}.data'.", f"{where}.data",
                           "missing_required_parameter")
            if len(data) > (MAX_INLINE_BYTES - inline) * 4 // 3 + 4:
                raise _bad(f"Inline files may hold at most {MAX_INLINE_BYTES} bytes together; upload larger ones "
                           "with the Files API and give their 'file_id'.", f"{where}.data", "file_too_large")
            try:
                size = len(base64.b64decode(data, validate=True))
            except (binascii.Error, ValueError):
                raise _bad(f"Invalid value for '{where}.data': expected standard base64.", f"{where}.data") from None
            inline += size
            if inline > MAX_INLINE_BYTES:
                raise _bad(f"Inline files may hold at most {MAX_INLINE_BYTES} bytes together; upload larger ones "
                           "with the Files API and give their 'file_id'.", f"{where}.data", "file_too_large")
            file: dict[str, Any] = {"type": "inline", "data": data, "size_bytes": size}
        elif kind == "file_id":
            _object(entry, where, ("type", "path", "file_id"))
            file_id = entry.get("file_id")
            if not isinstance(file_id, str) or not file_id or len(file_id) > 200:
                raise _bad(f"Invalid value for '{where}.file_id': expected a file ID.", f"{where}.file_id")
            file = {"type": "file_id", "file_id": file_id}
        else:
            raise _bad(f"Invalid value for '{where}.type': expected 'inline' or 'file_id'.", f"{where}.type")
        path = check_workspace_path(entry.get("path"), f"{where}.path")
        clash = next((other for other in paths if other == path or other.startswith(path + "/")
                      or path.startswith(other + "/")), None)
        if clash is not None:
            raise _bad(f"Invalid value for '{where}.path': '{path[:200]}' conflicts with '{clash[:200]}' (a path is "
                       "a file or a directory, never both, and is given once).", f"{where}.path", "path_conflict")
        paths.add(path)
        file["path"] = path
        files.append(file)
    return files


def file_metadata(file: dict[str, Any]) -> dict[str, Any]:
    """A file as a template shows it (no contents; the SDK's ``FileHostedTemplateFileResource*``)."""
    if file["type"] == "inline":
        return {"type": "inline", "path": file["path"], "size_bytes": file["size_bytes"]}
    return {"type": "file_id", "file_id": file["file_id"], "path": file["path"]}


def check_setup_commands(value: Any, param: str) -> list[dict[str, str]]:
    """The commands in order, each with its ``cwd`` (``/workspace`` by default)."""
    value = _bounded_array(value, param, MAX_SETUP_COMMANDS, "commands")
    commands: list[dict[str, str]] = []
    for index, entry in enumerate(value):
        where = f"{param}[{index}]"
        _object(entry, where, ("command", "cwd"))
        command = entry.get("command")
        if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND_CHARS \
                or "\x00" in command:
            raise _bad(f"Invalid value for '{where}.command': expected a non-empty command of at most "
                       f"{MAX_COMMAND_CHARS} characters.", f"{where}.command")
        cwd = entry.get("cwd")
        cwd = WORKSPACE if cwd is None else check_workspace_path(cwd, f"{where}.cwd", directory=True)
        commands.append({"command": command, "cwd": cwd})
    return commands


def check_env(value: Any, param: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"Invalid type for '{param}': expected an object of strings.", param, "invalid_type")
    if len(value) > MAX_ENV_VARIABLES:
        raise _bad(f"'{param}' may hold at most {MAX_ENV_VARIABLES} variables.", param)
    for name, text in value.items():
        if not ENV_NAME.fullmatch(name):
            raise _bad(f"Invalid name in '{param}': '{name[:130]}' is not a variable name "
                       "([A-Za-z_][A-Za-z0-9_]*, at most 128 characters).", f"{param}.{name[:130]}")
        if not isinstance(text, str) or len(text) > MAX_ENV_VALUE_CHARS or "\x00" in text:
            raise _bad(f"Invalid value for '{param}.{name}': expected a string of at most {MAX_ENV_VALUE_CHARS} "
                       "characters without NUL.", f"{param}.{name}")
    return dict(value)
