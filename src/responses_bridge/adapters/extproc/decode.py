"""Reading Envoy's messages without letting one that fails to decode end the stream cleanly.

protobuf refuses a ``string`` field whose bytes are not UTF-8 (``DecodeError: String field had bad UTF-8``), and a
client controls such bytes: the bootstrap copies request headers (the credentials, the request id, the trace
context) into the forwarded metadata, a ``Struct`` of strings, so ``traceparent: \\xe9`` arrives as a message that
cannot be decoded. Left to gRPC, that error ends the handler; a handler that then returns closes the stream with
OK, and Envoy (``failure_mode_allow: false`` covers only errors) sends the request on to the upstream with no key
checked. So the processor registers this deserializer instead of the generated one: a message that fails to
decode becomes an :class:`Undecodable` naming its phase (read from the wire's field numbers, which need no UTF-8),
and the servicer refuses the request with a 400 before anything reaches the upstream, or fails a response already
under way with its terminal bytes. Decoding a good message costs one function call more than the generated path.
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from ._pb.ext_proc_pb2 import ProcessingRequest
from .service import ExternalProcessorServicer, add_processor_handler

_PHASES = {field.number: field.name for field in ProcessingRequest.DESCRIPTOR.oneofs_by_name["request"].fields}


class Undecodable:
    """A message from Envoy that protobuf could not decode. ``phase`` is its ``request`` oneof's field name
    (``request_headers``, ``request_body``, ...), or None when even the wire's framing is broken."""

    __slots__ = ("phase",)

    def __init__(self, phase: str | None) -> None:
        self.phase = phase


def decode_request(data: bytes) -> ProcessingRequest | Undecodable:
    """gRPC's deserializer for ``Process``: the message, or what is known of one that does not decode."""
    try:
        return ProcessingRequest.FromString(data)
    except DecodeError:
        return Undecodable(_phase_of(data))


def _phase_of(data: bytes) -> str | None:
    """The phase from the top-level field numbers alone: parsed as an empty message, every field is unknown and
    kept as raw wire data, so no string in it is checked."""
    try:
        fields = UnknownFieldSet(empty_pb2.Empty.FromString(data))
    except DecodeError:
        return None
    for field in fields:
        phase = _PHASES.get(field.field_number)
        if phase is not None:
            return phase
    return None


def add_processor(servicer: ExternalProcessorServicer, server: grpc.aio.Server) -> None:
    """``add_ExternalProcessorServicer_to_server`` with :func:`decode_request` as the request deserializer."""
    add_processor_handler(servicer.Process, server, request_deserializer=decode_request)
