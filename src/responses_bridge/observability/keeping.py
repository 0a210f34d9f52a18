"""Whether the running task is inside a kept turn (tracing.keep): one context variable, read by tracing.py (which
spans to make) and by kept_traces.py's sampler (which to record whatever the operator's sampler says), so that
neither of the two imports the other for it."""

from __future__ import annotations

from contextvars import ContextVar

KEEPING: ContextVar[bool] = ContextVar("responses_bridge_keeping", default=False)


def keeping_now() -> bool:
    """Inside :func:`~responses_bridge.observability.tracing.keep` (this task, or a task it started)."""
    return KEEPING.get()
