"""What decides whether a background run is resumed (services/responses/background_resume.py), and from where: its kept
request, how often it was resumed, its recorded tool loop steps (services/responses/background_steps.py) and the stored
output they reach."""

from __future__ import annotations

import os

from responses_bridge.engine.sse import encode_event
from responses_bridge.sealing import Sealer
from responses_bridge.services.responses.background_resume import (
    CREDENTIAL_SEQUENCE,
    ResumePlan,
    plan_resume,
    sealed_request,
)
from responses_bridge.services.responses.background_steps import STEP_BASE, STEP_PURPOSE
from responses_bridge.services.responses.kept_authorization import KeptAuthorization

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


def test_server_calls_of_the_call_in_flight_never_started() -> None:
    """A turn is recorded before any of its server calls runs: items in the stream without one are the model
    call in flight's, whose calls never ran; that call is made again."""
    for tool in ("web_search_call", "file_search_call", "mcp_call", "code_interpreter_call", "shell_call"):
        plan = plan_resume([kept(), *stream("message", tool)], SEALER, 3)
        assert isinstance(plan, ResumePlan) and plan.steps.output == [] and plan.steps.interrupted is None


def test_calls_approved_at_set_up_are_never_run_twice() -> None:
    """An approved MCP call runs at set-up, before any turn is recorded: such a run is not resumed."""
    approving = dict(BODY, input=[{"type": "mcp_approval_response", "approval_request_id": "mcpr_1",
                                   "approve": True}])
    rows = [(-1, sealed_request(SEALER, approving, client_credentials=False)), *stream("mcp_call")]
    why = plan_resume(rows, SEALER, 3)
    assert isinstance(why, str) and "mcp_call" in why
    assert isinstance(plan_resume([rows[0], *stream("mcp_list_tools")], SEALER, 3), ResumePlan)


def done(sequence: int, index: int, item: dict) -> bytes:
    return frame(sequence, "response.output_item.done", output_index=index, item=item)


def record(n: int, kind: str, **fields: object) -> tuple[int, bytes]:
    return STEP_BASE - n, SEALER.seal(STEP_PURPOSE, {"kind": kind, **fields}).encode()


SEARCH = {"id": "ws_1", "type": "web_search_call", "status": "in_progress", "action": {"type": "search"}}
MCP = {"id": "mcp_1", "type": "mcp_call", "name": "slow", "server_label": "t", "arguments": "{}",
       "status": "in_progress"}


def turn(*calls: tuple[str, int, dict]) -> dict:
    return {"message": {"role": "assistant", "content": None}, "output": 1 + max(index for _, index, _ in calls),
            "calls_made": 0, "calls": [{"call_id": f"call_{index}", "name": name, "arguments": "{}",
                                        "output_index": index, "status": "completed", "item": item,
                                        "target": [item["type"].removesuffix("_call"), None, None, False]}
                                       for name, index, item in calls]}


def test_completed_steps_are_what_a_resume_starts_from() -> None:
    frames = [*(row for _, row in stream()), done(3, 0, dict(SEARCH, status="completed")),
              frame(4, "response.output_item.added", output_index=1, item={"type": "message"})]
    step = {"results": [["call_0", "found"]], "turns": 2, "exhausted": False, "calls_made": 1,
            "exhausted_sent": False, "output": 1, "usage": None}
    rows = [record(1, "step", **step), record(0, "turn", **turn(("web_search", 0, SEARCH))), kept(),
            *enumerate(frames)]
    plan = plan_resume(rows, SEALER, 3)
    assert isinstance(plan, ResumePlan) and plan.recorded == 2
    assert plan.steps.interrupted is None and [s["results"] for _, s in plan.steps.steps] == [[["call_0", "found"]]]
    assert plan.steps.output == [dict(SEARCH, status="completed")]  # the call in flight's message is not kept
    assert plan.steps.done == {0}


def test_an_interrupted_turn_is_settled_and_unknown_records_are_refused() -> None:
    frames = [*(row for _, row in stream()), frame(3, "response.output_item.added", output_index=0, item=MCP)]
    rows = [record(0, "turn", **turn(("mcp", 0, MCP))), kept(), *enumerate(frames)]
    plan = plan_resume(rows, SEALER, 3)
    assert isinstance(plan, ResumePlan) and plan.steps.interrupted is not None and plan.steps.done == set()
    assert "gap" in plan_resume([record(1, "turn", **turn(("mcp", 0, MCP))), *rows[1:]], SEALER, 3)  # type: ignore[operator]
    subagent = turn(("spawn_agent", 0, MCP))
    subagent["calls"][0]["target"][0] = "multi_agent"
    assert "multi_agent" in plan_resume([record(0, "turn", **subagent), *rows[1:]], SEALER, 3)  # type: ignore[operator]
    forged = (STEP_BASE, Sealer(os.urandom(32)).seal(STEP_PURPOSE, {"kind": "turn"}).encode())
    assert "could not be read" in plan_resume([forged, *rows[1:]], SEALER, 3)  # type: ignore[operator]


def test_what_cannot_be_resumed_says_why() -> None:
    assert "not kept" in plan_resume(stream("message"), SEALER, 3)  # type: ignore[operator]
    assert "credentials" in plan_resume([kept(client_credentials=True), *stream()], SEALER, 3)  # type: ignore[operator]
    other = Sealer(os.urandom(32))
    assert "could not be read" in plan_resume([kept(), *stream()], other, 3)  # type: ignore[operator]
    gap = [kept(), *stream()[:1], *stream()[2:]]
    assert "gap" in plan_resume(gap, SEALER, 3)  # type: ignore[operator]
    ended = [kept(), *stream(), (3, frame(3, "response.completed", response={}))]
    assert "already ended" in plan_resume(ended, SEALER, 3)  # type: ignore[operator]


def test_a_run_on_the_clients_credentials_is_resumed_with_the_ones_kept_and_only_with_them() -> None:
    """Kept sealed at ``CREDENTIAL_SEQUENCE`` (not counted as a resume), the client's ``Authorization`` is what the
    resumed run's calls carry; none kept, or kept under another key or purpose: not resumed, saying why."""
    keeper = KeptAuthorization(SEALER)
    credential = (CREDENTIAL_SEQUENCE, keeper.keep("Bearer sk-client").encode())  # type: ignore[union-attr]
    plan = plan_resume([kept(client_credentials=True), credential, *stream("message")], SEALER, 1, keeper)
    assert isinstance(plan, ResumePlan) and plan.authorization == "Bearer sk-client" and plan.resumes == 0
    assert isinstance(plan_resume([kept(), *stream()], SEALER, 3, keeper), ResumePlan)  # a configured key's run
    assert plan_resume([kept(), *stream()], SEALER, 3, keeper).authorization is None  # type: ignore[union-attr]
    for rows, given in (([kept(client_credentials=True), *stream()], keeper),  # none kept (opted out)
                        ([kept(client_credentials=True), credential, *stream()], None),  # nothing to open it with
                        ([kept(client_credentials=True), credential, *stream()], KeptAuthorization(Sealer(
                            os.urandom(32)))),  # another deployment's key
                        ([kept(client_credentials=True), (CREDENTIAL_SEQUENCE, SEALER.seal(
                            "background-request", "Bearer sk-client").encode()), *stream()], keeper)):
        assert "credentials, which were not kept" in plan_resume(rows, SEALER, 3, given)  # type: ignore[operator]
