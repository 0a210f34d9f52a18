"""Is this process fit to take new work? Asked by ``GET /health/ready`` and the gRPC health service.

Liveness (the process answers) says nothing about the store: a writer stuck behind one huge statement used to leave
``/health`` at 200 while every stored request queued for minutes. Readiness is honest about it: the store must be
open at the schema this code expects, no write may have been waiting longer than ``store_stall_seconds``, and the
process must not be draining for shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..store.base import ResponseStore


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: dict[str, dict[str, Any]]  # name -> {"ok": bool, details}

    @property
    def ready(self) -> bool:
        return all(check["ok"] for check in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check["ok"]]

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not_ready", "failed": self.failed, "checks": self.checks}


def check_readiness(store: ResponseStore, *, stall_limit_seconds: float, draining: bool) -> Readiness:
    is_open = bool(store.is_open)
    stall = round(store.write_stall_seconds(), 3) if is_open else 0.0
    return Readiness({
        "store_open": {"ok": is_open},
        "store_writes": {"ok": is_open and stall <= stall_limit_seconds, "stall_seconds": stall,
                         "limit_seconds": stall_limit_seconds, "queue_depth": store.write_queue_depth},
        "not_draining": {"ok": not draining},
    })
