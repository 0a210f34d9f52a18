"""An environment's ``capability_directories`` ("directories that contain capabilities exposed to the agent"):
checked, and what the agent is told of them.

A capability directory holds skills (each a directory whose ``SKILL.md`` names and describes it in its YAML front
matter, as an uploaded skill's does) and may hold an ``AGENTS.md`` of instructions. In an ``openai_hosted``
environment the directories are in the container's workspace: a path is absolute under ``/workspace`` or relative
to it, and the bridge reads the skills' manifests from the container's files when each turn starts
(services/agents/environments/capability_directories.py). In a ``self_hosted`` one they are on the client's machine,
which the bridge cannot read: a path is absolute or relative to the ``workspace_directory``, and the model is told the
directories and how to find the skills in them with the client's shell.

Either way the agent is told what a container's skills tell it (skills_note.py): each skill's name,
description and the path of its ``SKILL.md``, to read before using it; and each ``AGENTS.md``, to read and follow.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from ..errors import invalid_request
from .environment_fields import WORKSPACE, check_workspace_path

MAX_DIRECTORIES = 16
MAX_PATH_CHARS = 1024
SKILL_MANIFEST = "SKILL.md"
AGENTS_FILE = "AGENTS.md"


def check_directories(value: Any, param: str, *, base: str = WORKSPACE) -> tuple[str, ...]:
    """The directories as absolute, normalized paths, each once, in the order given. ``base``: what a relative
    path is relative to: ``/workspace`` for a hosted environment (or a template), whose paths must stay under it; a
    self-hosted environment's ``workspace_directory``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise invalid_request(f"Invalid type for '{param}': expected an array of directory paths.", param=param,
                              code="invalid_type")
    if len(value) > MAX_DIRECTORIES:
        raise invalid_request(f"Invalid value for '{param}': at most {MAX_DIRECTORIES} directories.", param=param,
                              code="array_above_max_length")
    found: list[str] = []
    for index, entry in enumerate(value):
        where = f"{param}[{index}]"
        if (not entry.strip() or len(entry) > MAX_PATH_CHARS or any(ord(char) < 32 for char in entry)
                or "\\" in entry or ".." in entry.split("/")):
            raise invalid_request(f"Invalid value for '{where}': expected a directory path of at most "
                                  f"{MAX_PATH_CHARS} characters, without '..' components, backslashes or control "
                                  "characters.", param=where, code="invalid_value")
        path = posixpath.normpath(entry if entry.startswith("/") else posixpath.join(base, entry))
        if base == WORKSPACE:  # a hosted environment's: in its workspace, as its files are
            path = check_workspace_path(path, where, directory=True)
        if path not in found:
            found.append(path)
    return tuple(found)


def capabilities_note(skills: Sequence[tuple[str, str, str]], agents_files: Sequence[str]) -> str:
    """What the agent is told of its environment's capabilities: ``(name, description, SKILL.md path)`` and the
    paths of ``AGENTS.md`` files; empty for none."""
    lines: list[str] = []
    if skills:
        lines.append("Skills are available in the environment's capability directories: each is a directory whose "
                     "SKILL.md says how to use it. When a task matches a skill's description, read its SKILL.md "
                     "first and follow it.")
        lines += [f"- {name}: {' '.join(description.split())} ({path})" for name, description, path in skills]
    if agents_files:
        lines.append("Instructions for working in the environment are in these files; read them before you start "
                     "and follow them:")
        lines += [f"- {path}" for path in agents_files]
    return "\n".join(lines)


def client_directories_note(directories: Sequence[str]) -> str:
    """A ``self_hosted`` environment's directories, which only the client's shell can read."""
    if not directories:
        return ""
    return "\n".join([
        f"Capabilities are available in these directories of your environment: skills (each a directory whose "
        f"{SKILL_MANIFEST} names it, describes it and says how to use it) and {AGENTS_FILE} files of instructions. "
        f"Before you start, list them with the shell, read each {AGENTS_FILE} and follow it, and when a task "
        f"matches a skill's description, read its {SKILL_MANIFEST} first and follow it:",
        *(f"- {directory}" for directory in directories)])
