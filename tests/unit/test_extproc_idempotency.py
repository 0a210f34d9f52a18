"""The ext_proc door and ``Idempotency-Key``: the HTTP door keeps the keys, so with Envoy's route to it such a request
goes there (the key forwarded with the body, or read from the request headers); without the route, a 400 naming the
door header — never a key silently not kept."""

from __future__ import annotations

import orjson

from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingRequest
from responses_bridge.runtime import Runtime
from tests.unit.test_extproc_multi_agent import _error, runtime  # noqa: F401 - the fixture
from tests.unit.test_extproc_servicer import REQUEST, new_stream, request_body


def _keyed(sidecar_route: bool) -> ProcessingRequest:
    message = request_body(REQUEST, sidecar_route=sidecar_route)
    message.metadata_context.filter_metadata["responses_bridge"].fields["idempotency-key"].string_value = "k1"
    return message


async def test_a_keyed_request_goes_to_the_http_door(runtime: Runtime) -> None:  # noqa: F811
    stream = new_stream(runtime)
    [reply] = await stream.handle(_keyed(sidecar_route=True))
    route = reply.dynamic_metadata.fields["responses_bridge.route"].struct_value.fields
    assert route["to"].string_value == "sidecar" and stream.routed and stream.run is None
    plain = new_stream(runtime)  # the same request without the key: translated here, as ever
    await plain.handle(request_body(REQUEST, sidecar_route=True))
    assert not plain.routed
    plain.held.release()


async def test_without_the_route_a_keyed_request_is_a_400_naming_the_door(runtime: Runtime) -> None:  # noqa: F811
    stream = new_stream(runtime)
    [reply] = await stream.handle(_keyed(sidecar_route=False))
    assert reply.WhichOneof("response") == "immediate_response" and reply.immediate_response.status.code == 400
    error = orjson.loads(reply.immediate_response.body)["error"]
    assert (error["param"], error["code"]) == ("Idempotency-Key", "http_door_required")
    # read from the request headers when the route sends them
    error = await _error(runtime, "/v1/responses", {"idempotency-key": "k2"}, REQUEST)
    assert (error["param"], error["code"]) == ("Idempotency-Key", "http_door_required")
