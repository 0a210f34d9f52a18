"""What keeps automations (automations.py) from taking from everyone: the bounds of the
scheduler and of what it keeps.

- A tick fires at most ``tick_occurrences`` occurrences, dealt across tenants in turn (store/base_agents.py's
  ``due_automations``), ``concurrency`` of them at once: a tenant with thousands due delays another's by at most a
  tick, where oldest-first across everyone made a one-time automation wait behind every occurrence due before it.
- A tenant's automations fire at most ``tenant_per_minute`` occurrences in any minute, counted in the database
  across workers and replicas; one past it is claimed (fired once, as any) and its invocation ``failed`` with
  ``rate_limit_exceeded``. An automation whose schedule alone fires more often is a 400 when it is made or changed.
- An invocation refers to the version of its automation it fired (``_source_version``: a digest of the snapshot,
  kept once per automation and digest) instead of copying it, and its ``source`` is put back on read, as the SDK's
  ``AutomationInvocation`` has it: a 200 KiB automation fired every second grew the database by 200 KiB a second,
  now by the invocation's few hundred bytes. An automation keeps its ``invocations_kept`` newest invocations, none
  older than ``invocation_days``; the oldest go first, and with them the versions no invocation refers to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ....protocol.agents.automations import next_occurrence, public
from ....protocol.errors import invalid_request
from ....store.base_agents import AgentStore

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

WINDOW_SECONDS = 60
HORIZON_SECONDS = 600  # the span from a schedule's next occurrence where its busiest minute is looked for
RATE_ERROR = "rate_limit_exceeded"


@dataclass(frozen=True)
class AutomationBounds:
    """config/automations.py's settings, as the scheduler uses them."""

    tick_occurrences: int = 100
    concurrency: int = 16
    tenant_per_minute: int = 600
    invocations_kept: int = 100
    invocation_days: float = 30.0

    @classmethod
    def of(cls, settings: Any) -> AutomationBounds:
        return cls(settings.automation_tick_occurrences, settings.automation_concurrency,
                   settings.automation_tenant_per_minute, settings.automation_invocations_kept,
                   settings.automation_invocation_days)


def busiest_minute(trigger: CronTrigger, now: float, cap: int) -> int:
    """The most occurrences of ``trigger`` in any minute of the :data:`HORIZON_SECONDS` from its next one after
    ``now`` (counted up to ``cap + 1``: past that the answer is known)."""
    first = next_occurrence(trigger, now)
    if first is None:
        return 0
    times = [first]
    busiest = 1
    while busiest <= cap:
        after = next_occurrence(trigger, times[-1])
        if after is None or after - first > HORIZON_SECONDS:
            break
        times.append(after)
        while times[0] <= after - WINDOW_SECONDS:
            times.pop(0)
        busiest = max(busiest, len(times))
    return busiest


def check_rate(trigger: CronTrigger, now: float, per_minute: int) -> None:
    """A 400 naming ``expression`` when the schedule alone fires more than the tenant's rate allows. Occurrences
    fall on whole seconds, so no schedule fires more than :data:`WINDOW_SECONDS` times a minute: under a rate of at
    least that, nothing is counted (counting an every-second schedule's ten minutes took ~0.2 s of CPU)."""
    if per_minute < WINDOW_SECONDS and busiest_minute(trigger, now, per_minute) > per_minute:
        raise invalid_request(f"Invalid value for 'expression': it fires more than {per_minute} times a minute, "
                              "the most a project's automations may fire together here.", param="expression",
                              code="automation_rate_exceeded")


def over_rate(per_minute: int) -> dict[str, str]:
    """The ``error`` of an invocation the tenant's rate did not let through."""
    return {"code": RATE_ERROR, "message": f"Not delivered: this project's automations fired {per_minute} times in "
                                           "the last minute, the most they may."}


def version_of(automation: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The automation's snapshot as an invocation's ``source`` shows it, and its digest (the version's key)."""
    snapshot = public(automation)
    return hashlib.sha256(orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32], snapshot


async def with_sources(store: AgentStore, automation_id: str, records: list[dict[str, Any]], *,
                       tenant: str) -> list[dict[str, Any]]:
    """The invocations as the SDK's ``AutomationInvocation``: each one's ``source`` read from the version it refers
    to (one stored before versions carries its own)."""
    wanted = sorted({record["_source_version"] for record in records if "_source_version" in record})
    versions = await store.automation_versions(automation_id, wanted, tenant=tenant)
    shown = []
    for record in records:
        digest = record.get("_source_version")
        if digest is None:
            shown.append(record)
            continue
        if digest not in versions:  # forgotten with its version meanwhile (the sweep takes both)
            continue
        body = {key: value for key, value in record.items() if not key.startswith("_")}
        body["source"] = {"type": "automation", "automation": versions[digest]}
        shown.append(body)
    return shown
