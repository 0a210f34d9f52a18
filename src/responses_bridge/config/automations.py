"""The bounds of the Agents API's automations (services/agents/automations/automations.py, automation_fairness.py): what
one scheduler tick fires and how, what one tenant's automations may fire a minute, and how long their invocations are
kept. A group of settings.py's :class:`Settings`, in a module of its own beside agent_sandbox.py."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class AutomationSettings(BaseSettings):
    """Automations take turns: each tenant's due occurrences are dealt in turn, so one tenant's backlog never
    holds another's back by more than a tick, and each tenant fires at most its rate."""

    automation_tick_occurrences: int = Field(default=100, ge=1, description=(
        "occurrences of automations one scheduler tick (each second) fires at most, dealt across the tenants "
        "that have some due in turn (each tenant's oldest first, one tenant's next only after every other "
        "tenant's first): a tenant's backlog delays another's occurrence by at most one tick while fewer tenants "
        "than this have some due"))
    automation_concurrency: int = Field(default=16, ge=1, description=(
        "occurrences a scheduler tick fires at once (each starts a session or delivers a message); the tick ends "
        "when all of its occurrences have"))
    automation_tenant_per_minute: int = Field(default=600, ge=1, description=(
        "occurrences one tenant's automations may fire in any minute, all of its automations together, across "
        "every worker and replica (counted in the database); past it an occurrence's invocation is `failed` "
        "with `rate_limit_exceeded`, and an automation whose schedule alone fires more often is a 400 at create "
        "or update"))
    automation_invocations_kept: int = Field(default=100, ge=1, description=(
        "invocations kept per automation, the newest; an older one is forgotten when a newer one is made"))
    automation_invocation_days: float = Field(default=30.0, gt=0, description=(
        "days an automation's invocation is kept at most; older ones are forgotten (checked each minute)"))
