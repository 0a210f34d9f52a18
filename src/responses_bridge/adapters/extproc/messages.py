"""Builders for the ``ProcessingResponse`` messages the servicer sends to Envoy.

Messages are built by setting fields on one fresh message (no nested constructors, no copies of bodies beyond
the one protobuf makes). Replies that never change are built once and reused: a message is only read when
gRPC serializes it, so sharing one instance between streams is safe as long as nobody mutates it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ...envoy_config import (
    CREDENTIALS_NAMESPACE,
    IMMEDIATE_RESPONSE_DETAILS,
    ROUTE_KEY,
    ROUTE_NAMESPACE,
    ROUTE_OFFERED_KEY,
    ROUTE_TO_SIDECAR,
    TENANT_METADATA_KEY,
    UPSTREAM_HEADERS_NAMESPACE,
    UPSTREAM_KEY,
)
from ..pieces import PIECE_BYTES, joined_pieces
from ._pb.ext_proc_pb2 import (
    CommonResponse,
    HeaderMutation,
    HeaderValue,
    HeaderValueOption,
    HttpHeaders,
    ProcessingMode,
    ProcessingRequest,
    ProcessingResponse,
)

OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
STREAMED = ProcessingMode.STREAMED
BUFFERED = ProcessingMode.BUFFERED
FULL_DUPLEX_STREAMED = ProcessingMode.FULL_DUPLEX_STREAMED
CONTINUE_AND_REPLACE = CommonResponse.CONTINUE_AND_REPLACE

Headers = Iterable[tuple[str, str]]


def forwarded_authorization(request: ProcessingRequest) -> str | None:
    """The client's Authorization as the bootstrap's header_to_metadata filter forwards it (see envoy_config)."""
    metadata = request.metadata_context.filter_metadata
    if CREDENTIALS_NAMESPACE not in metadata:
        return None
    fields = metadata[CREDENTIALS_NAMESPACE].fields
    if "authorization" not in fields:
        return None
    return fields["authorization"].string_value or None


def forwarded_tenant(request: ProcessingRequest) -> str | None:
    """The tenant header Envoy set (``auth: header``), as the bootstrap forwards it (see envoy_config): read only
    after the bootstrap removed a client's own at the start of its filter chain."""
    metadata = request.metadata_context.filter_metadata
    if CREDENTIALS_NAMESPACE not in metadata:
        return None
    fields = metadata[CREDENTIALS_NAMESPACE].fields
    if TENANT_METADATA_KEY not in fields:
        return None
    return fields[TENANT_METADATA_KEY].string_value or None


def forwarded_headers(request: ProcessingRequest, names: Iterable[str]) -> dict[str, str]:
    """The request headers among ``names`` that the bootstrap copies into the forwarded metadata (the request id
    and the trace context: ``envoy_config.OBSERVED_HEADERS``)."""
    metadata = request.metadata_context.filter_metadata
    if CREDENTIALS_NAMESPACE not in metadata:
        return {}
    fields = metadata[CREDENTIALS_NAMESPACE].fields
    return {name: fields[name].string_value for name in names if name in fields}


def sidecar_route_offered(request: ProcessingRequest) -> bool:
    """Does the bootstrap route requests marked by :func:`route_to_sidecar` to the HTTP door (see envoy_config)?"""
    metadata = request.metadata_context.filter_metadata
    if ROUTE_NAMESPACE not in metadata:
        return False
    fields = metadata[ROUTE_NAMESPACE].fields
    return ROUTE_OFFERED_KEY in fields and fields[ROUTE_OFFERED_KEY].bool_value


def header_map(headers: HttpHeaders) -> dict[str, str]:
    """Envoy's headers as a dict of lower-case names (Envoy sends ``raw_value``; older ones ``value``)."""
    out: dict[str, str] = {}
    for header in headers.headers.headers:
        raw = header.raw_value
        out[header.key] = raw.decode("utf-8", "replace") if raw else header.value
    return out


def header_value(headers: HttpHeaders, name: str) -> str | None:
    """One header of Envoy's (a lower-case ``name``), as :func:`header_map` reads it, without making the dict."""
    for header in headers.headers.headers:
        if header.key == name:
            raw = header.raw_value
            return raw.decode("utf-8", "replace") if raw else header.value
    return None


def mutate(mutation: HeaderMutation, set_headers: Headers = (), remove: Iterable[str] = ()) -> None:
    """Each option made whole by one ``add`` (its header built with it): every request's rewrite and answer
    headers come here, and an option's fields set one attribute at a time cost a fifth more."""
    if set_headers:
        add = mutation.set_headers.add
        for key, value in set_headers:
            add(header=HeaderValue(key=key, raw_value=value.encode()), append_action=OVERWRITE)
    if remove:
        mutation.remove_headers.extend(remove)


def _continue(phase: str) -> ProcessingResponse:
    response = ProcessingResponse()
    getattr(response, phase).SetInParent()
    return response


# Replies that change nothing: built once.
CONTINUE_REQUEST_HEADERS = _continue("request_headers")
CONTINUE_REQUEST_BODY = _continue("request_body")
CONTINUE_RESPONSE_HEADERS = _continue("response_headers")
CONTINUE_RESPONSE_BODY = _continue("response_body")
CONTINUE_REQUEST_TRAILERS = _continue("request_trailers")
CONTINUE_RESPONSE_TRAILERS = _continue("response_trailers")

CONTINUE_BY_PHASE = {
    "request_headers": CONTINUE_REQUEST_HEADERS,
    "request_body": CONTINUE_REQUEST_BODY,
    "response_headers": CONTINUE_RESPONSE_HEADERS,
    "response_body": CONTINUE_RESPONSE_BODY,
    "request_trailers": CONTINUE_REQUEST_TRAILERS,
    "response_trailers": CONTINUE_RESPONSE_TRAILERS,
}

_EMPTY_BODY = ProcessingResponse()
_EMPTY_BODY.response_body.response.body_mutation.body = b""


def request_headers_reply(set_headers: Headers = (), remove: Iterable[str] = ()) -> ProcessingResponse:
    if not set_headers and not remove:
        return CONTINUE_REQUEST_HEADERS
    response = ProcessingResponse()
    mutate(response.request_headers.response.header_mutation, set_headers, remove)
    return response


def request_body_reply(body: bytes | None, set_headers: Headers, remove: Iterable[str],
                       upstream_headers: Mapping[str, str] | None = None) -> ProcessingResponse:
    """The request rewritten: new headers (``:path``, ``content-length``, ...) and the new body (None: unchanged).
    ``upstream_headers`` (the configured key's ``authorization``, the trace context) go in dynamic metadata, which
    the route turns into the upstream request's headers: a header mutation in this phase is not applied when the
    request headers were skipped."""
    response = ProcessingResponse()
    common = response.request_body.response
    mutate(common.header_mutation, set_headers, remove)
    if body is not None:
        common.body_mutation.body = body
    if upstream_headers:
        response.dynamic_metadata.update({UPSTREAM_HEADERS_NAMESPACE: upstream_headers})
    return response


def choose_upstream(response: ProcessingResponse, upstream: str) -> None:
    """Several upstreams: names the one this request goes to (dynamic metadata the route table matches, one route
    per upstream cluster, see envoy_config) and asks Envoy to pick the route again."""
    response.dynamic_metadata.update({ROUTE_NAMESPACE: {UPSTREAM_KEY: upstream}})
    common = response.request_body.response
    common.header_mutation.remove_headers.append(_ROUTE_MARK)  # a header mutation is what clears the cache
    common.clear_route_cache = True


def route_to_sidecar() -> ProcessingResponse:
    """The request goes on unchanged (no mutation: the original Responses body), marked with the routing metadata,
    and Envoy picks its route again: the bootstrap's route on that metadata sends it to the sidecar's HTTP door,
    which runs the tool loop and makes each model turn through Envoy's listener."""
    response = ProcessingResponse()
    response.dynamic_metadata.update({ROUTE_NAMESPACE: {ROUTE_KEY: ROUTE_TO_SIDECAR}})
    common = response.request_body.response
    # Envoy clears the route cache only for a reply that carries a header mutation. With the request headers
    # skipped, Envoy applies no header mutation in this phase any more (it logs that the headers are not
    # available): this one only asks for the new route, and means nothing if it ever were applied.
    common.header_mutation.remove_headers.append(_ROUTE_MARK)
    common.clear_route_cache = True
    return response


_ROUTE_MARK = "x-responses-bridge-route"


def response_headers_reply(mode: int | None, set_headers: Headers = (),
                           remove: Iterable[str] = ()) -> ProcessingResponse:
    """Headers reply; with a ``mode``, it also picks the body mode for the rest of the response (a bootstrap
    whose response body mode is NONE with ``allow_mode_override``)."""
    response = ProcessingResponse()
    if set_headers or remove:
        mutate(response.response_headers.response.header_mutation, set_headers, remove)
    else:
        response.response_headers.SetInParent()
    if mode is not None:
        response.mode_override.response_body_mode = mode
    return response


def response_headers_replace(body: bytes, set_headers: Headers, remove: Iterable[str] = ()) -> ProcessingResponse:
    """For a response without a body: headers and the whole body in the headers reply."""
    response = ProcessingResponse()
    common = response.response_headers.response
    common.status = CONTINUE_AND_REPLACE
    mutate(common.header_mutation, set_headers, remove)
    common.body_mutation.body = body
    return response


def response_body_reply(body: bytes) -> ProcessingResponse:
    """Replaces one response body chunk (``b""`` drops it: the raw upstream chunk never passes)."""
    if not body:
        return _EMPTY_BODY
    response = ProcessingResponse()
    response.response_body.response.body_mutation.body = body
    return response


def streamed_body(body: bytes, end_of_stream: bool) -> ProcessingResponse:
    """FULL_DUPLEX_STREAMED: bytes for the client, sent whenever the processor has them (not one reply per
    upstream chunk); ``end_of_stream`` ends the client's response there and then."""
    response = ProcessingResponse()
    streamed = response.response_body.response.body_mutation.streamed_response
    streamed.body = body
    streamed.end_of_stream = end_of_stream
    return response


def streamed_bodies(parts: Sequence[bytes], end_of_stream: bool) -> list[ProcessingResponse]:
    """:func:`streamed_body` for ``parts`` in order, as messages of at most ``PIECE_BYTES`` each (see
    adapters/pieces.py), never joined whole; a lone small part is one message, as with :func:`streamed_body`. A
    stream that can write for itself sends large bodies a message at a time instead (``StreamState.send_body``)."""
    if len(parts) == 1 and len(parts[0]) <= PIECE_BYTES:
        return [streamed_body(parts[0], end_of_stream)]
    bodies = list(joined_pieces(parts))
    return [streamed_body(body, end_of_stream and number == len(bodies) - 1) for number, body in enumerate(bodies)]


def response_body_final(body: bytes, set_headers: Headers, remove: Iterable[str] = ()) -> ProcessingResponse:
    """The whole buffered body replaced, with the headers that go with it (still unsent in BUFFERED mode)."""
    response = ProcessingResponse()
    common = response.response_body.response
    mutate(common.header_mutation, set_headers, remove)
    common.body_mutation.body = body
    return response


def immediate_response(status: int, body: bytes, content_type: str,
                       extra_headers: Headers = ()) -> ProcessingResponse:
    """Answers the client directly. ``details`` marks it as ours, so Envoy's ``local_reply_config`` (which
    reshapes Envoy's own error replies) leaves this body alone."""
    response = ProcessingResponse()
    immediate = response.immediate_response
    immediate.status.code = status
    mutate(immediate.headers, [("content-type", content_type), *extra_headers])
    immediate.body = body
    immediate.details = IMMEDIATE_RESPONSE_DETAILS
    return response
