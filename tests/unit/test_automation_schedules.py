"""Periodic automations' cron expressions (protocol/agents/automations.py): cron's own day-of-week numbers (0 and 7 are
Sunday, where APScheduler's 3.x series counts 0 as Monday), the optional seconds field, timezones, and the 400s."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from responses_bridge.protocol.agents.automations import next_occurrence, schedule
from responses_bridge.protocol.errors import APIError

PARIS = ZoneInfo("Europe/Paris")


def at(expression: str, after: datetime, timezone: str = "Europe/Paris") -> datetime:
    found = next_occurrence(schedule(expression, timezone), after.timestamp())
    assert found is not None
    return datetime.fromtimestamp(found, ZoneInfo(timezone))


def test_cron_weekdays_count_sunday_as_zero() -> None:
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=PARIS)
    assert at("0 9 * * 0", wednesday) == datetime(2026, 11, 29, 9, 0, tzinfo=PARIS)  # a Sunday
    assert at("0 9 * * 7", wednesday) == datetime(2026, 11, 29, 9, 0, tzinfo=PARIS)
    assert at("0 9 * * 1-5", wednesday) == datetime(2026, 11, 26, 9, 0, tzinfo=PARIS)  # Thursday
    assert at("0 9 * * 6", wednesday) == datetime(2026, 11, 28, 9, 0, tzinfo=PARIS)  # Saturday
    assert at("0 9 * * */3", wednesday) == datetime(2026, 11, 28, 9, 0, tzinfo=PARIS)  # Sun, Wed, Sat: Saturday


def test_seconds_field_and_daylight_saving() -> None:
    noon = datetime(2026, 11, 25, 12, 0, 0, tzinfo=PARIS)
    assert at("*/15 * * * * *", noon) == datetime(2026, 11, 25, 12, 0, 15, tzinfo=PARIS)
    assert at("0 12 * * *", noon, "UTC") == datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("UTC"))  # 11:00 UTC
    # 02:30 does not exist in Paris on 29 March 2026 (clocks go from 02:00 to 03:00)
    assert at("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=PARIS)) == datetime(2026, 3, 29, 3, 30, tzinfo=PARIS)


@pytest.mark.parametrize(("expression", "timezone", "param"), [
    ("* * * *", "UTC", "expression"), ("60 * * * *", "UTC", "expression"), ("* * * * 8", "UTC", "expression"),
    ("* * * * 5-2", "UTC", "expression"), ("0 0 30 2 *", "UTC", "expression"), ("* * * * *", "Nowhere/City",
                                                                              "timezone"),
    ("* * * * *", "", "timezone"), (5, "UTC", "expression")])
def test_what_is_refused(expression: object, timezone: str, param: str) -> None:
    with pytest.raises(APIError) as info:
        schedule(expression, timezone)
    assert info.value.status == 400 and info.value.param == param
