"""Generated Agents API requests through both doors (tests/support/fuzz_agents.py): bodies from the SDK's request
types, damaged or not, hostile ids and queries on every read, update and delete — each gets a status below 500, a
4xx in the OpenAI shape, and always an answer.

How many for each route: 60 for each of the 10 routes with a body (``BODIES``: the SDK's request types, the large
space) through either door; for each of the 26 reads and deletes, whose one shape (an id and a query) a few dozen
draws cover, 30 through the HTTP door, which checks them, and the first 20 of the same (derandomized) draws through
Envoy, which passes the Agents API to that door unread (envoy_config/routes.py ``_agents_routes``: the processor
off). Before, 60 for every route through each door: 4,320 requests a run, now 1,380 + 1,120. (Twenty draws through
Envoy were too few for the bodies: ``POST /v1/agents/automations`` met none it accepts.) ``scripts/fuzz`` runs the
same generator for as many as wanted."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_agents import BODIES, ROUTES, fresh_objects, run_agents

EXAMPLES = 60
READ_EXAMPLES = 30
THROUGH_ENVOY = 20


def examples(route: str, door: str) -> int:
    if route in BODIES:
        return EXAMPLES
    return THROUGH_ENVOY if door == "envoy" else READ_EXAMPLES


@pytest.mark.parametrize("route", ROUTES)
async def test_generated_agents_requests_get_openai_shaped_answers(base_url: str, door: str, route: str) -> None:
    objects = await asyncio.to_thread(fresh_objects, base_url)  # each route's own: an update may change the agent
    tally = await asyncio.to_thread(run_agents, Tally(base_url), route, examples(route, door), objects)
    assert tally.sent >= examples(route, door)
    assert not tally.statuses.keys() & set(range(500, 600)), tally.statuses
    if route in BODIES:
        assert tally.statuses[400] > 0, tally.statuses  # the checks were reached
        assert tally.statuses[200] + tally.statuses[202] > 0, tally.statuses  # and what comes after them
    if route.startswith("GET") and "{id}" not in route:
        assert tally.statuses[200] > 0, tally.statuses  # the real objects were reached
