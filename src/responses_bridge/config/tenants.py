"""What each tenant may use: limits and retention, as configured (``tenants:`` in the config file).

A tenant named under ``tenants`` gets its own values; every other tenant, and any value a named tenant leaves
unset, gets the defaults (``RESPONSES_BRIDGE_TENANT_*`` and ``RESPONSES_BRIDGE_RETENTION_DAYS``). None means no
limit (or, for retention, keep until deleted).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TenantPolicy(BaseModel):
    """One tenant's limits and retention."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent_requests: int | None = Field(default=None, ge=1, description=(
        "requests in flight at once on one bridge process; more get 429 with Retry-After"))
    max_request_bytes: int | None = Field(default=None, ge=1, description="one request body, in bytes (413 over it)")
    max_websocket_connections: int | None = Field(default=None, ge=1, description=(
        "WebSocket mode connections open at once on one bridge process; one more is refused before the upgrade "
        "(429 with Retry-After)"))
    max_stored_bytes: int | None = Field(default=None, ge=0, description=(
        "bytes the tenant may keep: its files (and so the vector stores built from them) and its code "
        "interpreter container files together"))
    max_containers: int | None = Field(default=None, ge=0, description=(
        "live code interpreter containers the tenant may keep (its container files count in max_stored_bytes)"))
    max_sandboxes: int | None = Field(default=None, ge=1, description=(
        "code interpreter calls the tenant may run at once on one process (the rest wait for a slot within their "
        "time limit); none: a fair share of the slots"))
    retention_days: float | None = Field(default=None, gt=0, description=(
        "stored responses and conversations older than this are purged in the background (OpenAI keeps 30)"))

    def over(self, defaults: TenantPolicy) -> TenantPolicy:
        """This policy with every unset value taken from ``defaults``."""
        return TenantPolicy(**{name: getattr(self, name) if getattr(self, name) is not None
                               else getattr(defaults, name) for name in TenantPolicy.model_fields})
