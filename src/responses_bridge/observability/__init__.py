"""Logs (``logs``), Prometheus metrics (``metrics``) and OpenTelemetry traces (``tracing``) of both doors."""

from __future__ import annotations

from .logs import configure_logging

__all__ = ["configure_logging"]
