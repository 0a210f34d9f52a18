"""The hosted ``shell`` tool: the model's commands run with ``/bin/sh -c`` in the container's sandbox, and each
command's stdout, stderr and exit code (or timeout) come back to the model and into a ``shell_call_output`` item.

The loop's path through it::

    options = ShellToolOptions.from_tool(tool, position)     # at set-up; None: a local shell (the client runs it)
    await shell.check(options, tenant=…)                     # 400: no shell here, an unknown container, …
    container_id = await shell.container_for(options, history, tenant=…)    # after the stream opened
    live = LiveShellOutput(builder, call_id, max_output_length, wake)   # the output item, open before it runs
    run = await shell.run(action, container_id, tenant=…, printed=live.printed)   # never raises but for cancellation
    live.close(run.items(), run.status); run.text_for_model()           # the output item done; the tool result

What the commands print reaches the client as it comes (``response.shell_call_output_content.delta`` as the
sandbox sends it on: as it is printed on bubblewrap, per command on agent-sandbox), each command's ``.done`` once it
ended, bounded as the output is (``max_output_length``, the sandbox's output limit).

``shell`` is a :class:`HostedShellService` (services/tools/hosted_shell.py: the containers and the sandbox, over the
same container → sandbox path as the code interpreter). ``environment: {"type": "container_auto", …}`` makes a container
per response (listed in ``/v1/containers`` like any other) or goes on with the one the conversation's last shell
call used while it lives; ``{"type": "container_reference", "container_id"}`` runs in one of the tenant's
containers; ``{"type": "local"}`` or no environment is the client's own shell, as before (engine/tools/client.py).
``skills`` (shapes only) and the network policy (checked: sandbox/egress/policy.py) are read here and handed on to
the container path, which resolves the skills (services/containers/container_skills.py) and lays them out read-only at
``/mnt/skills/<name>/``, and runs each call under the policy (an ``allowlist``: the egress proxy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...engine.tools.client import shell_output_text
from ...engine.tools.run_items import ShellOutputItem
from ...protocol.errors import invalid_request
from ...sandbox import SandboxResult
from ...sandbox.egress.policy import NetworkPolicy, parse_policy
from ...sandbox.shell import CommandOutput, Printed, ShellJob
from ...store.records import StoredContainerFile
from .container_fields import auto_container_fields

MAX_COMMANDS = 64
"""Commands one shell call may run; the model's call with more runs the first ones and reads that the rest did
not run."""
MAX_FILES_LISTED = 50


def _list_of_objects(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise invalid_request(f"Invalid type for '{where}': expected an array of objects.", param=where,
                              code="invalid_type")
    return tuple(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid_request(f"Invalid value for '{where}': expected a non-empty string.", param=where,
                              code="invalid_value")
    return value


def parse_skills(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    """``container_auto.skills`` as the SDK types them: ``skill_reference`` (``skill_id``, optional ``version``)
    or ``inline`` (``name``, ``description``, ``source``: a base64 zip). Shapes only; the container path lays them
    out."""
    skills = _list_of_objects(value, where)
    for index, skill in enumerate(skills):
        at = f"{where}[{index}]"
        if skill.get("type") == "skill_reference":
            _string(skill.get("skill_id"), f"{at}.skill_id")
            if skill.get("version") is not None:
                _string(skill.get("version"), f"{at}.version")
        elif skill.get("type") == "inline":
            _string(skill.get("name"), f"{at}.name")
            _string(skill.get("description"), f"{at}.description")
            source = skill.get("source")
            if not isinstance(source, dict) or source.get("type") != "base64":
                raise invalid_request(f"Invalid value for '{at}.source': expected a base64 source.",
                                      param=f"{at}.source", code="invalid_value")
            _string(source.get("data"), f"{at}.source.data")
        else:
            raise invalid_request(f"Invalid value for '{at}.type': expected 'skill_reference' or 'inline'.",
                                  param=f"{at}.type", code="invalid_value")
    return skills


@dataclass(frozen=True, slots=True)
class ShellToolOptions:
    """A request's hosted ``shell`` tool, checked: an explicit container (``container_reference``), or
    ``container_auto`` with its files, memory limit, skills and network policy."""

    position: int
    container_id: str | None = None
    file_ids: tuple[str, ...] = ()
    memory_limit: str | None = None
    skills: tuple[dict[str, Any], ...] = ()
    network: NetworkPolicy | None = None
    """``container_auto.network_policy`` (None: ``disabled``; sandbox/egress/policy.py)."""

    @property
    def param(self) -> str:
        return f"tools[{self.position}].environment"

    @classmethod
    def from_tool(cls, tool: Mapping[str, Any], position: int) -> ShellToolOptions | None:
        """The options of a hosted shell tool; None for the client's own (``local``, or no environment)."""
        environment = tool.get("environment")
        where = f"tools[{position}].environment"
        if environment is None:
            return None
        if not isinstance(environment, dict):
            raise invalid_request(f"Invalid type for '{where}': expected an object.", param=where,
                                  code="invalid_type")
        kind = environment.get("type")
        if kind == "local":
            return None
        if kind == "container_reference":
            return cls(position, container_id=_string(environment.get("container_id"), f"{where}.container_id"))
        if kind != "container_auto":
            raise invalid_request(f"Invalid value for '{where}.type': expected 'container_auto', "
                                  "'container_reference' or 'local'.", param=f"{where}.type", code="invalid_value")
        file_ids, memory = auto_container_fields(environment, where)
        return cls(position, file_ids=file_ids, memory_limit=memory,
                   skills=parse_skills(environment.get("skills"), f"{where}.skills"),
                   network=parse_policy(environment.get("network_policy"), f"{where}.network_policy"))


def shell_job(action: Mapping[str, Any]) -> ShellJob:
    """A ``shell_call``'s action (engine/tools/client.py read it off the model's arguments) as a sandbox job; at
    most :data:`MAX_COMMANDS` commands."""
    commands = [command for command in action.get("commands") or () if isinstance(command, str)]
    timeout = action.get("timeout_ms")
    limit = action.get("max_output_length")
    return ShellJob(commands[:MAX_COMMANDS], timeout if type(timeout) is int and timeout > 0 else None,
                    limit if type(limit) is int and limit >= 0 else None)


@dataclass(slots=True)
class ShellRun:
    """One shell call's outcome: each command's output (None: the call could not run, ``error`` says why), the
    sandbox's own result, the container files the commands made or changed, and notes on files not kept."""

    container_id: str
    commands: Sequence[str]
    outputs: list[CommandOutput] | None
    result: SandboxResult | None = None
    changed: list[StoredContainerFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    dropped_commands: int = 0

    @property
    def status(self) -> str:
        """The output item's status: ``completed`` when every command ran to an outcome (an exit code or its own
        timeout), ``incomplete`` when the call could not run or a limit of the call cut it short."""
        if self.outputs is None or self.dropped_commands:
            return "incomplete"
        return "completed" if all(output.ran for output in self.outputs) else "incomplete"

    def items(self) -> list[dict[str, Any]]:
        """The output item's ``output``: one entry per command that has an outcome."""
        return [output.as_output() for output in self.outputs or ()]

    def text_for_model(self) -> str:
        """What the model reads: each command with its output (as a stored output replays), then what was cut,
        the limit that ended the call, and the files written."""
        if self.outputs is None:
            return self.error or "The commands could not run."
        parts: list[str] = []
        for command, output in zip(self.commands, self.outputs, strict=False):
            text = shell_output_text([output.as_output()])
            cut = output.stdout_dropped + output.stderr_dropped
            parts.append(f"$ {command}\n{text}" + (f"\n[… {cut:,} more bytes of output were cut]" if cut else ""))
        if self.dropped_commands:
            parts.append(f"[{self.dropped_commands} more commands were not run: at most {MAX_COMMANDS} per call]")
        if self.result is not None and self.result.note:
            parts.append(f"[{self.result.note}]")
        if self.changed:
            listed = ", ".join(f"{file.path} ({file.bytes:,} bytes)" for file in self.changed[:MAX_FILES_LISTED])
            more = len(self.changed) - MAX_FILES_LISTED
            parts.append(f"[files written: {listed}{f' and {more} more' if more > 0 else ''}]")
        parts.extend(f"[{note}]" for note in self.notes)
        return "\n".join(parts) if parts else "(no commands were given)"


class LiveShellOutput:
    """A hosted shell call's ``shell_call_output`` item as its commands print: opened before they run, a delta
    per piece of output the sandbox sends on (:meth:`printed`), each command's ``.done`` once it ended, and
    :meth:`close` with the call's outcome (the commands not ended yet end there, with what was not said of them).
    ``wake``: told each time there is something new for the client."""

    def __init__(self, builder: ShellOutputItem, call_id: str, max_output_length: int | None,
                 wake: Callable[[], None]) -> None:
        self.builder = builder
        self.wake = wake
        self.index, self.item = builder.open_shell_call_output(call_id, max_output_length=max_output_length)
        self._said: dict[int, list[str]] = {}  # per command: the stdout and stderr said so far
        self._ended: dict[int, dict[str, Any]] = {}  # the commands whose .done went out, with their output

    def printed(self, index: int, stdout: str, stderr: str, output: CommandOutput | None) -> None:
        if index in self._ended:
            return
        said = self._said.setdefault(index, ["", ""])
        if stdout or stderr:
            self.builder.shell_output_delta(self.item, self.index, index, stdout, stderr)
            said[0] += stdout
            said[1] += stderr
        if output is not None:
            self._end(index, output.as_output())
        self.wake()

    def _end(self, index: int, output: dict[str, Any]) -> None:
        """The rest of what the command's output holds (nothing, when all was said as it came), then its .done."""
        said = self._said.setdefault(index, ["", ""])
        rest = [str(output[key])[len(text):] if str(output[key]).startswith(text) else ""
                for key, text in (("stdout", said[0]), ("stderr", said[1]))]
        if rest[0] or rest[1]:
            self.builder.shell_output_delta(self.item, self.index, index, rest[0], rest[1])
        self.builder.shell_output_done(self.item, self.index, index, output)
        self._ended[index] = output

    def close(self, outputs: list[dict[str, Any]], status: str) -> None:
        """The item done with the call's outputs (a call that failed after some commands ended keeps theirs)."""
        if not outputs and self._ended:
            outputs = [self._ended[index] for index in sorted(self._ended)]
        for index, output in enumerate(outputs):
            if index not in self._ended:
                self._end(index, output)
        self.builder.close_shell_call_output(self.item, self.index, outputs, status)


class HostedShellService(Protocol):
    """What the loop needs of the hosted shell (services/tools/hosted_shell.py implements it over the containers and the
    sandbox): the refusals, the container of a response, and one call."""

    async def check(self, options: ShellToolOptions, *, tenant: str) -> object:
        """The refusals; returns what the check resolved (the new container's skills), opaque to the loop, for
        :meth:`container_for`, which then need not resolve it again."""
        ...

    async def container_for(self, options: ShellToolOptions, history: Sequence[Mapping[str, Any]], *,
                            tenant: str, checked: object = None) -> str: ...

    async def run(self, action: Mapping[str, Any], container_id: str, *, tenant: str,
                  printed: Printed | None = None) -> ShellRun:
        """One call; ``printed``: told of what its commands print as the sandbox sends it on."""
        ...

    async def skills_note(self, container_id: str, *, tenant: str) -> str:
        """What the tool's description tells the model of a container's skills (protocol/containers/skills_note.py)."""
        ...

