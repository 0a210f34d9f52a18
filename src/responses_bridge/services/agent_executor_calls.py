"""A ``self_hosted`` session's commands run by the exec-server attached to its environment (adapters/http/
executor_routes.py), instead of waiting for the client's ``tool_result``.

When a turn's response ends with the model's shell calls and an exec-server serves the session's environment, each
call's commands run there one after another, in the environment's ``workspace_directory``; the call's
``command_execution`` item is done with what they printed and the last exit code, and the next response reads each
command's own output and outcome (an exit code, or ``timeout``), as the hosted shell's. The session never requires
action for them. With no exec-server connected (or one that is gone before a call starts) the calls stay the
client's, as before; one that goes mid-call fails that call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from .executor_rpc import CommandOutcome, ExecutorConnection, ExecutorError, ExecutorGone

if TYPE_CHECKING:
    from ..store.base_agents import Record
    from .agent_environments import SessionEnvironments
    from .agent_events import SessionLog
    from .agent_turn_queue import QueuedTurn


class ExecutorTurn(Protocol):
    """What running a turn's calls on an exec-server needs of the session's runner (agent_turns.SessionRunner),
    named here so this module, which the runner calls, does not import it back."""

    environments: SessionEnvironments | None
    tenant: str
    session_id: str
    cancelling: bool
    events: SessionLog

    def item_record(self, item: dict[str, Any]) -> Record: ...

MAX_CALL_COMMANDS = 20


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
    """Run the turn's open command calls on the session's exec-server, if one is connected."""
    environment = session.get("environment") or {}
    hub = runner.environments.executors if runner.environments is not None else None
    if hub is None or environment.get("type") != "self_hosted":
        return
    for call_id, call in list(entry.calls.open.items()):
        connection = hub.connection(runner.tenant, str(environment.get("id")))
        if connection is None or "command_item" not in call or runner.cancelling:
            return
        started = time.monotonic()
        outputs, error = await _run_call(connection, call.get("arguments") or {}, environment["workspace_directory"])
        if not outputs and error is not None and connection.closed.is_set():
            return  # gone before anything ran: the call stays the client's
        entry.calls.open.pop(call_id, None)
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
        await runner.events.emit({"type": "agent.session.turn.item.done", "session_id": runner.session_id,
                                  "turn_id": call["turn_id"], "output_index": 0, "item": ran},
                                 records=[runner.item_record(ran)])
    entry.calls.wake()
