"""Logs (``logs``), Prometheus metrics (``metrics``) and OpenTelemetry traces (``tracing``) of both doors.

Imports only the leaves (the extras' errors, the masking of credentials): every room may use it.
"""

from __future__ import annotations

from .logs import configure_logging

__all__ = ["configure_logging"]
