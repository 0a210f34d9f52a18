"""A replica started with its wall clock moved (see sitecustomize.py here): :func:`skewed_env`."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def skewed_env(seconds: float) -> dict[str, str]:
    """The environment that starts a process (freshly, not forked) with its wall clock ``seconds`` off."""
    path = os.environ.get("PYTHONPATH")
    return {"RESPONSES_BRIDGE_TEST_CLOCK_SKEW": str(seconds),
            "PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else str(HERE)}
