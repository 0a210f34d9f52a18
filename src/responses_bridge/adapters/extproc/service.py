"""The ExternalProcessor gRPC service at Envoy's method path, over the project's own ext_proc messages.

Envoy calls ``/envoy.service.ext_proc.v3.ExternalProcessor/Process``. Our messages live in a private proto package
(protos/ext_proc.proto: Envoy's field numbers under names no other package registers), so grpcio-tools' service
module would carry the private path; this module registers the handler and builds the client call for Envoy's
path by hand, with the same serializers the generated module would use. Its names are the generated module's
(``ExternalProcessorServicer``, ``add_ExternalProcessorServicer_to_server``, ``ExternalProcessorStub``), so code
written against Envoy's published stubs reads the same. The sidecar itself registers through
:func:`~.decode.add_processor`, which swaps in a deserializer that survives a message that does not decode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ...envoy_config.names import EXTPROC_SERVICE as SERVICE  # Envoy's service name (the health service's too)
from ._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse

PROCESS = "Process"
PROCESS_PATH = f"/{SERVICE}/{PROCESS}"
"""The method Envoy's ext_proc filter calls (its ``grpc_service``), exactly as Envoy's API names it."""


class ExternalProcessorServicer:
    """The service's one method, a bidirectional stream; a subclass overrides :meth:`Process`."""

    async def Process(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


def add_processor_handler(process: Callable[..., Any], server: grpc.aio.Server | grpc.Server,
                          request_deserializer: Callable[[bytes], Any] = ProcessingRequest.FromString) -> None:
    """Registers ``process`` as the handler of :data:`PROCESS_PATH`."""
    handler = grpc.stream_stream_rpc_method_handler(
        process, request_deserializer=request_deserializer,
        response_serializer=ProcessingResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {PROCESS: handler}),))


def add_ExternalProcessorServicer_to_server(servicer: ExternalProcessorServicer,
                                            server: grpc.aio.Server | grpc.Server) -> None:
    """As grpcio-tools' generated function: the servicer's ``Process`` at Envoy's path, generated deserializer."""
    add_processor_handler(servicer.Process, server)


class ExternalProcessorStub:
    """The client side (what Envoy is to the sidecar), as grpcio-tools' generated stub: ``stub.Process()`` opens
    one stream of :class:`ProcessingRequest` out and :class:`ProcessingResponse` back."""

    def __init__(self, channel: grpc.aio.Channel | grpc.Channel) -> None:
        self.Process = channel.stream_stream(
            PROCESS_PATH, request_serializer=ProcessingRequest.SerializeToString,
            response_deserializer=ProcessingResponse.FromString)
