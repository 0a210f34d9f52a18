"""A ``self_hosted`` session's commands run by the exec-server attached to its environment (adapters/http/
adapters/http/agents/executor_routes.py), instead of waiting for the client's ``tool_result``.

When a turn's response ends with the model's shell calls and an exec-server serves the session's environment, each
call's commands run there one after another, in the environment's ``workspace_directory``; the call's
``command_execution`` item is done with what they printed and the last exit code, and the next response reads each
command's own output and outcome (an exit code, or ``timeout``), as the hosted shell's. The session never requires
action for them. With no exec-server connected (or one that is gone before a call starts) the calls stay the
client's, as before; one that goes mid-call fails that call.

The turn waits for such calls as for the client's (session_waiting.py), so a turn that waits on them outlives its
process; an exec-server that connects later (codex registers again after a restart, a drain or a lost
connection: :func:`on_attached`), or one already connected when a stopped process's wait is resumed, runs the
waiting calls that never started. A call is marked started in the turn's record (``executor_started``) before its
first command is sent, so a call that had started on an exec-server of a stopped process is never sent again:
its item ends ``failed`` and the model reads that it was interrupted and may or may not have taken effect, the
rule docs/state.md states for effectful server-side calls.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .executor.rpc import CommandOutcome, ExecutorConnection, ExecutorError, ExecutorGone
from .session_waiting import keep_wait, waiting_entry
from .tool_calls import ToolCalls
from .turn_queue import EXECUTOR_STARTED, private

if TYPE_CHECKING:
    from ...store.base_agents import Record
    from .environments.environments import SessionEnvironments
    from .events import SessionLog
    from .turn_queue import QueuedTurn


class ExecutorTurn(Protocol):
    """What running a turn's calls on an exec-server needs of the session's runner (agent_turns.SessionRunner),
    named here so this module, which the runner calls, does not import it back."""

    environments: SessionEnvironments | None
    tenant: str
    session_id: str
    cancelling: bool
    events: SessionLog

    def item_record(self, item: dict[str, Any]) -> Record: ...

    def turn_record(self, turn: dict[str, Any]) -> Record: ...

    async def session(self) -> dict[str, Any]: ...


MAX_CALL_COMMANDS = 20
INTERRUPTED = ("The server running this session stopped while this command ran on the exec-server; it was not run "
               "again and its result is unknown (it may or may not have taken effect).")
_running: weakref.WeakKeyDictionary[ToolCalls, asyncio.Lock] = weakref.WeakKeyDictionary()


def _output(outcome: CommandOutcome) -> dict[str, Any]:
    ended = {"type": "timeout"} if outcome.timed_out else {"type": "exit", "exit_code": outcome.exit_code
                                                           if outcome.exit_code is not None else 1}
    return {"stdout": outcome.stdout, "stderr": outcome.stderr, "outcome": ended}


async def _run_call(connection: ExecutorConnection, arguments: dict[str, Any],
                    cwd: str) -> tuple[list[dict[str, Any]], str | None]:
    """Each command's shell output entry; the error that stopped the call (None: every command has an outcome)."""
    commands = [command for command in arguments.get("commands") or () if isinstance(command, str)]
    timeout = arguments.get("timeout_ms")
    limit = arguments.get("max_output_length")
    outputs: list[dict[str, Any]] = []
    for command in commands[:MAX_CALL_COMMANDS]:
        try:
            outcome = await connection.run(command, cwd, timeout_ms=timeout if type(timeout) is int and timeout > 0
                                           else None, output_cap=limit if type(limit) is int and limit >= 0 else None)
        except ExecutorError as error:
            return outputs, f"The exec-server refused the command: {error}"
        except ExecutorGone:
            return outputs, "The exec-server disconnected while the command ran."
        outputs.append(_output(outcome))
        if outcome.timed_out:
            break
    return outputs, None


async def run_on_executor(runner: ExecutorTurn, entry: QueuedTurn, session: dict[str, Any]) -> None:
    """Run the turn's open command calls on the session's exec-server, if one is connected (one run at a time per
    turn: an exec-server attaching while the turn's calls run leaves them to that run)."""
    environment = session.get("environment") or {}
    hub = runner.environments.executors if runner.environments is not None else None
    if hub is None or environment.get("type") != "self_hosted":
        return
    lock = _running.setdefault(entry.calls, asyncio.Lock())
    if lock.locked():
        return
    async with lock:
        await _run_open_calls(runner, entry, hub.connection, environment)


async def _run_open_calls(runner: ExecutorTurn, entry: QueuedTurn,
                          connection_of: Callable[[str, str], ExecutorConnection | None],
                          environment: dict[str, Any]) -> None:
    waiting = entry.turn.get("status") == "waiting"  # its record keeps the wait: kept current with each answer
    started_before = private(entry.turn).setdefault(EXECUTOR_STARTED, [])
    for call_id, call in list(entry.calls.open.items()):
        connection = connection_of(runner.tenant, str(environment.get("id")))
        if connection is None or "command_item" not in call or runner.cancelling:
            break
        started = time.monotonic()
        if call_id in started_before:  # sent by a process that stopped: never sent again
            outputs: list[dict[str, Any]] = []
            error: str | None = INTERRUPTED
        else:
            started_before.append(call_id)
            await runner.events.flush([runner.turn_record(entry.turn)])  # marked before anything is sent
            outputs, error = await _run_call(connection, call.get("arguments") or {},
                                             environment["workspace_directory"])
            if not outputs and error is not None and connection.closed.is_set():
                started_before.remove(call_id)  # gone before anything ran: the call stays the client's
                await runner.events.flush([runner.turn_record(entry.turn)])
                break
        if entry.calls.open.pop(call_id, None) is None:
            continue  # the client answered it meanwhile (it was told the call): its answer stands
        codes = [output["outcome"].get("exit_code") for output in outputs]
        success = error is None and bool(outputs) and all(code == 0 for code in codes)
        text = "".join(output["stdout"] + output["stderr"] for output in outputs) + (error or "")
        if error is not None:
            outputs.append({"stdout": "", "stderr": error, "outcome": {"type": "exit", "exit_code": 1}})
        entry.calls.answers.append({"type": "shell_call_output", "call_id": call_id, "output": outputs})
        entry.trace.call_answered(call_id, success)
        last = outputs[-1]["outcome"] if outputs else {}
        ran = dict(call["command_item"], status="completed" if success else "failed", output=text,
                   cwd=environment["workspace_directory"], exit_code=last.get("exit_code"),
                   duration_ms=int((time.monotonic() - started) * 1000))
        records = [runner.item_record(ran)]
        if waiting:
            keep_wait(entry)
            records.append(runner.turn_record(entry.turn))
        await runner.events.emit({"type": "agent.session.turn.item.done", "session_id": runner.session_id,
                                  "turn_id": call["turn_id"], "output_index": 0, "item": ran}, records=records)
    entry.calls.wake()


async def on_attached(runners: dict[str, Any], tenant: str, session_id: str) -> None:
    """An exec-server now serves the session's environment: the calls its waiting turn holds run there (a turn
    resumed from a stopped process, or one that began waiting while none was connected)."""
    runner = runners.get(session_id)
    if runner is None or runner.tenant != tenant:
        return  # no turn of the session in this process
    entry = waiting_entry(runner)
    if entry is None or entry.turn.get("status") != "waiting" or not entry.calls.open:
        return  # a running step's calls are run when its response ends
    await run_on_executor(runner, entry, await runner.session())
