"""The ext_proc door: Envoy's External Processor protocol over ``grpc.aio``."""

from .server import start_extproc_server

__all__ = ["start_extproc_server"]
