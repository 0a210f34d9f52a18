"""The Prometheus metrics of batches (``/v1/batches``) and of the idle capacity their lines wait for
(fairness/idle_capacity.py), served with the rest by ``/metrics`` (metrics.py's registry, the process's default).

The gate's counts are read when ``/metrics`` is scraped (metrics.py's :func:`~.metrics.pulled`), never pushed per
line: lines running, lines waiting for idle capacity, and the interactive requests in flight they give way to.
Lines are counted as they end, by outcome (``completed``: an answer in the output file, whatever its status code;
``failed``: a line of the error file); batches as they reach a status, by status. No tenant or batch label: tenant
names and batch ids are unbounded and not the metrics' business (the console shows them, by tenant).
"""

from __future__ import annotations

import weakref
from typing import Protocol

from prometheus_client import Counter, Gauge

from .metrics import pulled

BATCH_STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                  "cancelled")
"""The Batch object's statuses (the openai SDK's ``Batch.status``): the label values, all made at import."""

BATCHES = Counter("responses_bridge_batches_total",
                  "Batches that reached a status in this process, by status (validating: created; the terminal ones: "
                  "completed, failed, expired, cancelled)", ["status"])
BATCH_LINES = Counter("responses_bridge_batch_lines_total",
                      "Batch lines that ended in this process, by outcome (completed: an answer in the output file, "
                      "failed: a line of the error file)", ["outcome"])
BATCH_LINES_RUNNING = Gauge("responses_bridge_batch_lines_running", "Batch lines running now (holding a place of "
                            "RESPONSES_BRIDGE_BATCH_CONCURRENCY)", multiprocess_mode="livesum")
BATCH_LINES_WAITING = Gauge("responses_bridge_batch_lines_waiting",
                            "Batch lines waiting for idle capacity now: an interactive request in flight beyond "
                            "RESPONSES_BRIDGE_BATCH_INTERACTIVE_RESERVE, a shared pool waited for or at its headroom, "
                            "or the batch concurrency reached", multiprocess_mode="livesum")
INTERACTIVE_IN_FLIGHT = Gauge("responses_bridge_interactive_requests_in_flight",
                              "Interactive requests in flight now, either door and every tenant's (a background "
                              "response until its run ends, a WebSocket turn while it runs): what batch lines give "
                              "way to", multiprocess_mode="livesum")
_STATUS = {status: BATCHES.labels(status) for status in BATCH_STATUSES}
_LINE = {outcome: BATCH_LINES.labels(outcome) for outcome in ("completed", "failed")}


class _Gate(Protocol):
    running: int
    waiting: int

    @property
    def interactive(self) -> int: ...


_GATES: weakref.WeakSet[_Gate] = weakref.WeakSet()


def watch_gate(gate: _Gate) -> None:
    """Report ``gate``'s counts while it lives (a process has one; tests make several, each counted)."""
    _GATES.add(gate)


def batch_status(status: str) -> None:
    """A batch reached ``status`` (one of :data:`BATCH_STATUSES`)."""
    _STATUS[status].inc()


def line_ended(failed: bool) -> None:
    """A batch line ended: its answer written to the output file, or its error to the error file."""
    _LINE["failed" if failed else "completed"].inc()


pulled(BATCH_LINES_RUNNING, lambda: float(sum(gate.running for gate in list(_GATES))))
pulled(BATCH_LINES_WAITING, lambda: float(sum(gate.waiting for gate in list(_GATES))))
pulled(INTERACTIVE_IN_FLIGHT, lambda: float(sum(gate.interactive for gate in list(_GATES))))
