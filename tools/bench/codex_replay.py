"""``scripts/bench codex-replay``: the recorded Codex request (~40 KB, 8 tools, streamed) replayed through Envoy with
the bridge's processor and, translated, through the same Envoy straight to the upstream; p50/p99 of each and what
the bridge adds.

A real client's request, not a synthetic one: what a coding agent's turn costs through the ext_proc door is the
figure that matters to its users. It is ``responses-bridge bench --envoy --requests 100 --replay RECORDING``, so
its options are that command's (``--requests N``, ``--replay OTHER_RECORDING.json``, ``--json``, ...), given after
these defaults and so overriding them."""

from __future__ import annotations

import sys
from pathlib import Path

from .latency.bench import main as latency

RECORDING = Path(__file__).resolve().parents[2] / "tests" / "clients" / "recordings" / "codex_request.json"


def main(argv: list[str] | None = None) -> int:
    return latency(["--envoy", "--requests", "100", "--replay", str(RECORDING),
                    *(sys.argv[1:] if argv is None else argv)], prog="scripts/bench codex-replay")


if __name__ == "__main__":
    sys.exit(main())
