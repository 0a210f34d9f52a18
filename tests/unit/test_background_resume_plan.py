"""What decides whether a background run is resumed (services/background_resume.py): its kept request, how often
it was resumed, and whether its stream shows a server-side tool step (never run twice)."""

from __future__ import annotations

import os

from responses_bridge.engine.sse import encode_event
from responses_bridge.sealing import Sealer
from responses_bridge.services.background_resume import ResumePlan, plan_resume, sealed_request

SEALER = Sealer(os.urandom(32))
BODY = {"model": "m", "input": "hi", "background": True}


def frame(sequence: int, kind: str, **fields: object) -> bytes:
    return encode_event({"type": kind, "sequence_number": sequence, **fields})


def stream(*items: str) -> list[tuple[int, bytes]]:
    frames = [frame(0, "response.created"), frame(1, "response.queued"), frame(2, "response.in_progress")]
    for item in items:
        frames.append(frame(len(frames), "response.output_item.added", output_index=0, item={"type": item}))
    return list(enumerate(frames))


def kept(**flags: bool) -> tuple[int, bytes]:
    return -1, sealed_request(SEALER, BODY, client_credentials=flags.get("client_credentials", False))


def test_a_first_turn_run_is_resumed_from_its_whole_stream() -> None:
    rows = [kept(), *stream("reasoning", "message")]
    plan = plan_resume(rows, SEALER, 3)
    assert isinstance(plan, ResumePlan)
    assert plan.body == BODY and plan.resumes == 0 and plan.marker == -2
    assert plan.frames == [row for _, row in rows[1:]]


def test_resumes_are_counted_and_bounded() -> None:
    rows = [(-3, b""), (-2, b""), kept(), *stream("message")]
    plan = plan_resume(rows, SEALER, 3)
    assert isinstance(plan, ResumePlan) and plan.resumes == 2 and plan.marker == -4
    assert plan_resume(rows, SEALER, 2) == "it was resumed 2 times already and did not finish (the limit is 2)"


def test_a_server_side_tool_step_is_never_run_twice() -> None:
    for tool in ("web_search_call", "file_search_call", "mcp_call", "code_interpreter_call", "shell_call"):
        why = plan_resume([kept(), *stream("message", tool)], SEALER, 3)
        assert isinstance(why, str) and tool in why


def test_what_cannot_be_resumed_says_why() -> None:
    assert "not kept" in plan_resume(stream("message"), SEALER, 3)  # type: ignore[operator]
    assert "credentials" in plan_resume([kept(client_credentials=True), *stream()], SEALER, 3)  # type: ignore[operator]
    other = Sealer(os.urandom(32))
    assert "could not be read" in plan_resume([kept(), *stream()], other, 3)  # type: ignore[operator]
    gap = [kept(), *stream()[:1], *stream()[2:]]
    assert "gap" in plan_resume(gap, SEALER, 3)  # type: ignore[operator]
    ended = [kept(), *stream(), (3, frame(3, "response.completed", response={}))]
    assert "already ended" in plan_resume(ended, SEALER, 3)  # type: ignore[operator]
