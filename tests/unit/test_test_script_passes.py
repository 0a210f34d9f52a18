"""scripts/test runs both passes even when the first fails, and says how each ended.

The pass logic lives in scripts/_passes.sh; here it is driven with a stand-in ``python`` that fails when asked for
one pass, so the test checks what the script does with pytest's exit codes without running pytest twice.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PASSES = Path(__file__).resolve().parents[2] / "scripts" / "_passes.sh"


def run_script(failing: str) -> subprocess.CompletedProcess[str]:
    script = f"""
set -euo pipefail
python() {{
  echo "ran: $*"
  if [[ " $* " == *" --store=postgres "* ]]; then [ {failing} != postgres ]; else [ {failing} != sqlite ]; fi
}}
source {PASSES}
run_pass sqlite -q
run_pass postgres tests/integration --store=postgres -q
finish_passes
echo "not reached when a pass failed"
"""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("failing", ["sqlite", "postgres"])
def test_a_failed_pass_leaves_the_other_run_and_the_exit_non_zero(failing: str) -> None:
    result = run_script(failing)
    assert result.returncode == 1
    assert result.stdout.count("ran: -m pytest") == 2  # both passes ran
    assert "not reached" not in result.stdout
    lines = result.stderr.splitlines()
    other = "postgres" if failing == "sqlite" else "sqlite"
    assert f"scripts/test: {failing} pass: FAILED (pytest exit 1)" in lines
    assert f"scripts/test: {other} pass: passed" in lines
    assert lines[-1] == f"scripts/test: failed: {failing}"


def test_both_passes_green_end_with_one_line_each_and_exit_zero() -> None:
    result = run_script("neither")
    assert result.returncode == 0
    assert "not reached" in result.stdout
    lines = result.stderr.splitlines()
    assert lines.count("scripts/test: sqlite pass: passed") == 2  # once as it ends, once in the summary
    assert lines.count("scripts/test: postgres pass: passed") == 2
