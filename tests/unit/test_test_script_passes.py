"""scripts/test runs both passes even when the first fails, and says how each ended; ``--help`` only says what it does.

The pass logic lives in scripts/_passes.sh; here it is driven with a stand-in ``python`` that fails when asked for
one pass, so the test checks what the script does with pytest's exit codes without running pytest twice.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
PASSES = SCRIPTS / "_passes.sh"


def run_script(failing: str, status: int = 1) -> subprocess.CompletedProcess[str]:
    """Both passes, the ``failing`` one ending with pytest's exit ``status``."""
    script = f"""
set -euo pipefail
python() {{
  echo "ran: $*"
  local pass=sqlite
  if [[ " $* " == *" --store=postgres "* ]]; then pass=postgres; fi
  if [ "$pass" = {failing} ]; then return {status}; fi
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


@pytest.mark.parametrize("empty", ["sqlite", "postgres"])
def test_a_pass_that_selected_no_test_has_not_failed(empty: str) -> None:
    """pytest's exit 5 (``-k`` matched nothing in that pass): said on the pass's line, not counted as a failure."""
    result = run_script(empty, status=5)
    assert result.returncode == 0
    assert result.stdout.count("ran: -m pytest") == 2
    assert f"scripts/test: {empty} pass: no tests selected" in result.stderr.splitlines()


def test_help_says_what_runs_and_installs_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = subprocess.run([str(SCRIPTS / "test"), "--help"], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "RESPONSES_BRIDGE_VENV": str(venv)})
    assert result.returncode == 0
    assert result.stdout.startswith("usage: scripts/test")
    for named in ("ruff and mypy", "sqlite pass", "postgres pass", "store_free", "store_proven", "store_via_http_door",
                  "scripts/pg-coverage", "scripts/test tests/unit/"):
        assert named in result.stdout
    assert not venv.exists()  # no venv made, nothing installed


def run_beside(body: str) -> subprocess.CompletedProcess[str]:
    """``body`` run after sourcing the passes, with a stand-in ``python`` for which the pass beside (``vm`` among its
    arguments) writes its pid, waits a moment and fails, and every other pass passes."""
    script = f"""
set -euo pipefail
python() {{
  if [[ " $* " == *" vm "* ]]; then
    sleep 30 & echo $! > "$PIDFILE"
    sleep 0.3; echo "the vm pass's output"; return 1
  fi
  echo "the sqlite pass's output"
}}
source {PASSES}
{body}
"""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


def test_a_pass_beside_prints_when_joined_and_its_failure_fails_the_run(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIDFILE", str(tmp_path / "pid"))
    result = run_beside("start_pass cgroup2-vm vm -q\nrun_pass sqlite -q\njoin_pass cgroup2-vm\nfinish_passes")
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["the sqlite pass's output", "the vm pass's output"]  # never interleaved
    lines = result.stderr.splitlines()
    assert "scripts/test: cgroup2-vm pass: FAILED (pytest exit 1)" in lines
    assert "scripts/test: sqlite pass: passed" in lines
    assert lines[-1] == "scripts/test: failed: cgroup2-vm"


def test_stopping_a_pass_beside_ends_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The static checks failed: the pass started beside them ends, and so does every process it started."""
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("PIDFILE", str(pidfile))
    result = run_beside('start_pass cgroup2-vm vm -q\nwhile [ ! -s "$PIDFILE" ]; do sleep 0.05; done\n'
                        "stop_started_passes\necho stopped")
    assert result.returncode == 0 and result.stdout.splitlines() == ["stopped"]  # its output dropped
    started = Path(f"/proc/{int(pidfile.read_text())}/stat")
    deadline = time.monotonic() + 10
    while started.exists() and started.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # gone, or dead unreaped
        assert time.monotonic() < deadline, started.read_text()
        time.sleep(0.05)
