"""The ``code_interpreter`` tool: the model's Python runs in the container's sandbox, and what it printed and the
files it wrote come back to the model and into the ``code_interpreter_call`` item.

The loop's path through it::

    options = CodeToolOptions.from_tool(tool, position)         # at set-up: a 400 for a bad tool
    await interpreter.check(options, tenant=…)                  # 400: no sandbox here, an unknown container
    container_id = await interpreter.container_for(options, history, tenant=…)   # after the stream opened
    run = await interpreter.run(code, container_id, tenant=…)   # never raises but for cancellation
    run.text_for_model(); run.outputs()                         # the tool result; the item's ``outputs``
    find_container_citations(answer_text, files)                # container_file_citation annotations

``interpreter`` is a :class:`CodeInterpreterService` (services/tools/code_interpreter.py: the containers and the
sandbox). ``container: {"type": "auto"}`` makes a container per response (listed in ``/v1/containers`` like any other),
or goes on with the one the conversation's last code interpreter call used while it lives, so a chat keeps its
files. A call made when the sandbox cannot run (or a container expired mid-response) is a failed item whose
text says why: the bridge never runs code any other way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...protocol.errors import invalid_request
from ...sandbox import SandboxResult
from ...sandbox.egress.policy import NetworkPolicy, parse_policy
from ...store.records import StoredContainerFile
from .container_fields import auto_container_fields

OUTPUTS_INCLUDE = "code_interpreter_call.outputs"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
MAX_FILES_LISTED = 50


@dataclass(frozen=True, slots=True)
class CodeToolOptions:
    """A request's ``code_interpreter`` tool, checked: an explicit container id, or ``auto`` with its files and
    its ``network_policy`` (None: ``disabled``; sandbox/egress/policy.py)."""

    position: int
    container_id: str | None = None
    file_ids: tuple[str, ...] = ()
    memory_limit: str | None = None
    network: NetworkPolicy | None = None

    @property
    def param(self) -> str:
        return f"tools[{self.position}].container"

    @classmethod
    def from_tool(cls, tool: Mapping[str, Any], position: int) -> CodeToolOptions:
        container = tool.get("container")
        where = f"tools[{position}].container"
        if container is None:
            raise invalid_request(f"Missing required parameter: '{where}'.", param=where,
                                  code="missing_required_parameter")
        if isinstance(container, str):
            return cls(position, container_id=container)
        if not isinstance(container, dict) or container.get("type") != "auto":
            raise invalid_request(f"Invalid value for '{where}': expected a container id or "
                                  '{"type": "auto"}.', param=where, code="invalid_value")
        if "skills" in container:  # OpenAI's auto container has none: never dropped silently
            raise invalid_request(f"Unsupported parameter: '{where}.skills'. The code interpreter's auto container "
                                  "takes no skills; make a container with them (POST /v1/containers with 'skills') "
                                  "and name it in 'container'.", param=f"{where}.skills", code="unsupported_parameter")
        file_ids, memory = auto_container_fields(container, where)
        network = parse_policy(container.get("network_policy"), f"{where}.network_policy")
        return cls(position, file_ids=file_ids, memory_limit=memory, network=network)


@dataclass(slots=True)
class CodeRun:
    """One call's outcome: the sandbox's result (None: the call could not run, ``error`` says why), the container
    files the code made or changed, and notes on files that could not be kept."""

    container_id: str
    result: SandboxResult | None
    changed: list[StoredContainerFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> bool:
        if self.result is None:
            return True
        return self.result.outcome in ("timeout", "disk", "refused") or (
            self.result.outcome == "memory" and (self.result.exit_code or 0) < 0)

    def logs(self) -> str:
        """What the code printed, stdout then stderr, with the notes of what was cut or stopped."""
        if self.result is None:
            return self.error or "The code could not run."
        result = self.result
        parts = [result.stdout]
        if result.stdout_dropped:
            parts.append(f"\n[… {result.stdout_dropped:,} more bytes of stdout were cut]\n")
        if result.stderr:
            parts.append(result.stderr)
        if result.stderr_dropped:
            parts.append(f"\n[… {result.stderr_dropped:,} more bytes of stderr were cut]\n")
        if result.note:
            parts.append(("\n" if "".join(parts) and not "".join(parts).endswith("\n") else "") + result.note + "\n")
        return "".join(parts)

    def text_for_model(self) -> str:
        text = self.logs()
        if self.changed:
            listed = ", ".join(f"{file.path} ({file.bytes:,} bytes)" for file in self.changed[:MAX_FILES_LISTED])
            more = len(self.changed) - MAX_FILES_LISTED
            text += f"\n[files written: {listed}{f' and {more} more' if more > 0 else ''}]"
        for note in self.notes:
            text += f"\n[{note}]"
        return text if text.strip() else "(the code ran and printed nothing)"

    def outputs(self) -> list[dict[str, Any]]:
        """The item's ``outputs``: the logs, then an image for each picture the code saved (its URL is the
        container file's content route)."""
        found: list[dict[str, Any]] = [{"type": "logs", "logs": self.logs()}]
        for file in self.changed:
            if file.path.lower().endswith(IMAGE_SUFFIXES):
                found.append({"type": "image",
                              "url": f"/v1/containers/{file.container_id}/files/{file.id}/content"})
        return found


class CodeInterpreterService(Protocol):
    """What the loop needs of the code interpreter (services/tools/code_interpreter.py implements it over the containers
    and the sandbox): the refusals, the container of a response, and one run."""

    @property
    def unavailable(self) -> str | None:
        """Why code cannot run on this machine (None: it can)."""
        ...

    async def check(self, options: CodeToolOptions, *, tenant: str) -> None: ...

    async def container_for(self, options: CodeToolOptions, history: Sequence[Mapping[str, Any]], *,
                            tenant: str) -> str: ...

    async def run(self, code: str, container_id: str, *, tenant: str) -> CodeRun: ...

    async def skills_note(self, container_id: str, *, tenant: str) -> str:
        """What the tool's description tells the model of a container's skills (protocol/containers/skills_note.py)."""
        ...


def find_container_citations(text: str, files: Sequence[StoredContainerFile]) -> list[dict[str, Any]]:
    """A ``container_file_citation`` for each place the answer names a file the code wrote (by its path,
    ``/mnt/data/…``, also inside ``sandbox:/mnt/data/…`` links)."""
    found: list[dict[str, Any]] = []
    for file in files:
        start = text.find(file.path)
        while start >= 0:
            end = start + len(file.path)
            if not _continues(text, end):
                found.append({"type": "container_file_citation", "container_id": file.container_id,
                              "file_id": file.id, "filename": file.path.rsplit("/", 1)[-1],
                              "start_index": start, "end_index": end})
            start = text.find(file.path, end)
    return found


def _continues(text: str, end: int) -> bool:
    """Does the path go on past ``end`` (a longer name), rather than end there (a space, a quote, a full stop)?"""
    if end >= len(text):
        return False
    char = text[end]
    if char.isalnum() or char in "_-/":
        return True
    return char == "." and end + 1 < len(text) and text[end + 1].isalnum()
