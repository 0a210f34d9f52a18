"""scripts/crash-probe's core: one round of ``kill -9`` under a small load, then every accepted run checked — and the
check itself, which must call a run that is not there lost (else the probe could pass by looking at nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bridge import running_sidecar
from tools.crash_probe import probe as crash_probe

pytestmark = [pytest.mark.store_free,  # the probe keeps its own SQLite file
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


async def test_one_round_of_kill_9_loses_no_accepted_run(tmp_path: Path) -> None:
    args = crash_probe.parse_args(["--rounds", "1", "--load", "8", "--chunks", "20", "--kill-after", "1.2",
                                   "--settle", "90", "--sidecar-log", str(tmp_path / "sidecar.log")])
    runs, rows, _search = await crash_probe.probe(args, str(tmp_path))
    assert {run.kind for run in runs} == set(crash_probe.KINDS), [(run.kind, run.id) for run in runs]
    assert [(run.kind, run.id, run.outcome, run.detail) for run in runs if run.outcome != "completed"] == []
    assert rows[0]["accepted"] == len(runs) and rows[0]["completed"] == len(runs)
    assert rows[0]["lost"] == rows[0]["failed"] == rows[0]["twice"] == 0
    assert rows[0]["resumed"] >= 1  # the kill landed mid-load: some run was resumed, not only finished before


async def test_the_check_calls_a_run_that_is_not_there_lost(tmp_path: Path, fake_upstream: str) -> None:
    runs = [crash_probe.Run("response", "resp_0000000000000000000000000000000", 1, "pmissing"),
            crash_probe.Run("session", "sess_0000000000000000000000000000000", 1, "pmissing", inputs=["first"]),
            crash_probe.Run("waiting", "sess_0000000000000000000000000000001", 1, "pmissing", inputs=["lookup"])]
    async with running_sidecar(str(tmp_path), fake_upstream, extproc=False, own_sqlite=True) as sidecar:
        await crash_probe.check(sidecar.http_url, runs, settle=5)
    assert [run.outcome for run in runs] == ["lost", "lost", "lost"], [run.detail for run in runs]
    assert crash_probe.table(runs, 1)[0]["lost"] == 3
