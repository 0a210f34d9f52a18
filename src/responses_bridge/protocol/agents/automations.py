"""Automations of the Agents API (``client.beta.agents.automations``), their schedules and targets: what a request
may say and how the stored object reads, as the SDK's ``PeriodicAutomation`` / ``OneTimeAutomation`` and
``AutomationInvocation`` define them. No I/O: services/agents/automations/automations.py stores and fires them.

A periodic automation's ``expression`` is a cron expression read in its ``timezone`` (an IANA name): the standard
five fields (minute, hour, day of month, month, day of week with 0 or 7 for Sunday), or six with a leading seconds
field. Its occurrences are computed by APScheduler's cron trigger (a well-kept implementation of cron's calendar
arithmetic, daylight-saving changes included) rather than by hand; when both the day of month and the day of week
are restricted an occurrence must match both (APScheduler's reading), not either as in Vixie cron.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:  # imported by the first schedule read: a sidecar whose store holds no automation never does
    from apscheduler.triggers.cron import CronTrigger

from ..errors import APIError, invalid_request, not_found

MAX_NAME_CHARS = 256
MAX_EXPRESSION_CHARS = 256
PERIODIC_FIELDS = ("type", "name", "expression", "timezone", "target", "metadata")
ONCE_FIELDS = ("type", "name", "run_at", "target", "metadata")
UPDATE_FIELDS = ("name", "metadata", "target", "expression", "timezone", "run_at")
EXISTING_SESSION_FIELDS = ("type", "session_id", "instructions")
NEW_SESSION_FIELDS = ("type", "agent", "agent_id", "environment", "input", "metadata", "vault_ids")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMERIC_DAYS = re.compile(r"^(\*|\d+(?:-\d+)?)(?:/(\d+))?$")


def automation_not_found(automation_id: str) -> APIError:
    return not_found(f"No automation found with id '{automation_id}'.", param="automation_id")


def invocation_not_found(invocation_id: str) -> APIError:
    return not_found(f"No invocation found with id '{invocation_id}'.", param="invocation_id")


def check_name(value: Any, param: str = "name") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise invalid_request(f"Invalid value for '{param}': expected a non-empty string of at most "
                              f"{MAX_NAME_CHARS} characters.", param=param, code="invalid_value")
    return value


def check_run_at(value: Any, *, now: float, param: str = "run_at") -> int:
    """A one-time automation's occurrence: a Unix timestamp in seconds, in the future."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"Invalid type for '{param}': expected an integer (a Unix timestamp in seconds).",
                              param=param, code="invalid_type")
    if value <= now:
        raise invalid_request(f"Invalid value for '{param}': expected a time in the future.", param=param,
                              code="invalid_value")
    if value > 253402300799:  # 9999-12-31T23:59:59Z: what a datetime holds
        raise invalid_request(f"Invalid value for '{param}': too far in the future.", param=param,
                              code="invalid_value")
    return value


def schedule(expression: Any, timezone: Any) -> CronTrigger:
    """The trigger of a periodic automation; a 400 naming the field for an expression or timezone it cannot
    read."""
    if not isinstance(timezone, str) or not timezone:
        raise invalid_request("Invalid value for 'timezone': expected an IANA timezone name such as 'UTC'.",
                              param="timezone", code="invalid_value")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid_request(f"Invalid value for 'timezone': unknown timezone '{timezone}'.", param="timezone",
                              code="invalid_value") from None
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_CHARS:
        raise invalid_request("Invalid value for 'expression': expected a cron expression.", param="expression",
                              code="invalid_value")
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise invalid_request("Invalid value for 'expression': a cron expression has five fields (minute hour "
                              "day-of-month month day-of-week), or six with a leading seconds field.",
                              param="expression", code="invalid_value")
    second, minute, hour, day, month, weekday = fields
    from apscheduler.triggers.cron import CronTrigger

    try:
        trigger = CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                              day_of_week=_weekdays(weekday), timezone=zone)
    except ValueError as exc:
        raise invalid_request(f"Invalid value for 'expression': {exc}.", param="expression",
                              code="invalid_value") from None
    if next_occurrence(trigger, time.time()) is None:
        raise invalid_request("Invalid value for 'expression': it has no occurrence to come.", param="expression",
                              code="invalid_value")
    return trigger


def _weekdays(field: str) -> str:
    """Cron's day-of-week field (0 and 7 are Sunday) in APScheduler's words (its 3.x series counts 0 as Monday):
    numbers, ranges and steps become day names; names pass as they are."""
    names: list[str] = []
    for element in field.split(","):
        match = _NUMERIC_DAYS.match(element)
        if match is None or element == "*":
            names.append(element)
            continue
        span, step = match.group(1), int(match.group(2) or 1)
        first, last = (0, 6) if span == "*" else (int(span.split("-")[0]), int(span.split("-")[-1]))
        if "-" not in span and span != "*" and match.group(2):
            last = 6  # "n/s": from n to the end of the week
        if not 0 <= first <= 7 or not 0 <= last <= 7 or first > last or step < 1:
            raise ValueError(f"day of week '{element}' is out of range 0-7")
        names.extend(_WEEKDAYS[day] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(names))


def next_occurrence(trigger: CronTrigger, after: float) -> int | None:
    """The first occurrence strictly after ``after`` (Unix seconds); None when the expression has no more."""
    start = datetime.fromtimestamp(int(after) + 1, UTC)
    fire = trigger.get_next_fire_time(None, start)
    return int(fire.timestamp()) if fire is not None else None


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The stored automation as the SDK's ``Automation``: without the scheduler's own ``_next_at``."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


def invocation(invocation_id: str, automation: dict[str, Any], scheduled_at: int) -> dict[str, Any]:
    """A scheduled invocation, ``queued`` until its session exists (an existing session's: until its input is
    delivered)."""
    return {"id": invocation_id, "object": "agent.automation.invocation", "automation_id": automation["id"],
            "created_at": int(time.time()), "error": None, "scheduled_at": scheduled_at, "session_id": None,
            "skip_reason": None, "source": {"type": "automation", "automation": public(automation)},
            "status": "queued"}
