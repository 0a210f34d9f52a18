"""The ``store_via_http_door`` mark (tests/conftest.py): with ``--skip-envoy-store-via-http-door`` (the PostgreSQL
pass) a marked module's tests through the Envoy door are left out and its HTTP-door tests stay; without the option
both doors are collected; a test of a module not marked keeps both doors either way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKED = "tests/integration/test_agents_automations.py"
NOT_MARKED = "tests/integration/test_agents_api.py"


def collected(*options: str) -> list[str]:
    """The node ids pytest collects of the two modules (one process: the imports once)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           MARKED, NOT_MARKED, *options], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def doors(ids: list[str], module: str) -> dict[str, int]:
    return {door: sum(1 for one in ids if one.startswith(module) and f"[{door}]" in one) for door in ("http", "envoy")}


def test_the_postgres_pass_leaves_out_only_the_marked_modules_envoy_door_tests() -> None:
    both = collected("--store=sqlite")
    left = collected("--store=postgres", "--skip-envoy-store-via-http-door")
    assert doors(both, MARKED)["envoy"] > 0
    assert doors(left, MARKED) == {"http": doors(both, MARKED)["http"], "envoy": 0}
    assert doors(left, NOT_MARKED) == doors(both, NOT_MARKED) and doors(both, NOT_MARKED)["envoy"] > 0
    without_a_door = {one for one in both if one.startswith(MARKED) and "[" not in one}
    assert without_a_door and without_a_door <= set(left)  # a test taking no door is not left out
