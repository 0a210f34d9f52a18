"""The real CLI, run as a user runs it: its own process, a clean environment (no ``RESPONSES_BRIDGE_*`` nor
``OPENAI_*`` variable of the test run's) and its own data directory, so a command that would create a database
there is caught doing it. The tests of configuration mistakes and first tries share it.

The process is forked from the test run's fork server (tests/support/zygote.py: what ``python -m responses_bridge
ARGS`` runs, its imports done before the fork) where the command is one it forks: ~0.1 CPU-s a run instead of
~0.5. Either way its ``responses_bridge`` is the checkout's ``src``, which the tests' editable install puts on
every interpreter's path (no ``PYTHONPATH`` of its own, which would keep it from being forked)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import zygote
from tests.support.bridge import PYTHON


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items()
            if not key.upper().startswith(("RESPONSES_BRIDGE_", "OPENAI_")) and key != "XDG_DATA_HOME"}
    return {**base, "XDG_DATA_HOME": str(tmp_path / "data"), **extra}


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m responses_bridge ARGS`` in ``tmp_path``, its output captured."""
    return zygote.run([PYTHON, "-m", "responses_bridge", *args], timeout=120, cwd=tmp_path,
                      env=clean_env(tmp_path, **(env or {})))


def one_line(result: subprocess.CompletedProcess[str], command: str, *, status: int = 2) -> str:
    """The single stderr line of a command that stopped on a mistake, without its ``responses-bridge X:`` prefix."""
    lines = result.stderr.splitlines()
    assert result.returncode == status and len(lines) == 1, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    prefix = f"responses-bridge {command}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0].removeprefix(prefix)
