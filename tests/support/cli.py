"""The real CLI, run as a user runs it: its own process, a clean environment (no ``RESPONSES_BRIDGE_*`` nor
``OPENAI_*`` variable of the test run's) and its own data directory, so a command that would create a database
there is caught doing it. The tests of configuration mistakes and first tries share it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import responses_bridge
from tests.support.bridge import PYTHON

SOURCE = str(Path(responses_bridge.__file__).resolve().parent.parent)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items()
            if not key.upper().startswith(("RESPONSES_BRIDGE_", "OPENAI_")) and key != "XDG_DATA_HOME"}
    return {**base, "PYTHONPATH": SOURCE, "XDG_DATA_HOME": str(tmp_path / "data"), **extra}


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "responses_bridge", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path, env=clean_env(tmp_path, **(env or {})))


def one_line(result: subprocess.CompletedProcess[str], command: str, *, status: int = 2) -> str:
    """The single stderr line of a command that stopped on a mistake, without its ``responses-bridge X:`` prefix."""
    lines = result.stderr.splitlines()
    assert result.returncode == status and len(lines) == 1, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    prefix = f"responses-bridge {command}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0].removeprefix(prefix)
