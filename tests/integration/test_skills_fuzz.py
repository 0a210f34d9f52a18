"""Generated Skills API requests, 300 for each route, through both doors (tests/support/fuzz_skills.py): hostile
multipart forms, hostile zips, ids, versions, bodies and queries get a status below 500, 4xx in the OpenAI shape,
and always an answer."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_skills import ROUTES, fresh_skills, run_skills

EXAMPLES = 300


@pytest.mark.parametrize("route", ROUTES)
async def test_generated_skills_requests_get_openai_shaped_answers(base_url: str, route: str) -> None:
    ids = await asyncio.to_thread(fresh_skills, base_url)
    tally = await asyncio.to_thread(run_skills, Tally(base_url), route, EXAMPLES, lambda: ids)
    assert tally.sent >= EXAMPLES
    assert not tally.statuses.keys() & set(range(500, 600)), tally.statuses
    assert tally.statuses[404] + tally.statuses[400] > 0, tally.statuses
    if route.startswith("GET") or route.startswith("POST /v1/skills ") or route == "POST /v1/skills":
        assert tally.statuses[200] > 0, tally.statuses  # the real skills were reached, some uploads kept
