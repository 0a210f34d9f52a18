"""Which stored logs say their run had ended (services/responses/background_finish.py ``logged_end``): only a last frame
of the stream that is a terminal event for that response, in the status its type names; the run's own records (rows
below 0) are not its stream."""

from __future__ import annotations

from responses_bridge.engine.sse import encode_event
from responses_bridge.services.responses.background_finish import logged_end

ID = "resp_1"


def frame(kind: str, sequence: int, **response: object) -> bytes:
    return encode_event({"type": kind, "sequence_number": sequence, "response": {"id": ID, **response}})


def test_a_stream_ending_with_its_terminal_event_gives_that_response() -> None:
    rows = [(-1, b"sealed"), (0, frame("response.created", 0, status="queued")),
            (1, frame("response.completed", 1, status="completed", output=[{"type": "message"}])),
            (-(2**20), b"step record")]
    assert logged_end(rows, ID) == {"id": ID, "status": "completed", "output": [{"type": "message"}]}
    failed = [(0, frame("response.failed", 0, status="failed", error={"code": "server_error"}))]
    assert (logged_end(failed, ID) or {})["status"] == "failed"


def test_an_unended_foreign_or_inconsistent_stream_gives_nothing() -> None:
    assert logged_end([], ID) is None
    assert logged_end([(-1, b"sealed")], ID) is None
    assert logged_end([(0, frame("response.in_progress", 0, status="in_progress"))], ID) is None
    assert logged_end([(0, frame("response.completed", 0, status="completed"))], "resp_other") is None
    assert logged_end([(0, frame("response.completed", 0, status="failed"))], ID) is None  # type and status differ
    assert logged_end([(0, b"event: response.completed\ndata: {not json\n\n")], ID) is None
