"""Generated Skills API requests, 300 for each route, through both doors (tests/support/fuzz_skills.py): hostile
multipart forms, hostile zips, ids, versions, bodies and queries get a status below 500, 4xx in the OpenAI shape,
and always an answer."""

from __future__ import annotations

import asyncio
import io
import zipfile

import openai
import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_skills import ROUTES, run_skills

EXAMPLES = 300


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("SKILL.md", "---\nname: fuzz-target\ndescription: What the fuzzer aims at.\n---\n")
    return out.getvalue()


async def _skills(base_url: str, count: int = 3) -> list[str]:
    """Fresh skills with three versions each, for the generated requests to reach."""
    made: list[str] = []
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0) as client:
        for _ in range(count):
            skill = await client.skills.create(files=("skill.zip", _zip(), "application/zip"))
            for _ in range(2):
                await client.skills.versions.create(skill.id, files=("skill.zip", _zip(), "application/zip"))
            made.append(skill.id)
    return made


@pytest.mark.parametrize("route", ROUTES)
async def test_generated_skills_requests_get_openai_shaped_answers(base_url: str, route: str) -> None:
    ids = await _skills(base_url)
    tally = await asyncio.to_thread(run_skills, Tally(base_url), route, EXAMPLES, lambda: ids)
    assert tally.sent >= EXAMPLES
    assert not tally.statuses.keys() & set(range(500, 600)), tally.statuses
    assert tally.statuses[404] + tally.statuses[400] > 0, tally.statuses
    if route.startswith("GET") or route.startswith("POST /v1/skills ") or route == "POST /v1/skills":
        assert tally.statuses[200] > 0, tally.statuses  # the real skills were reached, some uploads kept
