"""Resuming a background response another process (or this one before a restart) stopped running.

What makes a run resumable is in its event log, beside the frames readers follow, at sequence numbers no reader
asks for (``starting_after`` is never below -1):

* ``-1``: the request, sealed (``sealing.py``, purpose ``background-request``): the body as the client sent it,
  and whether the upstream call carried the client's own ``Authorization`` (no key configured for the upstream).
  Written right after the ``queued`` row, before the POST is answered; a run without it (an agent session's, one
  that died between the two writes) is not resumed: it fails as before.
* ``CREDENTIAL_SEQUENCE`` (``-2**19``): that ``Authorization``, sealed on its own
  (kept_authorization.py), written with the request; erased when the run ends (completed, failed, cancelled, or
  failed by the process that took it over), kept across a hand-off. A run whose call carried the client's
  credentials without this row (``RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false``) cannot be resumed: nobody
  could make its call again; it fails saying so.
* ``-2``, ``-3``, …: one empty row per resume, written by the process that took the run over before it makes any
  call: the count that bounds a crash loop (``RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES``).
* ``-2**20`` and below: the tool loop's step records, sealed (background_steps.py).

The rows go with the response (a delete removes its whole log), and are only ever read here.

What a resume does: the model call in flight is made again from the stored request, with every step the run had
completed before it applied (run/step_resume.py: the tool loop's ``turn`` and ``step`` records, rows of the same
log: background_steps.py): the calls whose results were recorded are never made again, and the calls of a turn
whose results were not all recorded are settled by the rule per tool (made again when they only read, given to
the model as interrupted otherwise). Its events continue the stored numbering, after a ``response.in_progress``
that starts the repeated step (what the interrupted call had streamed stays in the log before it; the final
response holds the completed steps' items and the repeated call's output). See docs/state.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from ...engine.wire import UpstreamRequest
from ...protocol.errors import APIError
from ...run.runs import Run
from ...run.step_resume import ResumedSteps
from ...run.upstream import UpstreamClient
from ...sealing import Sealer
from ...store.base import EventLog
from .background_frames import is_terminal_frame
from .background_steps import STEP_BASE, read_steps, resumed_steps
from .kept_authorization import KeptAuthorization

log = structlog.get_logger("responses_bridge.background")

REQUEST_SEQUENCE = -1
"""Where the sealed request is kept in the run's event log."""

REQUEST_PURPOSE = "background-request"

CREDENTIAL_SEQUENCE = -(2**19)
"""Where the client's sealed ``Authorization`` is kept while the run runs: below the resume rows (``-2``, ``-3``, …,
as many as ``RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES``), above the step records (``STEP_BASE`` and below)."""

ALL_ROWS = -(2**31)
"""``starting_after`` that reads the whole log, the resume rows included."""

SETUP_ITEM_TYPES = frozenset({"message", "reasoning", "function_call", "custom_tool_call", "mcp_list_tools"})
"""Items a run's stream may hold before its first recorded turn when the request approved no MCP call: the set-up's
listings (made again: safe to repeat) and the model call in flight's items (its server calls never started: a turn
is recorded before any of them runs)."""


class Rebuilder(Protocol):
    """Builds the run again from the stored request (the runtime does: it knows the routes and the doors'
    configured upstream keys). Returns the begun run, its first call, the upstream authorization and the routed
    client."""

    async def __call__(self, body: dict[str, Any], *,
                       tenant: str) -> tuple[Run, UpstreamRequest | None, str | None, UpstreamClient | None]: ...


def sealed_request(sealer: Sealer, body: bytes | dict[str, Any], *, client_credentials: bool) -> bytes:
    """The row kept at ``REQUEST_SEQUENCE``. ``client_credentials``: the upstream call carried the client's own
    ``Authorization`` (which is not kept)."""
    decoded = orjson.loads(body) if isinstance(body, bytes) else body
    return sealer.seal(REQUEST_PURPOSE, {"body": decoded, "client_credentials": client_credentials}).encode()


def credential_rows(kept: KeptAuthorization | None, authorization: str | None) -> list[tuple[int, bytes]]:
    """The row that keeps the client's ``Authorization`` the run's upstream call carries (None: its call carries a
    configured key), sealed; none when nothing is kept."""
    sealed = None if kept is None else kept.keep(authorization)
    return [] if sealed is None else [(CREDENTIAL_SEQUENCE, sealed.encode())]


async def erase_credentials(events: EventLog, response_id: str, tenant: str, **fence: str) -> None:
    """The run ended: the client's credentials kept with it go (``fence``: only while this process holds the run).
    A failure is logged: the row goes with the response, and a later resume finds the run ended."""
    try:
        await events.forget(response_id, CREDENTIAL_SEQUENCE, tenant=tenant, **fence)
    except Exception:
        log.warning("background_credentials_not_erased", response_id=response_id, exc_info=True)


@dataclass
class ResumePlan:
    body: dict[str, Any]
    frames: list[bytes]  # the stored stream, index == sequence_number
    resumes: int  # how many times the run was resumed before this one
    steps: ResumedSteps  # its completed steps and the output they reach (run/step_resume.py)
    recorded: int  # how many step records it has (the next is numbered after them)
    authorization: str | None = None  # the client's own, kept sealed: what its upstream calls carry again

    @property
    def marker(self) -> int:
        """The row that counts this resume."""
        return REQUEST_SEQUENCE - 1 - self.resumes


def plan_resume(rows: list[tuple[int, bytes]], sealer: Sealer, max_resumes: int,
                kept: KeptAuthorization | None = None) -> ResumePlan | str:
    """What the resume starts from, or why the run cannot be resumed (said in its ``failed`` error); ``kept``
    opens the client's credentials kept with it."""
    request: bytes | None = None
    credential: bytes | None = None
    resumes = 0
    frames: list[bytes] = []
    records: list[tuple[int, bytes]] = []
    for sequence, frame in rows:
        if sequence == REQUEST_SEQUENCE:
            request = frame
        elif sequence == CREDENTIAL_SEQUENCE:
            credential = frame
        elif sequence <= STEP_BASE:
            records.append((sequence, frame))
        elif sequence < REQUEST_SEQUENCE:
            resumes += 1
        elif sequence != len(frames):
            return "its stored event stream has a gap, so it cannot be continued"
        else:
            frames.append(frame)
    if request is None:
        return "its request was not kept for a resume"
    if resumes >= max_resumes:
        return f"it was resumed {resumes} times already and did not finish (the limit is {max_resumes})"
    if frames and is_terminal_frame(frames[-1]):
        return "its stream had already ended"
    try:
        opened = sealer.open(REQUEST_PURPOSE, request.decode())
    except (APIError, UnicodeDecodeError):  # another deployment's key, a damaged row: not resumable
        return "its kept request could not be read"
    authorization = None
    if opened.get("client_credentials"):
        authorization = None if credential is None or kept is None else kept.open(credential.decode(
            errors="replace"))
        if authorization is None:
            return ("its upstream call needs the client's own credentials, which were not kept "
                    "(RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS is false, or the sealing key changed)")
    body = opened["body"]
    if _approves(body):
        for frame in frames:
            started = _item_type(frame)
            if started is not None and started not in SETUP_ITEM_TYPES:
                return f"it had started a server-side tool step ({started}) before its first turn, never run twice"
    steps = read_steps(records, sealer)
    if isinstance(steps, str):
        return steps
    resumed = resumed_steps(steps, frames, item_of)
    if isinstance(resumed, str):
        return resumed
    return ResumePlan(body=body, frames=frames, resumes=resumes, steps=resumed, recorded=len(steps),
                      authorization=authorization)


def _approves(body: dict[str, Any]) -> bool:
    """Does the request answer MCP approval requests (calls made at set-up, before any turn is recorded)?"""
    items = body.get("input")
    return isinstance(items, list) and any(
        isinstance(item, dict) and item.get("type") == "mcp_approval_response" for item in items)


def item_of(frame: bytes) -> tuple[str, int, dict[str, Any]] | None:
    """An ``output_item.added`` / ``.done`` frame's ("added" or "done", output_index, item); None for any other."""
    if frame.startswith(b"event: response.output_item.done\n"):
        event = "done"
    elif frame.startswith(b"event: response.output_item.added\n"):
        event = "added"
    else:
        return None
    data = orjson.loads(frame[frame.index(b"\ndata: ") + 7:])
    return event, int(data.get("output_index") or 0), data.get("item") or {}


def _item_type(frame: bytes) -> str | None:
    """The item type of an ``output_item.added`` frame (None for any other)."""
    if not frame.startswith(b"event: response.output_item.added\n"):
        return None
    event = orjson.loads(frame[frame.index(b"\ndata: ") + 7:])
    item = event.get("item") or {}
    return str(item.get("type"))
