"""The ext_proc door and the multi-agent beta: with Envoy's route to the HTTP door the request goes there, as a
request with server-side tools does, the processor's hold on the body's memory given back as it hands it off; without
it, a 400 that says so (on the beta surface) or that names what the
request lacks (off it) — never a translation that drops the field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingRequest
from responses_bridge.config.settings import Settings
from responses_bridge.runtime import Runtime
from responses_bridge.store import SQLiteResponseStore
from tests.support.runtime import runtime_over
from tests.unit.test_extproc_servicer import REQUEST, new_stream, request_body

BETA_PATH = "/v1/responses?beta=true"
MULTI_AGENT = {**REQUEST, "multi_agent": {"enabled": True}}


@pytest.fixture
async def runtime(store: SQLiteResponseStore) -> Runtime:
    return runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None), store=store)


def _headers(path: str, extra: dict[str, str]) -> ProcessingRequest:
    message = ProcessingRequest()
    for key, value in {":method": "POST", ":path": path, **extra}.items():
        header = message.request_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()
    return message


async def _error(runtime: Runtime, path: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    stream = new_stream(runtime)
    await stream.handle(_headers(path, headers))
    [reply] = await stream.handle(request_body(body))
    assert reply.WhichOneof("response") == "immediate_response" and not stream.routed
    assert reply.immediate_response.status.code == 400
    return orjson.loads(reply.immediate_response.body)["error"]


async def test_with_the_route_to_the_http_door_the_request_goes_there(runtime: Runtime) -> None:
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body(MULTI_AGENT, sidecar_route=True))
    route = reply.dynamic_metadata.fields["responses_bridge.route"].struct_value.fields
    assert route["to"].string_value == "sidecar" and stream.routed and stream.run is None


async def test_the_body_it_held_is_given_back_before_the_hand_off(store: SQLiteResponseStore) -> None:
    """The HTTP door that runs the tree reserves its own share of the memory budget: the processor's hold on the
    body ends as it hands the request off, not when Envoy's stream to it ends (after the whole tree ran)."""
    runtime = runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None,
                                             memory_budget_bytes=64 << 20), store=store)
    translated = new_stream(runtime)  # a request this door runs: its body held until its stream ends
    await translated.handle(request_body(REQUEST, sidecar_route=True))
    assert not translated.routed and runtime.memory.held > 0
    translated.held.release()
    assert runtime.memory.held == 0
    handed = new_stream(runtime)
    await handed.handle(request_body(MULTI_AGENT, sidecar_route=True))
    assert handed.routed and runtime.memory.held == 0


async def test_without_the_route_a_beta_request_is_a_400_naming_the_missing_door(
        runtime: Runtime) -> None:
    error = await _error(runtime, BETA_PATH, {"openai-beta": "responses_multi_agent=v1"}, MULTI_AGENT)
    assert (error["param"], error["code"]) == ("multi_agent", "http_door_required")
    assert "'x-responses-bridge-door: http'" in error["message"]


@pytest.mark.parametrize(("path", "headers", "lacks"), [
    ("/v1/responses", {"openai-beta": "responses_multi_agent=v1"}, "lacks the query '?beta=true')"),
    (BETA_PATH, {}, "lacks the header 'openai-beta: responses_multi_agent=v1'"),
])
async def test_off_the_beta_surface_it_is_a_400_saying_what_is_missing(
        runtime: Runtime, path: str, headers: dict[str, str], lacks: str) -> None:
    error = await _error(runtime, path, headers, MULTI_AGENT)
    assert (error["param"], error["code"]) == ("multi_agent", "unknown_parameter") and lacks in error["message"]
