"""Generated Skills API requests through both doors (tests/support/fuzz_skills.py): hostile multipart forms, hostile
zips, ids, versions, bodies and queries get a status below 500, 4xx in the OpenAI shape, and always an answer.

How many for each route: through the HTTP door, which checks them, 300 for each of the two upload routes (``POST
/v1/skills``, ``POST /v1/skills/{id}/versions``), whose multipart forms and zips are the large space, and 100 for
each of the other nine, whose one shape (an id, a version, a query or a small JSON body) a hundred draws cover;
through Envoy, which streams the Skills API to that door unread (envoy_config/routes.py ``_files_routes``: the
processor off), the first fifth of the same (derandomized) draws, enough to see no hostile request turn into an
Envoy-side failure. Before, 300 for every route through each door: 6,600 requests a run, now 1,500 + 300.
``scripts/fuzz`` runs the same generator for as many as wanted."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_skills import ROUTES, fresh_skills, run_skills

UPLOAD_EXAMPLES = 300
EXAMPLES = 100


ENVOY_SHARE = 5  # through Envoy: a fifth of the HTTP door's draws


def examples(route: str, door: str) -> int:
    count = UPLOAD_EXAMPLES if route in ("POST /v1/skills", "POST /v1/skills/{id}/versions") else EXAMPLES
    return count // ENVOY_SHARE if door == "envoy" else count


@pytest.mark.parametrize("route", ROUTES)
async def test_generated_skills_requests_get_openai_shaped_answers(base_url: str, door: str, route: str) -> None:
    ids = await asyncio.to_thread(fresh_skills, base_url)
    tally = await asyncio.to_thread(run_skills, Tally(base_url), route, examples(route, door), lambda: ids)
    assert tally.sent >= examples(route, door)
    assert not tally.statuses.keys() & set(range(500, 600)), tally.statuses
    assert tally.statuses[404] + tally.statuses[400] > 0, tally.statuses
    if route.startswith("GET") or route.startswith("POST /v1/skills ") or route == "POST /v1/skills":
        assert tally.statuses[200] > 0, tally.statuses  # the real skills were reached, some uploads kept
