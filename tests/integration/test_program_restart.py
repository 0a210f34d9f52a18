"""A waiting program resumes across a restart with the same sealing key, by ``previous_response_id`` (the stored
response, on the run's store: SQLite, or PostgreSQL in scripts/test's second pass) and by items sent back; a sidecar
with another key refuses the items. The containment of programs is test_program_containment.py's."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_program_containment import KEY, post
from tests.support.bridge import running_sidecar

pytest.importorskip("py_mini_racer")


async def test_a_waiting_program_resumes_across_a_restart_with_the_same_key(fake_upstream: str,
                                                                            tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    program = ('js: const [a, b] = await Promise.all([tools.get_weather({city: "Oslo"}), '
               'tools.get_weather({city: "Rome"})]); return `Oslo ${a}, Rome ${b}`')
    user = {"role": "user", "content": program}
    keyed = {"RESPONSES_BRIDGE_SEALING_KEY": KEY}
    async with running_sidecar(str(tmp_path), fake_upstream, "--db", str(db), env=keyed) as first:
        status, stored = await post(first.http_url, "k", {"input": program})
        assert status == 200, stored
        status, stateless = await post(first.http_url, "k", {"input": [user], "store": False})
        assert status == 200, stateless

    def answers(response: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"type": "function_call_output", "call_id": item["call_id"], "output": weather}
                for item, weather in zip(response["output"][1:], ("rain", "sun"), strict=True)]

    async with running_sidecar(str(tmp_path), fake_upstream, "--db", str(db), env=keyed) as second:
        status, resumed = await post(second.http_url, "k", {"previous_response_id": stored["id"],
                                                            "input": answers(stored)})
        assert status == 200, resumed
        assert resumed["output"][0]["type"] == "program_output"
        assert resumed["output"][0]["result"] == "Oslo rain, Rome sun"
        items = [user, *stateless["output"], *answers(stateless)]
        status, again = await post(second.http_url, "k", {"input": items, "store": False})
        assert status == 200, again
        assert again["output"][0]["result"] == "Oslo rain, Rome sun"
    other = {"RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"o" * 32).decode()}
    async with running_sidecar(str(tmp_path), fake_upstream, "--db", str(tmp_path / "other.db"), env=other) as third:
        status, refused = await post(third.http_url, "k", {"input": items, "store": False})
        assert status == 400 and refused["error"]["code"] == "invalid_program_fingerprint", refused
        assert refused["error"]["param"] == "input[1].fingerprint"
