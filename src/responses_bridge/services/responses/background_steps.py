"""A background run's tool loop checkpoints (run/step_resume.py), kept in its event log.

Each ``turn`` and ``step`` record is one row, sealed (``sealing.py``, purpose ``background-step``: it holds what
the model reads, and a row nobody could forge decides what a resumed run sends), at sequence numbers from
:data:`STEP_BASE` downwards: record ``n`` at ``STEP_BASE - n``. Readers never see them (``starting_after`` is never
below -1); a delete removes them with the log.

They are written in the writes the run makes anyway: a ``turn`` with the events that announce its calls (that
write is awaited when a call may have effects: such calls run only once it is durable), a ``step`` with the
events of the calls' outcomes, in the run's next batch, before any event of the next model call.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...protocol.errors import APIError
from ...run.step_resume import NOT_RESUMABLE, SAFE_TO_REPEAT, ResumedSteps
from ...sealing import Sealer

STEP_BASE = -(2**20)
"""Record ``n`` of a run is kept at ``STEP_BASE - n``; rows between it and -1 count resumes."""

STEP_PURPOSE = "background-step"


class HandOff(BaseException):
    """Raised at a step boundary of a draining process: the run is handed off there (background_run.py). Not an
    ``Exception``: like a cancellation it must pass the handlers that fail a run (the driver's set-up one)."""


class LoggedRun(Protocol):
    """What a step log writes through of its run (background_run.py's BackgroundRun, declared here where it is
    used: the run keeps its steps through this module, so the two do not import each other)."""

    rows: list[tuple[int, bytes]]
    draining: bool

    @property
    def response_run(self) -> Any: ...

    def add(self, data: bytes) -> None: ...

    async def flush_now(self) -> None: ...


class StepLog:
    """A background run's :class:`~responses_bridge.run.step_resume.StepRecorder`: its event log."""

    def __init__(self, run: LoggedRun, sealer: Sealer, recorded: int = 0) -> None:
        self._run = run
        self._sealer = sealer
        self._next = recorded  # the number of the next record

    def _keep(self, kind: str, record: dict[str, Any]) -> None:
        row = self._sealer.seal(STEP_PURPOSE, {"kind": kind, **record}).encode()
        self._run.rows.append((STEP_BASE - self._next, row))
        self._next += 1

    async def turn_began(self, record: dict[str, Any]) -> None:
        """Written before the calls run when one of them may have effects; a turn of searches only goes with the
        run's next batch (lost in a crash, the model call is made again, and so are the searches: reads)."""
        self._keep("turn", record)
        if any(call["item"] is not None and call["target"][0] not in SAFE_TO_REPEAT for call in record["calls"]):
            await self._run.flush_now()
        else:
            self._run.add(b"")

    def step_done(self, record: dict[str, Any]) -> None:
        run = self._run
        run.add(run.response_run.take_pending_bytes())  # the outcomes' events first, the record in their write
        self._keep("step", record)
        run.add(b"")
        if run.draining:
            raise HandOff


def read_steps(records: list[tuple[int, bytes]], sealer: Sealer) -> list[dict[str, Any]] | str:
    """The run's records in order, or why they cannot be read."""
    opened: list[dict[str, Any]] = []
    for sequence, row in sorted(records, key=lambda record: -record[0]):
        if STEP_BASE - sequence != len(opened):
            return "its recorded steps have a gap"
        try:
            opened.append(sealer.open(STEP_PURPOSE, row.decode()))
        except (APIError, UnicodeDecodeError):
            return "its recorded steps could not be read"
    return opened


def resumed_steps(records: list[dict[str, Any]], frames: list[bytes],
                  item_of: Any) -> ResumedSteps | str:
    """The completed steps and the interrupted turn of ``records``, and the stored output they reach; or why the
    run cannot be resumed past them. ``item_of(frame)``: (kind, output_index, item) of an item frame, else None."""
    steps: list[tuple[dict[str, Any], dict[str, Any]]] = []
    interrupted = None
    for record in records:
        kind = record.get("kind")
        if kind == "turn" and interrupted is None:
            interrupted = record
        elif kind == "step" and interrupted is not None:
            steps.append((interrupted, record))
            interrupted = None
        else:
            return "its recorded steps are out of order"
    for turn in [turn for turn, _ in steps] + ([interrupted] if interrupted is not None else []):
        for call in turn["calls"]:
            target = call["target"]
            if target is not None and target[0] in NOT_RESUMABLE:
                return f"it used {target[0]}, whose state does not outlive its process"
            if turn is interrupted and (target is None or target[3] or call["item"] is None):
                return "its last turn was ending the response (it called the client's tools or asked for approval)"
    latest: dict[int, dict[str, Any]] = {}
    done: set[int] = set()
    for frame in frames:
        found = item_of(frame)
        if found is None:
            continue
        event, index, item = found
        latest[index] = item
        (done.add if event == "done" else done.discard)(index)
    if interrupted is not None:
        reach = interrupted["output"]
    elif steps:
        reach = steps[-1][1]["output"]
    else:  # the first model call: only the set-up's listings (made again, safe to repeat) come before it
        reach = 0
        while latest.get(reach, {}).get("type") == "mcp_list_tools" and reach in done:
            reach += 1
    if any(index not in latest for index in range(reach)):
        return "its stored stream lacks items its recorded steps reach"
    return ResumedSteps(steps, interrupted, [latest[index] for index in range(reach)],
                        {index for index in done if index < reach})
