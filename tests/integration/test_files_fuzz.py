"""Generated Files API requests through both doors (tests/support/fuzz_files.py): hostile multipart forms and
read routes with hostile ids and queries get a status below 500, 4xx in the OpenAI shape, and always an answer.

300 through the HTTP door, which checks them; through Envoy, which streams the Files API to that door unread
(envoy_config/routes.py ``_files_routes``: the processor off), the first 60 of the same (derandomized) draws, enough
to see no hostile request turn into an Envoy-side failure. Before, 300 through each door."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fuzz import Tally
from tests.support.fuzz_files import run_files

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/unit/test_uploads_service.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

EXAMPLES = 300
THROUGH_ENVOY = 60


async def test_generated_files_requests_get_openai_shaped_answers(base_url: str, door: str) -> None:
    examples = THROUGH_ENVOY if door == "envoy" else EXAMPLES
    tally = await asyncio.to_thread(run_files, Tally(base_url), examples)  # raises on the first broken promise
    assert tally.sent >= examples
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0, tally.statuses  # some stored, some refused
