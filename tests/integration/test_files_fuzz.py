"""Generated Files API requests through both doors (tests/support/fuzz_files.py): hostile multipart forms and
read routes with hostile ids and queries get a status below 500, 4xx in the OpenAI shape, and always an answer."""

from __future__ import annotations

import asyncio

from tests.support.fuzz import Tally
from tests.support.fuzz_files import run_files

EXAMPLES = 300


async def test_generated_files_requests_get_openai_shaped_answers(base_url: str) -> None:
    tally = await asyncio.to_thread(run_files, Tally(base_url), EXAMPLES)  # raises on the first broken promise
    assert tally.sent >= EXAMPLES
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0, tally.statuses  # some stored, some refused
