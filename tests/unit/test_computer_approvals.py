"""The client's answer to a desktop's approval request, checked strictly (a 400 naming the field, never quoting a
value), kept without its values (the turn's record, the Idempotency-Key's digest), and the wait's bookkeeping:
a computer call's requests are done together once none awaits the client."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from responses_bridge.protocol.agents.computer_approvals import check_against, redacted_body, result_item
from responses_bridge.protocol.agents.inputs import input_event
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.agents.session_waiting import keep_wait, restored
from responses_bridge.services.agents.tool_calls import ToolCalls
from responses_bridge.services.agents.turn_queue import QueuedTurn

SECRET = "pw-unit-Zq8"
EVENT = "agent.session.input.computer_use_approval_request_result"
FORM = {"type": "browser_authentication", "credential_origin": "http://127.0.0.1:1", "options": [], "reason": "r",
        "fields": [{"id": "user", "label": "User", "required": False, "type": "email"},
                   {"id": "password", "label": "Password", "required": True, "type": "password"}]}


def _submit(*fields: Any, **extra: Any) -> dict[str, Any]:
    return {"type": EVENT, "request_id": "cuareq_1",
            "response": {"type": "browser_authentication", "action": "submit", "fields": list(fields), **extra}}


def _refused(event: Any) -> APIError:
    with pytest.raises(APIError) as caught:
        input_event(event, "events[0]")
    assert caught.value.status == 400
    assert SECRET not in caught.value.message
    return caught.value


@pytest.mark.parametrize(("event", "param"), [
    ({"type": EVENT, "response": {"type": "browser_origin_access", "decision": "approve"}}, "events[0].request_id"),
    ({"type": EVENT, "request_id": "r"}, "events[0].response"),
    ({"type": EVENT, "request_id": "r", "response": {"type": "browser_origin_access", "decision": "yes"}},
     "events[0].response.decision"),
    ({"type": EVENT, "request_id": "r", "response": {"type": "origin", "decision": "approve"}},
     "events[0].response.type"),
    ({"type": EVENT, "request_id": "r", "response": {"type": "browser_origin_access", "decision": "deny", "x": 1}},
     "events[0].response.x"),
    ({"type": EVENT, "request_id": "r", "response": {"type": "browser_authentication", "action": "fill"}},
     "events[0].response.action"),
    ({"type": EVENT, "request_id": "r", "response": {"type": "browser_authentication", "action": "submit"}},
     "events[0].response.fields"),
    (_submit({"field_id": "password", "value": SECRET, "extra": SECRET}), "events[0].response.fields[0].extra"),
    (_submit({"field_id": "password"}), "events[0].response.fields[0].value"),
    (_submit({"field_id": "password", "value": 1}), "events[0].response.fields[0].value"),
    (_submit({"field_id": "password", "value": SECRET}, {"field_id": "password", "value": SECRET}),
     "events[0].response.fields[1].field_id"),
    (_submit(*[{"field_id": f"f{n}", "value": SECRET} for n in range(7)]), "events[0].response.fields"),
    (_submit({"field_id": "password", "value": SECRET * 20_000}), "events[0].response.fields"),
    (_submit({"field_id": "password", "value": SECRET}, selected_option=5), "events[0].response.selected_option"),
])
def test_a_bad_answer_is_a_400_naming_the_field_never_its_value(event: dict[str, Any], param: str) -> None:
    assert _refused(event).param == param


def test_an_answer_is_checked_against_its_request() -> None:
    request = {"id": "cuareq_1", "turn_id": "turn_1", "request": FORM, "computer": {"call_id": "c"}}
    kind, answer = input_event(_submit({"field_id": "password", "value": SECRET}), "events[2]")
    assert kind == "computer_approval"
    check_against(request, answer)
    for fields, param in (([{"field_id": "nope", "value": SECRET}], "events[2].response.fields[0].field_id"),
                          ([{"field_id": "user", "value": SECRET}], "events[2].response.fields"),
                          ([{"field_id": "password", "value": ""}], "events[2].response.fields")):
        _, wrong = input_event({**_submit(*fields)}, "events[2]")
        with pytest.raises(APIError) as caught:
            check_against(request, wrong)
        assert caught.value.param == param and SECRET not in caught.value.message
    _, origin = input_event({"type": EVENT, "request_id": "cuareq_1",
                             "response": {"type": "browser_origin_access", "decision": "approve"}}, "events[0]")
    with pytest.raises(APIError) as caught:
        check_against(request, origin)
    assert caught.value.param == "events[0].response.type"


def test_what_is_kept_of_a_submission_holds_no_value() -> None:
    body = {"events": [_submit({"field_id": "password", "value": SECRET})]}
    kept = redacted_body(body)
    assert SECRET not in orjson.dumps(kept).decode() and SECRET in orjson.dumps(body).decode()
    assert kept["events"][0]["response"]["fields"] == [{"field_id": "password", "value": "[redacted]"}]
    plain = {"events": [{"type": "agent.session.input.cancel"}]}
    assert redacted_body(plain) is plain

    request = {"id": "cuareq_1", "turn_id": "turn_1", "request": FORM, "computer": {"call_id": "c", "said": []}}
    entry = QueuedTurn({"id": "turn_1"}, [], None)
    entry.calls.asked(request)
    _, answer = input_event(_submit({"field_id": "password", "value": SECRET}), "events[0]")
    assert entry.calls.decide_computer("cuareq_1", answer) == request
    assert entry.calls.secrets == {"cuareq_1": {"password": SECRET}}
    item = result_item("cuar_1", request, answer)
    assert item["response"] == {"type": "browser_authentication", "action": "submit", "selected_option": None}
    keep_wait(entry)
    assert SECRET not in orjson.dumps(entry.turn).decode()
    again = restored(entry.turn)  # what a restarted process finds: the decision, not its values
    assert again is not None and again.calls.secrets == {} and again.calls.ready()[0]["answer"]["action"] == "submit"


def test_a_calls_requests_are_done_together_once_none_awaits_the_client() -> None:
    calls = ToolCalls()
    for request_id, call_id in (("a", "c1"), ("b", "c1"), ("c", "c2")):
        calls.asked({"id": request_id, "turn_id": "t", "computer": {"call_id": call_id},
                     "request": {"type": "browser_origin_access", "origin": f"http://{request_id}.test"}})
    approve = {"type": "browser_origin_access", "decision": "approve", "request_id": "x", "param": "p"}
    calls.decide_computer("a", approve)
    assert calls.ready() == [] and calls.waiting  # b, of the same call, still awaits the client
    calls.decide_computer("c", approve)
    assert [request["id"] for request in calls.ready()] == ["c"]
    calls.decide_computer("b", approve)
    assert [request["id"] for request in calls.ready()] == ["a", "b"]
    assert [action["type"] for action in calls.required_actions()] == []
    with pytest.raises(APIError) as caught:  # an MCP decision is not taken for a desktop's request, nor the reverse
        ToolCalls.decide(calls, "a", "approve")
    assert caught.value.param == "request_id"
    with pytest.raises(APIError):
        calls.computer_request("a")
