"""Generated Agents API requests, 60 for each route, through both doors (tests/support/fuzz_agents.py): bodies from
the SDK's request types, damaged or not, hostile ids and queries on every read, update and delete — each gets a
status below 500, a 4xx in the OpenAI shape, and always an answer."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_agents import BODIES, ROUTES, fresh_objects, run_agents

EXAMPLES = 60


@pytest.mark.parametrize("route", ROUTES)
async def test_generated_agents_requests_get_openai_shaped_answers(base_url: str, route: str) -> None:
    objects = await asyncio.to_thread(fresh_objects, base_url)  # each route's own: an update may change the agent
    tally = await asyncio.to_thread(run_agents, Tally(base_url), route, EXAMPLES, objects)
    assert tally.sent >= EXAMPLES
    assert not tally.statuses.keys() & set(range(500, 600)), tally.statuses
    if route in BODIES:
        assert tally.statuses[400] > 0, tally.statuses  # the checks were reached
        assert tally.statuses[200] + tally.statuses[202] > 0, tally.statuses  # and what comes after them
    if route.startswith("GET") and "{id}" not in route:
        assert tally.statuses[200] > 0, tally.statuses  # the real objects were reached
