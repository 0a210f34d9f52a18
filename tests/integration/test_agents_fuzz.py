"""Generated Agents API requests through both doors (tests/support/fuzz_agents.py): bodies from the SDK's request
types, damaged or not, hostile ids and queries on every read, update and delete — each gets a status below 500, a
4xx in the OpenAI shape, and always an answer.

How many for each route: 60 through the HTTP door, which checks them; through Envoy, which passes the Agents API
to that door unread (envoy_config/routes.py ``_agents_routes``: the processor off), 60 for each of the 10 routes
with a body (``BODIES``: twenty were too few for ``POST /v1/agents/automations`` to meet a body it accepts) and the
first 20 of the same (derandomized) draws for each of the 26 reads and deletes (an id and a query), enough to see
no hostile request turn into an Envoy-side failure. (30 through the HTTP door for the reads was tried: the module
then no longer listed automations by ``session_id``, which the later draws ask for.) Before, 60 for every route
through each door: 4,320 requests a run, now 2,160 + 1,120. ``scripts/fuzz`` runs the same generator for as many
as wanted."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_agents import BODIES, ROUTES, fresh_objects, run_agents

# Envoy hands these requests to the HTTP door unread (the Agents API: envoy_config/routes.py
# ``_agents_routes``, the processor off): on PostgreSQL its HTTP-door tests run the same store code
pytestmark = pytest.mark.store_via_http_door

EXAMPLES = 60
ENVOY_READS = 20


def examples(route: str, door: str) -> int:
    return ENVOY_READS if door == "envoy" and route not in BODIES else EXAMPLES


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
