"""The tool loop's step between two model turns of a :class:`~responses_bridge.run.response_run.ResponseRun`:
the server-side calls a turn made run, and the next turn's call built (or the first turn built again once a
compaction's summary is in). Apart from the run, which every request makes, because only a response that offers
server-side tools (or compacts) comes here."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from ..engine.responses.translator import Translator
from ..engine.responses.turns import in_history_order
from ..engine.wire import UpstreamRequest
from .server_tools import ServerToolRun, write_events
from .step_resume import StepRecorder, step_record, turn_record


class LoopingRun(Protocol):
    """The state of a :class:`~responses_bridge.run.response_run.ResponseRun` the step between turns reads and
    moves on, named here so this module, which the run calls, does not import the run back."""

    _tool_run: ServerToolRun | None
    _turns: int
    _max_turns: int
    _pending_bytes: bytes
    _first_pending: tuple[list[dict[str, Any]], bool] | None
    stop_between_turns: Callable[[], bool] | None
    steps: StepRecorder | None

    def _begun(self) -> Translator: ...

log = structlog.get_logger("responses_bridge.run")


async def next_turn(run: LoopingRun, write: Callable[[bytes], Awaitable[None]] | None) -> UpstreamRequest | None:
    """:meth:`ResponseRun.next_turn`."""
    tool_run, translator = run._tool_run, run._begun()
    if translator.compacting_now:
        return await _after_compaction(run, translator)
    if tool_run is None or translator.upstream_failed:
        return None
    turn = translator.end_turn()
    if turn is None or not turn.calls or run._turns >= run._max_turns:
        return None  # failed, answered, or the last turn (sent without tools) still called: it ends here
    if write is not None:
        announced = translator.take_events()
        if announced:
            await write(announced)
        tool_run.runner.live = functools.partial(write_events, translator, write)
    if run.steps is not None and turn.server_calls:  # durable before any of them runs
        await run.steps.turn_began(turn_record(turn, tool_run))
    try:
        outcome = await tool_run.run_turn(turn)
    finally:
        tool_run.runner.live = None
    run._pending_bytes += translator.take_events()
    if outcome.end:
        return None
    if run.stop_between_turns is not None and run.stop_between_turns():
        translator.builder.stop_reason = "steered"  # the tools' results are in; the model is not asked again
        return None
    run._turns += 1
    # the last allowed turn goes without tools, so the model answers with what it has (as max_tool_calls)
    exhausted = outcome.tools_exhausted or run._turns >= run._max_turns
    call = translator.follow_up(turn, outcome.results, tools_exhausted=exhausted)
    if run.steps is not None:
        run.steps.step_done(step_record(list(in_history_order(turn, outcome.results)), tool_run, run._turns,
                                        exhausted))  # as follow_up sent them: a resumed turn sends them so
    log.info("tool_loop_turn", response_id=translator.response_id, turn=run._turns,
             server_calls=len(turn.server_calls))
    if translator.compact_threshold is not None and await asyncio.to_thread(translator.over_threshold):
        return translator.compact_loop() or call
    return call


async def _after_compaction(run: LoopingRun, translator: Translator) -> UpstreamRequest | None:
    """The summarising call ended: the turn it was made for, now compacted (the first turn, built again from the
    summary, or the tool loop's next turn); None when the call failed (``finish`` says why)."""
    if translator.end_compaction() is not None:
        return None
    run._pending_bytes += translator.take_events()
    first, run._first_pending = run._first_pending, None
    if first is None:
        return translator.turn_request()
    extra, exhausted = first
    return translator.build_first_request(extra, tools_exhausted=exhausted, loop=run._tool_run is not None)
