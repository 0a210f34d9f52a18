"""Generated Skills API requests through both doors (tests/support/fuzz_skills.py): hostile multipart forms, hostile
zips, ids, versions, bodies and queries get a status below 500, 4xx in the OpenAI shape, and always an answer.

How many for each route: 300 through the HTTP door, which checks them (100 for the nine routes that are not
uploads was tried: the module then no longer reached a version's delete, an unknown default version or an unknown
version's 404 — the draws past the hundredth find them); through Envoy, which streams the Skills API to that door
unread (envoy_config/routes.py ``_files_routes``: the processor off), the first 60 of the same (derandomized)
draws, enough to see no hostile request turn into an Envoy-side failure. Before, 300 for every route through each
door: 6,600 requests a run, now 3,300 + 660. ``scripts/fuzz`` runs the same generator for as many as wanted."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_skills import ROUTES, fresh_skills, run_skills

# Envoy hands these requests to the HTTP door unread (the Skills and Files APIs: envoy_config/routes.py
# ``_files_routes``, the processor off): on PostgreSQL its HTTP-door tests run the same store code
pytestmark = pytest.mark.store_via_http_door

EXAMPLES = 300
THROUGH_ENVOY = 60


def examples(door: str) -> int:
    return THROUGH_ENVOY if door == "envoy" else EXAMPLES


@pytest.mark.parametrize("route", ROUTES)
async def test_generated_skills_requests_get_openai_shaped_answers(base_url: str, door: str, route: str) -> None:
    ids = await asyncio.to_thread(fresh_skills, base_url)
    tally = await asyncio.to_thread(run_skills, Tally(base_url), route, examples(door), lambda: ids)
    assert tally.sent >= examples(door)
    assert not tally.statuses.keys() & set(range(500, 600)), tally.statuses
    assert tally.statuses[404] + tally.statuses[400] > 0, tally.statuses
    if route.startswith("GET") or route.startswith("POST /v1/skills ") or route == "POST /v1/skills":
        assert tally.statuses[200] > 0, tally.statuses  # the real skills were reached, some uploads kept
