"""``serve`` raises its soft descriptor limit to the hard one (process/descriptors.py): a soft 1,024 under a higher hard
limit is not what bounds the bridge's connections."""

from __future__ import annotations

import subprocess
import sys

SHOW = ("import resource; from responses_bridge.process.descriptors import raise_descriptor_limit; "
        "print(raise_descriptor_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))")


def run_under(soft: int, hard: int) -> str:
    return subprocess.run(["prlimit", f"--nofile={soft}:{hard}", "--", sys.executable, "-c", SHOW],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    assert run_under(256, 2048) == "(256, 2048) (2048, 2048)"


def test_a_soft_limit_already_at_the_hard_one_is_kept() -> None:
    assert run_under(512, 512) == "(512, 512) (512, 512)"
