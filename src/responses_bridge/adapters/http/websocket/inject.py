"""WebSocket ``response.inject``: client-owned tool output committed to a response of this connection that waits for
it, which then goes on.

A ``{"type": "response.inject", "response_id", "input"}`` frame carries the outputs (``function_call_output`` and
the other ``*_output`` items, ``mcp_approval_response``) that answer the calls a response of this connection left
to its client. A response waits for them once it has ended ``completed`` with such calls open (what
``response.steer.pending`` calls its ``required_input``); one still running is waited for, and judged when it ends.
The input is validated and committed atomically, as the SDK's beta describes it:

* ``response.inject.created`` (``response_id``): every item answers one of the response's open calls and all of
  them are answered. The response then goes on, on its own lane, as a successor: its own ``response.create``
  settings with ``previous_response_id`` = the response (or its ``conversation``) and ``input`` = the injected
  items — the ``response.created`` that follows is the successor's. A response is resumed once.
* ``response.inject.failed`` (``error: {code, message}``, ``input`` as sent, ``response_id``): a response this
  connection does not know (``response_not_found``), or one that ended without waiting for this input, or was
  resumed already (``response_already_completed``).
* an ``error`` frame (400 ``invalid_input``, ``param: "input"``): a frame that is not tool output, or output that
  answers calls the response did not leave open, or leaves some of them unanswered.

Both events carry the response's ``stream_id`` when its lane has one and are numbered by the connection's own
counter, with steering's (steering.py). What waits is bounded: the settings of at most
:data:`WAITING_MEMORY` waiting responses and within the connection's byte budget (the oldest waits no more, and is
then an ended response), and injections for running ones within that budget too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ....protocol.errors import APIError
from .steering import ENDED_MEMORY, SETTINGS_LEFT_OUT, Steering, Target, answers_stub, required_input

WAITING_MEMORY = 16
"""Responses of one connection whose settings are kept while they wait for injected output (the oldest goes)."""

INJECT_KEYS = frozenset(("type", "response_id", "input"))

Enqueue = Callable[[bytes, str | None], Awaitable[None]]
"""Queues a ``response.create`` frame on a lane (``stream_id``), as the socket's reader queues a client's."""


@dataclass
class Waiting:
    lane: Target  # its response id and lane, for the events
    owed: set[Any]  # the call ids (approval request ids) it left open
    settings: bytes  # its create without input and previous_response_id, as JSON: what a successor inherits


class InjectError(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class Injections:
    """The connection's responses waiting for injected output, and the injections waiting for running ones."""

    def __init__(self, steering: Steering, enqueue: Enqueue, send_error: Callable[[APIError], Awaitable[None]], *,
                 budget: int) -> None:
        self._steering = steering  # knows which responses run, and numbers the connection's events
        self._enqueue = enqueue  # a response.create frame onto its lane, as the client's are queued
        self._send_error = send_error
        self.budget = budget
        self.held = 0  # bytes of injections waiting for running responses
        self.settings_bytes = 0  # bytes of the waiting responses' settings (the newest is always kept)
        self._waiting: OrderedDict[str, Waiting] = OrderedDict()
        self._pending: dict[str, list[bytes]] = {}  # running response -> injected input (JSON) in arrival order
        self._ended: OrderedDict[str, Target] = OrderedDict()  # ended without waiting, or resumed

    async def inject(self, frame: dict[str, Any]) -> None:
        """One ``response.inject`` frame."""
        response_id, value = frame.get("response_id"), frame.get("input")
        try:
            _check(frame, response_id, value)
        except InjectError as error:
            await self._send_error(APIError(400, error.message, param=error.param, code="invalid_input"))
            return
        assert isinstance(response_id, str) and isinstance(value, list)
        running = self._steering.running(response_id)
        if running is not None and response_id not in self._waiting:
            data = orjson.dumps(value)
            if self.held + len(data) > self.budget:
                await self._send_error(APIError(400, f"At most {self.budget} bytes of injected input may wait for "
                                                "running responses on one connection.", param="input",
                                                code="too_many_pending_injections"))
                return
            self.held += len(data)
            self._pending.setdefault(response_id, []).append(data)
            return
        await self._commit(response_id, value)

    async def ended(self, target: Target, create: dict[str, Any], response: dict[str, Any] | None) -> None:
        """A response of this connection ended (``create``: its request as run): it waits for injected output
        when it completed leaving calls to its client; injections that waited for it are judged now."""
        status = (response or {}).get("status")
        stubs = required_input(list((response or {}).get("output") or [])) if status == "completed" else []
        if stubs:
            settings = {key: value for key, value in create.items() if key not in SETTINGS_LEFT_OUT}
            waiting = Waiting(target, {stub.get("call_id") or stub.get("approval_request_id") for stub in stubs},
                              orjson.dumps(settings))
            self._waiting[target.response_id] = waiting
            self.settings_bytes += len(waiting.settings)
            while len(self._waiting) > 1 and (len(self._waiting) > WAITING_MEMORY
                                              or self.settings_bytes > self.budget):
                self._forget(next(iter(self._waiting)))
        else:
            self._remember_ended(target)
        for data in self._pending.pop(target.response_id, []):
            self.held -= len(data)
            await self._commit(target.response_id, orjson.loads(data))

    def drop(self) -> None:
        """The connection ends: what waits goes with it."""
        self._waiting.clear()
        self._pending.clear()
        self.held = self.settings_bytes = 0

    async def _commit(self, response_id: str, value: list[Any]) -> None:
        waiting = self._waiting.get(response_id)
        if waiting is None:
            ended = self._ended.get(response_id)
            code, message = (("response_already_completed", f"Response {response_id!r} is not waiting for input: "
                              "it ended without open calls, or was resumed already.") if ended is not None else
                             ("response_not_found", f"No response {response_id!r} on this connection."))
            await self._steering.emit(ended, {"type": "response.inject.failed", "response_id": response_id,
                                              "input": value, "error": {"code": code, "message": message}})
            return
        answered = {item.get("approval_request_id") if item.get("type") == "mcp_approval_response"
                    else item.get("call_id") for item in value}
        stray = [item for item in value if not answers_stub(item, waiting.owed)]
        if stray or answered != waiting.owed:
            missing = sorted(str(key) for key in waiting.owed - answered)
            await self._send_error(APIError(
                400, f"The injected input must answer every call response {response_id!r} left open, and only "
                f"those: {len(stray)} item(s) answer none of them; unanswered: {', '.join(missing) or 'none'}.",
                param="input", code="invalid_input"))
            return
        self._forget(response_id)
        await self._steering.emit(waiting.lane, {"type": "response.inject.created", "response_id": response_id})
        create = orjson.loads(waiting.settings)
        if not create.get("conversation"):  # a conversation's next response continues it by the conversation
            create["previous_response_id"] = response_id
        create["input"] = value
        create["type"] = "response.create"
        if waiting.lane.stream_id is not None:
            create["stream_id"] = waiting.lane.stream_id
        await self._enqueue(orjson.dumps(create), waiting.lane.stream_id)

    def _forget(self, response_id: str) -> None:
        """The response waits no more (resumed, or the oldest past the bounds): it is an ended one."""
        waiting = self._waiting.pop(response_id)
        self.settings_bytes -= len(waiting.settings)
        self._remember_ended(waiting.lane)

    def _remember_ended(self, target: Target) -> None:
        self._ended[target.response_id] = target
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)


def _check(frame: dict[str, Any], response_id: Any, value: Any) -> None:
    extra = sorted(set(frame) - INJECT_KEYS)
    if extra:
        raise InjectError("type", f"response.inject accepts only 'type', 'response_id' and 'input'; got "
                          f"{', '.join(extra)} (the response picks the lane).")
    if not isinstance(response_id, str) or not response_id:
        raise InjectError("response_id", "'response_id' must be a non-empty string.")
    if not isinstance(value, list) or not value:
        raise InjectError("input", "'input' must be a non-empty array of tool outputs.")
    for index, item in enumerate(value):
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or not (kind.endswith("_output") or kind == "mcp_approval_response"):
            raise InjectError(f"input[{index}]", f"input[{index}]: response.inject takes the outputs of the calls a "
                              "response left to its client (function_call_output, …, mcp_approval_response).")
