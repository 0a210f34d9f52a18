"""The calls of the client's own functions (and, in a ``self_hosted`` session, its shell's commands: a
``function_call`` required action named ``shell``) a session's turn is waiting on: opened when the model's call is
complete (before the client is shown it), answered by ``agent.session.input.tool_result`` events, and handed as
``function_call_output`` (a command's: ``shell_call_output``) input to the turn's next response once none is left
open. The MCP calls that wait for the client's approval (an ``mcp_approval_request`` required action) are held the
same way, answered by ``agent.session.input.mcp_approval_request_result`` events, and handed on as
``mcp_approval_response`` items (the bridge's tool loop makes an approved call before the next model turn).

The desktop's approvals (a ``computer_use_approval_request`` required action: an origin the browser waits for, a
sign-in form) are held beside them, answered by ``…computer_use_approval_request_result`` events: a decided one
waits in ``decided`` until the turn's task has done what it says on the desktop (computer/approvals.py), which it
does once every request of the same computer call is decided. A sign-in's submitted values are in ``secrets``
alone — memory, never the turn's record (session_waiting.py keeps everything else)."""

from __future__ import annotations

import asyncio
from typing import Any

from ...protocol.agents.approvals import approval_action, approval_answer
from ...protocol.agents.computer_approvals import required_action
from ...protocol.agents.events import call_output_input, command_output_input
from ...protocol.errors import APIError, invalid_request

MAX_OPEN_CALLS = 128


def unknown_call(call_id: str) -> APIError:
    """The SDK's tool dispatcher retries on exactly this answer (the call may not be registered yet)."""
    return APIError(400, f"Unknown pending tool call: {call_id}", type="invalid_request_error", param="call_id",
                    code="invalid_request_error")


def unknown_approval(request_id: str, what: str = "MCP approval request") -> APIError:
    return invalid_request(f"No pending {what} with id '{request_id}' in this session.",
                           param="request_id", code="invalid_value")


def is_computer(request: dict[str, Any]) -> bool:
    """A desktop's approval request (computer/approvals.py), not an MCP call held for approval."""
    return "computer" in request


class ToolCalls:
    def __init__(self) -> None:
        self.open: dict[str, dict[str, Any]] = {}  # call id -> the function_call item, no result yet
        self.approvals: dict[str, dict[str, Any]] = {}  # request id -> the mcp_approval_request item, no answer yet
        self.answers: list[dict[str, Any]] = []  # the next response's input
        self.decided: list[dict[str, Any]] = []  # desktop approvals answered, not yet done on the desktop
        self.secrets: dict[str, dict[str, str]] = {}  # request id -> a sign-in's values (memory only)
        self._changed = asyncio.Event()

    @property
    def pending(self) -> bool:
        """Calls were made that the next response must hear the results of."""
        return bool(self.open or self.approvals or self.answers)

    @property
    def waiting(self) -> bool:
        """Some call or approval still has no answer from the client, or a desktop's answer is still to be done."""
        return bool(self.open or self.approvals or self.decided)

    def asked(self, request: dict[str, Any]) -> None:
        """An MCP call the bridge's tool loop holds for approval (the response's ``mcp_approval_request``)."""
        if len(self.open) + len(self.approvals) >= MAX_OPEN_CALLS:
            raise APIError(500, f"The model made more than {MAX_OPEN_CALLS} calls at once.", type="server_error",
                           code="server_error")
        self.approvals[str(request["id"])] = request

    def decide(self, request_id: str, decision: str) -> dict[str, Any]:
        """The client's decision on an approval request: the request it answers (a 400 for an unknown one)."""
        request = self.approvals.get(request_id)
        if request is None or is_computer(request):
            raise unknown_approval(request_id)
        del self.approvals[request_id]
        self.answers.extend(approval_answer(request, decision))
        self.wake()
        return request

    def computer_request(self, request_id: str) -> dict[str, Any]:
        """The desktop's approval request ``request_id`` not yet answered (a 400 naming ``request_id``)."""
        request = self.approvals.get(request_id)
        if request is None or not is_computer(request):
            raise unknown_approval(request_id, "computer use approval request")
        return request

    def decide_computer(self, request_id: str, answer: dict[str, Any]) -> dict[str, Any]:
        """The client's answer to a desktop's request (checked by the caller): kept in ``decided`` without its
        values, which go to ``secrets``; the request it answers."""
        request = self.approvals.pop(request_id)
        values = answer.get("values")
        if values is not None:
            self.secrets[request_id] = dict(values)
        kept = {key: value for key, value in answer.items() if key not in ("values", "param")}
        self.decided.append({**request, "answer": kept})
        self.wake()
        return request

    def ready(self) -> list[dict[str, Any]]:
        """The decided desktop requests of the first computer call none of whose requests awaits the client."""
        waiting = {request["computer"]["call_id"] for request in self.approvals.values() if is_computer(request)}
        for done in self.decided:
            call_id = done["computer"]["call_id"]
            if call_id not in waiting:
                return [one for one in self.decided if one["computer"]["call_id"] == call_id]
        return []

    def made(self, call_id: str, output: str) -> None:
        """A call the session made itself (the ``automations`` tool's): its output goes to the next response."""
        self.answers.append({"type": "function_call_output", "call_id": call_id, "output": output})

    def opened(self, call: dict[str, Any]) -> None:
        if len(self.open) + len(self.approvals) >= MAX_OPEN_CALLS:
            raise APIError(500, f"The model made more than {MAX_OPEN_CALLS} calls at once.", type="server_error",
                           code="server_error")
        self.open[str(call["call_id"])] = call

    def answer(self, result: dict[str, Any]) -> None:
        call = self.open.pop(result["call_id"], None)
        if call is not None and "command_item" in call:  # a command of a self_hosted session
            self.answers.append(command_output_input(call, result))
        else:
            self.answers.append(call_output_input(result))
        self.wake()

    def required_actions(self) -> list[dict[str, Any]]:
        return [*({"type": "function_call", "call_id": call["call_id"], "name": call["name"],
                   "arguments": call["arguments"], "turn_id": call["turn_id"]} for call in self.open.values()),
                *(required_action(request) if is_computer(request) else approval_action(request)
                  for request in self.approvals.values())]

    def take_answers(self) -> list[dict[str, Any]]:
        answers, self.answers = self.answers, []
        return answers

    def wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self) -> None:
        await self._changed.wait()
