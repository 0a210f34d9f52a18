"""WebSocket steering: ``response.steer`` queues user input for a response running on this connection.

A ``{"type": "response.steer", "previous_response_id", "input"}`` frame (only those keys: the target's lane is
the one its events go to, so ``stream_id`` is refused) is answered at once, on the target's lane:

* ``response.steer.accepted`` with ``steer: {id: "steer_…", previous_response_id}``: the input is queued (at
  most :data:`MAX_PENDING_STEERS` per response). The running response stops at the next boundary between the
  model turns of its tool loop (``response.incomplete``, ``incomplete_details.reason: "steered"``) or simply
  completes; then a successor starts on the same lane: the target's own ``response.create`` (model,
  instructions, tools, store, …) with ``previous_response_id`` = the target and ``input`` = the queued inputs in
  submission order. Its ``response.created`` is the commit point.
* ``response.steer.failed`` (``error: {code, message, type}``, ``steer: {input, previous_response_id, id?}``):
  bad input (``invalid_input``), a response this connection does not know (``response_not_found``), one bound
  to a conversation or using ``context_management`` (``steering_not_supported``), too much queued
  (``too_many_pending_steers``: more than :data:`MAX_PENDING_STEERS` submissions for the response, or more than
  the connection's ``budget`` bytes of queued input across its responses), a response that already ended
  (``response_already_completed``) or ended without a successor being possible (failed, cancelled:
  ``response_not_active``), and accepted input whose successor could not be created
  (``successor_creation_failed``, with the accepted ``id``).
* ``response.steer.pending`` (``reason: "waiting_for_required_input"``, ``required_input`` stubs), after
  ``response.completed``, when the response stopped for client-owned tool output or approval: no successor; the
  input stays queued and the client's next explicit ``response.create`` with that ``previous_response_id`` on
  the same lane gets it prepended to its own input (its own settings apply). The one exception: that input's
  answers to the parent's outstanding calls (the ``required_input``) stay ahead of the queued input, because a
  Chat Completions backend refuses anything between an assistant's tool calls and their results.

Steer events are numbered by a counter of the connection's own (they belong to no response's event sequence,
whose numbers stay contiguous). Queued input lives in the connection: it is dropped when the socket closes or the
door drains. It waits as the JSON bytes of what the client sent, parsed again when a successor (or a failure
event) needs it, so the byte budget is what it costs: many short parts parsed are some ten times their bytes.
A successor's create, a parked response's required input and the ended responses' codes are all that is kept
besides; a parked response gives up the settings it would have passed to an automatic successor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ....ids import new_id

MAX_PENDING_STEERS = 8
"""Steering submissions one response may have queued at once; one more is ``too_many_pending_steers``."""

ENDED_MEMORY = 256
"""How many ended responses the connection remembers, to tell ``response_already_completed`` from
``response_not_found``."""

STEER_KEYS = frozenset(("type", "previous_response_id", "input"))
PART_TYPES = frozenset(("input_text", "input_image", "input_file"))
MESSAGE_KEYS = frozenset(("type", "role", "content"))
SETTINGS_LEFT_OUT = ("input", "previous_response_id")  # everything else of a create is inherited by a successor

Send = Callable[[list[str]], Awaitable[None]]


class SteerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Steer:
    """One accepted submission: its input as the JSON the client sent (checked when it arrived)."""

    id: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def input(self) -> Any:
        """As the client sent it: what a failure returns."""
        return orjson.loads(self.data)

    @property
    def items(self) -> list[dict[str, Any]]:
        """As input items of a create."""
        return check_input(self.input)


@dataclass
class Target:
    """A response of this connection that steering can name, from its ``response.create`` on."""

    response_id: str
    stream_id: str | None
    settings: dict[str, Any]  # its create, minus input and previous_response_id
    supported: bool
    queue: list[Steer] = field(default_factory=list)
    parked: bool = False  # completed waiting for client-owned input: the queue waits for an explicit create

    @property
    def lane(self) -> dict[str, str]:
        return {"stream_id": self.stream_id} if self.stream_id is not None else {}


def check_input(value: Any) -> list[dict[str, Any]]:
    """The steering input as create input items; raises :class:`SteerError` (``invalid_input``)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise SteerError("invalid_input", "'input' must be a string or a non-empty array of user messages.")
    items = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict) or set(item) - MESSAGE_KEYS:
            raise SteerError("invalid_input", f"{where}: a steering message may contain only "
                             "'type', 'role' and 'content'.")
        if item.get("type", "message") != "message" or item.get("role") != "user":
            raise SteerError("invalid_input", f"{where}: steering accepts only messages with the 'user' role.")
        content = item.get("content")
        if isinstance(content, list) and content:
            for part in content:
                if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
                    raise SteerError("invalid_input", f"{where}: content parts must be input_text, "
                                     "input_image or input_file.")
                if part["type"] == "input_text" and not isinstance(part.get("text"), str):
                    raise SteerError("invalid_input", f"{where}: an input_text part needs a string 'text'.")
        elif not isinstance(content, str):
            raise SteerError("invalid_input", f"{where}: 'content' must be a string or a non-empty array of parts.")
        items.append({"type": "message", "role": "user", "content": content})
    return items


REQUIRED_INPUT = {  # client-owned item left without output -> the stub of the input that answers it
    "function_call": lambda item: {"type": "function_call_output", "call_id": item.get("call_id"),
                                   "name": item.get("name")},
    "custom_tool_call": lambda item: {"type": "custom_tool_call_output", "call_id": item.get("call_id")},
    "computer_call": lambda item: {"type": "computer_call_output", "call_id": item.get("call_id")},
    # the SDK names no local_shell stub: a shell output answers it by the same call_id
    "local_shell_call": lambda item: {"type": "shell_call_output", "call_id": item.get("call_id")},
    "shell_call": lambda item: {"type": "shell_call_output", "call_id": item.get("call_id")},
    "apply_patch_call": lambda item: {"type": "apply_patch_call_output", "call_id": item.get("call_id")},
    "mcp_approval_request": lambda item: {"type": "mcp_approval_response", "approval_request_id": item.get("id")},
}


def required_input(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stubs for what the client owes before the response can go on (its tool outputs, approvals). A call the
    bridge answered itself in the same output (a hosted shell call and its ``shell_call_output``) owes nothing."""
    answered = {item.get("call_id") for item in output if str(item.get("type", "")).endswith("_output")}
    stubs = []
    for item in output:
        kind = item.get("type")
        if item.get("call_id") is not None and item.get("call_id") in answered:
            continue
        if kind == "tool_search_call" and item.get("execution") == "client":
            stubs.append({"type": "tool_search_output", "call_id": item.get("call_id"), "execution": "client"})
        elif kind in REQUIRED_INPUT:
            stubs.append(REQUIRED_INPUT[kind](item))
    return stubs


def answers_stub(item: dict[str, Any], owed: set[Any]) -> bool:
    """Does this explicit input item answer one of the parent's outstanding calls or approval requests?"""
    key = item.get("approval_request_id") if item.get("type") == "mcp_approval_response" else item.get("call_id")
    return key is not None and key in owed and str(item.get("type", "")).endswith(("_output", "_response"))


def as_items(value: Any) -> list[Any]:
    """A create's ``input`` as a list of items (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value) if isinstance(value, list) else [value]


class Steering:
    """The connection's steering book: its responses (running, parked, ended) and their queued input."""

    def __init__(self, send: Send, *, budget: int) -> None:
        self._send = send
        self.budget = budget  # bytes of queued input across the connection's responses
        self.held = 0  # bytes of input queued now (each accepted steer's, until it leaves its queue)
        self._targets: dict[str, Target] = {}  # running or parked
        self._ended: OrderedDict[str, tuple[str, str | None]] = OrderedDict()  # id -> (failure code, its lane)
        self._stubs: dict[str, list[dict[str, Any]]] = {}  # a parked response's required_input
        self._sequence = 0

    # --- the client's frame ----------------------------------------------------------------------------------

    async def steer(self, frame: dict[str, Any]) -> None:
        """One ``response.steer`` frame (with its ``type`` and any ``stream_id`` still in it)."""
        previous, value = frame.get("previous_response_id"), frame.get("input")
        target = self._targets.get(previous) if isinstance(previous, str) else None
        try:
            if not isinstance(previous, str) or not previous:
                raise SteerError("invalid_input", "'previous_response_id' must be a non-empty string.")
            extra = sorted(set(frame) - STEER_KEYS)
            if extra:
                raise SteerError("invalid_input", f"response.steer accepts only 'type', 'previous_response_id' "
                                 f"and 'input'; got {', '.join(extra)} (the target response picks the lane).")
            items = check_input(value)
            if target is None:
                ended = self._ended.get(previous)
                if ended is None:
                    raise SteerError("response_not_found",
                                     f"No response {previous!r} is running on this connection.")
                target = Target(previous, ended[1], {}, True)  # only its lane: the failure goes there
                raise SteerError(ended[0], f"Response {previous!r} has ended and accepts no steering input.")
            if not target.supported:
                raise SteerError("steering_not_supported", "Responses bound to a conversation or using "
                                 "context_management do not support steering.")
            if len(target.queue) >= MAX_PENDING_STEERS:
                raise SteerError("too_many_pending_steers", f"At most {MAX_PENDING_STEERS} steering submissions "
                                 "may be pending for one response.")
            data = orjson.dumps(value)
            del items  # checked; what waits is the bytes
            if self.held and self.held + len(data) > self.budget:
                raise SteerError("too_many_pending_steers", f"At most {self.budget} bytes of steering input may "
                                 "be pending on one connection; send it again once a response has taken its input.")
        except SteerError as error:
            await self._failed(error, value, previous, target)
            return
        steer = Steer(new_id("steer"), data)
        target.queue.append(steer)
        self.held += steer.size
        await self.emit(target, {"type": "response.steer.accepted",
                                  "steer": {"id": steer.id, "previous_response_id": target.response_id}})
        if target.parked:  # already waiting for the client's tool output: say so for this submission too
            await self._pending(target, [steer], self._stubs.get(target.response_id, []))

    def running(self, response_id: str) -> Target | None:
        """The response of that id while it runs on this connection (not parked, not ended)."""
        target = self._targets.get(response_id)
        return target if target is not None and not target.parked else None

    # --- the door's turns ------------------------------------------------------------------------------------

    def begin(self, response_id: str, create: dict[str, Any], stream_id: str | None) -> Target:
        """A response was created on this connection (``create``: its request, as run)."""
        settings = {key: value for key, value in create.items() if key not in SETTINGS_LEFT_OUT}
        supported = not create.get("conversation") and not create.get("context_management")
        target = self._targets[response_id] = Target(response_id, stream_id, settings, supported)
        return target

    def take_parked(self, create: dict[str, Any], stream_id: str | None) -> list[Steer]:
        """An explicit ``response.create``: when it continues a parked response on that response's lane, the
        queued input is prepended to its input (in submission order). The steers are committed by
        :meth:`committed` once it is created; until then they stay queued."""
        previous = create.get("previous_response_id")
        target = self._targets.get(previous) if isinstance(previous, str) else None
        if target is None or not target.parked or target.stream_id != stream_id or not target.queue:
            return []
        stubs = self._stubs.get(target.response_id, [])
        owed = {stub.get("call_id") or stub.get("approval_request_id") for stub in stubs}
        explicit = as_items(create.get("input"))
        answers = [item for item in explicit if isinstance(item, dict) and answers_stub(item, owed)]
        rest = [item for item in explicit if not (isinstance(item, dict) and answers_stub(item, owed))]
        # the answers to the parent's calls stay first: Chat Completions wants tool results right after the calls
        create["input"] = answers + [item for steer in target.queue for item in steer.items] + rest
        return list(target.queue)

    def committed(self, previous: str | None, steers: list[Steer]) -> None:
        """A response that carries ``steers`` was created: they leave the queue of ``previous``, whose entry is
        forgotten once nothing is queued on it any more."""
        target = self._targets.get(previous) if previous is not None else None
        if target is None:
            return
        self.held -= sum(steer.size for steer in target.queue if steer in steers)
        target.queue = [steer for steer in target.queue if steer not in steers]
        if target.parked and not target.queue:
            self._end(target, "response_already_completed")

    async def not_created(self, previous: str, stream_id: str | None, steers: list[Steer], message: str) -> None:
        """A response carrying ``steers`` (continuing ``previous``, on lane ``stream_id``) could not be created:
        an automatic successor's steers are returned to the client (``successor_creation_failed``); a parked
        response's stay queued for the client's next try."""
        target = self._targets.get(previous)
        if target is not None and target.parked:
            return
        lane = Target(previous, stream_id, {}, True)
        for steer in steers:
            await self._failed(SteerError("successor_creation_failed", message), steer.input, previous, lane,
                               steer.id)

    async def ended(self, target: Target, response: dict[str, Any] | None) -> tuple[dict[str, Any], list[Steer]]:
        """The target's run ended with ``response``. Returns the successor's create and the steers it commits
        when queued input makes one; ``({}, [])`` otherwise (pending or failed events are sent here). The
        target accepts no more steering unless it is parked waiting for the client's tool output."""
        status = (response or {}).get("status")
        queue = target.queue
        if status not in ("completed", "incomplete"):
            self._end(target, "response_not_active")
            for steer in queue:
                await self._failed(SteerError("response_not_active", f"Response {target.response_id!r} ended "
                                              f"{status or 'failed'}; its steering input was not applied."),
                                   steer.input, target.response_id, target, steer.id)
            return {}, []
        stubs = required_input(list((response or {}).get("output") or []))
        if stubs and queue:  # the client owes tool output: steering waits for its explicit continuation
            target.parked = True
            target.settings = {}  # only an automatic successor inherits them, and a parked response gets none
            self._stubs[target.response_id] = stubs
            await self._pending(target, queue, stubs)
            return {}, []
        self._end(target, "response_already_completed")
        if not queue:
            return {}, []
        successor = dict(target.settings)
        successor["previous_response_id"] = target.response_id
        successor["input"] = [item for steer in queue for item in steer.items]
        return successor, queue

    def drop(self) -> None:
        """The connection ends: queued input goes with it."""
        self._targets.clear()
        self._stubs.clear()
        self.held = 0

    # --- events ----------------------------------------------------------------------------------------------

    def _end(self, target: Target, code: str) -> None:
        """The target accepts no more steering; its queue no longer counts (a successor's create, or the failure
        events about to be sent, hold what is left of it)."""
        if self._targets.pop(target.response_id, None) is target:
            self.held -= sum(steer.size for steer in target.queue)
        self._stubs.pop(target.response_id, None)
        self._ended[target.response_id] = (code, target.stream_id)
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    async def _pending(self, target: Target, steers: list[Steer], stubs: list[dict[str, Any]]) -> None:
        for steer in steers:
            await self.emit(target, {"type": "response.steer.pending", "reason": "waiting_for_required_input",
                                      "required_input": stubs,
                                      "steer": {"id": steer.id, "previous_response_id": target.response_id}})

    async def _failed(self, error: SteerError, value: Any, previous: Any, target: Target | None,
                      steer_id: str | None = None) -> None:
        steer: dict[str, Any] = {"input": value, "previous_response_id": previous}
        if steer_id is not None:
            steer["id"] = steer_id
        await self.emit(target, {"type": "response.steer.failed", "steer": steer,
                                  "error": {"code": error.code, "message": error.message,
                                            "type": "invalid_request_error"}})

    async def emit(self, target: Target | None, event: dict[str, Any]) -> None:
        """Send a connection-level event (steering's, injection's) on ``target``'s lane, numbered by the connection's
        own counter."""
        event["sequence_number"] = self._sequence
        self._sequence += 1
        if target is not None:
            event.update(target.lane)
        await self._send([orjson.dumps(event).decode()])
